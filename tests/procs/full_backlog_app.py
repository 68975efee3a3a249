"""The app of the full-backlog worker tests: ``--app tests.procs.full_backlog_app:sched``.

``test.fill(i)`` appends ``start <job id> <attempt>`` to ``$FLOODGATE_TEST_RUNLOG``
and returns ``{"i": i, "pad": <256 KB>}``. With ``$FLOODGATE_TEST_FULL=1`` it
first makes the database full for this process: ``PRAGMA max_page_count`` set
to the file's page count on the worker's own connection, so every write that
needs a new page (storing that result does) fails with SQLite's own
"database or disk is full" (``SQLITE_FULL``), without filling the machine's
disk. The limit belongs to the connection, not the file: a process started
without the variable has room again.
"""

from __future__ import annotations

import os

from scheduler import BacklogOptions, Lane, Scheduler, current_job
from scheduler.backlog import SQLiteBacklog

__all__ = ["PAD", "make_scheduler", "sched"]

PAD = 256 * 1024


def _note(line: str) -> None:
    path = os.environ.get("FLOODGATE_TEST_RUNLOG")
    if path:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)


async def _fill_up(sched: Scheduler) -> None:
    """No room left in the database for this process's connection."""
    store = sched._store
    assert store is not None
    backlog = store.backlog
    assert isinstance(backlog, SQLiteBacklog)
    pages = (await backlog._read("PRAGMA page_count"))[0][0]
    await backlog._read(f"PRAGMA max_page_count = {int(pages)}")


def make_scheduler(backlog: str) -> Scheduler:
    """A scheduler with ``test.fill`` registered (the tests submit through their own)."""
    sched = Scheduler(
        backlog,
        lanes=[Lane("batch", max_concurrency=3, durable=True)],
        backlog_options=BacklogOptions(lease=3.0, heartbeat=1.0, poll_interval=0.05),
        shutdown_grace=10.0,
    )

    @sched.task(name="test.fill")
    async def fill(i: int) -> dict[str, object]:
        ctx = current_job()
        _note(f"start {ctx.id} {ctx.attempt}")
        if os.environ.get("FLOODGATE_TEST_FULL") == "1":
            await _fill_up(sched)
        return {"i": i, "pad": "x" * PAD}

    return sched


sched = make_scheduler(os.environ.get("FLOODGATE_TEST_BACKLOG", "floodgate-test.db"))
