"""Durable backlog: submit and drain throughput on one SQLite file, against huey and
persist-queue on the same disk, and memory with 1,000,000 queued jobs.

Floodgate, through its public API (``Lane("batch", 64, durable=True)``, one
registered no-op task, ``BacklogOptions(claim_batch=512, poll_interval=0.01)``):

- submit, 1 submitter: ``await task.submit(i)`` one after another, in ``open(run=())``;
- submit, 100 submitters: 100 asyncio tasks each awaiting N/100 ``task.submit(i)``;
- drain: a worker (``open(run=("batch",))``) runs the N jobs the 100 submitters
  stored, timed until ``backlog_counts()`` shows all N ``done``;
- submit + drain: the 100 submitters and the worker in one scheduler at once.

Peers, same N, same no-op, same temporary directory, same process:

- huey ``SqliteHuey``: N calls of a ``@huey.task()`` enqueue; then huey's own
  consumer (one worker thread) dequeues and executes until all N have run;
- persist-queue ``SQLiteAckQueue``: N ``put``; then ``get`` + run + ``ack`` until empty.

All three run in WAL mode with ``synchronous=NORMAL`` (Floodgate's default; the
peers are switched to it from SQLite's FULL so nobody pays an fsync per commit
that another skips). A short supplement repeats the comparison at ``FULL``.

Memory: a child process fills a backlog with 1,000,000 queued jobs; a second
child opens it as a worker of a gated lane behind a paused gate, then resumes
the gate and drains a little; the second child's peak RSS is the figure.

Targets: submit with 100 submitters >= 20,000 jobs/s; drain >= 10,000 jobs/s;
both >= 5x the better peer; peak RSS with 1,000,000 queued jobs < 200 MB.

Run alone: ``python -m benchmarks.durable [--quick]``.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import math
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import huey  # type: ignore[import-untyped]
import persistqueue

from scheduler import BacklogOptions, Lane, Scheduler, Task
from scheduler.backlog import SQLiteBacklog

from ._common import (
    Options,
    Outcome,
    Stopwatch,
    Table,
    fmt_rate,
    main,
    median,
    progress,
    stopwatch,
    verdict,
    write_report,
)

NAME = "durable"
LANE = "batch"
TASK = "bench.noop"
SEATS = 64
SUBMITTERS = 100
CLAIM_BATCH = 512
POLL_S = 0.01  # "small": an idle worker looks for other processes' work 100x a second
TARGET_SUBMIT = 20_000.0  # jobs/s, 100 submitters
TARGET_DRAIN = 10_000.0  # jobs/s
TARGET_PEER_RATIO = 5.0  # x the better peer, for submit and for drain
TARGET_RSS_MB = 200.0
TIME_LIMIT_S = 120.0  # any one timed phase
CHILD_TIME_LIMIT_S = 300.0  # any one child process
PQ_CLEAR_EVERY = 1_000  # persist-queue: delete acked rows every this many acks
REPO_ROOT = Path(__file__).resolve().parent.parent

Sync = Literal["NORMAL", "FULL"]
_SYNC_VALUE = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}


@dataclass(frozen=True, slots=True)
class Sizes:
    sequential: int  # jobs for the one-submitter run
    jobs: int  # N for every other throughput run
    reps: int
    full_sync_jobs: int  # N of the synchronous=FULL supplement
    rss_jobs: int  # queued jobs held in the memory run
    rss_paused_s: float  # how long the worker holds them behind the paused gate
    rss_drain: int  # then: drain at most this many ...
    rss_drain_s: float  # ... for at most this long
    sweep_jobs: int  # N of each run of the drain-vs-poll_interval sweep
    sweep_polls: tuple[float, ...]


FULL = Sizes(
    sequential=3_000,
    jobs=30_000,
    reps=3,
    full_sync_jobs=1_000,  # an fsync per peer commit: slow, and at the mercy of other disk I/O
    rss_jobs=1_000_000,
    rss_paused_s=2.0,
    rss_drain=20_000,
    rss_drain_s=3.0,
    sweep_jobs=640,  # 10 full claims of the lane's 64 seats
    sweep_polls=(0.5, 0.05, 0.01, 0.002),  # 0.5 s is BacklogOptions' default
)
QUICK = Sizes(
    sequential=1_000,
    jobs=5_000,
    reps=1,
    full_sync_jobs=200,
    rss_jobs=100_000,
    rss_paused_s=0.5,
    rss_drain=5_000,
    rss_drain_s=1.5,
    sweep_jobs=640,
    sweep_polls=(0.05, 0.01, 0.002),
)


@dataclass(frozen=True, slots=True)
class Phase:
    """One timed phase: jobs, wall seconds, CPU, and (Floodgate) SQLite transactions."""

    jobs: int
    seconds: float
    thread_cpu: float  # the timing thread (Floodgate: the event loop's)
    process_cpu: float  # every thread of the process
    transactions: int = 0
    rows: int = 0  # rows those transactions inserted, claimed or completed

    @classmethod
    def of(cls, watch: Stopwatch, jobs: int, tx: tuple[int, int] = (0, 0)) -> Phase:
        return cls(jobs, watch.seconds, watch.thread_cpu, watch.process_cpu, *tx)

    @property
    def rate(self) -> float:
        return self.jobs / self.seconds


# ---------------------------------------------------------------- Floodgate


class _Runs:
    """The no-op task's body counts its runs; ``reached`` is set at ``target``."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.count = 0
        self.reached = asyncio.Event()

    async def noop(self, i: int) -> None:
        self.count += 1
        if self.count >= self.target:
            self.reached.set()


