"""The run-time side of a lane: its queue, its seats, its counters.

Private: the scheduler owns these and hands out :class:`LaneStats` snapshots.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from .clock import Clock, TimerHandle
from .jobs import JobContext, JobState
from .lanes import FairEntry, FairQueue, Lane
from .limits import AIMDLimit
from .metrics import LaneStats, LatencyHistogram, TenantStats, _frozen
from .upstream_health import Permit

__all__ = ["LaneState", "Ticket"]

_ids = itertools.count(1)

#: tenants shown per lane in stats (the busiest); and how many shed counts are kept
TOP_TENANTS = 10
#: the name of the row that sums up the tenants beyond the top ones
OTHER_TENANTS = "(other)"
_TENANTS_KEPT = 1000
#: weight of the newest run time in the lane's moving average (drain-rate estimate)
_EWMA_WEIGHT = 0.2


class Ticket:
    """One admitted job: its place in the queue, its seat, its outcome."""

    __slots__ = (
        "admitted_at",
        "attempt",
        "cancel_reason",
        "cancelling",
        "deadline",
        "deadline_at",
        "entry",
        "future",
        "job_id",
        "lane",
        "number",
        "permit",
        "priority",
        "started_at",
        "state",
        "task",
        "tenant",
        "timeout_at",
        "timer",
        "trace",
        "upstream",
    )

    def __init__(
        self,
        lane: LaneState,
        priority: float,
        admitted_at: float,
        deadline: float | None,
        upstream: str | None,
        task: asyncio.Task[Any] | None,
        tenant: str | None = None,
    ) -> None:
        self.number = next(_ids)
        self.tenant = tenant
        self.lane = lane
        self.priority = priority
        self.admitted_at = admitted_at
        self.deadline = deadline
        self.deadline_at = None if deadline is None else admitted_at + deadline
        self.upstream = upstream
        self.task = task
        self.state = JobState.QUEUED
        self.future: asyncio.Future[None] | None = None
        self.entry: FairEntry | None = None
        self.timer: TimerHandle | None = None
        self.cancel_reason: str | None = None
        self.cancelling = 0
        self.started_at = 0.0
        self.timeout_at: float | None = None
        self.job_id: str | None = None  # a durable job's backlog id
        self.attempt = 1
        self.permit: Permit | None = None  # the upstream's permit for this attempt
        self.trace: str | None = None  # a durable job's submitter's trace context (JSON)

    @property
    def id(self) -> str:
        return self.job_id if self.job_id is not None else f"m{self.number}"

    def context(self) -> JobContext:
        return JobContext(
            id=self.id,
            lane=self.lane.name,
            attempt=self.attempt,
            priority=self.priority,
            upstream=self.upstream,
            started_at=self.started_at,
            timeout_at=self.timeout_at,
            _clock=self.lane.clock,
        )

    def cancel_task(self, reason: str) -> None:
        """Cancel the job's task on the scheduler's behalf (timeout, shutdown)."""
        if self.cancel_reason is None and self.task is not None:
            self.cancel_reason = reason
            self.task.cancel()


class LaneState:
    """A lane at run time: queue, seats in use, counters and latency sketches."""

    def __init__(self, lane: Lane, clock: Clock, urgency: int) -> None:
        self.config = lane
        self.name = lane.name
        self.clock = clock
        self.urgency = urgency
        self.max_concurrency = lane.max_concurrency
        # seats the lane can really get: fewer than its ceiling when a shared
        # ceiling and other lanes' reservations bound it (set by the scheduler)
        self.seats = lane.max_concurrency
        self.max_queued = lane.max_queued
        self.reserved = lane.reserved
        self.gated = lane.gated
        self.queue: FairQueue[Ticket] = FairQueue(lane.aging, lane.tenants)
        self.tenant_max_in_flight = lane.tenants.max_in_flight
        self.tenant_max_queued = lane.tenants.max_queued
        self.tenant_running: dict[str, int] = {}  # tenants holding seats: how many
        self.tenant_shed: dict[str, int] = {}  # jobs shed per tenant (bounded, see below)
        self.active: set[Ticket] = set()  # tickets holding a seat
        self.running = 0  # == len(active); kept as an int for the hot path
        self.run_here = True
        self.admitted = 0
        self.completed = 0
        self.failed = 0
        self.cancelled = 0
        self.shed: dict[str, int] = {}
        self.wait_hist = LatencyHistogram()
        self.run_hist = LatencyHistogram()
        self.ewma_run: float | None = None
        self.backlog_queued = 0  # durable lanes: jobs waiting in the backlog (cached)
        self.backlog_tenants: dict[str, int] = {}  # and the busiest tenants' (cached)
        self.fallbacks = 0  # jobs served by their fallback
        # gated lanes: the upstreams their work calls, and an adaptive limit
        self.upstreams: set[str] = set()
        self.limiter = AIMDLimit(lane.max_concurrency) if lane.gated else None
        self.outages_seen = 0  # its upstreams' breaker openings already ramped up from
        self.under_pressure = False  # yielding to queued interactive work

    def count_shed(self, reason: str, tenant: str | None = None) -> None:
        self.shed[reason] = self.shed.get(reason, 0) + 1
        if tenant is not None:
            shed = self.tenant_shed
            shed[tenant] = shed.get(tenant, 0) + 1
            if len(shed) > _TENANTS_KEPT * 2:  # keep the largest: cardinality stays bounded
                kept = sorted(shed.items(), key=lambda kv: kv[1], reverse=True)[:_TENANTS_KEPT]
                self.tenant_shed = dict(kept)

    def may_run(self, tenant: str | None) -> bool:
        """Whether ``tenant`` is below its seats bound (``Tenants.max_in_flight``)."""
        most = self.tenant_max_in_flight
        return most is None or tenant is None or self.tenant_running.get(tenant, 0) < most

    def top_tenants(self, n: int = TOP_TENANTS) -> tuple[TenantStats, ...]:
        """The busiest tenants (queued and running, then shed), at most ``n`` rows: the
        last sums up the rest as ``"(other)"`` when there are more."""
        queued = self.queue.by_tenant()
        for name, n in self.backlog_tenants.items():
            queued[name] = queued.get(name, 0) + n
        names = {t for t in queued if t is not None}
        names.update(self.tenant_running, self.tenant_shed)
        rows = [
            TenantStats(
                tenant=name,
                queued=queued.get(name, 0),
                running=self.tenant_running.get(name, 0),
                shed=self.tenant_shed.get(name, 0),
            )
            for name in names
        ]
        rows.sort(key=lambda r: (r.queued + r.running, r.shed, r.tenant), reverse=True)
        if len(rows) <= n:
            return tuple(rows)
        rest = rows[n - 1 :]  # the last place sums up the others: bounded labels
        other = TenantStats(
            tenant=OTHER_TENANTS,
            queued=sum(r.queued for r in rest),
            running=sum(r.running for r in rest),
            shed=sum(r.shed for r in rest),
        )
        return (*rows[: n - 1], other)

    def record_run(self, seconds: float) -> None:
        self.run_hist.observe(seconds)
        prev = self.ewma_run
        self.ewma_run = seconds if prev is None else prev + _EWMA_WEIGHT * (seconds - prev)

    def expected_wait(self) -> float | None:
        """Estimated wait for a job queued now, from the measured drain rate.

        ``None`` when the lane has not finished a job yet and cannot estimate.
        """
        if self.ewma_run is None:
            return None
        drain_rate = self.seats / max(self.ewma_run, 1e-6)  # jobs per second
        return (len(self.queue) + 1) / drain_rate

    def retry_after(self) -> float:
        """How long a shed caller should wait before trying again (seconds)."""
        wait = self.expected_wait()
        if wait is None:
            return 1.0
        return min(60.0, max(0.001, wait))

    def stats(self) -> LaneStats:
        return LaneStats(
            name=self.name,
            max_concurrency=self.max_concurrency,
            max_queued=self.max_queued,
            queued=len(self.queue) + self.backlog_queued,
            running=self.running,
            admitted=self.admitted,
            completed=self.completed,
            failed=self.failed,
            cancelled=self.cancelled,
            shed=_frozen(self.shed),
            wait=self.wait_hist.summary(),
            run=self.run_hist.summary(),
            gated=self.gated,
            durable=self.config.durable,
            fallbacks=self.fallbacks,
            limit=None if self.limiter is None else self.limiter.limit,
            tenants=self.top_tenants(),
        )
