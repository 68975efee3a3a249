"""CircuitBreaker transitions on a fake clock: every edge of closed / open / half-open."""

from __future__ import annotations

import dataclasses
import itertools
import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scheduler.breaker import (
    BreakerConfig,
    BreakerSettings,
    BreakerState,
    BreakerStats,
    CircuitBreaker,
)
from scheduler.clock import FakeClock
from scheduler.errors import ConfigError

CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN

Change = tuple[BreakerState, BreakerState]


class Recorder:
    """A breaker with a fake clock and a log of its state changes."""

    def __init__(self, **settings: object) -> None:
        self.clock = FakeClock()
        self.changes: list[Change] = []
        self.breaker = CircuitBreaker(
            clock=self.clock,
            on_change=lambda old, new: self.changes.append((old, new)),
            **settings,  # type: ignore[arg-type]
        )

    def fail(self, n: int = 1, *, retry_after: float | None = None) -> None:
        for _ in range(n):
            self.breaker.record_failure(retry_after)

    def succeed(self, n: int = 1) -> None:
        for _ in range(n):
            self.breaker.record_success()

    def trip(self, **kwargs: float) -> None:
        self.fail(self.breaker.config.consecutive_failures, **kwargs)
        assert self.breaker.state is OPEN

    def half_open(self) -> None:
        self.trip()
        self.clock.advance(self.breaker.config.cooldown)
        assert self.breaker.state is HALF_OPEN


# -- closed -> open -------------------------------------------------------------------


def test_starts_closed_and_allows() -> None:
    r = Recorder()
    assert r.breaker.state is CLOSED
    assert all(r.breaker.allow() for _ in range(100))
    assert r.breaker.retry_after() is None
    assert r.breaker.stats() == BreakerStats(
        state=CLOSED,
        failures=0,
        successes=0,
        consecutive_failures=0,
        opened=0,
        rejected=0,
        open_until=None,
        cooldown=2.0,
    )


def test_defaults_trip_within_twenty_consecutive_failures() -> None:
    r = Recorder()
    r.fail(19)
    assert r.breaker.state is CLOSED
    r.fail()
    assert r.breaker.state is OPEN
    assert r.changes == [(CLOSED, OPEN)]


def test_ratio_trips_only_once_min_volume_is_reached() -> None:
    r = Recorder(min_volume=20, failure_ratio=0.5, consecutive_failures=1000)
    for _ in range(9):  # 100 % failures, but too little volume to judge
        r.fail()
        assert r.breaker.state is CLOSED
    r.succeed(10)  # 9 failures / 19 outcomes
    assert r.breaker.state is CLOSED
    r.fail()  # 10 / 20: volume reached, ratio 0.5 >= 0.5
    assert r.breaker.state is OPEN
    stats = r.breaker.stats()
    assert (stats.failures, stats.successes, stats.opened) == (10, 10, 1)


def test_ratio_below_threshold_never_trips() -> None:
    r = Recorder(consecutive_failures=1000)
    for _ in range(100):  # 40 % failures
        r.fail(2)
        r.succeed(3)
    assert r.breaker.state is CLOSED
    assert r.changes == []


def test_consecutive_failures_trip_regardless_of_ratio() -> None:
    r = Recorder(consecutive_failures=5, min_volume=1000)
    r.succeed(500)
    r.fail(4)
    r.succeed()  # a success resets the run
    r.fail(4)
    assert r.breaker.state is CLOSED
    assert r.breaker.stats().consecutive_failures == 4
    r.fail()
    assert r.breaker.state is OPEN


def test_window_slides_so_old_failures_fall_out() -> None:
    r = Recorder(window=30, buckets=10, min_volume=20, consecutive_failures=1000)
    r.fail(15)
    r.clock.advance(15)
    assert r.breaker.stats().failures == 15  # still inside the window
    r.clock.advance(16)  # t=31: the t=0 bucket has left the window
    assert r.breaker.stats().failures == 0
    r.fail(5)  # 5 in the window; 20 in total would have tripped without sliding
    assert r.breaker.state is CLOSED
    assert r.breaker.stats().failures == 5


