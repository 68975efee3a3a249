"""Adaptive concurrency, token buckets and client-side throttling.

- :class:`AIMDLimit`: how many gated jobs may run at once, learned from the
  upstream's answers. After a reset it starts at ``min_limit`` and doubles
  per healthy round trip (slow start) up to the threshold left by the last
  overload, then grows by one per round trip (additive increase). A 429, a
  5xx, a timeout or a latency above ``latency_limit`` cuts it by ``backoff``
  (multiplicative decrease), at most once per round trip, so one burst of
  failures is one cut. It never exceeds the lane's hard ceiling.
- :class:`TokenBucket`: a request- or token-rate limit; ``take(n, keep=r)``
  only succeeds if ``r`` tokens remain afterwards, which is how batch work
  leaves a reserve for interactive work.
- :class:`AdaptiveThrottle`: the client-side throttle of the Google SRE
  book: reject locally with probability
  ``max(0, (requests - k * accepts) / (requests + 1))`` over a sliding window,
  so a failing upstream is not hammered by live traffic either. It stays
  quiet below ``min_requests`` in the window, where a few failures say little.
"""

from __future__ import annotations

import math
import random
from collections import deque
from dataclasses import dataclass

from ._validate import check_int, check_number
from .clock import Clock

__all__ = ["AIMDLimit", "AdaptiveThrottle", "LimitStats", "TokenBucket"]


@dataclass(frozen=True, slots=True)
class LimitStats:
    limit: int
    threshold: float
    increases: int
    decreases: int


class AIMDLimit:
    """An additive-increase / multiplicative-decrease concurrency limit with slow start."""

    def __init__(
        self,
        max_limit: int,
        *,
        min_limit: int = 1,
        backoff: float = 0.5,
        latency_limit: float | None = None,
    ) -> None:
        check_int("max_limit", max_limit, minimum=1)
        check_int("min_limit", min_limit, minimum=1)
        check_number("backoff", backoff, minimum=0, exclusive=True, maximum=1)
        if latency_limit is not None:
            check_number("latency_limit", latency_limit, minimum=0, exclusive=True)
        self.max_limit = max_limit
        self.min_limit = min(min_limit, max_limit)
        self.backoff = backoff
        self.latency_limit = latency_limit
        self._limit = float(self.min_limit)  # start small: slow start from the first job
        self._threshold = float(max_limit)
        self._since_change = 0  # completions since the last change of the limit
        self._increases = 0
        self._decreases = 0

    @property
    def limit(self) -> int:
        return max(self.min_limit, min(self.max_limit, int(self._limit)))

    def reset(self) -> None:
        """Start again from ``min_limit`` with slow start (after an outage or pause)."""
        self._threshold = max(self._threshold, float(self.min_limit))
        self._limit = float(self.min_limit)
        self._since_change = 0

    def on_success(self, latency: float) -> None:
        if self.latency_limit is not None and latency > self.latency_limit:
            self.on_overload()
            return
        self._since_change += 1
        if self._since_change < self.limit:
            return  # one change per round trip: `limit` completions
        self._since_change = 0
        if self._limit >= self.max_limit:
            return
        step = self._limit if self._limit < self._threshold else 1.0  # slow start doubles
        self._limit = min(float(self.max_limit), self._limit + step)
        self._increases += 1

    def on_overload(self) -> None:
        if self._since_change < 0:
            return  # already cut during this round trip
        self._threshold = max(float(self.min_limit), self._limit * self.backoff)
        self._limit = self._threshold
        self._since_change = -self.limit  # ignore further overloads for one round trip
        self._decreases += 1

    def stats(self) -> LimitStats:
        return LimitStats(self.limit, self._threshold, self._increases, self._decreases)


class TokenBucket:
    """``rate`` tokens per second, at most ``capacity`` banked; time from ``clock``."""

    def __init__(self, rate: float, capacity: float, clock: Clock) -> None:
        check_number("rate", rate, minimum=0, exclusive=True)
        check_number("capacity", capacity, minimum=0, exclusive=True)
        self.rate = float(rate)
        self.capacity = float(capacity)
        self._clock = clock
        self._level = float(capacity)
        self._at = clock.now()

    def _refill(self) -> None:
        now = self._clock.now()
        self._level = min(self.capacity, self._level + (now - self._at) * self.rate)
        self._at = now

    @property
    def level(self) -> float:
        self._refill()
        return self._level

    def take(self, n: float, *, keep: float = 0.0) -> bool:
        """Take ``n`` tokens if ``keep`` still remain afterwards."""
        self._refill()
        if self._level - n < keep:
            return False
        self._level -= n
        return True

    def draw(self, n: float) -> None:
        """Take ``n`` tokens unconditionally; the level may go negative (a debt)."""
        self._refill()
        self._level -= n

    def time_until(self, n: float, *, keep: float = 0.0) -> float:
        """Seconds until :meth:`take` of ``n`` (keeping ``keep``) can succeed."""
        self._refill()
        missing = n + keep - self._level
        if missing > self.capacity:
            return math.inf
        return max(0.0, missing / self.rate)

    def set_level(self, level: float, *, capacity: float | None = None) -> None:
        """Adopt what the upstream says is left (its headers know better than we do)."""
        self._refill()
        if capacity is not None and capacity > 0:
            self.capacity = float(capacity)
        self._level = max(0.0, min(self.capacity, float(level)))


class AdaptiveThrottle:
    """Client-side adaptive throttling (Google SRE book, "Handling Overload")."""

    def __init__(
        self,
        clock: Clock,
        *,
        k: float = 2.0,
        window: float = 120.0,
        min_requests: int = 20,
        rng: random.Random | None = None,
    ) -> None:
        check_number("k", k, minimum=1)
        check_number("window", window, minimum=0, exclusive=True)
        check_int("min_requests", min_requests, minimum=0)
        self.min_requests = min_requests
        self.k = k
        self.window = window
        self._clock = clock
        self._rng = rng or random.Random()
        self._events: deque[tuple[float, bool, bool]] = deque()  # (time, request, accepted)
        self._requests = 0
        self._accepts = 0

    def _trim(self) -> None:
        horizon = self._clock.now() - self.window
        events = self._events
        while events and events[0][0] < horizon:
            _, req, acc = events.popleft()
            self._requests -= req
            self._accepts -= acc

    def reject_probability(self) -> float:
        self._trim()
        if self._requests < self.min_requests:
            return 0.0
        return max(0.0, (self._requests - self.k * self._accepts) / (self._requests + 1))

    def should_reject(self) -> bool:
        """Decide one request: True means reject it locally (and count it as a request)."""
        reject = self._rng.random() < self.reject_probability()
        if reject:
            self._add(request=True, accepted=False)
        return reject

    def record(self, *, accepted: bool) -> None:
        """A request that went to the upstream: ``accepted`` unless it was overloaded."""
        self._add(request=True, accepted=accepted)

    def _add(self, *, request: bool, accepted: bool) -> None:
        self._events.append((self._clock.now(), request, accepted))
        self._requests += request
        self._accepts += accepted
        if len(self._events) > 100_000:  # bound memory under extreme rates
            self._trim()
            while len(self._events) > 100_000:
                _, req, acc = self._events.popleft()
                self._requests -= req
                self._accepts -= acc
