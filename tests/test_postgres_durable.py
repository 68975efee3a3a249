"""Durable lanes on the PostgreSQL backlog: NOTIFY wake-ups and losing the connection.

Needs ``FLOODGATE_TEST_POSTGRES_DSN`` (skipped without it). Each test gets its
own schema, named in the DSN's ``search_path`` as a deployment would.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from scheduler import BacklogOptions, JobState, Lane, Scheduler
from tests.backlog import pg


@pytest.fixture
async def schema() -> AsyncIterator[str]:
    dsn = pg.dsn_or_skip()
    name = pg.new_schema()
    await pg.create_schema(dsn, name)
    try:
        yield name
    finally:
        await pg.drop_schema(dsn, name)


def app_dsn(schema: str, app: str) -> str:
    return pg.with_settings(pg.dsn_or_skip(), search_path=schema, application_name=app)


def make_sched(
    dsn: str, *, poll: float, concurrency: int = 8, lease: float = 2.0, work: float = 0.002
) -> Scheduler:
    sched = Scheduler(
        dsn,
        lanes=[Lane("batch", max_concurrency=concurrency, durable=True)],
        backlog_options=BacklogOptions(lease=lease, poll_interval=poll),
        shutdown_grace=0,
    )

    async def job(i: int) -> int:
        await asyncio.sleep(work)
        return i * 2

    sched.task(name="pg.work")(job)
    return sched


async def test_results_are_shared_and_notify_wakes_an_idle_worker_at_once(schema: str) -> None:
    """The worker polls only every 30 s; jobs submitted by another scheduler still run at
    once, because each submit's NOTIFY wakes the worker's idle claim loop."""
    worker = make_sched(app_dsn(schema, f"{schema}_w"), poll=30.0)
    client = make_sched(app_dsn(schema, f"{schema}_c"), poll=30.0)
    async with worker, client.open(run=()):
        first = await client.submit("pg.work", 0)
        assert await first.result(timeout=10) == 0  # the worker is up, and idle again
        start = time.monotonic()
        results = []
        for i in range(1, 6):  # one at a time: each waits for the worker to be idle
            job = await client.submit("pg.work", i)
            results.append(await job.result(timeout=10))
        took = time.monotonic() - start
        assert results == [2, 4, 6, 8, 10]
        again = await client.job(first.id)
        assert (again.state, await again.result(timeout=0)) == (JobState.DONE, 0)
    assert took < 5, f"NOTIFY did not wake the worker ({took:.1f} s)"


async def test_losing_the_connection_mid_drain_loses_nothing(schema: str) -> None:
    """Every backend of the worker is terminated, three times, while it drains: claims fail
    and back off, running jobs keep going, outcomes are retried, and the pool reconnects."""
    dsn = pg.dsn_or_skip()
    app = f"{schema}_w"
    worker = make_sched(app_dsn(schema, app), poll=0.02, concurrency=8, lease=5.0, work=0.01)
    client = make_sched(app_dsn(schema, f"{schema}_c"), poll=30.0)
    n = 300
    async with client.open(run=()):
        jobs = [await client.submit("pg.work", i) for i in range(n)]
        async with worker:
            killed = []
            for k in range(3):
                done = connected = 0
                for _ in range(2000):  # bounded: more jobs done, and connected again
                    counts = await client.backlog_counts()
                    done = counts.get("batch", {}).get("done", 0)
                    [[connected]] = await pg.execute(
                        dsn, "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
                        app,
                    )  # fmt: skip
                    if done >= 40 * (k + 1) and connected:
                        break
                    await asyncio.sleep(0.005)
                assert done < n, "the drain must still be going when the connection is cut"
                killed.append(await pg.terminate(dsn, app))
            results = [await job.result(timeout=30) for job in jobs]
        assert min(killed) >= 1, killed
        assert results == [i * 2 for i in range(n)]
        counts = await client.backlog_counts()
    assert counts == {"batch": {"done": n}}
