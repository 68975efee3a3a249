"""Starting, stopping, running only some lanes, and bad input."""

from __future__ import annotations

import asyncio
import logging

import pytest

from scheduler import (
    ConfigError,
    FakeClock,
    Lane,
    Scheduler,
    SchedulerClosed,
    UnknownLane,
)
from tests.helpers import Gate, settle


async def ok(value: object = "ok") -> object:
    return value


def two_lanes(clock: FakeClock, **kw: object) -> Scheduler:
    kw.setdefault("shutdown_grace", 0)
    return Scheduler(
        ":memory:",
        lanes=[Lane("interactive", 2, 10), Lane("batch", 2, 10, gated=True)],
        clock=clock,
        **kw,  # type: ignore[arg-type]
    )


async def test_call_before_start_and_after_stop_is_refused_clearly(clock: FakeClock) -> None:
    sched = two_lanes(clock)
    with pytest.raises(SchedulerClosed, match="not started"):
        await sched.call(ok)
    async with sched:
        assert await sched.call(ok, 7) == 7
    with pytest.raises(SchedulerClosed, match="shutting down"):
        await sched.call(ok)
    # and it can be started again
    async with sched:
        assert await sched.call(ok) == "ok"


async def test_graceful_drain_lets_running_and_queued_jobs_finish(clock: FakeClock) -> None:
    gate = Gate()
    sched = Scheduler(
        ":memory:", lanes=[Lane("interactive", 1, 10)], clock=clock, shutdown_grace=10.0
    )
    await sched.__aenter__()
    running = asyncio.create_task(sched.call(gate.job("running")))
    queued = asyncio.create_task(sched.call(gate.job("queued")))
    await settle()
    stopping = asyncio.create_task(sched.__aexit__(None, None, None))
    await settle()
    assert sched.stats().state == "draining"
    with pytest.raises(SchedulerClosed, match="shutting down"):
        await sched.call(ok)
    await clock.advance_and_settle(9.0)
    gate.release()
    await stopping
    assert await running == "running"
    assert await queued == "queued"
    assert sched.stats().state == "stopped"
    assert sched.stats()["interactive"].completed == 2


async def test_open_runs_only_the_named_lanes(clock: FakeClock) -> None:
    sched = two_lanes(clock)
    async with sched.open(run=("interactive",)):
        assert await sched.call(ok) == "ok"
        with pytest.raises(SchedulerClosed, match="not run in this process"):
            await sched.call(ok, lane="batch")
    async with sched.open(run=()):
        with pytest.raises(SchedulerClosed):
            await sched.call(ok)
    with pytest.raises(UnknownLane):
        async with sched.open(run=("nope",)):
            pass
    with pytest.raises(TypeError, match="collection of lane names"):
        async with sched.open(run="interactive"):  # type: ignore[arg-type]
            pass


async def test_gated_lane_waits_while_the_gate_is_paused(clock: FakeClock) -> None:
    gate = Gate()
    sched = two_lanes(clock)
    async with sched:
        sched.gate.pause("upstream maintenance")
        batch = asyncio.create_task(sched.call(gate.job("batch"), lane="batch"))
        inter = asyncio.create_task(sched.call(gate.job("inter")))
        await settle()
        assert gate.started == ["inter"], "only the gated lane waits"
        stats = sched.stats()
        assert (stats.gate_open, stats.gate_reason) == (False, "upstream maintenance")
        assert stats["batch"].queued == 1
        sched.gate.resume()
        await settle()
        assert gate.started == ["inter", "batch"]
        gate.release()
        await asyncio.gather(batch, inter)
    assert sched.gate.stats().pauses == 1


async def test_bad_input_gets_clear_errors(clock: FakeClock) -> None:
    sched = two_lanes(clock)
    async with sched:
        with pytest.raises(UnknownLane, match="unknown lane 'nope'; this scheduler has"):
            await sched.call(ok, lane="nope")
        with pytest.raises(TypeError, match="priority must be a number"):
            await sched.call(ok, priority="high")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="deadline must be a number"):
            await sched.call(ok, deadline="2s")  # type: ignore[arg-type]
        with pytest.raises(ConfigError, match="timeout must be > 0"):
            await sched.call(ok, timeout=0)
        with pytest.raises(ConfigError, match="finite"):
            await sched.call(ok, priority=float("nan"))

        def not_async() -> int:
            return 1

        with pytest.raises(TypeError, match="not an awaitable"):
            await sched.call(not_async)  # type: ignore[arg-type]
        # and the lane is still fine
        assert await sched.call(ok) == "ok"
        assert sched.stats()["interactive"].running == 0


def test_config_validation() -> None:
    with pytest.raises(ConfigError):
        Lane("x", max_concurrency=0)
    with pytest.raises(ConfigError):
        Lane("x", max_queued=-1)
    with pytest.raises(TypeError, match="must be an int"):
        Lane("x", max_concurrency=2.5)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="aging"):
        Lane("x", aging=0)
    with pytest.raises(ConfigError, match="non-empty str"):
        Lane("")
    with pytest.raises(ConfigError, match="unique"):
        Scheduler(lanes=[Lane("a"), Lane("a")])
    with pytest.raises(ConfigError, match="reserve"):
        Scheduler(lanes=[Lane("a"), Lane("b", reserved=3)], max_concurrency=3)
    with pytest.raises(ConfigError, match="at least one lane"):
        Scheduler(lanes=[])
    with pytest.raises(TypeError, match="Lane objects"):
        Scheduler(lanes=["interactive"])  # type: ignore[list-item]
    # UnknownLane is catchable as KeyError and as ConfigError
    err = UnknownLane("x", ("a",))
    assert isinstance(err, KeyError)
    assert isinstance(err, ValueError)


def test_default_lanes_match_the_design() -> None:
    sched = Scheduler()
    interactive, batch = sched.lanes
    assert (interactive.name, interactive.max_concurrency, interactive.max_queued) == (
        "interactive",
        16,
        256,
    )
    assert (batch.name, batch.max_concurrency, batch.durable, batch.gated) == (
        "batch",
        8,
        True,
        True,
    )
    assert sched.backlog == "floodgate.db"


async def test_lifecycle_events_are_logged_with_stable_names(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="floodgate")
    sched = Scheduler(":memory:", lanes=[Lane("interactive", 1, 0)], clock=clock)
    gate = Gate()
    async with sched:
        t = asyncio.create_task(sched.call(gate.job()))
        await settle()
        with pytest.raises(Exception, match="full"):
            await sched.call(ok)
        gate.release()
        await t
    events = [r.msg["event"] for r in caplog.records if isinstance(r.msg, dict)]
    assert events == [
        "scheduler.started",
        "job.admitted",
        "job.started",
        "job.shed",
        "job.finished",
        "scheduler.draining",
        "scheduler.stopped",
    ]
    shed = next(r.msg for r in caplog.records if r.msg["event"] == "job.shed")  # type: ignore[index]
    assert shed["reason"] == "queue_full"  # type: ignore[index]
    assert shed["lane"] == "interactive"  # type: ignore[index]


async def test_quiet_by_default(clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    async with Scheduler(":memory:", lanes=[Lane("interactive")], clock=clock) as sched:
        await sched.call(ok)
    assert [r for r in caplog.records if r.name == "floodgate"] == []
