"""``floodgate drill`` / ``python -m workers.drill``: run both clients, report, plot.

The same profile is played twice, each time against a fresh simulated
upstream served by uvicorn on 127.0.0.1: first through Floodgate (a durable
batch lane on a fresh SQLite backlog, an interactive lane), then through the
naive baseline. Then the targets are computed, the report is printed and
written as ``report.md`` beside ``timeline.png`` in ``--out``.

The exit status is 0 when the drill ran, whatever the verdicts (``--strict``:
1 unless every target passed); 2 on bad arguments; 130 on Ctrl-C.
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
from .report import Report
from .scenario import Scenario, run_scenario
from .server import serve
from .targets import evaluate
from .upstream import SimulatedLLM

__all__ = ["drill", "run_drill"]

Progress = Callable[[str], None]


def _record(
    client: str,
    profile: Profile,
    scenario: Scenario,
    upstream: SimulatedLLM,
    tally: Tally,
    lost: int,
    notes: list[str],
) -> RunRecord:
    return RunRecord(
        client=client,
        spans=profile.spans,
        end=scenario.end,
        # what arrived after the script ended (shutdown) is not part of the drill
        requests=[r for r in upstream.events if r.t <= scenario.finished],
        interactive=scenario.interactive,
        completions=list(tally.completions),
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


async def play_floodgate(profile: Profile, backlog: Path, progress: Progress) -> RunRecord:
    timeline = Timeline()
    upstream = SimulatedLLM(profile.upstream, timeline)
    tally = Tally(timeline)
    async with serve(upstream) as url, open_floodgate(profile, url, tally, backlog) as client:
        scenario = await run_scenario(
            profile, upstream, client, tally, timeline, lambda m: progress(f"floodgate: {m}")
        )
    lost, pending, detail = await audit_backlog(profile, backlog, tally.accepted)
    progress(f"floodgate: done; {detail}")
    note = f"{detail}; {pending} still pending for the next worker"
    return _record("floodgate", profile, scenario, upstream, tally, lost, [note, *client.notes])


async def play_naive(profile: Profile, progress: Progress) -> RunRecord:
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
    return _record("naive", profile, scenario, upstream, tally, unfinished, [note, *client.notes])


async def drill(
    profile: Profile, out_dir: Path, backlog: Path, progress: Progress = print
) -> Report:
    """Run both clients through ``profile``; write ``report.md`` and ``timeline.png``."""
    started = time.perf_counter()
    floodgate = await play_floodgate(profile, backlog, progress)
    naive = await play_naive(profile, progress)
    verdicts = evaluate(profile, floodgate, naive)
    wall = time.perf_counter() - started
    png = plot_timeline(out_dir / "timeline.png", profile, [floodgate, naive])
    report = Report(profile, verdicts, [floodgate, naive], png, wall)
    (out_dir / "report.md").write_text(report.markdown(), encoding="utf-8")
    return report


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="floodgate drill",
        description="Replay a compressed outage against a local simulated LLM API, through "
        "Floodgate and through a naive client, and report PASS/FAIL against the targets.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="the short profile (~20 s instead of ~80 s)"
    )
    parser.add_argument(
        "--profile", choices=tuple(PROFILES), default=None, help="the profile (default: full)"
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
        help="SQLite backlog file for Floodgate; must not exist yet "
        "(default: a fresh temporary file, removed afterwards)",
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 unless every target passed")
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
    profile = PROFILES[args.profile or ("quick" if args.quick else "full")]
    out_dir: Path = args.out
    given: Path | None = args.backlog
    if given is not None and given.exists():
        parser.error(f"--backlog {given} exists; the drill needs a fresh file")
    tmp = None if given is not None else Path(tempfile.mkdtemp(prefix="floodgate-drill-"))
    backlog = given if given is not None else Path(tmp or ".") / "backlog.db"
    out_dir.mkdir(parents=True, exist_ok=True)
    say = _progress_printer()
    say(f"drill profile {profile.name}: ~{2 * profile.duration:.0f}s; backlog {backlog}")
    try:
        report = asyncio.run(drill(profile, out_dir, backlog, say))
    except KeyboardInterrupt:
        print("interrupted", flush=True)
        return 130
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    print()
    print(report.text(), end="", flush=True)
    print(f"\nwrote {out_dir / 'report.md'} and {report.png}")
    return 1 if args.strict and not report.passed else 0
