"""The Backlog contract for ``NewJob.max_queued``: a lane's queue bound, checked by the backlog.

Run against every backend (see conftest.BACKENDS). The bound counts the lane's
QUEUED jobs (scheduled retries included) at the moment of the insert; a call
that does not fit is refused whole with ``Overloaded``; a stored key needs no
room. ``queued_count`` (kept by triggers in SQLite and PostgreSQL) follows
every state change.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import pytest

from scheduler import JobState, Lane, Overloaded, Scheduler
from scheduler.backlog import Backlog, NewJob, Outcome
from tests.backlog.helpers import new_job


def bounded(*args: object, bound: int = 3, lane: str = "batch", key: str | None = None) -> NewJob:
    return replace(new_job(*args, lane=lane, key=key), max_queued=bound)


async def test_the_job_beyond_the_bound_is_refused_and_nothing_is_stored(backlog: Backlog) -> None:
    for i in range(3):
        await backlog.submit([bounded(i)], now=0)
    with pytest.raises(Overloaded) as info:
        await backlog.submit([bounded(99)], now=0)
    assert (info.value.lane, info.value.queued) == ("batch", 3)
    assert await backlog.queued_count("batch") == 3
    assert len(await backlog.list_jobs()) == 3
    await backlog.submit([bounded(7, lane="other")], now=0)  # another lane has its own room
    [claimed] = await backlog.claim("batch", 1, owner="w", lease_seconds=10, now=0)
    await backlog.submit([bounded(4)], now=0)  # running jobs do not count
    with pytest.raises(Overloaded):
        await backlog.submit([bounded(5)], now=0)
    await backlog.complete([Outcome.retry(claimed.id, "w", run_at=50, error="e")], now=1)
    assert await backlog.queued_count("batch") == 4  # a retry is queued again, over the bound
    with pytest.raises(Overloaded):
        await backlog.submit([bounded(6, bound=4)], now=1)
    await backlog.submit([bounded(6, bound=5)], now=1)  # the bound is the job's own


async def test_a_call_that_does_not_fit_stores_none_of_its_jobs(backlog: Backlog) -> None:
    await backlog.submit([bounded(0)], now=0)
    with pytest.raises(Overloaded):
        await backlog.submit([bounded(1), bounded(2), bounded(3)], now=0)
    assert await backlog.queued_count("batch") == 1
    await backlog.submit([bounded(1), bounded(2)], now=0)
    assert [r.args for r in await backlog.list_jobs()] == [[0], [1], [2]]


async def test_a_stored_key_needs_no_room(backlog: Backlog) -> None:
    [first] = await backlog.submit([bounded(0, bound=1, key="k")], now=0)
    [again] = await backlog.submit([bounded(1, bound=1, key="k")], now=0)
    assert again.id == first.id
    with pytest.raises(Overloaded):
        await backlog.submit([bounded(2, bound=1, key="other")], now=0)
    both = await backlog.submit([bounded(3, bound=1, key="k"), bounded(4, bound=1, key="k")], now=0)
    assert [r.id for r in both] == [first.id, first.id]


async def test_concurrent_submits_are_admitted_in_order_up_to_the_bound(backlog: Backlog) -> None:
    answers = await asyncio.gather(
        *(backlog.submit([bounded(i, bound=4)], now=0) for i in range(10)),
        return_exceptions=True,
    )
    assert [not isinstance(a, BaseException) for a in answers] == [True] * 4 + [False] * 6
    assert all(isinstance(a, Overloaded) for a in answers[4:])
    assert [r.args[0] for r in await backlog.list_jobs(JobState.QUEUED)] == [0, 1, 2, 3]


async def test_queued_count_follows_every_state_change(backlog: Backlog) -> None:
    async def check(expected: int) -> None:
        real = len(await backlog.list_jobs(JobState.QUEUED, "batch", limit=1000))
        assert (await backlog.queued_count("batch"), real) == (expected, expected)

    await check(0)
    jobs = await backlog.submit([new_job(i, max_attempts=1) for i in range(6)], now=0)
    await check(6)
    assert await backlog.queued_count("batch", limit=4) == 4
    got = await backlog.claim("batch", 4, owner="w", lease_seconds=5, now=0)
    await check(2)
    await backlog.release([got[0].id], owner="w", now=1)
    await check(3)
    await backlog.complete(
        [Outcome.retry(got[1].id, "w", run_at=9, error="e"), Outcome.done(got[2].id, "w"),
         Outcome.dead(got[3].id, "w", error="e")], now=1,
    )  # fmt: skip
    await check(4)
    assert await backlog.requeue(all_dead=True, now=2) == 1
    await check(5)
    assert await backlog.purge(finished_before=10) == 1
    await check(5)
    assert len(await backlog.claim("batch", 10, owner="v", lease_seconds=5, now=20)) == 5
    await check(0)
    assert await backlog.claim("batch", 10, owner="x", lease_seconds=5, now=30) == []  # lost: dead
    await check(0)
    assert {r.state for r in await backlog.list_jobs()} == {JobState.DEAD}
    assert len(jobs) == 6


async def test_a_bad_max_queued_is_refused_before_anything_is_stored(backlog: Backlog) -> None:
    for bad in (-1, 1.5, True, "3"):
        with pytest.raises(ValueError, match="max_queued"):
            await backlog.submit([new_job(0), replace(new_job(1), max_queued=bad)], now=0)  # type: ignore[arg-type]
    assert await backlog.list_jobs() == []


async def test_through_the_scheduler_a_full_lane_still_gives_back_a_stored_key(
    tmp_path: Path,
) -> None:
    sched = Scheduler(
        str(tmp_path / "q.db"), lanes=[Lane("batch", 1, 2, durable=True)], shutdown_grace=0
    )

    async def work(i: int) -> int:
        return i

    sched.task(name="bound.work")(work)
    async with sched.open(run=()):
        first = await sched.submit("bound.work", 0, key="k")
        await sched.submit("bound.work", 1)
        with pytest.raises(Overloaded) as info:
            await sched.submit("bound.work", 2)
        assert info.value.lane == "batch"
        assert (await sched.submit("bound.work", 0, key="k")).id == first.id
        with pytest.raises(Overloaded):
            await sched.submit("bound.work", 3, key="new")
        assert sched.stats()["batch"].shed.get("queue_full") == 2
