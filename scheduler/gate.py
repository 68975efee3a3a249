"""What gated lanes wait on: the operator's switch and every upstream's health.

Gated (batch) work starts only while *every* signal permits::

    operator      gate.pause(reason) / gate.resume()
    breaker       the upstream's circuit breaker is closed (or has a trial slot)
    Retry-After   a 429/503 with Retry-After holds the whole upstream that long
    headroom      x-ratelimit-remaining-* above the interactive reserve;
                  client-side RPM/TPM buckets above the reserve
    probe         the optional active health probe answers
    error rate    recent failure share below Upstream.max_error_rate
    latency       recent p95 below Upstream.max_latency_p95
    pressure      no interactive lane has a queue (checked by the scheduler)

Health is kept per upstream name (:class:`~scheduler.upstream.UpstreamHealth`).
Every change of what blocks an upstream is logged (``gate.closed`` /
``gate.opened``) and counted by reason; listeners (the scheduler) are told
so they start waiting work the moment the gate reopens, including when time
alone reopens it (a pause or a cool-down ending).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import httpx

from .breaker import BreakerState
from .classify import Classified
from .clock import Clock, SystemClock, TimerHandle
from .errors import ConfigError
from .fleet import FleetSync, OperatorPause
from .logs import get_logger
from .task_group import TaskGroup
from .upstream import Upstream, UpstreamHealth

__all__ = ["GateStats", "HealthGate"]

_log = get_logger()

#: a probe loop waits up to this many steps of this many seconds for the fleet's
#: first exchange (which says whether another process probes already)
_FIRST_SYNC_WAITS = 8
_FIRST_SYNC_STEP = 0.125


@dataclass(frozen=True, slots=True)
class GateStats:
    """A snapshot of the gate: open or not, why, and how often it closed, by reason."""

    open: bool
    reason: str | None
    pauses: int
    resumes: int
    closed_by: Mapping[str, int]
    blocked: Mapping[str, str]  # upstream -> what blocks it now


class HealthGate:
    """The switch in front of gated lanes (see the module docstring).

    Args:
        upstreams: per-upstream settings; names not listed get ``Upstream(name)``.
        clock: the clock (the scheduler gives its own when this is left ``None``).
    """

    def __init__(self, upstreams: Sequence[Upstream] = (), *, clock: Clock | None = None) -> None:
        self._configs: dict[str, Upstream] = {}
        for config in upstreams:
            if not isinstance(config, Upstream):
                raise TypeError(f"upstreams must be Upstream objects, got {type(config).__name__}")
            if config.name in self._configs:
                raise ConfigError(f"upstream {config.name!r} is configured twice")
            self._configs[config.name] = config
        self._clock = clock
        self._health: dict[str, UpstreamHealth] = {}
        self._paused_reason: str | None = None
        self._listeners: list[Callable[[], None]] = []
        self._pauses = 0
        self._resumes = 0
        self._closed_by: dict[str, int] = {}
        self._blocked: dict[str, str] = {}
        self._timer: TimerHandle | None = None
        self._timer_at = float("inf")
        self._probes: list[asyncio.Task[None]] = []
        self.fleet: FleetSync | None = None  # set while a scheduler shares a backlog

    # -- the operator's switch ------------------------------------------------------

    @property
    def is_open(self) -> bool:
        """False while the operator has paused the gate."""
        return self._paused_reason is None

    @property
    def reason(self) -> str | None:
        """Why the operator paused the gate, or ``None``."""
        return self._paused_reason

    def pause(self, reason: str = "paused by operator", *, fleet: bool = False) -> None:
        """Close the gate: gated lanes start nothing new until :meth:`resume`.

        With ``fleet=True`` every process sharing the backlog pauses too (within
        about a second); it is stored in the backlog with this process's id."""
        if not isinstance(reason, str) or not reason:
            raise TypeError(f"pause() needs a non-empty str reason, got {reason!r}")
        if fleet:
            sync = self._require_fleet()
            sync.request_operator(OperatorPause(reason, sync.member, self.clock.wall()))
            sync.paused_by_fleet = True  # the fleet's resume ends it here too
        was_open = self._paused_reason is None
        self._paused_reason = reason
        if was_open:
            self._pauses += 1
            self._closed_by["paused"] = self._closed_by.get("paused", 0) + 1
            _log.info("gate.paused", reason=reason)
            self._notify()

    def resume(self, *, fleet: bool = False) -> None:
        """Reopen the gate; waiting gated work starts at once. With ``fleet=True``
        the fleet-wide pause ends too, in every process sharing the backlog."""
        if fleet:
            self._require_fleet().request_operator(None)
        if self._paused_reason is None:
            return
        self._paused_reason = None
        self._resumes += 1
        _log.info("gate.resumed")
        self._notify()

    def _require_fleet(self) -> FleetSync:
        if self.fleet is None:
            raise ConfigError(
                "fleet=True needs a scheduler sharing its backlog with a fleet "
                "(a SQLite file or PostgreSQL, started, with fleet sharing on)"
            )
        return self.fleet

    # -- upstream health --------------------------------------------------------------

    def bind_clock(self, clock: Clock) -> None:
        """Use the scheduler's clock unless one was given (called by the scheduler)."""
        if self._clock is None:
            self._clock = clock

    @property
    def clock(self) -> Clock:
        if self._clock is None:
            self._clock = SystemClock()
        return self._clock

    def upstream(self, name: str) -> UpstreamHealth:
        """The health record of ``name`` (created with its settings on first use)."""
        health = self._health.get(name)
        if health is None:
            config = self._configs.get(name) or Upstream(name)
            health = self._health[name] = UpstreamHealth(
                config, self.clock, self._notify, on_news=self._fleet_news
            )
        return health

    @property
    def upstreams(self) -> Mapping[str, UpstreamHealth]:
        return dict(self._health)

    def blocked(self, upstreams: Iterable[str]) -> str | None:
        """What keeps gated work for ``upstreams`` from starting, or ``None``."""
        if self._paused_reason is not None:
            return "paused"
        for name in upstreams:
            reason = self.upstream(name).blocked()
            self._track(name, reason)
            if reason is not None:
                return f"{name}: {reason}"
        return None

    def _track(self, name: str, reason: str | None) -> None:
        """Log and count every change of what blocks an upstream; time a re-check."""
        before = self._blocked.get(name)
        if reason != before:
            if reason is None:
                del self._blocked[name]
                _log.info("gate.opened", upstream=name, was=before)
            else:
                self._blocked[name] = reason
                self._closed_by[reason] = self._closed_by.get(reason, 0) + 1
                _log.info("gate.closed", upstream=name, reason=reason)
        if reason is not None:
            self._recheck_in(self.upstream(name).next_change(reason))

    def _recheck_in(self, seconds: float) -> None:
        clock = self.clock
        at = clock.now() + seconds
        if self._timer is not None and self._timer_at <= at:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = at
        self._timer = clock.call_at(at, self._on_timer)

    def _on_timer(self) -> None:
        self._timer, self._timer_at = None, float("inf")
        self._notify()

    def note_pressure(self, lane: str, on: bool) -> None:
        """A gated lane starts or stops yielding to queued interactive work
        (counted as ``interactive_pressure``; logged at debug, it flips often)."""
        if on:
            key = "interactive_pressure"
            self._closed_by[key] = self._closed_by.get(key, 0) + 1
        _log.debug("gate.pressure", lane=lane, yielding=on)

    def record(self, upstream: str, outcome: Classified, latency: float) -> None:
        """Feed one finished request's outcome to ``upstream``'s health (listeners
        hear of it when that unblocks the upstream)."""
        self.upstream(upstream).record(outcome, latency)

    def observe_headers(self, upstream: str, headers: Mapping[str, str]) -> None:
        """Rate-limit headers of any response from ``upstream`` (the httpx hook)."""
        self.upstream(upstream).observe_headers(headers)

    def subscribe(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call ``listener()`` after every change; returns an unsubscribe function."""
        self._listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return unsubscribe

    def _notify(self) -> None:
        for listener in list(self._listeners):
            listener()

    def notify(self) -> None:
        """Tell listeners something changed (waiting gated work looks again)."""
        self._notify()

    def _fleet_news(self) -> None:
        """A pause or a breaker change here: the fleet hears of it at once."""
        if self.fleet is not None:
            self.fleet.wake()

    def touch_configured(self) -> None:
        """Create the live state of every configured upstream now (not on first use)."""
        for name in self._configs:
            self.upstream(name)

    # -- active probes ---------------------------------------------------------------

    def start_probes(self, tasks: TaskGroup | None = None) -> None:
        """Start a background GET loop for every upstream with a ``probe_url`` (in
        ``tasks``, the scheduler's task group, when given)."""
        for config in self._configs.values():
            if config.probe_url is not None:
                name = f"floodgate-probe-{config.name}"
                probe = self._probe(config)
                task = (
                    asyncio.create_task(probe, name=name)
                    if tasks is None
                    else tasks.start(probe, name=name)
                )
                self._probes.append(task)

    async def stop_probes(self) -> None:
        probes, self._probes = self._probes, []
        for task in probes:
            task.cancel()
        await asyncio.gather(*probes, return_exceptions=True)

    async def _probe(self, config: Upstream) -> None:
        assert config.probe_url is not None
        health = self.upstream(config.name)
        fleet = self.fleet
        for _ in range(_FIRST_SYNC_WAITS):  # the fleet says first whether another probes
            if fleet is None or fleet.syncs or not fleet.reachable:
                break
            await self.clock.sleep(_FIRST_SYNC_STEP)
        async with httpx.AsyncClient(timeout=config.probe_timeout) as client:
            while True:
                if health.probe_elsewhere():  # one process probes for the fleet
                    if not health.probe_ok:
                        health.probe_ok = True  # its answer holds now, not our last one
                        self._notify()
                    await self.clock.sleep(config.probe_interval)
                    continue
                try:
                    response = await client.get(config.probe_url)
                    ok = response.status_code < 500 and response.status_code != 429
                except httpx.HTTPError:
                    ok = False
                if ok and health.breaker.state is BreakerState.OPEN:
                    health.breaker.end_cooldown()  # it answers again: try it now
                    self._notify()
                if ok != health.probe_ok:
                    health.probe_ok = ok
                    _log.info("upstream.probe", upstream=config.name, ok=ok)
                    self._notify()
                await self.clock.sleep(config.probe_interval)

    # -- introspection ---------------------------------------------------------------

    def stats(self) -> GateStats:
        return GateStats(
            open=self.is_open and not self._blocked,
            reason=self._paused_reason or next(iter(self._blocked.values()), None),
            pauses=self._pauses,
            resumes=self._resumes,
            closed_by=dict(self._closed_by),
            blocked=dict(self._blocked),
        )

    def __repr__(self) -> str:
        state = "open" if self.is_open else f"paused: {self._paused_reason}"
        return f"HealthGate({state}, upstreams={sorted(self._health)})"
