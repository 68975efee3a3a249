"""The outage drill: its simulated upstream over real HTTP, its target math, one tiny run."""

from __future__ import annotations

import asyncio
import contextlib
import math
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from scheduler.testing import eventually
from workers.drill import drill, run_drill
from workers.drill.config import PROFILES, HealthTiming, Phase, Profile, UpstreamConfig
from workers.drill.records import InteractiveResult, RequestEvent, RunRecord
from workers.drill.run import repeat_drill
from workers.drill.server import listening_socket, serve
from workers.drill.targets import (
    drain,
    error_share,
    evaluate,
    interactive_latency,
    nearest_rank,
    requests_in_phase,
)
from workers.drill.upstream import LANE_HEADER, SimulatedLLM, format_duration

RATE_HEADERS = (
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests",
)


@contextlib.asynccontextmanager
async def running(config: UpstreamConfig) -> AsyncIterator[tuple[SimulatedLLM, httpx.AsyncClient]]:
    upstream = SimulatedLLM(config)
    async with serve(upstream) as url, httpx.AsyncClient(base_url=url, timeout=5.0) as http:
        assert url.startswith("http://127.0.0.1:")
        yield upstream, http


async def complete(http: httpx.AsyncClient, lane: str = "batch") -> httpx.Response:
    return await http.post("/v1/complete", json={"prompt": "hi"}, headers={LANE_HEADER: lane})


# -------------------------------------------------------------- the simulated upstream


async def test_the_upstream_s_connections_send_without_nagle_delays() -> None:
    """Accepted connections get TCP_NODELAY (asyncio sets it only on a socket whose proto
    is TCP): without it each answer's second write waited ~40 ms for a delayed ACK."""
    sock = listening_socket("127.0.0.1")
    seen: list[int] = []

    async def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(
            writer.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        )
        writer.close()

    server = await asyncio.start_server(accepted, sock=sock)
    try:
        host, port = sock.getsockname()
        _, writer = await asyncio.open_connection(host, port)
        await eventually(lambda: seen, what="the server accepted the connection")
        writer.close()
    finally:
        server.close()
        await server.wait_closed()
    assert sock.proto == socket.IPPROTO_TCP
    assert seen == [1]


async def test_normal_answers_carry_rate_limit_headers() -> None:
    async with running(UpstreamConfig(service_time=0.01, burst=10, rate_limit=5)) as (up, http):
        response = await complete(http, "interactive")
    assert response.status_code == 200
    assert response.json() == {"text": "a completion"}
    assert response.headers["x-ratelimit-limit-requests"] == "10"
    assert int(response.headers["x-ratelimit-remaining-requests"]) == 9
    assert response.headers["x-ratelimit-reset-requests"].endswith("ms")
    assert up.counts[("normal", 200)] == 1
    assert up.events[0].lane == "interactive"


async def test_empty_token_bucket_answers_429_with_retry_after() -> None:
    config = UpstreamConfig(service_time=0.001, burst=3, rate_limit=0.5)
    async with running(config) as (up, http):
        answers = [await complete(http) for _ in range(5)]
    assert [r.status_code for r in answers] == [200, 200, 200, 429, 429]
    limited = answers[3]
    assert int(limited.headers["retry-after"]) >= 1  # whole seconds until a token is back
    assert limited.headers["x-ratelimit-remaining-requests"] == "0"
    for name in RATE_HEADERS:
        assert name in limited.headers
    assert up.counts[("normal", 429)] == 2


async def test_concurrency_cap_is_enforced_with_429() -> None:
    config = UpstreamConfig(max_in_flight=2, service_time=0.3, burst=100, rate_limit=100)
    async with running(config) as (up, http):
        answers = await asyncio.gather(*(complete(http) for _ in range(5)))
    statuses = sorted(r.status_code for r in answers)
    assert statuses == [200, 200, 429, 429, 429]
    assert all(r.headers["retry-after"] == "1" for r in answers if r.status_code == 429)
    assert up.peak_in_flight == 2
    assert up.in_flight == 0