def _scheduler(
    path: Path, sync: Sync, runs: _Runs, poll: float = POLL_S
) -> tuple[Scheduler, Task[Any, Any]]:
    sched = Scheduler(
        str(path),
        lanes=[Lane(LANE, SEATS, durable=True)],
        backlog_options=BacklogOptions(
            claim_batch=CLAIM_BATCH, poll_interval=poll, synchronous=sync
        ),
        shutdown_grace=5.0,
    )
    task: Task[Any, Any] = sched.task(runs.noop, name=TASK)
    return sched, task


def _transactions(sched: Scheduler) -> tuple[int, int]:
    """(transactions, rows) so far from the SQLite backlog's own counters.

    Reads a private attribute: the diagnostic is worth it, and it degrades to
    zeros if the scheduler's internals move.
    """
    store = getattr(sched, "_store", None)
    backlog = getattr(store, "backlog", None)
    if not isinstance(backlog, SQLiteBacklog):
        return (0, 0)
    s = backlog.stats()
    return s["commits"], s["submitted"] + s["claimed"] + s["applied"] + s["ignored"]


def _delta(after: tuple[int, int], before: tuple[int, int]) -> tuple[int, int]:
    return after[0] - before[0], after[1] - before[1]


def _expect(counts: dict[str, dict[str, int]], want: dict[str, int], what: str) -> None:
    if counts != {LANE: want}:
        raise RuntimeError(f"floodgate {what}: the backlog holds {counts}, expected {want}")


async def _submitters(task: Task[Any, Any], n: int, submitters: int) -> None:
    async def submitter(count: int) -> None:
        for i in range(count):
            await task.submit(i)

    share, extra = divmod(n, submitters)
    await asyncio.gather(*(submitter(share + (k < extra)) for k in range(submitters)))


async def _until_done(sched: Scheduler, runs: _Runs, n: int) -> dict[str, dict[str, int]]:
    """Until the N-th job has run and all N outcomes are stored as ``done``."""
    await runs.reached.wait()
    while True:
        counts = await sched.backlog_counts()
        if counts.get(LANE, {}).get("done", 0) >= n:
            return counts
        await asyncio.sleep(0.005)


async def _fg_submit(path: Path, sync: Sync, n: int, submitters: int) -> Phase:
    sched, task = _scheduler(path, sync, _Runs(n))
    async with sched.open(run=()):
        before = _transactions(sched)
        with stopwatch() as watch:
            async with asyncio.timeout(TIME_LIMIT_S):
                await _submitters(task, n, submitters)
        tx = _delta(_transactions(sched), before)
        counts = await sched.backlog_counts()
    _expect(counts, {"queued": n}, f"submit ({submitters} submitters)")
    return Phase.of(watch, n, tx)


async def _fg_drain(path: Path, sync: Sync, n: int, poll: float = POLL_S) -> Phase:
    """Timed from the worker's first step (the backlog already open) to all N stored done."""
    runs = _Runs(n)
    sched, _ = _scheduler(path, sync, runs, poll)
    async with sched.open(run=(LANE,)):
        before = _transactions(sched)
        with stopwatch() as watch:
            async with asyncio.timeout(TIME_LIMIT_S):
                counts = await _until_done(sched, runs, n)
        tx = _delta(_transactions(sched), before)
    _expect(counts, {"done": n}, "drain")
    return Phase.of(watch, n, tx)


async def _fg_submit_and_drain(path: Path, sync: Sync, n: int) -> tuple[Phase, float]:
    """100 submitters and the worker at once; also when the last submit returned."""
    runs = _Runs(n)
    sched, task = _scheduler(path, sync, runs)
    async with sched:
        before = _transactions(sched)
        with stopwatch() as watch:
            start = time.perf_counter()
            async with asyncio.timeout(TIME_LIMIT_S):
                await _submitters(task, n, SUBMITTERS)
                submitted_s = time.perf_counter() - start
                counts = await _until_done(sched, runs, n)
        tx = _delta(_transactions(sched), before)
    _expect(counts, {"done": n}, "submit + drain")
    return Phase.of(watch, n, tx), submitted_s


@dataclass(frozen=True, slots=True)
class FloodgateRun:
    sequential: Phase | None
    submit: Phase
    drain: Phase
    both: Phase | None
    both_submitted_s: float | None


