"""Head-of-line blocking: interactive start latency behind a saturated batch lane.

An upstream with 16 seats and 20 ms of service per call. At t=0 a batch backlog
(5,000 jobs) is submitted at once; then 100 interactive jobs arrive at 50/s.
We measure each interactive job's submit-to-start latency: from the moment
it is handed to the system to the moment its job function begins.

- Floodgate: lanes ``interactive`` (4 reserved seats) and ``batch`` under a
  scheduler-wide ``max_concurrency=16``, the upstream's capacity.
- Baseline: one FIFO ``asyncio.Queue`` drained by 16 worker tasks.

Target: Floodgate's interactive p99 < 5 ms. Both systems are checked never to
offer the upstream more than 16 calls at once.

Run alone: ``python -m benchmarks.head_of_line [--quick]``.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass

from scheduler import Lane, Scheduler

from ._common import (
    Options,
    Outcome,
    Table,
    fmt_ms,
    fmt_rate,
    main,
    percentile,
    progress,
    verdict,
    write_report,
)

NAME = "head_of_line"
SEATS = 16  # the upstream's capacity
SERVICE_S = 0.020  # the upstream's service time per call
INTERACTIVE_RESERVED = 4  # Floodgate seats only the interactive lane may use
SWEEP_RESERVED = (0, 2)  # also measured, to show what the reservation buys and costs
TARGET_P99_S = 0.005
TIME_LIMIT_S = 60.0  # per run; a full run needs ~9 s (Floodgate) and ~6.5 s (FIFO)

Job = Callable[[], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Sizes:
    batch: int
    interactive: int
    interval_s: float  # between interactive arrivals


FULL = Sizes(batch=5_000, interactive=100, interval_s=0.020)
QUICK = Sizes(batch=1_000, interactive=50, interval_s=0.020)


class Upstream:
    """The simulated upstream: ``SEATS`` seats, ``SERVICE_S`` per call.

    It counts the calls *offered* to it (waiting for a seat or being served),
    so a dispatcher that sends more than ``SEATS`` at once shows up here
    instead of being hidden by the upstream's own semaphore.
    """

    def __init__(self) -> None:
        self._seats = asyncio.Semaphore(SEATS)
        self._in_flight: dict[str, int] = {}
        self.offered = 0
        self.peak_offered = 0
        self.peak_by_kind: dict[str, int] = {}
        self.had_to_wait = 0
        self.served: dict[str, int] = {}
        self.last_done: dict[str, float] = {}

    async def serve(self, kind: str) -> None:
        self.offered += 1
        self.peak_offered = max(self.peak_offered, self.offered)
        mine = self._in_flight[kind] = self._in_flight.get(kind, 0) + 1
        self.peak_by_kind[kind] = max(self.peak_by_kind.get(kind, 0), mine)
        try:
            if self._seats.locked():
                self.had_to_wait += 1
            async with self._seats:
                await asyncio.sleep(SERVICE_S)
            self.served[kind] = self.served.get(kind, 0) + 1
            self.last_done[kind] = time.perf_counter()
        finally:
            self.offered -= 1
            self._in_flight[kind] -= 1


async def _batch_job(upstream: Upstream) -> None:
    await upstream.serve("batch")


async def _interactive_job(upstream: Upstream, latencies: list[float], submitted: float) -> None:
    latencies.append(time.perf_counter() - submitted)
    await upstream.serve("interactive")


async def _arrivals(system: str, sizes: Sizes) -> AsyncIterator[int]:
    """Yield ``0..interactive-1`` on a fixed schedule (absolute times, so no drift)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    for i in range(sizes.interactive):
        await asyncio.sleep(max(0.0, start + i * sizes.interval_s - loop.time()))
        if i % 25 == 0:
            progress(f"{NAME}: [{system}] interactive arrival {i + 1}/{sizes.interactive}")
        yield i


async def _cancel_and_wait(tasks: Iterable[asyncio.Task[None]]) -> None:
    """Cancel whatever is still running and wait for every task to end."""
    pending = list(tasks)
    for task in pending:
        if not task.done():
            task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)


@dataclass(frozen=True, slots=True)
class ScenarioResult:
    system: str
    reserved: int  # Floodgate's interactive reserved seats; 0 for the baseline
    latencies: list[float]  # interactive submit-to-start, seconds
    batch_drained_s: float  # from t=0 to the last batch job's end
    upstream: Upstream
    own_stats: list[list[str]]  # Floodgate's stats() cross-check rows; empty for the baseline

    def p(self, q: float) -> float:
        return percentile(self.latencies, q)


