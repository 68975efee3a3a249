"""``/metrics``: Prometheus text from the admin app's own registry, parsed back."""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType

import httpx
import prometheus_client
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from scheduler import LaneStats, LatencySummary, SchedulerStats, UpstreamStats
from scheduler.asgi import admin_app
from scheduler.asgi.prometheus import metric_families

from .admin_fixtures import busy_scheduler, make_scheduler
from .http_helpers import serve


def samples(text: str) -> dict[str, list[Sample]]:
    found: dict[str, list[Sample]] = {}
    for family in text_string_to_metric_families(text):
        found.setdefault(family.name, []).extend(family.samples)
    return found


def value(
    found: dict[str, list[Sample]], family: str, name: str | None = None, **labels: str
) -> float:
    matches = [
        s.value
        for s in found[family]
        if s.name == (name or family) and all(s.labels.get(k) == v for k, v in labels.items())
    ]
    assert len(matches) == 1, (family, name, labels, found[family])
    return matches[0]


async def test_metrics_over_http_parse_and_match_the_scheduler(tmp_path: Path) -> None:
    async with busy_scheduler(tmp_path / "m.db") as sched, serve(admin_app(sched)) as url:
        async with httpx.AsyncClient(base_url=url) as client:
            response = await client.get("/metrics")
            accept = {"Accept": "application/openmetrics-text; version=1.0.0"}
            openmetrics = await client.get("/metrics", headers=accept)
        assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
        assert openmetrics.headers["content-type"].startswith("application/openmetrics-text")
        assert openmetrics.text.rstrip().endswith("# EOF")
        found = samples(response.text)
        stats = sched.stats()

    assert value(found, "floodgate_scheduler_state", state="running") == 1
    assert value(found, "floodgate_scheduler_state", state="draining") == 0
    assert value(found, "floodgate_gate_open") == 0
    for name in ("interactive", "batch"):
        lane = stats[name]
        assert value(found, "floodgate_lane_queued", lane=name) == lane.queued
        assert value(found, "floodgate_lane_running", lane=name) == lane.running
        assert value(found, "floodgate_lane_max_concurrency", lane=name) == lane.max_concurrency
    assert value(found, "floodgate_lane_queued", lane="batch") == 3
    shed = "floodgate_lane_shed"
    assert value(found, shed, f"{shed}_total", lane="interactive", reason="queue_full") == 1
    done = "floodgate_lane_finished"
    assert value(found, done, f"{done}_total", lane="interactive", outcome="completed") == 4

    wait = "floodgate_lane_wait_seconds"
    interactive = stats["interactive"].wait
    assert value(found, wait, lane="interactive", quantile="0.95") == interactive.p95
    assert value(found, wait, lane="interactive", quantile="0.99") == interactive.p99
    assert value(found, wait, f"{wait}_count", lane="interactive") == interactive.count == 4
    assert interactive.mean is not None
    expected_sum = interactive.mean * interactive.count
    assert abs(value(found, wait, f"{wait}_sum", lane="interactive") - expected_sum) < 1e-9
    run = "floodgate_lane_run_seconds"
    assert value(found, run, f"{run}_count", lane="interactive") == 4

    assert value(found, "floodgate_backlog_up") == 1
    assert value(found, "floodgate_backlog_jobs", lane="batch", state="queued") == 3
    assert value(found, "floodgate_backlog_jobs", lane="batch", state="dead") == 2
    assert value(found, "floodgate_backlog_jobs", lane="batch", state="running") == 0
    assert "floodgate_upstream_requests" in found
    assert found["floodgate_upstream_requests"] == []


async def test_own_registry_nothing_in_the_global_one_and_two_apps_coexist(
    tmp_path: Path,
) -> None:
    one, two = make_scheduler(tmp_path / "1.db"), make_scheduler(tmp_path / "2.db")
    async with (
        one,
        two,
        serve(admin_app(one)) as url1,
        serve(admin_app(two)) as url2,
        httpx.AsyncClient() as client,
    ):
        for url in (url1, url2):
            assert "floodgate_lane_queued" in (await client.get(f"{url}/metrics")).text
    global_text = prometheus_client.generate_latest(prometheus_client.REGISTRY).decode()
    assert "floodgate_" not in global_text


async def test_backlog_up_is_0_when_the_counts_cannot_be_read(tmp_path: Path) -> None:
    sched = make_scheduler(tmp_path / "x.db")  # never opened
    async with serve(admin_app(sched)) as url, httpx.AsyncClient(base_url=url) as client:
        found = samples((await client.get("/metrics")).text)
    assert value(found, "floodgate_backlog_up") == 0
    assert value(found, "floodgate_scheduler_state", state="new") == 1
    assert "floodgate_backlog_jobs" not in found


def test_upstreams_breakers_and_error_classes_are_rendered() -> None:
    empty = LatencySummary(0, None, None, None, None, None)
    lane = LaneStats(
        "batch", 4, 100, queued=1, running=2, admitted=9, completed=5, failed=1, cancelled=0,
        shed=MappingProxyType({}), wait=empty, run=empty, gated=True, durable=True,
    )  # fmt: skip
    upstream = UpstreamStats(
        name="openai",
        breaker="open",
        requests=120,
        successes=100,
        failures=MappingProxyType({"rate_limited": 15, "server_error": 5}),
        error_rate=0.25,
        latency_p95=1.5,
        paused_for=12.0,
        concurrency_limit=3,
        rate_limit_remaining=MappingProxyType({"requests": 40.0}),
    )
    stats = SchedulerStats(
        lanes=MappingProxyType({"batch": lane}),
        running=2,
        max_concurrency=10,
        state="running",
        gate_open=False,
        gate_reason="upstream openai: breaker open",
        upstreams=MappingProxyType({"openai": upstream}),
    )
    registry = prometheus_client.CollectorRegistry(auto_describe=False)

    class Snapshot:
        def collect(self) -> list[prometheus_client.Metric]:
            return metric_families(stats, {"batch": {"queued": 1}}, backlog_up=True)

    registry.register(Snapshot())  # type: ignore[arg-type]
    found = samples(prometheus_client.generate_latest(registry).decode())
    up = "floodgate_upstream"
    assert value(found, f"{up}_requests", f"{up}_requests_total", upstream="openai") == 120
    failures = f"{up}_failures"
    assert (
        value(found, failures, f"{failures}_total", upstream="openai", **{"class": "rate_limited"})
        == 15
    )
    assert value(found, f"{up}_breaker_state", upstream="openai", state="open") == 1
    assert value(found, f"{up}_breaker_state", upstream="openai", state="closed") == 0
    assert value(found, f"{up}_error_rate", upstream="openai") == 0.25
    assert value(found, f"{up}_latency_p95_seconds", upstream="openai") == 1.5
    assert value(found, f"{up}_paused_seconds", upstream="openai") == 12
    assert value(found, f"{up}_rate_limit_remaining", upstream="openai", kind="requests") == 40
    assert value(found, "floodgate_scheduler_max_concurrency") == 10
    assert value(found, "floodgate_backlog_jobs", lane="batch", state="dead") == 0
    wait = "floodgate_lane_wait_seconds"
    assert value(found, wait, f"{wait}_count", lane="batch") == 0
    assert not [s for s in found[wait] if "quantile" in s.labels], "no quantiles before data"
