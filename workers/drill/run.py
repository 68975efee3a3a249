"""``floodgate drill`` / ``python -m workers.drill``: run every client, report, plot.

The profile is played once per Floodgate variant it lists (``tuned``,
``defaults``, ``rpm``), then through the naive baseline, one after another,
each time against a fresh simulated upstream served by uvicorn on 127.0.0.1
(and, for Floodgate, a fresh SQLite backlog). Then the targets are computed,
the report is printed and written as ``report.md`` beside ``timeline.png``
in ``--out``. ``--repeat N`` plays the whole drill N times (``run-1/`` ...
in ``--out``) and writes ``summary.md``: each figure's median, min and max.

The exit status is 0 when the drill ran, whatever the verdicts (``--strict``:
1 unless every judged target passed; a smoke profile such as ``quick``
judges only that no accepted job was lost); 2 on bad arguments; 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from .config import PROFILES, Profile
from .floodgate_client import audit_backlog, open_floodgate
from .naive import open_naive
from .plot import plot_timeline
from .records import RunRecord, Tally, Timeline
from .report import Report, who_won
from .scenario import Scenario, run_scenario
from .server import serve
from .summary import summarize
from .targets import evaluate_measures, measure
from .upstream import SimulatedLLM

__all__ = ["drill", "play_floodgate", "play_naive", "repeat_drill", "run_drill"]

#: most drills one command plays
MAX_REPEAT = 100

Progress = Callable[[str], None]


def _record(
    client: str,
    variant: str,
    profile: Profile,
    scenario: Scenario,
    upstream: SimulatedLLM,
    tally: Tally,
    lost: int,
    notes: list[str],
) -> RunRecord:
    return RunRecord(
        client=client,
        variant=variant,
        spans=profile.spans,
        end=scenario.end,
        # what arrived after the script ended (shutdown) is not part of the drill
        requests=[r for r in upstream.events if r.t <= scenario.finished],
        interactive=scenario.interactive,
        completions=list(tally.completions),
        accepted_at=list(tally.accepted_at),
        samples=scenario.samples,
        batch_accepted=tally.accepted,
        batch_rejected=tally.rejected,
        batch_done=len(tally.done),
        batch_duplicates=tally.duplicates,
        batch_lost=lost,
        lost_detail=notes[0] if notes else "",
        peak_in_flight=upstream.peak_in_flight,
        notes=notes,
    )


async def play_floodgate(
    profile: Profile, variant: str, backlog: Path, progress: Progress
) -> RunRecord:
    """One run through Floodgate set up as ``variant``, on a fresh ``backlog`` file."""
    timeline = Timeline()
    upstream = SimulatedLLM(profile.upstream, timeline)
    tally = Tally(timeline)
    name = f"floodgate {variant}"
    async with (
        serve(upstream) as url,
        open_floodgate(profile, url, tally, backlog, variant) as client,
    ):
        scenario = await run_scenario(
            profile, upstream, client, tally, timeline, lambda m: progress(f"{name}: {m}")
        )
    lost, pending, detail = await audit_backlog(profile, backlog, tally.accepted)
    progress(f"{name}: done; {detail}")
    note = f"Floodgate {variant}: {detail}; {pending} still pending for the next worker"
    return _record(
        "floodgate", variant, profile, scenario, upstream, tally, lost, [note, *client.notes]
    )


async def play_naive(profile: Profile, progress: Progress) -> RunRecord:
    """One run through the naive client."""
    timeline = Timeline()
    upstream = SimulatedLLM(profile.upstream, timeline)
    tally = Tally(timeline)
    async with serve(upstream) as url, open_naive(profile, url, tally) as client:
        scenario = await run_scenario(
            profile, upstream, client, tally, timeline, lambda m: progress(f"naive: {m}")
        )
        unfinished = tally.pending
    note = (
        f"naive: {unfinished} accepted batch jobs unfinished when the run stopped; they were "
        "held only in memory (lost if the process stops)"
    )
    progress(f"naive: done; {unfinished} batch jobs unfinished")
    return _record(
        "naive", "", profile, scenario, upstream, tally, unfinished, [note, *client.notes]
    )


async def drill(
    profile: Profile,
    out_dir: Path,
    backlog_dir: Path,
    progress: Progress = print,
    *,
    variants: Sequence[str] | None = None,
    naive: bool = True,
) -> Report:
    """Play ``profile`` through each Floodgate variant (default: the profile's), then
    the naive client; write ``report.md`` and ``timeline.png`` in ``out_dir``.

    Each Floodgate run gets a fresh backlog file ``backlog_dir/VARIANT.db``.
    """
    started = time.perf_counter()
    await asyncio.to_thread(backlog_dir.mkdir, parents=True, exist_ok=True)
    runs: list[RunRecord] = []
    for variant in profile.variants if variants is None else variants:
        backlog = backlog_dir / f"{variant}.db"
        if backlog.exists():
            raise FileExistsError(f"{backlog} exists; every run needs a fresh backlog")
        runs.append(await play_floodgate(profile, variant, backlog, progress))
    if naive:
        runs.append(await play_naive(profile, progress))
    measures = [measure(profile, run) for run in runs]
    verdicts = evaluate_measures(profile, measures)
    wall = time.perf_counter() - started
    headline = who_won(measures, profile.interactive_deadline)
    png = plot_timeline(out_dir / "timeline.png", profile, runs, headline)
    report = Report(profile, verdicts, runs, png, wall, measures)
    (out_dir / "report.md").write_text(report.markdown(), encoding="utf-8")
    return report


async def repeat_drill(
    profile: Profile, out_dir: Path, backlog_dir: Path, times: int, progress: Progress = print
) -> tuple[list[Report], str]:
    """Play the whole drill ``times`` times (``run-N/`` in both directories); the
    reports and the summary, also written as ``out_dir/summary.md``."""
    reports: list[Report] = []
    for i in range(1, times + 1):
        prefix = f"[drill {i}/{times}] "

        def say(message: str, prefix: str = prefix) -> None:
            progress(prefix + message)

        report = await drill(profile, out_dir / f"run-{i}", backlog_dir / f"run-{i}", say)
        progress(prefix + report.headline())
        reports.append(report)
    summary = summarize(reports)
    (out_dir / "summary.md").write_text(summary, encoding="utf-8")
    return reports, summary


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="floodgate drill",
        description="Replay an outage against a local simulated LLM API, through Floodgate "
        "(each of the profile's variants) and through a naive client, and report PASS/FAIL "
        "against the targets.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="the short profile (~35 s instead of ~2 min); a smoke run: its targets are shown, "
        "not judged, but for no accepted job lost",
    )
    parser.add_argument(
        "--profile",
        choices=tuple(PROFILES),
        default=None,
        help="the profile (default: full; blip: a 4-minute real-time incident per run)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("floodgate-drill"),
        help="where report.md and timeline.png go (default: ./floodgate-drill)",
    )
    parser.add_argument(
        "--backlog",
        type=Path,
        default=None,
        help="directory for Floodgate's SQLite backlogs (one fresh file per run); must not "
        "exist yet (default: a temporary directory, removed afterwards)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        metavar="N",
        help=f"play the whole drill N times (1-{MAX_REPEAT}); reports in run-1/ ... and "
        "summary.md (median, min, max of each figure) in --out",
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="exit 1 unless every judged target passed (a smoke run judges only that no "
        "accepted job was lost)",
    )
    return parser


def _progress_printer() -> Progress:
    t0 = time.perf_counter()

    def say(message: str) -> None:
        print(f"[{time.perf_counter() - t0:6.1f}s] {message}", flush=True)

    return say


def run_drill(argv: Sequence[str] | None = None) -> int:
    """The drill's command line; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.quick and args.profile not in (None, "quick"):
        parser.error("--quick and --profile disagree; give one of them")
    if not 1 <= args.repeat <= MAX_REPEAT:
        parser.error(f"--repeat must be within 1-{MAX_REPEAT}, got {args.repeat}")
    profile = PROFILES[args.profile or ("quick" if args.quick else "full")]
    out_dir: Path = args.out
    given: Path | None = args.backlog
    if given is not None and given.exists():
        parser.error(f"--backlog {given} exists; the drill needs a fresh directory")
    tmp = None if given is not None else Path(tempfile.mkdtemp(prefix="floodgate-drill-"))
    backlog_dir = given if given is not None else Path(tmp or ".")
    out_dir.mkdir(parents=True, exist_ok=True)
    say = _progress_printer()
    runs = len(profile.variants) + 1
    say(
        f"drill profile {profile.name}: {runs} runs ({', '.join(profile.variants)}, naive) "
        f"x {args.repeat}, ~{runs * profile.duration * args.repeat:.0f}s; backlogs in "
        f"{backlog_dir}"
    )
    try:
        if args.repeat == 1:
            report = asyncio.run(drill(profile, out_dir, backlog_dir, say))
            reports = [report]
        else:
            reports, summary = asyncio.run(
                repeat_drill(profile, out_dir, backlog_dir, args.repeat, say)
            )
    except KeyboardInterrupt:
        print("interrupted", flush=True)
        return 130
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    print()
    if args.repeat == 1:
        print(report.text(), end="", flush=True)
        print(f"\nwrote {out_dir / 'report.md'} and {report.png}")
    else:
        print(summary, end="", flush=True)
        print(f"\nwrote {out_dir / 'summary.md'} and run-1 ... run-{args.repeat} beside it")
    passed = all(r.passed for r in reports)
    if profile.smoke:
        print(
            f"{profile.name} is a smoke run: targets shown, not judged; "
            + ("no accepted job lost" if passed else "ACCEPTED JOBS LOST")
        )
    return 1 if args.strict and not passed else 0