def test_window_resolution_is_one_bucket() -> None:
    r = Recorder(window=30, buckets=10, consecutive_failures=1000)
    r.clock.advance(2.9)
    r.fail()  # lands in the bucket [0, 3)
    r.clock.advance(27.0)  # t=29.9, age 27: still counted
    assert r.breaker.stats().failures == 1
    r.clock.advance(0.1)  # t=30: the bucket [0, 3) has left
    assert r.breaker.stats().failures == 0


def test_window_ring_reuses_stale_slots() -> None:
    r = Recorder(window=10, buckets=2, min_volume=3, consecutive_failures=1000)
    r.succeed(2)  # bucket [0, 5), slot 0
    r.clock.advance(10)  # bucket [10, 15), slot 0 again: the old counts must go
    r.succeed()
    assert (r.breaker.stats().successes, r.breaker.stats().failures) == (1, 0)


# -- open -----------------------------------------------------------------------------


def test_stays_open_for_the_cooldown() -> None:
    r = Recorder(cooldown=30)
    r.trip()
    r.clock.advance(29.5)
    assert not r.breaker.allow()
    assert r.breaker.state is OPEN
    assert r.breaker.retry_after() == pytest.approx(0.5)
    assert r.breaker.stats().open_until == 30.0
    assert r.breaker.stats().rejected == 1
    r.clock.advance(0.5)
    assert r.breaker.state is HALF_OPEN
    assert r.breaker.retry_after() is None
    assert r.changes == [(CLOSED, OPEN), (OPEN, HALF_OPEN)]


def test_retry_after_extends_the_open_period() -> None:
    r = Recorder(cooldown=30, max_cooldown=600)
    r.trip(retry_after=120)
    assert r.breaker.retry_after() == 120.0
    r.clock.advance(119)
    assert not r.breaker.allow()
    r.clock.advance(1)
    assert r.breaker.allow()


def test_short_retry_after_does_not_shorten_the_cooldown() -> None:
    r = Recorder(cooldown=30)
    r.trip(retry_after=1)
    assert r.breaker.retry_after() == 30.0


def test_retry_after_is_clamped_to_max_cooldown() -> None:
    r = Recorder(cooldown=30, max_cooldown=600)
    r.trip(retry_after=86_400)
    assert r.breaker.retry_after() == 600.0
    r2 = Recorder()  # the default cap: a long outage is re-tried every 30 s
    r2.trip(retry_after=math.inf)
    assert r2.breaker.retry_after() == 30.0


def test_retry_after_while_open_extends_never_shortens() -> None:
    r = Recorder(cooldown=30, max_cooldown=600)
    r.trip()
    r.clock.advance(10)
    r.fail(retry_after=5)  # a late failure of a call admitted earlier
    assert r.breaker.retry_after() == 20.0
    r.fail(retry_after=100)
    assert r.breaker.retry_after() == 100.0
    assert r.breaker.stats().opened == 1


def test_outcomes_while_open_are_ignored() -> None:
    r = Recorder()
    r.trip()
    r.succeed(100)
    r.fail(100)
    assert r.breaker.state is OPEN
    assert r.breaker.retry_after() == 2.0  # the default first open period
    assert r.changes == [(CLOSED, OPEN)]


def test_bad_retry_after_is_rejected() -> None:
    r = Recorder()
    with pytest.raises(ConfigError, match="NaN"):
        r.breaker.record_failure(math.nan)
    with pytest.raises(TypeError, match="retry_after"):
        r.breaker.record_failure("30")  # type: ignore[arg-type]
    assert r.breaker.stats().failures == 0  # rejected before anything was counted


# -- half-open ------------------------------------------------------------------------


