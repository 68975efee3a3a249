"""Floodgate's phases, each through the public API with the defaults
(``Scheduler(path)``: the default lanes, ``batch`` 8 seats durable and gated; one
registered no-op task; no ``BacklogOptions``), each on a fresh SQLite file:

- ``submit``: 100 asyncio tasks each awaiting N/100 ``task.submit(i)`` in ``open(run=())``;
- ``submit_many``: ``task.submit_many`` of M jobs in calls of 10,000;
- ``drain``: a worker (``open(run=("batch",))``) runs the N jobs ``submit`` stored,
  timed until ``backlog_counts()`` shows all N ``done``;
- ``latency``: the lane drains N pre-stored jobs while one caller in the same
  process awaits K ``task.submit(i)`` one after another (each latency kept);
- ``pickup``: an idle worker, jobs submitted at 100/s, the time from a submit
  returning (committed) to the job's body starting; in-process (one scheduler)
  and cross-process (a worker child process, ``python -m
  benchmarks.durable._pickup_worker``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import sqlite3
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from scheduler import BacklogOptions, JobState, Scheduler, Task

from .._common import stopwatch
from .phase import TIME_LIMIT_S, Latencies, Phase

Sync = Literal["NORMAL", "FULL"]
LANE = "batch"
TASK = "bench.noop"
SUBMITTERS = 100
MANY_CHUNK = 10_000  # jobs per submit_many call
PICKUP_RATE = 100.0  # jobs/s offered to the idle worker
REPO_ROOT = Path(__file__).resolve().parent.parent.parent
CHILD_TIME_LIMIT_S = 120.0


class Runs:
    """The no-op task's body records when each job started; ``reached`` at ``target``."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.count = 0
        self.started: dict[int, float] = {}
        self.reached = asyncio.Event()
        self.first = asyncio.Event()

    async def noop(self, i: int) -> None:
        self.started[i] = time.perf_counter()
        self.first.set()
        self.count += 1
        if self.count >= self.target:
            self.reached.set()


def scheduler(path: Path, sync: Sync, runs: Runs) -> tuple[Scheduler, Task[Any, Any]]:
    """The defaults; only ``synchronous`` is set for the FULL supplement."""
    options = None if sync == "NORMAL" else BacklogOptions(synchronous=sync)
    sched = Scheduler(str(path), backlog_options=options, shutdown_grace=5.0)
    task: Task[Any, Any] = sched.task(runs.noop, name=TASK)
    return sched, task


def transactions(sched: Scheduler) -> tuple[int, int]:
    """SQLite transactions so far, and how many of them ran inline on the event loop's
    thread (the backlog's own counters, ``stats().backlog``)."""
    backlog = sched.stats().backlog
    return (0, 0) if backlog is None else (backlog.commits, backlog.inline_commits)


def _expect(counts: dict[str, dict[str, int]], want: dict[str, int], what: str) -> None:
    if counts != {LANE: want}:
        raise RuntimeError(f"floodgate {what}: the backlog holds {counts}, expected {want}")


async def _submitters(task: Task[Any, Any], n: int, submitters: int) -> None:
    async def submitter(count: int) -> None:
        for i in range(count):
            await task.submit(i)

    share, extra = divmod(n, submitters)
    await asyncio.gather(*(submitter(share + (k < extra)) for k in range(submitters)))


async def _until_done(sched: Scheduler, runs: Runs, n: int) -> dict[str, dict[str, int]]:
    """Until the N-th job has run and all N outcomes are stored as ``done``."""
    await runs.reached.wait()
    while True:
        counts = await sched.backlog_counts()
        if counts.get(LANE, {}).get("done", 0) >= n:
            return counts
        await asyncio.sleep(0.005)


