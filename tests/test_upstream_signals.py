"""Reading an upstream's answers: classes, Retry-After, rate-limit headers; the limiters."""

from __future__ import annotations

import logging
import math
import random
from datetime import UTC, datetime
from email.utils import format_datetime

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from scheduler import FakeClock, JobTimeout
from scheduler.classify import (
    FailureKind,
    RetryableError,
    classify,
    parse_duration,
    parse_rate_limit_headers,
    parse_retry_after,
    throttle_wait,
)
from scheduler.limits import AdaptiveThrottle, AIMDLimit, TokenBucket

NOW = 1_800_000_000.0


def status_error(status: int, **headers: str) -> httpx.HTTPStatusError:
    request = httpx.Request("POST", "http://127.0.0.1/v1/complete")
    response = httpx.Response(status, headers=headers, request=request)
    return httpx.HTTPStatusError(f"{status}", request=request, response=response)


@pytest.mark.parametrize(
    ("exc", "kind", "retryable", "fault"),
    [
        (None, None, False, False),
        (status_error(429), FailureKind.RATE_LIMITED, True, True),
        (status_error(502), FailureKind.SERVER_ERROR, True, True),
        (status_error(503), FailureKind.SERVER_ERROR, True, True),
        (status_error(504), FailureKind.SERVER_ERROR, True, True),
        (status_error(400), FailureKind.CLIENT_ERROR, False, False),
        (status_error(404), FailureKind.CLIENT_ERROR, False, False),
        (httpx.ReadTimeout("slow"), FailureKind.TIMEOUT, True, True),
        (JobTimeout("j", 1.0), FailureKind.TIMEOUT, True, True),
        (httpx.ConnectError("refused"), FailureKind.TRANSPORT, True, True),
        (RetryableError("busy", retry_after=3), FailureKind.RATE_LIMITED, True, True),
        (ValueError("a bug"), FailureKind.OTHER, True, False),
    ],
)
def test_outcomes_are_classified_without_wrappers(
    exc: BaseException | None, kind: FailureKind | None, retryable: bool, fault: bool
) -> None:
    verdict = classify(exc, now=NOW)
    assert (verdict.kind, verdict.retryable, verdict.upstream_fault) == (kind, retryable, fault)


def test_retry_after_on_the_failed_response_is_read() -> None:
    assert classify(status_error(429, **{"retry-after": "30"}), now=NOW).retry_after == 30.0
    assert classify(RetryableError(retry_after=2.5), now=NOW).retry_after == 2.5


def test_retry_after_forms() -> None:
    date = format_datetime(datetime.fromtimestamp(NOW + 90, UTC), usegmt=True)
    assert parse_retry_after(date, now=NOW) == pytest.approx(90.0)
    assert parse_retry_after(" 12 ", now=NOW) == 12.0
    assert parse_retry_after("1.5", now=NOW) == 1.5
    assert parse_retry_after(None, now=NOW) is None
    assert parse_retry_after("", now=NOW) is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [("soon", None), ("-5", 0.0), ("1e12", 3600.0), ("nan", None), ("Mon, 99 Foo", None)],
)
def test_malformed_retry_after_is_ignored_or_clamped_with_a_warning(
    value: str, expected: float | None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="floodgate")
    assert parse_retry_after(value, now=NOW) == expected
    if expected != 0.0:
        assert any(r.msg["event"] == "upstream.bad_header" for r in caplog.records)  # type: ignore[index]


@given(st.text(max_size=60))
def test_no_retry_after_text_can_crash_the_parser(value: str) -> None:
    result = parse_retry_after(value, now=NOW)
    assert result is None or 0.0 <= result <= 3600.0


@given(st.dictionaries(st.sampled_from([
    "x-ratelimit-remaining-requests", "x-ratelimit-limit-requests", "x-ratelimit-reset-requests",
    "x-ratelimit-remaining-tokens", "x-ratelimit-limit-tokens", "x-ratelimit-reset-tokens",
]), st.text(max_size=20)))  # fmt: skip
def test_no_rate_limit_header_can_crash_the_parser(headers: dict[str, str]) -> None:
    info = parse_rate_limit_headers(headers)
    for value in (info.remaining_requests, info.limit_requests, info.reset_requests):
        assert value is None or value >= 0


def test_rate_limit_headers_and_reset_durations() -> None:
    info = parse_rate_limit_headers(
        {
            "x-ratelimit-remaining-requests": "42",
            "x-ratelimit-limit-requests": "500",
            "x-ratelimit-reset-requests": "6m0s",
            "x-ratelimit-remaining-tokens": "1000",
            "x-ratelimit-reset-tokens": "250ms",
        }
    )
    assert (info.remaining_requests, info.limit_requests, info.reset_requests) == (42, 500, 360)
    assert (info.remaining_tokens, info.reset_tokens) == (1000, 0.25)
    assert parse_duration("2m3.5s") == pytest.approx(123.5)
    assert parse_duration("1h2m3.5s") == 3600.0  # no header holds longer than an hour
    assert parse_duration("20") == 20.0
    assert parse_duration("later") is None
    assert parse_rate_limit_headers({"x-ratelimit-remaining-requests": "-3"}).empty


