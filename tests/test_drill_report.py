"""The drill report's words: "missed" means missed the deadline, the who-won headline,
a smoke run that judges only the invariant, the live-calls panel's rates."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from workers.drill import run as drill_run
from workers.drill import run_drill
from workers.drill.config import PROFILES, Profile
from workers.drill.records import InteractiveResult, RequestEvent, RunRecord
from workers.drill.report import Report, who_won
from workers.drill.targets import (
    evaluate_measures,
    interactive_latency,
    live_rates,
    measure,
    peak_pending,
)

from .test_drill import synthetic_run

FULL = PROFILES["full"]


def call(
    issued: float, phase: str, latency: float | None, outcome: str = "ok"
) -> InteractiveResult:
    return InteractiveResult(issued, phase, latency, outcome, 200 if outcome == "ok" else None)


def run_of(
    client: str,
    profile: Profile,
    *,
    latency: float,
    outage: int,
    recovery_503: int,
    drained_at: float,
    lost: int = 0,
) -> RunRecord:
    """A run whose live calls all take ``latency``, ``outage`` requests while down,
    ``recovery_503`` refusals after it, and 100 batch jobs all done by ``drained_at``."""
    spans = profile.spans
    down, recovery = spans[1], spans[-1]
    run = synthetic_run(client, profile, outage=0, lost=lost)
    run.interactive = [call(s.start + 0.1, s.name, latency) for s in spans if s.mode != "down"] * 10
    run.requests += [RequestEvent(down.start + 0.1, "outage", "batch", 503)] * outage
    run.requests += [RequestEvent(recovery.start + 0.1, "recovery", "batch", 503)] * recovery_503
    run.completions = [drained_at - 0.01 * i for i in range(100)][::-1]
    run.accepted_at = [0.5] * 100
    return run


def report_of(profile: Profile, runs: list[RunRecord]) -> Report:
    measures = [measure(profile, r) for r in runs]
    return Report(profile, evaluate_measures(profile, measures), runs, None, 1.0, measures)


def test_missed_counts_answers_after_the_deadline_not_only_unanswered_calls() -> None:
    late = [call(0.0, "normal", 31.85) for _ in range(200)]
    quick = [call(0.0, "normal", 0.1) for _ in range(6)]
    unanswered = [call(0.0, "normal", None, "unfinished"), call(0.0, "normal", 0.01, "shed")]
    lat = interactive_latency(late + quick + unanswered, "normal", deadline=2.0)
    assert lat is not None
    assert (lat.count, lat.late, lat.unanswered, lat.misses) == (208, 200, 2, 202)
    assert lat.p99 == 31.85  # 2 unanswered of 208 stay within the 1 %
    # without a deadline only the unanswered calls miss (the p99 target's own rule)
    plain = interactive_latency(late + quick + unanswered, "normal")
    assert plain is not None
    assert (plain.late, plain.misses) == (0, 2)


def test_the_report_says_a_late_p99_missed_its_deadline() -> None:
    naive = run_of("naive", FULL, latency=31.85, outage=900, recovery_503=50, drained_at=20.0)
    floodgate = run_of("floodgate", FULL, latency=0.2, outage=9, recovery_503=0, drained_at=30.0)
    floodgate.variant = "tuned"
    report = report_of(FULL, [floodgate, naive])
    p99 = next(v for v in report.verdicts if v.key == "p99")
    count = len(naive.interactive)
    assert f"{count}/{count} missed the 2s deadline ({count} answered late" in p99.baseline
    assert p99.baseline.startswith("p99 31.85s;")
    assert f"0/{count} missed the 2s deadline" in p99.figure
    assert p99.passed is True


def test_who_won_names_the_winner_of_each_contest_and_the_naive_memory() -> None:
    naive = run_of("naive", FULL, latency=31.85, outage=900, recovery_503=50, drained_at=20.0)
    floodgate = run_of("floodgate", FULL, latency=0.2, outage=9, recovery_503=0, drained_at=30.0)
    floodgate.variant = "tuned"
    measures = [measure(FULL, floodgate), measure(FULL, naive)]
    line = who_won(measures, FULL.interactive_deadline)
    assert line.startswith(
        "Floodgate tuned vs naive: Floodgate won live calls (100% vs 0% served within 2s), "
        "the outage "
        "(9 vs 900 requests sent into it) and recovery (0.0% vs 33.3% answered 429/503); "
    )
    assert line.endswith(
        "naive emptied its backlog first (at 20.0s; Floodgate at 30.0s) only by "
        "holding up to 100 jobs in memory, all lost on a crash"
    )
    assert "\n" not in line
    report = Report(
        FULL, evaluate_measures(FULL, measures), [floodgate, naive], None, 1.0, measures
    )
    lines = report.markdown().splitlines()
    assert lines[0].startswith("# Floodgate outage drill (full): Floodgate tuned ")
    assert lines[2] == f"**{line}**"  # right under the title

    # the other way round: the naive client wins what it wins, ties are called ties
    slow = run_of("floodgate", FULL, latency=9.0, outage=900, recovery_503=50, drained_at=20.0)
    line = who_won([measure(FULL, slow), measure(FULL, naive)], 2.0)
    assert line.startswith(
        "Floodgate vs naive: tied on live calls (0% vs 0% served within 2s), the outage"
    )
    assert line.endswith("; tied on the backlog (both at 20.0s)")
    stuck = run_of("naive", FULL, latency=31.85, outage=900, recovery_503=50, drained_at=99.0)
    line = who_won([measure(FULL, floodgate), measure(FULL, stuck)], 2.0)
    assert line.endswith(
        "; Floodgate emptied its backlog first (at 30.0s; naive had 100 left at the end)"
    )
    assert who_won([measure(FULL, naive)], 2.0) == ""


def test_in_memory_peak_is_what_a_crash_of_the_naive_client_would_lose() -> None:
    assert peak_pending([0.0, 0.0, 1.0, 5.0], [2.0, 3.0, 4.0, 6.0]) == 3
    assert peak_pending([], []) == 0
    naive = run_of("naive", FULL, latency=0.1, outage=1, recovery_503=0, drained_at=20.0)
    floodgate = run_of("floodgate", FULL, latency=0.1, outage=1, recovery_503=0, drained_at=20.0)
    assert measure(FULL, naive).in_memory_peak == 100
    assert measure(FULL, floodgate).in_memory_peak == 0  # in the backlog file
    lost = next(v for v in report_of(FULL, [floodgate, naive]).verdicts if v.key == "lost")
    assert lost.figure == "0 of 100"
    assert lost.baseline == "0 of 100 (memory only: up to 100 held at once, all lost on a crash)"
    batch = report_of(FULL, [floodgate, naive]).markdown()
    assert "| naive | 100 | 0 | 100 | 0 | 0 | 100 | 1 |" in batch
    assert "| Floodgate | 100 | 0 | 100 | 0 | 0 | 0 (on disk) | 1 |" in batch


def test_a_smoke_profile_judges_only_the_invariant_and_says_so() -> None:
    quick = PROFILES["quick"]
    assert quick.smoke
    assert PROFILES["smoke"].smoke
    assert not FULL.smoke
    naive = run_of("naive", quick, latency=0.1, outage=100, recovery_503=0, drained_at=5.0)
    # far too slow for the compressed targets: a real profile fails them
    slow = run_of("floodgate", quick, latency=9.0, outage=90, recovery_503=9, drained_at=8.9)
    report = report_of(quick, [slow, naive])
    assert [v.key for v in report.verdicts if v.judged] == ["lost"]
    assert [v.key for v in report.verdicts][:4] == ["lost", "p99", "outage", "drain"]
    assert report.passed  # nothing lost: --strict exits 0
    assert report.headline() == "smoke run, targets not judged; Floodgate lost no job"
    text = report.text()
    assert "Smoke run: this profile squeezes the incident into seconds" in text
    assert "[ (FAIL) ] Floodgate: p99 9.00s" in text
    judged = report_of(replace(quick, smoke=False), [slow, naive])
    assert not judged.passed

    lossy = run_of("floodgate", quick, latency=0.1, outage=1, recovery_503=0, drained_at=5, lost=2)
    broken = report_of(quick, [lossy, naive])
    assert not broken.passed  # --strict exits 1 on a lost job, smoke run or not
    assert broken.headline() == "smoke run, targets not judged; Floodgate LOST JOBS"


def test_live_rates_bin_calls_by_issue_time_served_within_the_deadline() -> None:
    results = [
        call(0.1, "normal", 0.3),
        call(0.2, "normal", 2.5),  # late
        call(1.4, "normal", None, "unfinished"),
        call(1.5, "normal", 0.2, "upstream_error"),  # answered, not served
        call(1.6, "normal", 1.9),
    ]
    rates = live_rates(results, deadline=2.0, end=2.0, width=0.5)
    assert rates.starts == [0.0, 0.5, 1.0, 1.5]
    assert rates.served == [2.0, 0.0, 0.0, 2.0]
    assert rates.missed == [2.0, 0.0, 2.0, 2.0]


@pytest.mark.parametrize(("lost", "status"), [(0, 0), (2, 1)])
def test_strict_on_a_smoke_run_exits_1_only_for_a_lost_job(
    lost: int,
    status: int,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    quick = PROFILES["quick"]
    naive = run_of("naive", quick, latency=0.1, outage=100, recovery_503=0, drained_at=5.0)
    # every timing target missed: a judged profile would exit 1 whatever was lost
    slow = run_of("floodgate", quick, latency=9.0, outage=90, recovery_503=9, drained_at=8.9)
    slow.batch_lost = lost

    async def fake_drill(profile: Profile, *_: object, **__: object) -> Report:
        assert profile is quick
        return report_of(profile, [slow, naive])

    monkeypatch.setattr(drill_run, "drill", fake_drill)
    assert run_drill(["--quick", "--strict", "--out", str(tmp_path / "out")]) == status
    out = capsys.readouterr().out
    assert "quick is a smoke run: targets shown, not judged; " in out
    assert ("ACCEPTED JOBS LOST" in out) == bool(lost)