async def test_down_mode_answers_503_at_once_and_control_endpoint_switches() -> None:
    async with running(UpstreamConfig(service_time=0.2, down_retry_after=3)) as (up, http):
        switched = await http.post("/control", json={"mode": "down", "phase": "outage"})
        assert switched.status_code == 200
        assert switched.json()["mode"] == "down"
        down = await complete(http)
        up.set_phase("recovery", "normal")
        back = await complete(http)
        bad = await http.post("/control", json={"mode": "sideways"})
        stats = (await http.get("/stats")).json()
    assert down.status_code == 503
    assert down.headers["retry-after"] == "3"
    assert down.elapsed.total_seconds() < 0.15  # no service time when down
    for name in RATE_HEADERS:
        assert name in down.headers
    assert back.status_code == 200
    assert bad.status_code == 400
    assert stats["requests"] == {"outage": {"503": 1}, "recovery": {"200": 1}}
    assert requests_in_phase(up.events, "outage") == 1


async def test_degraded_mode_is_slow_and_fails_some() -> None:
    config = UpstreamConfig(degraded_service_time=0.1, degraded_error_rate=1.0)
    async with running(config) as (up, http):
        up.set_phase("degraded", "degraded")
        answers = await asyncio.gather(*(complete(http) for _ in range(4)))
    assert {r.status_code for r in answers} <= {500, 503}
    assert all(r.elapsed.total_seconds() >= 0.08 for r in answers)


async def test_blip_upstream_has_a_small_burst_and_counts_only_answers() -> None:
    config = PROFILES["blip"].upstream
    assert (config.rate_limit, config.burst) == (40.0, 5.0)
    async with running(config) as (up, http):
        up.reset_bucket()
        answers = await asyncio.gather(*(complete(http) for _ in range(12)))
    ok = [r for r in answers if r.status_code == 200]
    limited = [r for r in answers if r.status_code == 429]
    assert 5 <= len(ok) <= 7  # the bucket (5), plus what refilled while they arrived
    assert len(ok) + len(limited) == 12
    assert all(r.headers["retry-after"] == "1" for r in limited)
    assert all(r.headers["x-ratelimit-limit-requests"] == "5" for r in answers)
    assert up.counts[("normal", 200)] == len(ok)
    assert up.counts[("normal", 429)] == len(limited)
    assert len(up.events) == 12
    assert all(e.answered is not None and e.answered >= e.t for e in up.events)
    assert up.in_flight == 0


def test_reset_duration_is_written_like_openai() -> None:
    assert format_duration(0.35) == "350ms"
    assert format_duration(0.0) == "0ms"
    assert format_duration(1.5) == "1.5s"


# -------------------------------------------------------------- the target math


def test_nearest_rank_percentile() -> None:
    values = [float(i) for i in range(1, 101)]
    assert nearest_rank(values, 99) == 99.0
    assert nearest_rank(values, 100) == 100.0
    assert nearest_rank([0.1, math.inf], 99) == math.inf
    with pytest.raises(ValueError, match="no values"):
        nearest_rank([], 99)


def result(phase: str, latency: float | None, outcome: str = "ok") -> InteractiveResult:
    return InteractiveResult(0.0, phase, latency, outcome)


def test_interactive_latency_counts_misses_as_infinite() -> None:
    results = [result("normal", 0.1) for _ in range(199)] + [result("normal", 0.01, "shed")]
    lat = interactive_latency(results, "normal")
    assert lat is not None
    assert (lat.count, lat.misses, lat.p99) == (200, 1, 0.1)  # 1 miss in 200 is within p99
    results += [result("normal", 0.02, "rate_limited"), result("normal", None, "unfinished")]
    lat = interactive_latency(results, "normal")
    assert lat is not None
    assert lat.misses == 3
    assert math.isinf(lat.p99)
    errored = interactive_latency([result("degraded", 0.3, "upstream_error")], "degraded")
    assert errored is not None
    assert errored.p99 == 0.3  # the upstream's own 5xx is an answer
    assert interactive_latency(results, "outage") is None