def _floodgate(directory: Path, sync: Sync, n: int, sequential: int | None) -> FloodgateRun:
    seq = None
    if sequential is not None:
        seq = asyncio.run(_fg_submit(directory / "fg-sequential.db", sync, sequential, 1))
    path = directory / "fg.db"
    submit = asyncio.run(_fg_submit(path, sync, n, SUBMITTERS))
    drain = asyncio.run(_fg_drain(path, sync, n))
    both, submitted_s = None, None
    if sequential is not None:
        both, submitted_s = asyncio.run(_fg_submit_and_drain(directory / "fg-both.db", sync, n))
    return FloodgateRun(seq, submit, drain, both, submitted_s)


def _poll_sweep(root: Path, sizes: Sizes) -> list[tuple[float, Phase]]:
    """Floodgate's drain of the same N at several ``poll_interval`` settings."""
    out = []
    for poll in sizes.sweep_polls:
        directory = root / f"sweep-{poll:g}"
        directory.mkdir()
        try:
            path = directory / "fg.db"
            asyncio.run(_fg_submit(path, "NORMAL", sizes.sweep_jobs, SUBMITTERS))
            phase = asyncio.run(_fg_drain(path, "NORMAL", sizes.sweep_jobs, poll))
        finally:
            shutil.rmtree(directory, ignore_errors=True)
        out.append((poll, phase))
        progress(f"{NAME}: drain with poll_interval={poll:g}: {fmt_rate(phase.rate)} jobs/s")
    return out


# ---------------------------------------------------------------- peers


@dataclass(frozen=True, slots=True)
class PeerRun:
    enqueue: Phase
    drain: Phase
    synchronous: str  # read back from the peer's own connection
    journal_mode: str


def _pragmas(conn: sqlite3.Connection, sync: Sync) -> tuple[str, str]:
    """Switch a peer's connection to ``sync``; read both settings back."""
    conn.execute(f"PRAGMA synchronous={sync}")
    value = int(conn.execute("PRAGMA synchronous").fetchone()[0])
    journal = str(conn.execute("PRAGMA journal_mode").fetchone()[0])
    return _SYNC_VALUE.get(value, str(value)), journal


def _huey(directory: Path, sync: Sync, n: int) -> PeerRun:
    """``SqliteHuey``: enqueue N, then one consumer worker thread until all N ran."""
    app = huey.SqliteHuey("bench", filename=str(directory / "huey.db"))
    # huey's own knob is fsync=True (FULL) or unset (SQLite's default, FULL):
    # set NORMAL on the one connection its storage keeps, and read it back.
    setting, journal = _pragmas(app.storage.conn, sync)
    lock = threading.Lock()
    ran = [0]
    all_ran = threading.Event()

    def noop(i: int) -> None:
        with lock:
            ran[0] += 1
            if ran[0] >= n:
                all_ran.set()

    wrapped = app.task(name=TASK)(noop)
    with stopwatch() as enqueue:
        for i in range(n):
            wrapped(i)
    if app.pending_count() != n:
        raise RuntimeError(f"huey: {app.pending_count()} pending after {n} enqueues")
    consumer = app.create_consumer(
        workers=1,
        worker_type="thread",
        periodic=False,
        initial_delay=0.001,
        max_delay=0.01,
        check_worker_health=False,
    )
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        with stopwatch() as drain:
            consumer.start()  # installs its signal handlers; restored below
            finished = all_ran.wait(TIME_LIMIT_S)
    finally:
        consumer.stop(graceful=True)
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    pending = app.pending_count()
    if not finished or ran[0] != n or pending:
        raise RuntimeError(f"huey: ran {ran[0]}/{n}, {pending} still pending")
    if _pragmas(app.storage.conn, sync)[0] != setting:
        raise RuntimeError("huey: its connection's synchronous setting changed during the run")
    app.storage.close()
    return PeerRun(Phase.of(enqueue, n), Phase.of(drain, n), setting, journal)


def _pq_noop(item: object) -> None:
    return None


def _persist_queue(directory: Path, sync: Sync, n: int) -> PeerRun:
    """``SQLiteAckQueue``: put N, then get + run + ack until empty."""
    queue = persistqueue.SQLiteAckQueue(str(directory / "pq"), auto_resume=False)
    # one connection (multithreading=False); persist-queue has no synchronous knob
    setting, journal = _pragmas(cast(sqlite3.Connection, queue._putter), sync)
    with stopwatch() as enqueue:
        for i in range(n):
            queue.put(i)
    deadline = time.perf_counter() + TIME_LIMIT_S
    acked = 0
    with stopwatch() as drain:
        for _ in range(n + 1):
            try:
                item = queue.get(block=False, raw=True)
            except persistqueue.Empty:
                break
            _pq_noop(item["data"])
            queue.ack(id=item["pqid"])
            acked += 1
            if acked % PQ_CLEAR_EVERY == 0:
                # without this, every get re-scans all acked rows (quadratic)
                queue.clear_acked_data(max_delete=0, keep_latest=0)
                if time.perf_counter() > deadline:
                    raise RuntimeError(f"persist-queue: only {acked}/{n} after {TIME_LIMIT_S}s")
    if acked != n or queue.size != 0:
        raise RuntimeError(f"persist-queue: acked {acked}/{n}, {queue.size} left")
    queue.close()
    return PeerRun(Phase.of(enqueue, n), Phase.of(drain, n), setting, journal)


