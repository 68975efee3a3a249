"""One upstream's health: breaker, recent errors and latency, pauses, rate limits.

An :class:`UpstreamHealth` is fed every outcome of every job bound to its
upstream and answers two questions:

- :meth:`~UpstreamHealth.blocked` — may gated (batch) work start now? ``None``
  means yes; otherwise a short reason, and :meth:`~UpstreamHealth.next_change`
  says when to ask again.
- :meth:`~UpstreamHealth.admit_interactive` — may an interactive call go now?
  It refuses while the breaker is open and sheds a share of calls by the SRE
  adaptive throttle while the upstream rejects many requests.

Configured per upstream with :class:`Upstream`; unknown upstream names get the
defaults, which suit an LLM API.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import KW_ONLY, dataclass, field

from ._validate import check_int, check_number
from .breaker import BreakerConfig, BreakerState, CircuitBreaker
from .clock import Clock
from .errors import UpstreamUnavailable
from .limits import AdaptiveThrottle, TokenBucket
from .metrics import UpstreamStats, _frozen
from .retry import RetryBudget
from .upstream import Classified, FailureKind, RateLimitInfo, parse_rate_limit_headers

__all__ = ["Upstream", "UpstreamHealth"]

#: most recent outcomes kept for the error-rate and latency windows
_SAMPLES = 1024
#: seconds the error-rate / latency verdict is reused before it is recomputed
_WINDOW_TTL = 0.05


@dataclass(frozen=True, slots=True)
class Upstream:
    """How Floodgate treats one upstream (an API, a model, a provider).

    Args:
        name: the name jobs use (``upstream="openai"``).
        breaker: circuit-breaker settings (trips within ~20 consecutive failures).
        window: seconds of recent outcomes behind the error-rate and latency signals.
        max_error_rate: batch waits while more than this share of recent
            requests failed (``None``: no such signal), once ``min_volume`` were seen.
        max_latency_p95: batch waits while recent p95 latency exceeds this (seconds).
        rpm, tpm: request and token rate limits (per minute) kept client-side.
        interactive_reserve: share of every rate limit batch work leaves unused
            for interactive work.
        retry_ratio: retries allowed as a share of first attempts (retry budget).
        throttle_k: the SRE adaptive-throttle factor for interactive calls
            (``None``: off).
        probe_url: a URL to GET every ``probe_interval`` s; batch waits while it fails.
        latency_limit: latency (s) above which the adaptive concurrency limit backs off.
    """

    name: str
    _: KW_ONLY
    breaker: BreakerConfig = field(default_factory=BreakerConfig)
    window: float = 30.0
    max_error_rate: float | None = 0.5
    min_volume: int = 10
    max_latency_p95: float | None = None
    rpm: float | None = None
    tpm: float | None = None
    interactive_reserve: float = 0.1
    retry_ratio: float = 0.2
    throttle_k: float | None = 2.0
    probe_url: str | None = None
    probe_interval: float = 5.0
    probe_timeout: float = 2.0
    latency_limit: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise TypeError(f"an upstream needs a non-empty str name, got {self.name!r}")
        if not isinstance(self.breaker, BreakerConfig):
            raise TypeError(f"breaker must be a BreakerConfig, got {type(self.breaker).__name__}")
        check_number("window", self.window, minimum=0, exclusive=True)
        if self.max_error_rate is not None:
            check_number("max_error_rate", self.max_error_rate, minimum=0, maximum=1)
        check_int("min_volume", self.min_volume, minimum=1)
        for what in ("max_latency_p95", "rpm", "tpm", "latency_limit"):
            value = getattr(self, what)
            if value is not None:
                check_number(what, value, minimum=0, exclusive=True)
        check_number("interactive_reserve", self.interactive_reserve, minimum=0, maximum=0.95)
        check_number("retry_ratio", self.retry_ratio, minimum=0)
        if self.throttle_k is not None:
            check_number("throttle_k", self.throttle_k, minimum=1)
        if self.probe_url is not None and not self.probe_url.startswith(("http://", "https://")):
            raise TypeError(f"probe_url must be an http(s) URL, got {self.probe_url!r}")
        check_number("probe_interval", self.probe_interval, minimum=0, exclusive=True)
        check_number("probe_timeout", self.probe_timeout, minimum=0, exclusive=True)


class UpstreamHealth:
    """The live health of one upstream (see the module docstring)."""

    def __init__(self, config: Upstream, clock: Clock) -> None:
        self.config = config
        self.name = config.name
        self._clock = clock
        self.breaker = CircuitBreaker(
            config.breaker, clock=clock, name=config.name, on_change=self._on_breaker_change
        )
        self.retry_budget = RetryBudget(clock=clock, ratio=config.retry_ratio)
        self._throttle = (
            AdaptiveThrottle(clock, k=config.throttle_k) if config.throttle_k is not None else None
        )
        self._samples: deque[tuple[float, bool, float]] = deque(maxlen=_SAMPLES)
        self._paused_until = -math.inf
        self._limits = RateLimitInfo()
        self._limits_at = -math.inf
        self._rpm = TokenBucket(config.rpm / 60, config.rpm, clock) if config.rpm else None
        self._tpm = TokenBucket(config.tpm / 60, config.tpm, clock) if config.tpm else None
        self.probe_ok = True
        self.requests = 0
        self.successes = 0
        self.failures: dict[str, int] = {}
        self.rejected_locally = 0
        self._window_cache: tuple[float, tuple[int, int, float | None]] | None = None

    # -- feeding ----------------------------------------------------------------------

    def record(self, outcome: Classified, latency: float) -> None:
        """One finished request to this upstream (its breaker slot was taken)."""
        now = self._clock.now()
        self.requests += 1
        if outcome.ok:
            self.successes += 1
            self.breaker.record_success()
        else:
            kind = outcome.kind.value if outcome.kind else "other"
            self.failures[kind] = self.failures.get(kind, 0) + 1
            if outcome.upstream_fault:
                self.breaker.record_failure(outcome.retry_after)
            else:
                self.breaker.release()
        if outcome.ok or outcome.upstream_fault:
            self._samples.append((now, outcome.upstream_fault, latency))
        if self._throttle is not None:
            self._throttle.record(accepted=not outcome.upstream_fault)
        if outcome.retry_after is not None and outcome.kind in (
            FailureKind.RATE_LIMITED,
            FailureKind.SERVER_ERROR,
        ):
            self.pause(outcome.retry_after)

    def _on_breaker_change(self, old: BreakerState, new: BreakerState) -> None:
        if new is BreakerState.CLOSED:
            # the trials proved it healthy: the outage's failures no longer count
            self._samples.clear()
            self._window_cache = None

    def cancelled(self) -> None:
        """A request admitted by the breaker ended without a verdict."""
        self.breaker.release()

    def pause(self, seconds: float) -> None:
        """Hold gated work for this upstream for ``seconds`` (a Retry-After)."""
        self._paused_until = max(self._paused_until, self._clock.now() + seconds)

    def observe_headers(self, headers: Mapping[str, str]) -> None:
        """Adopt what ``x-ratelimit-*`` headers say about the remaining budget."""
        info = parse_rate_limit_headers(headers)
        if info.empty:
            return
        self._limits, self._limits_at = info, self._clock.now()
        for bucket, remaining, limit in (
            (self._rpm, info.remaining_requests, info.limit_requests),
            (self._tpm, info.remaining_tokens, info.limit_tokens),
        ):
            if bucket is not None and remaining is not None:
                bucket.set_level(remaining, capacity=limit)

    # -- deciding ---------------------------------------------------------------------

    def blocked(self, cost: float = 0.0) -> str | None:
        """Why gated work may not start now, or ``None`` when it may."""
        now = self._clock.now()
        if not self.breaker.would_allow():
            return "breaker_open" if self.breaker.state is BreakerState.OPEN else "breaker_trials"
        if now < self._paused_until:
            return "retry_after"
        if self._headroom_exhausted(now):
            return "rate_limit"
        reserve = self.config.interactive_reserve
        if self._rpm is not None and self._rpm.level - 1 < reserve * self._rpm.capacity:
            return "rpm"
        if self._tpm is not None and self._tpm.level - cost < reserve * self._tpm.capacity:
            return "tpm"
        if not self.probe_ok:
            return "probe"
        failed, total, p95 = self._window(now)
        limit = self.config.max_error_rate
        if limit is not None and total >= self.config.min_volume and failed / total > limit:
            return "error_rate"
        high = self.config.max_latency_p95
        if high is not None and p95 is not None and total >= self.config.min_volume and p95 > high:
            return "latency"
        return None

    def next_change(self) -> float:
        """Seconds until :meth:`blocked` may change on its own (time passing)."""
        now = self._clock.now()
        waits = [1.0]  # windows slide and probes report: look again within a second
        breaker_wait = self.breaker.retry_after()
        if breaker_wait is not None:
            waits.append(breaker_wait)
        if now < self._paused_until:
            waits.append(self._paused_until - now)
        headroom = self._headroom_wait(now)
        if headroom > 0:
            waits.append(headroom)
        reserve = self.config.interactive_reserve
        for bucket, need in ((self._rpm, 1.0), (self._tpm, 0.0)):
            if bucket is not None:
                refill = bucket.time_until(need, keep=reserve * bucket.capacity)
                if 0 < refill < math.inf:
                    waits.append(refill)
        return max(0.001, min(waits))

    def _headroom_exhausted(self, now: float) -> bool:
        return self._headroom_wait(now) > 0

    def _headroom_wait(self, now: float) -> float:
        """Seconds until the request budget the headers reported rises above the
        interactive reserve, assuming it refills linearly until its reset."""
        info = self._limits
        remaining, limit, reset = info.remaining_requests, info.limit_requests, info.reset_requests
        if remaining is None or limit is None or not reset or limit <= 0:
            return 0.0
        elapsed = now - self._limits_at
        if elapsed >= reset:
            return 0.0
        reserve = self.config.interactive_reserve * limit
        rate = (limit - remaining) / reset  # refill per second
        estimate = remaining + rate * elapsed
        if estimate > reserve:
            return 0.0
        return (reserve - estimate) / rate + 1e-3 if rate > 0 else reset - elapsed

    def _window(self, now: float) -> tuple[int, int, float | None]:
        """(failed, total, p95 latency) over the recent window; recomputed at most
        every ``_WINDOW_TTL`` seconds, since the gate asks on every dispatch."""
        cached = self._window_cache
        if cached is not None and now - cached[0] < _WINDOW_TTL:
            return cached[1]
        result = self._compute_window(now)
        self._window_cache = (now, result)
        return result

    def _compute_window(self, now: float) -> tuple[int, int, float | None]:
        horizon = now - self.config.window
        recent = [(failed, latency) for at, failed, latency in self._samples if at >= horizon]
        failed = sum(1 for f, _ in recent if f)
        latencies = sorted(latency for f, latency in recent if not f)
        p95 = latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))] if latencies else None
        return failed, len(recent), p95

    def admit_interactive(self, cost: float = 0.0) -> None:
        """Raise :class:`UpstreamUnavailable` if an interactive call should not go now.

        Only an *open* breaker refuses live calls: while it is half-open they go
        (few, bounded by their lane) and count as trials; batch work waits for
        the trial slots instead.
        """
        if self.breaker.state is BreakerState.OPEN:
            raise UpstreamUnavailable(self.name, self.breaker.retry_after())
        closed = self.breaker.state is BreakerState.CLOSED  # half-open trials are not throttled
        if closed and self._throttle is not None and self._throttle.should_reject():
            self.rejected_locally += 1
            raise UpstreamUnavailable(self.name, None)
        for bucket, need in ((self._rpm, 1.0), (self._tpm, cost)):
            if bucket is not None and need and not bucket.take(need):
                raise UpstreamUnavailable(self.name, bucket.time_until(need))

    def take_batch_budget(self, cost: float) -> None:
        """Draw a starting gated job's request and tokens from the rate limits.

        The gate let it start, so it draws in full, into debt if the bucket
        holds less than its cost; later gated work waits until that is repaid.
        """
        for bucket, need in ((self._rpm, 1.0), (self._tpm, cost)):
            if bucket is not None and need:
                bucket.draw(need)

    def stats(self, concurrency_limit: int | None = None) -> UpstreamStats:
        now = self._clock.now()
        failed, total, p95 = self._window(now)
        remaining = {
            k: v
            for k, v in (
                ("requests", self._limits.remaining_requests),
                ("tokens", self._limits.remaining_tokens),
            )
            if v is not None
        }
        return UpstreamStats(
            name=self.name,
            breaker=self.breaker.state.value,
            requests=self.requests,
            successes=self.successes,
            failures=_frozen(self.failures),
            error_rate=failed / total if total else None,
            latency_p95=p95,
            paused_for=self._paused_until - now if now < self._paused_until else None,
            concurrency_limit=concurrency_limit,
            rate_limit_remaining=_frozen(remaining),
        )
