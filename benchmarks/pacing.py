"""Pacing: how close to a rate-limited upstream's limit does batch work run, and how politely?

Issue 9's figure: an upstream that allows R req/s is driven at >= 90 % of R,
with <= 1 % of requests answered 429, whether or not ``rpm`` is set.

The upstream is the drill's :class:`~workers.drill.upstream.SimulatedLLM`
(a token bucket of R req/s answering ``429`` + ``Retry-After``, a concurrency
cap, rate-limit headers on every answer) served by uvicorn on 127.0.0.1; its
configuration is the ``UPSTREAM`` constant below. Each run gets a fresh
upstream, so its counters are that run's alone. Three clients drive N jobs
through it, each in its own event loop:

- Floodgate, defaults: ``Scheduler(path)`` with the default lanes and no
  upstream settings; one durable task on the ``batch`` lane, bound to
  upstream ``llm``, POSTs ``/v1/complete`` and raises on a non-2xx answer;
  the httpx client carries ``httpx_event_hooks(sched, "llm")``. N jobs are
  submitted up front.
- Floodgate, ``rpm`` set: the same with ``upstreams=[Upstream("llm", rpm=R*60)]``.
- Oracle: one request every 1/R s (asyncio, the same httpx client settings,
  at most 8 in flight); a rejected job goes back in line for the next slot.

Run alone: ``python -m benchmarks.pacing [--quick] [--repeat K]``.
"""

from __future__ import annotations

import asyncio
import collections
import math
import tempfile
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from scheduler import RetryPolicy, Scheduler, Task, Upstream, httpx_event_hooks
from workers.drill.config import UpstreamConfig
from workers.drill.server import serve
from workers.drill.upstream import SimulatedLLM
from workers.drill.wire import REQUEST_TIMEOUT, new_http_client, post_completion

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

NAME = "pacing"

# ---------------------------------------------------------------- the upstream

#: requests per second the upstream allows (its token bucket's refill): R
RATE = 40.0
#: the token bucket's depth (requests that may arrive at once after a quiet spell)
BURST = 5.0
#: requests served at once; beyond it: 429 + Retry-After: 1
MAX_IN_FLIGHT = 12
#: seconds per answer (+-20 % jitter)
SERVICE_TIME = 0.05
UPSTREAM = UpstreamConfig(
    rate_limit=RATE, burst=BURST, max_in_flight=MAX_IN_FLIGHT, service_time=SERVICE_TIME
)
UPSTREAM_NAME = "llm"

# ---------------------------------------------------------------- the clients

#: the retry policy of the Floodgate task (the drill's batch policy)
RETRY = RetryPolicy(max_attempts=50, base=0.5, cap=10.0)
TASK_NAME = "benchmarks.pacing.complete"
#: the oracle's most requests in flight
ORACLE_SEATS = 8
#: a run gives up after GIVE_UP x N / R seconds and reports what is unfinished
GIVE_UP = 5.0
#: seconds after the first request where the "steady" part of a run begins
STEADY_AFTER = 10.0
#: jobs submitted per gather (all N are submitted before the measurement ends)
SUBMIT_CHUNK = 500
#: seconds between checks that every job is done
POLL_S = 0.1

# ---------------------------------------------------------------- targets

TARGET_GOODPUT_SHARE = 0.90  # of RATE, median over the repetitions
TARGET_REJECTED_SHARE = 0.01  # of requests answered 429, median over the repetitions

DEFAULTS = "Floodgate, defaults"
WITH_RPM = "Floodgate, rpm set"
ORACLE = "oracle (paced at R)"
VARIANTS = (ORACLE, DEFAULTS, WITH_RPM)
FLOODGATE_VARIANTS = (DEFAULTS, WITH_RPM)


@dataclass(frozen=True, slots=True)
class Sizes:
    jobs: int
    repeats: int


FULL = Sizes(jobs=1_500, repeats=3)
QUICK = Sizes(jobs=300, repeats=1)


# ---------------------------------------------------------------- one run's record


