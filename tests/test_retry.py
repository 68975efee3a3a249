"""RetryPolicy (backoff, jitter, Retry-After) and RetryBudget, on a fake clock."""

from __future__ import annotations

import dataclasses
import math
import random
import statistics

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scheduler.clock import FakeClock
from scheduler.errors import ConfigError
from scheduler.retry import RetryBudget, RetryBudgetStats, RetryPolicy

# -- RetryPolicy: the schedule ----------------------------------------------------------


def test_defaults() -> None:
    policy = RetryPolicy()
    assert (policy.max_attempts, policy.base, policy.cap, policy.multiplier) == (5, 0.5, 60.0, 2.0)
    assert policy.jitter == "full"
    assert policy.retry_after_cap == 300.0


def test_ceiling_grows_exponentially_up_to_cap() -> None:
    policy = RetryPolicy(jitter="none")
    assert [policy.delay(n) for n in range(1, 10)] == [0.5, 1, 2, 4, 8, 16, 32, 60, 60]
    assert [policy.max_delay(n) for n in range(1, 4)] == [0.5, 1.0, 2.0]


def test_huge_attempt_number_is_capped_not_overflowing() -> None:
    policy = RetryPolicy(jitter="none", cap=7)
    assert policy.delay(10**9) == 7.0
    assert policy.delay(2**70) == 7.0


def test_multiplier_one_is_constant_and_base_zero_is_immediate() -> None:
    assert RetryPolicy(jitter="none", base=3, multiplier=1).delay(50) == 3.0
    assert RetryPolicy(base=0, cap=0).delay(4) == 0.0


def test_should_retry_counts_the_first_attempt() -> None:
    policy = RetryPolicy(max_attempts=3)
    assert [policy.should_retry(n) for n in (1, 2, 3, 4)] == [True, True, False, False]
    assert not RetryPolicy(max_attempts=1).should_retry(1)


def test_full_jitter_is_reproducible_with_a_seeded_rng() -> None:
    policy = RetryPolicy()
    first = [policy.delay(n, rng=random.Random(7)) for n in range(1, 6)]
    again = [policy.delay(n, rng=random.Random(7)) for n in range(1, 6)]
    assert first == again
    assert all(0.0 <= d <= policy.max_delay(n) for n, d in enumerate(first, start=1))


def test_default_rng_stays_within_bounds() -> None:
    policy = RetryPolicy()
    assert all(0.0 <= policy.delay(4) <= 4.0 for _ in range(200))


def test_full_jitter_mean_is_half_the_ceiling() -> None:
    policy = RetryPolicy()
    rng = random.Random(1234)
    samples = [policy.delay(3, rng=rng) for _ in range(20_000)]  # ceiling 2.0
    assert statistics.fmean(samples) == pytest.approx(1.0, rel=0.02)
    assert min(samples) < 0.05  # spread over the whole interval
    assert max(samples) > 1.95


# -- RetryPolicy: Retry-After ---------------------------------------------------------


def test_retry_after_is_a_floor() -> None:
    policy = RetryPolicy(jitter="none")
    assert policy.delay(1, retry_after=10) == 10.0  # longer than the backoff: wins
    assert policy.delay(8, retry_after=10) == 60.0  # shorter than the backoff: no effect
    assert RetryPolicy().delay(1, retry_after=10, rng=random.Random(1)) == 10.0


def test_retry_after_is_clamped() -> None:
    policy = RetryPolicy(jitter="none", retry_after_cap=120)
    assert policy.delay(1, retry_after=86_400) == 120.0
    assert policy.delay(1, retry_after=math.inf) == 120.0
    assert policy.delay(1, retry_after=-5) == 0.5  # a date in the past: no floor
    assert policy.delay(1, retry_after=10**400) == 120.0
    assert policy.delay(1, retry_after=-(10**400)) == 0.5


def test_bad_retry_after_is_rejected() -> None:
    policy = RetryPolicy()
    with pytest.raises(ConfigError, match="NaN"):
        policy.delay(1, retry_after=math.nan)
    with pytest.raises(TypeError, match="retry_after"):
        policy.delay(1, retry_after="30")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="retry_after"):
        policy.delay(1, retry_after=True)


@pytest.mark.parametrize("attempt", [0, -1])
def test_attempt_is_one_based(attempt: int) -> None:
    with pytest.raises(ConfigError, match="1-based"):
        RetryPolicy().delay(attempt)
    with pytest.raises(ConfigError, match="1-based"):
        RetryPolicy().should_retry(attempt)


@pytest.mark.parametrize("attempt", [1.0, "1", None, True])
def test_attempt_must_be_an_int(attempt: object) -> None:
    with pytest.raises(TypeError, match="attempt"):
        RetryPolicy().delay(attempt)  # type: ignore[arg-type]


