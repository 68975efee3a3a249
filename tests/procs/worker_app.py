"""The app the worker tests run: ``python -m workers worker --app tests.procs.worker_app:sched``.

Jobs append one line per event to the file named by ``$FLOODGATE_TEST_RUNLOG``
(O_APPEND, one write each): ``start <job id> <attempt>`` when a job starts,
``end <job id>`` when it returns. Tasks:

- ``test.work(i, ms)``: sleeps ``ms`` milliseconds and returns ``i``;
- ``test.block(i)``: waits up to 60 s, so a test can stop a worker mid-job;
- ``test.fail(message)``: raises ``RuntimeError(message)``; one attempt, then DEAD.
"""

from __future__ import annotations

import asyncio
import os

from scheduler import BacklogOptions, Lane, RetryPolicy, Scheduler, current_job

__all__ = ["make_scheduler", "sched"]


def _note(line: str) -> None:
    path = os.environ.get("FLOODGATE_TEST_RUNLOG")
    if not path:
        return
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def make_scheduler(backlog: str) -> Scheduler:
    """A scheduler with the test tasks registered (the tests submit through their own)."""
    sched = Scheduler(
        backlog,
        lanes=[
            Lane("interactive", max_concurrency=4, max_queued=8),
            # not gated: the gate's adaptive limit would ramp up from one seat
            Lane("batch", max_concurrency=4, durable=True),
        ],
        backlog_options=BacklogOptions(lease=5.0, heartbeat=1.0, poll_interval=0.05),
        shutdown_grace=10.0,
    )

    @sched.task(name="test.work")
    async def work(i: int, ms: float = 0) -> int:
        ctx = current_job()
        _note(f"start {ctx.id} {ctx.attempt}")
        await asyncio.sleep(ms / 1000)
        _note(f"end {ctx.id}")
        return i

    @sched.task(name="test.block")
    async def block(i: int) -> int:
        ctx = current_job()
        _note(f"start {ctx.id} {ctx.attempt}")
        await asyncio.Event().wait()  # until the worker cancels it
        _note(f"end {ctx.id}")
        return i

    @sched.task(name="test.fail", retry=RetryPolicy(max_attempts=1))
    async def fail(message: str) -> None:
        raise RuntimeError(message)

    return sched


sched = make_scheduler(os.environ.get("FLOODGATE_TEST_BACKLOG", "floodgate-test.db"))