def wait_of_429(**headers: str) -> float | None:
    return classify(status_error(429, **headers), now=NOW).retry_after


def test_a_429_waits_for_its_exhausted_budget_not_a_rounded_up_second() -> None:
    spent = {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "120ms"}
    assert wait_of_429(**{"retry-after": "1"}, **spent) == pytest.approx(0.12)
    # the tokens budget ran out: its reset; both ran out: the later reset
    tokens = {"x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "0.4s"}
    assert wait_of_429(**{"retry-after": "1"}, **tokens) == pytest.approx(0.4)
    assert wait_of_429(**{"retry-after": "1"}, **spent, **tokens) == pytest.approx(0.4)
    # a reset of "0s" says the budget is full within its last digit's unit
    zero = {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "0s"}
    assert wait_of_429(**{"retry-after": "1"}, **zero) == 1.0
    later = {**spent, "x-ratelimit-reset-requests": "2.5s"}
    assert wait_of_429(**{"retry-after": "3"}, **later) == 2.5
    # a 503's Retry-After is the upstream's word on its health: never shortened
    error = status_error(503, **{"retry-after": "1"}, **spent)
    assert classify(error, now=NOW).retry_after == 1.0


@pytest.mark.parametrize(
    "headers",
    [
        # more than the budget's reset rounded up: the upstream asks for more quiet
        {"retry-after": "30", "x-ratelimit-remaining-requests": "0",
         "x-ratelimit-reset-requests": "120ms"},
        # no budget shown exhausted (a concurrency cap, an overload): as given
        {"retry-after": "1", "x-ratelimit-remaining-requests": "3",
         "x-ratelimit-reset-requests": "120ms"},
        {"retry-after": "1"},
        # an exhausted budget whose reset is missing or unreadable: as given
        {"retry-after": "1", "x-ratelimit-remaining-requests": "0"},
        {"retry-after": "1", "x-ratelimit-remaining-requests": "0",
         "x-ratelimit-reset-requests": "soon"},
        {"retry-after": "1", "x-ratelimit-remaining-requests": "0",
         "x-ratelimit-reset-requests": "50ms", "x-ratelimit-remaining-tokens": "0"},
    ],
)  # fmt: skip
def test_a_429s_retry_after_is_kept_unless_its_headers_name_a_sooner_refill(
    headers: dict[str, str],
) -> None:
    assert wait_of_429(**headers) == float(headers["retry-after"])


def test_retry_after_ms_is_read_first_and_a_bad_one_is_ignored_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="floodgate")
    assert wait_of_429(**{"retry-after-ms": "250", "retry-after": "1"}) == 0.25
    assert wait_of_429(**{"retry-after-ms": "1500"}) == 1.5
    assert not caplog.records
    assert wait_of_429(**{"retry-after-ms": "9e9"}) == 3600.0  # clamped, like Retry-After
    assert wait_of_429(**{"retry-after-ms": "soon", "retry-after": "2"}) == 2.0
    assert wait_of_429(**{"retry-after-ms": "nan"}) is None
    bad = [r.msg for r in caplog.records if r.msg["event"] == "upstream.bad_header"]  # type: ignore[index]
    assert [(m["header"], m["problem"]) for m in bad] == [  # type: ignore[index]
        ("retry-after-ms", "clamped to 3600s"),
        ("retry-after-ms", "not a number of milliseconds; ignored"),
        ("retry-after-ms", "not a number of milliseconds; ignored"),
    ]


_RESET = st.one_of(
    st.floats(0, 120).map(lambda s: f"{s:.3f}s"),
    st.integers(0, 120_000).map(lambda ms: f"{ms}ms"),
    st.integers(0, 120),
).map(str)


@given(
    retry_after=st.integers(0, 120),
    remaining_requests=st.sampled_from(["0", "1", "7"]),
    reset_requests=_RESET,
    remaining_tokens=st.sampled_from([None, "0", "500"]),
    reset_tokens=_RESET,
)
def test_a_shortened_wait_never_ends_before_the_exhausted_budgets_refill(
    retry_after: int,
    remaining_requests: str,
    reset_requests: str,
    remaining_tokens: str | None,
    reset_tokens: str,
) -> None:
    headers = {
        "x-ratelimit-remaining-requests": remaining_requests,
        "x-ratelimit-reset-requests": reset_requests,
        "x-ratelimit-reset-tokens": reset_tokens,
    }
    if remaining_tokens is not None:
        headers["x-ratelimit-remaining-tokens"] = remaining_tokens
    wait = throttle_wait(headers, float(retry_after))
    assert wait is not None
    assert wait <= retry_after  # never longer than the upstream asked
    exhausted = [
        parse_duration(headers[f"x-ratelimit-reset-{kind}"])
        for kind, left in (("requests", remaining_requests), ("tokens", remaining_tokens))
        if left == "0"
    ]
    if wait < retry_after:  # shortened: only to a refill the headers promise
        assert exhausted
        assert wait >= max(r for r in exhausted if r is not None)
        assert retry_after <= max(1, math.ceil(wait))


