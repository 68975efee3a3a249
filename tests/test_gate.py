"""The health gate in front of batch work, breakers for interactive work, fallbacks."""

from __future__ import annotations

import asyncio
import logging
import random

import httpx
import pytest

from scheduler import (
    BreakerConfig,
    FakeClock,
    Lane,
    RetryPolicy,
    Scheduler,
    SubmitError,
    UpstreamUnavailable,
)
from scheduler.upstream import Upstream
from tests.helpers import Gate, settle


def status_error(status: int, **headers: str) -> httpx.HTTPStatusError:
    request = httpx.Request("POST", "http://127.0.0.1/v1/complete")
    response = httpx.Response(status, headers=headers, request=request)
    return httpx.HTTPStatusError(f"HTTP {status}", request=request, response=response)


def make(clock: FakeClock, *upstreams: Upstream, batch: int = 4) -> Scheduler:
    return Scheduler(
        ":memory:",
        lanes=[Lane("interactive", 4, 50), Lane("batch", batch, 500, gated=True)],
        clock=clock,
        upstreams=list(upstreams),
        shutdown_grace=0,
    )


async def test_one_retry_after_pauses_every_gated_job_for_that_upstream_to_the_second(
    clock: FakeClock,
) -> None:
    sched = make(clock)
    started: list[float] = []

    async def first() -> None:
        started.append(clock.now())
        raise status_error(429, **{"retry-after": "30"})

    async def later(tag: int) -> int:
        started.append(clock.now())
        return tag

    async with sched:
        with pytest.raises(httpx.HTTPStatusError):
            await sched.call(first, lane="batch", upstream="llm")
        waiting = [
            asyncio.create_task(sched.call(later, i, lane="batch", upstream="llm"))
            for i in range(5)
        ]
        await clock.advance_and_settle(29.9)
        assert started == [0.0], "nothing for that upstream starts during the pause"
        assert sched.stats().upstreams["llm"].paused_for == pytest.approx(0.1)
        assert sched.stats().gate_reason == "retry_after"
        await clock.advance_and_settle(0.1)
        for _ in range(100):  # then paced at the rate the 429 taught
            if all(task.done() for task in waiting):
                break
            await clock.advance_and_settle(0.5)
        assert await asyncio.gather(*waiting) == [0, 1, 2, 3, 4]
    assert started[1] == pytest.approx(30.0)
    assert sched.stats().upstreams["llm"].learned_rate is not None
    # other upstreams were never held
    assert sched.gate.stats().closed_by["retry_after"] == 1


async def test_other_upstreams_are_not_held_by_one_upstreams_pause(clock: FakeClock) -> None:
    sched = Scheduler(
        ":memory:",
        lanes=[Lane("a", 2, 10, gated=True), Lane("b", 2, 10, gated=True)],
        clock=clock,
        shutdown_grace=0,
    )

    async def limited() -> None:
        raise status_error(503, **{"retry-after": "60"})

    async def fine() -> str:
        return "ok"

    async with sched:
        with pytest.raises(httpx.HTTPStatusError):
            await sched.call(limited, lane="a", upstream="one")
        assert await sched.call(fine, lane="b", upstream="two") == "ok"


async def test_open_breaker_fails_interactive_calls_at_once_without_touching_the_upstream(
    clock: FakeClock,
) -> None:
    breaker = BreakerConfig(consecutive_failures=3, cooldown=30, half_open_trials=3)
    sched = make(clock, Upstream("llm", breaker=breaker))
    calls = 0

    async def down() -> None:
        nonlocal calls
        calls += 1
        raise status_error(503)

    async def cached(_: str) -> str:
        return "a degraded local answer"

    async def ask(_: str) -> str:
        nonlocal calls
        calls += 1
        return "fresh"

    async with sched:
        for _ in range(3):
            with pytest.raises(httpx.HTTPStatusError):
                await sched.call(down, upstream="llm")
        assert sched.stats().upstreams["llm"].breaker == "open"
        # live calls are the open breaker's trials: a few at once, then one a second
        for _ in range(3):
            with pytest.raises(httpx.HTTPStatusError):
                await sched.call(down, upstream="llm")
        assert calls == 6
        with pytest.raises(UpstreamUnavailable) as info:
            await sched.call(ask, "q", upstream="llm")
        assert info.value.retry_after == pytest.approx(1.0)
        assert calls == 6
        assert await sched.call(ask, "q", upstream="llm", fallback=cached) == (
            "a degraded local answer"
        )
        assert calls == 6
        assert sched.stats()["interactive"].fallbacks == 1
        assert sched.stats().upstreams["llm"].breaker == "open"
        # the next trial a second later succeeds: half-open at once, closed by two more
        await clock.advance_and_settle(1.0)
        assert await sched.call(ask, "q", upstream="llm") == "fresh"
        assert sched.stats().upstreams["llm"].breaker == "half_open"
        await clock.advance_and_settle(1.0)
        assert await sched.call(ask, "q", upstream="llm") == "fresh"
        assert sched.stats().upstreams["llm"].breaker == "closed"
        assert calls == 8


