"""The Backlog contract for ``claim(..., max_running=n)``: a lane's ceiling across processes.

Run against every backend (see conftest.BACKENDS). The claim counts the jobs
RUNNING under a live lease (``lease_until > now``) of other owners; the
caller subtracts its own running jobs from ``n`` itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from scheduler import BacklogOptions, JobState, Lane, Scheduler
from scheduler.backlog import Backlog, Outcome
from tests.backlog import pg
from tests.backlog.helpers import new_job

OWNER, OTHER = "worker-a", "worker-b"


async def claim(
    backlog: Backlog,
    limit: int = 10,
    *,
    ceiling: int | None,
    now: float = 0.0,
    owner: str = OWNER,
    lane: str = "batch",
    lease: float = 10.0,
) -> list[str]:
    records = await backlog.claim(
        lane, limit, owner=owner, lease_seconds=lease, now=now, max_running=ceiling
    )
    return [r.id for r in records]


async def test_other_owners_leases_fill_the_ceiling(backlog: Backlog) -> None:
    jobs = await backlog.submit([new_job(i) for i in range(10)], now=0)
    got = await claim(backlog, ceiling=3)
    assert got == [j.id for j in jobs[:3]]  # claim order kept
    assert await claim(backlog, ceiling=3, owner=OTHER) == []  # OWNER's three fill it
    assert await claim(backlog, ceiling=4, owner=OTHER) == [jobs[3].id]
    # the caller's own leases are its own to count: it passes ceiling - what it runs
    assert await claim(backlog, ceiling=3 - 3) == []
    assert len(await claim(backlog, ceiling=5)) == 4  # 5 minus OTHER's one
    await backlog.complete([Outcome.done(got[0], OWNER)], now=1)
    await backlog.complete([Outcome.retry(got[1], OWNER, run_at=50, error="e")], now=1)
    await backlog.release([got[2]], owner=OWNER, now=1)
    # OWNER holds 4 now: a ceiling of 6 leaves OTHER room for 2 (its own job not counted)
    assert await claim(backlog, ceiling=6, now=1, owner=OTHER) == [got[2], jobs[8].id]
    assert await claim(backlog, ceiling=None, now=1, owner=OTHER) == [jobs[9].id]


async def test_the_ceiling_counts_only_its_lane_and_may_be_spent(backlog: Backlog) -> None:
    await backlog.submit([new_job(i) for i in range(6)], now=0)
    await backlog.submit([new_job(i, lane="other") for i in range(6)], now=0)
    assert len(await claim(backlog, 2, ceiling=None, owner=OTHER)) == 2
    assert len(await claim(backlog, 2, ceiling=5, lane="other", owner=OTHER)) == 2
    assert len(await claim(backlog, ceiling=3)) == 1  # OTHER holds 2 of the 3 seats
    assert len(await claim(backlog, ceiling=5, lane="other")) == 3
    assert await claim(backlog, ceiling=0) == []
    assert await claim(backlog, ceiling=-1) == []
    assert await claim(backlog, 0, ceiling=3) == []


async def test_expired_leases_free_their_seats_and_heartbeats_keep_them(backlog: Backlog) -> None:
    jobs = await backlog.submit([new_job(i, max_attempts=3) for i in range(5)], now=0)
    a, b = await claim(backlog, 2, ceiling=2, lease=10)
    assert await backlog.heartbeat([a], owner=OWNER, lease_seconds=10, now=5) == 1  # a: 15
    assert await claim(backlog, ceiling=2, now=9, owner=OTHER) == []
    # at 10 b's lease has passed: its seat is free, and b itself is the first to take
    assert await claim(backlog, ceiling=2, now=10, owner=OTHER) == [b]
    assert await claim(backlog, ceiling=2 - 1, now=10, owner=OTHER) == []  # OTHER runs b
    assert await claim(backlog, ceiling=3 - 1, now=10, owner=OTHER) == [jobs[2].id]
    rec = await backlog.get(b)
    assert rec is not None
    assert (rec.state, rec.attempts, rec.lease_owner) == (JobState.RUNNING, 2, OTHER)


async def test_a_lost_job_on_its_last_attempt_goes_dead_and_frees_its_seat(
    backlog: Backlog,
) -> None:
    [doomed] = await backlog.submit([new_job(max_attempts=1)], now=0)
    [nxt] = await backlog.submit([new_job()], now=0)
    assert await claim(backlog, 1, ceiling=1, lease=5) == [doomed.id]
    assert await claim(backlog, ceiling=1, now=6, owner=OTHER) == [nxt.id]
    dead = await backlog.get(doomed.id)
    assert dead is not None
    assert dead.state is JobState.DEAD


async def test_concurrent_claimers_never_exceed_the_ceiling(
    make_backlog: Callable[[], Backlog],
) -> None:
    """Several backlog objects on one store (SQLite: one file; PostgreSQL: one schema, a
    pool each) race their claims; the ceiling holds at every moment."""
    backlogs = [make_backlog() for _ in range(4)]
    for backlog in backlogs:
        await backlog.open()
    await backlogs[0].submit([new_job(i) for i in range(40)], now=0)
    running: set[str] = set()
    peak = 0

    async def worker(backlog: Backlog, name: str) -> int:
        nonlocal peak
        done = 0
        for _ in range(200):  # bounded
            got = await backlog.claim(
                "batch", 3, owner=name, lease_seconds=60, now=1.0, max_running=3
            )
            running.update(r.id for r in got)
            peak = max(peak, len(running))
            await asyncio.sleep(0)
            for record in got:
                running.discard(record.id)
            outcomes = [Outcome.done(r.id, name) for r in got]
            done += await backlog.complete(outcomes, now=1.0)
            if not got and not await backlog.queued_count("batch"):
                return done
        return done

    results = await asyncio.gather(*(worker(b, f"w{i}") for i, b in enumerate(backlogs)))
    assert sum(results) == 40
    assert 1 <= peak <= 3
    assert (await backlogs[0].counts())["batch"] == {"done": 40}


async def test_a_worker_at_its_ceiling_claims_again_as_soon_as_a_seat_frees(
    backend: str, db_path: Path, pg_schema: str | None
) -> None:
    """The runner's own finished jobs hold their leases in the backlog until their outcome
    is written; they must not keep it from claiming (it polls only every 30 s here)."""
    if backend == "memory":
        target = ":memory:"
    elif backend == "sqlite":
        target = str(db_path)
    else:
        assert pg_schema is not None
        await pg.create_schema(pg.dsn_or_skip(), pg_schema)
        target = pg.with_settings(pg.dsn_or_skip(), search_path=pg_schema)
    sched = Scheduler(
        target,
        lanes=[Lane("batch", max_concurrency=4, durable=True)],
        backlog_options=BacklogOptions(poll_interval=30.0),
        shutdown_grace=0,
    )

    async def double(i: int) -> int:
        return i * 2

    sched.task(name="tests.double")(double)
    async with sched:
        jobs = [await sched.submit("tests.double", i) for i in range(100)]
        results = [await job.result(timeout=10) for job in jobs]
    assert results == [i * 2 for i in range(100)]
