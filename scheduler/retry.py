"""When to try a failed job again, and how many retries an upstream can take.

:class:`RetryPolicy` answers "how long until attempt n+1?" with capped
exponential backoff and *full jitter* (AWS Architecture Blog, "Exponential
Backoff And Jitter", 2015)::

    ceiling(n) = min(cap, base * multiplier ** (n - 1))     n = the attempt that failed
    delay(n)   = uniform(0, ceiling(n))                      jitter="full" (default)
    delay(n)   = ceiling(n)                                  jitter="none"

Full jitter spreads a crowd of clients that failed together over the whole
interval, so they do not come back as one wave. A server's ``Retry-After`` is
a floor: the delay is never shorter than it, but an absurd value is clamped
to ``retry_after_cap`` so one bad header cannot park a job for a day.

:class:`RetryBudget` bounds retries per upstream as a fraction of real
traffic, so that during an outage retries cannot multiply the load (the
"retry budget" of Finagle and gRPC). It is a token bucket: every first
attempt deposits ``ratio`` tokens (at most ``max_tokens`` banked), every retry
withdraws one. A small time-based reserve (``min_per_second``) still lets a
trickle of retries through when there is little traffic to earn tokens from.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

from ._validate import check_int, check_number
from .clock import Clock, SystemClock
from .errors import ConfigError

__all__ = ["RetryBudget", "RetryBudgetStats", "RetryPolicy"]

Jitter = Literal["full", "none"]
_JITTERS: tuple[str, ...] = ("full", "none")

#: the generator used when ``delay()`` is not handed one
_rng = random.Random()
#: tolerance for token arithmetic (five deposits of 0.2 make one whole token)
_EPS = 1e-9


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """Capped exponential backoff with full jitter and ``Retry-After`` as a floor.

    Args:
        max_attempts: total attempts, the first one included (1: never retry).
        base: seconds; the ceiling of the first retry's delay.
        cap: seconds; no backoff delay is longer (``Retry-After`` aside).
        multiplier: growth of the ceiling per failed attempt (>= 1).
        jitter: ``"full"`` draws the delay uniformly from ``[0, ceiling]``;
            ``"none"`` waits exactly the ceiling (deterministic).
        retry_after_cap: seconds; a server's ``Retry-After`` is honored up to this.

    With the defaults the ceilings are 0.5, 1, 2, 4 s for retries 1-4.
    """

    max_attempts: int = 5
    base: float = 0.5
    cap: float = 60.0
    multiplier: float = 2.0
    jitter: Jitter = "full"
    retry_after_cap: float = 300.0

    def __post_init__(self) -> None:
        check_int("RetryPolicy.max_attempts", self.max_attempts, minimum=1)
        base = check_number("RetryPolicy.base", self.base, minimum=0.0)
        cap = check_number("RetryPolicy.cap", self.cap, minimum=0.0)
        if cap < base:
            raise ConfigError(f"RetryPolicy.cap={cap:g} is below base={base:g}")
        multiplier = check_number("RetryPolicy.multiplier", self.multiplier, minimum=1.0)
        retry_after_cap = check_number(
            "RetryPolicy.retry_after_cap", self.retry_after_cap, minimum=0.0
        )
        if not isinstance(self.jitter, str):
            raise TypeError(
                f"RetryPolicy.jitter must be a str, got {type(self.jitter).__name__} "
                f"{self.jitter!r}"
            )
        if self.jitter not in _JITTERS:
            raise ConfigError(f"RetryPolicy.jitter must be 'full' or 'none', got {self.jitter!r}")
        object.__setattr__(self, "base", base)
        object.__setattr__(self, "cap", cap)
        object.__setattr__(self, "multiplier", multiplier)
        object.__setattr__(self, "retry_after_cap", retry_after_cap)

    def should_retry(self, attempt: int) -> bool:
        """True if attempt ``attempt`` (1-based) failed and another one is allowed."""
        _check_attempt(attempt)
        return attempt < self.max_attempts

    def max_delay(self, attempt: int) -> float:
        """The backoff ceiling after attempt ``attempt`` failed: ``min(cap, base*m**(n-1))``."""
        _check_attempt(attempt)
        if self.base == 0.0:
            return 0.0
        try:
            raw = self.base * self.multiplier ** (attempt - 1)
        except OverflowError:
            return self.cap
        return min(self.cap, raw)

    def delay(
        self,
        attempt: int,
        *,
        retry_after: float | None = None,
        rng: random.Random | None = None,
    ) -> float:
        """Seconds to wait after attempt ``attempt`` (1-based) failed.

        ``retry_after`` (the server's ``Retry-After``, seconds) is a floor,
        clamped to ``[0, retry_after_cap]``. ``rng`` makes the jitter
        reproducible; by default a module-private generator is used.
        """
        delay = self.max_delay(attempt)
        if self.jitter == "full":
            delay = (rng if rng is not None else _rng).uniform(0.0, delay)
        if retry_after is not None:
            delay = max(delay, _clamp_retry_after(retry_after, self.retry_after_cap))
        return delay


@dataclass(frozen=True, slots=True)
class RetryBudgetStats:
    """A snapshot of a :class:`RetryBudget`.

    ``tokens`` are retries earned by traffic, ``reserve`` the time-based
    allowance; ``requests`` counts first attempts recorded.
    """

    tokens: float
    reserve: float
    requests: int
    retries_granted: int
    retries_refused: int


class RetryBudget:
    """Retries for one upstream, limited to a fraction of its first attempts.

    A token bucket: :meth:`record_request` (call it for every *first* attempt,
    never for a retry) deposits ``ratio`` tokens, keeping at most
    ``max_tokens``; :meth:`try_acquire_retry` spends one token, or refuses.
    So over any stretch, granted retries <= ``ratio`` x requests, plus the
    tokens banked before it (<= ``max_tokens``), plus the reserve.

    The reserve refills at ``min_per_second`` tokens per second of clock time
    and holds at most one second's worth (at least one token); it is spent
    only when earned tokens run out, and it starts full. It keeps retries
    possible when traffic is too thin to earn them; ``min_per_second=0``
    disables it.

    A refused retry should be *delayed*, not dropped: the job waits and asks
    again later. Not thread-safe; use it from one event loop.
    """

    __slots__ = (
        "_clock",
        "_granted",
        "_last",
        "_max_tokens",
        "_min_per_second",
        "_ratio",
        "_refused",
        "_requests",
        "_reserve",
        "_reserve_cap",
        "_tokens",
    )

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        ratio: float = 0.2,
        min_per_second: float = 1.0,
        max_tokens: float = 100.0,
    ) -> None:
        if clock is None:
            clock = SystemClock()
        elif not isinstance(clock, Clock):
            raise TypeError(f"RetryBudget.clock must be a Clock, got {type(clock).__name__}")
        self._clock = clock
        self._ratio = check_number("RetryBudget.ratio", ratio, minimum=0.0)
        self._min_per_second = check_number(
            "RetryBudget.min_per_second", min_per_second, minimum=0.0
        )
        self._max_tokens = check_number("RetryBudget.max_tokens", max_tokens, minimum=1.0)
        self._reserve_cap = max(1.0, self._min_per_second) if self._min_per_second > 0 else 0.0
        self._tokens = 0.0
        self._reserve = self._reserve_cap
        self._last: float | None = None
        self._requests = 0
        self._granted = 0
        self._refused = 0

    @property
    def ratio(self) -> float:
        return self._ratio

    @property
    def min_per_second(self) -> float:
        return self._min_per_second

    @property
    def max_tokens(self) -> float:
        return self._max_tokens

    def record_request(self) -> None:
        """Count one first attempt: earns ``ratio`` of a retry."""
        self._requests += 1
        self._tokens = min(self._max_tokens, self._tokens + self._ratio)

    def try_acquire_retry(self) -> bool:
        """Spend one retry if the budget has it; ``False`` means wait, do not retry now."""
        if self._tokens >= 1.0 - _EPS:
            self._tokens = max(0.0, self._tokens - 1.0)
            self._granted += 1
            return True
        self._refill()
        if self._reserve >= 1.0 - _EPS:
            self._reserve = max(0.0, self._reserve - 1.0)
            self._granted += 1
            return True
        self._refused += 1
        return False

    def stats(self) -> RetryBudgetStats:
        self._refill()
        return RetryBudgetStats(
            tokens=self._tokens,
            reserve=self._reserve,
            requests=self._requests,
            retries_granted=self._granted,
            retries_refused=self._refused,
        )

    def _refill(self) -> None:
        now = self._clock.now()
        if self._last is not None and now > self._last:
            earned = (now - self._last) * self._min_per_second
            self._reserve = min(self._reserve_cap, self._reserve + earned)
        self._last = now

    def __repr__(self) -> str:
        return (
            f"RetryBudget(ratio={self._ratio:g}, min_per_second={self._min_per_second:g}, "
            f"max_tokens={self._max_tokens:g}, tokens={self._tokens:.3g})"
        )


def _check_attempt(attempt: object) -> None:
    if isinstance(attempt, bool) or not isinstance(attempt, int):
        raise TypeError(f"attempt must be an int, got {type(attempt).__name__} {attempt!r}")
    if attempt < 1:
        raise ConfigError(f"attempt is 1-based, got {attempt}")


def _clamp_retry_after(retry_after: float, limit: float) -> float:
    """A ``Retry-After`` in seconds made safe: negative -> 0, above ``limit`` -> ``limit``."""
    if isinstance(retry_after, bool) or not isinstance(retry_after, int | float):
        raise TypeError(
            f"retry_after must be a number of seconds, got {type(retry_after).__name__} "
            f"{retry_after!r}"
        )
    if retry_after != retry_after:  # NaN
        raise ConfigError("retry_after must be a number of seconds, got NaN")
    try:
        seconds = float(retry_after)
    except OverflowError:  # an int beyond float range
        return limit if retry_after > 0 else 0.0
    return min(max(seconds, 0.0), limit)