async def test_a_live_call_with_a_deadline_waits_for_the_next_trial(clock: FakeClock) -> None:
    breaker = BreakerConfig(consecutive_failures=1, half_open_trials=1)
    sched = make(clock, Upstream("llm", breaker=breaker))

    async def down() -> None:
        raise status_error(503)

    async def ask() -> float:
        return clock.now()

    async with sched:
        with pytest.raises(httpx.HTTPStatusError):
            await sched.call(down, upstream="llm")  # opens it
        with pytest.raises(httpx.HTTPStatusError):
            await sched.call(down, upstream="llm")  # a live trial: the one token
        with pytest.raises(UpstreamUnavailable):
            await sched.call(ask, upstream="llm", deadline=0.5)  # the trial is 1 s away
        waiting = asyncio.create_task(sched.call(ask, upstream="llm", deadline=1.5))
        await clock.advance_and_settle(1.0)
        assert await waiting == pytest.approx(1.0)
        assert sched.stats().upstreams["llm"].breaker == "closed"


async def _open_with_one_trial_out(
    sched: Scheduler, clock: FakeClock, answer: asyncio.Future[str]
) -> asyncio.Task[str]:
    """Open the breaker, spend the trial tokens but one on failed live trials, and
    send a last live trial that waits for ``answer``: a trial in flight, none left."""

    async def down() -> None:
        raise status_error(503)

    async def trial() -> str:
        return await answer

    with pytest.raises(httpx.HTTPStatusError):
        await sched.call(down, upstream="llm")  # opens it
    for _ in range(2):
        with pytest.raises(httpx.HTTPStatusError):
            await sched.call(down, upstream="llm")  # live trials while open
    out = asyncio.create_task(sched.call(trial, upstream="llm"))
    await settle()
    assert sched.gate.upstream("llm").trials_in_flight == 1
    return out


async def test_a_live_call_waits_for_the_answer_of_a_trial_in_flight(clock: FakeClock) -> None:
    sched = make(clock, Upstream("llm", breaker=BreakerConfig(consecutive_failures=1)))
    answer: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def ask() -> float:
        return clock.now()

    async with sched:
        out = await _open_with_one_trial_out(sched, clock, answer)
        # the next paced trial is a second away, beyond the deadline: before, refused
        waiting = asyncio.create_task(sched.call(ask, upstream="llm", deadline=0.5))
        await clock.advance_and_settle(0.2)
        assert not waiting.done()
        answer.set_result("up again")  # half-open, and its other trials go unpaced
        assert await out == "up again"
        assert await waiting == pytest.approx(0.2)
        assert sched.stats().upstreams["llm"].breaker == "closed"


async def test_a_failed_trial_in_flight_refuses_its_waiters_at_once(clock: FakeClock) -> None:
    sched = make(clock, Upstream("llm", breaker=BreakerConfig(consecutive_failures=1)))
    answer: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    refused_at: list[float] = []

    async def ask() -> float:
        return clock.now()

    async def waiter() -> None:
        try:
            await sched.call(ask, upstream="llm", deadline=0.5)
        except UpstreamUnavailable:
            refused_at.append(clock.now())

    async with sched:
        out = await _open_with_one_trial_out(sched, clock, answer)
        waiting = asyncio.create_task(waiter())
        await clock.advance_and_settle(0.2)
        answer.set_exception(status_error(503))
        with pytest.raises(httpx.HTTPStatusError):
            await out
        await waiting
        # no trial left in flight, the next one beyond the deadline: refused then, not
        # at the deadline
        assert refused_at == [pytest.approx(0.2)]
        assert sched.gate.upstream("llm").trials_in_flight == 0
        assert sched.stats().upstreams["llm"].breaker == "open"


