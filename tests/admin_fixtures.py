"""A scheduler with some history for the admin tests: latencies, a shed call, dead jobs."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from scheduler import JobFailed, Lane, Overloaded, RetryPolicy, Scheduler
from scheduler.testing import wait_all_tasks_blocked

TOKEN = "s3cret-admin-token-0123"


def make_scheduler(db: Path) -> Scheduler:
    sched = Scheduler(
        str(db),
        lanes=[
            Lane("interactive", max_concurrency=2, max_queued=2),
            Lane("batch", max_concurrency=2, durable=True, gated=True),
        ],
        shutdown_grace=0,
    )

    @sched.task(name="t.ok")
    async def ok(i: int) -> int:
        return i

    @sched.task(name="t.fail", retry=RetryPolicy(max_attempts=1))
    async def fail(message: str) -> None:
        raise RuntimeError(message)

    return sched


async def fill_and_shed(sched: Scheduler) -> None:
    """Two calls run, two wait, one is shed (queue_full); then all finish."""
    release = asyncio.Event()

    async def held() -> str:
        await release.wait()
        return "ok"

    calls = [asyncio.create_task(sched.call(held)) for _ in range(4)]
    await wait_all_tasks_blocked()  # all four admitted: two run, two wait
    try:
        await sched.call(held)
    except Overloaded:
        pass
    else:
        raise AssertionError("the fifth call should have been shed")
    release.set()
    await asyncio.gather(*calls)


async def dead_jobs(sched: Scheduler, n: int) -> list[str]:
    ids = []
    for i in range(n):
        job = await sched.submit("t.fail", f"boom {i}")
        try:
            await job.result(timeout=10)
        except JobFailed:
            ids.append(job.id)
    assert len(ids) == n
    return ids


@contextlib.asynccontextmanager
async def busy_scheduler(db: Path) -> AsyncIterator[Scheduler]:
    """Open, with history: latencies, one shed call, two dead jobs, three queued jobs
    behind a paused gate."""
    sched = make_scheduler(db)
    async with sched:
        await fill_and_shed(sched)
        await dead_jobs(sched, 2)
        sched.gate.pause("maintenance")
        for i in range(3):
            await sched.submit("t.ok", i)
        yield sched
