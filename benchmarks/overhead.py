"""Overhead: no-op jobs through ``Scheduler.call`` vs a bare ``asyncio.Semaphore(16)``.

Both systems run the same N no-op jobs, in the same process, each in a fresh
event loop, as N tasks gathered at once; only the gather is timed. Floodgate
has one lane of 16 seats whose ``max_queued`` is N, so nothing is shed (checked
from ``stats()`` after every run). Repetitions alternate which system goes
first, and the report gives the median. Target: Floodgate keeps at least 1/3
of the bare semaphore's throughput.

Run alone: ``python -m benchmarks.overhead [--quick]``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from scheduler import Lane, Scheduler

from ._common import (
    Options,
    Outcome,
    Table,
    fmt_ms,
    fmt_rate,
    main,
    median,
    progress,
    stopwatch,
    verdict,
    write_report,
)

NAME = "overhead"
SEATS = 16
TARGET_RATIO = 1 / 3
LANE = "bench"

Job = Callable[[], Awaitable[None]]


async def _return_at_once() -> None:
    return None


async def _sleep0_once() -> None:
    await asyncio.sleep(0)


@dataclass(frozen=True, slots=True)
class Shape:
    name: str
    job: Job
    what: str


SHAPES = (
    Shape(
        "return at once",
        _return_at_once,
        "`async def job(): return None`. Each job finds a free seat, runs and gives it "
        "back within one step, so nothing ever waits: this is the cost of admission, "
        "bookkeeping and release alone.",
    ),
    Shape(
        "sleep(0) once",
        _sleep0_once,
        "`async def job(): await asyncio.sleep(0)`. Jobs suspend once, so 16 overlap "
        "and every other job waits for a seat: the queue/hand-over path is used.",
    ),
)


@dataclass(frozen=True, slots=True)
class Sizes:
    jobs: int
    reps: int


FULL = Sizes(jobs=100_000, reps=5)
QUICK = Sizes(jobs=20_000, reps=3)


@dataclass(frozen=True, slots=True)
class Rep:
    """One repetition of one shape: both systems, back to back."""

    shape: str
    index: int
    bare_first: bool
    bare_s: float
    floodgate_s: float
    floodgate_wait_p50: float | None

    def ratio(self) -> float:
        return self.bare_s / self.floodgate_s  # == floodgate jobs/s / bare jobs/s


async def _bare(job: Job, n: int) -> float:
    sem = asyncio.Semaphore(SEATS)

    async def guarded() -> None:
        async with sem:
            await job()

    with stopwatch() as watch:
        await asyncio.gather(*(guarded() for _ in range(n)))
    return watch.seconds


async def _floodgate(job: Job, n: int) -> tuple[float, float | None]:
    """Seconds for ``n`` calls, and the lane's queue-wait p50 from its own stats."""
    sched = Scheduler(":memory:", lanes=[Lane(LANE, max_concurrency=SEATS, max_queued=n)])
    async with sched:
        with stopwatch() as watch:
            await asyncio.gather(*(sched.call(job, lane=LANE) for _ in range(n)))
    lane = sched.stats()[LANE]
    if lane.shed_total or (lane.admitted, lane.completed) != (n, n) or lane.failed:
        raise RuntimeError(
            f"floodgate run was not clean: admitted={lane.admitted} completed={lane.completed} "
            f"failed={lane.failed} cancelled={lane.cancelled} shed={dict(lane.shed)} (n={n})"
        )
    return watch.seconds, lane.wait.p50


def _one_rep(shape: Shape, index: int, n: int) -> Rep:
    bare_first = index % 2 == 0
    if bare_first:
        bare_s = asyncio.run(_bare(shape.job, n))
        floodgate_s, wait_p50 = asyncio.run(_floodgate(shape.job, n))
    else:
        floodgate_s, wait_p50 = asyncio.run(_floodgate(shape.job, n))
        bare_s = asyncio.run(_bare(shape.job, n))
    return Rep(shape.name, index, bare_first, bare_s, floodgate_s, wait_p50)


@dataclass(frozen=True, slots=True)
class ShapeResult:
    shape: Shape
    reps: list[Rep]
    n: int

    @property
    def bare_rate(self) -> float:
        return self.n / median([r.bare_s for r in self.reps])

    @property
    def floodgate_rate(self) -> float:
        return self.n / median([r.floodgate_s for r in self.reps])

    @property
    def ratio(self) -> float:
        return self.floodgate_rate / self.bare_rate

    @property
    def passed(self) -> bool:
        return self.ratio >= TARGET_RATIO


