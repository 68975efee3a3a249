"""Seats at run time: ceilings that change while jobs wait and run, the non-waiting twin,
and a property: whatever the changes, no seat is taken above the ceiling of the moment."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler import ConfigError, FakeClock, Lane, Overloaded
from tests.helpers import Gate, settle
from tests.test_ceilings import make


async def test_raising_a_lanes_ceiling_starts_waiting_jobs_at_once(clock: FakeClock) -> None:
    gate = Gate()
    sched = make(clock, Lane("interactive", max_concurrency=2, max_queued=100))
    async with sched:
        tasks = [asyncio.create_task(sched.call(gate.job(i))) for i in range(6)]
        await settle()
        assert gate.running == 2
        lane = sched.lane("interactive")
        lane.max_concurrency = 5
        await settle()
        assert gate.running == 5
        assert (lane.max_concurrency, lane.stats().max_concurrency) == (5, 5)
        gate.release()
        await asyncio.gather(*tasks)
    assert gate.peak == 5


async def test_lowering_a_ceiling_lets_running_jobs_finish_and_starts_none_above_it(
    clock: FakeClock,
) -> None:
    gate = Gate()
    sched = make(clock, Lane("interactive", max_concurrency=4, max_queued=100))
    async with sched:
        tasks = [asyncio.create_task(sched.call(gate.job(i))) for i in range(8)]
        await settle()
        assert gate.running == 4
        sched.lane("interactive").max_concurrency = 1
        for _ in range(3):  # three of the four end: still one running, at the new ceiling
            gate.release_one()
        await settle()
        assert gate.running == 1
        gate.release_one()
        await settle()
        assert gate.running == 1  # one at a time from now on
        gate.release()
        await asyncio.gather(*tasks)


async def test_the_shared_ceiling_can_change_at_run_time(clock: FakeClock) -> None:
    gate = Gate()
    lanes = (Lane("interactive", 10, 100, reserved=1), Lane("batch", 10, 100, reserved=1))
    sched = make(clock, *lanes, max_concurrency=3)
    async with sched:
        tasks = [asyncio.create_task(sched.call(gate.job(i), lane="batch")) for i in range(8)]
        await settle()
        assert gate.running == 2  # 3 minus interactive's reserved seat
        sched.max_concurrency = 6
        await settle()
        assert (sched.max_concurrency, gate.running) == (6, 5)
        with pytest.raises(ConfigError, match="below the 2 seats"):
            sched.max_concurrency = 1
        with pytest.raises(TypeError):
            sched.max_concurrency = "7"  # type: ignore[assignment]
        sched.max_concurrency = None  # only the lanes' own ceilings
        await settle()
        assert gate.running == 8
        gate.release()
        await asyncio.gather(*tasks)


async def test_a_lane_ceiling_is_checked(clock: FakeClock) -> None:
    sched = make(clock, Lane("interactive", 2, 10, reserved=2))
    async with sched:
        lane = sched.lane("interactive")
        with pytest.raises(ConfigError, match="below its reserved=2"):
            lane.max_concurrency = 1
        with pytest.raises(TypeError):
            lane.max_concurrency = 2.5  # type: ignore[assignment]
        with pytest.raises(KeyError):
            sched.lane("nope")


async def test_acquire_nowait_takes_a_free_seat_or_refuses_and_queues_nothing(
    clock: FakeClock,
) -> None:
    sched = make(clock, Lane("interactive", max_concurrency=1, max_queued=10))
    async with sched:
        seats, lane = sched.seats, sched._lanes["interactive"]
        first = seats.acquire_nowait(lane)
        with pytest.raises(Overloaded):
            seats.acquire_nowait(lane)
        assert len(lane.queue) == 0
        waiter = asyncio.create_task(seats.acquire(lane))
        await settle()
        assert not waiter.done()  # acquire() waits in the queue
        seats.release(lane, first)
        second = await asyncio.wait_for(waiter, 5)
        seats.release(lane, second)
        assert seats.running == 0


OPS = st.lists(
    st.one_of(
        st.tuples(st.just("call"), st.integers(1, 3)),
        st.tuples(st.just("finish"), st.integers(1, 3)),
        st.tuples(st.just("ceiling"), st.integers(1, 6)),
    ),
    max_size=40,
)


@settings(max_examples=80, deadline=None)
@given(ops=OPS)
def test_no_seat_is_taken_above_the_ceiling_of_the_moment(ops: list[tuple[str, int]]) -> None:
    async def main() -> None:
        clock = FakeClock()
        gate = Gate()
        sched = make(clock, Lane("interactive", max_concurrency=2, max_queued=1000))
        ceiling = 2
        async with sched:
            lane = sched.lane("interactive")
            tasks: list[asyncio.Task[object]] = []
            for op, n in ops:
                before = gate.running
                if op == "call":
                    tasks += [
                        asyncio.create_task(sched.call(gate.job(len(tasks)))) for _ in range(n)
                    ]
                elif op == "finish":
                    for _ in range(n):
                        gate.release_one()
                else:
                    ceiling = n
                    lane.max_concurrency = n
                await settle()
                # new seats only below the ceiling; jobs already running may stay above it
                assert gate.running <= max(ceiling, before)
                waiting = lane.stats().queued
                assert waiting == 0 or gate.running >= ceiling  # no free seat left idle
            gate.release()
            await asyncio.gather(*tasks)

    asyncio.run(main())
