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
- :class:`LearnedRate`: the request rate an upstream allows, learned from
  its 429s without configuration (the AWS SDKs' adaptive retry mode is the
  model: a client-side rate limiter, CUBIC growth, a multiplicative cut on
  throttling), and the pacer that spaces requests at that rate.
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

__all__ = [
    "AIMDLimit",
    "AdaptiveThrottle",
    "LearnedRate",
    "LimitStats",
    "TokenBucket",
]


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

    def set_ceiling(self, max_limit: int) -> None:
        """A new ``max_limit`` (the lane's ceiling changed at run time)."""
        check_int("max_limit", max_limit, minimum=1)
        self.max_limit = max_limit
        self.min_limit = min(self.min_limit, max_limit)
        self._limit = min(self._limit, float(max_limit))
        self._threshold = min(self._threshold, float(max_limit))

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

    def turns_within(self, horizon: float) -> float:
        """Tokens the bucket gives within ``horizon`` seconds (what it holds, and refills)."""
        return self.level + self.rate * horizon

    def set_rate(self, rate: float, capacity: float) -> None:
        """Refill at ``rate`` from now on, banking at most ``capacity`` (a fleet's
        share of a limit changes as processes come and go)."""
        check_number("rate", rate, minimum=0, exclusive=True)
        check_number("capacity", capacity, minimum=0, exclusive=True)
        self._refill()
        self.rate, self.capacity = float(rate), float(capacity)
        self._level = min(self._level, self.capacity)

    def set_level(self, level: float) -> None:
        """Adopt what the upstream says is left (its headers know better than we do),
        within ``[0, capacity]``: a header never raises what may be banked."""
        self._refill()
        if math.isfinite(level):
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

    def reset(self) -> None:
        """Forget the history (the upstream proved healthy again: its old rejects are
        not a reason to refuse what comes now)."""
        self._events.clear()
        self._requests = 0
        self._accepts = 0

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


#: shortest span a send rate is measured over (seconds)
_MIN_SPAN = 0.1
#: fewer sends than this in the window do not measure a rate worth cutting to
_FEW_SENDS = 5
#: the shortest gap between sends that is a lull rather than pacing (seconds)
_LULL = 0.5
#: seconds after a cut during which further 429s are its echo, not news
_SETTLE = 0.5
#: relative distance within which two 429s' rates confirm the same limit
_SAME_PEAK = 0.1
#: seconds back to a peak not yet confirmed by a second 429 near it
_PROBE_CYCLE = 5.0


#: seconds of rate-limit headers the bounds on an upstream's refill rate come from
_BOUNDS_HORIZON = 10.0


class _Extreme:
    """The largest (or smallest) value seen over a sliding time horizon."""

    def __init__(self, *, largest: bool) -> None:
        self._largest = largest
        self._items: deque[tuple[float, float]] = deque()  # (time, value), monotonic

    def add(self, now: float, value: float) -> None:
        items = self._items
        while items and (items[-1][1] <= value if self._largest else items[-1][1] >= value):
            items.pop()
        items.append((now, value))

    def value(self, horizon: float) -> float | None:
        items = self._items
        while items and items[0][0] < horizon:
            items.popleft()
        return items[0][1] if items else None

    def clear(self) -> None:
        self._items.clear()


def _trim(times: deque[float], horizon: float) -> None:
    while times and times[0] <= horizon:
        times.popleft()


def _busy_since(times: deque[float], window: float) -> float:
    """When the latest run of ``times`` began: a gap of four times their mean
    spacing over ``window`` (and of half a second at least) is a lull."""
    if len(times) < 2:
        return times[0] if times else math.inf
    lull = max(_LULL, 4.0 * window / len(times))
    later = times[-1]
    for at in reversed(times):
        if later - at > lull:
            return later
        later = at
    return later


def _rate(times: deque[float], now: float, window: float) -> float:
    """Events per second in ``times`` over the last ``window`` seconds (over the
    time since the first of them, when that is shorter)."""
    _trim(times, now - window)
    if not times:
        return 0.0
    return len(times) / min(window, max(now - times[0], _MIN_SPAN))


