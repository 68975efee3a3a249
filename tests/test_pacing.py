"""Pacing, rate discovery and recovery on a fake clock (issue: use every request
the upstream grants and not one more)."""

from __future__ import annotations

import heapq
import math
import random
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scheduler import BreakerConfig, FakeClock
from scheduler.breaker import BreakerState, CircuitBreaker
from scheduler.classify import SUCCESS, Classified, FailureKind, duration_resolution
from scheduler.limits import LearnedRate
from scheduler.upstream import Denied, Permit, Upstream, UpstreamHealth

THROTTLED = Classified(FailureKind.RATE_LIMITED, None, 429)
DOWN = Classified(FailureKind.SERVER_ERROR, None, 503)


# -- the breaker's schedule and its trials -------------------------------------------------


def test_default_open_periods_start_at_seconds_and_double_to_a_30s_cap() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(clock=clock)
    for _ in range(breaker.config.consecutive_failures):
        breaker.record_failure()
    periods = []
    for _ in range(7):
        wait = breaker.retry_after()
        assert wait is not None
        periods.append(wait)
        clock.advance(wait)
        for _ in range(2):  # two of three trials fail: a majority
            assert breaker.allow()
            breaker.record_failure()
    assert periods == [2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]


def test_live_calls_are_trials_while_open_at_most_one_a_second() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(clock=clock, consecutive_failures=1, cooldown=30)
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    assert not breaker.allow(), "batch waits for the cool-down"
    granted = 0
    for _ in range(1000):  # a live call every 10 ms for 10 s
        if breaker.allow(live=True):
            granted += 1
            breaker.record_failure(trial=True)
        clock.advance(0.01)
    # the first half_open_trials at once, then one a second
    assert granted <= breaker.config.half_open_trials + 10
    assert breaker.state is BreakerState.OPEN
    assert breaker.stats().opened == 1, "failed live trials do not stretch the cool-down"


def test_a_successful_live_trial_half_opens_at_once_and_live_calls_close_it() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(clock=clock, consecutive_failures=1, cooldown=30)
    breaker.record_failure()
    clock.advance(0.5)
    assert breaker.allow(live=True)
    breaker.record_success(trial=True)
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.allow(live=True)
    breaker.record_success(trial=True)
    assert breaker.state is BreakerState.CLOSED


def test_a_retry_after_holds_even_live_trials() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(clock=clock, consecutive_failures=1)
    breaker.record_failure(retry_after=5.0)
    assert not breaker.allow(live=True)
    assert breaker.next_trial_in(live=True) == pytest.approx(5.0)
    clock.advance(5.0)
    assert breaker.allow(live=True)


def test_trial_traffic_in_a_four_hour_outage_stays_under_one_request_a_second() -> None:
    clock = FakeClock()
    health = UpstreamHealth(Upstream("llm"), clock)
    sent = 0
    seconds = 4 * 3600
    for step in range(seconds * 4):  # live calls 4/s and a batch job asking 4/s
        for gated in (False, True):
            got = health.admit(gated=gated)
            if isinstance(got, Permit):
                sent += got.trial  # what goes once the breaker has opened
                got.finish(DOWN, 0.01)
        clock.advance(0.25)
        if step == 4 * 60:
            assert health.breaker.state is not BreakerState.CLOSED
    assert sent / seconds <= 1.0


@settings(max_examples=200, deadline=None)
@given(
    ops=st.lists(
        st.one_of(
            st.tuples(st.just("admit"), st.booleans()),
            st.tuples(st.just("finish"), st.integers(0, 50), st.booleans()),
            st.tuples(st.just("cancel"), st.integers(0, 50)),
            st.tuples(st.just("advance"), st.floats(0, 5)),
        ),
        max_size=200,
    )
)
def test_trials_in_flight_counts_the_breaker_trials_not_yet_reported(
    ops: list[tuple[object, ...]],
) -> None:
    clock = FakeClock()
    breaker = BreakerConfig(consecutive_failures=2, min_volume=2, cooldown=1.0)
    health = UpstreamHealth(Upstream("llm", breaker=breaker, throttle_k=None), clock)
    out: list[Permit] = []
    for op in ops:
        if op[0] == "admit":
            got = health.admit(gated=bool(op[1]))
            if isinstance(got, Permit):
                out.append(got)
        elif op[0] == "finish" and out:
            permit = out.pop(int(op[1]) % len(out))  # type: ignore[call-overload]
            permit.finish(SUCCESS if op[2] else DOWN, 0.01)
            permit.finish(DOWN, 0.01)  # a second report changes nothing
        elif op[0] == "cancel" and out:
            out.pop(int(op[1]) % len(out)).cancel()  # type: ignore[call-overload]
        elif op[0] == "advance":
            clock.advance(float(op[1]))  # type: ignore[arg-type]
        assert health.trials_in_flight == sum(p.trial for p in out)