PEERS: dict[str, Callable[[Path, Sync, int], PeerRun]] = {
    "huey": _huey,
    "persist-queue": _persist_queue,
}
SYSTEMS = ("floodgate", *PEERS)


# ---------------------------------------------------------------- one repetition


@dataclass(slots=True)
class Rep:
    index: int
    order: tuple[str, ...]
    floodgate: FloodgateRun | None = None
    peers: dict[str, PeerRun] = field(default_factory=dict)


def _one_rep(root: Path, index: int, sync: Sync, n: int, sequential: int | None) -> Rep:
    shift = index % len(SYSTEMS)
    order = SYSTEMS[shift:] + SYSTEMS[:shift]  # who goes first rotates
    rep = Rep(index, order)
    for system in order:
        directory = root / f"{sync.lower()}-{index}-{system}"
        directory.mkdir()
        try:
            if system == "floodgate":
                rep.floodgate = _floodgate(directory, sync, n, sequential)
            else:
                rep.peers[system] = PEERS[system](directory, sync, n)
        finally:
            shutil.rmtree(directory, ignore_errors=True)
    return rep


def _rep_line(rep: Rep, n: int) -> str:
    assert rep.floodgate is not None
    fg = rep.floodgate
    parts = [f"floodgate submit {fmt_rate(fg.submit.rate)}/s drain {fmt_rate(fg.drain.rate)}/s"]
    if fg.sequential is not None:
        parts.insert(0, f"floodgate 1-submitter {fmt_rate(fg.sequential.rate)}/s")
    if fg.both is not None:
        parts.append(f"floodgate submit+drain {fmt_rate(fg.both.rate)}/s")
    parts.extend(
        f"{name} enqueue {fmt_rate(peer.enqueue.rate)}/s drain {fmt_rate(peer.drain.rate)}/s"
        for name, peer in rep.peers.items()
    )
    return f"N={n:,}: " + "; ".join(parts)


# ---------------------------------------------------------------- memory (child processes)


def _child(*args: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks._durable_rss", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=CHILD_TIME_LIMIT_S,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"memory child {args[0]} failed ({done.returncode}):\n{done.stderr[-4000:]}"
        )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@dataclass(frozen=True, slots=True)
class Memory:
    fill: dict[str, Any]
    hold: dict[str, Any]

    @property
    def peak_mb(self) -> float:
        return float(self.hold["peak_rss_mb"])

    @property
    def passed(self) -> bool:
        return self.peak_mb < TARGET_RSS_MB


def _memory(root: Path, sizes: Sizes) -> Memory:
    path = str(root / "rss.db")
    progress(f"{NAME}: memory: filling a backlog with {sizes.rss_jobs:,} queued jobs (child 1)")
    fill = _child("fill", path, str(sizes.rss_jobs))
    progress(
        f"{NAME}: memory: filled in {fill['seconds']:.1f} s "
        f"({fmt_rate(sizes.rss_jobs / fill['seconds'])} jobs/s); opening it paused (child 2)"
    )
    hold = _child(
        "hold",
        path,
        str(sizes.rss_jobs),
        str(sizes.rss_paused_s),
        str(sizes.rss_drain),
        str(sizes.rss_drain_s),
    )
    progress(
        f"{NAME}: memory: peak RSS {hold['peak_rss_mb']:.1f} MB with {sizes.rss_jobs:,} queued, "
        f"drained {hold['drained']:,} in {hold['drain_seconds']:.2f} s"
    )
    return Memory(fill, hold)


# ---------------------------------------------------------------- aggregation


def _median_rate(phases: list[Phase]) -> float:
    return phases[0].jobs / median([p.seconds for p in phases])


@dataclass(frozen=True, slots=True)
class Figures:
    """Median rates over the repetitions of one synchronous setting."""

    sync: Sync
    n: int
    reps: list[Rep]

    def fg(self, pick: Callable[[FloodgateRun], Phase | None]) -> list[Phase]:
        out = []
        for rep in self.reps:
            assert rep.floodgate is not None
            phase = pick(rep.floodgate)
            if phase is not None:
                out.append(phase)
        return out

    def fg_rate(self, pick: Callable[[FloodgateRun], Phase | None]) -> float:
        phases = self.fg(pick)
        return _median_rate(phases) if phases else math.nan

    def peer(self, name: str, pick: Callable[[PeerRun], Phase]) -> list[Phase]:
        return [pick(rep.peers[name]) for rep in self.reps]

    def peer_rate(self, name: str, pick: Callable[[PeerRun], Phase]) -> float:
        return _median_rate(self.peer(name, pick))

    def peer_e2e(self, name: str) -> float:
        return self.n / median(
            [rep.peers[name].enqueue.seconds + rep.peers[name].drain.seconds for rep in self.reps]
        )

    def fg_e2e_sequential(self) -> float:
        return self.n / median(
            [
                r.floodgate.submit.seconds + r.floodgate.drain.seconds
                for r in self.reps
                if r.floodgate
            ]
        )

    def best_peer(self, pick: Callable[[PeerRun], Phase]) -> tuple[str, float]:
        rates = {name: self.peer_rate(name, pick) for name in PEERS}
        name = max(rates, key=lambda k: rates[k])
        return name, rates[name]


