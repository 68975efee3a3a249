"""Helpers shared by every benchmark: options, progress, timing, statistics, reports,
and what a run's outcome is called.

Nothing here knows about a particular benchmark. A benchmark module exposes
``NAME`` and ``run(options) -> Outcome``; :func:`main` turns that into a
command line so each module also runs alone (``python -m benchmarks.NAME``).

Outcomes (:func:`status`): ``PASS``/``FAIL`` against the targets on a full run;
``SMOKE`` on a ``--quick`` run (small N, never judged against the full-size
targets); ``SKIPPED`` (``Outcome.skipped`` says why); ``BROKEN`` when a run broke
an invariant (``Outcome.broken``: jobs lost or unfinished, whatever the size);
``CRASHED`` when it raised. The exit status is 1 for FAIL, BROKEN and CRASHED.
Reports go to ``benchmarks/out/`` (untracked) unless ``--record`` asks for the
tracked ``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import contextvars
import datetime
import gc
import hashlib
import math
import os
import platform
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from workers.provenance import source_commit

from ._cpus import python_loop_seconds, round_trip

__all__ = [
    "DSN_ENV",
    "FULL_RUN_TIME",
    "OUT_DIR",
    "QUICK_RUN_TIME",
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
    "postgres_dsn",
    "progress",
    "run_benchmarks",
    "status",
    "stopwatch",
    "verdict",
    "write_report",
]

#: where reports go by default: untracked (``.gitignore``), so a run leaves the tree clean
OUT_DIR = Path(__file__).resolve().parent / "out"
#: the tracked reports the README quotes, written only with ``--record``
RESULTS_DIR = Path(__file__).resolve().parent / "results"
#: the PostgreSQL the benchmarks (and tests) use; without it, the local default is tried
DSN_ENV = "FLOODGATE_TEST_POSTGRES_DSN"
DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"

#: how long runs take here (two cores), said alike by ``--help`` and the README
FULL_RUN_TIME = "about 55 min"
QUICK_RUN_TIME = "about 6 min"
#: what the full run's time is made of
FULL_RUN_PARTS = (
    "fleet ~19, pacing ~10, tenants_postgres ~8 and postgres ~3.5 (when a server answers), "
    "tenants_durable ~4, the other three ~3"
)

#: set while a ``--quick`` run goes on: :func:`verdict` then says "smoke", not PASS/FAIL
_SMOKE: contextvars.ContextVar[bool] = contextvars.ContextVar("benchmarks_smoke", default=False)

_T0 = time.perf_counter()


@dataclass(frozen=True, slots=True)
class Options:
    """What every benchmark is told: a short run or the full one, and where to write."""

    quick: bool = False
    results_dir: Path = OUT_DIR
    #: repetitions asked for with ``--repeat`` (``None``: the benchmark's own default;
    #: benchmarks with a fixed repetition count ignore it)
    repeat: int | None = None
    #: ``--record``: reports go to the tracked ``benchmarks/results/``
    record: bool = False


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a benchmark hands back: did it meet its targets (judged on full runs only),
    did it break an invariant, was it skipped, and where is the report."""

    name: str
    passed: bool
    summary: str
    report: Path | None
    #: why the benchmark did not run (``None``: it ran)
    skipped: str | None = None
    #: the invariant a run broke (jobs lost or unfinished...); counts on smoke runs too
    broken: str | None = None