async def submit(path: Path, sync: Sync, n: int) -> Phase:
    sched, task = scheduler(path, sync, Runs(n))
    async with sched.open(run=()):
        before = transactions(sched)
        with stopwatch() as watch:
            async with asyncio.timeout(TIME_LIMIT_S):
                await _submitters(task, n, SUBMITTERS)
        tx, inline = (a - b for a, b in zip(transactions(sched), before, strict=True))
        counts = await sched.backlog_counts()
    _expect(counts, {"queued": n}, f"submit ({SUBMITTERS} submitters)")
    return Phase.of(watch, n, tx, inline=inline)


async def submit_many(path: Path, sync: Sync, n: int) -> Phase:
    sched, task = scheduler(path, sync, Runs(n))
    async with sched.open(run=()):
        before = transactions(sched)
        with stopwatch() as watch:
            async with asyncio.timeout(TIME_LIMIT_S):
                for first in range(0, n, MANY_CHUNK):
                    last = min(n, first + MANY_CHUNK)
                    jobs = await task.submit_many([[i] for i in range(first, last)])
                    if len(jobs) != last - first:
                        raise RuntimeError("submit_many returned the wrong number of jobs")
        tx, inline = (a - b for a, b in zip(transactions(sched), before, strict=True))
        counts = await sched.backlog_counts()
    _expect(counts, {"queued": n}, "submit_many")
    return Phase.of(watch, n, tx, inline=inline)


async def drain(path: Path, sync: Sync, n: int) -> Phase:
    """Timed from the worker's first step (the backlog already open) to all N stored done."""
    runs = Runs(n)
    sched, _ = scheduler(path, sync, runs)
    async with sched.open(run=(LANE,)):
        before = transactions(sched)
        with stopwatch() as watch:
            async with asyncio.timeout(TIME_LIMIT_S):
                counts = await _until_done(sched, runs, n)
        tx, inline = (a - b for a, b in zip(transactions(sched), before, strict=True))
    _expect(counts, {"done": n}, "drain")
    return Phase.of(watch, n, tx, inline=inline)


def drain_sql_alone(path: Path, seats: int = 8) -> Phase:
    """The statements a drain with ``seats`` seats runs, alone: on a file ``submit``
    filled, one plain ``sqlite3`` connection in this thread loops ``BEGIN
    IMMEDIATE``, the ``COMPLETE`` of the last claim's jobs, the next ``CLAIM ...
    RETURNING`` of ``seats`` jobs, ``COMMIT`` (the backlog's own SQL text and
    pragmas), until the lane is empty. No event loop, no decoding, no job run:
    a floor for the drain on this machine and disk, measured in the same run."""
    from scheduler.backlog import Outcome
    from scheduler.backlog import _sqlite_schema as sql
    from scheduler.backlog.sqlite import complete_statements, run_statements

    running = JobState.RUNNING.value
    clock = time.perf_counter
    parts = dict.fromkeys(SQL_PARTS, 0.0)
    with _plain_connection(path) as db:
        jobs, transactions = 0, 0
        previous: list[tuple[Any, ...]] = []
        owner = "sql-alone"
        with stopwatch() as watch:
            while True:
                now = time.time()
                # the backlog's own parameters (row[1]: the id, row[7]: the attempt)
                done = [Outcome.done(row[1], owner, attempt=row[7]) for row in previous]
                statements = complete_statements(done, now)
                where = (LANE, now, seats, LANE, now, seats, seats)
                lease = (running, owner, now + 15.0, now)
                t0 = clock()
                db.execute("BEGIN IMMEDIATE")
                t1 = clock()
                applied = run_statements(db, statements)
                t2 = clock()
                previous = db.execute(sql.CLAIM_RETURNING, lease + where).fetchall()
                t3 = clock()
                db.execute("COMMIT")
                t4 = clock()
                spent = (t1 - t0, t2 - t1, t3 - t2, t4 - t3)
                for name, seconds in zip(SQL_PARTS, spent, strict=True):
                    parts[name] += seconds
                if applied != len(done):
                    raise RuntimeError(f"COMPLETE applied {applied} of {len(done)} outcomes")
                transactions += 1
                jobs += len(previous)
                if not previous:
                    break
        return Phase.of(watch, jobs, transactions, parts)


