"""Helpers shared by every benchmark: options, progress, timing, statistics, reports.

Nothing here knows about a particular benchmark. A benchmark module exposes
``NAME`` and ``run(options) -> Outcome``; :func:`main` turns that into a
command line so each module also runs alone (``python -m benchmarks.NAME``).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import hashlib
import math
import os
import platform
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from workers.provenance import source_commit

__all__ = [
    "RESULTS_DIR",
    "Options",
    "Outcome",
    "Stopwatch",
    "Table",
    "add_common_arguments",
    "fmt_ms",
    "fmt_rate",
    "main",
    "median",
    "options_from",
    "percentile",
    "progress",
    "stopwatch",
    "verdict",
    "write_report",
]

#: where ``benchmarks/results/<name>.md`` files go by default
RESULTS_DIR = Path(__file__).resolve().parent / "results"

_T0 = time.perf_counter()


@dataclass(frozen=True, slots=True)
class Options:
    """What every benchmark is told: a short run or the full one, and where to write."""

    quick: bool = False
    results_dir: Path = RESULTS_DIR
    #: repetitions asked for with ``--repeat`` (``None``: the benchmark's own default;
    #: benchmarks with a fixed repetition count ignore it)
    repeat: int | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a benchmark hands back: did it meet its target, and where is the report."""

    name: str
    passed: bool
    summary: str
    report: Path


# ---------------------------------------------------------------- command line


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a short run (smaller N, fewer repetitions) for a smoke check; "
        "its figures are noisier and the report says so",
    )
    parser.add_argument(
        "--results-dir",
        type=Path,
        default=RESULTS_DIR,
        help=f"where to write <name>.md (default: {RESULTS_DIR})",
    )
    parser.add_argument(
        "--repeat",
        type=_positive_int,
        default=None,
        metavar="K",
        help="repetitions per measurement, for benchmarks that take it (pacing); "
        "default: each benchmark's own",
    )


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if not 1 <= value <= 100:
        raise argparse.ArgumentTypeError(f"must be within 1..100, got {value}")
    return value


def options_from(args: argparse.Namespace) -> Options:
    results_dir: Path = args.results_dir
    repeat: int | None = getattr(args, "repeat", None)
    return Options(quick=bool(args.quick), results_dir=results_dir, repeat=repeat)


def main(name: str, doc: str | None, run: Callable[[Options], Outcome]) -> int:
    """Run one benchmark from the command line; exit status 1 if it missed its target."""
    parser = argparse.ArgumentParser(prog=f"python -m benchmarks.{name}", description=doc)
    add_common_arguments(parser)
    outcome = run(options_from(parser.parse_args()))
    progress(f"{outcome.name}: {verdict(outcome.passed)}: {outcome.summary} -> {outcome.report}")
    return 0 if outcome.passed else 1


def progress(message: str) -> None:
    """One progress line on stdout, stamped with seconds since the process started."""
    print(f"[{time.perf_counter() - _T0:6.1f}s] {message}", flush=True)


# ---------------------------------------------------------------- timing


class Stopwatch:
    """Wall-clock seconds (``time.perf_counter``) of one ``with`` block, and the CPU
    seconds it used: this thread's (``time.thread_time``) and the whole process's
    (``time.process_time``, every thread)."""

    __slots__ = ("process_cpu", "seconds", "thread_cpu")

    def __init__(self) -> None:
        self.seconds = math.nan
        self.thread_cpu = math.nan
        self.process_cpu = math.nan


@contextlib.contextmanager
def stopwatch() -> Iterator[Stopwatch]:
    """Time a block after a full garbage collection, so earlier runs' garbage
    is not collected on this one's clock."""
    watch = Stopwatch()
    gc.collect()
    thread_start = time.thread_time()
    process_start = time.process_time()
    start = time.perf_counter()
    try:
        yield watch
    finally:
        watch.seconds = time.perf_counter() - start
        watch.thread_cpu = time.thread_time() - thread_start
        watch.process_cpu = time.process_time() - process_start


# ---------------------------------------------------------------- statistics


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100), linear between closest ranks (numpy's default).

    Exact over the given samples, unlike the scheduler's own DDSketch (1 % relative error).
    """
    if not values:
        raise ValueError("percentile of no values")
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile q must be within 0..100, got {q!r}")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def median(values: Sequence[float]) -> float:
    return percentile(values, 50.0)


# ---------------------------------------------------------------- formatting


def fmt_rate(per_second: float) -> str:
    return f"{per_second:,.0f}"


def fmt_ms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    ms = seconds * 1000.0
    return f"{ms:.3f} ms" if ms < 10 else f"{ms:,.1f} ms"


def verdict(passed: bool) -> str:
    return "PASS" if passed else "FAIL"


@dataclass(frozen=True, slots=True)
class Table:
    """A markdown table; every cell is already a string."""

    headers: Sequence[str]
    rows: Sequence[Sequence[str]]

    def render(self) -> str:
        width = len(self.headers)
        for row in self.rows:
            if len(row) != width:
                raise ValueError(f"row has {len(row)} cells, table has {width}: {row!r}")
        lines = [_row(self.headers), _row(["---"] * width)]
        lines.extend(_row(row) for row in self.rows)
        return "\n".join(lines)


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"


# ---------------------------------------------------------------- reports


def write_report(
    options: Options, name: str, title: str, blocks: Sequence[str | Table], *, command: str
) -> Path:
    """Write ``<results_dir>/<name>.md``: title, run and machine facts, then ``blocks``."""
    run_kind = "quick (`--quick`: smaller N, noisier)" if options.quick else "full (default)"
    facts = Table(
        ["run", "value"],
        [
            ["reproduce (this benchmark alone)", f"`{command}`"],
            ["mode", run_kind],
            *_machine_facts(),
        ],
    )
    parts = [f"# {title}", facts.render()]
    parts.extend(block.render() if isinstance(block, Table) else block for block in blocks)
    options.results_dir.mkdir(parents=True, exist_ok=True)
    path = options.results_dir / f"{name}.md"
    path.write_text("\n\n".join(parts) + "\n", encoding="utf-8")
    return path


def _machine_facts() -> list[list[str]]:
    affinity = getattr(os, "sched_getaffinity", None)
    usable = len(affinity(0)) if affinity is not None else os.cpu_count()
    now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    return [
        ["date (UTC)", now],
        ["python", f"{platform.python_implementation()} {platform.python_version()}"],
        ["nproc (usable CPUs)", str(usable)],
        ["cpu", _cpu_model()],
        ["platform", platform.platform()],
        ["load average at the end (1, 5, 15 min; this run included)", _load_average()],
        ["floodgate commit", _git_commit()],
    ]


def _load_average() -> str:
    """Other work on the machine skews every timing: say how busy it was."""
    try:
        return ", ".join(f"{load:.2f}" for load in os.getloadavg())
    except OSError:
        return "unknown"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _git_commit() -> str:
    """The checked-out commit, flagged when ``scheduler/`` has uncommitted changes."""
    root = Path(__file__).resolve().parent.parent
    found = source_commit(root)
    if found is None:
        return "unknown (not a git checkout)"
    commit, dirty = found
    if not dirty:
        return commit
    return (
        f"{commit} + uncommitted or untracked files in scheduler/ "
        f"(their sha256: {_sources_digest(root / 'scheduler')})"
    )


def _sources_digest(directory: Path) -> str:
    """A short digest of every ``*.py`` under ``directory``: names the exact code measured
    when it is not a commit."""
    digest = hashlib.sha256()
    for path in sorted(directory.rglob("*.py")):
        digest.update(str(path.relative_to(directory)).encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]