policies = st.builds(
    lambda base, extra, multiplier, jitter, ra_cap: RetryPolicy(
        base=base, cap=base + extra, multiplier=multiplier, jitter=jitter, retry_after_cap=ra_cap
    ),
    base=st.floats(0, 100),
    extra=st.floats(0, 1000),
    multiplier=st.floats(1, 10),
    jitter=st.sampled_from(["full", "none"]),
    ra_cap=st.floats(0, 1000),
)


@given(
    policy=policies,
    attempt=st.integers(1, 10**12),
    seed=st.integers(0, 2**32),
    retry_after=st.none() | st.floats(-1e6, 1e6) | st.just(math.inf),
)
def test_delay_bounds(
    policy: RetryPolicy, attempt: int, seed: int, retry_after: float | None
) -> None:
    delay = policy.delay(attempt, retry_after=retry_after, rng=random.Random(seed))
    if retry_after is None:
        assert 0.0 <= delay <= policy.max_delay(attempt) <= policy.cap
        if policy.jitter == "none":
            assert delay == policy.max_delay(attempt)
    else:
        floor = min(retry_after, policy.retry_after_cap)
        assert delay >= floor
        assert 0.0 <= delay <= max(policy.cap, floor)


@given(policy=policies, attempt=st.integers(1, 10**6))
def test_ceiling_is_monotonic(policy: RetryPolicy, attempt: int) -> None:
    assert policy.max_delay(attempt) <= policy.max_delay(attempt + 1)


# -- RetryPolicy: config --------------------------------------------------------------


def test_policy_is_frozen_keyword_only_and_normalises_to_float() -> None:
    policy = RetryPolicy(base=1, cap=10, multiplier=3, retry_after_cap=100)
    assert all(
        type(v) is float
        for v in (policy.base, policy.cap, policy.multiplier, policy.retry_after_cap)
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.base = 2  # type: ignore[misc]
    with pytest.raises(TypeError):
        RetryPolicy(3)  # type: ignore[call-arg]
    assert policy == RetryPolicy(base=1.0, cap=10.0, multiplier=3.0, retry_after_cap=100.0)
    assert hash(policy) == hash(
        RetryPolicy(base=1.0, cap=10.0, multiplier=3.0, retry_after_cap=100)
    )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_attempts": 0}, "max_attempts must be >= 1"),
        ({"max_attempts": -3}, "max_attempts must be >= 1"),
        ({"base": -0.1}, "base must be >= 0"),
        ({"base": math.nan}, "base must be a finite number"),
        ({"base": math.inf}, "base must be a finite number"),
        ({"cap": -1}, "cap must be >= 0"),
        ({"cap": math.nan}, "cap must be a finite number"),
        ({"cap": 0.1}, "cap=0.1 is below base=0.5"),
        ({"multiplier": 0.5}, "multiplier must be >= 1"),
        ({"multiplier": math.nan}, "multiplier must be a finite number"),
        ({"retry_after_cap": -1}, "retry_after_cap must be >= 0"),
        ({"retry_after_cap": math.inf}, "retry_after_cap must be a finite number"),
        ({"jitter": "equal"}, "jitter must be 'full' or 'none'"),
        ({"base": 10**400}, "base must be a finite number"),
    ],
)
def test_policy_rejects_bad_values(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_attempts": 2.0}, "max_attempts must be an int, got float"),
        ({"max_attempts": True}, "max_attempts must be an int, got bool"),
        ({"max_attempts": "5"}, "max_attempts must be an int, got str"),
        ({"base": "0.5"}, "base must be a number, got str"),
        ({"cap": None}, "cap must be a number, got NoneType"),
        ({"multiplier": False}, "multiplier must be a number, got bool"),
        ({"jitter": None}, "jitter must be a str"),
    ],
)
def test_policy_rejects_wrong_types(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(TypeError, match=match):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_config_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)


# -- RetryBudget ----------------------------------------------------------------------


def drain(budget: RetryBudget) -> int:
    """Take retries until the budget refuses; how many were granted."""
    granted = 0
    while budget.try_acquire_retry():
        granted += 1
        assert granted < 10_000, "budget never refused"
    return granted


def test_budget_grants_ratio_of_requests_plus_reserve() -> None:
    clock = FakeClock()
    budget = RetryBudget(clock=clock, ratio=0.2, min_per_second=1.0)
    for _ in range(100):
        budget.record_request()
    assert drain(budget) == 20 + 1  # 100 x 0.2 earned, plus the one-token reserve
    assert not budget.try_acquire_retry()
    stats = budget.stats()
    assert stats.requests == 100
    assert stats.retries_granted == 21
    assert stats.retries_refused == 2
    assert stats.tokens == pytest.approx(0.0, abs=1e-9)
    assert stats.reserve == pytest.approx(0.0)