def _enqueue(p: PeerRun) -> Phase:
    return p.enqueue


def _peer_drain(p: PeerRun) -> Phase:
    return p.drain


# ---------------------------------------------------------------- run


def run(options: Options) -> Outcome:
    sizes = QUICK if options.quick else FULL
    progress(
        f"{NAME}: N={sizes.jobs:,} jobs x {sizes.reps} reps x {len(SYSTEMS)} systems "
        f"(synchronous=NORMAL), then N={sizes.full_sync_jobs:,} at FULL, "
        f"then {sizes.rss_jobs:,} queued jobs for memory"
    )
    with tempfile.TemporaryDirectory(prefix="floodgate-bench-durable-", dir="/tmp") as tmp:
        root = Path(tmp)
        reps = []
        for index in range(sizes.reps):
            rep = _one_rep(root, index, "NORMAL", sizes.jobs, sizes.sequential)
            reps.append(rep)
            progress(f"{NAME}: rep {index + 1}/{sizes.reps} ({' -> '.join(rep.order)}): ")
            progress(f"{NAME}:   {_rep_line(rep, sizes.jobs)}")
        normal = Figures("NORMAL", sizes.jobs, reps)
        full_rep = _one_rep(root, 0, "FULL", sizes.full_sync_jobs, None)
        progress(f"{NAME}: synchronous=FULL: {_rep_line(full_rep, sizes.full_sync_jobs)}")
        full = Figures("FULL", sizes.full_sync_jobs, [full_rep])
        sweep = _poll_sweep(root, sizes)
        memory = _memory(root, sizes)

    verdicts = _verdicts(normal, memory)
    passed = all(ok for _, _, ok in verdicts)
    summary = ", ".join(f"{label} {value} ({verdict(ok)})" for label, value, ok in verdicts)
    report = write_report(
        options,
        NAME,
        "Durable backlog: Floodgate's SQLite backlog vs huey and persist-queue",
        _report_blocks(normal, full, sweep, memory, sizes, verdicts),
        command=f"python -m benchmarks.{NAME}" + (" --quick" if options.quick else ""),
    )
    return Outcome(NAME, passed, summary, report)


def _verdicts(normal: Figures, memory: Memory) -> list[tuple[str, str, bool]]:
    submit = normal.fg_rate(lambda r: r.submit)
    drain = normal.fg_rate(lambda r: r.drain)
    _, best_enqueue = normal.best_peer(_enqueue)
    _, best_drain = normal.best_peer(_peer_drain)
    return [
        ("submit", f"{fmt_rate(submit)}/s", submit >= TARGET_SUBMIT),
        ("drain", f"{fmt_rate(drain)}/s", drain >= TARGET_DRAIN),
        (
            "submit vs best peer",
            f"{submit / best_enqueue:.2f}x",
            submit / best_enqueue >= TARGET_PEER_RATIO,
        ),
        (
            "drain vs best peer",
            f"{drain / best_drain:.2f}x",
            drain / best_drain >= TARGET_PEER_RATIO,
        ),
        ("peak RSS", f"{memory.peak_mb:.0f} MB", memory.passed),
    ]


# ---------------------------------------------------------------- report


def _pct(part: float, whole: float) -> str:
    return f"{100.0 * part / whole:.0f} %" if whole > 0 else "-"