@dataclass(frozen=True, slots=True)
class Run:
    """One client driving N jobs through a fresh upstream, as both sides counted it.

    Times are seconds on the upstream's timeline (started just before the
    first job is handed over); request counts are the upstream's own.
    """

    variant: str
    index: int
    jobs: int
    done: int  # jobs finished (Floodgate: DONE in the backlog; oracle: answered 200)
    requests: int
    ok: int  # answered 200
    rejected: int  # answered 429
    first_request: float
    end: float  # the last job's completion, or when the run gave up
    steady_requests: int
    steady_ok: int
    steady_rejected: int
    steady_end: float  # arrival of the last request (the steady goodput's end)
    peak_in_flight: int
    notes: tuple[str, ...] = ()

    @property
    def finished(self) -> bool:
        return self.done >= self.jobs

    @property
    def elapsed(self) -> float:
        return max(1e-9, self.end - self.first_request)

    @property
    def goodput(self) -> float:
        """Successful requests per second, first request to last completion."""
        return self.ok / self.elapsed

    @property
    def goodput_share(self) -> float:
        return self.goodput / RATE

    @property
    def rejected_share(self) -> float:
        return self.rejected / self.requests if self.requests else math.nan

    @property
    def steady_rejected_share(self) -> float:
        return self.steady_rejected / self.steady_requests if self.steady_requests else math.nan

    @property
    def steady_goodput(self) -> float:
        """200s arriving after the first STEADY_AFTER s, per second of that stretch."""
        span = self.steady_end - (self.first_request + STEADY_AFTER)
        return self.steady_ok / span if span >= 1.0 else math.nan


def _record(
    variant: str,
    index: int,
    jobs: int,
    done: int,
    upstream: SimulatedLLM,
    end: float | None,
    notes: Sequence[str],
) -> Run:
    events = upstream.events
    total = sum(upstream.counts.values())
    ok = sum(n for (_, status), n in upstream.counts.items() if status == 200)
    rejected = sum(n for (_, status), n in upstream.counts.items() if status == 429)
    # events are appended as answers go out, so arrivals are not in order: take min / max
    first = min((e.t for e in events), default=0.0)
    steady = [e for e in events if e.t >= first + STEADY_AFTER]
    last_arrival = max((e.t for e in events), default=first)
    return Run(
        variant=variant,
        index=index,
        jobs=jobs,
        done=done,
        requests=total,
        ok=ok,
        rejected=rejected,
        first_request=first,
        end=end if end is not None else upstream.timeline.now(),
        steady_requests=len(steady),
        steady_ok=sum(1 for e in steady if e.status == 200),
        steady_rejected=sum(1 for e in steady if e.status == 429),
        steady_end=last_arrival,
        peak_in_flight=upstream.peak_in_flight,
        notes=tuple(notes),
    )


# ---------------------------------------------------------------- Floodgate


async def _floodgate(variant: str, index: int, n: int) -> Run:
    upstream = SimulatedLLM(UPSTREAM)
    give_up = GIVE_UP * n / RATE
    with tempfile.TemporaryDirectory(prefix="floodgate-pacing-") as tmp:
        async with serve(upstream) as url:
            if variant == WITH_RPM:
                sched = Scheduler(
                    str(Path(tmp) / "b.db"), upstreams=[Upstream(UPSTREAM_NAME, rpm=RATE * 60)]
                )
            else:
                sched = Scheduler(str(Path(tmp) / "b.db"))
            succeeded: set[int] = set()
            last_success: list[float] = []
            hooks = httpx_event_hooks(sched, UPSTREAM_NAME)
            async with new_http_client(url, event_hooks=hooks) as http:

                async def complete(doc: int) -> int:
                    response = await post_completion(http, "batch", f"document {doc}")
                    response.raise_for_status()  # Floodgate classifies 429/5xx and retries
                    succeeded.add(doc)
                    last_success.append(upstream.timeline.now())
                    return doc

                task: Task[[int], int] = sched.task(
                    name=TASK_NAME, lane="batch", upstream=UPSTREAM_NAME, retry=RETRY
                )(complete)
                async with sched:
                    upstream.timeline.start()
                    upstream.reset_bucket()
                    started = time.monotonic()
                    for low in range(0, n, SUBMIT_CHUNK):
                        chunk = range(low, min(n, low + SUBMIT_CHUNK))
                        await asyncio.gather(*(task.submit(doc, key=f"doc-{doc}") for doc in chunk))
                    done = await _wait_done(sched, n, succeeded, started + give_up)
                    end = max(last_success) if done >= n and last_success else None
                    notes = _floodgate_notes(sched, done, n)
                    if done < n:
                        sched.end_grace()  # give up: cancel what runs, release the leases
    return _record(variant, index, n, done, upstream, end, notes)


