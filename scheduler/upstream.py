"""One upstream's health: breaker, recent errors and latency, pauses, rate limits.

Every attempt bound to an upstream, interactive or durable, passes one seam::

    admit(gated=, cost=) ──> Permit ── the attempt runs ──> permit.finish(outcome, latency)
                        └──> Denied(reason, retry_in): ask again in retry_in seconds

Behind it live the breaker (with live trials while open), the learned send
rate (:class:`~scheduler.limits.LearnedRate`, from 429s) and the configured
RPM/TPM buckets (one pacer per upstream, interactive and batch alike, batch
leaving ``interactive_reserve`` of it), the ``Retry-After`` pause (batch),
rate-limit headers, the probe, the error-rate and latency windows (batch),
the SRE adaptive throttle and the retry budget (interactive).
:meth:`~UpstreamHealth.blocked` answers the gate's cheaper question (may
gated work start now?) without taking anything.

Configured per upstream with :class:`Upstream`; unknown upstream names get the
defaults, which suit an LLM API.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import KW_ONLY, dataclass, field

from ._validate import check_int, check_number
from .breaker import BreakerConfig, BreakerState, CircuitBreaker

# what ``scheduler.upstream`` held before outcome classification moved to
# ``scheduler.classify``: still importable from here
from .classify import (  # noqa: F401
    Classified,
    FailureKind,
    RateLimitInfo,
    RetryableError,
    classify,
    httpx_event_hooks,
    parse_duration,
    parse_rate_limit_headers,
    parse_retry_after,
)
from .clock import Clock
from .limits import AdaptiveThrottle, LearnedRate, TokenBucket
from .metrics import UpstreamStats, _frozen
from .retry import RetryBudget

__all__ = ["PACING", "Denied", "Permit", "Upstream", "UpstreamHealth"]

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
        rpm, tpm: request and token rate limits (per minute) kept client-side;
            without them the request rate is learned from the upstream's 429s.
        burst: seconds of the ``rpm`` / ``tpm`` limits that may be banked and
            sent at once (providers enforce per second, not per minute).
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
    burst: float = 1.0
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
        check_number("burst", self.burst, minimum=0, exclusive=True)
        check_number("interactive_reserve", self.interactive_reserve, minimum=0, maximum=0.95)
        check_number("retry_ratio", self.retry_ratio, minimum=0)
        if self.throttle_k is not None:
            check_number("throttle_k", self.throttle_k, minimum=1)
        if self.probe_url is not None and not self.probe_url.startswith(("http://", "https://")):
            raise TypeError(f"probe_url must be an http(s) URL, got {self.probe_url!r}")
        check_number("probe_interval", self.probe_interval, minimum=0, exclusive=True)
        check_number("probe_timeout", self.probe_timeout, minimum=0, exclusive=True)


#: denials an attempt waits out in place (holding its seat): pacing and a short
#: Retry-After pause, not health
PACING = frozenset({"rate", "rpm", "tpm", "rate_limit", "retry_after"})
#: longest pacing wait an attempt sits out in place (longer: it gives up its seat)
MAX_PACING_WAIT = 5.0
#: most pacing waits of one attempt
_MAX_PACING_WAITS = 10_000


@dataclass(frozen=True, slots=True)
class Denied:
    """Why an attempt may not go now, and when to ask again (``None``: unknown)."""

    reason: str
    retry_in: float | None


class Permit:
    """One admitted attempt: report it exactly once with :meth:`finish` or :meth:`cancel`."""

    __slots__ = ("_done", "health", "sent_at", "trial")

    def __init__(self, health: UpstreamHealth, *, trial: bool, sent_at: float) -> None:
        self.health = health
        self.trial = trial  # a breaker trial (live while open, or half-open)
        self.sent_at = sent_at
        self._done = False

    def finish(self, outcome: Classified, latency: float) -> None:
        """The attempt ended with ``outcome`` (classified once, by the caller)."""
        if not self._done:
            self._done = True
            self.health.record(outcome, latency, permit=self)
            if self.trial:
                self.health._trial_reported()

    def cancel(self) -> None:
        """The attempt ended without a verdict (cancelled, or never sent)."""
        if not self._done:
            self._done = True
            self.health.cancelled(permit=self)
            if self.trial:
                self.health._trial_reported()


class UpstreamHealth:
    """The live health of one upstream (see the module docstring)."""

    def __init__(
        self,
        config: Upstream,
        clock: Clock,
        on_unblock: Callable[[], None] | None = None,
        *,
        on_news: Callable[[], None] | None = None,
    ) -> None:
        self.config = config
        self.name = config.name
        self._clock = clock
        self._on_unblock = on_unblock
        self._on_news = on_news  # a pause or a breaker change other processes should hear
        self.outages = 0  # times the breaker opened: a real outage (slow start after it)
        self.breaker = CircuitBreaker(
            config.breaker, clock=clock, name=config.name, on_change=self._on_breaker_change
        )
        self.retry_budget = RetryBudget(clock=clock, ratio=config.retry_ratio)
        self._throttle = (
            AdaptiveThrottle(clock, k=config.throttle_k) if config.throttle_k is not None else None
        )
        self._samples: deque[tuple[float, bool, float]] = deque(maxlen=_SAMPLES)
        self._paused_until = -math.inf
        self.own_paused_until = -math.inf  # the latest pause this process asked for
        self._limits = RateLimitInfo()
        self._limits_at = -math.inf
        self.pacer = LearnedRate(clock)
        self.live_waiting = 0  # live calls waiting for a paced turn: batch lets them first
        self._rpm = self._bucket(config.rpm)
        self._tpm = self._bucket(config.tpm)
        self.probe_ok = True
        self.requests = 0
        self.successes = 0
        self.failures: dict[str, int] = {}
        self.rejected_locally = 0
        self._window_cache: tuple[float, tuple[int, int, float | None]] | None = None
        # the fleet (processes sharing a backlog): see scheduler.fleet
        self.wanted_at = -math.inf  # when work last asked for this upstream
        self.pacing_waiters = 0  # gated attempts holding a seat while they wait for a turn
        self._fleet_breaker_until = -math.inf  # another process's breaker is open
        self.fleet_probe_until = -math.inf  # another process runs the probe until then
        self.fleet_probe_failed_until = -math.inf  # ... and its probe failed
        self.trials_in_flight = 0  # breaker trials sent and not yet reported
        self._trial_waiters: set[asyncio.Future[None]] = set()

    def _bucket(self, per_minute: float | None) -> TokenBucket | None:
        if not per_minute:
            return None
        return TokenBucket(*self._bucket_shape(per_minute, 1.0), self._clock)

    def _bucket_shape(self, per_minute: float, share: float) -> tuple[float, float]:
        """(rate per second, capacity) of ``share`` of a per-minute limit."""
        rate = per_minute / 60 * share
        return rate, max(1.0, rate * self.config.burst)

    # -- the seam: admit, then finish ------------------------------------------------

    def admit(self, *, gated: bool, cost: float = 0.0) -> Permit | Denied:
        """May one attempt go now? A :class:`Permit` (report it), or why not.

        Gated (batch) attempts wait on every signal of :meth:`blocked` and
        leave ``interactive_reserve`` of the rate limits; they take a breaker
        trial only once the breaker is half-open. Interactive (live) attempts
        may be the breaker's trials even while it is open, and are refused by
        the SRE throttle while the upstream rejects many requests.
        """
        breaker = self.breaker
        state = breaker.state
        now = self._clock.now()
        self.wanted_at = now
        if gated:
            reason = self.blocked(cost)
            if reason is not None:
                return Denied(reason, self._retry_in(reason))
        elif now < self._fleet_breaker_until:
            # another process's breaker is open: its trials, not ours, judge the upstream
            return Denied("breaker_open", self._fleet_breaker_until - now)
        elif (
            state is BreakerState.CLOSED
            and self._throttle is not None
            and self._throttle.should_reject()
        ):
            self.rejected_locally += 1
            return Denied("throttled", None)
        trial = state is not BreakerState.CLOSED
        if trial and not breaker.allow(live=not gated):
            return Denied("breaker_open", breaker.next_trial_in(live=not gated))
        denied = self._take_rate(gated, cost)
        if denied is not None:
            if trial:
                breaker.release()
            return denied
        if trial:
            self.trials_in_flight += 1
        return Permit(self, trial=trial, sent_at=self._clock.now())

    async def wait_for_trials(self, timeout: float) -> None:
        """Wait until a breaker trial in flight reports, the breaker changes state,
        or ``timeout`` seconds pass (then ask :meth:`admit` again): a live call
        refused while a trial is out may go once the trial has answered, within a
        round trip, instead of being refused for the next paced trial turn."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def wake() -> None:
            if not waiter.done():
                waiter.set_result(None)

        self._trial_waiters.add(waiter)
        timer = self._clock.call_at(self._clock.now() + max(0.0, timeout), wake)
        try:
            await waiter
        finally:
            timer.cancel()
            self._trial_waiters.discard(waiter)

    def _trial_reported(self) -> None:
        """A trial's permit was finished or cancelled: wake the calls waiting on it."""
        self.trials_in_flight = max(0, self.trials_in_flight - 1)
        self._wake_trial_waiters()

    def _wake_trial_waiters(self) -> None:
        waiters, self._trial_waiters = self._trial_waiters, set()
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def paced_permit(
        self, *, cost: float = 0.0, give_up: Callable[[], bool] = lambda: False
    ) -> Permit | Denied:
        """A gated attempt's permit, taken once it holds a seat: pacing (``PACING``
        reasons, up to ``MAX_PACING_WAIT`` s at a time) is waited out in place,
        unless ``give_up()`` says so; any other denial is returned at once."""
        got = self.admit(gated=True, cost=cost)
        self.pacing_waiters += 1
        try:
            for _ in range(_MAX_PACING_WAITS):
                if isinstance(got, Permit):
                    return got
                wait = got.retry_in
                if wait is None or got.reason not in PACING or wait > MAX_PACING_WAIT or give_up():
                    return got
                await self._clock.sleep(max(wait, 1e-3))
                got = self.admit(gated=True, cost=cost)
            return got
        finally:
            self.pacing_waiters -= 1

    def pacing_room(self, horizon: float = 0.1) -> int | None:
        """How many more gated attempts are worth holding seats for now: the turns
        this process's paced slice (its learned rate and its ``rpm``) gives within
        ``horizon`` seconds, less the attempts already waiting for one (``None``:
        no limit). Only with a fleet share below one: the lane's seats are the
        fleet's, and an attempt that holds a seat while it waits for this
        process's next turn keeps another process from using its own."""
        if self.share >= 1.0:
            return None
        turns: float | None = self.pacer.turns_within(horizon)
        if self._rpm is not None:
            rpm = self._rpm.turns_within(horizon)
            turns = rpm if turns is None else min(turns, rpm)
        if turns is None:
            return None
        return max(0, math.floor(turns + 1e-9) - self.pacing_waiters)

    def next_turn_in(self) -> float:
        """Seconds until this process's paced slice gives its next turn (0: now)."""
        wait = self.pacer.time_until()
        if self._rpm is not None:
            wait = max(wait, self._rpm.time_until(1.0))
        return wait

    def _take_rate(self, gated: bool, cost: float) -> Denied | None:
        """Take one request (and ``cost`` tokens) from the pacers, or say when to ask."""
        reserve = self.config.interactive_reserve if gated else 0.0
        for reason in ("rpm", "tpm") if cost else ("rpm",):
            wait = self._bucket_wait(reason, cost, gated=gated)
            if wait is not None:
                return Denied(reason, wait)
        if (gated and self._live_first()) or not self.pacer.take(keep=reserve):
            return Denied("rate", self.pacer.time_until(keep=reserve))
        for bucket, need in ((self._rpm, 1.0), (self._tpm, cost)):
            if bucket is not None and need:
                bucket.draw(need)  # a job costlier than the bucket runs into debt
        return None

    def _live_first(self) -> bool:
        """Live calls wait for a paced turn: the next one is theirs, not batch's."""
        return self.live_waiting > 0 and self.pacer.rate() is not None

    def _bucket_wait(self, reason: str, cost: float, *, gated: bool) -> float | None:
        """Seconds until the ``rpm`` / ``tpm`` bucket lets this request go (``None``:
        now). Batch (``gated``) leaves ``interactive_reserve`` of what it banks
        beyond one request, and starts a job once the token bucket is above its
        reserve, drawing its whole cost (into debt if need be); a live call
        needs its cost, or a full bucket if it costs more."""
        bucket = self._rpm if reason == "rpm" else self._tpm
        if bucket is None:
            return None
        reserve = self.config.interactive_reserve
        if reason == "rpm":
            need, keep = 1.0, (reserve if gated else 0.0) * (bucket.capacity - 1.0)
        elif gated:
            need, keep = 0.0, reserve * bucket.capacity
        else:
            need, keep = min(cost, bucket.capacity), 0.0
        if bucket.level - need >= keep - 1e-9:
            return None
        return max(0.001, bucket.time_until(need, keep=keep))

    def _retry_in(self, reason: str) -> float | None:
        """Seconds until what ``reason`` names may let gated work go."""
        now = self._clock.now()
        reserve = self.config.interactive_reserve
        wait: float | None
        if reason == "rate":
            wait = self.pacer.time_until(keep=reserve)
            if self._live_first():
                wait = max(wait, self.pacer.time_until()) + 1e-3
        elif reason in ("breaker_open", "breaker_trials"):
            wait = self.breaker.next_trial_in()
            if now < self._fleet_breaker_until:
                wait = max(wait or 0.0, self._fleet_breaker_until - now)
        elif reason == "retry_after":
            wait = self._paused_until - now
        elif reason == "rate_limit":
            wait = self._headroom_wait(now)
        elif reason in ("rpm", "tpm"):
            wait = self._bucket_wait(reason, 0.0, gated=True)
        else:  # probe, error rate, latency: windows slide, probes report
            wait = 1.0
        if wait is None or not math.isfinite(wait):
            return None
        return max(0.001, wait)

    # -- feeding ----------------------------------------------------------------------

    def record(self, outcome: Classified, latency: float, *, permit: Permit | None = None) -> None:
        """One finished request to this upstream (admitted by :meth:`admit`)."""
        was_blocked = self._on_unblock is not None and self.blocked() is not None
        now = self._clock.now()
        trial = permit is not None and permit.trial
        self.requests += 1
        throttled = outcome.kind is FailureKind.RATE_LIMITED
        if outcome.ok or throttled:
            # a 429 is an answer: the upstream is up and asks us to slow down,
            # which the pacer and the pause handle; it says nothing to the breaker
            if outcome.ok:
                self.successes += 1
            self.breaker.record_success(trial=trial)
        elif outcome.upstream_fault:
            self.breaker.record_failure(outcome.retry_after, trial=trial)
        else:
            self.breaker.release()
        if not outcome.ok:
            kind = outcome.kind.value if outcome.kind else "other"
            self.failures[kind] = self.failures.get(kind, 0) + 1
        if throttled:
            self.pacer.on_throttle(
                permit.sent_at if permit is not None else now, outcome.retry_after
            )
        elif outcome.ok:
            self.pacer.on_success()
        if outcome.ok or outcome.upstream_fault:
            self._samples.append((now, outcome.upstream_fault and not throttled, latency))
        if self._throttle is not None:
            self._throttle.record(accepted=not outcome.upstream_fault)
        if outcome.retry_after is not None and outcome.kind in (
            FailureKind.RATE_LIMITED,
            FailureKind.SERVER_ERROR,
        ):
            self.pause(outcome.retry_after)
        if was_blocked and self._on_unblock is not None and self.blocked() is None:
            self._on_unblock()

    def _on_breaker_change(self, old: BreakerState, new: BreakerState) -> None:
        self._wake_trial_waiters()
        if self._on_news is not None:
            self._on_news()
        if new is BreakerState.OPEN and old is BreakerState.CLOSED:
            self.outages += 1
        if new is BreakerState.CLOSED:
            # the trials proved it healthy: the outage's failures no longer count, in
            # the windows nor in the throttle (which would go on refusing live calls)
            self._samples.clear()
            self._window_cache = None
            if self._throttle is not None:
                self._throttle.reset()

    def cancelled(self, *, permit: Permit | None = None) -> None:
        """A request admitted by :meth:`admit` ended without a verdict."""
        self.breaker.release()
        if permit is not None:
            self.pacer.give_back()

    def pause(self, seconds: float, *, from_fleet: bool = False) -> None:
        """Hold gated work for this upstream for ``seconds`` (a Retry-After);
        ``from_fleet``: another process's pause, held here (not news to tell)."""
        until = self._clock.now() + seconds
        if not from_fleet:
            self.own_paused_until = max(self.own_paused_until, until)
        if until > self._paused_until:
            self._paused_until = until
            if self._on_news is not None and not from_fleet:
                self._on_news()

    @property
    def paused_until(self) -> float:
        """Clock time the current ``Retry-After`` pause ends (past: none)."""
        return self._paused_until

    def hold_for_fleet_breaker(self, seconds: float) -> None:
        """Another process's breaker for this upstream is open for ``seconds`` more:
        gated work waits and live calls are refused (or wait) as if ours were
        (the caller tells the gate's listeners)."""
        self._fleet_breaker_until = self._clock.now() + max(0.0, seconds)

    def probe_elsewhere(self) -> bool:
        """Another process of the fleet runs this upstream's probe (it shares what
        the probe says): this one does not."""
        return self._clock.now() < self.fleet_probe_until

    @property
    def fleet_breaker_until(self) -> float:
        """Clock time another process's open breaker holds this upstream until."""
        return self._fleet_breaker_until

    @property
    def share(self) -> float:
        """This process's share (0-1] of the fleet's ``rpm`` / ``tpm`` and learned rate."""
        return self.pacer.share

    def set_share(self, share: float) -> None:
        """Use ``share`` (0-1] of the configured ``rpm`` / ``tpm`` and of the learned
        rate: the fleet's processes split a limit that belongs to the API key."""
        share = min(1.0, max(1e-6, share))
        if share == self.share:
            return
        self.pacer.set_share(share)
        for bucket, per_minute in ((self._rpm, self.config.rpm), (self._tpm, self.config.tpm)):
            if bucket is not None and per_minute:
                bucket.set_rate(*self._bucket_shape(per_minute, share))

    def observe_headers(self, headers: Mapping[str, str]) -> None:
        """Adopt what ``x-ratelimit-*`` headers say about the remaining budget."""
        info = parse_rate_limit_headers(headers)
        if info.empty:
            return
        self._limits, self._limits_at = info, self._clock.now()
        if (
            info.limit_requests is not None
            and info.remaining_requests is not None
            and info.reset_requests is not None
        ):
            self.pacer.observe_budget(
                info.limit_requests,
                info.remaining_requests,
                info.reset_requests,
                info.reset_requests_resolution or 0.0,
            )
        for bucket, remaining, limit in (
            (self._rpm, info.remaining_requests, info.limit_requests),
            (self._tpm, info.remaining_tokens, info.limit_tokens),
        ):
            if bucket is not None and remaining is not None:
                # the upstream's budget and ours may differ in size (a minute's
                # worth against our burst): adopt the share it says is left
                share = remaining / limit if limit else None
                level = remaining if share is None else share * bucket.capacity
                bucket.set_level(min(bucket.level, level))

    # -- deciding ---------------------------------------------------------------------

    def blocked(self, cost: float = 0.0) -> str | None:
        """Why gated work may not start now, or ``None`` when it may."""
        now = self._clock.now()
        self.wanted_at = now
        if not self.breaker.would_allow():
            return "breaker_open" if self.breaker.state is BreakerState.OPEN else "breaker_trials"
        if now < self._fleet_breaker_until:
            return "breaker_open"
        if now < self._paused_until:
            return "retry_after"
        if self._headroom_exhausted(now):
            return "rate_limit"
        reserve = self.config.interactive_reserve
        for bucket_reason in ("rpm", "tpm"):
            if self._bucket_wait(bucket_reason, cost, gated=True) is not None:
                return bucket_reason
        if self._live_first() or not self.pacer.would_take(keep=reserve):
            return "rate"
        if not self.probe_ok or now < self.fleet_probe_failed_until:
            return "probe"
        if self.breaker.state is BreakerState.HALF_OPEN:
            # its trials judge the upstream now; the window still holds the outage
            # (it is cleared when they close the breaker) and would starve them
            return None
        failed, total, p95 = self._window(now)
        limit = self.config.max_error_rate
        if limit is not None and total >= self.config.min_volume and failed / total > limit:
            return "error_rate"
        high = self.config.max_latency_p95
        if high is not None and p95 is not None and total >= self.config.min_volume and p95 > high:
            return "latency"
        return None

    def next_change(self, reason: str | None = None) -> float:
        """Seconds until :meth:`blocked` may change on its own (time passing), for
        the ``reason`` it gave (by default: what blocks it now); at most 1 s."""
        if reason is None:
            reason = self.blocked()
            if reason is None:
                return 1.0
        wait = self._retry_in(reason)
        return 1.0 if wait is None else min(1.0, wait)

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
            learned_rate=self.pacer.rate(),
            sent_rate=self.pacer.measured(),
            share=self.share,
        )
