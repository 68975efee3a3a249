"""The drill's blip targets: served share, first success, goodput, drained, and the summary."""

from __future__ import annotations

import math

import pytest

from workers.drill.config import PROFILES, PhaseSpan, Profile, UpstreamConfig
from workers.drill.records import InteractiveResult, RequestEvent, RunRecord
from workers.drill.report import Report
from workers.drill.summary import format_figure, summarize
from workers.drill.targets import (
    JUDGED,
    backlog_busy,
    backlog_drained,
    batch_goodput,
    evaluate,
    evaluate_measures,
    first_success,
    interactive_served,
    measure,
    outage_end,
)

SPANS = (
    PhaseSpan("normal", "normal", 0.0, 10.0),
    PhaseSpan("outage", "down", 10.0, 20.0),
    PhaseSpan("degraded", "degraded", 20.0, 25.0),
    PhaseSpan("recovery", "normal", 25.0, 40.0),
)
UPSTREAM = UpstreamConfig(rate_limit=40.0, burst=5.0, degraded_error_rate=0.3)


def call(phase: str, latency: float | None, outcome: str = "ok") -> InteractiveResult:
    return InteractiveResult(0.0, phase, latency, outcome, 200 if outcome == "ok" else None)


def ev(t: float, lane: str, status: int, phase: str = "normal") -> RequestEvent:
    return RequestEvent(t, phase, lane, status, t + 0.05)


# -------------------------------------------------------------- interactive served


def test_served_is_over_what_the_upstream_allowed_in_each_up_phase() -> None:
    results = (
        [call("normal", 0.1)] * 10
        + [call("degraded", 0.5)] * 7  # of 10: the 30 % error rate allows 7
        + [call("degraded", 0.5, "upstream_error")] * 3
        + [call("recovery", 0.1)] * 9
        + [call("recovery", 2.5)]  # a 200, but past the 2 s end-to-end deadline
        + [call("outage", 0.1, "shed")] * 40  # the outage is not an up phase
    )
    got = interactive_served(results, SPANS, UPSTREAM, deadline=2.0)
    assert got is not None
    by_phase = {p.phase: (p.issued, p.allowed, p.served) for p in got.phases}
    assert by_phase["normal"] == (10, 10.0, 10)
    assert by_phase["degraded"][0] == 10
    assert by_phase["degraded"][1] == pytest.approx(7.0)
    assert by_phase["degraded"][2] == 7
    assert by_phase["recovery"] == (10, 10.0, 9)
    assert "outage" not in by_phase
    assert got.allowed == pytest.approx(27.0)
    assert got.served == 26
    assert got.share == pytest.approx(26 / 27)


def test_served_counts_only_200s_and_may_exceed_what_was_allowed() -> None:
    results = [call("degraded", 0.4)] * 10 + [call("normal", 0.1, "rate_limited")] * 10
    got = interactive_served(results, SPANS, UPSTREAM, deadline=2.0)
    assert got is not None
    assert got.served == 10  # the 429s are not served
    assert got.share == pytest.approx(10 / 17)
    only_degraded = interactive_served([call("degraded", 0.4)] * 10, SPANS, UPSTREAM, 2.0)
    assert only_degraded is not None
    assert only_degraded.share == pytest.approx(10 / 7)  # retries beat the error rate
    assert interactive_served([call("outage", 0.1)], SPANS, UPSTREAM, 2.0) is None


# -------------------------------------------------------------- first success


def test_first_success_is_the_earliest_200_arriving_after_the_outage() -> None:
    assert outage_end(SPANS) == 20.0
    events = [
        ev(19.9, "batch", 200, "outage"),  # before the end: not it
        ev(20.0, "interactive", 503, "degraded"),
        ev(22.5, "batch", 200, "degraded"),
        RequestEvent(21.2, "degraded", "interactive", 200, 21.9),  # logged later, arrived first
        ev(23.0, "interactive", 500, "degraded"),
    ]
    got = first_success(events, since=20.0)
    assert got is not None
    assert got.arrival == pytest.approx(1.2)
    assert got.answered == pytest.approx(1.9)
    assert got.lane == "interactive"
    assert first_success(events[:2], since=20.0) is None
    exact = first_success([RequestEvent(20.0, "degraded", "batch", 200)], since=20.0)
    assert exact is not None
    assert (exact.arrival, exact.answered) == (0.0, None)
    assert outage_end(SPANS[:1]) is None