#: the parts of :func:`drain_sql_alone`'s transactions, timed one by one
SQL_PARTS = ("BEGIN IMMEDIATE", "COMPLETE", "CLAIM ... RETURNING", "COMMIT")


def insert_sql_alone(path: Path, n: int, per_transaction: int, *, run: bool = False) -> Phase:
    """The inserts of ``n`` default jobs, ``per_transaction`` at a time, alone: the
    backlog's own insert (``_sqlite_ops.insert``: the queued-count check, each job's
    record and id, ``INSERT``, the lane count) in ``BEGIN IMMEDIATE ... COMMIT`` on
    one plain ``sqlite3`` connection in this thread (the backlog's pragmas), with
    the ``NewJob``s (``run``: one template and the args texts, as a ``submit_many``
    call without keys hands them over) built beforehand. No event loop, no
    validation, no JSON encoding, no ``Job`` objects: a floor for ``submit_many``
    (calls of ``MANY_CHUNK``, as a run) and for ``submit`` (``SUBMITTERS`` jobs per
    group commit, each its own submit call with its own ``now`` and due time, as
    concurrent submits reach the group commit)."""
    from scheduler.backlog import NewJob
    from scheduler.backlog import _sqlite_ops as ops
    from scheduler.backlog._sqlite_ops import Submit
    from scheduler.backlog.base import job_rank
    from scheduler.backlog.sqlite import _in_transaction
    from scheduler.scheduler import DEFAULT_LANES

    _, task = scheduler(path, "NORMAL", Runs(n))  # the task's defaults, not opened
    lane = next(lane for lane in DEFAULT_LANES if lane.name == LANE)
    now = time.time()
    args = [[i] for i in range(n)]
    # a run shares one due time; submits are each due when made (a µs apart here)
    due = [now if run else now + i * 1e-6 for i in range(n)]
    jobs = [
        NewJob(task=TASK, lane=LANE, args_json=json.dumps(a), run_at=at,
               max_attempts=task.retry.max_attempts, max_queued=lane.max_queued,
               args=a, rank=job_rank(0.0, at, lane.aging))
        for a, at in zip(args, due, strict=True)
    ]  # fmt: skip
    with _plain_connection(path) as db:
        ops.migrate(db, str(path))
        transactions = 0
        with stopwatch() as watch:
            for first in range(0, n, per_transaction):
                chunk = jobs[first : first + per_transaction]
                batch: list[Submit]
                if run:
                    texts = [job.args_json for job in chunk]
                    part = ops.JobRun(replace(chunk[0], args_json="[]", args=None), texts)
                    batch = [(part, list(args[first : first + per_transaction]), now)]
                else:
                    batch = [([job], [job.args or []], job.run_at) for job in chunk]
                stored = _in_transaction(db, functools.partial(ops.insert, batch=batch))
                transactions += 1
                count = sum(len(s) for s in stored if isinstance(s, list))
                if count != len(chunk):
                    raise RuntimeError(f"the insert stored {count} jobs, not {len(chunk)}")
        return Phase.of(watch, n, transactions)


@contextlib.contextmanager
def _plain_connection(path: Path) -> Iterator[sqlite3.Connection]:
    """A plain ``sqlite3`` connection to ``path`` with the backlog's pragmas."""
    from scheduler.backlog._checkpointer import FALLBACK_PAGES

    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute(f"PRAGMA wal_autocheckpoint={FALLBACK_PAGES}")
        yield db
    finally:
        db.close()