async def _wait_done(sched: Scheduler, n: int, succeeded: set[int], deadline: float) -> int:
    """Jobs DONE in the backlog once all ``n`` are, or by ``deadline`` (monotonic)."""
    done = 0
    for _ in range(math.ceil((deadline - time.monotonic()) / POLL_S) + 1):
        if len(succeeded) >= n:
            counts = await sched.backlog_counts()
            done = counts.get("batch", {}).get("done", 0)
            if done >= n:
                return done
        if time.monotonic() >= deadline:
            break
        await asyncio.sleep(POLL_S)
    counts = await sched.backlog_counts()
    return counts.get("batch", {}).get("done", 0)


def _floodgate_notes(sched: Scheduler, done: int, n: int) -> list[str]:
    """Floodgate's own view at the end of the run (best effort: fields may move)."""
    notes: list[str] = []
    stats = sched.stats()
    up = stats.upstreams.get(UPSTREAM_NAME)
    if up is not None:
        failures = ", ".join(f"{k} {v}" for k, v in sorted(up.failures.items())) or "none"
        parts = [
            f"breaker {up.breaker}",
            f"{up.requests} requests, {up.successes} ok, failures: {failures}",
        ]
        for label, attr in (
            ("concurrency limit", "concurrency_limit"),
            ("learned rate", "learned_rate"),
            ("sent rate", "sent_rate"),
        ):
            value = getattr(up, attr, None)
            if value is not None:
                parts.append(
                    f"{label} {value:.4g}" if isinstance(value, float) else f"{label} {value}"
                )
        notes.append("upstream stats: " + "; ".join(parts))
    try:
        gate = sched.gate.stats()
        closed = ", ".join(f"{k} {v}" for k, v in sorted(gate.closed_by.items())) or "never"
        notes.append(f"gate closed by: {closed}")
    except Exception as exc:  # the gate's stats are being reworked; a note is not worth a crash
        notes.append(f"gate stats unavailable: {exc!r}")
    if done < n:
        notes.append(f"gave up with {n - done} of {n} jobs not DONE")
    return notes


# ---------------------------------------------------------------- the oracle


async def _oracle(variant: str, index: int, n: int) -> Run:
    """One request every 1/R s, never catching up in a burst; a rejected job is retried
    in the next free slot."""
    upstream = SimulatedLLM(UPSTREAM)
    interval = 1.0 / RATE
    max_slots = math.ceil(GIVE_UP * n)  # GIVE_UP x N / R seconds of slots
    loop = asyncio.get_running_loop()
    async with serve(upstream) as url, new_http_client(url) as http:
        line = collections.deque(range(n))
        succeeded: set[int] = set()
        last_success: list[float] = []
        seats = asyncio.Semaphore(ORACLE_SEATS)
        running: set[asyncio.Task[None]] = set()
        failures: collections.Counter[str] = collections.Counter()

        async def one(doc: int) -> None:
            try:
                response = await post_completion(http, "batch", f"document {doc}")
                status: str = str(response.status_code)
            except httpx.HTTPError as exc:
                status = type(exc).__name__
            finally:
                seats.release()
            if status == "200":
                succeeded.add(doc)
                last_success.append(upstream.timeline.now())
            else:
                failures[status] += 1
                line.append(doc)

        upstream.timeline.start()
        upstream.reset_bucket()
        next_at = loop.time()
        for _ in range(max_slots):
            if len(succeeded) >= n:
                break
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            if line:
                await seats.acquire()
                doc = line.popleft()
                job = asyncio.create_task(one(doc))
                running.add(job)
                job.add_done_callback(running.discard)
            # keep the schedule; after falling behind, restart from now (no catch-up burst)
            next_at = max(next_at + interval, loop.time())
        if running:
            await asyncio.wait(set(running), timeout=REQUEST_TIMEOUT + 1.0)
        for job in list(running):
            job.cancel()
        done = len(succeeded)
        end = max(last_success) if done >= n and last_success else None
        notes = [f"client-side failures: {dict(failures) or 'none'}"]
        if done < n:
            notes.append(f"gave up with {n - done} of {n} jobs unanswered")
    return _record(variant, index, n, done, upstream, end, notes)