# ---------------------------------------------------------------- Floodgate


def _floodgate_scheduler(sizes: Sizes, reserved: int) -> Scheduler:
    return Scheduler(
        ":memory:",
        lanes=[
            Lane(
                "interactive",
                max_concurrency=SEATS,
                max_queued=256,
                reserved=reserved,
            ),
            Lane("batch", max_concurrency=SEATS, max_queued=max(10_000, sizes.batch), reserved=0),
        ],
        max_concurrency=SEATS,
        shutdown_grace=1.0,
    )


async def _call_interactive(sched: Scheduler, upstream: Upstream, latencies: list[float]) -> None:
    await sched.call(_interactive_job, upstream, latencies, time.perf_counter(), lane="interactive")


async def _floodgate(sizes: Sizes, reserved: int) -> ScenarioResult:
    system = f"floodgate reserved={reserved}"
    upstream = Upstream()
    latencies: list[float] = []
    sched = _floodgate_scheduler(sizes, reserved)
    tasks: list[asyncio.Task[None]] = []
    async with sched:
        try:
            async with asyncio.timeout(TIME_LIMIT_S):
                t0 = time.perf_counter()
                tasks.extend(
                    asyncio.create_task(sched.call(_batch_job, upstream, lane="batch"))
                    for _ in range(sizes.batch)
                )
                await asyncio.sleep(0)  # one loop pass: every batch call is admitted at t=0
                admitted = sched.stats()["batch"].admitted
                if admitted != sizes.batch:
                    raise RuntimeError(f"only {admitted}/{sizes.batch} batch jobs admitted")
                progress(f"{NAME}: [{system}] {sizes.batch:,} batch jobs submitted")
                batch = list(tasks)
                interactive: list[asyncio.Task[None]] = []
                async for _ in _arrivals(system, sizes):
                    task = asyncio.create_task(_call_interactive(sched, upstream, latencies))
                    tasks.append(task)
                    interactive.append(task)
                await asyncio.gather(*interactive)
                progress(f"{NAME}: [{system}] interactive done; draining batch")
                await asyncio.gather(*batch)
        finally:
            await _cancel_and_wait(tasks)
    _check_floodgate_clean(sched, sizes)
    return ScenarioResult(
        system,
        reserved,
        latencies,
        upstream.last_done["batch"] - t0,
        upstream,
        _own_stats_rows(sched),
    )


def _check_floodgate_clean(sched: Scheduler, sizes: Sizes) -> None:
    stats = sched.stats()
    for lane, n in (("interactive", sizes.interactive), ("batch", sizes.batch)):
        s = stats[lane]
        if s.shed_total or (s.admitted, s.completed) != (n, n) or s.failed or s.cancelled:
            raise RuntimeError(
                f"floodgate lane {lane!r} was not clean: admitted={s.admitted} "
                f"completed={s.completed} failed={s.failed} cancelled={s.cancelled} "
                f"shed={dict(s.shed)} (expected {n})"
            )


def _own_stats_rows(sched: Scheduler) -> list[list[str]]:
    rows = []
    for name, lane in sched.stats().lanes.items():
        w = lane.wait
        rows.append(
            [name, str(w.count), fmt_ms(w.p50), fmt_ms(w.p95), fmt_ms(w.p99), fmt_ms(w.max)]
        )
    return rows


# ---------------------------------------------------------------- FIFO baseline


async def _worker(queue: asyncio.Queue[Job | None], limit: int) -> None:
    for _ in range(limit):
        job = await queue.get()
        try:
            if job is None:
                return
            await job()
        finally:
            queue.task_done()
    raise RuntimeError(f"a worker took more than {limit} jobs")


async def _fifo(sizes: Sizes) -> ScenarioResult:
    system = "fifo"
    upstream = Upstream()
    latencies: list[float] = []
    queue: asyncio.Queue[Job | None] = asyncio.Queue()
    limit = sizes.batch + sizes.interactive + 1
    tasks: list[asyncio.Task[None]] = []
    try:
        async with asyncio.timeout(TIME_LIMIT_S):
            t0 = time.perf_counter()
            tasks.extend(asyncio.create_task(_worker(queue, limit)) for _ in range(SEATS))
            for _ in range(sizes.batch):
                queue.put_nowait(functools.partial(_batch_job, upstream))
            progress(f"{NAME}: [{system}] {sizes.batch:,} batch jobs submitted")
            async for _ in _arrivals(system, sizes):
                queue.put_nowait(
                    functools.partial(_interactive_job, upstream, latencies, time.perf_counter())
                )
            progress(f"{NAME}: [{system}] all interactive submitted; waiting behind the backlog")
            await queue.join()
            for _ in tasks:
                queue.put_nowait(None)
            await asyncio.gather(*tasks)
    finally:
        await _cancel_and_wait(tasks)
    if len(latencies) != sizes.interactive or upstream.served.get("batch") != sizes.batch:
        raise RuntimeError(f"fifo baseline did not run every job: {upstream.served}")
    return ScenarioResult(system, 0, latencies, upstream.last_done["batch"] - t0, upstream, [])


