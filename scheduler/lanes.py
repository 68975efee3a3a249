"""Lane configuration and the per-lane priority queue.

A lane is a sack of ``max_concurrency`` seats and a waiting room of at most
``max_queued`` jobs. A job holds a seat from the moment the lane hands it one
until it ends, whatever way it ends, so the count of seats in use never passes
the ceiling. Waiting jobs leave the room lowest ``priority`` first, FIFO among
equals.

Aging (``aging=seconds``) improves a waiting job's effective priority by one
level per ``aging`` seconds waited. Because every waiting job ages at the same
rate, the order between two jobs never changes with time: the effective
priority at time t, ``priority - (t - enqueued_at) / aging``, differs from the
fixed heap key ``priority + enqueued_at / aging`` by the same ``t / aging`` for
every job. That keeps every
operation O(log n) with no periodic re-sorting.

Tenants (``call(..., tenant=)``, e.g. a customer or an API key) share a lane
fairly: its waiting room keeps one queue per tenant and each free seat goes
to the tenant whose turn it is (start-time fair queuing, weighted by
``Tenants.weights``), so one tenant's flood cannot starve another's few jobs;
priority orders jobs within a tenant. Jobs without a tenant are one tenant.
``Tenants(max_in_flight=, max_queued=)`` bound each tenant's seats and
waiting jobs.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import KW_ONLY, dataclass, field
from types import MappingProxyType
from typing import Any, Generic, TypeVar

from ._validate import check_int
from .clock import Clock, TimerHandle
from .errors import ConfigError
from .jobs import JobContext, JobState
from .limits import AIMDLimit
from .metrics import LaneStats, LatencyHistogram, TenantStats, _frozen
from .upstream import Permit

__all__ = ["FairQueue", "Lane", "LaneState", "PriorityQueue", "Tenants", "Ticket"]

#: the longest tenant name (a customer id, an API key's name)
MAX_TENANT_LENGTH = 200


def check_tenant(tenant: object) -> None:
    """A tenant is a short non-empty str (or ``None``: no tenant)."""
    if tenant is None:
        return
    if not isinstance(tenant, str):
        raise TypeError(f"tenant must be a str or None, got {type(tenant).__name__}")
    if not tenant or len(tenant) > MAX_TENANT_LENGTH:
        raise ValueError(f"tenant must be 1 to {MAX_TENANT_LENGTH} characters, got {len(tenant)}")


@dataclass(frozen=True, slots=True)
class Tenants:
    """How a lane's tenants share it (``Lane(tenants=Tenants(...))``).

    Args:
        max_in_flight: seats one tenant may hold at once in the lane (``None``: any).
        max_queued: jobs one tenant may have waiting in the lane; beyond it
            ``Overloaded`` names the tenant (``None``: only the lane's bound).
        weights: a tenant's share of the lane relative to the others
            (default 1.0 each): a tenant of weight 2 gets two seats for every
            one of a tenant of weight 1 while both have work waiting.
    """

    max_in_flight: int | None = None
    max_queued: int | None = None
    weights: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        if self.max_in_flight is not None:
            check_int("tenants: max_in_flight", self.max_in_flight, minimum=1)
        if self.max_queued is not None:
            check_int("tenants: max_queued", self.max_queued, minimum=0)
        if not isinstance(self.weights, Mapping):
            raise ConfigError(f"tenants: weights must be a mapping, got {self.weights!r}")
        for tenant, weight in self.weights.items():
            check_tenant(tenant)
            if (
                isinstance(weight, bool)
                or not isinstance(weight, int | float)
                or not (math.isfinite(weight) and weight > 0)
            ):
                raise ConfigError(
                    f"tenants: the weight of {tenant!r} must be a positive number, got {weight!r}"
                )
        object.__setattr__(self, "weights", MappingProxyType(dict(self.weights)))

    def weight(self, tenant: str | None) -> float:
        return 1.0 if tenant is None else float(self.weights.get(tenant, 1.0))


@dataclass(frozen=True, slots=True)
class Lane:
    """One lane: a hard concurrency ceiling and a bounded queue.

    Args:
        name: the lane's name, used by ``call(..., lane=)`` and tasks.
        max_concurrency: hard ceiling on jobs running at once in this lane.
        max_queued: how many jobs may wait; beyond it ``Overloaded`` is raised.
            Default 256, or 1,000,000 for a durable lane (its queue is on disk).
        durable: ``submit()`` of tasks on this lane is kept in the persistent backlog.
        gated: jobs start only while the scheduler's ``HealthGate`` is open.
        aging: seconds of waiting that improve a job's priority by one level
            (``None``: no aging). Keeps low-priority work from starving; on a
            durable lane too, in the backlog's claim order (a job's rank is fixed
            at submit, from the time it is due; every process must agree on it).
        reserved: with a scheduler-wide ``max_concurrency``, seats of the shared
            ceiling that only this lane may use, so no lane is starved to zero.
        tenants: how jobs with a ``tenant=`` share the lane (:class:`Tenants`):
            fairly by weight, with optional per-tenant bounds.

    Lanes listed first are the more urgent: when a shared seat frees, the first
    lane with waiting work gets it.
    """

    name: str
    max_concurrency: int = 16
    max_queued: int = None  # type: ignore[assignment]  # resolved in __post_init__
    _: KW_ONLY
    durable: bool = False
    gated: bool = False
    aging: float | None = None
    reserved: int = 1
    tenants: Tenants = field(default_factory=Tenants)

    def __post_init__(self) -> None:
        name = self.name
        if not isinstance(name, str) or not name:
            raise ConfigError(f"a lane needs a non-empty str name, got {name!r}")
        check_int(f"lane {name!r}: max_concurrency", self.max_concurrency, minimum=1)
        if self.max_queued is None:
            object.__setattr__(self, "max_queued", 1_000_000 if self.durable else 256)
        check_int(f"lane {name!r}: max_queued", self.max_queued, minimum=0)
        check_int(f"lane {name!r}: reserved", self.reserved, minimum=0)
        if self.reserved > self.max_concurrency:
            raise ConfigError(
                f"lane {name!r}: reserved={self.reserved} exceeds "
                f"max_concurrency={self.max_concurrency}"
            )
        aging = self.aging
        if aging is not None:
            if isinstance(aging, bool) or not isinstance(aging, int | float) or not aging > 0:
                raise ConfigError(
                    f"lane {name!r}: aging must be a positive number of seconds or None, "
                    f"got {aging!r}"
                )
            object.__setattr__(self, "aging", float(aging))
        if not isinstance(self.tenants, Tenants):
            raise ConfigError(f"lane {name!r}: tenants must be a Tenants, got {self.tenants!r}")


T = TypeVar("T")


class PriorityQueue(Generic[T]):
    """A heap of waiting items with O(log n) push/pop and O(1) removal.

    Removal marks an entry dead; dead entries are skipped on pop and the heap
    is compacted when they outnumber live ones, so memory stays O(live).
    """

    __slots__ = ("_aging", "_dead", "_heap", "_seq")

    def __init__(self, aging: float | None = None) -> None:
        self._heap: list[list[object]] = []
        self._seq = 0
        self._dead = 0
        self._aging = aging

    def push(self, item: T, priority: float, now: float) -> list[object]:
        """Add ``item``; returns the entry token to pass to :meth:`remove`."""
        key = priority + now / self._aging if self._aging else priority
        self._seq += 1
        entry: list[object] = [key, self._seq, item, True]
        heapq.heappush(self._heap, entry)
        return entry

    def remove(self, entry: list[object]) -> bool:
        """Take an entry out; False if it had already left."""
        if not entry[3]:
            return False
        entry[3] = False
        self._dead += 1
        if self._dead > 64 and self._dead > len(self._heap) // 2:
            self._heap = [e for e in self._heap if e[3]]
            heapq.heapify(self._heap)
            self._dead = 0
        return True

    def peek(self) -> T | None:
        heap = self._heap
        while heap and not heap[0][3]:
            heapq.heappop(heap)
            self._dead -= 1
        return heap[0][2] if heap else None  # type: ignore[return-value]  # slot 2 holds T

    def pop(self) -> T | None:
        heap = self._heap
        while heap:
            entry = heapq.heappop(heap)
            if entry[3]:
                entry[3] = False
                return entry[2]  # type: ignore[return-value]  # slot 2 holds T
            self._dead -= 1
        return None

    def __len__(self) -> int:
        return len(self._heap) - self._dead

    def __bool__(self) -> bool:
        return len(self._heap) > self._dead

    def __iter__(self) -> Iterator[T]:
        """Live items, in no particular order."""
        return (e[2] for e in self._heap if e[3])  # type: ignore[misc]  # slot 2 holds T


#: a fair queue sweeps idle tenants' flows once it holds this many (at least)
_SWEEP_MIN = 1024
#: what :meth:`FairQueue.push` returns: (tenant, the tenant queue's entry)
FairEntry = tuple[str | None, list[object]]


class _Flow(Generic[T]):
    """One tenant's waiting items and its place in the fair order."""

    __slots__ = ("queue", "tag", "weight")

    def __init__(self, aging: float | None, weight: float) -> None:
        self.queue: PriorityQueue[T] = PriorityQueue(aging)
        self.tag = 0.0  # the virtual time its next item starts at
        self.weight = weight