def _report_blocks(
    normal: Figures,
    full: Figures,
    sweep: list[tuple[float, Phase]],
    memory: Memory,
    sizes: Sizes,
    verdicts: list[tuple[str, str, bool]],
) -> list[str | Table]:
    n = normal.n
    submit = normal.fg_rate(lambda r: r.submit)
    drain = normal.fg_rate(lambda r: r.drain)
    enq_peer, best_enqueue = normal.best_peer(_enqueue)
    drain_peer, best_drain = normal.best_peer(_peer_drain)
    ok = {label: passed for label, _, passed in verdicts}
    headline = Table(
        ["measure", "Floodgate", "compared with", "ratio", "target", "result"],
        [
            [
                f"durable submit, {SUBMITTERS} submitters (jobs/s)",
                fmt_rate(submit),
                "-",
                "-",
                f">= {fmt_rate(TARGET_SUBMIT)}",
                verdict(ok["submit"]),
            ],
            [
                "drain of no-op jobs (jobs/s)",
                fmt_rate(drain),
                "-",
                "-",
                f">= {fmt_rate(TARGET_DRAIN)}",
                verdict(ok["drain"]),
            ],
            [
                f"submit, {SUBMITTERS} submitters vs the better peer's enqueue",
                fmt_rate(submit),
                f"{enq_peer} {fmt_rate(best_enqueue)}",
                f"{submit / best_enqueue:.2f}x",
                f">= {TARGET_PEER_RATIO:.0f}x",
                verdict(ok["submit vs best peer"]),
            ],
            [
                "drain vs the better peer's drain",
                fmt_rate(drain),
                f"{drain_peer} {fmt_rate(best_drain)}",
                f"{drain / best_drain:.2f}x",
                f">= {TARGET_PEER_RATIO:.0f}x",
                verdict(ok["drain vs best peer"]),
            ],
            [
                f"peak RSS of a worker holding {sizes.rss_jobs:,} queued jobs",
                f"{memory.peak_mb:.1f} MB",
                "-",
                "-",
                f"< {TARGET_RSS_MB:.0f} MB",
                verdict(ok["peak RSS"]),
            ],
        ],
    )
    return [
        "## Result",
        headline,
        f"## Throughput, synchronous=NORMAL, N = {n:,}, median of {len(normal.reps)} rep(s)",
        _throughput_table(normal, with_extras=True),
        "Ratios are Floodgate's jobs/s over the peer's, per column: " + _ratio_sentence(normal),
        "## Floodgate: where the time goes",
        _diagnostics_table(normal),
        "Event loop CPU is the CPU time of the thread running asyncio (the only "
        "thread running Floodgate's Python code) as a share of wall time; other threads "
        "are aiosqlite's connection thread (SQLite itself). When neither is near 100 %, the "
        "process spends the rest waiting: one thread for the other's answer, a timer, or "
        "a CPU held by other work on the machine (see the load average above). Empty "
        "claims count as transactions.",
        f"## Floodgate drain vs `poll_interval` (N = {sizes.sweep_jobs:,} each, 1 run)",
        _sweep_table(sweep),
        "Same jobs, same lane, only `BacklogOptions.poll_interval` changes; it should only "
        "matter to an idle worker looking for other processes' work. A drain rate that "
        "follows 1/poll_interval means the worker sleeps between claims while work is "
        "queued.",
        f"## Supplement: synchronous=FULL (power-loss safe; the peers' default), N = {full.n:,}",
        _throughput_table(full, with_extras=False),
        "## Memory with many queued jobs",
        _memory_table(memory, sizes),
        "## Per repetition (synchronous=NORMAL)",
        _per_rep_table(normal),
        "## Method",
        _method(normal, full, sizes),
    ]


def _settings(reps: list[Rep], name: str) -> str:
    found = {(r.peers[name].synchronous, r.peers[name].journal_mode) for r in reps}
    return ", ".join(f"synchronous={s}, journal_mode={j}" for s, j in sorted(found))


def _throughput_table(fig: Figures, *, with_extras: bool) -> Table:
    sync = fig.sync
    rows = []
    if with_extras:
        rows.append(
            [
                "Floodgate, 1 submitter",
                "`await task.submit(i)` in a loop",
                fmt_rate(fig.fg_rate(lambda r: r.sequential)),
                "-",
                "-",
                f"synchronous={sync}, WAL",
            ]
        )
    rows.append(
        [
            f"Floodgate, {SUBMITTERS} submitters",
            f"{SUBMITTERS} tasks x `await task.submit(i)`; worker: lane of {SEATS}, "
            f"claim_batch={CLAIM_BATCH}",
            fmt_rate(fig.fg_rate(lambda r: r.submit)),
            fmt_rate(fig.fg_rate(lambda r: r.drain)),
            fmt_rate(fig.fg_e2e_sequential()),
            f"synchronous={sync}, WAL",
        ]
    )
    if with_extras:
        rows.append(
            [
                "Floodgate, submit + drain at once",
                f"{SUBMITTERS} submitters and the worker in one scheduler",
                "-",
                "-",
                fmt_rate(fig.fg_rate(lambda r: r.both)),
                f"synchronous={sync}, WAL",
            ]
        )
    rows.extend(
        [
            name,
            _PEER_HOW[name],
            fmt_rate(fig.peer_rate(name, _enqueue)),
            fmt_rate(fig.peer_rate(name, _peer_drain)),
            fmt_rate(fig.peer_e2e(name)),
            _settings(fig.reps, name),
        ]
        for name in PEERS
    )
    return Table(
        [
            "system",
            "how",
            "enqueue jobs/s",
            "drain jobs/s",
            "end to end jobs/s (enqueue, then drain)",
            "SQLite settings",
        ],
        rows,
    )


_PEER_HOW = {
    "huey": "`SqliteHuey`: N task calls; then its consumer, 1 worker thread",
    "persist-queue": "`SQLiteAckQueue`: N `put`; then `get` + run + `ack`",
}


def _ratio_sentence(fig: Figures) -> str:
    submit = fig.fg_rate(lambda r: r.submit)
    drain = fig.fg_rate(lambda r: r.drain)
    e2e = fig.fg_e2e_sequential()
    parts = [
        f"vs {name}: submit {submit / fig.peer_rate(name, _enqueue):.2f}x, "
        f"drain {drain / fig.peer_rate(name, _peer_drain):.2f}x, "
        f"end to end {e2e / fig.peer_e2e(name):.2f}x"
        for name in PEERS
    ]
    return "; ".join(parts) + "."