# -- pacing: the limiter's burst, one limiter for both kinds of work ---------------------


def test_rpm_banks_one_second_not_one_minute() -> None:
    clock = FakeClock()
    health = UpstreamHealth(Upstream("llm", rpm=600, interactive_reserve=0.0), clock)
    burst = sum(isinstance(health.admit(gated=False), Permit) for _ in range(100))
    assert burst == 10  # one second of 600 rpm
    clock.advance(60)
    assert sum(isinstance(health.admit(gated=False), Permit) for _ in range(100)) == 10
    longer = UpstreamHealth(Upstream("llm", rpm=600, burst=3.0), clock)
    assert sum(isinstance(longer.admit(gated=False), Permit) for _ in range(100)) == 30


def test_batch_leaves_the_interactive_reserve_of_the_shared_limiter() -> None:
    clock = FakeClock()
    health = UpstreamHealth(Upstream("llm", rpm=6000, interactive_reserve=0.5), clock)
    batch = sum(isinstance(health.admit(gated=True), Permit) for _ in range(200))
    assert 50 <= batch <= 52  # of the 100 banked, half stays for live calls
    live = sum(isinstance(health.admit(gated=False), Permit) for _ in range(200))
    assert batch + live == 100
    denied = health.admit(gated=True)
    assert isinstance(denied, Denied)
    assert denied.reason == "rpm"
    assert denied.retry_in is not None
    assert 0 < denied.retry_in <= 0.6


# -- rate discovery --------------------------------------------------------------------------


@dataclass
class Run:
    sent: int
    ok: int
    throttled: int
    seconds: float

    @property
    def goodput(self) -> float:
        return self.ok / self.seconds

    @property
    def throttled_share(self) -> float:
        return self.throttled / max(1, self.sent)


def drive(
    health: UpstreamHealth,
    clock: FakeClock,
    *,
    limit: float,
    burst: float,
    latency: float,
    seats: int,
    seconds: float,
    measure_from: float,
    seed: int = 1,
    headers: bool = False,
) -> Run:
    """Batch work with an endless backlog against a hidden leaky bucket of ``limit``
    req/s and ``burst``: ``seats`` attempts at once, each asking for a permit.
    With ``headers`` each answer carries OpenAI-style ``x-ratelimit-*-requests``
    headers (whole tokens left, the time until the bucket is full in ms)."""
    rng = random.Random(seed)
    level, level_at = 0.0, clock.now()
    answers: list[tuple[float, int, Permit]] = []  # (time, seq, permit)
    free, seq = seats, 0
    run = Run(0, 0, 0, seconds - measure_from)
    statuses: dict[int, bool] = {}
    while clock.now() < seconds:
        now = clock.now()
        wait = None
        while free:
            got = health.admit(gated=True)
            if isinstance(got, Denied):
                wait = got.retry_in
                break
            free -= 1
            level = max(0.0, level - (now - level_at) * limit)
            level_at = now
            accepted = level + 1 <= burst
            level += accepted
            seq += 1
            statuses[seq] = accepted
            heapq.heappush(answers, (now + latency * rng.uniform(0.8, 1.2), seq, got))
            if now >= measure_from:
                run.sent += 1
        next_at = answers[0][0] if answers else now + 1.0
        if wait is not None and free:
            next_at = min(next_at, now + wait)
        clock.advance(max(next_at - now, 1e-6))
        while answers and answers[0][0] <= clock.now():
            _, n, permit = heapq.heappop(answers)
            free += 1
            accepted = statuses.pop(n)
            if headers:
                level = max(0.0, level - (clock.now() - level_at) * limit)
                level_at = clock.now()
                health.observe_headers(budget_headers(burst, burst - level, level / limit))
            permit.finish(SUCCESS if accepted else THROTTLED, latency)
            if permit.sent_at >= measure_from:
                if accepted:
                    run.ok += 1
                else:
                    run.throttled += 1
    return run