# ---------------------------------------------------------------- the benchmark

RunFn = Callable[[str, int, int], Coroutine[Any, Any, Run]]
CLIENTS: dict[str, RunFn] = {ORACLE: _oracle, DEFAULTS: _floodgate, WITH_RPM: _floodgate}


@dataclass(slots=True)
class Summary:
    """One variant over its repetitions."""

    variant: str
    runs: list[Run] = field(default_factory=list)

    def stat(self, value: Callable[[Run], float]) -> tuple[float, float, float]:
        values = [v for v in (value(r) for r in self.runs) if not math.isnan(v)]
        if not values:
            return math.nan, math.nan, math.nan
        return median(values), min(values), max(values)

    @property
    def goodput_share(self) -> float:
        return self.stat(lambda r: r.goodput_share)[0]

    @property
    def rejected_share(self) -> float:
        return self.stat(lambda r: r.rejected_share)[0]

    def passed(self) -> bool:
        return (
            self.goodput_share >= TARGET_GOODPUT_SHARE
            and self.rejected_share <= TARGET_REJECTED_SHARE
            and all(r.finished for r in self.runs)
        )


def run(options: Options) -> Outcome:
    sizes = QUICK if options.quick else FULL
    repeats = options.repeat if options.repeat is not None else sizes.repeats
    n = sizes.jobs
    progress(
        f"{NAME}: upstream R={RATE:g} req/s (burst {BURST:g}, cap {MAX_IN_FLIGHT}, "
        f"service {SERVICE_TIME * 1000:.0f} ms); {n:,} jobs x {repeats} repeats x "
        f"{len(VARIANTS)} clients; a run gives up after {GIVE_UP * n / RATE:.0f} s"
    )
    summaries = {variant: Summary(variant) for variant in VARIANTS}
    for index in range(repeats):
        # rotate the order, so warm-up or drift does not favour one client
        order = VARIANTS[index % len(VARIANTS) :] + VARIANTS[: index % len(VARIANTS)]
        for variant in order:
            result = asyncio.run(CLIENTS[variant](variant, index, n))
            summaries[variant].runs.append(result)
            progress(
                f"{NAME}: [{variant}] repeat {index + 1}/{repeats}: "
                f"goodput {result.goodput:.1f} req/s ({_pct(result.goodput_share)} of R), "
                f"429 {_pct(result.rejected_share)} (steady {_pct(result.steady_rejected_share)}), "
                f"{result.requests:,} requests, {result.elapsed:.1f} s"
                + ("" if result.finished else f", UNFINISHED {result.jobs - result.done}")
            )
    oracle = summaries[ORACLE]
    checks = _checks(summaries)
    if options.quick:
        passed = True
        outcome_text = "quick smoke run, no verdict"
    else:
        passed = all(ok for _, ok in checks)
        outcome_text = f"targets: goodput >= {_pct(TARGET_GOODPUT_SHARE)} of R, 429 <= " + _pct(
            TARGET_REJECTED_SHARE
        )
    figures = "; ".join(
        f"{s.variant}: {_pct(s.goodput_share)} of R, "
        f"{_ratio(s.stat(lambda r: r.goodput)[0], oracle.stat(lambda r: r.goodput)[0])} "
        f"of the oracle, 429 {_pct(s.rejected_share)}"
        for s in (summaries[v] for v in FLOODGATE_VARIANTS)
    )
    command = f"python -m benchmarks --only {NAME}" + (" --quick" if options.quick else "")
    if options.repeat is not None:
        command += f" --repeat {options.repeat}"
    report = write_report(
        options,
        NAME,
        "Pacing: batch work against an upstream that allows R req/s",
        _report_blocks(summaries, checks, n, repeats, options.quick),
        command=command,
    )
    return Outcome(NAME, passed, f"{figures} ({outcome_text})", report)