# -------------------------------------------------------------- batch goodput


def test_backlog_busy_needs_pending_work_throughout_the_bin() -> None:
    accepted = [0.5, 0.5, 3.2]
    done = [1.5, 2.5, 3.5]
    assert backlog_busy(accepted, done, 0.5, 1.5)  # 2 pending, the first done at 1.5
    assert not backlog_busy(accepted, done, 2.0, 3.0)  # empty from 2.5
    assert not backlog_busy(accepted, done, 3.0, 4.0)  # empty at 3.0, a job arrives at 3.2
    assert not backlog_busy(accepted, done, 0.0, 1.0)  # nothing accepted yet at 0.0
    assert not backlog_busy([], [], 0.0, 1.0)


def goodput_log() -> tuple[list[RequestEvent], list[float], list[float]]:
    """100 jobs at t=0; 36 batch 200s/s in normal, 18/s in recovery until t=30.5."""
    requests: list[RequestEvent] = []
    done: list[float] = []
    for second in range(10):  # normal: 36 batch 200s + 4 interactive 200s per second
        for i in range(36):
            t = second + (i + 0.5) / 36
            requests.append(ev(t, "batch", 200))
        requests += [ev(second + 0.1 * k, "interactive", 200) for k in range(1, 5)]
        # interactive 429s take no token: they must not shrink the denominator
        requests += [ev(second + 0.95, "interactive", 429)] * 10
    done = [0.1 * k for k in range(1, 51)]  # 50 jobs done by 5.0 s: 50 left
    for second in range(25, 31):  # recovery: 18 batch 200s per second
        for i in range(18):
            requests.append(ev(second + (i + 0.5) / 18, "batch", 200, "recovery"))
        requests += [ev(second + 0.1 * k, "interactive", 200, "recovery") for k in range(1, 5)]
    done += [25.0 + 0.11 * k for k in range(1, 51)]  # the last one at 30.5
    return requests, [0.0] * 100, done


def test_goodput_is_the_median_over_bins_where_a_backlog_waited() -> None:
    requests, accepted, done = goodput_log()
    got = batch_goodput(requests, accepted, done, SPANS, rate_limit=40.0)
    assert got is not None
    # normal: bins 2-3 and 3-4 s (ramp skipped; a job is pending until 5 s... the
    # backlog is 50 jobs and never empties in normal): 2..10 s -> 8 bins of 36 / 36
    # recovery: 27-28, 28-29, 29-30 (30-31 empties at 30.5): 3 bins of 18 / 36
    assert got.bins == 11
    assert got.median == pytest.approx(1.0)
    assert got.low == pytest.approx(0.5)
    assert got.high == pytest.approx(1.0)


def test_goodput_median_falls_when_recovery_dominates_and_none_without_a_backlog() -> None:
    requests, accepted, done = goodput_log()
    recovery_only = [r for r in requests if r.phase == "recovery"]
    got = batch_goodput(recovery_only, accepted, done, SPANS, rate_limit=40.0)
    assert got is not None
    assert got.bins == 11
    assert got.median == pytest.approx(0.0)  # no batch 200s in the 8 normal bins
    assert batch_goodput(requests, [], [], SPANS, rate_limit=40.0) is None
    later = batch_goodput(requests, accepted, done, SPANS, rate_limit=40.0, ramp=3.0)
    assert later is not None
    assert later.bins == 7 + 2  # normal 3-10 s, recovery 28-30 s
    # no whole bin after a 9.5-s ramp in normal; recovery is empty from 30.5 s on
    assert batch_goodput(requests, accepted, done, SPANS, rate_limit=40.0, ramp=9.5) is None


# -------------------------------------------------------------- drained


def test_drained_needs_every_job_done_by_the_end_when_capacity_allows() -> None:
    # capacity: (40 - 4) x 25 s of normal + recovery = 900 jobs
    done = backlog_drained([1.0, 2.0, 39.0], 3, 40.0, SPANS, 40.0, 4.0)
    assert done.capacity == pytest.approx(900.0)
    assert done.applicable
    assert done.drained
    assert done.last == 39.0
    late = backlog_drained([1.0, 2.0, 41.0], 3, 40.0, SPANS, 40.0, 4.0)
    assert (late.drained, late.done, late.last) == (False, 2, None)
    too_many = backlog_drained([1.0] * 901, 901, 40.0, SPANS, 40.0, 4.0)
    assert too_many.drained
    assert not too_many.applicable
    assert not backlog_drained([], 0, 40.0, SPANS, 40.0, 4.0).applicable


