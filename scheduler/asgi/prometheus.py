"""Prometheus metrics over ``sched.stats()`` and the backlog counts.

A custom collector, registered in the admin app's own ``CollectorRegistry``
(never the global one, so two schedulers in one process do not clash and
nothing else leaks into ``/metrics``). Every scrape reads a fresh snapshot:

================================================  =======  ==========================
metric                                            type     labels
================================================  =======  ==========================
floodgate_scheduler_state                         gauge    state (1 for the current)
floodgate_scheduler_running                       gauge
floodgate_scheduler_max_concurrency               gauge    (only with a shared ceiling)
floodgate_gate_open                               gauge
floodgate_lane_queued / _running                  gauge    lane
floodgate_lane_max_concurrency / _max_queued      gauge    lane
floodgate_lane_admitted_total                     counter  lane
floodgate_lane_finished_total                     counter  lane, outcome
floodgate_lane_shed_total                         counter  lane, reason
floodgate_lane_wait_seconds / _run_seconds        summary  lane, quantile (0.5 0.95 0.99)
floodgate_lane_tenant_queued / _running / _shed   gauge    lane, tenant (the 9 busiest + "(other)")
floodgate_backlog_jobs                            gauge    lane, state
floodgate_backlog_up                              gauge    (1 if the counts were read)
floodgate_upstream_requests_total / _successes    counter  upstream
floodgate_upstream_failures_total                 counter  upstream, class
floodgate_upstream_breaker_state                  gauge    upstream, state (1 for current)
floodgate_upstream_error_rate, _latency_p95_...   gauge    upstream
floodgate_upstream_share                          gauge    upstream (this process's share)
floodgate_fleet_paused / _reachable               gauge    (only when sharing a backlog)
floodgate_fleet_members                           gauge    upstream
================================================  =======  ==========================

Latency is a **summary with quantile labels**, not a histogram: the lanes
keep a DDSketch whose snapshot hands out quantiles (1 % relative error), not
fixed ``le`` buckets, and inventing buckets from quantiles would be wrong. A
summary carries the quantiles plus ``_count`` and ``_sum`` (so
``rate(_sum) / rate(_count)`` gives the mean over any window), which plain
p50/p95/p99 gauges would lose. The price, as with any summary: quantiles are
per process and since start, and cannot be averaged across workers.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..backlog.base import DURABLE_STATES
from ..errors import SchedulerError
from ..metrics import LatencySummary, SchedulerStats, UpstreamStats
from ..scheduler import Scheduler

__all__ = ["SchedulerCollector", "metric_families"]

_STATES = ("new", "running", "draining", "stopped")
_BREAKER_STATES = ("closed", "open", "half_open")
_QUANTILES = (("0.5", "p50"), ("0.95", "p95"), ("0.99", "p99"))


class SchedulerCollector(Collector):
    """Collects a scheduler's metrics; :meth:`refresh` re-reads the backlog counts
    (async), :meth:`collect` reads ``stats()`` (sync, as prometheus-client wants)."""

    def __init__(self, sched: Scheduler) -> None:
        if not isinstance(sched, Scheduler):
            raise TypeError(f"SchedulerCollector needs a Scheduler, got {type(sched).__name__}")
        self._sched = sched
        self._backlog: dict[str, dict[str, int]] | None = None
        self._backlog_up: bool | None = None

    async def refresh(self) -> None:
        """Read the backlog counts now (``floodgate_backlog_up`` 0 if that fails)."""
        has_backlog = any(lane.durable for lane in self._sched.stats().lanes.values())
        if not has_backlog:
            self._backlog, self._backlog_up = None, None
            return
        try:
            self._backlog, self._backlog_up = await self._sched.backlog_counts(), True
        except SchedulerError:
            self._backlog, self._backlog_up = None, False

    def collect(self) -> Iterator[Metric]:
        yield from metric_families(self._sched.stats(), self._backlog, backlog_up=self._backlog_up)


def metric_families(
    stats: SchedulerStats,
    backlog: Mapping[str, Mapping[str, int]] | None,
    *,
    backlog_up: bool | None = None,
) -> list[Metric]:
    """The metric families for one snapshot (pure: tests feed it made-up stats)."""
    families = _scheduler(stats)
    families.extend(_lanes(stats))
    families.extend(_backlog(stats, backlog, backlog_up))
    families.extend(_upstreams(stats.upstreams.values()))
    families.extend(_fleet(stats))
    return families


def _fleet(stats: SchedulerStats) -> list[Metric]:
    share = GaugeMetricFamily(
        "floodgate_upstream_share",
        "This process's share of the fleet's rpm/tpm and learned rate.",
        labels=["upstream"],
    )
    for up in stats.upstreams.values():
        share.add_metric([up.name], up.share)
    fleet = stats.fleet
    if fleet is None:
        return [share]
    paused = GaugeMetricFamily(
        "floodgate_fleet_paused", "1 while the fleet-wide operator pause is on."
    )
    paused.add_metric([], 0.0 if fleet.paused_reason is None else 1.0)
    reachable = GaugeMetricFamily(
        "floodgate_fleet_reachable", "1 while the fleet's shared state answers."
    )
    reachable.add_metric([], 1.0 if fleet.reachable else 0.0)
    members = GaugeMetricFamily(
        "floodgate_fleet_members",
        "Processes sharing the upstream (seen in the last seconds).",
        labels=["upstream"],
    )
    for name, count in sorted(fleet.members.items()):
        members.add_metric([name], count)
    return [share, paused, reachable, members]


def _scheduler(stats: SchedulerStats) -> list[Metric]:
    state = GaugeMetricFamily(
        "floodgate_scheduler_state", "Scheduler lifecycle state (1 = current).", labels=["state"]
    )
    for name in (*_STATES, *([stats.state] if stats.state not in _STATES else [])):
        state.add_metric([name], 1.0 if name == stats.state else 0.0)
    running = GaugeMetricFamily("floodgate_scheduler_running", "Jobs running across all lanes.")
    running.add_metric([], stats.running)
    gate = GaugeMetricFamily(
        "floodgate_gate_open", "1 while the health gate lets gated lanes start jobs."
    )
    gate.add_metric([], 1.0 if stats.gate_open else 0.0)
    families: list[Metric] = [state, running, gate]
    if stats.max_concurrency is not None:
        ceiling = GaugeMetricFamily(
            "floodgate_scheduler_max_concurrency", "Ceiling across all lanes."
        )
        ceiling.add_metric([], stats.max_concurrency)
        families.append(ceiling)
    return families


def _lanes(stats: SchedulerStats) -> list[Metric]:
    def gauge(name: str, doc: str) -> GaugeMetricFamily:
        return GaugeMetricFamily(f"floodgate_lane_{name}", doc, labels=["lane"])

    queued = gauge("queued", "Jobs waiting in the lane (durable lanes: queued in the backlog).")
    running = gauge("running", "Jobs running in the lane in this process.")
    ceiling = gauge("max_concurrency", "The lane's concurrency ceiling.")
    bound = gauge("max_queued", "The lane's queue bound.")
    admitted = CounterMetricFamily(
        "floodgate_lane_admitted", "Jobs admitted to the lane.", labels=["lane"]
    )
    finished = CounterMetricFamily(
        "floodgate_lane_finished",
        "Jobs (attempts) that ended in this process, by outcome.",
        labels=["lane", "outcome"],
    )
    shed = CounterMetricFamily(
        "floodgate_lane_shed", "Jobs shed unrun, by reason.", labels=["lane", "reason"]
    )
    tenant_gauges = {
        field: GaugeMetricFamily(f"floodgate_lane_tenant_{field}", doc, labels=["lane", "tenant"])
        for field, doc in (
            ("queued", "Jobs a tenant has waiting in the lane (the busiest; the rest summed)."),
            ("running", "Jobs of a tenant running in the lane (the busiest; the rest summed)."),
            ("shed", "Jobs of a tenant shed unrun since start (the busiest; the rest summed)."),
        )
    }
    wait = Metric("floodgate_lane_wait_seconds", "Seconds from admission to start.", "summary")
    run = Metric("floodgate_lane_run_seconds", "Seconds a job ran.", "summary")
    for lane in stats.lanes.values():
        name = [lane.name]
        queued.add_metric(name, lane.queued)
        running.add_metric(name, lane.running)
        ceiling.add_metric(name, lane.max_concurrency)
        bound.add_metric(name, lane.max_queued)
        admitted.add_metric(name, lane.admitted)
        for outcome in ("completed", "failed", "cancelled"):
            finished.add_metric([lane.name, outcome], getattr(lane, outcome))
        for reason, count in sorted(lane.shed.items()):
            shed.add_metric([lane.name, reason], count)
        for tenant in lane.tenants:
            for field, gauge_ in tenant_gauges.items():
                gauge_.add_metric([lane.name, tenant.tenant], getattr(tenant, field))
        _add_summary(wait, lane.name, lane.wait)
        _add_summary(run, lane.name, lane.run)
    return [
        queued, running, ceiling, bound, admitted, finished, shed, *tenant_gauges.values(),
        wait, run,
    ]  # fmt: skip


def _add_summary(metric: Metric, lane: str, summary: LatencySummary) -> None:
    for label, attr in _QUANTILES:
        value = getattr(summary, attr)
        if value is not None:
            metric.add_sample(metric.name, {"lane": lane, "quantile": label}, value)
    total = 0.0 if summary.mean is None else summary.mean * summary.count
    metric.add_sample(metric.name + "_count", {"lane": lane}, summary.count)
    metric.add_sample(metric.name + "_sum", {"lane": lane}, total)


def _backlog(
    stats: SchedulerStats,
    backlog: Mapping[str, Mapping[str, int]] | None,
    backlog_up: bool | None,
) -> list[Metric]:
    families: list[Metric] = []
    if backlog_up is not None:
        up = GaugeMetricFamily("floodgate_backlog_up", "1 if the backlog counts could be read.")
        up.add_metric([], 1.0 if backlog_up else 0.0)
        families.append(up)
    if backlog is None:
        return families
    jobs = GaugeMetricFamily(
        "floodgate_backlog_jobs", "Durable jobs in the backlog by state.", labels=["lane", "state"]
    )
    lanes = [ln.name for ln in stats.lanes.values() if ln.durable]
    lanes += sorted(set(backlog) - set(lanes))
    states = [s.value for s in DURABLE_STATES]
    for lane in lanes:
        counts = backlog.get(lane, {})
        for state in [*states, *sorted(set(counts) - set(states))]:
            jobs.add_metric([lane, state], counts.get(state, 0))
    families.append(jobs)
    return families


def _upstreams(upstreams: Iterable[UpstreamStats]) -> list[Metric]:
    label = ["upstream"]
    requests = CounterMetricFamily(
        "floodgate_upstream_requests", "Upstream requests.", labels=label
    )
    successes = CounterMetricFamily(
        "floodgate_upstream_successes", "Upstream requests that succeeded.", labels=label
    )
    failures = CounterMetricFamily(
        "floodgate_upstream_failures",
        "Failed upstream requests by class (rate_limited, server_error, timeout, ...).",
        labels=["upstream", "class"],
    )
    breaker = GaugeMetricFamily(
        "floodgate_upstream_breaker_state",
        "Circuit breaker state (1 = current).",
        labels=["upstream", "state"],
    )
    optional = {
        "error_rate": GaugeMetricFamily(
            "floodgate_upstream_error_rate", "Failed share of recent requests.", labels=label
        ),
        "latency_p95": GaugeMetricFamily(
            "floodgate_upstream_latency_p95_seconds", "p95 of recent requests.", labels=label
        ),
        "paused_for": GaugeMetricFamily(
            "floodgate_upstream_paused_seconds",
            "Seconds left of a Retry-After pause.",
            labels=label,
        ),
        "concurrency_limit": GaugeMetricFamily(
            "floodgate_upstream_concurrency_limit", "Adaptive limit for gated work.", labels=label
        ),
    }
    remaining = GaugeMetricFamily(
        "floodgate_upstream_rate_limit_remaining",
        "Rate-limit headroom the upstream reported, by kind.",
        labels=["upstream", "kind"],
    )
    for up in upstreams:
        requests.add_metric([up.name], up.requests)
        successes.add_metric([up.name], up.successes)
        for cls, count in sorted(up.failures.items()):
            failures.add_metric([up.name, cls], count)
        extra = () if up.breaker in _BREAKER_STATES else (up.breaker,)
        for state in (*_BREAKER_STATES, *extra):
            breaker.add_metric([up.name, state], 1.0 if state == up.breaker else 0.0)
        for attr, family in optional.items():
            value = getattr(up, attr)
            if value is not None:
                family.add_metric([up.name], float(value))
        for kind, value in sorted(up.rate_limit_remaining.items()):
            remaining.add_metric([up.name, kind], value)
    return [requests, successes, failures, breaker, *optional.values(), remaining]