async def test_live_calls_get_through_a_degraded_upstream_right_after_an_outage(
    clock: FakeClock,
) -> None:
    # the drill's script on a fake clock, with the default upstream settings: 8 live
    # calls a second (start within 1 s, run within 1 s); 10 s down (503, Retry-After 2),
    # then up but degraded (200 ms answers, 15 % of them 500)
    sched = make(clock)
    rng = random.Random(16)
    outage_end = 10.0
    outcomes: dict[str, list[str]] = {"outage": [], "degraded": []}
    sent_while_down = 0

    async def ask() -> str:
        nonlocal sent_while_down
        if clock.now() < outage_end:
            sent_while_down += 1
            raise status_error(503, **{"retry-after": "2"})
        await clock.sleep(0.2)
        if rng.random() < 0.15:
            raise status_error(500)
        return "ok"

    async def one(phase: str) -> None:
        try:
            outcomes[phase].append(await sched.call(ask, upstream="llm", deadline=1.0, timeout=1.0))
        except SubmitError as exc:  # UpstreamUnavailable, DeadlineExceeded, Overloaded
            outcomes[phase].append(type(exc).__name__)
        except httpx.HTTPStatusError as exc:
            outcomes[phase].append(str(exc.response.status_code))

    async with sched:
        calls = []
        for n in range(8 * 20):
            phase = "outage" if n / 8 < outage_end else "degraded"
            calls.append(asyncio.create_task(one(phase)))
            await clock.advance_and_settle(0.125)
        for _ in range(24):  # 3 s more, in steps
            await clock.advance_and_settle(0.125)
        await asyncio.gather(*calls)
    assert sent_while_down < 40  # of 80: the breaker and its paced trials spared it
    degraded = outcomes["degraded"]
    assert len(degraded) == 80
    # every call made while it was up got the upstream's answer, a 200 or its own 500
    assert set(degraded) == {"ok", "500"}, degraded


async def test_batch_keeps_its_seats_while_interactive_queues_on_its_own_ceiling(
    clock: FakeClock,
) -> None:
    inter, batch = Gate(), Gate()
    sched = Scheduler(
        ":memory:",
        lanes=[Lane("interactive", 1, 10), Lane("batch", 4, 100, gated=True)],
        clock=clock,
        shutdown_grace=0,
    )
    async with sched:
        first = asyncio.create_task(sched.call(inter.job("i1")))
        queued = asyncio.create_task(sched.call(inter.job("i2")))
        await settle()
        jobs = [asyncio.create_task(sched.call(batch.job(i), lane="batch")) for i in range(3)]
        await settle()
        # batch holding back would not give interactive a seat: its own ceiling is full
        # (no upstream-bound work: no adaptive limit either, every free seat is used)
        assert batch.started == [0, 1, 2]
        assert "interactive_pressure" not in sched.gate.stats().closed_by
        inter.release()
        batch.release()
        await asyncio.gather(first, queued, *jobs)


async def test_rate_limit_headroom_keeps_a_reserve_for_interactive(clock: FakeClock) -> None:
    sched = make(clock, Upstream("llm", interactive_reserve=0.2))
    ran: list[str] = []

    async def job(tag: str) -> None:
        ran.append(tag)

    async with sched:
        sched.gate.observe_headers(
            "llm",
            {
                "x-ratelimit-remaining-requests": "15",
                "x-ratelimit-limit-requests": "100",
                "x-ratelimit-reset-requests": "20s",
            },
        )
        batch = asyncio.create_task(sched.call(job, "batch", lane="batch", upstream="llm"))
        await settle()
        assert ran == []
        await sched.call(job, "interactive", upstream="llm")
        assert ran == ["interactive"]
        await clock.advance_and_settle(20.0)
        await batch
    assert ran == ["interactive", "batch"]
    assert sched.gate.stats().closed_by["rate_limit"] == 1