def test_half_open_admits_exactly_the_trials() -> None:
    r = Recorder(half_open_trials=3)
    r.half_open()
    assert [r.breaker.allow() for _ in range(5)] == [True, True, True, False, False]
    assert r.breaker.stats().rejected == 2


def test_all_trials_succeeding_closes() -> None:
    r = Recorder(half_open_trials=3)
    r.half_open()
    for _ in range(3):
        assert r.breaker.allow()
    r.succeed(1)
    assert r.breaker.state is HALF_OPEN
    r.succeed()  # 2 of 3: the third may still fail, one failure is forgiven
    assert r.breaker.state is CLOSED
    assert r.changes == [(CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, CLOSED)]
    stats = r.breaker.stats()
    assert (stats.failures, stats.consecutive_failures, stats.open_until) == (0, 0, None)
    assert r.breaker.allow()


def test_closing_starts_a_fresh_window() -> None:
    r = Recorder()
    r.half_open()
    r.succeed(2)
    r.fail(19)  # the 20 failures that tripped it are forgotten
    assert r.breaker.state is CLOSED


def test_a_degraded_upstream_can_close_the_breaker_a_down_one_cannot() -> None:
    r = Recorder(half_open_trials=3)
    r.half_open()
    r.fail()  # one trial of three fails: forgiven
    assert r.breaker.state is HALF_OPEN
    r.succeed(2)
    assert r.breaker.state is CLOSED
    r.fail(20)
    r.clock.advance(r.breaker.retry_after() or 0.0)
    assert r.breaker.state is HALF_OPEN
    r.fail()
    r.fail()  # a majority failed: open again
    assert r.breaker.state is OPEN


def test_a_trial_failure_with_retry_after_reopens_at_once() -> None:
    r = Recorder(half_open_trials=3, cooldown=30, max_cooldown=600)
    r.half_open()
    r.breaker.record_failure(retry_after=45.0)
    assert r.breaker.state is OPEN
    assert r.breaker.retry_after() == pytest.approx(60.0)


def test_trial_failure_reopens_with_doubled_cooldown() -> None:
    r = Recorder(cooldown=30, max_cooldown=200, half_open_trials=1)
    r.half_open()
    assert r.breaker.allow()
    r.fail()
    assert r.breaker.state is OPEN
    assert r.breaker.retry_after() == 60.0
    assert r.breaker.stats().opened == 2
    periods = []
    for _ in range(3):
        r.clock.advance(r.breaker.retry_after() or 0.0)
        assert r.breaker.state is HALF_OPEN
        r.fail()
        periods.append(r.breaker.retry_after())
    assert periods == [120.0, 200.0, 200.0]  # doubling, capped at max_cooldown
    assert r.changes[:4] == [
        (CLOSED, OPEN),
        (OPEN, HALF_OPEN),
        (HALF_OPEN, OPEN),
        (OPEN, HALF_OPEN),
    ]


def test_cooldown_resets_after_closing() -> None:
    r = Recorder(cooldown=30)
    r.half_open()
    r.fail()  # 60 s
    r.clock.advance(60)
    r.succeed(3)
    assert r.breaker.state is CLOSED
    assert r.breaker.stats().cooldown == 30.0
    r.trip()
    assert r.breaker.retry_after() == 30.0


def test_trial_failure_honours_a_longer_retry_after() -> None:
    r = Recorder(cooldown=30, max_cooldown=600)
    r.half_open()
    r.fail(retry_after=300)
    assert r.breaker.retry_after() == 300.0
    assert r.breaker.stats().cooldown == 60.0  # the doubling ladder is unaffected


def test_release_hands_a_trial_slot_back() -> None:
    r = Recorder(half_open_trials=2)
    r.half_open()
    assert r.breaker.allow()
    assert r.breaker.allow()
    assert not r.breaker.allow()
    r.breaker.release()
    assert r.breaker.allow()
    assert not r.breaker.allow()