# ---------------------------------------------------------------- report


def run(options: Options) -> Outcome:
    sizes = QUICK if options.quick else FULL
    progress(
        f"{NAME}: {sizes.batch:,} batch + {sizes.interactive} interactive jobs, "
        f"upstream {SEATS} seats x {SERVICE_S * 1000:.0f} ms"
    )
    floodgate = asyncio.run(_floodgate(sizes, INTERACTIVE_RESERVED))
    progress(f"{NAME}: [{floodgate.system}] interactive p99 {fmt_ms(floodgate.p(99))}")
    fifo = asyncio.run(_fifo(sizes))
    progress(f"{NAME}: [{fifo.system}] interactive p99 {fmt_ms(fifo.p(99))}")
    sweep = []
    for reserved in SWEEP_RESERVED:
        sweep.append(asyncio.run(_floodgate(sizes, reserved)))
        progress(f"{NAME}: [{sweep[-1].system}] interactive p99 {fmt_ms(sweep[-1].p(99))}")
    sweep.append(floodgate)

    latency_ok = floodgate.p(99) < TARGET_P99_S
    capacity_ok = all(r.upstream.peak_offered <= SEATS for r in (*sweep, fifo))
    passed = latency_ok and capacity_ok
    summary = (
        f"interactive p99 floodgate {fmt_ms(floodgate.p(99))} vs fifo {fmt_ms(fifo.p(99))} "
        f"(target < {fmt_ms(TARGET_P99_S)}); upstream peak {floodgate.upstream.peak_offered}"
        f"/{fifo.upstream.peak_offered} of {SEATS}"
    )
    report = write_report(
        options,
        NAME,
        "Head-of-line blocking: interactive start latency behind a batch backlog",
        _report_blocks(sizes, floodgate, fifo, sweep, latency_ok, capacity_ok),
        command=f"python -m benchmarks.{NAME}" + (" --quick" if options.quick else ""),
    )
    return Outcome(NAME, passed, summary, report)