class FairQueue(Generic[T]):
    """Waiting items per tenant; :meth:`pop` serves the tenant whose turn it is.

    Start-time fair queuing: each tenant's next item has a virtual start tag;
    the smallest tag goes first, and serving a tenant moves its tag on by
    ``1 / weight``. A tenant that starts waiting again starts at the current
    virtual time, so idling earns no credit and flooding earns no more than
    its share. Within a tenant, items leave as :class:`PriorityQueue` orders
    them. Every operation is O(log n) in items and tenants waiting. While one
    tenant alone has items waiting (no tenants at all, most often), its queue
    is used directly: there is no one to be fair to.
    """

    __slots__ = (
        "_aging", "_flows", "_len", "_order", "_seq", "_solo", "_solo_tenant", "_sweep_at",
        "_tenants", "_vtime",
    )  # fmt: skip

    def __init__(self, aging: float | None = None, tenants: Tenants | None = None) -> None:
        self._aging = aging
        self._tenants = tenants or Tenants()
        self._flows: dict[str | None, _Flow[T]] = {}
        self._order: list[tuple[float, int, str | None]] = []  # (tag, seq, tenant), lazy
        self._seq = itertools.count()
        self._vtime = 0.0
        self._len = 0
        self._sweep_at = _SWEEP_MIN
        self._solo: _Flow[T] | None = None  # the only tenant with items waiting, if so
        self._solo_tenant: str | None = None

    def push(self, item: T, priority: float, now: float, tenant: str | None = None) -> FairEntry:
        """Add ``item`` for ``tenant``; returns the entry token to pass to :meth:`remove`."""
        solo = self._solo
        if solo is not None:
            if tenant == self._solo_tenant:
                self._len += 1
                return (tenant, solo.queue.push(item, priority, now))
            self._end_solo()  # a second tenant waits: take turns from now on
        elif not self._len:  # nothing waits: this tenant alone, no turns to keep
            self._order.clear()
            solo = self._flow(tenant)
            self._solo, self._solo_tenant = solo, tenant
            self._len = 1
            return (tenant, solo.queue.push(item, priority, now))
        flow = self._flow(tenant)
        if not flow.queue:  # it starts waiting (again): no credit for the idle time
            flow.tag = max(flow.tag, self._vtime)
            heapq.heappush(self._order, (flow.tag, next(self._seq), tenant))
        entry = flow.queue.push(item, priority, now)
        self._len += 1
        return (tenant, entry)

    def _flow(self, tenant: str | None) -> _Flow[T]:
        flow = self._flows.get(tenant)
        if flow is None:
            if len(self._flows) >= self._sweep_at:
                self._sweep()
            flow = self._flows[tenant] = _Flow(self._aging, self._tenants.weight(tenant))
        return flow

    def _end_solo(self) -> None:
        """Turns are kept again: the lone tenant's items get their place in them."""
        solo, tenant = self._solo, self._solo_tenant
        assert solo is not None
        self._solo = None
        solo.tag = max(solo.tag, self._vtime)
        heapq.heappush(self._order, (solo.tag, next(self._seq), tenant))

    def remove(self, entry: FairEntry) -> bool:
        """Take an entry out; False if it had already left."""
        tenant, inner = entry
        flow = self._flows.get(tenant)
        if flow is None or not flow.queue.remove(inner):
            return False
        self._len -= 1
        if flow is self._solo:
            if not self._len:
                self._solo = None
        elif not flow.queue:
            self._forget(tenant)
        return True

    def pop(self, eligible: Callable[[str | None], bool] | None = None) -> T | None:
        """The next item by turn (only of tenants ``eligible`` says may run), or ``None``."""
        solo = self._solo
        if solo is not None:
            if eligible is not None and not eligible(self._solo_tenant):
                return None
            item = solo.queue.pop()
            self._len -= 1
            if not self._len:
                self._solo = None
            return item
        order, flows = self._order, self._flows
        skipped: list[tuple[float, int, str | None]] = []
        found: T | None = None
        while order:
            tag, seq, tenant = heapq.heappop(order)
            flow = flows.get(tenant)
            if flow is None or not flow.queue or flow.tag != tag:
                continue  # stale: the tenant emptied, or was served since
            if eligible is not None and not eligible(tenant):
                skipped.append((tag, seq, tenant))
                continue
            found = flow.queue.pop()
            self._len -= 1
            self._vtime = tag
            flow.tag = tag + 1.0 / flow.weight
            if flow.queue:
                heapq.heappush(order, (flow.tag, next(self._seq), tenant))
            else:
                self._forget(tenant)
            break
        for entry in skipped:
            heapq.heappush(order, entry)
        return found

    def _forget(self, tenant: str | None) -> None:
        """Drop an emptied tenant's flow once it holds no credit beyond now."""
        flow = self._flows[tenant]
        if flow.tag <= self._vtime:
            del self._flows[tenant]

    def _sweep(self) -> None:
        """Drop the flows of tenants with nothing waiting and no credit left (memory
        stays bounded by the tenants waiting, however many came and went)."""
        vtime = self._vtime
        self._flows = {t: f for t, f in self._flows.items() if f.queue or f.tag > vtime}
        self._sweep_at = max(_SWEEP_MIN, 2 * len(self._flows))

    def queued(self, tenant: str | None) -> int:
        """Items ``tenant`` has waiting."""
        flow = self._flows.get(tenant)
        return 0 if flow is None else len(flow.queue)

    def by_tenant(self) -> dict[str | None, int]:
        """Items waiting per tenant (tenants with none left out)."""
        return {t: len(f.queue) for t, f in self._flows.items() if f.queue}

    def __len__(self) -> int:
        return self._len

    def __bool__(self) -> bool:
        return self._len > 0

    def __iter__(self) -> Iterator[T]:
        """Live items, in no particular order."""
        return itertools.chain.from_iterable(f.queue for f in list(self._flows.values()))


# -- a lane at run time: its queue, its seats, its counters -----------------------------
# (the scheduler owns these and hands out LaneStats snapshots)

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
