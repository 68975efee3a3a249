"""Bounded queues and load shedding: Overloaded at once, deadlines before the start."""

from __future__ import annotations

import asyncio

import pytest

from scheduler import (
    DeadlineExceeded,
    FakeClock,
    JobState,
    Lane,
    Overloaded,
    Scheduler,
    SubmitError,
)
from tests.helpers import Gate, one_lane, settle


async def test_full_lane_raises_overloaded_at_once_with_retry_after(clock: FakeClock) -> None:
    gate = Gate()
    sched = one_lane(clock, max_concurrency=2, max_queued=3)
    async with sched:
        # teach the lane its drain rate: two jobs that each run 0.5 s
        async def half_second() -> None:
            await clock.sleep(0.5)

        warm = [asyncio.create_task(sched.call(half_second)) for _ in range(2)]
        await clock.advance_and_settle(0.5)
        await asyncio.gather(*warm)

        tasks = [asyncio.create_task(sched.call(gate.job(i))) for i in range(5)]
        await settle()
        assert sched.stats()["interactive"].queued == 3
        with pytest.raises(Overloaded) as info:
            await sched.call(gate.job("too many"))  # returns at once: no await on a seat
        err = info.value
        assert isinstance(err, SubmitError)
        assert err.lane == "interactive"
        # 4 jobs ahead of a new one, 2 seats, 0.5 s each: about 1 s
        assert err.retry_after == pytest.approx(1.0, rel=0.01)
        assert "retry after" in str(err)
        gate.release()
        await asyncio.gather(*tasks)
    stats = sched.stats()["interactive"]
    assert stats.shed == {"queue_full": 1}
    assert "too many" not in gate.started


async def test_max_queued_zero_sheds_whenever_no_seat_is_free(clock: FakeClock) -> None:
    gate = Gate()
    sched = one_lane(clock, max_concurrency=1, max_queued=0)
    async with sched:
        t = asyncio.create_task(sched.call(gate.job()))
        await settle()
        with pytest.raises(Overloaded) as info:
            await sched.call(gate.job())
        assert info.value.retry_after == 1.0  # nothing measured yet: a sane default
        gate.release()
        await t


async def test_deadline_shed_at_admission_when_expected_wait_exceeds_it(
    clock: FakeClock,
) -> None:
    gate = Gate()
    sched = one_lane(clock, max_concurrency=1, max_queued=100)

    async def one_second() -> None:
        await clock.sleep(1.0)

    async with sched:
        first = asyncio.create_task(sched.call(one_second))
        await clock.advance_and_settle(1.0)
        await first
        holder = asyncio.create_task(sched.call(gate.job("holder")))
        queued = [asyncio.create_task(sched.call(gate.job(i))) for i in range(3)]
        await settle()
        # 3 queued ahead + itself at 1 s each, one seat: ~4 s expected
        with pytest.raises(DeadlineExceeded) as info:
            await sched.call(gate.job("late"), deadline=2.0)
        assert info.value.where == "admission"
        assert info.value.expected_wait == pytest.approx(4.0)
        gate.release()
        await asyncio.gather(holder, *queued)
    assert "late" not in gate.started
    assert sched.stats()["interactive"].shed == {"deadline_admission": 1}


@pytest.mark.parametrize("deadline", [0, -1.5])
async def test_non_positive_deadline_is_shed_not_run(clock: FakeClock, deadline: float) -> None:
    gate = Gate()
    sched = one_lane(clock)
    async with sched:
        with pytest.raises(DeadlineExceeded):
            await sched.call(gate.job(), deadline=deadline)
    assert gate.started == []


async def test_deadline_passing_in_the_queue_sheds_the_job_unrun(clock: FakeClock) -> None:
    gate = Gate()
    sched = one_lane(clock, max_concurrency=1, max_queued=10)
    async with sched:
        holder = asyncio.create_task(sched.call(gate.job("holder")))
        await settle()
        doomed = asyncio.create_task(sched.call(gate.job("doomed"), deadline=0.5))
        patient = asyncio.create_task(sched.call(gate.job("patient"), deadline=10.0))
        await settle()
        await clock.advance_and_settle(0.49)
        assert not doomed.done()
        await clock.advance_and_settle(0.01)
        # the caller learns at once, not when the job reaches the head of the queue
        assert doomed.done()
        with pytest.raises(DeadlineExceeded) as info:
            await doomed
        assert info.value.where == "queue"
        assert info.value.job_id is not None
        assert sched.stats()["interactive"].queued == 1
        gate.release()
        await asyncio.gather(holder, patient)
    assert gate.started == ["holder", "patient"]
    assert sched.stats()["interactive"].shed == {"deadline_queue": 1}


async def test_job_whose_deadline_passed_just_as_a_seat_freed_is_never_run(
    clock: FakeClock,
) -> None:
    """The dispatcher re-checks deadlines, even if the timer has not fired yet."""
    gate = Gate()
    sched = one_lane(clock, max_concurrency=1, max_queued=10)
    async with sched:
        holder = asyncio.create_task(sched.call(gate.job("holder")))
        await settle()
        doomed = asyncio.create_task(sched.call(gate.job("doomed"), deadline=1.0))
        await settle()
        # move the time without firing timers: the seat frees exactly at the deadline
        clock._now += 1.0
        gate.release()
        await holder
        with pytest.raises(DeadlineExceeded):
            await doomed
    assert gate.started == ["holder"]


async def test_job_states_after_shedding(clock: FakeClock) -> None:
    assert JobState.EXPIRED.terminal
    assert not JobState.QUEUED.terminal


async def test_retry_after_counts_only_the_seats_a_lane_can_really_get(clock: FakeClock) -> None:
    """Under a shared ceiling of 4 where another lane reserves 2, lane a gets 2 seats."""
    gate = Gate()
    sched = Scheduler(
        ":memory:",
        lanes=[Lane("a", 4, 3, reserved=1), Lane("b", 4, 3, reserved=2)],
        max_concurrency=4,
        clock=clock,
        shutdown_grace=0,
    )

    async def one_second() -> None:
        await clock.sleep(1.0)

    async with sched:
        warm = asyncio.create_task(sched.call(one_second, lane="a"))
        await clock.advance_and_settle(1.0)
        await warm
        tasks = [asyncio.create_task(sched.call(gate.job(), lane="a")) for _ in range(5)]
        await settle()
        assert sched.stats()["a"].running == 2
        with pytest.raises(Overloaded) as info:
            await sched.call(gate.job(), lane="a")
        # 3 queued + itself over 2 seats at 1 s each
        assert info.value.retry_after == pytest.approx(2.0)
        gate.release()
        await asyncio.gather(*tasks)