async def latency_while_draining(path: Path, queued: int, k: int) -> Latencies:
    """``queued`` jobs stored first; then, while the lane drains them, one caller awaits
    ``k`` submits one after another. Latency of each; the drain rate meanwhile."""
    runs = Runs(queued + k)
    sched, task = scheduler(path, "NORMAL", runs)
    async with sched.open(run=()):
        for first in range(0, queued, MANY_CHUNK):
            await task.submit_many([[i] for i in range(first, min(queued, first + MANY_CHUNK))])
    samples: list[float] = []
    async with sched:
        async with asyncio.timeout(TIME_LIMIT_S):
            await runs.first.wait()  # the drain has started
            ran_before, start = runs.count, time.perf_counter()
            for i in range(k):
                begun = time.perf_counter()
                await task.submit(queued + i)
                samples.append(time.perf_counter() - begun)
            seconds = time.perf_counter() - start
            drained = runs.count - ran_before
            counts = await _until_done(sched, runs, queued + k)
    _expect(counts, {"done": queued + k}, "submit while draining")
    return Latencies(tuple(samples), jobs_per_s=drained / seconds)


async def pickup_in_process(path: Path, k: int) -> Latencies:
    """An idle worker in the same scheduler; ``k`` submits at :data:`PICKUP_RATE`."""
    runs = Runs(k)
    sched, task = scheduler(path, "NORMAL", runs)
    committed: dict[int, float] = {}
    async with sched:
        await asyncio.sleep(0.2)  # the worker has looked once and is idle
        async with asyncio.timeout(TIME_LIMIT_S):
            start = time.perf_counter()
            for i in range(k):
                await _until(start + i / PICKUP_RATE)
                await task.submit(i)
                committed[i] = time.perf_counter()
            counts = await _until_done(sched, runs, k)
    _expect(counts, {"done": k}, "pickup (in-process)")
    return Latencies(tuple(max(0.0, runs.started[i] - committed[i]) for i in range(k)))


async def _until(when: float) -> None:
    delay = when - time.perf_counter()
    if delay > 0:
        await asyncio.sleep(delay)


async def pickup_cross_process(path: Path, k: int) -> Latencies:
    """A worker in a child process (the defaults); this process submits ``k`` jobs at
    :data:`PICKUP_RATE`. Wall clocks of one host compared (``time.time()``)."""
    out = path.with_suffix(".starts")
    runs = Runs(k)
    sched, task = scheduler(path, "NORMAL", runs)
    committed: dict[int, float] = {}
    async with sched.open(run=()):  # creates the file before the worker opens it
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "benchmarks.durable._pickup_worker", str(path), str(out),
            str(k), cwd=REPO_ROOT, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            assert child.stdout is not None
            async with asyncio.timeout(CHILD_TIME_LIMIT_S):
                line = await child.stdout.readline()
                if line.strip() != b"ready":
                    raise RuntimeError(f"pickup worker did not start: {line!r}")
                await asyncio.sleep(0.3)  # the worker has looked once and is idle
                start = time.perf_counter()
                for i in range(k):
                    await _until(start + i / PICKUP_RATE)
                    await task.submit(i)
                    committed[i] = time.time()
                code = await child.wait()
        finally:
            if child.returncode is None:
                child.kill()
                await child.wait()
        counts = await sched.backlog_counts()
    if code != 0:
        raise RuntimeError(f"pickup worker exited with {code}")
    _expect(counts, {"done": k}, "pickup (cross-process)")
    started = {int(i): float(t) for i, t in json.loads(out.read_text()).items()}
    return Latencies(tuple(max(0.0, started[i] - committed[i]) for i in range(k)))


@dataclass(frozen=True, slots=True)
class FloodgateRun:
    submit: Phase
    submit_many: Phase
    drain: Phase
    latency: Latencies | None = None
    pickup_local: Latencies | None = None
    pickup_remote: Latencies | None = None
    sql_alone: Phase | None = None
    many_sql_alone: Phase | None = None
    submit_sql_alone: Phase | None = None
    # submit and drain again with the process on one CPU (``None``: only one CPU here)
    submit_one_cpu: Phase | None = None
    drain_one_cpu: Phase | None = None