def budget_headers(limit: float, tokens: float, full_in: float) -> dict[str, str]:
    """What a token bucket holding ``tokens`` of ``limit`` says, as OpenAI words it."""
    return {
        "x-ratelimit-limit-requests": str(int(limit)),
        "x-ratelimit-remaining-requests": str(int(tokens)),
        "x-ratelimit-reset-requests": f"{math.ceil(full_in * 1000)}ms",
    }


def test_rate_discovery_converges_under_a_fixed_limit() -> None:
    clock = FakeClock()
    health = UpstreamHealth(Upstream("llm"), clock)
    run = drive(
        health, clock, limit=40, burst=5, latency=0.05, seats=8, seconds=300, measure_from=60
    )
    assert run.goodput >= 0.9 * 40
    assert run.throttled_share <= 0.01
    rate = health.pacer.rate()
    assert rate is not None
    assert 30 <= rate <= 48


def test_a_short_retry_after_pauses_then_resumes_at_the_learned_rate() -> None:
    clock = FakeClock()
    health = UpstreamHealth(Upstream("llm"), clock)
    drive(health, clock, limit=40, burst=5, latency=0.05, seats=8, seconds=60, measure_from=0)
    learned = health.pacer.rate()
    assert learned is not None
    assert learned > 25
    clock.advance(1.0)
    got = health.admit(gated=True)
    assert isinstance(got, Permit)
    got.finish(Classified(FailureKind.RATE_LIMITED, 1.0, 429), 0.05)
    assert health.blocked() == "retry_after"
    clock.advance(1.0)
    assert health.blocked() in (None, "rate")
    after = health.pacer.rate()
    assert after is not None
    assert after >= 0.8 * learned, "a pause, not a restart"
    assert health.outages == 0
    run = drive(
        health, clock, limit=40, burst=5, latency=0.05, seats=8, seconds=72, measure_from=62
    )
    assert run.goodput >= 0.8 * 40  # the 429 cut the rate by 15 %; no slow start from 1


def test_nothing_is_paced_before_the_first_429() -> None:
    clock = FakeClock()
    health = UpstreamHealth(Upstream("llm"), clock)
    assert all(isinstance(health.admit(gated=True), Permit) for _ in range(1000))
    assert health.pacer.rate() is None


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    limit=st.sampled_from([5.0, 8.0, 13.0, 20.0, 40.0]),
    burst=st.integers(min_value=1, max_value=3),
    latency=st.sampled_from([0.02, 0.05, 0.2]),
    seed=st.integers(min_value=0, max_value=1000),
)
def test_429_share_stays_at_most_one_percent_after_convergence(
    limit: float, burst: int, latency: float, seed: int
) -> None:
    clock = FakeClock()
    health = UpstreamHealth(Upstream("llm"), clock)
    seats = max(4, int(limit * latency * 2) + 1)
    run = drive(
        health,
        clock,
        limit=limit,
        burst=burst,
        latency=latency,
        seats=seats,
        seconds=300,
        measure_from=120,
        seed=seed,
    )
    assert run.throttled_share <= 0.01
    assert run.goodput >= 0.8 * limit  # 90 % is the figure for bursts of 5 (above)


