"""Fleet: one upstream budget shared by several processes (issue 11).

Three measurements, each repeated ``--repeat`` times (median, min, max):

- **Aggregate goodput** of K = 1, 2, 4 and 8 worker processes sharing one
  upstream that allows R req/s: the ``pacing`` benchmark's ``SimulatedLLM``
  (R = 40 req/s, burst 5, 12 at once, 50 ms per answer) served by uvicorn on
  127.0.0.1. The K processes (``python -m benchmarks._fleet_member drain``) open
  one fresh SQLite backlog with the default lanes and fleet sharing on (the
  default), wait until all are up, then N jobs are submitted at once and they
  drain them with the ``pacing`` benchmark's task; once with
  ``Upstream("llm", rpm=R*60)`` in every process, once with the defaults (the
  rate is learned). Goodput = requests answered 200 / (last 200's answer - first
  request's arrival), on the upstream's clock and by its own counters.
- **The overhead of sharing per request**: sequential ``sched.call(noop,
  upstream="llm")`` calls (each followed by ``await asyncio.sleep(0)``, so the
  background tasks get their turns as they would under load) through a
  scheduler with fleet sharing on and one with ``fleet=False``, on a SQLite
  backlog, alternating, in one process; the difference per call. Also the
  latency of one exchange with the shared state (``FleetSync.sync_once``).
- **Propagation delay of a pause**: process A calls
  ``gate.upstream("llm").pause(0.5)`` P times (0.8-1.05 s apart) and records the
  wall-clock time; process B asks ``blocked()`` every millisecond and records when
  it turns ``retry_after``. Delay = B's time - A's, p50 and p99 over the P pauses.
  On a SQLite file (B's exchange loop: every 0.25 s) and, when
  ``FLOODGATE_TEST_POSTGRES_DSN`` is set, on PostgreSQL (``NOTIFY`` wakes B).

Run alone: ``python -m benchmarks.fleet [--quick] [--repeat K]``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scheduler import Scheduler
from scheduler.fleet import MemoryFleetStore
from workers.drill.server import serve
from workers.drill.upstream import SimulatedLLM

from ._common import (
    Options,
    Outcome,
    Table,
    main,
    median,
    percentile,
    postgres_dsn,
    progress,
    verdict,
    write_report,
)
from ._fleet_member import TASK, UPSTREAM
from .pacing import BURST, MAX_IN_FLIGHT, RATE, SERVICE_TIME
from .pacing import UPSTREAM as UPSTREAM_CONFIG
from .postgres import _checked, _schema_name, _sql, _with_query

NAME = "fleet"
REPO = Path(__file__).resolve().parent.parent
PROCESS_COUNTS = (1, 2, 4, 8)
WITH_RPM = "rpm set"
DEFAULTS = "defaults"
VARIANTS = (WITH_RPM, DEFAULTS)
DSN_ENV = "FLOODGATE_TEST_POSTGRES_DSN"

#: seconds every member process may take to start
START_LIMIT_S = 60.0
#: seconds after the last member is up before the jobs are submitted (a few exchanges)
SETTLE_S = 0.75
#: a drain gives up after GIVE_UP x N / R seconds
GIVE_UP = 4.0
#: jobs per gather while submitting
SUBMIT_CHUNK = 500
#: the propagation measurement: pause length and the gap after it (+ up to 0.25 s)
#: (a pause must outlast the propagation delay, or the others never see it)
HOLD_S = 0.5
GAP_S = 0.3
#: exchanges timed for the exchange latency
EXCHANGES = 40

# ---------------------------------------------------------------- targets (full runs)

TARGET_GOODPUT_SHARE = 0.90  # of R, median, every K and variant
TARGET_REJECTED_SHARE = 0.01  # of requests answered 429, median
TARGET_PROPAGATION_P99 = 1.0  # seconds (the issue: within 1 s)


@dataclass(frozen=True, slots=True)
class Sizes:
    jobs: int
    repeats: int
    calls: int  # overhead: calls per timed block
    rounds: int  # overhead: timed blocks per variant per repetition
    pauses: int  # propagation: pauses per repetition


FULL = Sizes(jobs=800, repeats=3, calls=150_000, rounds=4, pauses=50)
QUICK = Sizes(jobs=200, repeats=1, calls=40_000, rounds=2, pauses=15)


# ---------------------------------------------------------------- member processes


@dataclass(slots=True)
class Child:
    """A member process and the JSON lines it printed."""

    proc: asyncio.subprocess.Process
    lines: list[dict[str, Any]] = field(default_factory=list)
    reader: asyncio.Task[None] | None = None

    def result(self) -> dict[str, Any] | None:
        return next((line for line in self.lines if line.get("event") == "result"), None)

    @property
    def ready(self) -> bool:
        return any(line.get("event") == "ready" for line in self.lines)

    async def read(self) -> None:
        assert self.proc.stdout is not None
        for _ in range(1_000_000):  # bounded: until the process closes stdout
            raw = await self.proc.stdout.readline()
            if not raw:
                return
            with contextlib.suppress(ValueError):
                self.lines.append(json.loads(raw))


@contextlib.asynccontextmanager
async def _children() -> AsyncIterator[list[Child]]:
    """Member processes started in the block; any still running at its end are killed."""
    started: list[Child] = []
    try:
        yield started
    finally:
        for child in started:
            if child.proc.returncode is None:
                child.proc.kill()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(child.proc.wait(), 10)
            if child.reader is not None:
                child.reader.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await child.reader


async def _start(children: list[Child], *args: str) -> Child:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "benchmarks._fleet_member",
        *args,
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    child = Child(proc)
    child.reader = asyncio.create_task(child.read())
    children.append(child)
    return child


async def _until(what: str, check: Callable[[], bool], seconds: float) -> None:
    for _ in range(math.ceil(seconds / 0.02) + 1):
        if check():
            return
        await asyncio.sleep(0.02)
    raise RuntimeError(f"gave up after {seconds:g} s waiting until {what}")


# ---------------------------------------------------------------- goodput


@dataclass(frozen=True, slots=True)
class Drain:
    """K processes draining N jobs through one fresh upstream, as the upstream counted."""

    variant: str
    processes: int
    index: int
    jobs: int
    done: int
    requests: int
    ok: int
    rejected: int
    elapsed: float
    smallest_part: float  # the smallest process's share of the 200s (1/K if even)
    largest_part: float
    notes: tuple[str, ...] = ()

    @property
    def finished(self) -> bool:
        return self.done >= self.jobs

    @property
    def goodput(self) -> float:
        return self.ok / self.elapsed if self.elapsed > 0 else math.nan

    @property
    def goodput_share(self) -> float:
        return self.goodput / RATE

    @property
    def rejected_share(self) -> float:
        return self.rejected / self.requests if self.requests else math.nan


async def _drain(variant: str, k: int, n: int, index: int) -> Drain:
    upstream = SimulatedLLM(UPSTREAM_CONFIG)
    give_up = GIVE_UP * n / RATE + 10.0
    with tempfile.TemporaryDirectory(prefix="floodgate-fleet-") as tmp:
        db = str(Path(tmp) / "b.db")
        submitter = Scheduler(db, shutdown_grace=0, fleet=False)

        async def stub(doc: int) -> int:
            return doc

        submitter.task(name=TASK)(stub)
        async with submitter.open(run=()), serve(upstream) as url, _children() as children:
            rpm = ["--rpm", f"{RATE * 60:g}"] if variant == WITH_RPM else []
            for _ in range(k):
                await _start(children, "drain", db, url, str(n), *rpm)
            await _until(
                "every member is up", lambda: all(c.ready for c in children), START_LIMIT_S
            )
            await asyncio.sleep(SETTLE_S)
            upstream.timeline.start()
            upstream.reset_bucket()
            for low in range(0, n, SUBMIT_CHUNK):
                chunk = range(low, min(n, low + SUBMIT_CHUNK))
                await asyncio.gather(*(submitter.submit(TASK, d, key=f"doc-{d}") for d in chunk))
            notes: list[str] = []
            try:
                await asyncio.wait_for(asyncio.gather(*(c.proc.wait() for c in children)), give_up)
            except TimeoutError:
                notes.append(f"gave up after {give_up:.0f} s")
            for child in children:
                if child.reader is not None:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(asyncio.shield(child.reader), 5)
            done = (await submitter.backlog_counts()).get("batch", {}).get("done", 0)
            results = [c.result() or {} for c in children]
    events = list(upstream.events)
    ok_events = [e for e in events if e.status == 200]
    first = min((e.t for e in events), default=0.0)
    last = max((e.answered or e.t for e in ok_events), default=first)
    parts = [int(r.get("ok", 0)) for r in results]
    total = sum(parts) or 1
    shares = sorted({str(r.get("share")) for r in results})
    notes.append(
        f"processes' own 429 counts {[r.get('rate_limited') for r in results]}, "
        f"shares at the end {', '.join(shares)}, "
        f"members seen {[r.get('members') for r in results]}, "
        f"learned rates (the fleet's, req/s) {[_round(r.get('learned_rate')) for r in results]}, "
        f"batch concurrency limits {[r.get('limit') for r in results]}, "
        f"gate closed by {[r.get('gate_closed_by') for r in results]}"
    )
    if results and children:
        notes.append(_trajectory(children[0]))
    return Drain(
        variant=variant,
        processes=k,
        index=index,
        jobs=n,
        done=done,
        requests=len(events),
        ok=len(ok_events),
        rejected=sum(1 for e in events if e.status == 429),
        elapsed=last - first,
        smallest_part=min(parts) / total if parts else math.nan,
        largest_part=max(parts) / total if parts else math.nan,
        notes=tuple(notes),
    )


def _trajectory(child: Child) -> str:
    """The first process's learned rate (the fleet's) and 200s, once a second."""
    samples = [line for line in child.lines if line.get("event") == "sample"]
    if not samples:
        return "no samples"
    t0 = float(samples[0]["t"])
    points = [
        f"{float(s['t']) - t0:.0f}s: {_round(s.get('learned'))}/{s.get('ok')}"
        for s in samples[1::2]
    ]
    return "process 1's learned rate (req/s, the fleet's) / 200s so far: " + ", ".join(points)


# ---------------------------------------------------------------- overhead


@dataclass(frozen=True, slots=True)
class Overhead:
    """One repetition: per-call time with fleet sharing on (the SQLite store, and an
    in-memory store that isolates the exchanges' cost) and off; medians of the rounds."""

    on_us: float
    memory_us: float
    off_us: float
    exchange_p50_ms: float
    exchange_p99_ms: float
    syncs_per_s: float

    @property
    def difference_us(self) -> float:
        return self.on_us - self.off_us

    @property
    def memory_difference_us(self) -> float:
        return self.memory_us - self.off_us


SHARED, IN_MEMORY, NOT_SHARED = "shared (SQLite)", "shared (in-memory store)", "fleet=False"


async def _time_calls(db: str, kind: str, calls: int) -> tuple[float, list[float], float]:
    """Seconds per call; exchange latencies (SQLite store); exchanges per second meanwhile."""
    fleet: bool | MemoryFleetStore = MemoryFleetStore() if kind == IN_MEMORY else kind == SHARED
    sched = Scheduler(db, shutdown_grace=0, fleet=fleet)

    async def noop() -> None:
        return None

    exchanges: list[float] = []
    async with sched.open(run=("interactive",)):
        for _ in range(min(1000, calls)):  # warm up
            await sched.call(noop, upstream=UPSTREAM)
        sync = sched.gate.fleet
        syncs_before = sync.syncs if sync is not None else 0
        start = time.perf_counter()
        for _ in range(calls):
            await sched.call(noop, upstream=UPSTREAM)
            await asyncio.sleep(0)
        seconds = time.perf_counter() - start
        syncs = (sync.syncs - syncs_before) if sync is not None else 0
        if sync is not None and kind == SHARED:
            for _ in range(EXCHANGES):
                began = time.perf_counter()
                await sync.sync_once()
                exchanges.append(time.perf_counter() - began)
    return seconds / calls, exchanges, syncs / seconds


async def _overhead(calls: int, rounds: int) -> Overhead:
    per_call: dict[str, list[float]] = {SHARED: [], IN_MEMORY: [], NOT_SHARED: []}
    exchanges: list[float] = []
    rates: list[float] = []
    kinds = tuple(per_call)
    with tempfile.TemporaryDirectory(prefix="floodgate-fleet-overhead-") as tmp:
        for r in range(rounds):
            for kind in kinds if r % 2 == 0 else tuple(reversed(kinds)):
                seconds, latencies, rate = await _time_calls(
                    str(Path(tmp) / f"{r}-{kinds.index(kind)}.db"), kind, calls
                )
                per_call[kind].append(seconds)
                if kind == SHARED:
                    exchanges += latencies
                    rates.append(rate)
    return Overhead(
        on_us=median(per_call[SHARED]) * 1e6,
        memory_us=median(per_call[IN_MEMORY]) * 1e6,
        off_us=median(per_call[NOT_SHARED]) * 1e6,
        exchange_p50_ms=percentile(exchanges, 50) * 1e3,
        exchange_p99_ms=percentile(exchanges, 99) * 1e3,
        syncs_per_s=median(rates),
    )


# ---------------------------------------------------------------- propagation


@dataclass(frozen=True, slots=True)
class Propagation:
    backend: str
    index: int
    pauses: int
    delays: tuple[float, ...]  # seconds, one per pause B saw

    @property
    def seen(self) -> int:
        return len(self.delays)

    def q(self, pct: float) -> float:
        return percentile(self.delays, pct) if self.delays else math.nan


async def _propagation(backend: str, backlog: str, count: int, index: int) -> Propagation:
    limit = 1.0 + count * (HOLD_S + GAP_S + 0.25) + 10.0
    async with _children() as children:
        watcher = await _start(children, "watch", backlog, str(count), f"{limit:g}")
        await _until("the watcher is up", lambda: watcher.ready, START_LIMIT_S)
        pauser = await _start(children, "pause", backlog, str(count), f"{HOLD_S}", f"{GAP_S}")
        await asyncio.wait_for(pauser.proc.wait(), START_LIMIT_S + limit)
        with contextlib.suppress(TimeoutError):  # it stops on its own once it saw them all
            await asyncio.wait_for(watcher.proc.wait(), 2.0 + HOLD_S)
        if pauser.reader is not None:
            await asyncio.wait_for(asyncio.shield(pauser.reader), 5)
        paused = [float(t) for t in (pauser.result() or {}).get("paused", [])]
        seen = sorted(float(line["t"]) for line in watcher.lines if line.get("event") == "seen")
    delays: list[float] = []
    for i, at in enumerate(paused):
        until = paused[i + 1] if i + 1 < len(paused) else math.inf
        first = next((t for t in seen if at <= t < until), None)
        if first is not None:
            delays.append(first - at)
    return Propagation(backend, index, len(paused), tuple(delays))


async def _propagation_sqlite(count: int, index: int) -> Propagation:
    with tempfile.TemporaryDirectory(prefix="floodgate-fleet-pause-") as tmp:
        db = str(Path(tmp) / "b.db")
        async with Scheduler(db, shutdown_grace=0, fleet=False).open(run=()):
            pass  # create the backlog before two processes open it
        return await _propagation("SQLite file", db, count, index)


async def _propagation_postgres(dsn: str, count: int, index: int) -> Propagation:
    schema = _schema_name()
    await _sql(dsn, f'CREATE SCHEMA "{_checked(schema)}"')
    try:
        scoped = _with_query(dsn, search_path=schema)
        async with Scheduler(scoped, shutdown_grace=0, fleet=False).open(run=()):
            pass
        return await _propagation("PostgreSQL (NOTIFY)", scoped, count, index)
    finally:
        await _sql(dsn, f'DROP SCHEMA IF EXISTS "{_checked(schema)}" CASCADE')


# ---------------------------------------------------------------- the benchmark


Stat = tuple[float, float, float]


def _stat(values: Sequence[float]) -> Stat:
    kept = [v for v in values if not math.isnan(v)]
    if not kept:
        return math.nan, math.nan, math.nan
    return median(kept), min(kept), max(kept)


def run(options: Options) -> Outcome:
    sizes = QUICK if options.quick else FULL
    repeats = options.repeat if options.repeat is not None else sizes.repeats
    found, why = postgres_dsn()
    dsn = found or ""
    progress(
        f"{NAME}: upstream R={RATE:g} req/s (burst {BURST:g}); {sizes.jobs:,} jobs x "
        f"K={', '.join(map(str, PROCESS_COUNTS))} x {len(VARIANTS)} variants x {repeats} repeats; "
        f"overhead {sizes.calls:,} calls x {sizes.rounds} rounds; {sizes.pauses} pauses "
        f"({f'SQLite and PostgreSQL ({why})' if dsn else f'SQLite only: {why}'})"
    )
    drains: list[Drain] = []
    overheads: list[Overhead] = []
    pauses: list[Propagation] = []
    for index in range(repeats):
        for variant in VARIANTS:
            for k in PROCESS_COUNTS:
                got = asyncio.run(_drain(variant, k, sizes.jobs, index))
                drains.append(got)
                progress(
                    f"{NAME}: [{variant}, K={k}] repeat {index + 1}/{repeats}: goodput "
                    f"{got.goodput:.1f} req/s ({_pct(got.goodput_share)} of R), 429 "
                    f"{_pct(got.rejected_share)}, {got.requests:,} requests, {got.elapsed:.1f} s"
                    + ("" if got.finished else f", UNFINISHED {got.jobs - got.done}")
                )
        cost = asyncio.run(_overhead(sizes.calls, sizes.rounds))
        overheads.append(cost)
        progress(
            f"{NAME}: overhead repeat {index + 1}/{repeats}: {cost.on_us:.2f} us/call shared, "
            f"{cost.off_us:.2f} us/call not: {cost.difference_us:+.2f} us (in-memory store "
            f"{cost.memory_difference_us:+.2f} us); exchange p50 {cost.exchange_p50_ms:.2f} ms"
        )
        for backend in ("sqlite", "postgres") if dsn else ("sqlite",):
            if backend == "sqlite":
                got_p = asyncio.run(_propagation_sqlite(sizes.pauses, index))
            else:
                got_p = asyncio.run(_propagation_postgres(dsn, sizes.pauses, index))
            pauses.append(got_p)
            progress(
                f"{NAME}: propagation [{got_p.backend}] repeat {index + 1}/{repeats}: "
                f"p50 {_ms(got_p.q(50))}, p99 {_ms(got_p.q(99))}, "
                f"{got_p.seen} of {got_p.pauses} seen"
            )
    checks = _checks(drains, pauses)
    if options.quick:
        passed, verdict_text = True, "quick smoke run, no verdict"
    else:
        passed = all(ok for _, ok in checks)
        verdict_text = (
            f"targets: goodput >= {_pct(TARGET_GOODPUT_SHARE)} of R and 429 <= "
            f"{_pct(TARGET_REJECTED_SHARE)} for every K, propagation p99 <= "
            f"{TARGET_PROPAGATION_P99:g} s"
        )
    command = f"python -m benchmarks --only {NAME}" + (" --quick" if options.quick else "")
    if options.repeat is not None:
        command += f" --repeat {options.repeat}"
    report = write_report(
        options,
        NAME,
        "Fleet: one upstream budget shared by several processes",
        _report_blocks(drains, overheads, pauses, checks, sizes, repeats, options.quick),
        command=command,
    )
    summary = "; ".join(
        f"{variant}: "
        + ", ".join(f"K={k} {_pct(_cell_share(drains, variant, k))}" for k in PROCESS_COUNTS)
        for variant in VARIANTS
    )
    diff = _stat([o.difference_us for o in overheads])[0]
    summary += f"; sharing {diff:+.2f} us/request; " + ", ".join(
        f"pause p50/p99 {backend} {_ms(_stat([p.q(50) for p in ps])[0])}/"
        f"{_ms(_stat([p.q(99) for p in ps])[0])}"
        for backend, ps in _by_backend(pauses).items()
    )
    unfinished = sum(not d.finished for d in drains)
    broken = f"{unfinished} drain(s) left jobs undone" if unfinished else None
    return Outcome(NAME, passed, f"{summary} ({verdict_text})", report, broken=broken)


def _cell_share(drains: Sequence[Drain], variant: str, k: int) -> float:
    """The median goodput share of R of one (variant, K) cell."""
    return _stat([d.goodput_share for d in drains if d.variant == variant and d.processes == k])[0]


def _by_backend(pauses: Sequence[Propagation]) -> dict[str, list[Propagation]]:
    grouped: dict[str, list[Propagation]] = {}
    for p in pauses:
        grouped.setdefault(p.backend, []).append(p)
    return grouped


def _checks(drains: Sequence[Drain], pauses: Sequence[Propagation]) -> list[tuple[str, bool]]:
    checks: list[tuple[str, bool]] = []
    for variant in VARIANTS:
        for k in PROCESS_COUNTS:
            cell = [d for d in drains if d.variant == variant and d.processes == k]
            share = _stat([d.goodput_share for d in cell])[0]
            rejected = _stat([d.rejected_share for d in cell])[0]
            unfinished = sum(1 for d in cell if not d.finished)
            checks.append(
                (
                    f"{variant}, K={k}: goodput median {_pct(share)} of R "
                    f"(target >= {_pct(TARGET_GOODPUT_SHARE)})",
                    share >= TARGET_GOODPUT_SHARE,
                )
            )
            checks.append(
                (
                    f"{variant}, K={k}: 429 share median {_pct(rejected)} "
                    f"(target <= {_pct(TARGET_REJECTED_SHARE)})",
                    rejected <= TARGET_REJECTED_SHARE,
                )
            )
            checks.append((f"{variant}, K={k}: every run finished", not unfinished))
    for backend, ps in _by_backend(pauses).items():
        p99 = _stat([p.q(99) for p in ps])[0]
        missed = sum(p.pauses - p.seen for p in ps)
        checks.append(
            (
                f"pause propagation, {backend}: p99 {_ms(p99)} (target <= "
                f"{TARGET_PROPAGATION_P99:g} s), {missed} pauses never seen",
                p99 <= TARGET_PROPAGATION_P99 and not missed,
            )
        )
    return checks


# ---------------------------------------------------------------- report


def _pct(share: float) -> str:
    if math.isnan(share):
        return "-"
    return f"{share * 100:.1f} %" if share >= 0.001 or share == 0 else f"{share * 100:.2f} %"


def _ms(seconds: float) -> str:
    return "-" if math.isnan(seconds) else f"{seconds * 1000:.1f} ms"


def _mmm(stat: Stat, fmt: Callable[[float], str]) -> str:
    mid, low, high = stat
    if math.isnan(mid):
        return "-"
    return f"{fmt(mid)} ({fmt(low)} .. {fmt(high)})"


def _report_blocks(
    drains: Sequence[Drain],
    overheads: Sequence[Overhead],
    pauses: Sequence[Propagation],
    checks: Sequence[tuple[str, bool]],
    sizes: Sizes,
    repeats: int,
    quick: bool,
) -> list[str | Table]:
    goodput = Table(
        [
            "variant",
            "processes K",
            "goodput req/s",
            "share of R",
            "429 share",
            "requests",
            "elapsed s",
            "smallest / largest process's part of the 200s",
            "unfinished runs",
        ],
        [
            [
                variant,
                str(k),
                _mmm(_stat([d.goodput for d in cell]), lambda v: f"{v:.1f}"),
                _mmm(_stat([d.goodput_share for d in cell]), _pct),
                _mmm(_stat([d.rejected_share for d in cell]), _pct),
                _mmm(_stat([float(d.requests) for d in cell]), lambda v: f"{v:,.0f}"),
                _mmm(_stat([d.elapsed for d in cell]), lambda v: f"{v:.1f}"),
                f"{_pct(_stat([d.smallest_part for d in cell])[0])} / "
                f"{_pct(_stat([d.largest_part for d in cell])[0])} (1/K = {_pct(1 / k)})",
                f"{sum(1 for d in cell if not d.finished)} of {len(cell)}",
            ]
            for variant in VARIANTS
            for k in PROCESS_COUNTS
            for cell in [[d for d in drains if d.variant == variant and d.processes == k]]
        ],
    )
    overhead = Table(
        ["figure", "median (min .. max) over the repetitions"],
        [
            ["per call, fleet sharing on", _mmm(_stat([o.on_us for o in overheads]), _us)],
            ["per call, `fleet=False`", _mmm(_stat([o.off_us for o in overheads]), _us)],
            [
                "**sharing's cost per request** (on - off)",
                _mmm(_stat([o.difference_us for o in overheads]), _signed_us),
            ],
            [
                "per call, sharing through an in-memory store (no database)",
                _mmm(_stat([o.memory_us for o in overheads]), _us),
            ],
            [
                "in-memory store - off (what sharing costs without the exchanges' I/O)",
                _mmm(_stat([o.memory_difference_us for o in overheads]), _signed_us),
            ],
            [
                "one exchange with the shared state (SQLite), p50",
                _mmm(_stat([o.exchange_p50_ms for o in overheads]), lambda v: f"{v:.2f} ms"),
            ],
            [
                "one exchange, p99",
                _mmm(_stat([o.exchange_p99_ms for o in overheads]), lambda v: f"{v:.2f} ms"),
            ],
            [
                "exchanges per second during the calls",
                _mmm(_stat([o.syncs_per_s for o in overheads]), lambda v: f"{v:.1f}"),
            ],
        ],
    )
    propagation = Table(
        ["backend", "p50", "p99", "max", "pauses seen"],
        [
            [
                backend,
                _mmm(_stat([p.q(50) for p in ps]), _ms),
                _mmm(_stat([p.q(99) for p in ps]), _ms),
                _mmm(_stat([p.q(100) for p in ps]), _ms),
                f"{sum(p.seen for p in ps)} of {sum(p.pauses for p in ps)}",
            ]
            for backend, ps in _by_backend(pauses).items()
        ],
    )
    if quick:
        verdict_lines = (
            "No verdict: `--quick` is a smoke run; the figures it would be judged on:\n\n"
            + "\n".join(f"- {text}" for text, _ in checks)
        )
    else:
        verdict_lines = "\n".join(f"- {verdict(ok)}: {text}" for text, ok in checks)
    per_run = Table(
        ["variant", "K", "repeat", "jobs done", "requests", "200", "429", "goodput req/s",
         "share of R", "elapsed s"],
        [
            [
                d.variant, str(d.processes), str(d.index + 1), f"{d.done:,} / {d.jobs:,}",
                f"{d.requests:,}", f"{d.ok:,}", f"{d.rejected:,}", f"{d.goodput:.1f}",
                _pct(d.goodput_share), f"{d.elapsed:.1f}",
            ]
            for d in drains
        ],
    )  # fmt: skip
    notes = "\n".join(
        f"- {d.variant}, K={d.processes}, repeat {d.index + 1}: " + "; ".join(d.notes)
        for d in drains
        if d.notes
    )
    method = "\n".join(
        [
            f"- {repeats} repetition(s); figures are the median (min .. max) over them.",
            f"- Upstream: the `pacing` benchmark's `SimulatedLLM` (R = {RATE:g} req/s token "
            f"bucket, burst {BURST:g}, {MAX_IN_FLIGHT} at once, {SERVICE_TIME * 1000:.0f} ms "
            "per answer, `x-ratelimit-*` headers), a fresh one per run, on a free loopback "
            "port, in the parent process.",
            f"- Goodput: K member processes (`python -m benchmarks._fleet_member drain`) on "
            f"one fresh SQLite file, default lanes (durable gated `batch` of 8 seats; a durable "
            "lane's ceiling holds fleet-wide, so the K processes share those 8), fleet "
            f"sharing on (the default). Once all are up and {SETTLE_S:g} s more have passed, "
            f"the parent submits N = {sizes.jobs:,} jobs at once; every process exits once "
            "the backlog shows N done. Counts are the upstream's; goodput = 200s / (last "
            "200's answer - first arrival). `rpm set`: `Upstream('llm', rpm=R*60)` in every "
            "process; `defaults`: no upstream settings (learned from 429s and headers). A "
            f"drain gives up after {GIVE_UP:g} x N / R + 10 s.",
            f"- Overhead: {sizes.calls:,} sequential `sched.call(noop, upstream='llm')` "
            "calls, each followed by `await asyncio.sleep(0)`, per timed block (a saturated "
            "event loop: tens of thousands of calls per second); a fresh scheduler (default "
            "lanes, `open(run=('interactive',))`, its own SQLite file) per block, with fleet "
            "sharing on (the SQLite store beside the backlog), on through a "
            "`MemoryFleetStore` (`Scheduler(fleet=MemoryFleetStore())`: the same exchange "
            "loop without database I/O), and off; "
            f"{sizes.rounds} blocks per variant per repetition, the order alternating; the "
            "per-call median of the blocks. Nothing touches the database per request; what "
            "sharing costs is the exchange loop (one short transaction every 0.25 s, in a "
            "worker thread on SQLite, which competes with the event loop for the GIL), "
            "spread over the calls made meanwhile. Exchange latency: "
            f"{EXCHANGES} `FleetSync.sync_once()` calls timed after each SQLite block "
            "(the loop otherwise idle).",
            f"- Propagation: process B (`watch`) polls `blocked()` every 1 ms; process A "
            f"(`pause`) waits 1 s, then {sizes.pauses} times records `time.time()`, calls "
            f"`pause({HOLD_S:g})` and sleeps {HOLD_S:g} + {GAP_S:g} s + U(0, 0.25) s. "
            "Delay = B's first `retry_after` after A's pause - A's time (one host, one "
            "wall clock). SQLite: A publishes at once (a local pause wakes its exchange), "
            "B reads on its next exchange (every 0.25 s). PostgreSQL: A's exchange sends "
            "`NOTIFY`, which wakes B's exchange.",
            f"- Targets (full runs only): goodput >= {_pct(TARGET_GOODPUT_SHARE)} of R and "
            f"429 share <= {_pct(TARGET_REJECTED_SHARE)} for every K and variant (medians), "
            f"every run finished; pause propagation p99 <= {TARGET_PROPAGATION_P99:g} s "
            "(the issue's bound) with no pause missed. The overhead is reported, not judged.",
        ]
    )
    blocks: list[str | Table] = [
        "## Aggregate goodput, K processes sharing R",
        goodput,
        "## The overhead of sharing, per request",
        overhead,
        "## Propagation delay of a pause between two processes",
        propagation,
        "## Verdict",
        verdict_lines,
        "## Per run",
        per_run,
    ]
    if notes:
        blocks += ["## What the processes reported at the end", notes]
    blocks += ["## Method", method]
    return blocks


def _round(value: object) -> object:
    return round(value, 1) if isinstance(value, float) else value


def _us(value: float) -> str:
    return f"{value:.2f} µs"


def _signed_us(value: float) -> str:
    return f"{value:+.2f} µs"


if __name__ == "__main__":
    raise SystemExit(main(NAME, __doc__, run))