# ---------------------------------------------------------------- command line


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run (smaller N, fewer repetitions): verdict SMOKE, not judged "
        "against the full-size targets; exit status 1 only if a benchmark crashed or "
        "broke an invariant",
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--record",
        action="store_true",
        help=f"write the tracked reports in {_shown(RESULTS_DIR)}/ that the README quotes "
        "(full runs only)",
    )
    where.add_argument(
        "--results-dir",
        type=Path,
        default=None,
        help=f"where to write <name>.md (default: {_shown(OUT_DIR)}/, untracked)",
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


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when it is below it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def options_from(args: argparse.Namespace, parser: argparse.ArgumentParser) -> Options:
    """The parsed command line as :class:`Options`; ``--record --quick`` is a usage error."""
    record = bool(getattr(args, "record", False))
    if record and args.quick:
        parser.error("--record writes the tracked full-size results; a --quick run is not recorded")
    results_dir: Path = args.results_dir or (RESULTS_DIR if record else OUT_DIR)
    repeat: int | None = getattr(args, "repeat", None)
    return Options(quick=bool(args.quick), results_dir=results_dir, repeat=repeat, record=record)


def main(name: str, doc: str | None, run: Callable[[Options], Outcome]) -> int:
    """Run one benchmark from the command line (exit status as :func:`run_benchmarks`)."""
    parser = argparse.ArgumentParser(prog=f"python -m benchmarks.{name}", description=doc)
    add_common_arguments(parser)
    return run_benchmarks({name: run}, options_from(parser.parse_args(), parser))


def run_benchmarks(benchmarks: dict[str, Callable[[Options], Outcome]], options: Options) -> int:
    """Run each benchmark in turn, print one line per outcome with its :func:`status`,
    and return the exit status: 1 if any FAIL, BROKEN or CRASHED, else 0.

    A benchmark that raises is reported CRASHED (with its traceback) and the rest
    still run. On a ``--quick`` run, :func:`verdict` says "smoke" inside the reports.
    """
    lines: list[tuple[str, str]] = []
    token = _SMOKE.set(options.quick)
    try:
        for name, run in benchmarks.items():
            try:
                outcome = run(options)
            except Exception:
                traceback.print_exc()
                lines.append(("CRASHED", f"{name}: raised (traceback above)"))
                continue
            where = f" -> {_shown(outcome.report)}" if outcome.report is not None else ""
            detail = outcome.skipped or outcome.broken or outcome.summary
            lines.append((status(outcome, options), f"{outcome.name}: {detail}{where}"))
    finally:
        _SMOKE.reset(token)
    for word, text in lines:
        progress(f"{word} {text}")
    if options.quick:
        progress(
            "SMOKE: a --quick run checks that the benchmarks run; its small sizes are not "
            "judged against the targets (run without --quick for PASS/FAIL)"
        )
    if not options.record and any(word != "SKIPPED" for word, _ in lines):
        recorded = _shown(RESULTS_DIR)
        progress(f"reports in {_shown(options.results_dir)}/ (--record writes {recorded}/)")
    return 1 if any(word in ("FAIL", "BROKEN", "CRASHED") for word, _ in lines) else 0


def status(outcome: Outcome, options: Options) -> str:
    """SKIPPED, BROKEN, SMOKE (a ``--quick`` run), else PASS or FAIL."""
    if outcome.skipped is not None:
        return "SKIPPED"
    if outcome.broken is not None:
        return "BROKEN"
    if options.quick:
        return "SMOKE"
    return "PASS" if outcome.passed else "FAIL"


def postgres_dsn() -> tuple[str | None, str]:
    """The PostgreSQL to measure against and where it came from: ``$FLOODGATE_TEST_POSTGRES_DSN``,
    else the local default (``postgresql://postgres@127.0.0.1:5432/test``) if it answers
    within 2 s; ``(None, why not)`` when there is none."""
    dsn = os.environ.get(DSN_ENV, "")
    if dsn:
        return dsn, f"${DSN_ENV}"
    try:
        import asyncpg  # type: ignore[import-untyped]
    except ImportError:
        return None, "asyncpg is not installed (.venv/bin/pip install -e '.[bench]')"

    async def probe() -> None:
        conn = await asyncpg.connect(DEFAULT_DSN, timeout=2.0)
        await conn.close()

    try:
        asyncio.run(probe())
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        return None, (
            f"no PostgreSQL at {DEFAULT_DSN} ({type(exc).__name__}: {exc}); "
            f"set {DSN_ENV}=postgresql://... to use another"
        )
    return DEFAULT_DSN, "the local default"


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
    """One target's verdict in a report: PASS/FAIL, or on a ``--quick`` run only whether
    the smoke-sized figure met it ("smoke: met" / "smoke: missed", not judged)."""
    if _SMOKE.get():
        return "smoke: met" if passed else "smoke: missed"
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
    run_kind = (
        "smoke (`--quick`: smaller N, noisier; not judged against the targets)"
        if options.quick
        else "full (default)"
    )
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
        ["a thread round trip (a queue each way), across CPUs; on one CPU", _round_trips()],
        [
            "a Python loop of 10,000,000 additions, at the end (s; lower is a faster core)",
            f"{python_loop_seconds():.2f}",
        ],
        ["floodgate commit", _git_commit()],
    ]


def _round_trips() -> str:
    """What handing work to another thread and back costs here (see ``_cpus``)."""
    across, one = round_trip(), round_trip(pinned=True)
    shown = "-" if math.isnan(one) else f"{one * 1e6:.1f} µs"
    return f"{across * 1e6:.1f} µs; {shown}"


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
