"""Tenants: nine small tenants behind one tenant's flood, and what fairness costs.

One in-memory lane of 16 seats; each job sleeps 2 ms (an upstream call).

- **Unloaded**: nine tenants submit 10 jobs each, alone; the time until all 90
  are done.
- **Behind a flood**: one tenant has 100,000 jobs queued first, then the nine
  submit their 10 each; the time from their submit until all 90 are done.
  Target: at most 2x the unloaded time. The same without ``tenant=`` (one FIFO
  queue) is shown beside it: the nine wait for the flood.
- **Cost per job**: 50,000 no-op jobs through the queue (16 seats, each job
  yields once), without tenants and spread over 10 tenants; the difference in
  µs per job, in the same run.

Each figure is the median (min .. max) of ``--repeat`` runs (default 3).

Run alone: ``python -m benchmarks.tenants [--quick] [--repeat K]``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from scheduler import Lane, Scheduler

from ._common import Options, Outcome, Table, main, median, progress, verdict, write_report

NAME = "tenants"
SEATS = 16
JOB_S = 0.002
SMALL_TENANTS = 9
SMALL_JOBS = 10
TENANTS_FOR_COST = 10
TARGET_RATIO = 2.0  # loaded time / unloaded time for the nine
TIME_LIMIT_S = 120.0
#: the short measurements are repeated this often within a repetition (median)
ROUNDS = 5


@dataclass(frozen=True, slots=True)
class Sizes:
    flood: int
    cost_jobs: int
    repeats: int


FULL = Sizes(flood=100_000, cost_jobs=50_000, repeats=3)
QUICK = Sizes(flood=10_000, cost_jobs=10_000, repeats=1)


def _scheduler() -> Scheduler:
    lane = Lane("work", SEATS, 1_000_000)
    return Scheduler(lanes=[lane], shutdown_grace=0)


async def _job() -> None:
    await asyncio.sleep(JOB_S)


async def _nine_done(sched: Scheduler, *, tenants: bool) -> float:
    """Seconds from the nine's submit until their 90 jobs are done."""
    start = time.perf_counter()
    await asyncio.gather(
        *(
            sched.call(_job, lane="work", tenant=f"small-{t}" if tenants else None)
            for t in range(SMALL_TENANTS)
            for _ in range(SMALL_JOBS)
        )
    )
    return time.perf_counter() - start


async def _unloaded() -> float:
    async with _scheduler() as sched:
        return await _nine_done(sched, tenants=True)


async def _behind_flood(flood: int, *, tenants: bool) -> float:
    async with _scheduler() as sched:
        big = [
            asyncio.create_task(sched.call(_job, lane="work", tenant="big" if tenants else None))
            for _ in range(flood)
        ]
        await asyncio.sleep(0)  # every flood job is queued before the nine submit
        try:
            return await asyncio.wait_for(_nine_done(sched, tenants=tenants), TIME_LIMIT_S)
        except TimeoutError:
            return float("inf")
        finally:
            for task in big:
                task.cancel()
            await asyncio.gather(*big, return_exceptions=True)


async def _per_job(jobs: int, tenant_of: Callable[[int], str | None]) -> float:
    """Seconds per job for ``jobs`` jobs that each yield once, 16 at a time."""

    async def job() -> None:
        await asyncio.sleep(0)

    async with _scheduler() as sched:
        start = time.perf_counter()
        calls: list[Awaitable[None]] = [
            sched.call(job, lane="work", tenant=tenant_of(i)) for i in range(jobs)
        ]
        await asyncio.gather(*calls)
        return (time.perf_counter() - start) / jobs


@dataclass(frozen=True, slots=True)
class Rep:
    unloaded: float
    fair: float
    fifo: float
    plain_us: float
    tenants_us: float


def _rep(sizes: Sizes, index: int, repeats: int) -> Rep:
    # the short figures are taken several times each (the median): one 20-ms
    # measurement on a shared 2-core machine is mostly noise
    unloaded = median([asyncio.run(_unloaded()) for _ in range(ROUNDS)])
    fair = asyncio.run(_behind_flood(sizes.flood, tenants=True))
    fifo = asyncio.run(_behind_flood(sizes.flood, tenants=False))
    plain_runs, spread_runs = [], []
    for _ in range(ROUNDS):  # alternating, so drift on the machine hits both alike
        plain_runs.append(asyncio.run(_per_job(sizes.cost_jobs, lambda i: None)))
        spread_runs.append(
            asyncio.run(_per_job(sizes.cost_jobs, lambda i: f"t{i % TENANTS_FOR_COST}"))
        )
    plain, spread = median(plain_runs), median(spread_runs)
    progress(
        f"{NAME}: repeat {index + 1}/{repeats}: nine alone {unloaded * 1000:.0f} ms, behind "
        f"{sizes.flood:,} with tenants {fair * 1000:.0f} ms, without {fifo * 1000:.0f} ms; "
        f"per job {plain * 1e6:.2f} / {spread * 1e6:.2f} us"
    )
    return Rep(unloaded, fair, fifo, plain * 1e6, spread * 1e6)