def test_drain_rate_until_the_backlog_empties() -> None:
    before = [1.0] * 20
    after = [10.0 + 0.1 * (i + 1) for i in range(80)]  # 80 jobs in 8 s
    got = drain(before + after, accepted=100, start=10.0, end=30.0, capacity=20.0)
    assert got is not None
    assert got.emptied
    assert got.pending_at_start == 80
    assert got.window == pytest.approx(8.0)
    assert got.rate == pytest.approx(10.0)
    assert got.share == pytest.approx(0.5)


def test_drain_rate_when_the_run_ends_first() -> None:
    got = drain([11.0] * 30, accepted=100, start=10.0, end=20.0, capacity=100.0)
    assert got is not None
    assert not got.emptied
    assert (got.completed, got.window, got.rate) == (30, 10.0, 3.0)
    assert drain([1.0] * 5, accepted=5, start=10.0, end=20.0, capacity=1.0) is None


def test_error_share_counts_429_and_503_from_a_time_on() -> None:
    events = [
        RequestEvent(1.0, "outage", "batch", 503),
        RequestEvent(5.0, "recovery", "batch", 200),
        RequestEvent(6.0, "recovery", "batch", 429),
        RequestEvent(7.0, "recovery", "batch", 500),
        RequestEvent(8.0, "recovery", "interactive", 200),
    ]
    assert error_share(events, since=5.0) == (1, 4, 0.25)
    assert error_share([], since=0.0) == (0, 0, 0.0)


def synthetic_run(client: str, profile: Profile, *, outage: int, lost: int) -> RunRecord:
    spans = profile.spans
    recovery = spans[-1]
    requests = [RequestEvent(spans[1].start + 0.01, "outage", "batch", 503)] * outage
    requests += [RequestEvent(recovery.start + 0.1, "recovery", "batch", 200)] * 100
    # 100 jobs pending at recovery, all done at 90 % of capacity
    completions = [recovery.start + (i + 1) / (0.9 * profile.upstream.capacity) for i in range(100)]
    interactive = [result(span.name, 0.1) for span in spans for _ in range(10)]
    return RunRecord(
        client=client,
        spans=spans,
        end=profile.duration,
        requests=requests,
        interactive=interactive,
        completions=completions,
        samples=[],
        batch_accepted=100,
        batch_rejected=0,
        batch_done=100 - lost,
        batch_duplicates=0,
        batch_lost=lost,
        lost_detail="",
        peak_in_flight=1,
    )


def test_evaluate_judges_floodgate_against_the_targets() -> None:
    profile = PROFILES["full"]
    good = synthetic_run("floodgate", profile, outage=10, lost=0)
    naive = synthetic_run("naive", profile, outage=100, lost=3)
    verdicts = evaluate(profile, [good, naive])
    judged = [v for v in verdicts if v.judged]
    assert [v.key for v in judged] == ["lost", "p99", "outage", "drain"]
    assert [v.passed for v in judged] == [True, True, True, True]
    assert all(v.run == "Floodgate" for v in verdicts)  # the naive run is only a baseline
    assert "3 of 100" in judged[0].baseline

    noisy = synthetic_run("floodgate", profile, outage=11, lost=1)
    noisy.requests += [RequestEvent(profile.spans[-1].start + 0.2, "recovery", "batch", 429)] * 2
    noisy.interactive.append(result("recovery", 0.01, "shed"))
    verdicts = evaluate(profile, [noisy, naive])
    assert [v.passed for v in verdicts if v.judged] == [False, False, False, False]


# -------------------------------------------------------------- end to end


