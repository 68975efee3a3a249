"""A circuit breaker per upstream: stop calling it while it is down.

The breaker is a three-state switch fed with call outcomes::

              too many failures                  cooldown over
    CLOSED ─────────────────────────> OPEN ─────────────────────> HALF_OPEN
      ^    (ratio over the window,     ^   (lazily, on the next     │
      │     or N in a row)             │    allow() / state read)   │
      │                                └── any trial fails ─────────┤
      │                                    (cooldown doubles)       │
      └──────── enough of the ``half_open_trials`` trials succeed ──┘

- **closed**: every call goes. Outcomes land in a sliding window of
  ``window`` seconds, kept as ``buckets`` time buckets (bounded memory: an
  outcome counts for between ``window - window/buckets`` and ``window``
  seconds). It trips when the window holds at least ``min_volume`` outcomes
  and failures make up ``failure_ratio`` of them, or after
  ``consecutive_failures`` failures in a row whatever the volume.
- **open**: nothing goes for ``cooldown`` seconds (2 s by default), or longer
  if the failure carried a ``Retry-After`` (never beyond ``max_cooldown``,
  30 s: however long an outage lasts, it is re-tried at least that often).
  Meanwhile a *live* call (an interactive one, whose caller is waiting)
  may go as a trial: ``allow(live=True)``, at most ``trial_rate`` per second
  and never inside a ``Retry-After``. A live trial that succeeds moves the
  breaker to half-open at once, so recovery is noticed within about a second
  wherever there is live traffic.
- **half_open**: exactly ``half_open_trials`` calls are let through (live or
  not), at most ``trial_rate`` per second after the first ones until one of
  them succeeds: the pacing spares an upstream that is still down, and an
  answer says it is not, so once a trial has succeeded the remaining trials go
  as soon as they are asked for (recovery takes round trips, not seconds). The
  breaker forgives a minority of failed trials, as many as ``failure_ratio``
  allows (with the defaults, 1 of 3), so an upstream that is degraded but
  answering can close it. When enough trials succeed it closes, with a fresh
  window and the cooldown back at its base; one failure more than forgiven,
  or any failure carrying a ``Retry-After``, opens it again for twice the
  previous cooldown (up to ``max_cooldown``).

Protocol for callers: when :meth:`CircuitBreaker.allow` returns ``True``,
report the call with exactly one of :meth:`~CircuitBreaker.record_success`,
:meth:`~CircuitBreaker.record_failure` or, for an outcome that says nothing
about the upstream's health (cancelled, the caller's own 4xx),
:meth:`~CircuitBreaker.release`, which hands a half-open trial slot back.
Outcomes of calls admitted earlier may arrive in any state: while open they
are ignored, in half-open they count as trial results.

All time comes from the injected clock; the open -> half_open move happens
when the breaker is next asked, so a dispatcher that wants to wake up then
should set a timer for :meth:`~CircuitBreaker.retry_after` seconds.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypedDict, Unpack

from ._validate import check_int, check_number
from .clock import Clock, SystemClock
from .logs import get_logger
from .retry import _clamp_retry_after

__all__ = ["BreakerConfig", "BreakerState", "BreakerStats", "CircuitBreaker"]

_log = get_logger()


class BreakerState(enum.Enum):
    """Where a breaker is: calls flow (closed), are refused (open), or are trialled."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakerConfig:
    """The settings of a breaker; one config can make one breaker per upstream.

    Args:
        failure_ratio: trip when failures are at least this share (0-1] of the window.
        window: seconds of outcomes the ratio is computed over.
        buckets: time buckets the window is kept in (its resolution and memory).
        min_volume: outcomes the window must hold before the ratio can trip it.
        consecutive_failures: trip after this many failures in a row, any volume.
        cooldown: seconds the breaker stays open after the first trip.
        max_cooldown: upper bound on any open period (doubling, ``Retry-After``).
        half_open_trials: trial calls let through; a minority may fail (see above).
        trial_rate: most trial calls per second, live and half-open together,
            beyond a first ``half_open_trials`` (so a long outage sees at most
            about this many requests per second); a half-open breaker whose
            trials have had a success lets the rest go unpaced.
    """

    failure_ratio: float = 0.5
    window: float = 30.0
    buckets: int = 10
    min_volume: int = 20
    consecutive_failures: int = 20
    cooldown: float = 2.0
    max_cooldown: float = 30.0
    half_open_trials: int = 3
    trial_rate: float = 1.0

    def __post_init__(self) -> None:
        ratio = check_number(
            "BreakerConfig.failure_ratio",
            self.failure_ratio,
            minimum=0.0,
            exclusive=True,
            maximum=1.0,
        )
        window = check_number("BreakerConfig.window", self.window, minimum=0.0, exclusive=True)
        check_int("BreakerConfig.buckets", self.buckets, minimum=1)
        check_int("BreakerConfig.min_volume", self.min_volume, minimum=1)
        check_int("BreakerConfig.consecutive_failures", self.consecutive_failures, minimum=1)
        cooldown = check_number(
            "BreakerConfig.cooldown", self.cooldown, minimum=0.0, exclusive=True
        )
        max_cooldown = check_number(
            "BreakerConfig.max_cooldown", self.max_cooldown, minimum=cooldown
        )
        check_int("BreakerConfig.half_open_trials", self.half_open_trials, minimum=1)
        check_number("BreakerConfig.trial_rate", self.trial_rate, minimum=0.0, exclusive=True)
        object.__setattr__(self, "failure_ratio", ratio)
        object.__setattr__(self, "window", window)
        object.__setattr__(self, "cooldown", cooldown)
        object.__setattr__(self, "max_cooldown", max_cooldown)