def _diagnostics_table(fig: Figures) -> Table:
    def row(label: str, phases: list[Phase]) -> list[str]:
        if not phases:
            return [label, "-", "-", "-", "-", "-", "-"]
        p = min(phases, key=lambda x: abs(x.seconds - median([q.seconds for q in phases])))
        other = max(0.0, p.process_cpu - p.thread_cpu)
        per_tx = p.rows / p.transactions if p.transactions else math.nan
        return [
            label,
            f"{p.jobs:,}",
            f"{p.seconds:.2f}",
            _pct(p.thread_cpu, p.seconds),
            _pct(other, p.seconds),
            f"{p.transactions:,}",
            f"{per_tx:.1f}",
        ]

    return Table(
        [
            "phase (the median rep)",
            "jobs",
            "wall s",
            "event loop CPU / wall",
            "other threads CPU / wall",
            "SQLite transactions",
            "rows per transaction",
        ],
        [
            row("1 submitter", fig.fg(lambda r: r.sequential)),
            row(f"{SUBMITTERS} submitters", fig.fg(lambda r: r.submit)),
            row("drain", fig.fg(lambda r: r.drain)),
            row("submit + drain at once", fig.fg(lambda r: r.both)),
        ],
    )


def _sweep_table(sweep: list[tuple[float, Phase]]) -> Table:
    rows = []
    for poll, p in sweep:
        per_tx = p.rows / p.transactions if p.transactions else math.nan
        rows.append(
            [
                f"{poll:g} s" + (" (default)" if poll == BacklogOptions().poll_interval else ""),
                f"{p.seconds:.2f}",
                fmt_rate(p.rate),
                f"{p.transactions:,}",
                f"{per_tx:.1f}",
                _pct(p.thread_cpu, p.seconds),
            ]
        )
    return Table(
        [
            "poll_interval",
            "drain s",
            "drain jobs/s",
            "SQLite transactions",
            "rows per transaction",
            "event loop CPU / wall",
        ],
        rows,
    )


def _memory_table(memory: Memory, sizes: Sizes) -> Table:
    fill, hold = memory.fill, memory.hold
    files = hold["files_mb"]
    peaks = hold["phase_peaks_mb"]
    rows = [
        ["fill child: RSS before filling", f"{fill['rss_before_mb']:.1f} MB"],
        [
            "fill child: time to store the jobs",
            f"{fill['seconds']:.1f} s ({fmt_rate(fill['jobs'] / fill['seconds'])} jobs/s, "
            f"backlog `submit()` of 2,000-job batches, 4 callers)",
        ],
        ["fill child: peak RSS", f"{fill['peak_rss_mb']:.1f} MB"],
        [
            "backlog file size (db + wal + shm)",
            f"{files['db']:.1f} + {files['-wal']:.1f} + {files['-shm']:.1f} MB",
        ],
        ["worker child: RSS at start (interpreter + imports)", f"{hold['rss_start_mb']:.1f} MB"],
        ["worker child: open (connect, migrate, count)", f"{hold['open_seconds'] * 1000:.0f} ms"],
        [
            f"worker child: peak RSS, paused gate, {sizes.rss_paused_s:g} s",
            f"{peaks.get('paused', math.nan):.1f} MB",
        ],
        ["worker child: lane `queued` in `stats()` while paused", f"{hold['lane_queued_stat']:,}"],
        [
            f"worker child: after resume, drained (at most {sizes.rss_drain:,} or "
            f"{sizes.rss_drain_s:g} s)",
            f"{hold['drained']:,} jobs in {hold['drain_seconds']:.2f} s "
            f"({fmt_rate(hold['drained'] / hold['drain_seconds'])} jobs/s)",
        ],
        [
            "worker child: SQLite transactions while draining (claims + completes)",
            f"{hold['drain_transactions']:,}",
        ],
        ["worker child: peak RSS while draining", f"{peaks.get('drain', math.nan):.1f} MB"],
        [
            "**worker child: peak RSS over its life (`VmHWM`)**",
            f"**{memory.peak_mb:.1f} MB** (target < {TARGET_RSS_MB:.0f} MB: "
            f"{verdict(memory.passed)})",
        ],
    ]
    return Table(["memory run", "value"], rows)