async def test_smoke_drill_runs_writes_outputs_and_loses_no_batch_job(tmp_path: Path) -> None:
    profile = PROFILES["smoke"]
    report = await drill(profile, tmp_path, tmp_path / "backlogs", progress=lambda _: None)
    assert [run.label for run in report.runs] == ["Floodgate tuned", "Floodgate defaults", "naive"]
    assert sorted(p.name for p in (tmp_path / "backlogs").glob("*.db")) == [
        "defaults.db",
        "tuned.db",
    ]
    *floodgate, naive = report.runs
    for run in floodgate:
        assert run.batch_accepted == profile.batch_jobs
        assert run.batch_lost == 0, run.lost_detail
        assert len(run.accepted_at) == profile.batch_jobs
    lost = [v for v in report.verdicts if v.key == "lost"]
    assert [(v.run, v.passed) for v in lost] == [
        ("Floodgate tuned", True),
        ("Floodgate defaults", True),
    ]
    assert naive.batch_accepted == profile.batch_jobs
    assert requests_in_phase(naive.requests, "outage") > 0
    # honest in-flight counts: the naive client holds its seats retrying through the outage
    outage = profile.spans[1]
    held = [s.running_batch for s in naive.samples if outage.start + 0.2 < s.t < outage.end]
    assert held
    # (near the cap, never above it: a loaded machine may sample it between two retries)
    assert profile.upstream.max_in_flight - 2 <= max(held) <= profile.upstream.max_in_flight
    assert all(r.answered is not None and r.answered >= r.t for r in naive.requests)
    assert all(run.samples for run in report.runs)
    png = tmp_path / "timeline.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    markdown = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "no accepted batch job lost" in markdown
    assert "| Floodgate defaults | 0 of 120 | PASS |" in markdown
    assert "Also measured" in markdown
    assert "timeline.png" in markdown


def test_cli_refuses_an_existing_backlog(tmp_path: Path) -> None:
    existing = tmp_path / "old.db"
    existing.write_bytes(b"")
    with pytest.raises(SystemExit) as exc:
        run_drill(["--profile", "smoke", "--backlog", str(existing), "--out", str(tmp_path)])
    assert exc.value.code == 2


def test_cli_refuses_a_repeat_out_of_range(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        run_drill(["--profile", "smoke", "--repeat", "0", "--out", str(tmp_path)])
    assert exc.value.code == 2


def test_profile_refuses_an_unknown_variant() -> None:
    with pytest.raises(ValueError, match="variants"):
        Profile(name="x", phases=(Phase("normal", "normal", 1.0),), batch_jobs=1, variants=("x",))


async def test_repeat_plays_the_drill_n_times_and_summarizes(tmp_path: Path) -> None:
    tiny = Profile(
        name="tiny",
        phases=(
            Phase("normal", "normal", 0.4),
            Phase("outage", "down", 0.4),
            Phase("degraded", "degraded", 0.3),
            Phase("recovery", "normal", 0.5),
        ),
        batch_jobs=20,
        burst_at=0.1,
        burst_over=0.2,
        interactive_rate=10.0,
        health=HealthTiming(breaker_cooldown=0.3, breaker_max_cooldown=0.8, window=1.0),
        variants=("defaults",),
    )
    out = tmp_path / "out"
    reports, summary = await repeat_drill(tiny, out, tmp_path / "backlogs", 2, lambda _: None)
    assert len(reports) == 2
    assert all(
        [r.label for r in report.runs] == ["Floodgate defaults", "naive"] for report in reports
    )
    for i in (1, 2):
        assert (out / f"run-{i}" / "report.md").is_file()
        assert (tmp_path / "backlogs" / f"run-{i}" / "defaults.db").is_file()
    assert (out / "summary.md").read_text(encoding="utf-8") == summary
    lost = [line for line in summary.splitlines() if "accepted batch jobs lost" in line]
    assert [line.split(" | ")[0] for line in lost] == ["| Floodgate defaults", "| naive"]
    assert all(line.endswith("| 2 of 2 |") for line in lost)
    outage = next(line for line in summary.splitlines() if "during the outage" in line)
    counts = sorted(m.outage_requests for r in reports for m in r.measures if m.label != "naive")
    assert outage.split(" | ")[3:5] == [str(counts[0]), str(counts[1])]  # min, max