def _report_blocks(
    sizes: Sizes,
    floodgate: ScenarioResult,
    fifo: ScenarioResult,
    sweep: list[ScenarioResult],
    latency_ok: bool,
    capacity_ok: bool,
) -> list[str | Table]:
    verdicts = Table(
        ["check", "Floodgate", "FIFO baseline", "baseline / Floodgate", "target", "result"],
        [
            [
                "interactive submit-to-start p99",
                fmt_ms(floodgate.p(99)),
                fmt_ms(fifo.p(99)),
                f"{fifo.p(99) / floodgate.p(99):,.0f}x",
                f"Floodgate < {fmt_ms(TARGET_P99_S)}",
                verdict(latency_ok),
            ],
            [
                "peak calls offered to the upstream",
                str(floodgate.upstream.peak_offered),
                str(fifo.upstream.peak_offered),
                "-",
                f"every run <= {SEATS}",
                verdict(capacity_ok),
            ],
        ],
    )
    detail = Table(
        [
            "system",
            "p50",
            "p95",
            "p99",
            "max",
            "batch drained at",
            "batch jobs/s",
            "upstream peak (interactive / batch)",
            "calls that queued at the upstream",
        ],
        [
            [
                name,
                fmt_ms(r.p(50)),
                fmt_ms(r.p(95)),
                fmt_ms(r.p(99)),
                fmt_ms(max(r.latencies)),
                f"{r.batch_drained_s:.2f} s",
                fmt_rate(sizes.batch / r.batch_drained_s),
                f"{r.upstream.peak_by_kind.get('interactive', 0)} / "
                f"{r.upstream.peak_by_kind.get('batch', 0)}",
                str(r.upstream.had_to_wait),
            ]
            for name, r in (("Floodgate", floodgate), ("FIFO queue + 16 workers", fifo))
        ],
    )
    tradeoff = Table(
        [
            "interactive reserved seats",
            "batch seats at most",
            "interactive p50",
            "p99",
            "max",
            "batch drained at",
            "batch jobs/s",
            f"p99 < {fmt_ms(TARGET_P99_S)}",
        ],
        [
            [
                str(r.reserved) + (" (the configuration above)" if r is floodgate else ""),
                str(SEATS - r.reserved),
                fmt_ms(r.p(50)),
                fmt_ms(r.p(99)),
                fmt_ms(max(r.latencies)),
                f"{r.batch_drained_s:.2f} s",
                fmt_rate(sizes.batch / r.batch_drained_s),
                "yes" if r.p(99) < TARGET_P99_S else "no",
            ]
            for r in sorted(sweep, key=lambda r: r.reserved)
        ],
    )
    own = Table(
        ["lane", "jobs", "wait p50", "wait p95", "wait p99", "wait max"], floodgate.own_stats
    )
    ideal_batch = sizes.batch * SERVICE_S
    setup = "\n".join(
        [
            f"- Upstream: `asyncio.Semaphore({SEATS})` around `asyncio.sleep({SERVICE_S})`. "
            "It counts calls *offered* to it (waiting for a seat or served), so a system "
            f"that sends more than {SEATS} at once would show a peak above {SEATS} and "
            "calls queued at the upstream; both must stay at <= 16 and 0.",
            f"- Load: {sizes.batch:,} batch jobs submitted together at t=0, then "
            f"{sizes.interactive} interactive jobs, one every {sizes.interval_s * 1000:.0f} ms "
            f"({1 / sizes.interval_s:.0f}/s, arrivals paced on absolute times). Every job "
            "is one upstream call.",
            "- Latency = submit-to-start: `time.perf_counter()` taken just before the job "
            "is handed over (`sched.call(...)` / `queue.put_nowait(...)`) to the first line "
            "of the job function. Percentiles are exact over the samples (linear "
            "interpolation between ranks).",
            "- Floodgate: `Scheduler(':memory:', lanes=[Lane('interactive', "
            f"max_concurrency={SEATS}, max_queued=256, reserved={INTERACTIVE_RESERVED}), "
            f"Lane('batch', max_concurrency={SEATS}, max_queued=10_000, reserved=0)], "
            f"max_concurrency={SEATS})`. The scheduler-wide ceiling is the upstream's "
            f"capacity, so Floodgate itself never offers more than {SEATS} calls; the "
            f"interactive lane reserves {INTERACTIVE_RESERVED} of them, so batch can hold "
            f"at most {SEATS - INTERACTIVE_RESERVED} and interactive work never waits for "
            "a batch call to finish. Each job does the upstream call itself, from inside "
            "`call()`.",
            f"- Why reserved seats: without them, interactive waits for the next "
            f"freed seat, and the {SEATS} batch calls start and end together, every "
            f"{SERVICE_S * 1000:.0f} ms, so interactive p99 comes close to "
            f"{SERVICE_S * 1000:.0f} ms (measured: see the trade-off table). "
            f"{INTERACTIVE_RESERVED} rather than the bare minimum leaves headroom for "
            "arrival jitter (at 50/s x 20 ms about 1-2 interactive calls are in flight). "
            "The price is batch throughput: "
            f"{SEATS - INTERACTIVE_RESERVED} seats instead of {SEATS} while the backlog "
            "lasts (see *batch drained at*; the ideal is "
            f"{ideal_batch / (SEATS - INTERACTIVE_RESERVED):.2f} s with "
            f"{SEATS - INTERACTIVE_RESERVED} seats, {ideal_batch / SEATS:.2f} s with {SEATS}).",
            f"- FIFO baseline: one `asyncio.Queue`, {SEATS} worker tasks; the batch jobs "
            "are put first, then the interactive jobs as they arrive, so each interactive "
            "job waits for the whole backlog ahead of it.",
            "- Both systems run every job to completion (nothing is shed or cancelled; "
            "Floodgate's `stats()` is checked), each in a fresh event loop, one after "
            f"the other in the same process, each bounded by {TIME_LIMIT_S:.0f} s.",
        ]
    )
    return [
        "## Result",
        verdicts,
        "## Interactive submit-to-start latency and batch progress",
        detail,
        "## Reserved interactive seats: what they buy and what they cost",
        tradeoff,
        "Same load, Floodgate only, the interactive lane's `reserved` changed "
        "(batch `reserved=0`, scheduler-wide `max_concurrency=16` as above). Informative; "
        "PASS/FAIL above is for the configuration above.",
        "## Floodgate's own `stats()` (queue wait, DDSketch, 1 % relative error)",
        own,
        "## Setup",
        setup,
    ]


if __name__ == "__main__":
    raise SystemExit(main(NAME, __doc__, run))