def test_rate_limit_headers_set_the_share_left_never_more() -> None:
    clock = FakeClock()
    health = UpstreamHealth(Upstream("llm", rpm=6000), clock)  # 100/s, 100 banked
    headers = {"x-ratelimit-remaining-requests": "1", "x-ratelimit-limit-requests": "5"}
    health.observe_headers(headers)
    bucket = health._rpm
    assert bucket is not None
    assert bucket.level == pytest.approx(20.0)  # a fifth of ours, not 1 of 100
    health.observe_headers({"x-ratelimit-remaining-requests": "5000"})
    assert bucket.level == pytest.approx(20.0)  # a header never raises the level
    health.observe_headers(
        {"x-ratelimit-remaining-requests": "inf", "x-ratelimit-limit-requests": "inf"}
    )
    assert bucket.level == pytest.approx(20.0)
    clock.advance(1.0)
    assert bucket.level == pytest.approx(100.0)


def test_a_live_call_waiting_for_a_paced_turn_gets_the_next_one_before_batch() -> None:
    clock = FakeClock()
    health = UpstreamHealth(Upstream("llm"), clock)
    drive(health, clock, limit=40, burst=5, latency=0.05, seats=8, seconds=30, measure_from=0)
    assert health.pacer.rate() is not None
    clock.advance(1.0)  # a full pacer: one turn banked
    health.live_waiting = 1  # what call() counts while a live caller sleeps for a turn
    denied = health.admit(gated=True)
    assert isinstance(denied, Denied)
    assert denied.reason == "rate"
    assert health.blocked() == "rate"
    assert isinstance(health.admit(gated=False), Permit)
    health.live_waiting = 0
    clock.advance(1.0)
    assert isinstance(health.admit(gated=True), Permit)


_HEADER_VALUES = st.one_of(
    st.sampled_from(["inf", "-inf", "nan", "1e12", "1e308", "0", "-1", "5", "1h", "99999h"]),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(max_size=12),
)


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(
            [
                "x-ratelimit-remaining-requests",
                "x-ratelimit-limit-requests",
                "x-ratelimit-reset-requests",
                "x-ratelimit-remaining-tokens",
                "x-ratelimit-limit-tokens",
                "x-ratelimit-reset-tokens",
            ]
        ),
        _HEADER_VALUES,
    )
)
def test_no_rate_limit_header_holds_an_upstream_past_the_one_hour_cap(
    headers: dict[str, str],
) -> None:
    clock = FakeClock()
    health = UpstreamHealth(Upstream("llm", rpm=600, tpm=60_000), clock)
    health.observe_headers(headers)
    for bucket in (health._rpm, health._tpm):
        assert bucket is not None
        assert 0.0 <= bucket.level <= bucket.capacity
        assert bucket.capacity in (10.0, 1000.0)  # a header never changes what may be banked
    reason = health.blocked()
    if reason is not None:
        assert 0 < health.next_change(reason) <= 3600.0
    clock.advance(3600.0 + 1.0)
    assert health.blocked() is None


def test_the_error_window_does_not_starve_a_half_open_breakers_trials() -> None:
    clock = FakeClock()
    breaker = BreakerConfig(consecutive_failures=5, cooldown=0.3, half_open_trials=3)
    health = UpstreamHealth(Upstream("llm", breaker=breaker, min_volume=5), clock)
    for _ in range(9):  # the outage: enough failures for the error-rate window
        got = health.admit(gated=True)
        if isinstance(got, Permit):
            got.finish(DOWN, 0.01)
        clock.advance(0.35)
    assert health.breaker.state is BreakerState.HALF_OPEN
    trial = health.admit(gated=True)
    assert isinstance(trial, Permit)
    trial.finish(SUCCESS, 0.01)  # the upstream is back
    clock.advance(1.0)  # the next trial token
    assert health.blocked() is None, "the trials, not the outage's window, decide now"
    second = health.admit(gated=True)
    assert isinstance(second, Permit)
    second.finish(SUCCESS, 0.01)
    assert health.breaker.state is BreakerState.CLOSED
    assert health.blocked() is None


# -- rate-limit headers bound the refill rate ---------------------------------------------


def test_a_reset_values_resolution_is_the_unit_of_its_last_digit() -> None:
    assert duration_resolution("250ms") == pytest.approx(0.001)
    assert duration_resolution("1.25s") == pytest.approx(0.01)
    assert duration_resolution("6m0s") == pytest.approx(1.0)
    assert duration_resolution("20") == pytest.approx(1.0)
    assert duration_resolution("soon") is None
    assert duration_resolution(None) is None