# -------------------------------------------------------------- verdicts and summary


def blip_run(profile: Profile, *, variant: str = "defaults", slow_start: float = 0.5) -> RunRecord:
    """A blip-short run: batch at 30/s in normal (180 jobs), 18/s in recovery (120 jobs),
    interactive 4/s; the first 200 after the outage arrives ``slow_start`` s after it."""
    normal, outage, _, recovery = profile.spans
    interactive = [
        call(span.name, 0.1, "upstream_error" if span.mode == "down" else "ok")
        for span in profile.spans
        for _ in range(int((span.end - span.start) * profile.interactive_rate))
    ]
    requests = [ev(normal.start + (i + 0.5) / 30, "batch", 200) for i in range(180)]
    requests += [ev(outage.start + 0.5, "batch", 503, "outage")]
    requests += [ev(outage.end + slow_start, "interactive", 200, "degraded")]
    requests += [ev(recovery.start + (i + 0.5) / 18, "batch", 200, "recovery") for i in range(120)]
    for span in (normal, recovery):
        ticks = int((span.end - span.start) * 4)
        requests += [
            ev(span.start + 0.1 + k / 4, "interactive", 200, span.name) for k in range(ticks)
        ]
    completions = [r.t for r in requests if r.lane == "batch" and r.status == 200]
    return RunRecord(
        client="floodgate",
        variant=variant,
        spans=profile.spans,
        end=profile.duration,
        requests=requests,
        interactive=interactive,
        completions=completions,
        samples=[],
        batch_accepted=300,
        batch_rejected=0,
        batch_done=300,
        batch_duplicates=0,
        batch_lost=0,
        lost_detail="",
        peak_in_flight=2,
        accepted_at=[0.0] * 300,
    )


def test_blip_verdicts_name_the_variant_and_judge_the_blip_set() -> None:
    profile = PROFILES["blip-short"]
    verdicts = evaluate(profile, [blip_run(profile), blip_run(profile, variant="rpm")])
    judged = [v for v in verdicts if v.judged]
    assert [v.key for v in judged[::2]] == list(JUDGED["blip"])
    assert {v.run for v in verdicts} == {"Floodgate defaults", "Floodgate rpm"}
    by_key = {v.key: v for v in judged if v.run == "Floodgate defaults"}
    assert by_key["served"].passed is True
    assert by_key["first_success"].passed is True
    assert "0.50s after the outage ended" in by_key["first_success"].figure
    # 4 normal bins at 30 / 36, 4 recovery bins at 18 / 36: median 67 %
    assert by_key["goodput"].passed is False
    assert by_key["goodput"].figure.startswith("median 67% over 8 bins")
    assert by_key["drained"].passed is True
    assert by_key["errors"].passed is True
    assert all(v.baseline == "" for v in verdicts)  # no naive run: no baseline
    outage = next(v for v in verdicts if v.key == "outage")
    assert outage.passed is None
    assert not outage.judged

    slow = evaluate(profile, [blip_run(profile, slow_start=3.5)])
    first = next(v for v in slow if v.key == "first_success")
    assert first.passed is False  # a batch 200 at 3.03 s, the interactive one at 3.1 s
    assert first.figure.startswith("3.03s after the outage ended (batch")


def test_repeat_summary_gives_median_min_max_per_run_and_figure() -> None:
    profile = PROFILES["blip-short"]
    reports = []
    for slow in (0.5, 2.0, 1.0):
        runs = [blip_run(profile, slow_start=slow)]
        measures = [measure(profile, run) for run in runs]
        verdicts = evaluate_measures(profile, measures)
        reports.append(Report(profile, verdicts, runs, None, 1.0, measures))
    text = summarize(reports)
    line = next(x for x in text.splitlines() if "first 200 after the outage" in x)
    assert line.split(" | ")[2:5] == ["1.00s", "0.50s", "2.00s"]
    assert "| 3 of 3 |" in line
    lost = next(x for x in text.splitlines() if "accepted batch jobs lost" in x)
    assert lost.split(" | ")[2:5] == ["0", "0", "0"]
    assert "| Floodgate defaults | first success after the outage | yes | 3 of 3 | 0 |" in text
    assert format_figure(math.inf, "seconds") == "miss"
    assert format_figure(0.955, "share") == "95.5%"