def _checks(summaries: dict[str, Summary]) -> list[tuple[str, bool]]:
    checks: list[tuple[str, bool]] = []
    for variant in FLOODGATE_VARIANTS:
        s = summaries[variant]
        checks.append(
            (
                f"{variant}: goodput median {_pct(s.goodput_share)} of R "
                f"(target >= {_pct(TARGET_GOODPUT_SHARE)})",
                s.goodput_share >= TARGET_GOODPUT_SHARE,
            )
        )
        checks.append(
            (
                f"{variant}: 429 share median {_pct(s.rejected_share)} "
                f"(target <= {_pct(TARGET_REJECTED_SHARE)})",
                s.rejected_share <= TARGET_REJECTED_SHARE,
            )
        )
        unfinished = sum(1 for r in s.runs if not r.finished)
        checks.append(
            (f"{variant}: every run finished its N jobs ({unfinished} did not)", not unfinished)
        )
    return checks


# ---------------------------------------------------------------- report


def _pct(share: float) -> str:
    if math.isnan(share):
        return "-"
    return f"{share * 100:.1f} %" if share >= 0.001 or share == 0 else f"{share * 100:.2f} %"


def _ratio(a: float, b: float) -> str:
    if math.isnan(a) or math.isnan(b) or b == 0:
        return "-"
    return f"{a / b:.2f}x"


def _mmm(stat: tuple[float, float, float], fmt: Callable[[float], str]) -> str:
    mid, low, high = stat
    if math.isnan(mid):
        return "-"
    return f"{fmt(mid)} ({fmt(low)} .. {fmt(high)})"


def _rate(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.1f}"