async def test_adaptive_limit_ramps_up_and_cuts_back_on_overload(clock: FakeClock) -> None:
    sched = make(clock, batch=16)
    failing = False

    async def work() -> None:
        await clock.sleep(0.1)
        if failing:
            raise status_error(503)

    async def run(n: int) -> None:
        tasks = [
            asyncio.create_task(sched.call(work, lane="batch", upstream="llm")) for _ in range(n)
        ]
        while not all(t.done() for t in tasks):
            await clock.advance_and_settle(0.1)
        await asyncio.gather(*tasks, return_exceptions=True)

    async with sched:
        assert sched.stats()["batch"].limit == 1  # starts small
        await run(64)
        grown = sched.stats()["batch"].limit
        assert grown is not None
        assert grown > 8
        failing = True
        await run(4)
        cut = sched.stats()["batch"].limit
        assert cut is not None
        assert cut < grown


async def test_retries_within_the_deadline_and_the_budget(clock: FakeClock) -> None:
    sched = make(clock)
    attempts = 0

    async def flaky() -> str:
        nonlocal attempts
        attempts += 1
        if attempts < 3:
            raise httpx.ConnectError("reset")
        return "ok"

    async with sched:
        task = asyncio.create_task(
            sched.call(
                flaky,
                upstream="llm",
                deadline=10.0,
                retry=RetryPolicy(max_attempts=5, base=1.0, jitter="none"),
            )
        )
        await clock.advance_and_settle(1.0)
        await clock.advance_and_settle(2.0)
        assert await task == "ok"
        assert attempts == 3
        # a retry that could not start within the deadline is not attempted
        attempts = -10
        with pytest.raises(httpx.ConnectError):
            await sched.call(
                flaky,
                upstream="llm",
                deadline=0.5,
                retry=RetryPolicy(max_attempts=5, base=1.0, jitter="none"),
            )
        assert attempts == -9


async def test_client_errors_are_not_retried_and_do_not_trip_the_breaker(
    clock: FakeClock,
) -> None:
    sched = make(clock, Upstream("llm", breaker=BreakerConfig(consecutive_failures=2)))
    calls = 0

    async def bad_request() -> None:
        nonlocal calls
        calls += 1
        raise status_error(400)

    async with sched:
        for _ in range(5):
            with pytest.raises(httpx.HTTPStatusError):
                await sched.call(bad_request, upstream="llm", retry=RetryPolicy(jitter="none"))
    assert calls == 5
    stats = sched.stats().upstreams["llm"]
    assert stats.breaker == "closed"
    assert stats.failures == {"client_error": 5}


async def test_a_malformed_retry_after_never_crashes_the_dispatcher(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="floodgate")
    sched = make(clock)

    async def weird() -> None:
        raise status_error(429, **{"retry-after": "tomorrow-ish"})

    async def fine() -> str:
        return "ok"

    async with sched:
        with pytest.raises(httpx.HTTPStatusError):
            await sched.call(weird, lane="batch", upstream="llm")
        assert await sched.call(fine, lane="batch", upstream="llm") == "ok"
    assert any(r.msg["event"] == "upstream.bad_header" for r in caplog.records)  # type: ignore[index]


async def test_every_gate_change_is_logged_with_its_reason(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="floodgate")
    sched = make(clock)

    async def limited() -> None:
        raise status_error(429, **{"retry-after": "5"})

    async def fine() -> None:
        return None

    async with sched:
        with pytest.raises(httpx.HTTPStatusError):
            await sched.call(limited, lane="batch", upstream="llm")
        task = asyncio.create_task(sched.call(fine, lane="batch", upstream="llm"))
        await clock.advance_and_settle(5.0)
        await task
    events = [
        (r.msg["event"], r.msg.get("reason"))  # type: ignore[union-attr]
        for r in caplog.records
        if isinstance(r.msg, dict) and str(r.msg["event"]).startswith("gate.")
    ]
    assert events == [("gate.closed", "retry_after"), ("gate.opened", None)]
