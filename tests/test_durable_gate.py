"""Durable batch work behind the health gate: an outage stops the hammering, recovery drains."""

from __future__ import annotations

import httpx

from scheduler import (
    BacklogOptions,
    BreakerConfig,
    FakeClock,
    JobState,
    Lane,
    RetryPolicy,
    Scheduler,
)
from scheduler.upstream import Upstream


def status_error(status: int) -> httpx.HTTPStatusError:
    request = httpx.Request("POST", "http://127.0.0.1/v1/complete")
    response = httpx.Response(status, request=request)
    return httpx.HTTPStatusError(f"HTTP {status}", request=request, response=response)


async def test_an_outage_stops_batch_calls_and_recovery_drains_everything(
    clock: FakeClock,
) -> None:
    sched = Scheduler(
        ":memory:",
        lanes=[Lane("interactive", 4), Lane("batch", 8, durable=True, gated=True)],
        clock=clock,
        upstreams=[Upstream("llm", breaker=BreakerConfig(consecutive_failures=5, cooldown=10))],
        backlog_options=BacklogOptions(poll_interval=0.5),
        shutdown_grace=0,
    )
    down = True
    calls_while_down = 0
    calls_total = 0

    @sched.task(upstream="llm", retry=RetryPolicy(max_attempts=5, base=1.0, cap=5.0))
    async def summarize(i: int) -> int:
        nonlocal calls_while_down, calls_total
        calls_total += 1
        await clock.sleep(0.05)
        if down:
            calls_while_down += 1
            raise status_error(503)
        return i

    async with sched:
        jobs = [await summarize.submit(i) for i in range(200)]
        await clock.advance_and_settle(600, step=0.5)  # ten minutes of outage
        assert sched.stats().upstreams["llm"].breaker != "closed"
        # 200 jobs, 5 attempts each, would be 1,000 calls for a blind client
        assert calls_while_down < 60
        down = False
        await clock.advance_and_settle(120, step=0.5)
        states = {(await sched.job(j.id)).state for j in jobs}
        assert states == {JobState.DONE}
        results = [await j.result(timeout=0.1) for j in jobs[:3]]
    assert results == [0, 1, 2]
    # no job used up its attempts waiting for the outage to end
    assert calls_total - calls_while_down == 200


async def test_failed_half_open_trials_give_the_attempt_back(clock: FakeClock) -> None:
    sched = Scheduler(
        ":memory:",
        lanes=[Lane("batch", 2, durable=True, gated=True)],
        clock=clock,
        upstreams=[Upstream("llm", breaker=BreakerConfig(consecutive_failures=2, cooldown=5))],
        backlog_options=BacklogOptions(poll_interval=0.5),
        shutdown_grace=0,
    )
    down = True
    trials_while_down = 0

    @sched.task(upstream="llm", retry=RetryPolicy(max_attempts=2, base=1.0, jitter="none"))
    async def work(i: int) -> int:
        nonlocal trials_while_down
        if down:
            trials_while_down += 1
            raise status_error(503)
        return i

    async with sched:
        jobs = [await work.submit(i) for i in range(3)]
        # many half-open trials fail during the outage
        await clock.advance_and_settle(300, step=0.5)
        trials = trials_while_down
        down = False
        await clock.advance_and_settle(120, step=0.5)
        states = [(await sched.job(j.id)).state for j in jobs]
    # two attempts each would have been spent by the trials: none went DEAD
    assert states == [JobState.DONE] * 3
    assert trials > 6, "the breaker kept probing with real jobs"
