"""stats(): counters and latency quantiles; the clocks."""

from __future__ import annotations

import asyncio
import random
import time
from types import ModuleType

import pytest

import scheduler
from scheduler import FakeClock, Lane, Scheduler, SystemClock
from scheduler.metrics import LatencyHistogram


async def test_stats_count_every_outcome_and_measure_wait_and_run(clock: FakeClock) -> None:
    sched = Scheduler(":memory:", lanes=[Lane("interactive", 1, 5)], clock=clock, shutdown_grace=0)

    async def sleeps(seconds: float) -> None:
        await clock.sleep(seconds)

    async def fails() -> None:
        raise RuntimeError("nope")

    async with sched:
        a = asyncio.create_task(sched.call(sleeps, 2.0))  # runs 2 s, waits 0
        b = asyncio.create_task(sched.call(sleeps, 1.0))  # waits 2 s, runs 1 s
        await clock.advance_and_settle(2.0)
        await clock.advance_and_settle(1.0)
        await asyncio.gather(a, b)
        with pytest.raises(RuntimeError):
            await sched.call(fails)
    s = sched.stats()["interactive"]
    assert (s.admitted, s.completed, s.failed, s.cancelled, s.queued, s.running) == (
        3,
        2,
        1,
        0,
        0,
        0,
    )
    assert s.wait.count == 3
    assert s.wait.max == pytest.approx(2.0, rel=0.01)
    assert s.run.max == pytest.approx(2.0, rel=0.01)
    assert s.run.p50 == pytest.approx(1.0, rel=0.01)


def test_quantiles_within_one_percent_and_memory_bounded() -> None:
    rng = random.Random(7)
    hist = LatencyHistogram()
    values = sorted(rng.lognormvariate(-4, 1.5) for _ in range(50_000))
    for v in values:
        hist.observe(v)
    for q in (0.5, 0.95, 0.99):
        exact = values[int(q * (len(values) - 1))]
        assert hist.quantile(q) == pytest.approx(exact, rel=0.02)
    # a million more observations across twelve decades add no unbounded state
    bins_before = hist._sketch._store.length() + hist._sketch._negative_store.length()
    for i in range(200_000):
        hist.observe(10 ** (-6 + (i % 12)))
    bins_after = hist._sketch._store.length() + hist._sketch._negative_store.length()
    assert bins_after <= 2048
    assert bins_after >= bins_before
    summary = hist.summary()
    assert summary.count == 250_000


def test_empty_histogram_reports_none() -> None:
    summary = LatencyHistogram().summary()
    assert (summary.count, summary.p50, summary.p99) == (0, None, None)


async def test_format_table_lists_every_lane(clock: FakeClock) -> None:
    sched = Scheduler(":memory:", clock=clock)
    table = sched.stats().format_table()
    assert "interactive" in table
    assert "batch" in table
    assert "gate open" in table


async def test_fake_clock_fires_timers_in_order_at_their_time() -> None:
    clock = FakeClock(start=100.0)
    fired: list[tuple[str, float]] = []
    clock.call_at(105.0, lambda: fired.append(("b", clock.now())))
    clock.call_at(102.0, lambda: fired.append(("a", clock.now())))
    cancelled = clock.call_at(103.0, lambda: fired.append(("x", clock.now())))
    cancelled.cancel()
    clock.advance(4.0)
    assert fired == [("a", 102.0)]
    assert clock.now() == 104.0
    assert clock.next_timer() == 105.0
    clock.advance(1.0)
    assert fired == [("a", 102.0), ("b", 105.0)]
    assert clock.pending_timers == 0
    with pytest.raises(ValueError, match="backwards"):
        clock.advance(-1)


async def test_fake_sleep_wakes_only_when_time_is_advanced() -> None:
    clock = FakeClock()
    task = asyncio.create_task(clock.sleep(3.0))
    await clock.advance_and_settle(2.9)
    assert not task.done()
    await clock.advance_and_settle(0.1)
    assert task.done()


async def test_system_clock_follows_the_event_loop() -> None:
    clock = SystemClock()
    loop = asyncio.get_running_loop()
    assert abs(clock.now() - loop.time()) < 0.01
    fired = asyncio.Event()
    clock.call_at(clock.now() + 0.001, fired.set)
    await asyncio.wait_for(fired.wait(), 1.0)
    await clock.sleep(0)


class _ShiftedLoop(asyncio.SelectorEventLoop):
    """An event loop with a time of its own (as a virtual-time test loop has)."""

    def time(self) -> float:
        return super().time() + 1_000.0


def test_system_clock_reads_a_loop_with_its_own_time() -> None:
    """On asyncio's loops ``now()`` reads ``time.monotonic()`` (their ``time()``);
    once it meets a loop with a ``time()`` of its own, it asks that loop."""

    async def main() -> tuple[float, float, float]:
        clock = SystemClock()
        loop = asyncio.get_running_loop()
        fired = asyncio.Event()
        clock.call_at(loop.time() + 0.001, fired.set)  # every scheduler sets timers
        await asyncio.wait_for(fired.wait(), 1.0)
        return clock.now(), loop.time(), time.monotonic()

    with asyncio.Runner(loop_factory=_ShiftedLoop) as runner:
        now, loop_time, monotonic = runner.run(main())
    assert abs(now - loop_time) < 0.01
    assert now - monotonic > 999
    plain = SystemClock()
    assert abs(plain.now() - time.monotonic()) < 0.01  # no loop needed on asyncio's own


def test_public_api_is_exactly_what_init_exports() -> None:
    exported = {
        name
        for name in dir(scheduler)
        if not name.startswith("_") and not isinstance(getattr(scheduler, name), ModuleType)
    }
    assert exported == set(scheduler.__all__)
    for name in scheduler.__all__:
        assert getattr(scheduler, name) is not None


def test_error_tree_has_one_root() -> None:
    for name in scheduler.__all__:
        obj = getattr(scheduler, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, scheduler.SchedulerError), name


def test_histogram_counts_and_reads_observations_not_yet_folded() -> None:
    hist = LatencyHistogram()
    for v in (0.010, 0.020, 0.030):  # fewer than go into the sketch together
        hist.observe(v)
    assert hist.count == 3
    assert hist.quantile(0.5) == pytest.approx(0.020, rel=0.02)
    hist.observe(0.5)
    summary = hist.summary()
    assert (summary.count, summary.max) == (4, 0.5)
    assert summary.mean == pytest.approx(0.56 / 4)
    assert summary.p50 == pytest.approx(0.020, rel=0.02)