def _report_blocks(
    summaries: dict[str, Summary],
    checks: list[tuple[str, bool]],
    n: int,
    repeats: int,
    quick: bool,
) -> list[str | Table]:
    oracle_goodput = summaries[ORACLE].stat(lambda r: r.goodput)[0]
    headline = Table(
        [
            "client",
            "goodput req/s",
            "share of R",
            "vs oracle (medians)",
            "429 share",
            "429 share after the first 10 s",
            "steady goodput req/s (after 10 s)",
            "requests",
            "elapsed s",
            "unfinished runs",
        ],
        [
            [
                s.variant,
                _mmm(s.stat(lambda r: r.goodput), _rate),
                _mmm(s.stat(lambda r: r.goodput_share), _pct),
                _ratio(s.stat(lambda r: r.goodput)[0], oracle_goodput),
                _mmm(s.stat(lambda r: r.rejected_share), _pct),
                _mmm(s.stat(lambda r: r.steady_rejected_share), _pct),
                _mmm(s.stat(lambda r: r.steady_goodput), _rate),
                _mmm(s.stat(lambda r: float(r.requests)), lambda v: f"{v:,.0f}"),
                _mmm(s.stat(lambda r: r.elapsed), lambda v: f"{v:.1f}"),
                f"{sum(1 for r in s.runs if not r.finished)} of {len(s.runs)}",
            ]
            for s in summaries.values()
        ],
    )
    if quick:
        verdict_lines = (
            "No verdict: `--quick` is a smoke run (N = 300, 1 repeat); "
            + ("the figures it would be judged on:\n\n")
            + "\n".join(f"- {text}" for text, _ in checks)
        )
    else:
        verdict_lines = "\n".join(f"- {verdict(ok)}: {text}" for text, ok in checks)
    upstream = Table(
        ["upstream setting (SimulatedLLM, 127.0.0.1 via uvicorn)", "value"],
        [
            ["rate limit R (token-bucket refill)", f"{RATE:g} req/s"],
            ["burst (bucket depth; `x-ratelimit-limit-requests`)", f"{BURST:g} requests"],
            ["concurrency cap (beyond it: 429 + `Retry-After: 1`)", str(MAX_IN_FLIGHT)],
            ["service time", f"{SERVICE_TIME * 1000:.0f} ms +-20 %"],
            ["mode", "normal for the whole run"],
            [
                "429 when the bucket is empty",
                "`Retry-After` = whole seconds until a token is back (at least 1)",
            ],
        ],
    )
    per_run = Table(
        [
            "client",
            "repeat",
            "jobs done",
            "requests",
            "200",
            "429",
            "429 share",
            "429 share after 10 s",
            "goodput req/s",
            "share of R",
            "first request at s",
            "elapsed s",
            "upstream peak in flight",
        ],
        [
            [
                r.variant,
                str(r.index + 1),
                f"{r.done:,} / {r.jobs:,}",
                f"{r.requests:,}",
                f"{r.ok:,}",
                f"{r.rejected:,}",
                _pct(r.rejected_share),
                _pct(r.steady_rejected_share),
                _rate(r.goodput),
                _pct(r.goodput_share),
                f"{r.first_request:.2f}",
                f"{r.elapsed:.1f}",
                str(r.peak_in_flight),
            ]
            for s in summaries.values()
            for r in s.runs
        ],
    )
    notes = "\n".join(
        f"- {r.variant}, repeat {r.index + 1}: " + "; ".join(r.notes)
        for s in summaries.values()
        for r in s.runs
        if r.notes
    )
    method = "\n".join(
        [
            f"- N = {n:,} jobs per run, {repeats} repetition(s) per client; figures are the "
            "median (min .. max) over the repetitions. The order of the three clients rotates "
            "from one repetition to the next.",
            "- Every run gets a fresh upstream (its own counters, a full bucket) on a free "
            "loopback port and a fresh event loop (`asyncio.run`); the Floodgate clients a "
            "fresh SQLite backlog in a temporary directory.",
            "- Request counts and statuses are the upstream's own (`SimulatedLLM.counts` and "
            "its per-request events), not the clients'. goodput = requests answered 200 / "
            "(last job's completion - first request's arrival), on the upstream's clock; "
            "share of R = goodput / R. The upstream's clock starts just before the first job "
            'is handed over ("first request at" is the delay to the first request, which '
            "for Floodgate includes submitting). The last completion is when the last "
            "job's request came back 200 (Floodgate: the task returned; the run also waits for "
            "`backlog_counts()` to show all N `done`).",
            f"- The steady columns count only requests arriving {STEADY_AFTER:g} s or more "
            "after the first one, so the discovery transient shows separately (a quick run "
            "is too short to have a steady part).",
            "- Floodgate, defaults: `Scheduler(path)` (default lanes: `batch` is durable and "
            "gated, 8 seats; no `max_concurrency`, no `upstreams`, default backlog options); "
            f"`@sched.task(lane='batch', upstream='{UPSTREAM_NAME}', retry=RetryPolicy("
            "max_attempts=50, base=0.5, cap=10.0))` POSTs `/v1/complete` (header "
            "`x-drill-lane: batch`) and calls `raise_for_status()`; the httpx client is built "
            f"with `event_hooks=httpx_event_hooks(sched, '{UPSTREAM_NAME}')`. All N jobs are "
            f"submitted up front (`task.submit`, gathered {SUBMIT_CHUNK} at a time).",
            f"- Floodgate, rpm set: the same with `upstreams=[Upstream('{UPSTREAM_NAME}', "
            f"rpm={RATE * 60:g})]` (R x 60).",
            f"- Oracle: a loop that sends one request every 1/R = {1000 / RATE:g} ms "
            f"(never more than {ORACLE_SEATS} in flight; after falling behind it restarts its "
            "schedule from now instead of catching up in a burst); a job answered anything "
            "but 200 goes back in line for the next slot. Same httpx client settings "
            "(`workers.drill.wire.new_http_client`), no event hooks.",
            f"- A run gives up after {GIVE_UP:g} x N / R = {GIVE_UP * n / RATE:g} s and reports "
            "its unfinished jobs (a Floodgate run then cuts its shutdown grace short).",
            f"- Targets (full runs only), for both Floodgate clients: goodput median >= "
            f"{_pct(TARGET_GOODPUT_SHARE)} of R, 429 share median <= "
            f"{_pct(TARGET_REJECTED_SHARE)}, and every run finishes. The oracle is the "
            "reference for what R allows here, not a target.",
        ]
    )
    blocks: list[str | Table] = [
        "## Result",
        headline,
        "## Verdict",
        verdict_lines,
        "## The upstream",
        upstream,
        "## Per run",
        per_run,
    ]
    if notes:
        blocks += ["## What the clients saw at the end of each run", notes]
    blocks += ["## Method", method]
    return blocks


if __name__ == "__main__":
    raise SystemExit(main(NAME, __doc__, run))