def test_budget_without_reserve_is_exactly_the_ratio() -> None:
    budget = RetryBudget(clock=FakeClock(), ratio=0.2, min_per_second=0)
    assert not budget.try_acquire_retry()
    for _ in range(100):
        budget.record_request()
    assert drain(budget) == 20


def test_budget_interleaved_retries_stay_near_ratio() -> None:
    clock = FakeClock()
    budget = RetryBudget(clock=clock, ratio=0.1, min_per_second=0.5)
    granted = 0
    for _ in range(1000):  # every request fails and wants a retry; 10 requests per second
        budget.record_request()
        granted += budget.try_acquire_retry()
        clock.advance(0.1)
    # 100 earned + 1 initial reserve + 0.5/s x 100 s of reserve refill
    assert granted <= 100 + 1 + 50
    assert granted >= 100


def test_reserve_refills_with_clock_time_up_to_one_second_worth() -> None:
    clock = FakeClock()
    budget = RetryBudget(clock=clock, ratio=0.2, min_per_second=2.0)
    assert drain(budget) == 2  # starts full: one second's worth
    clock.advance(0.5)
    assert drain(budget) == 1
    clock.advance(3600)
    assert drain(budget) == 2  # did not bank an hour of reserve
    assert budget.stats().reserve == pytest.approx(0.0)


def test_slow_reserve_still_holds_one_token() -> None:
    clock = FakeClock()
    budget = RetryBudget(clock=clock, min_per_second=0.1)
    assert drain(budget) == 1
    clock.advance(9.9)
    assert drain(budget) == 0
    clock.advance(0.1)
    assert drain(budget) == 1


def test_earned_tokens_are_capped() -> None:
    budget = RetryBudget(clock=FakeClock(), ratio=0.5, min_per_second=0, max_tokens=10)
    for _ in range(1000):
        budget.record_request()
    assert budget.stats().tokens == 10.0
    assert drain(budget) == 10


def test_budget_stats_is_frozen() -> None:
    stats = RetryBudget(clock=FakeClock()).stats()
    assert stats == RetryBudgetStats(
        tokens=0.0, reserve=1.0, requests=0, retries_granted=0, retries_refused=0
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.tokens = 3.0  # type: ignore[misc]


def test_budget_properties_and_repr() -> None:
    budget = RetryBudget(clock=FakeClock(), ratio=0.1, min_per_second=2, max_tokens=5)
    assert (budget.ratio, budget.min_per_second, budget.max_tokens) == (0.1, 2.0, 5.0)
    assert "ratio=0.1" in repr(budget)


async def test_budget_default_clock_is_the_event_loop() -> None:
    budget = RetryBudget()
    assert budget.try_acquire_retry()  # the initial reserve
    assert budget.stats().retries_granted == 1


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"ratio": -0.1}, ConfigError, "ratio must be >= 0"),
        ({"ratio": math.nan}, ConfigError, "ratio must be a finite number"),
        ({"min_per_second": -1}, ConfigError, "min_per_second must be >= 0"),
        ({"min_per_second": math.inf}, ConfigError, "min_per_second must be a finite"),
        ({"max_tokens": 0.5}, ConfigError, "max_tokens must be >= 1"),
        ({"ratio": "0.2"}, TypeError, "ratio must be a number, got str"),
        ({"max_tokens": None}, TypeError, "max_tokens must be a number"),
        ({"clock": object()}, TypeError, "clock must be a Clock"),
    ],
)
def test_budget_rejects_bad_config(
    kwargs: dict[str, object], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        RetryBudget(**kwargs)  # type: ignore[arg-type]


@given(
    ratio=st.floats(0, 1),
    rate=st.floats(0, 5),
    ops=st.lists(
        st.one_of(st.just("request"), st.just("retry"), st.floats(0, 10)),
        max_size=300,
    ),
)
def test_budget_never_grants_more_than_earned(ratio: float, rate: float, ops: list[object]) -> None:
    clock = FakeClock()
    budget = RetryBudget(clock=clock, ratio=ratio, min_per_second=rate)
    for op in ops:
        if op == "request":
            budget.record_request()
        elif op == "retry":
            budget.try_acquire_retry()
        else:
            assert isinstance(op, float)
            clock.advance(op)
    stats = budget.stats()
    reserve_cap = max(1.0, rate) if rate > 0 else 0.0
    bound = ratio * stats.requests + reserve_cap + rate * clock.now()
    assert stats.retries_granted <= bound + 1e-6
    assert 0.0 <= stats.tokens <= budget.max_tokens
    assert 0.0 <= stats.reserve <= reserve_cap