def test_release_outside_half_open_changes_nothing() -> None:
    r = Recorder()
    r.breaker.release()
    r.trip()
    r.breaker.release()
    assert r.breaker.state is OPEN
    r.clock.advance(30)
    r.breaker.release()  # no slot taken yet: must not make room for an extra trial
    assert [r.breaker.allow() for _ in range(4)] == [True, True, True, False]


def test_each_half_open_period_gets_fresh_trials() -> None:
    r = Recorder(half_open_trials=2)
    r.half_open()
    assert r.breaker.allow()
    r.succeed()
    assert r.breaker.allow()
    r.fail()
    r.clock.advance(60)
    assert [r.breaker.allow() for _ in range(3)] == [True, True, False]


# -- a degraded upstream, an outage ---------------------------------------------------


def drain_trial_tokens(r: Recorder) -> None:
    """Open the breaker and spend its trial tokens on failed live trials just before
    the cool-down ends, as live traffic into an outage does: it half-opens with none."""
    r.trip()
    r.clock.advance(r.breaker.config.cooldown - 0.1)
    while r.breaker.allow(live=True):
        r.breaker.record_failure(trial=True)
    r.clock.advance(0.1)
    assert r.breaker.state is HALF_OPEN


def test_half_open_trials_are_paced_until_one_succeeds() -> None:
    r = Recorder(half_open_trials=3, trial_rate=1.0)
    drain_trial_tokens(r)
    assert not r.breaker.would_allow()
    assert r.breaker.next_trial_in() == pytest.approx(0.9)
    r.clock.advance(0.9)
    assert r.breaker.allow()
    assert not r.breaker.allow()  # still paced: no answer yet
    r.succeed()  # the upstream answers: nothing left to spare it
    assert r.breaker.next_trial_in() == 0.0
    assert r.breaker.would_allow()
    assert [r.breaker.allow() for _ in range(3)] == [True, True, False]  # the slots remain
    assert r.breaker.next_trial_in() is None
    r.succeed()
    assert r.breaker.state is CLOSED


def test_a_failed_first_trial_keeps_the_pacing() -> None:
    r = Recorder(half_open_trials=3, trial_rate=1.0)
    drain_trial_tokens(r)
    r.clock.advance(0.9)
    assert r.breaker.allow()
    r.fail()  # forgiven (one of three), but says nothing of the upstream being up
    assert r.breaker.state is HALF_OPEN
    assert not r.breaker.allow()
    assert r.breaker.next_trial_in() == pytest.approx(1.0)


def test_a_successful_live_trial_unpaces_the_rest_of_half_open() -> None:
    r = Recorder(half_open_trials=3, trial_rate=1.0, cooldown=30)
    r.trip()
    while r.breaker.allow(live=True):  # the tokens go on failed live trials
        r.breaker.record_failure(trial=True)
    r.clock.advance(1.0)
    assert r.breaker.allow(live=True)
    r.breaker.record_success(trial=True)  # half-open at once, its first trial
    assert r.breaker.state is HALF_OPEN
    assert r.breaker.allow(live=True)  # at once, not a second later
    r.breaker.record_success(trial=True)
    assert r.breaker.state is CLOSED


def test_a_steady_fifteen_percent_error_rate_never_opens_a_closed_breaker() -> None:
    rng = random.Random(15)
    for window in (30.0, 3.0):  # the default window, and the drill's compressed one
        r = Recorder(window=window)
        for _ in range(20 * 600):  # ten minutes at 20 calls a second
            if rng.random() < 0.15:
                r.fail()
            else:
                r.succeed()
            r.clock.advance(0.05)
        assert r.changes == []
        assert r.breaker.stats().opened == 0