class LearnedRate:
    """The send rate an upstream allows, learned from its throttling (429s).

    Until the first 429 nothing is paced. A 429 for a request sent after the
    last cut sets ``peak`` to the rate requests were really going out at
    (the lower of the paced rate and the measured one) and cuts the rate to
    ``beta * peak``. The rate then grows back on a cubic curve: fast at first,
    flat near ``peak`` (where the last 429 came), and faster again beyond it,
    probing for more. Once two 429s in a row came near the same rate,
    getting back to it takes about ``cycle_requests`` requests, and
    ``min_cycle`` to ``max_cycle`` seconds (a few seconds before), so a fixed limit
    costs about one 429 (and the pause its ``Retry-After`` asks for) per
    cycle: far below 1 % of requests.
    The curve's clock only runs while the pacer's bucket is not full, i.e.
    while requests use the rate: an upstream that is not pushed is not
    probed, so a pause or an idle spell resumes at the learned rate instead
    of bursting or starting over.

    Rate-limit headers sharpen what the 429s teach (:meth:`observe_budget`):
    an upstream that says how much of its request budget is left and when it
    is full again refills at a rate inside an interval each answer gives.
    Within the last few seconds' intervals a 429's peak is taken, and the
    rate never probes beyond them.

    Requests are paced by a bucket holding ``burst`` seconds of the rate (at
    least one request: an upstream's own burst may be that small);
    :meth:`take` with ``keep`` leaves that share of it for interactive work.
    """

    def __init__(
        self,
        clock: Clock,
        *,
        beta: float = 0.9,
        cycle_requests: float = 2000.0,
        min_cycle: float = 20.0,
        max_cycle: float = 120.0,
        growth: float = 0.4,
        floor: float = 0.5,
        burst: float = 0.02,
        window: float = 1.0,
    ) -> None:
        check_number("beta", beta, minimum=0, exclusive=True, maximum=1)
        check_number("cycle_requests", cycle_requests, minimum=1)
        check_number("min_cycle", min_cycle, minimum=0)
        check_number("max_cycle", max_cycle, minimum=min_cycle, exclusive=True)
        check_number("growth", growth, minimum=0, exclusive=True)
        check_number("floor", floor, minimum=0, exclusive=True)
        check_number("burst", burst, minimum=0, exclusive=True)
        check_number("window", window, minimum=0, exclusive=True)
        self._clock = clock
        self.beta = beta
        self.cycle_requests = cycle_requests
        self.min_cycle = min_cycle
        self.max_cycle = max_cycle
        self.growth = growth
        self.floor = floor
        self.burst = burst
        self.window = window
        self._peak: float | None = None  # the rate the last 429 came at
        self._k = 0.0  # seconds of pushing from the cut back to the peak
        self._c = 0.0  # the concave part's cubic coefficient
        self._pushed = 0.0  # seconds pushed against the pacer since the cut
        self._settled_at = -math.inf  # 429s for requests sent before it are answered
        self._sends: deque[float] = deque()
        self._accepts: deque[float] = deque()
        self._level = 1.0
        self._at = clock.now()
        # this process's share of the rate (the fleet's processes split it): rate(),
        # peaks and header bounds are the fleet's; this process sends share x rate()
        self.share = 1.0
        self._low = _Extreme(largest=True)  # the upstream's refill rate is above it
        self._high = _Extreme(largest=False)  # ... and at most this
        self._seeded = False  # paced from the headers alone, no 429 yet (see _seed)
        self.cuts = 0  # 429s that cut the rate here (not cuts adopted from the fleet)
        self.cut_at = -math.inf  # clock time of the last cut, made here or adopted

    # -- the rate ------------------------------------------------------------------

    def rate(self) -> float | None:
        """Requests per second allowed now; ``None`` while nothing is paced."""
        peak = self._peak
        if peak is None:
            return None
        if self._seeded:  # no 429 yet: at most what the headers say it refills
            bounds = self.bounds()
            return max(self.floor, peak if bounds is None else bounds[1])
        t = self._pushed
        if t < self._k:
            rate = peak - self._c * (self._k - t) ** 3
        else:
            # beyond the peak: probe, gently at low rates, in proportion at high ones
            scale = min(1.0, peak / 10.0) * max(1.0, peak / 100.0)
            rate = peak + self.growth * scale * (t - self._k) ** 3
            bounds = self.bounds()
            if bounds is not None:
                rate = min(rate, max(peak, bounds[1]))  # no probing past what it refills
        return max(self.floor, rate)

    def set_share(self, share: float) -> None:
        """Send ``share`` (0-1] of the rate from now on (what the bucket banked so far
        is kept, up to the new capacity)."""
        self._refill(self._clock.now())
        self.share = min(1.0, max(1e-6, share))
        self._level = min(self._level, self._capacity())
        if self._peak is None and self.share < 1.0:
            self._seed()

    def observe_budget(
        self, limit: float, remaining: float, reset: float, resolution: float = 0.001
    ) -> None:
        """An answer said ``remaining`` (a whole number) of ``limit`` requests are
        left and the budget is full again in ``reset`` seconds (given to within
        ``resolution``). A budget refilling at a steady rate (a token bucket, as
        OpenAI's headers describe theirs) refills at between
        ``(limit - remaining - 1) / reset`` and ``(limit - remaining) / reset``
        requests per second; the answers of the last few seconds narrow it down.
        Answers that contradict each other (the budget changed) start afresh."""
        used = limit - remaining
        if not (used > 0 and reset > 0 and math.isfinite(used) and math.isfinite(reset)):
            return
        resolution = max(0.0, resolution)
        low = max(0.0, used - 1.0) / (reset + resolution)
        high = used / (reset - resolution) if reset > resolution else math.inf
        now = self._clock.now()
        bounds = self.bounds()
        if bounds is not None and (low > bounds[1] or high < bounds[0]):
            self._low.clear()
            self._high.clear()
        self._low.add(now, low)
        if math.isfinite(high):
            self._high.add(now, high)
        if self._peak is None and self.share < 1.0:
            self._seed()

    def _seed(self) -> None:
        """A fleet's process that has not been throttled yet sends its share of the
        most the headers say the upstream refills at, instead of sending unpaced:
        the fleet's processes start together, and unpaced they would together
        spend the upstream's burst many times over and all meet a 429. The first
        429 cuts the rate as usual (and teaches the whole fleet)."""
        bounds = self.bounds()
        if bounds is None or not math.isfinite(bounds[1]):
            return
        self._refill(self._clock.now())
        self._peak, self._k, self._c = max(self.floor, bounds[1]), 0.0, 0.0
        self._pushed = 0.0
        self._seeded = True
        self._level = min(1.0, self._capacity())

    def bounds(self) -> tuple[float, float] | None:
        """The interval the upstream's refill rate lies in, by its recent
        rate-limit headers (``None``: they said nothing that bounds it)."""
        horizon = self._clock.now() - _BOUNDS_HORIZON
        low, high = self._low.value(horizon), self._high.value(horizon)
        if high is None:
            return None
        return (low or 0.0, high)

    def measured(self) -> float:
        """Requests per second sent over the last ``window`` seconds (over the
        time since the first of them, when sending began less than that ago)."""
        return _rate(self._sends, self._clock.now(), self.window)

    def on_success(self) -> None:
        """A request was answered (not throttled): what the upstream accepts."""
        now = self._clock.now()
        self._accepts.append(now)
        if len(self._accepts) > 4096:
            _trim(self._accepts, now - self.window)

    def on_throttle(self, sent_at: float, hold: float | None = None) -> None:
        """A request sent at ``sent_at`` (clock time) was answered 429, asking for
        ``hold`` seconds of quiet (its ``Retry-After``)."""
        if sent_at < self._settled_at:
            # sent before the last cut or while the upstream's own bucket was still
            # draining from what came before it: that cut already answered it
            return
        now = self._clock.now()
        self._refill(now)
        current = self.rate()
        # measure since the last pause or lull ended at most: quiet is not a rate,
        # and the burst an upstream banks during it is not either (over a few
        # seconds that burst is a small share of what was accepted)
        _trim(self._sends, now - self.window)
        since = max(self._settled_at, _busy_since(self._sends, self.window))
        window = min(self.window, max(_MIN_SPAN, now - since))
        # (drops sends older than the window; in the fleet's units: ours / our share)
        sent = _rate(self._sends, now, window) / self.share
        if len(self._sends) < _FEW_SENDS and current is not None:
            peak = current  # a 429 after a lull: too few sends to measure, keep the pace
        else:
            # the rate requests really went out at, and what the upstream accepted
            # meanwhile (it only exceeds the limit by the upstream's burst)
            peak = sent
            accepted = _rate(self._accepts, now, window) / self.share
            if len(self._accepts) >= _FEW_SENDS:
                peak = min(peak, accepted)
            if current is not None:
                peak = min(peak, current)
        bounds = self.bounds()
        if bounds is not None:
            peak = min(max(peak, bounds[0]), bounds[1])
        previous, self._peak = self._peak, max(self.floor, peak)
        peak = self._peak
        drop = peak * (1.0 - self.beta)
        if bounds is not None:
            drop = min(drop, peak - min(peak, bounds[0]))  # it refills at least that fast
        k_growth = (drop / self.growth) ** (1.0 / 3.0)
        if previous is not None and abs(peak - previous) <= _SAME_PEAK * previous:
            # the limit is where the last 429 said: back at it only after about
            # cycle_requests requests, so 429s stay rare
            k = max(k_growth, self.cycle_requests / peak, self.min_cycle)
        else:
            k = max(k_growth, _PROBE_CYCLE)  # a new estimate: check it soon
        self._k = min(self.max_cycle, k)
        self._c = drop / self._k**3
        self._pushed = 0.0
        self._settled_at = now + max(_SETTLE, hold or 0.0)
        self._level = min(self._level, self._capacity())
        self.cuts += 1
        self.cut_at = now
        self._seeded = False

    def curve(self) -> tuple[float, float, float] | None:
        """The last cut's ``(peak, k, c)``: the curve :meth:`rate` follows since it
        (``None`` before the first cut); what a fleet's processes share."""
        if self._peak is None:
            return None
        return (self._peak, self._k, self._c)

    def adopt(self, peak: float, k: float, c: float, age: float = 0.0) -> None:
        """Follow the curve of a cut another process made ``age`` seconds ago (its
        :meth:`curve`): processes sharing one limit learn it together, so one
        429 teaches all of them and none probes from scratch."""
        values = (peak, k, c, age)
        if not all(math.isfinite(v) for v in values) or peak <= 0 or k <= 0 or c < 0:
            return
        now = self._clock.now()
        self._refill(now)
        self._peak, self._k, self._c = max(self.floor, peak), k, c
        self._pushed = 0.0
        self._seeded = False
        # 429s for what was sent before: the cut that taught this answered them
        self._settled_at = max(self._settled_at, now + _SETTLE)
        self._level = min(self._level, self._capacity())
        self.cut_at = now - max(0.0, age)

    # -- pacing --------------------------------------------------------------------

    def _sending(self) -> float | None:
        """Requests per second this process may send: its share of :meth:`rate`."""
        rate = self.rate()
        return None if rate is None else rate * self.share

    def turns_within(self, horizon: float) -> float | None:
        """Turns this process's bucket gives within ``horizon`` seconds (``None``:
        nothing is paced)."""
        self._refill(self._clock.now())
        rate = self._sending()
        return None if rate is None else self._level + rate * horizon

    def _capacity(self) -> float:
        rate = self._sending()
        return 1.0 if rate is None else max(1.0, rate * self.burst)

    def _refill(self, now: float) -> None:
        elapsed = now - self._at
        if elapsed <= 0:
            return
        rate = self._sending()
        if rate is not None:
            capacity = max(1.0, rate * self.burst)
            if self._level < capacity - 1e-9:
                # the bucket was not full: requests are using the rate, so probe on
                self._pushed += min(elapsed, (capacity - self._level) / rate)
            self._level = min(capacity, self._level + elapsed * rate)
        self._at = now

    def take(self, *, keep: float = 0.0) -> bool:
        """Take one request's turn if ``keep`` (a share of what the bucket banks
        beyond one turn) remains after it."""
        now = self._clock.now()
        self._refill(now)
        if self._peak is not None:
            if self._level - 1.0 < keep * (self._capacity() - 1.0) - 1e-9:
                return False
            self._level -= 1.0
        self._sends.append(now)
        if len(self._sends) > 4096:
            _trim(self._sends, now - self.window)
        return True

    def give_back(self) -> None:
        """A turn taken by :meth:`take` was not used after all."""
        if self._peak is not None:
            self._level = min(self._capacity(), self._level + 1.0)
        if self._sends:
            self._sends.pop()

    def would_take(self, *, keep: float = 0.0) -> bool:
        """Whether :meth:`take` would succeed now."""
        self._refill(self._clock.now())
        return self._peak is None or self._level - 1.0 >= keep * (self._capacity() - 1.0) - 1e-9

    def time_until(self, *, keep: float = 0.0) -> float:
        """Seconds until :meth:`take` (keeping ``keep``) can succeed."""
        self._refill(self._clock.now())
        rate = self._sending()
        if rate is None:
            return 0.0
        missing = 1.0 + keep * (self._capacity() - 1.0) - self._level
        return max(0.0, missing / rate)
