"""Hard ceilings: a lane never runs more than max_concurrency jobs, whatever happens."""

from __future__ import annotations

import asyncio

import pytest

from scheduler import FakeClock, JobCancelled, JobTimeout, Lane, Scheduler, SchedulerClosed
from tests.helpers import Gate, settle


def make(clock: FakeClock, *lanes: Lane, **kw: object) -> Scheduler:
    kw.setdefault("shutdown_grace", 0)  # a failing test must not hang in the drain
    return Scheduler(":memory:", lanes=list(lanes), clock=clock, **kw)  # type: ignore[arg-type]


async def test_lane_never_exceeds_its_ceiling(clock: FakeClock) -> None:
    gate = Gate()
    sched = make(clock, Lane("interactive", max_concurrency=3, max_queued=100))
    async with sched:
        tasks = [asyncio.create_task(sched.call(gate.job(i))) for i in range(20)]
        await settle()
        assert gate.running == 3
        stats = sched.stats()["interactive"]
        assert (stats.running, stats.queued) == (3, 17)
        gate.release()
        assert sorted(await asyncio.gather(*tasks)) == list(range(20))
    assert gate.peak == 3


@pytest.mark.parametrize("how", ["exception", "timeout", "cancel"])
async def test_seat_comes_back_after_every_kind_of_ending(clock: FakeClock, how: str) -> None:
    gate = Gate()
    sched = make(clock, Lane("interactive", max_concurrency=1, max_queued=10))

    trigger = asyncio.Event()

    async def bad() -> None:
        await trigger.wait()
        raise ValueError("boom")

    async with sched:
        first = asyncio.create_task(sched.call(bad, timeout=5.0 if how == "timeout" else None))
        await settle()
        second = asyncio.create_task(sched.call(gate.job("next")))
        await settle()
        assert gate.running == 0, "the second job must wait for the only seat"
        if how == "timeout":
            await clock.advance_and_settle(5.0)
            with pytest.raises(JobTimeout):
                await first
        elif how == "cancel":
            first.cancel()
            with pytest.raises(asyncio.CancelledError):
                await first
        else:
            trigger.set()
            with pytest.raises(ValueError, match="boom"):
                await first
        await settle()
        assert gate.running == 1
        assert sched.stats()["interactive"].running == 1
        gate.release()
        assert await second == "next"
    assert gate.peak == 1


async def test_cancelled_waiter_leaves_the_queue_and_never_runs(clock: FakeClock) -> None:
    gate = Gate()
    sched = make(clock, Lane("interactive", max_concurrency=1, max_queued=10))
    async with sched:
        running = asyncio.create_task(sched.call(gate.job("a")))
        await settle()
        waiting = asyncio.create_task(sched.call(gate.job("b")))
        last = asyncio.create_task(sched.call(gate.job("c")))
        await settle()
        assert sched.stats()["interactive"].queued == 2
        waiting.cancel()
        await settle()
        assert sched.stats()["interactive"].queued == 1
        gate.release()
        await asyncio.gather(running, last)
        assert waiting.cancelled()
    assert gate.started == ["a", "c"]
    assert sched.stats()["interactive"].cancelled == 1


async def test_seat_handed_to_a_waiter_cancelled_before_it_resumed_is_passed_on(
    clock: FakeClock,
) -> None:
    gate = Gate()
    sched = make(clock, Lane("interactive", max_concurrency=1, max_queued=10))
    hold = asyncio.Event()

    async def first() -> None:
        await hold.wait()

    async with sched:
        t1 = asyncio.create_task(sched.call(first))
        await settle()
        t2 = asyncio.create_task(sched.call(gate.job("b")))
        t3 = asyncio.create_task(sched.call(gate.job("c")))
        await settle()
        hold.set()
        await asyncio.sleep(0)  # t1 finishes and hands its seat to t2 ...
        t2.cancel()  # ... which is cancelled before it could start
        await settle()
        gate.release()
        await asyncio.gather(t1, t3)
        with pytest.raises(asyncio.CancelledError):
            await t2
    assert gate.started == ["c"]
    assert gate.peak == 1


async def test_shared_ceiling_across_lanes_and_reserved_seats(clock: FakeClock) -> None:
    inter, batch = Gate(), Gate()
    sched = make(
        clock,
        Lane("interactive", max_concurrency=4, max_queued=50, reserved=1),
        Lane("batch", max_concurrency=4, max_queued=50, reserved=1),
        max_concurrency=4,
    )
    async with sched:
        batch_tasks = [
            asyncio.create_task(sched.call(batch.job(), lane="batch")) for _ in range(10)
        ]
        await settle()
        # batch takes its reserved seat and every shared one, but not interactive's reservation
        assert batch.running == 3
        inter_tasks = [asyncio.create_task(sched.call(inter.job())) for _ in range(10)]
        await settle()
        assert inter.running == 1, "interactive is never starved to zero"
        assert sched.stats().running == 4
        # shared seats freed by batch go to the more urgent lane (interactive) first
        batch.release_one()
        batch.release_one()
        await settle()
        assert (inter.running, batch.running) == (3, 1)
        assert sched.stats().running == 4
        batch.release()
        inter.release()
        await asyncio.gather(*batch_tasks, *inter_tasks)
    assert inter.peak == 3
    assert batch.peak == 3
    assert sched.stats().running == 0


async def test_shutdown_cancels_what_outlives_the_grace(clock: FakeClock) -> None:
    sched = make(clock, Lane("interactive", max_concurrency=2, max_queued=10), shutdown_grace=3.0)
    started = asyncio.Event()

    async def forever() -> None:
        started.set()
        await asyncio.Event().wait()

    async with sched:
        task = asyncio.create_task(sched.call(forever))
        await started.wait()
        queued = asyncio.create_task(sched.call(forever))
        queued2 = asyncio.create_task(sched.call(forever))
        await settle()
        stopping = asyncio.create_task(sched.__aexit__(None, None, None))
        await settle()
        assert not stopping.done(), "running jobs get the grace period"
        await clock.advance_and_settle(3.0)
        await stopping
        assert stopping.result() is None
    # the two running jobs are cancelled, the one still queued never starts
    for t in (task, queued):
        with pytest.raises(JobCancelled, match="shutdown"):
            await t
    with pytest.raises(SchedulerClosed, match="shut down before the job started"):
        await queued2
    assert sched.stats().running == 0
    assert sched.stats().state == "stopped"