def test_half_open_closes_under_a_steady_fifteen_percent_error_rate() -> None:
    # one failed trial of three is forgiven, wherever it falls
    for failed_at in range(3):
        r = Recorder(half_open_trials=3)
        r.half_open()
        assert [r.breaker.allow() for _ in range(3)] == [True, True, True]
        for i in range(3):
            if r.breaker.state is HALF_OPEN:
                r.breaker.record_failure() if i == failed_at else r.breaker.record_success()
        assert r.breaker.state is CLOSED
    # drawn at 15 %: it closes unless two of its three trials fail (p^2 (1 + 2q) = 6 %)
    rng = random.Random(7)
    closed = 0
    episodes = 4000
    for _ in range(episodes):
        r = Recorder(half_open_trials=3)
        r.half_open()
        while r.breaker.state is HALF_OPEN:
            assert r.breaker.allow()
            r.breaker.record_failure() if rng.random() < 0.15 else r.breaker.record_success()
        closed += r.breaker.state is CLOSED
    assert closed / episodes == pytest.approx(1 - 0.15**2 * (1 + 2 * 0.85), abs=0.012)


def test_an_outage_still_opens_within_twenty_failures_at_any_volume() -> None:
    r = Recorder()
    for _ in range(3000):  # 30 s of a healthy upstream at 100 calls a second
        r.succeed()
        r.clock.advance(0.01)
    for n in range(1, 21):  # then it is down
        r.fail()
        r.clock.advance(0.01)
        assert r.breaker.state is (OPEN if n == 20 else CLOSED)
    # its trials are paced and re-open it as before: two failures of three
    r.clock.advance(r.breaker.retry_after() or 0.0)
    assert r.breaker.state is HALF_OPEN
    assert [r.breaker.allow() for _ in range(4)] == [True, True, True, False]
    r.fail(2)
    assert r.breaker.state is OPEN
    assert r.breaker.retry_after() == pytest.approx(4.0)


# -- listener, config, construction ---------------------------------------------------


def test_listener_sees_a_consistent_breaker() -> None:
    clock = FakeClock()
    seen: list[tuple[BreakerState, BreakerState, BreakerState]] = []

    def listener(old: BreakerState, new: BreakerState) -> None:
        seen.append((old, new, breaker.state))

    breaker = CircuitBreaker(clock=clock, on_change=listener, consecutive_failures=1)
    breaker.record_failure()
    clock.advance(30)
    breaker.allow()
    assert seen == [(CLOSED, OPEN, OPEN), (OPEN, HALF_OPEN, HALF_OPEN)]


def test_one_config_makes_many_breakers() -> None:
    clock = FakeClock()
    config = BreakerConfig(consecutive_failures=2, cooldown=5)
    openai = CircuitBreaker(config, clock=clock, name="openai")
    anthropic = CircuitBreaker(config, clock=clock, name="anthropic", cooldown=7)
    assert anthropic.config == dataclasses.replace(config, cooldown=7.0)
    for breaker in (openai, anthropic):
        breaker.record_failure()
        breaker.record_failure()
    assert (openai.retry_after(), anthropic.retry_after()) == (5.0, 7.0)
    assert repr(openai) == "CircuitBreaker('openai', open)"
    assert openai.name == "openai"


def test_settings_typeddict_matches_config_fields() -> None:
    fields = {f.name for f in dataclasses.fields(BreakerConfig)}
    assert set(BreakerSettings.__annotations__) == fields


