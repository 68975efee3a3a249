"""Tenants on a durable lane: nine small tenants behind one tenant's flood, and what
fairness costs per job, on the default SQLite backlog (``tenants_postgres``: the same
on PostgreSQL).

Everything is the library's defaults: ``Scheduler(path)`` on a real SQLite file
in a temporary directory, so its default lanes (``batch``: 8 seats, durable,
gated) and no ``BacklogOptions``; one registered task per run.

- **Alone**: nine tenants ``submit_many`` 10 jobs each (each job sleeps 5 ms on
  the real clock, an upstream call: the 8 seats are the bottleneck); the time
  from their submits until all 90 results are in (``job.result()``).
- **Behind a flood**: tenant ``big`` first stores 100,000 jobs (``submit_many``
  in calls of 10,000), the lane starts draining them, and once it is busy the
  nine submit their 10 each; the time from their submits until their 90 results
  are in. Target: at most 2x alone. The same with every job ``tenant=None``
  (one FIFO queue) is the baseline that fails: the nine wait for the flood
  (minutes at full size, so it runs in the first repetition only).
- **Cost per job**: N no-op jobs (the task returns at once) stored, then
  drained by the lane until the backlog holds N ``done``: without tenants,
  spread over 10 tenants, and over 1,000 tenants, alternating in one run; the
  µs per job each costs over no tenants, and the ratio of the rates.

Each figure is the median (min .. max) of ``--repeat`` repetitions (default 3);
``--quick`` is a smoke run (a flood of 10,000, N = 2,000). A full run takes about
4 min on SQLite, about 8 on PostgreSQL (two cores).

Run alone: ``python -m benchmarks.tenants_durable [--quick] [--repeat K]``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import math
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scheduler import DEFAULT_LANES, Job, Scheduler, Task

from ._common import (
    Options,
    Outcome,
    Table,
    main,
    median,
    progress,
    verdict,
    write_report,
)

NAME = "tenants_durable"
LANE = "batch"  # the default durable lane
SEATS = next(lane.max_concurrency for lane in DEFAULT_LANES if lane.name == LANE)
TASK = "bench.tenants"
JOB_S = 0.005  # each job of the nine and of the flood sleeps this long (an upstream call)
SMALL_TENANTS = 9
SMALL_JOBS = 10
COST_TENANTS = (None, 10, 1_000)  # the cost runs: no tenants, then over this many
TARGET_RATIO = 2.0  # the nine's time behind the flood / their time alone
CHUNK = 10_000  # jobs per submit_many call while loading
BUSY_FIRST = 4 * SEATS  # flood jobs that have run before the nine submit: the lane is busy
TIME_LIMIT_S = 120.0  # the nine behind the flood with tenants; a drain; a load
FIFO_LIMIT_S = 300.0  # the nine behind the flood in one FIFO queue (~ flood x 5 ms / 8)
POLL_S = 0.005  # how often a drain asks the backlog whether it is over
SETTLE_S = 0.1  # the lane idles this long before the nine submit alone
#: the nine alone take about 70 ms: measured this many times per repetition (median)
ROUNDS = 5


@dataclass(frozen=True, slots=True)
class Sizes:
    flood: int
    cost_jobs: int
    repeats: int


FULL = Sizes(flood=100_000, cost_jobs=10_000, repeats=3)
QUICK = Sizes(flood=10_000, cost_jobs=2_000, repeats=1)

#: a fresh, empty backlog per run: yields what ``Scheduler(...)`` takes
Fresh = Callable[[], contextlib.AbstractAsyncContextManager[str]]


@dataclass(frozen=True, slots=True)
class Backend:
    name: str  # the benchmark's name (its report is <name>.md)
    label: str  # "SQLite" / "PostgreSQL"
    fresh: Fresh
    how: str  # the method's line about the backlog


@contextlib.asynccontextmanager
async def _sqlite_file() -> AsyncIterator[str]:
    with tempfile.TemporaryDirectory(prefix="floodgate-bench-tenants-", dir="/tmp") as tmp:
        yield str(Path(tmp) / "x.db")


SQLITE = Backend(
    NAME,
    "SQLite",
    _sqlite_file,
    "`Scheduler(path)`: a fresh SQLite file in a temporary directory under /tmp per run "
    "(the default backlog, WAL, `synchronous=NORMAL`)",
)


# ---------------------------------------------------------------- one scheduler


class Runs:
    """The task's body: counts the jobs that ran, the flood's apart."""

    def __init__(self, sleep: float) -> None:
        self.sleep = sleep
        self.ran = 0
        self.target = math.inf
        self.reached = asyncio.Event()

    async def job(self, i: int) -> None:
        if self.sleep:
            await asyncio.sleep(self.sleep)
        self.ran += 1
        if self.ran >= self.target:
            self.reached.set()

    async def until_ran(self, n: int) -> None:
        self.target = n
        if self.ran >= n:
            self.reached.set()
        await self.reached.wait()


def _scheduler(target: str, runs: Runs) -> tuple[Scheduler, Task[Any, Any]]:
    """The defaults; ``shutdown_grace`` only bounds the exit with a flood still queued."""
    sched = Scheduler(target, shutdown_grace=5.0)
    task: Task[Any, Any] = sched.task(runs.job, name=TASK, lane=LANE)
    return sched, task


async def _load(task: Task[Any, Any], n: int, tenant_of: Callable[[int], str | None]) -> None:
    """Store ``n`` jobs, job i for ``tenant_of(i)``, in ``submit_many`` calls of at
    most :data:`CHUNK` jobs of one tenant each."""
    groups: dict[str | None, list[int]] = {}
    for i in range(n):
        groups.setdefault(tenant_of(i), []).append(i)
    async with asyncio.timeout(TIME_LIMIT_S):
        for tenant, ids in groups.items():
            for first in range(0, len(ids), CHUNK):
                chunk = ids[first : first + CHUNK]
                jobs = await task.submit_many([[i] for i in chunk], tenant=tenant)
                if len(jobs) != len(chunk):
                    raise RuntimeError("submit_many returned the wrong number of jobs")


async def _nine(task: Task[Any, Any], *, tenants: bool, limit: float) -> float:
    """Seconds from the nine's submits until their 90 results are in (``inf``: not
    within ``limit``)."""
    start = time.perf_counter()
    try:
        async with asyncio.timeout(limit):
            calls = [
                task.submit_many(
                    [[-1 - k * SMALL_JOBS - j] for j in range(SMALL_JOBS)],
                    tenant=f"small-{k}" if tenants else None,
                )
                for k in range(SMALL_TENANTS)
            ]
            jobs: list[Job] = [job for batch in await asyncio.gather(*calls) for job in batch]
            await asyncio.gather(*(job.result() for job in jobs))
    except TimeoutError:
        return math.inf
    return time.perf_counter() - start


async def _alone(fresh: Fresh) -> float:
    async with fresh() as target:
        sched, task = _scheduler(target, Runs(JOB_S))
        async with sched:
            await asyncio.sleep(SETTLE_S)  # the lane has looked once and waits for work
            return await _nine(task, tenants=True, limit=TIME_LIMIT_S)


async def _behind_flood(fresh: Fresh, flood: int, *, tenants: bool) -> float:
    async with fresh() as target:
        runs = Runs(JOB_S)
        sched, task = _scheduler(target, runs)
        async with sched.open(run=()):
            await _load(task, flood, lambda i: "big" if tenants else None)
        async with sched:
            async with asyncio.timeout(TIME_LIMIT_S):
                await runs.until_ran(BUSY_FIRST)  # the lane is busy with the flood
            limit = TIME_LIMIT_S if tenants else FIFO_LIMIT_S
            return await _nine(task, tenants=tenants, limit=limit)


@dataclass(frozen=True, slots=True)
class Drain:
    seconds: float
    counts: dict[str, dict[str, int]]


async def _drain(fresh: Fresh, n: int, tenants: int | None) -> Drain:
    """Store ``n`` no-op jobs (job i for tenant ``t{i % tenants}``, or none), then time
    the lane draining them until the backlog holds ``n`` done."""
    async with fresh() as target:
        runs = Runs(0.0)
        sched, task = _scheduler(target, runs)
        async with sched.open(run=()):
            await _load(
                task, n, (lambda i: None) if tenants is None else (lambda i: f"t{i % tenants}")
            )
        gc.collect()  # the load's garbage is not collected on the drain's clock
        async with sched:
            start = time.perf_counter()
            async with asyncio.timeout(TIME_LIMIT_S):
                await runs.until_ran(n)
                while True:
                    counts = await sched.backlog_counts()
                    if counts.get(LANE, {}).get("done", 0) >= n:
                        break
                    await asyncio.sleep(POLL_S)
            seconds = time.perf_counter() - start
        return Drain(seconds, counts)


# ---------------------------------------------------------------- one repetition


@dataclass(frozen=True, slots=True)
class Rep:
    alone: float  # seconds, the median of ROUNDS
    fair: float  # seconds behind the flood, with tenants
    fifo: float | None  # behind the flood, one FIFO queue (inf: past FIFO_LIMIT_S; None: not run)
    per_job_us: dict[int | None, float]  # the cost runs: µs per job by tenant count
    broken: str | None


def _rep(backend: Backend, sizes: Sizes, index: int, repeats: int) -> Rep:
    fresh = backend.fresh
    alone = median([asyncio.run(_alone(fresh)) for _ in range(ROUNDS)])
    fair = asyncio.run(_behind_flood(fresh, sizes.flood, tenants=True))
    fifo = asyncio.run(_behind_flood(fresh, sizes.flood, tenants=False)) if index == 0 else None
    per_job: dict[int | None, float] = {}
    broken = None if math.isfinite(fair) and math.isfinite(alone) else "the nine never finished"
    # the order turns each repetition, so drift on the machine does not favour one
    order = [COST_TENANTS[(index + k) % len(COST_TENANTS)] for k in range(len(COST_TENANTS))]
    for tenants in order:
        drain = asyncio.run(_drain(fresh, sizes.cost_jobs, tenants))
        per_job[tenants] = drain.seconds / sizes.cost_jobs * 1e6
        if drain.counts != {LANE: {"done": sizes.cost_jobs}}:
            broken = f"a drain over {_tenants(tenants)} left {drain.counts}"
    progress(
        f"{backend.name}: repeat {index + 1}/{repeats}: nine alone {alone * 1e3:.0f} ms, "
        f"behind {sizes.flood:,} with tenants {fair * 1e3:.0f} ms"
        + ("" if fifo is None else f", without {_ms(fifo)}")
        + "; per job "
        + ", ".join(f"{_tenants(t)} {per_job[t]:.1f} us" for t in COST_TENANTS)
    )
    return Rep(alone, fair, fifo, per_job, broken)


def _ms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if not math.isfinite(seconds):
        return f"> {FIFO_LIMIT_S * 1e3:,.0f} ms"
    return f"{seconds * 1e3:,.0f} ms"


def _times(ratio: float) -> str:
    return f"{ratio:,.1f}x" if math.isfinite(ratio) else "> limit"


def _tenants(tenants: int | None) -> str:
    return "no tenants" if tenants is None else f"{tenants:,} tenants"


def _mmm(values: Sequence[float], fmt: Callable[[float], str]) -> str:
    return f"{fmt(median(values))} ({fmt(min(values))} .. {fmt(max(values))})"


# ---------------------------------------------------------------- the benchmark


def run_on(backend: Backend, options: Options) -> Outcome:
    """The benchmark on ``backend``: every figure, the report, the verdict."""
    sizes = QUICK if options.quick else FULL
    repeats = options.repeat or sizes.repeats
    progress(
        f"{backend.name}: {repeats} repetition(s) on {backend.label}: the nine alone, behind "
        f"{sizes.flood:,} (with and without tenants), and {sizes.cost_jobs:,} no-op jobs "
        f"drained over {', '.join(_tenants(t) for t in COST_TENANTS)}"
    )
    reps = [_rep(backend, sizes, i, repeats) for i in range(repeats)]
    ratios = [r.fair / r.alone for r in reps]
    fifo = [r.fifo for r in reps if r.fifo is not None]
    fifo_ratios = [f / reps[0].alone for f in fifo]
    ratio = median(ratios)
    passed = ratio <= TARGET_RATIO
    extra = {t: [r.per_job_us[t] - r.per_job_us[None] for r in reps] for t in COST_TENANTS[1:]}
    slower = {t: [r.per_job_us[t] / r.per_job_us[None] for r in reps] for t in COST_TENANTS[1:]}

    def us(value: float) -> str:
        return f"{value:,.1f} µs"

    rows = [
        ["the nine alone (90 jobs)", _mmm([r.alone for r in reps], _ms), "-", "-"],
        [
            f"the nine behind {sizes.flood:,} of tenant `big`, with `tenant=`",
            _mmm([r.fair for r in reps], _ms),
            "-",
            "-",
        ],
        [
            "... as a multiple of alone",
            _mmm(ratios, lambda v: f"{v:.2f}x"),
            f"<= {TARGET_RATIO:g}x",
            verdict(passed),
        ],
        [
            "the same without `tenant=` (one FIFO queue; first repetition only)",
            _ms(fifo[0]),
            "-",
            "-",
        ],
        [
            "... as a multiple of alone (that repetition's)",
            _times(fifo_ratios[0]),
            f"<= {TARGET_RATIO:g}x (not judged: the baseline)",
            "-",
        ],
    ]
    for tenants in COST_TENANTS:
        values = [r.per_job_us[tenants] for r in reps]
        rows.append([f"drain, per job, {_tenants(tenants)}", _mmm(values, us), "-", "-"])
        rates = [1e6 / v for v in values]
        rows.append(
            [f"... jobs/s, {_tenants(tenants)}", _mmm(rates, lambda v: f"{v:,.0f}"), "-", "-"]
        )
    for tenants in COST_TENANTS[1:]:
        rows.append(
            [
                f"**fairness's cost per job, {_tenants(tenants)}**",
                _mmm(extra[tenants], lambda v: f"{v:+,.1f} µs"),
                "-",
                "-",
            ]
        )
        rows.append(
            [
                f"... time per job vs no tenants, {_tenants(tenants)}",
                _mmm(slower[tenants], lambda v: f"{v:.2f}x"),
                "-",
                "-",
            ]
        )
    per_rep = Table(
        ["rep", "alone", "behind the flood", "FIFO", *(_tenants(t) for t in COST_TENANTS)],
        [
            [
                str(i + 1),
                _ms(r.alone),
                _ms(r.fair),
                _ms(r.fifo),
                *(us(r.per_job_us[t]) for t in COST_TENANTS),
            ]
            for i, r in enumerate(reps)
        ],
    )
    method = "\n".join(
        [
            f"- {backend.how}; the library's default lanes, so the durable lane is `{LANE}` "
            f"({SEATS} seats, gated behind a gate with no upstreams: open); no "
            "`BacklogOptions`; default `Tenants()` (equal weights).",
            f"- Every job of the nine and of the flood is a registered task that does "
            f"`await asyncio.sleep({JOB_S})` on the real clock (an upstream call), so the "
            f"lane's {SEATS} seats are the bottleneck.",
            f"- The nine: {SMALL_TENANTS} tenants `small-k` each `submit_many` {SMALL_JOBS} jobs "
            "(gathered); the time from before the submits until every one of the 90 "
            "`job.result()` returned. Alone: on a fresh backlog, the lane idle (started "
            f"{SETTLE_S:g} s before); "
            f"{ROUNDS} times per repetition (their median).",
            f"- Behind the flood: on a fresh backlog, `open(run=())` stores {sizes.flood:,} "
            f"jobs of tenant `big` in `submit_many` calls of {CHUNK:,}; then `async with "
            f"sched:` starts the lane, and once {BUSY_FIRST} flood jobs have run the nine "
            "submit as above. FIFO: the same with every job `tenant=None` (given up "
            f"after {FIFO_LIMIT_S:g} s; in the first repetition only: about flood x "
            f"{JOB_S * 1e3:g} ms / {SEATS} seats of wall time). What is left of the flood "
            "stays queued; the scheduler closes.",
            f"- Cost per job: {sizes.cost_jobs:,} jobs whose task returns at once are stored "
            "(job i for tenant `t{i % T}`, or none), then the lane drains them: seconds "
            "from the lane's start until the backlog counts all of them `done`, per job. "
            "No tenants, 10 and 1,000 tenants, each on a fresh backlog, the order "
            "turning each repetition.",
            f"- {len(reps)} repetition(s), each in fresh event loops and fresh backlogs; "
            "median (min .. max).",
        ]
    )
    report = write_report(
        options,
        backend.name,
        f"Tenants on a durable lane ({backend.label}): a fair share behind one tenant's flood",
        [
            "## Result",
            Table(["figure", "median (min .. max)", "target", "result"], rows),
            "## Per repetition",
            per_rep,
            "## Method",
            method,
        ],
        command=f"python -m benchmarks --only {backend.name}"
        + (" --quick" if options.quick else f" --repeat {len(reps)}"),
    )
    summary = (
        f"the nine behind {sizes.flood:,}: {ratio:.2f}x alone with tenants "
        f"(target <= {TARGET_RATIO:g}x), {_times(fifo_ratios[0])} without; fairness costs "
        + ", ".join(f"{median(extra[t]):+.1f} us/job over {t:,} tenants" for t in extra)
    )
    broken = next((r.broken for r in reps if r.broken is not None), None)
    return Outcome(backend.name, passed, summary, report, broken=broken)


def run(options: Options) -> Outcome:
    return run_on(SQLITE, options)


if __name__ == "__main__":
    raise SystemExit(main(NAME, __doc__, run))