def test_aimd_slow_start_then_additive_then_one_cut_per_round_trip() -> None:
    limit = AIMDLimit(64)
    seen = []
    for _ in range(40):
        for _ in range(limit.limit):
            limit.on_success(0.01)
        seen.append(limit.limit)
    assert seen[:6] == [2, 4, 8, 16, 32, 64]  # slow start doubles per round trip
    limit.on_overload()
    limit.on_overload()  # same round trip: no second cut
    assert limit.limit == 32
    assert limit.stats().decreases == 1
    for _ in range(32 * 2):  # after the cut: +1 per round trip, not doubling
        limit.on_success(0.01)
    assert limit.limit == 33
    limit.reset()
    assert limit.limit == 1


def test_aimd_backs_off_on_latency_and_never_leaves_its_bounds() -> None:
    limit = AIMDLimit(8, min_limit=2, latency_limit=0.5)
    assert limit.limit == 2
    for _ in range(100):
        limit.on_success(0.1)
    assert limit.limit == 8
    limit.on_success(2.0)
    assert limit.limit == 4
    for _ in range(50):
        limit.on_overload()
        for _ in range(8):
            limit.on_success(0.1)
    assert 2 <= limit.limit <= 8


def test_token_bucket_keeps_a_reserve_and_refills_with_time() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=1.0, capacity=10, clock=clock)
    assert bucket.take(7, keep=2)
    assert not bucket.take(2, keep=2)  # would dip into the reserve
    assert bucket.take(2)  # interactive may use it
    assert bucket.time_until(5) == pytest.approx(4.0)
    clock.advance(4.0)
    assert bucket.take(5)
    bucket.set_level(3)
    bucket.set_level(float("inf"))  # a header never raises what may be banked
    assert (bucket.level, bucket.capacity) == (3, 10)
    bucket.draw(5)  # a started job draws in full, into debt
    assert bucket.level == -2
    assert not bucket.take(1)
    clock.advance(3.0)
    assert bucket.take(1)


def test_adaptive_throttle_follows_the_sre_formula() -> None:
    clock = FakeClock()
    throttle = AdaptiveThrottle(clock, k=2.0, window=60, rng=random.Random(1))
    for _ in range(100):
        throttle.record(accepted=True)
    assert throttle.reject_probability() == 0.0
    for _ in range(300):
        throttle.record(accepted=False)
    # requests 400, accepts 100: (400 - 200) / 401
    assert throttle.reject_probability() == pytest.approx(200 / 401)
    rejected = sum(throttle.should_reject() for _ in range(1000))
    assert 300 < rejected < 700
    clock.advance(61)
    assert throttle.reject_probability() == 0.0


def test_a_breaker_that_closes_after_an_outage_clears_the_live_throttle() -> None:
    # the outage's rejects must not go on refusing live calls once trials proved the
    # upstream healthy (the drill's degraded phase lost live calls to exactly that)
    from scheduler import BreakerConfig
    from scheduler.breaker import BreakerState
    from scheduler.classify import SUCCESS, Classified, FailureKind
    from scheduler.upstream import Permit, Upstream, UpstreamHealth

    clock = FakeClock()
    health = UpstreamHealth(
        Upstream("llm", breaker=BreakerConfig(min_volume=20, cooldown=1.0)), clock
    )
    down = Classified(FailureKind.SERVER_ERROR, None, 503)
    for _ in range(30):  # the outage: every live call fails
        got = health.admit(gated=False)
        if isinstance(got, Permit):
            got.finish(down, 0.01)
    assert health.breaker.state is BreakerState.OPEN
    throttle = health._throttle
    assert throttle is not None
    assert throttle.reject_probability() > 0.5
    clock.advance(1.5)  # past the cooldown: the trials succeed
    for _ in range(20):  # trials are let through at the breaker's trial rate
        got = health.admit(gated=False)
        if isinstance(got, Permit):
            got.finish(SUCCESS, 0.01)
        if health.breaker.state is BreakerState.CLOSED:
            break
        clock.advance(0.5)
    assert health.breaker.state is BreakerState.CLOSED
    assert throttle.reject_probability() == 0.0
    assert not any(throttle.should_reject() for _ in range(100))