def test_config_defaults_and_normalisation() -> None:
    config = BreakerConfig(window=60, cooldown=10, max_cooldown=100, failure_ratio=1)
    assert (config.window, config.cooldown, config.max_cooldown) == (60.0, 10.0, 100.0)
    assert type(config.failure_ratio) is float
    assert BreakerConfig() == BreakerConfig(
        failure_ratio=0.5,
        window=30.0,
        buckets=10,
        min_volume=20,
        consecutive_failures=20,
        cooldown=2.0,
        max_cooldown=30.0,
        half_open_trials=3,
        trial_rate=1.0,
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.cooldown = 1.0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"failure_ratio": 0}, "failure_ratio must be > 0"),
        ({"failure_ratio": 1.5}, "failure_ratio must be <= 1"),
        ({"failure_ratio": math.nan}, "failure_ratio must be a finite number"),
        ({"window": 0}, "window must be > 0"),
        ({"window": -30}, "window must be > 0"),
        ({"window": math.inf}, "window must be a finite number"),
        ({"buckets": 0}, "buckets must be >= 1"),
        ({"min_volume": 0}, "min_volume must be >= 1"),
        ({"consecutive_failures": -1}, "consecutive_failures must be >= 1"),
        ({"cooldown": 0}, "cooldown must be > 0"),
        ({"cooldown": math.nan}, "cooldown must be a finite number"),
        ({"cooldown": 700}, "max_cooldown must be >= 700"),
        ({"max_cooldown": 1}, "max_cooldown must be >= 2"),
        ({"trial_rate": 0}, "trial_rate must be > 0"),
        ({"half_open_trials": 0}, "half_open_trials must be >= 1"),
    ],
)
def test_config_rejects_bad_values(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        BreakerConfig(**kwargs)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=match):
        CircuitBreaker(clock=FakeClock(), **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"failure_ratio": "0.5"}, "failure_ratio must be a number, got str"),
        ({"window": None}, "window must be a number, got NoneType"),
        ({"buckets": 10.0}, "buckets must be an int, got float"),
        ({"min_volume": True}, "min_volume must be an int, got bool"),
        ({"half_open_trials": "3"}, "half_open_trials must be an int, got str"),
        ({"cooldown": True}, "cooldown must be a number, got bool"),
    ],
)
def test_config_rejects_wrong_types(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(TypeError, match=match):
        BreakerConfig(**kwargs)  # type: ignore[arg-type]


def test_constructor_rejects_wrong_types() -> None:
    with pytest.raises(TypeError, match="config must be a BreakerConfig"):
        CircuitBreaker({"cooldown": 1}, clock=FakeClock())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="clock must be a Clock"):
        CircuitBreaker(clock=object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="on_change must be callable"):
        CircuitBreaker(clock=FakeClock(), on_change=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="name must be a str"):
        CircuitBreaker(clock=FakeClock(), name=None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="cooldwn"):
        CircuitBreaker(clock=FakeClock(), cooldwn=3)  # type: ignore[call-arg]


async def test_default_clock_is_the_event_loop() -> None:
    breaker = CircuitBreaker(consecutive_failures=1)
    breaker.record_failure()
    assert breaker.state is OPEN
    remaining = breaker.retry_after()
    assert remaining is not None
    assert 0 < remaining <= 30.0


# -- properties -----------------------------------------------------------------------

ops = st.lists(
    st.one_of(
        st.sampled_from(["allow", "success", "release"]),
        st.tuples(st.just("failure"), st.none() | st.floats(-10, 10_000)),
        st.floats(0, 100),
    ),
    max_size=400,
)


@given(ops=ops, trials=st.integers(1, 4))
def test_invariants_under_any_sequence(ops: list[object], trials: int) -> None:
    clock = FakeClock()
    config = BreakerConfig(
        consecutive_failures=3, min_volume=4, cooldown=10, max_cooldown=80, half_open_trials=trials
    )
    changes: list[Change] = []
    breaker = CircuitBreaker(
        config, clock=clock, on_change=lambda old, new: changes.append((old, new))
    )
    admitted_in_half_open = 0
    for op in ops:
        before = breaker.state
        if op == "allow":
            ok = breaker.allow()
            if breaker.state is HALF_OPEN and ok:
                admitted_in_half_open += 1
            if before is CLOSED:
                assert ok
        elif op == "success":
            breaker.record_success()
        elif op == "release":
            if breaker.state is HALF_OPEN and admitted_in_half_open:
                admitted_in_half_open -= 1
            breaker.release()
        elif isinstance(op, tuple):
            breaker.record_failure(op[1])
        else:
            assert isinstance(op, float)
            clock.advance(op)
        if breaker.state is not HALF_OPEN:
            admitted_in_half_open = 0
        assert admitted_in_half_open <= trials
        stats = breaker.stats()
        assert stats.state is breaker.state
        if stats.state is OPEN:
            remaining = breaker.retry_after()
            assert remaining is not None
            assert 0 < remaining <= config.max_cooldown
        assert config.cooldown <= stats.cooldown <= config.max_cooldown
    # every change is a legal edge, and they chain
    legal = {(CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, OPEN), (HALF_OPEN, CLOSED)}
    assert set(changes) <= legal
    for (_, new), (old, _) in itertools.pairwise(changes):
        assert new is old