def _mmm(values: list[float], fmt: Callable[[float], str]) -> str:
    return f"{fmt(median(values))} ({fmt(min(values))} .. {fmt(max(values))})"


def run(options: Options) -> Outcome:
    sizes = QUICK if options.quick else FULL
    repeats = options.repeat or sizes.repeats
    reps = [_rep(sizes, i, repeats) for i in range(repeats)]
    ratios = [r.fair / r.unloaded for r in reps]
    fifo_ratios = [r.fifo / r.unloaded for r in reps]
    extra = [r.tenants_us - r.plain_us for r in reps]
    ratio = median(ratios)
    passed = ratio <= TARGET_RATIO

    def ms(seconds: float) -> str:
        return f"{seconds * 1000:,.0f} ms"

    result = Table(
        ["figure", "median (min .. max)", "target", "result"],
        [
            ["the nine alone (90 jobs)", _mmm([r.unloaded for r in reps], ms), "-", "-"],
            [f"the nine behind {sizes.flood:,} of one tenant, with `tenant=`",
             _mmm([r.fair for r in reps], ms), "-", "-"],
            ["... as a multiple of alone", _mmm(ratios, lambda v: f"{v:.2f}x"),
             f"<= {TARGET_RATIO:g}x", verdict(passed)],
            ["the same without `tenant=` (one FIFO queue)", _mmm([r.fifo for r in reps], ms),
             "-", "-"],
            ["... as a multiple of alone", _mmm(fifo_ratios, lambda v: f"{v:.1f}x"), "-", "-"],
            ["per job, no tenants", _mmm([r.plain_us for r in reps], lambda v: f"{v:.2f} µs"),
             "-", "-"],
            [f"per job, {TENANTS_FOR_COST} tenants taking turns",
             _mmm([r.tenants_us for r in reps], lambda v: f"{v:.2f} µs"), "-", "-"],
            ["**fairness's cost per job**", _mmm(extra, lambda v: f"{v:+.2f} µs"), "-", "-"],
        ],
    )  # fmt: skip
    method = "\n".join(
        [
            f"- One in-memory lane, `Lane('work', {SEATS}, 1_000_000)`, default `Tenants()`; "
            f"every job is `await asyncio.sleep({JOB_S})` (an upstream call).",
            f"- The nine: {SMALL_TENANTS} tenants x {SMALL_JOBS} jobs submitted at once "
            "(`sched.call(job, lane='work', tenant=...)` gathered); the time until all are "
            f"done. Alone: in a fresh scheduler, {ROUNDS} times (their median). Behind the "
            "flood: after "
            f"{sizes.flood:,} jobs of tenant 'big' are queued (each a task waiting in "
            "`call()`); the flood is cancelled afterwards.",
            f"- Cost per job: {sizes.cost_jobs:,} jobs that each `await asyncio.sleep(0)`, "
            f"{SEATS} seats, so nearly all wait in the queue: without `tenant=`, and with "
            f"job i for tenant `t{{i % {TENANTS_FOR_COST}}}`; seconds / jobs; {ROUNDS} "
            "rounds of each, alternating, their medians.",
            f"- {repeats} repetition(s), each in fresh event loops; median (min .. max).",
            "- This measures the in-memory fair queue; `tenants_durable` and "
            "`tenants_postgres` measure durable lanes.",
        ]
    )
    report = write_report(
        options,
        NAME,
        "Tenants: a fair share behind one tenant's flood",
        ["## Result", result, "## Method", method],
        command="python -m benchmarks --only tenants --repeat 3",
    )
    summary = (
        f"the nine behind {sizes.flood:,}: {ratio:.2f}x alone with tenants "
        f"(target <= {TARGET_RATIO:g}x), {median(fifo_ratios):.1f}x without; fairness costs "
        f"{median(extra):+.2f} us/job"
    )
    broken = None if all(r.fair != float("inf") for r in reps) else "the nine never finished"
    return Outcome(NAME, passed, summary, report, broken=broken)


if __name__ == "__main__":
    raise SystemExit(main(NAME, __doc__, run))
