"""Priority order, aging, and what a running job knows about itself."""

from __future__ import annotations

import asyncio

import pytest

from scheduler import FakeClock, JobContext, Scheduler, current_job
from scheduler.testing import wait_all_tasks_blocked
from tests.helpers import Gate, one_lane


async def start_in_order(
    sched: Scheduler, clock: FakeClock, jobs: list[tuple[str, float, float]]
) -> list[object]:
    """Queue (tag, priority, at-time) jobs behind a held seat; return start order."""
    gate = Gate()
    holder = asyncio.create_task(sched.call(gate.job("holder")))
    await wait_all_tasks_blocked()
    tasks = []
    for tag, priority, at in jobs:
        if at > clock.now():
            await clock.advance_and_settle(at - clock.now())
        tasks.append(asyncio.create_task(sched.call(gate.job(tag), priority=priority)))
        await wait_all_tasks_blocked()
    gate.release()
    await asyncio.gather(holder, *tasks)
    return gate.started[1:]


async def test_lower_priority_number_first_fifo_among_equals(clock: FakeClock) -> None:
    sched = one_lane(clock, max_concurrency=1, max_queued=10)
    async with sched:
        order = await start_in_order(
            sched,
            clock,
            [("b1", 5, 0), ("a1", 1, 0), ("b2", 5, 0), ("a2", 1, 0), ("c", 9, 0), ("z", -3, 0)],
        )
    assert order == ["z", "a1", "a2", "b1", "b2", "c"]


async def test_without_aging_low_priority_waits_behind_every_newer_urgent_job(
    clock: FakeClock,
) -> None:
    sched = one_lane(clock, max_concurrency=1, max_queued=10)
    async with sched:
        order = await start_in_order(sched, clock, [("old", 10, 0), ("new", 0, 100)])
    assert order == ["new", "old"]


async def test_aging_lets_a_long_waiting_job_overtake_newer_urgent_ones(clock: FakeClock) -> None:
    # one level per second: after 11 s the priority-10 job counts as -1
    sched = one_lane(clock, max_concurrency=1, max_queued=10, aging=1.0)
    async with sched:
        order = await start_in_order(
            sched, clock, [("old", 10, 0), ("new-sooner", 0, 9), ("new-later", 0, 11)]
        )
    # effective priority when the seat frees at t=11: old 10-11=-1, sooner 0-2=-2, later 0
    assert order == ["new-sooner", "old", "new-later"]


async def test_aging_equal_wait_equal_levels(clock: FakeClock) -> None:
    sched = one_lane(clock, max_concurrency=1, max_queued=10, aging=2.0)
    async with sched:
        # old waits 10 s more = 5 levels: 7 - 5 = 2 beats 3, loses to 1
        order = await start_in_order(
            sched, clock, [("old", 7, 0), ("three", 3, 10), ("one", 1, 10)]
        )
    assert order == ["one", "old", "three"]


async def test_current_job_gives_id_lane_attempt_and_remaining_time(clock: FakeClock) -> None:
    sched = one_lane(clock)
    seen: list[JobContext] = []
    remaining: list[float | None] = []

    async def job() -> str:
        ctx = current_job()
        seen.append(ctx)
        remaining.append(ctx.remaining())
        await clock.sleep(2.0)
        remaining.append(current_job().remaining())
        return ctx.id

    async with sched:
        task = asyncio.create_task(sched.call(job, timeout=5.0, priority=3, upstream="openai"))
        await clock.advance_and_settle(2.0)
        job_id = await task
        untimed = await sched.call(_untimed_remaining)
    ctx = seen[0]
    assert ctx.id == job_id
    assert isinstance(job_id, str)
    assert (ctx.lane, ctx.attempt, ctx.priority, ctx.upstream) == ("interactive", 1, 3, "openai")
    assert remaining == [5.0, 3.0]
    assert untimed is None
    with pytest.raises(LookupError):
        current_job()


async def _untimed_remaining() -> float | None:
    return current_job().remaining()


async def test_each_job_sees_its_own_context(clock: FakeClock) -> None:
    sched = one_lane(clock, max_concurrency=4)

    async def job() -> str:
        before = current_job().id
        await asyncio.sleep(0)  # the other jobs run in between
        assert current_job().id == before
        return before

    async with sched:
        ids = await asyncio.gather(*(sched.call(job) for _ in range(4)))
    assert len(set(ids)) == 4