def _per_rep_table(fig: Figures) -> Table:
    rows = []
    for rep in fig.reps:
        assert rep.floodgate is not None
        fg = rep.floodgate
        cells = [
            str(rep.index + 1),
            " -> ".join(rep.order),
            "-" if fg.sequential is None else fmt_rate(fg.sequential.rate),
            fmt_rate(fg.submit.rate),
            fmt_rate(fg.drain.rate),
            "-" if fg.both is None else fmt_rate(fg.both.rate),
            "-" if fg.both_submitted_s is None else f"{fg.both_submitted_s:.2f}",
        ]
        for name in PEERS:
            peer = rep.peers[name]
            cells += [fmt_rate(peer.enqueue.rate), fmt_rate(peer.drain.rate)]
        rows.append(cells)
    headers = [
        "rep",
        "order",
        "FG 1 submitter",
        f"FG {SUBMITTERS} submitters",
        "FG drain",
        "FG submit+drain",
        "FG submit+drain: last submit returned at (s)",
    ]
    for name in PEERS:
        headers += [f"{name} enqueue", f"{name} drain"]
    return Table(headers, rows)


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "(version unknown)"


def _method(normal: Figures, full: Figures, sizes: Sizes) -> str:
    return "\n".join(
        [
            f"- One process, one temporary directory under /tmp for every system (same disk); "
            f"each system gets a fresh directory per repetition, deleted afterwards. "
            f"{len(normal.reps)} repetition(s) at synchronous=NORMAL, each running the three "
            "systems one after another, the first one rotating; figures are medians of "
            "the per-rep seconds (jobs/s = N / median s). Every run starts after a "
            "`gc.collect()`.",
            f"- Floodgate: `Scheduler(path, lanes=[Lane('{LANE}', {SEATS}, durable=True)], "
            f"backlog_options=BacklogOptions(claim_batch={CLAIM_BATCH}, poll_interval={POLL_S}))`"
            f", a task registered as `{TASK}` whose body only counts its runs. Submit runs in "
            "`open(run=())` and is timed from the first submit to the last one returning "
            "(each returns once its row is committed). The drain opens a second scheduler "
            f"on the same file with `open(run=('{LANE}',))` and is timed from its first "
            "step (backlog already open) until the N-th job has run and `backlog_counts()` "
            "shows N `done` (outcomes committed). Submit + drain: one `async with sched:`, "
            f"{SUBMITTERS} submitters, timed until N `done`. Each run checks the exact "
            "counts (N queued, or N done, nothing else) or stops the benchmark.",
            f"- Floodgate's sequential end to end = N / (median submit s + median drain s) "
            f"with {SUBMITTERS} submitters; the 1-submitter run stores {sizes.sequential:,} "
            "jobs in a separate file.",
            f"- huey {_version('huey')}: `SqliteHuey` "
            "(its SQLite storage: WAL, one connection behind a lock, `begin exclusive` per "
            "dequeue); default `Huey` settings otherwise (results on, `None` not stored, "
            "pickle serializer). Enqueue: N calls of the `@huey.task()` wrapper, each one "
            "committed insert. Drain: `huey.create_consumer(workers=1, "
            "worker_type='thread', periodic=False, initial_delay=0.001, max_delay=0.01)` "
            "started in-process, timed until the N-th task body ran; its queue is then "
            "checked empty.",
            f"- persist-queue {_version('persist-queue')}: `SQLiteAckQueue(path, "
            "auto_resume=False)` (one connection, "
            "pickle serializer, WAL). Enqueue: N `put(i)`, each a commit. Drain: "
            "`get(block=False, raw=True)` (marks the row unacked: a commit), a no-op call, "
            "`ack(id=...)` (a commit), and `clear_acked_data(max_delete=0, keep_latest=0)` "
            f"every {PQ_CLEAR_EVERY:,} acks, as its README recommends; without that "
            "clean-up every `get` re-scans all acked rows and the drain slows down "
            "quadratically.",
            "- SQLite settings: Floodgate sets `synchronous` from `BacklogOptions` "
            "(default NORMAL) in WAL. huey only offers `fsync=True` (FULL) or SQLite's "
            "default (FULL); persist-queue offers nothing (SQLite's default, FULL). Both "
            "are switched to NORMAL with a PRAGMA on their one connection, read back and "
            "printed in the table, so no system pays an fsync per commit that another "
            f"skips. The FULL supplement (N = {full.n:,}, 1 rep) runs every system with "
            "FULL (huey's and persist-queue's defaults).",
            f"- Memory: child 1 (`python -m benchmarks._durable_rss fill`) stores "
            f"{sizes.rss_jobs:,} queued jobs with the backlog's own batch `submit()`. "
            "Child 2 (`... hold`) starts a fresh interpreter, pauses the gate, opens "
            f"`Scheduler(path, lanes=[Lane('{LANE}', {SEATS}, durable=True, gated=True)])` "
            f"with `open(run=('{LANE}',))`, holds {sizes.rss_paused_s:g} s (checks nothing "
            "was claimed), resumes the gate and drains until "
            f"{sizes.rss_drain:,} jobs are done or {sizes.rss_drain_s:g} s pass. RSS is "
            "sampled every 20 ms (psutil); the target is its `VmHWM` (the high-water mark "
            "of the child's own address space, over its whole life), so nothing from the "
            "throughput runs counts. Not `ru_maxrss`: Linux carries that across fork and "
            "exec, so a child would report this benchmark process's peak.",
        ]
    )


if __name__ == "__main__":
    raise SystemExit(main(NAME, __doc__, run))