class BreakerSettings(TypedDict, total=False):
    """The :class:`BreakerConfig` fields, as keyword arguments of :class:`CircuitBreaker`."""

    failure_ratio: float
    window: float
    buckets: int
    min_volume: int
    consecutive_failures: int
    cooldown: float
    max_cooldown: float
    half_open_trials: int
    trial_rate: float


@dataclass(frozen=True, slots=True)
class BreakerStats:
    """A snapshot of a breaker.

    ``failures`` and ``successes`` are those in the sliding window;
    ``opened`` counts trips (re-opens from half-open included); ``rejected``
    counts ``allow()`` calls refused; ``open_until`` is the clock time the
    breaker may admit again, ``None`` unless open; ``cooldown`` is the open
    period the next trip from half-open will double.
    """

    state: BreakerState
    failures: int
    successes: int
    consecutive_failures: int
    opened: int
    rejected: int
    open_until: float | None
    cooldown: float


Listener = Callable[[BreakerState, BreakerState], object]


class CircuitBreaker:
    """A closed / open / half-open breaker for one upstream (see the module docs).

    Build it from keyword settings, ``CircuitBreaker(clock=clock, cooldown=10)``,
    or from a shared :class:`BreakerConfig`, ``CircuitBreaker(config, clock=clock)``
    (keywords given as well override the config's fields). ``on_change(old, new)``
    is called after every state change, once the breaker is consistent; an
    exception it raises propagates to the caller. ``name`` labels logs and repr.
    Not thread-safe; use it from one event loop.
    """

    __slots__ = (
        "_clock",
        "_config",
        "_consecutive",
        "_cooldown",
        "_hold_until",
        "_name",
        "_on_change",
        "_open_until",
        "_opened",
        "_rejected",
        "_state",
        "_trial_failures",
        "_trial_successes",
        "_trial_tokens",
        "_trial_tokens_at",
        "_trials",
        "_window",
    )

    def __init__(
        self,
        config: BreakerConfig | None = None,
        /,
        *,
        clock: Clock | None = None,
        name: str = "upstream",
        on_change: Listener | None = None,
        **settings: Unpack[BreakerSettings],
    ) -> None:
        if config is None:
            config = BreakerConfig(**settings)
        elif not isinstance(config, BreakerConfig):
            raise TypeError(f"config must be a BreakerConfig, got {type(config).__name__}")
        elif settings:
            config = dataclasses.replace(config, **settings)
        if clock is None:
            clock = SystemClock()
        elif not isinstance(clock, Clock):
            raise TypeError(f"clock must be a Clock, got {type(clock).__name__}")
        if not isinstance(name, str):
            raise TypeError(f"name must be a str, got {type(name).__name__}")
        if on_change is not None and not callable(on_change):
            raise TypeError(f"on_change must be callable, got {type(on_change).__name__}")
        self._config = config
        self._clock = clock
        self._name = name
        self._on_change = on_change
        self._window = _Window(config.window, config.buckets)
        self._state = BreakerState.CLOSED
        self._consecutive = 0
        self._cooldown = config.cooldown
        self._open_until = -math.inf
        self._hold_until = -math.inf  # a Retry-After: not even live trials before it
        self._trial_tokens = float(config.half_open_trials)
        self._trial_tokens_at = clock.now()
        self._opened = 0
        self._rejected = 0
        self._trials = 0
        self._trial_successes = 0
        self._trial_failures = 0

    @property
    def config(self) -> BreakerConfig:
        return self._config

    @property
    def name(self) -> str:
        return self._name

    @property
    def state(self) -> BreakerState:
        """The current state; reading it moves open -> half_open once the cooldown is over."""
        self._poll()
        return self._state

    def allow(self, *, live: bool = False) -> bool:
        """May a call go now? In half-open, ``True`` takes one of the trial slots.

        ``live``: the call has a caller waiting (interactive); while open it
        may go as a trial (see the module docs), whose outcome is reported
        with ``trial=True``.
        """
        now = self._poll()
        if self._state is BreakerState.CLOSED:
            return True
        if self._state is BreakerState.HALF_OPEN:
            if self._trials < self._config.half_open_trials and self._trial_turn(now):
                self._trials += 1
                return True
        elif live and now >= self._hold_until and self._take_trial_token(now):
            return True
        self._rejected += 1
        return False

    def _trial_tokens_now(self, now: float) -> float:
        cfg = self._config
        elapsed = max(0.0, now - self._trial_tokens_at)
        self._trial_tokens_at = now
        self._trial_tokens = min(
            float(cfg.half_open_trials), self._trial_tokens + elapsed * cfg.trial_rate
        )
        return self._trial_tokens

    def _trial_turn(self, now: float) -> bool:
        """May a half-open trial go now, pacing aside from the slots? Paced until a
        trial succeeds (the upstream answers again: nothing left to spare it)."""
        return self._trial_successes > 0 or self._take_trial_token(now)

    def _take_trial_token(self, now: float) -> bool:
        if self._trial_tokens_now(now) < 1.0 - 1e-9:
            return False
        self._trial_tokens -= 1.0
        return True

    def next_trial_in(self, *, live: bool = False) -> float | None:
        """Seconds until :meth:`allow` (``live`` or not) may say yes; ``0`` if it
        would now, ``None`` while half-open with every trial slot out."""
        now = self._poll()
        if self._state is BreakerState.CLOSED:
            return 0.0
        token_wait = max(0.0, 1.0 - self._trial_tokens_now(now)) / self._config.trial_rate
        if self._state is BreakerState.HALF_OPEN:
            if self._trials >= self._config.half_open_trials:
                return None
            return 0.0 if self._trial_successes > 0 else token_wait
        if not live:
            return max(0.0, self._open_until - now)
        return max(self._hold_until - now, token_wait, 0.0)

    def end_cooldown(self) -> None:
        """An active probe says the upstream answers again: end the open period now
        (the breaker goes half-open and lets its trials through)."""
        now = self._clock.now()
        if self._state is BreakerState.OPEN and self._open_until > now:
            self._open_until = now
            self._poll()

    def would_allow(self) -> bool:
        """Whether :meth:`allow` would say yes now, without taking a trial slot."""
        now = self._poll()
        if self._state is BreakerState.CLOSED:
            return True
        return (
            self._state is BreakerState.HALF_OPEN
            and self._trials < self._config.half_open_trials
            and (self._trial_successes > 0 or self._trial_tokens_now(now) >= 1.0 - 1e-9)
        )

    def record_success(self, *, trial: bool = False) -> None:
        """A call succeeded (``trial``: one that ``allow(live=True)`` let through
        while open: the upstream answers again, so go half-open now)."""
        now = self._poll()
        if trial and self._state is BreakerState.OPEN:
            self._open_until = now
            self._poll()  # -> half-open, counting this call as its first trial
            self._trials += 1
        if self._state is BreakerState.CLOSED:
            self._window.add(now, failed=False)
            self._consecutive = 0
        elif self._state is BreakerState.HALF_OPEN:
            self._trial_successes += 1
            if self._trial_successes >= self._config.half_open_trials - self._tolerated():
                self._close()

    def record_failure(self, retry_after: float | None = None, *, trial: bool = False) -> None:
        """A call failed in a way that counts against the upstream.

        ``retry_after`` (seconds, the server's ``Retry-After``) keeps the
        breaker open at least that long once it trips, up to ``max_cooldown``;
        if it is open already, it extends the open period likewise.
        """
        hold = (
            None
            if retry_after is None
            else _clamp_retry_after(retry_after, self._config.max_cooldown)
        )
        now = self._poll()
        if self._state is BreakerState.CLOSED:
            self._window.add(now, failed=True)
            self._consecutive += 1
            if self._consecutive >= self._config.consecutive_failures:
                self._open(now, hold, reason="consecutive failures")
                return
            failures, successes = self._window.totals(now)
            total = failures + successes
            if total >= self._config.min_volume and failures >= self._config.failure_ratio * total:
                self._open(now, hold, reason="failure ratio")
        elif self._state is BreakerState.HALF_OPEN:
            self._trial_failures += 1
            if hold is not None or self._trial_failures > self._tolerated():
                self._cooldown = min(self._cooldown * 2.0, self._config.max_cooldown)
                self._open(now, hold, reason="trial failed")
        elif hold is not None:  # open: a Retry-After holds even live trials
            self._hold_until = max(self._hold_until, now + hold)
            if not trial:
                self._open_until = max(self._open_until, now + hold)

    def _tolerated(self) -> int:
        """Trial failures a half-open breaker forgives: the share ``failure_ratio``
        allows, below a majority (so a degraded upstream answering most calls
        can close it, while a down one cannot)."""
        trials = self._config.half_open_trials
        return min(int(trials * self._config.failure_ratio), (trials - 1) // 2)

    def release(self) -> None:
        """A call admitted by :meth:`allow` ended with no verdict on the upstream.

        In half-open its trial slot is handed back so another call can take
        it; otherwise nothing changes.
        """
        now = self._poll()
        if self._state is BreakerState.HALF_OPEN and self._trials > 0:
            self._trials -= 1
            self._trial_tokens_now(now)
            self._trial_tokens = min(float(self._config.half_open_trials), self._trial_tokens + 1)

    def retry_after(self) -> float | None:
        """Seconds until the breaker admits calls again while open, else ``None``."""
        now = self._poll()
        if self._state is BreakerState.OPEN:
            # min(): ``(now + period) - now`` may round a hair above ``period``
            return min(self._open_until - now, self._config.max_cooldown)
        return None

    def stats(self) -> BreakerStats:
        now = self._poll()
        failures, successes = self._window.totals(now)
        return BreakerStats(
            state=self._state,
            failures=failures,
            successes=successes,
            consecutive_failures=self._consecutive,
            opened=self._opened,
            rejected=self._rejected,
            open_until=self._open_until if self._state is BreakerState.OPEN else None,
            cooldown=self._cooldown,
        )

    # -- transitions ------------------------------------------------------------------

    def _poll(self) -> float:
        """Read the clock, moving open -> half_open when the open period is over."""
        now = self._clock.now()
        if self._state is BreakerState.OPEN and now >= self._open_until:
            self._trials = 0
            self._trial_successes = 0
            self._trial_failures = 0
            self._transition(BreakerState.HALF_OPEN)
        return now

    def _open(self, now: float, hold: float | None, *, reason: str) -> None:
        period = self._cooldown if hold is None else max(self._cooldown, hold)
        self._open_until = now + period
        self._hold_until = -math.inf if hold is None else now + hold
        self._opened += 1
        _log.info("breaker.opened", upstream=self._name, reason=reason, seconds=period)
        self._transition(BreakerState.OPEN)

    def _close(self) -> None:
        self._window.clear()
        self._consecutive = 0
        self._cooldown = self._config.cooldown
        self._open_until = -math.inf
        self._trials = 0
        self._trial_successes = 0
        _log.info("breaker.closed", upstream=self._name)
        self._transition(BreakerState.CLOSED)

    def _transition(self, new: BreakerState) -> None:
        old, self._state = self._state, new
        if new is BreakerState.HALF_OPEN:
            _log.info("breaker.half_open", upstream=self._name)
        if self._on_change is not None and old is not new:
            self._on_change(old, new)

    def __repr__(self) -> str:
        return f"CircuitBreaker({self._name!r}, {self._state.value})"


class _Window:
    """Outcome counts over the last ``window`` seconds, in ``buckets`` time buckets.

    Bucket ``k`` covers clock times ``[k*width, (k+1)*width)`` and lives in
    ring slot ``k % buckets``; a slot still holding an older ``k`` is stale
    and reset before reuse, so memory is fixed and nothing needs a timer.
    """

    __slots__ = ("_epochs", "_failures", "_successes", "_width")

    def __init__(self, window: float, buckets: int) -> None:
        self._width = window / buckets
        self._epochs: list[int | None] = [None] * buckets
        self._failures = [0] * buckets
        self._successes = [0] * buckets

    def add(self, now: float, *, failed: bool) -> None:
        epoch = math.floor(now / self._width)
        slot = epoch % len(self._epochs)
        if self._epochs[slot] != epoch:
            self._epochs[slot] = epoch
            self._failures[slot] = 0
            self._successes[slot] = 0
        if failed:
            self._failures[slot] += 1
        else:
            self._successes[slot] += 1

    def totals(self, now: float) -> tuple[int, int]:
        """(failures, successes) in the buckets still inside the window."""
        current = math.floor(now / self._width)
        n = len(self._epochs)
        failures = successes = 0
        for slot, epoch in enumerate(self._epochs):
            if epoch is not None and 0 <= current - epoch < n:
                failures += self._failures[slot]
                successes += self._successes[slot]
        return failures, successes

    def clear(self) -> None:
        n = len(self._epochs)
        self._epochs = [None] * n
        self._failures = [0] * n
        self._successes = [0] * n
