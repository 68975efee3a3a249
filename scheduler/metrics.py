"""Counters and latency quantiles, bounded in memory however long a lane runs.

Latencies go into a DDSketch (Masson et al., VLDB 2019, via the ``ddsketch``
package): log-spaced buckets with a guaranteed 1 % relative error on every
quantile, and a hard cap on the number of buckets, so memory stays constant
over months of traffic. Statistics are handed out as frozen dataclasses that
tests, ``/metrics`` and the dashboard all read; nobody reads private fields.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TypeVar

from ddsketch import DDSketch

from .backlog.base import BacklogStats

__all__ = [
    "FleetStats",
    "LaneStats",
    "LatencyHistogram",
    "LatencySummary",
    "SchedulerStats",
    "TenantStats",
    "UpstreamStats",
]

#: relative accuracy of every reported quantile
RELATIVE_ACCURACY = 0.01
#: values below this (seconds) are reported as zero; 1 µs is finer than any clock here
_FLOOR = 1e-6
#: observations kept before they go into the sketch together
_FOLD_AT = 256


@dataclass(frozen=True, slots=True)
class LatencySummary:
    """Count, mean and p50/p95/p99 of a latency (seconds); ``None`` until observed."""

    count: int
    mean: float | None
    p50: float | None
    p95: float | None
    p99: float | None
    max: float | None


_NO_LATENCY = LatencySummary(0, None, None, None, None, None)


class LatencyHistogram:
    """A mergeable, bounded-memory latency sketch (seconds).

    Observations wait in a short list and go into the sketch :data:`_FOLD_AT` at
    a time, or when read (a sketch's ``add`` costs a few µs; this is paid per job)."""

    __slots__ = ("_max", "_pending", "_sketch", "_sum")

    def __init__(self) -> None:
        self._sketch = DDSketch(relative_accuracy=RELATIVE_ACCURACY)
        self._pending: list[float] = []
        self._sum = 0.0
        self._max = 0.0

    def observe(self, seconds: float) -> None:
        if seconds < _FLOOR:
            seconds = _FLOOR
        pending = self._pending
        pending.append(seconds)
        self._sum += seconds
        if seconds > self._max:
            self._max = seconds
        if len(pending) >= _FOLD_AT:
            self._fold()

    def _fold(self) -> None:
        add = self._sketch.add
        for seconds in self._pending:
            add(seconds)
        self._pending.clear()

    @property
    def count(self) -> int:
        return int(self._sketch.count) + len(self._pending)

    def quantile(self, q: float) -> float | None:
        if self._pending:
            self._fold()
        if self._sketch.count == 0:
            return None
        value = self._sketch.get_quantile_value(q)
        return None if value is None else float(value)

    def summary(self) -> LatencySummary:
        n = self.count
        if n == 0:
            return _NO_LATENCY
        return LatencySummary(
            count=n,
            mean=self._sum / n,
            p50=self.quantile(0.50),
            p95=self.quantile(0.95),
            p99=self.quantile(0.99),
            max=self._max,
        )


V = TypeVar("V")


def _frozen(mapping: Mapping[str, V]) -> Mapping[str, V]:
    return MappingProxyType(dict(mapping))


@dataclass(frozen=True, slots=True)
class TenantStats:
    """One tenant in a lane (see :class:`~scheduler.lanes.Tenants`)."""

    tenant: str
    queued: int  # waiting here; on a durable lane, in the backlog (every process)
    running: int
    shed: int  # refused or expired unrun


@dataclass(frozen=True, slots=True)
class LaneStats:
    """A snapshot of one lane."""

    name: str
    max_concurrency: int
    max_queued: int
    queued: int
    running: int
    admitted: int
    completed: int
    failed: int
    cancelled: int
    shed: Mapping[str, int] = field(default_factory=lambda: _frozen({}))
    wait: LatencySummary = _NO_LATENCY
    run: LatencySummary = _NO_LATENCY
    gated: bool = False
    durable: bool = False
    fallbacks: int = 0  # jobs served by their fallback instead of the primary
    limit: int | None = None  # gated lanes: the adaptive concurrency limit now
    tenants: tuple[TenantStats, ...] = ()  # the busiest tenants (at most 10)

    @property
    def shed_total(self) -> int:
        return sum(self.shed.values())


@dataclass(frozen=True, slots=True)
class UpstreamStats:
    """A snapshot of one upstream's health as Floodgate sees it.

    ``failures`` counts failed requests by class: ``rate_limited`` (429),
    ``server_error`` (5xx), ``timeout``, ``transport``, ``client_error``
    (other 4xx, the caller's fault), ``other``.
    """

    name: str
    breaker: str  # "closed" | "open" | "half_open"
    requests: int
    successes: int
    failures: Mapping[str, int] = field(default_factory=lambda: _frozen({}))
    error_rate: float | None = None  # failed share of recent requests
    latency_p95: float | None = None  # seconds, recent requests
    paused_for: float | None = None  # seconds left of a Retry-After pause
    concurrency_limit: int | None = None  # adaptive limit for gated work
    rate_limit_remaining: Mapping[str, float] = field(default_factory=lambda: _frozen({}))
    learned_rate: float | None = None  # requests/s learned from 429s (None: none seen)
    sent_rate: float | None = None  # requests/s sent over the last second
    share: float = 1.0  # this process's share of the fleet's rpm/tpm and learned rate


@dataclass(frozen=True, slots=True)
class FleetStats:
    """This process in the fleet sharing its backlog (see :mod:`scheduler.fleet`)."""

    member: str  # this process's id
    reachable: bool  # the last exchange with the shared state worked
    paused_reason: str | None  # the fleet-wide operator pause, if on
    paused_by: str | None
    members: Mapping[str, int]  # upstream -> processes sharing it (last seen)


@dataclass(frozen=True, slots=True)
class PeriodicStats:
    """A periodic task (see :mod:`scheduler.periodic`)."""

    task: str
    schedule: str  # the cron expression, or "every N s"
    lane: str
    next_run: float  # epoch seconds the next period starts
    scheduled_here: bool  # this process runs its lane, so it submits its periods


@dataclass(frozen=True, slots=True)
class SchedulerStats:
    """A snapshot of the whole scheduler: every lane, the shared ceiling, the gate."""

    lanes: Mapping[str, LaneStats]
    running: int
    max_concurrency: int | None
    state: str
    gate_open: bool = True
    gate_reason: str | None = None
    upstreams: Mapping[str, UpstreamStats] = field(default_factory=lambda: MappingProxyType({}))
    fleet: FleetStats | None = None  # None: this process shares nothing
    periodic: tuple[PeriodicStats, ...] = ()  # periodic tasks, with their next run
    backlog: BacklogStats | None = None  # this process's backlog; None: no durable lane

    def __getitem__(self, lane: str) -> LaneStats:
        return self.lanes[lane]

    def format_table(self) -> str:
        """A plain-text table, one row per lane (what the quickstart and CLI print)."""
        header = (
            f"{'lane':<12} {'queued':>6} {'run':>4}/{'max':<4} {'admit':>7} {'done':>7} "
            f"{'fail':>5} {'shed':>5} {'wait p50':>9} {'wait p99':>9} {'run p99':>9}"
        )
        rows = [header, "-" * len(header)]
        rows.extend(
            f"{s.name:<12} {s.queued:>6} {s.running:>4}/{s.max_concurrency:<4} "
            f"{s.admitted:>7} {s.completed:>7} {s.failed:>5} {s.shed_total:>5} "
            f"{_ms(s.wait.p50):>9} {_ms(s.wait.p99):>9} {_ms(s.run.p99):>9}"
            for s in self.lanes.values()
        )
        gate = "open" if self.gate_open else f"paused ({self.gate_reason})"
        ceiling = "none" if self.max_concurrency is None else str(self.max_concurrency)
        rows.append(f"running {self.running} (shared ceiling {ceiling}); gate {gate}")
        return "\n".join(rows)


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f}ms"