def run(options: Options) -> Outcome:
    sizes = QUICK if options.quick else FULL
    progress(f"{NAME}: {sizes.jobs:,} no-op jobs x {sizes.reps} reps x {len(SHAPES)} shapes")
    results = []
    for shape in SHAPES:
        reps = []
        for index in range(sizes.reps):
            rep = _one_rep(shape, index, sizes.jobs)
            reps.append(rep)
            progress(
                f"{NAME}: [{shape.name}] rep {index + 1}/{sizes.reps}: "
                f"bare {fmt_rate(sizes.jobs / rep.bare_s)} jobs/s, "
                f"floodgate {fmt_rate(sizes.jobs / rep.floodgate_s)} jobs/s, "
                f"ratio {rep.ratio():.2f}"
            )
        results.append(ShapeResult(shape, reps, sizes.jobs))
    passed = all(r.passed for r in results)
    summary = ", ".join(f"{r.shape.name}: {r.ratio:.2f}x of bare" for r in results)
    report = write_report(
        options,
        NAME,
        "Overhead: Floodgate `call()` vs a bare `asyncio.Semaphore(16)`",
        _report_blocks(results, sizes),
        command=f"python -m benchmarks.{NAME}" + (" --quick" if options.quick else ""),
    )
    return Outcome(NAME, passed, f"{summary} (target >= {TARGET_RATIO:.2f}x)", report)


def _report_blocks(results: list[ShapeResult], sizes: Sizes) -> list[str | Table]:
    headline = Table(
        [
            "job shape",
            "N",
            "reps",
            "bare Semaphore(16) jobs/s",
            "Floodgate jobs/s",
            "ratio Floodgate/bare",
            "per-rep ratio (min..max)",
            "target",
            "result",
        ],
        [
            [
                r.shape.name,
                f"{r.n:,}",
                str(len(r.reps)),
                fmt_rate(r.bare_rate),
                fmt_rate(r.floodgate_rate),
                f"{r.ratio:.2f}",
                f"{min(x.ratio() for x in r.reps):.2f}..{max(x.ratio() for x in r.reps):.2f}",
                f">= {TARGET_RATIO:.2f}",
                verdict(r.passed),
            ]
            for r in results
        ],
    )
    per_rep = Table(
        [
            "job shape",
            "rep",
            "first",
            "bare s",
            "Floodgate s",
            "ratio",
            "Floodgate queue wait p50 (its stats)",
        ],
        [
            [
                rep.shape,
                str(rep.index + 1),
                "bare" if rep.bare_first else "Floodgate",
                f"{rep.bare_s:.3f}",
                f"{rep.floodgate_s:.3f}",
                f"{rep.ratio():.2f}",
                fmt_ms(rep.floodgate_wait_p50),
            ]
            for r in results
            for rep in r.reps
        ],
    )
    shapes = "\n".join(f"- **{r.shape.name}**: {r.shape.what}" for r in results)
    method = "\n".join(
        [
            f"- N = {sizes.jobs:,} jobs per run; {sizes.reps} repetitions per shape; "
            "the figures above are medians of the per-run seconds (jobs/s = N / median s).",
            "- Bare: `async with sem: await job()` in each of N tasks, "
            f"`sem = asyncio.Semaphore({SEATS})`, all gathered at once.",
            f"- Floodgate: `await sched.call(job, lane='{LANE}')` in each of N tasks, "
            f"one `Lane('{LANE}', max_concurrency={SEATS}, max_queued=N)`, no scheduler-wide "
            "ceiling, the default `SystemClock`. After each run `stats()` must show "
            "N admitted, N completed, 0 failed, 0 shed, or the benchmark stops.",
            "- Same process, same N, a fresh event loop (`asyncio.run`) for every run; "
            "only `asyncio.gather(...)` is timed, after a `gc.collect()`. Scheduler "
            "construction and `async with` entry/exit are outside the timing.",
            "- Repetitions alternate which system runs first, so warm-up or drift does "
            "not favour one side.",
            "- A queue wait p50 in milliseconds for `sleep(0) once` (vs. microseconds for "
            "`return at once`) shows that jobs really waited in the lane's queue.",
        ]
    )
    return [
        "## Result",
        headline,
        "## Job shapes",
        shapes,
        "## Per repetition",
        per_rep,
        "## Method",
        method,
    ]


if __name__ == "__main__":
    raise SystemExit(main(NAME, __doc__, run))