def _repaired(draws: list[tuple[float, bool]], config: BreakerConfig) -> list[tuple[float, bool]]:
    """``draws`` less every failure that would make some run of outcomes ending in it
    reach ``failure_ratio`` over ``min_volume`` or more outcomes, or make
    ``consecutive_failures`` failures in a row: an error rate below the ratio
    over any window."""
    kept: list[tuple[float, bool]] = []
    for gap, failed in draws:
        if failed:
            outcomes = [f for _, f in kept] + [True]
            run = 0
            for f in reversed(outcomes):
                if not f:
                    break
                run += 1
            failures = 0
            too_many = run >= config.consecutive_failures
            for length, f in enumerate(reversed(outcomes), start=1):
                failures += f
                if length >= config.min_volume and failures >= config.failure_ratio * length:
                    too_many = True
                    break
            failed = not too_many
        kept.append((gap, failed))
    return kept


@given(
    draws=st.lists(
        st.tuples(st.floats(0, 3), st.integers(0, 99)),
        max_size=300,
    ),
    density=st.integers(0, 100),
    ratio=st.sampled_from([0.2, 0.5, 0.8, 1.0]),
    buckets=st.integers(1, 10),
)
def test_an_error_rate_below_the_ratio_over_any_window_never_opens_it(
    draws: list[tuple[float, int]], density: int, ratio: float, buckets: int
) -> None:
    config = BreakerConfig(
        failure_ratio=ratio, window=10, buckets=buckets, min_volume=8, consecutive_failures=6
    )
    clock = FakeClock()
    breaker = CircuitBreaker(config, clock=clock)
    for gap, failed in _repaired([(g, d < density) for g, d in draws], config):
        clock.advance(gap)
        assert breaker.allow()
        if failed:
            breaker.record_failure()
        else:
            breaker.record_success()
        assert breaker.state is CLOSED


@given(
    trials=st.integers(1, 7),
    ratio=st.floats(0.05, 1.0),
    order=st.randoms(use_true_random=False),
    extra_failure=st.booleans(),
)
def test_half_open_closes_under_any_order_of_forgiven_failures(
    trials: int, ratio: float, order: random.Random, extra_failure: bool
) -> None:
    config = BreakerConfig(failure_ratio=ratio, consecutive_failures=1, half_open_trials=trials)
    clock = FakeClock()
    breaker = CircuitBreaker(config, clock=clock)
    breaker.record_failure()
    clock.advance(config.cooldown)
    forgiven = min(int(trials * ratio), (trials - 1) // 2)
    failures = forgiven + extra_failure
    outcomes = [True] * failures + [False] * (trials - failures)
    order.shuffle(outcomes)
    assert all(breaker.allow() for _ in range(trials))
    for failed in outcomes:
        assert breaker.state is HALF_OPEN
        if failed:
            breaker.record_failure()
        else:
            breaker.record_success()
        if breaker.state is not HALF_OPEN:
            break
    # the forgiven share closes it in any order; one failure more opens it again
    assert breaker.state is (OPEN if extra_failure else CLOSED)
