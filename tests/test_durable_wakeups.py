"""Wake-ups of an idle durable worker: a submit in the same process starts the job at
once, and on SQLite a submit from another connection (another process) is noticed
within milliseconds (the idle worker watches the ``-wal`` file), not at the next poll.

Both workers poll only every 30 s, so a job that starts within a second was woken.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from scheduler import BacklogOptions, Lane, Scheduler

SLOW_POLL = BacklogOptions(poll_interval=30.0)


def make(path: Path, started: list[float]) -> Scheduler:
    sched = Scheduler(
        str(path),
        lanes=[Lane("batch", 4, durable=True)],
        backlog_options=SLOW_POLL,
        fleet=False,
        shutdown_grace=5.0,
    )

    async def mark(i: int) -> int:
        started.append(time.monotonic())
        return i

    sched.task(name="wake.mark")(mark)
    return sched


async def test_a_local_submit_wakes_the_idle_worker_at_once(tmp_path: Path) -> None:
    started: list[float] = []
    sched = make(tmp_path / "jobs.db", started)
    async with sched:
        await asyncio.sleep(0.05)  # the worker's first claim found nothing: it is idle
        for i in range(3):
            begun = time.monotonic()
            job = await sched.submit("wake.mark", i)
            assert await job.result(timeout=5) == i
            assert started[-1] - begun < 1.0


async def test_a_submit_from_another_connection_wakes_an_idle_sqlite_worker(
    tmp_path: Path,
) -> None:
    started: list[float] = []
    worker = make(tmp_path / "jobs.db", started)
    client = make(tmp_path / "jobs.db", [])
    async with worker.open(run=("batch",)), client.open(run=()):
        await asyncio.sleep(0.05)  # idle, its last claim found nothing
        for i in range(3):
            begun = time.monotonic()
            job = await client.submit("wake.mark", i)
            assert await job.result(timeout=5) == i
            assert len(started) == i + 1
            assert started[-1] - begun < 1.0, "woken by the commit, not by the 30 s poll"
            await asyncio.sleep(0.02)