@settings(max_examples=60, deadline=None)
@given(
    rate=st.floats(min_value=0.5, max_value=2000.0),
    limit=st.integers(min_value=1, max_value=10_000),
    draws=st.lists(
        st.tuples(st.floats(min_value=0.0, max_value=0.5), st.integers(0, 50)),
        min_size=1,
        max_size=60,
    ),
)
def test_header_bounds_always_hold_a_token_buckets_true_rate(
    rate: float, limit: int, draws: list[tuple[float, int]]
) -> None:
    clock = FakeClock()
    pacer = LearnedRate(clock)
    tokens = float(limit)
    for gap, taken in draws:
        clock.advance(gap)
        tokens = min(float(limit), tokens + gap * rate)
        tokens = max(0.0, tokens - taken)
        header = budget_headers(limit, tokens, (limit - tokens) / rate)
        pacer.observe_budget(
            float(header["x-ratelimit-limit-requests"]),
            float(header["x-ratelimit-remaining-requests"]),
            math.ceil((limit - tokens) / rate * 1000) / 1000,
            0.001,
        )
        bounds = pacer.bounds()
        if bounds is not None:
            low, high = bounds
            assert low <= rate * (1 + 1e-9)
            assert rate <= high * (1 + 1e-9)


def test_header_bounds_narrow_to_the_rate_and_start_afresh_when_the_budget_changes() -> None:
    clock = FakeClock()
    pacer = LearnedRate(clock)
    rng = random.Random(7)
    for _ in range(200):  # a bucket of 5 refilling 40/s, drawn to random levels
        clock.advance(0.02)
        tokens = rng.uniform(0.0, 4.99)
        pacer.observe_budget(5, int(tokens), math.ceil((5 - tokens) / 40 * 1000) / 1000, 0.001)
    bounds = pacer.bounds()
    assert bounds is not None
    assert 38.0 <= bounds[0] <= 40.0 <= bounds[1] <= 42.0
    pacer.observe_budget(5, 0, 0.5, 0.001)  # now 10/s: contradicts, so only it counts
    bounds = pacer.bounds()
    assert bounds is not None
    assert bounds[0] <= 10.0 <= bounds[1] < 38.0
    clock.advance(11.0)  # headers older than the horizon bound nothing
    assert pacer.bounds() is None
    pacer.observe_budget(5, 5, 0.0, 0.001)  # a full budget says nothing about its rate
    pacer.observe_budget(5, 7, 0.1, 0.001)  # nor does a malformed one
    assert pacer.bounds() is None


def test_a_429_within_header_bounds_cuts_no_lower_and_probes_no_higher() -> None:
    clock = FakeClock()
    pacer = LearnedRate(clock)
    for _ in range(40):
        clock.advance(0.025)
        pacer.take()
        pacer.on_success()

    def headers() -> None:
        for tokens in (0.05, 0.98, 1.02, 1.97, 0.5):
            pacer.observe_budget(5, int(tokens), (5 - tokens) / 40, 0.0)

    headers()
    bounds = pacer.bounds()
    assert bounds is not None
    low, high = bounds
    pacer.on_throttle(clock.now())
    rate = pacer.rate()
    assert rate is not None
    assert low <= rate <= high  # not beta x an over- or under-measured send rate
    for step in range(600):  # a minute of pushing: the probe stops at what it refills
        clock.advance(0.1)
        if step % 10 == 0:
            headers()  # answers keep saying the same
        while pacer.take():
            pass
        now_rate = pacer.rate()
        assert now_rate is not None
        assert now_rate <= high + 1e-9


def test_with_rate_limit_headers_discovery_costs_a_handful_of_429s() -> None:
    clock = FakeClock()
    health = UpstreamHealth(Upstream("llm"), clock)
    run = drive(
        health,
        clock,
        limit=40,
        burst=5,
        latency=0.05,
        seats=8,
        seconds=120,
        measure_from=0,
        headers=True,
    )
    assert run.throttled <= 5
    assert run.goodput >= 0.95 * 40
