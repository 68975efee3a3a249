"""PostgreSQL drain throughput: Floodgate's Postgres backlog vs procrastinate and pgqueuer,
1/2/4 workers.

N no-op jobs are loaded into a fresh schema, then K worker processes
(K = 1, 2, 4) are told to start at once and drain them. We time from that
signal to the last job's completion as the database recorded it (checking
only every 100 ms whether the drain is over, so as not to load the server),
then check that every job ended done. Both systems run
in the same process tree, against the same server, in the same run,
alternating, each on a schema of its own.

- Floodgate: ``floodgate worker``-style processes (a ``Scheduler`` with one
  durable lane on ``postgresql://...``): batched claims (``FOR UPDATE SKIP
  LOCKED``), batched completions, ``LISTEN/NOTIFY``. A lane's
  ``max_concurrency`` is fleet-wide, so it is set to K x 32: the same number
  of jobs in flight as K procrastinate workers of ``concurrency=32``.
- procrastinate (psycopg 3 connector, its own worker, ``concurrency=32`` per
  process, ``LISTEN/NOTIFY`` on, a pool of up to 10 connections per process).
- pgqueuer (asyncpg, its ``QueueManager`` per process: ``max_concurrent_tasks=32``,
  ``batch_size=16`` (its cap is half of that), ``LISTEN/NOTIFY``, default
  durability: every table logged).

Target: Floodgate drains at least as fast as procrastinate and pgqueuer at every
worker count, and every system finishes every job.

Uses ``FLOODGATE_TEST_POSTGRES_DSN``, else ``postgresql://postgres@127.0.0.1:5432/test``
if it answers; without either it is SKIPPED (exit status 0, no report written).

Run alone: ``python -m benchmarks.postgres [--quick]``.
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from ._common import (
    Options,
    Outcome,
    Table,
    fmt_rate,
    main,
    median,
    postgres_dsn,
    progress,
    verdict,
    write_report,
)

NAME = "postgres"
WORKER_COUNTS = (1, 2, 4)
CONCURRENCY = 32  # jobs in flight per worker process
PROCRASTINATE_POOL = 10  # connections per procrastinate worker process
SYSTEMS = ("floodgate", "procrastinate", "pgqueuer")
TIME_LIMIT_S = 300.0  # per drain
LOAD_CHUNK = 1000  # jobs per insert while loading
POLL_S = 0.1  # how often the parent checks whether the drain is over


@dataclass(frozen=True, slots=True)
class Sizes:
    jobs: int
    reps: int  # procrastinate drains per cell (about 30 s each at full size)
    floodgate_reps: int  # Floodgate drains per cell (about 1 s each: more, to steady the median)
    pgqueuer_reps: int  # pgqueuer drains per cell (a few seconds each)


FULL = Sizes(jobs=10_000, reps=2, floodgate_reps=5, pgqueuer_reps=3)
QUICK = Sizes(jobs=2_000, reps=1, floodgate_reps=1, pgqueuer_reps=1)


@dataclass(frozen=True, slots=True)
class Drain:
    system: str
    workers: int
    jobs: int
    seconds: float
    done: int  # jobs found finished successfully afterwards

    @property
    def rate(self) -> float:
        return self.jobs / self.seconds


# ---------------------------------------------------------------- database plumbing


def _with_query(dsn: str, **params: str) -> str:
    parts = urlsplit(dsn)
    query = "&".join(q for q in (parts.query, urlencode(params)) if q)
    return urlunsplit(parts._replace(query=query))


async def _sql(dsn: str, query: str, *args: Any) -> list[Any]:
    import asyncpg  # type: ignore[import-untyped]

    conn = await asyncpg.connect(dsn)
    try:
        return list(await conn.fetch(query, *args))
    finally:
        await conn.close()


def _schema_name() -> str:
    return f"floodgate_bench_{uuid.uuid4().hex[:12]}"


async def _load_floodgate(dsn: str, schema: str, n: int) -> str:
    """Create the Floodgate schema and load ``n`` jobs; return the workers' DSN."""
    from scheduler.backlog import NewJob
    from scheduler.backlog.postgres import PostgresBacklog

    async with PostgresBacklog(dsn, schema=schema, listen=False) as backlog:
        for start in range(0, n, LOAD_CHUNK):
            jobs = [
                NewJob(task="bench.noop", lane="bench", args_json=f"[{i}]")
                for i in range(start, min(n, start + LOAD_CHUNK))
            ]
            await backlog.submit(jobs, now=time.time())
    return _with_query(dsn, search_path=schema, application_name="floodgate-bench")


def _procrastinate_app(dsn: str, schema: str) -> Any:
    """A procrastinate App on ``schema`` with the no-op task registered."""
    import procrastinate

    connector = procrastinate.PsycopgConnector(
        conninfo=dsn,
        kwargs={"options": f"-c search_path={schema}", "application_name": "procrastinate-bench"},
        min_size=1,
        max_size=PROCRASTINATE_POOL,
    )
    app = procrastinate.App(connector=connector)

    @app.task(name="bench.noop", queue="bench")
    async def noop(i: int) -> None:
        return None

    return app


async def _load_procrastinate(dsn: str, schema: str, n: int) -> None:
    await _sql(dsn, f'CREATE SCHEMA "{_checked(schema)}"')
    app = _procrastinate_app(dsn, schema)
    async with app.open_async():
        await app.schema_manager.apply_schema_async()
        task = app.tasks["bench.noop"]
        for start in range(0, n, LOAD_CHUNK):
            await task.batch_defer_async(
                *({"i": i} for i in range(start, min(n, start + LOAD_CHUNK)))
            )


async def _load_pgqueuer(dsn: str, schema: str, n: int) -> None:
    import asyncpg
    from pgqueuer import AsyncpgDriver, Queries

    await _sql(dsn, f'CREATE SCHEMA "{_checked(schema)}"')
    conn = await asyncpg.connect(dsn, server_settings={"search_path": schema})
    try:
        queries = Queries(AsyncpgDriver(conn))
        await queries.install(create_schema=False)
        for start in range(0, n, LOAD_CHUNK):
            ids = range(start, min(n, start + LOAD_CHUNK))
            payloads: list[bytes | None] = [str(i).encode() for i in ids]
            await queries.enqueue(["bench.noop"] * len(ids), payloads, [0] * len(ids))
    finally:
        await conn.close()


def _checked(schema: str) -> str:
    """Only our own generated names go into SQL text."""
    if not (schema.startswith("floodgate_bench_") and schema.isidentifier()):
        raise ValueError(f"unexpected schema name {schema!r}")
    return schema


# Queued-or-running and finished-successfully counts, per system (schema-qualified).
_PENDING = {
    "floodgate": "SELECT count(*) FROM {s}.floodgate_jobs WHERE state IN ('queued','running')",
    "procrastinate": "SELECT count(*) FROM {s}.procrastinate_jobs WHERE status IN ('todo','doing')",
    "pgqueuer": "SELECT count(*) FROM {s}.pgqueuer",  # a finished job leaves the queue table
}
# When the last job finished, in epoch seconds, as the database recorded it.
_FINISHED = {
    "floodgate": "SELECT max(updated_at) FROM {s}.floodgate_jobs WHERE state = 'done'",
    "procrastinate": "SELECT extract(epoch FROM max(at))::float8 FROM {s}.procrastinate_events"
    " WHERE type = 'succeeded'",
    "pgqueuer": "SELECT extract(epoch FROM max(created))::float8 FROM {s}.pgqueuer_log"
    " WHERE status = 'successful'",
}
_DONE = {
    "floodgate": "SELECT count(*) FROM {s}.floodgate_jobs WHERE state = 'done'",
    "procrastinate": "SELECT count(*) FROM {s}.procrastinate_jobs WHERE status = 'succeeded'",
    "pgqueuer": "SELECT count(*) FROM {s}.pgqueuer_log WHERE status = 'successful'",
}


# ---------------------------------------------------------------- one drain


async def _drain(system: str, dsn: str, workers: int, n: int) -> Drain:
    schema = _schema_name()
    try:
        if system == "floodgate":
            worker_dsn = await _load_floodgate(dsn, schema, n)
            argv = ["floodgate", worker_dsn, str(CONCURRENCY * workers)]
        elif system == "procrastinate":
            await _load_procrastinate(dsn, schema, n)
            argv = ["procrastinate", dsn, schema, str(CONCURRENCY)]
        else:
            await _load_pgqueuer(dsn, schema, n)
            argv = ["pgqueuer", dsn, schema, str(CONCURRENCY)]
        procs = [
            await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "benchmarks.postgres",
                "--worker",
                *argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
            )
            for _ in range(workers)
        ]
        try:
            for proc in procs:  # every worker imported and built; nothing connected yet
                assert proc.stdout is not None
                line = await asyncio.wait_for(proc.stdout.readline(), 60)
                if line.strip() != b"ready":
                    raise RuntimeError(f"{system} worker did not start: {line!r}")
            seconds = await _time_drain(system, dsn, schema, procs)
        finally:
            for proc in procs:
                if proc.returncode is None:
                    assert proc.stdin is not None
                    proc.stdin.write(b"stop\n")
                    await proc.stdin.drain()
            for proc in procs:
                try:
                    await asyncio.wait_for(proc.wait(), 30)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()
        [[done]] = await _sql(dsn, _DONE[system].format(s=_checked(schema)))
        return Drain(system, workers, n, seconds, int(done))
    finally:
        await _sql(dsn, f'DROP SCHEMA IF EXISTS "{_checked(schema)}" CASCADE')


async def _time_drain(
    system: str, dsn: str, schema: str, procs: list[asyncio.subprocess.Process]
) -> float:
    """Seconds from the start signal to the last job's completion as the database
    recorded it; meanwhile only a cheap check every ``POLL_S`` whether it is over."""
    import asyncpg

    pending_sql = _PENDING[system].format(s=_checked(schema))
    conn = await asyncpg.connect(dsn)
    try:
        start = time.time()  # the same clock as the completion timestamps (same machine)
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write(b"go\n")
        await asyncio.gather(*(proc.stdin.drain() for proc in procs if proc.stdin is not None))
        while await conn.fetchval(pending_sql):
            if time.time() - start > TIME_LIMIT_S:
                raise RuntimeError(f"{system} did not drain within {TIME_LIMIT_S:.0f} s")
            if any(proc.returncode not in (None, 0) for proc in procs):
                raise RuntimeError(f"a {system} worker died mid-drain")
            await asyncio.sleep(POLL_S)
        finished = await conn.fetchval(_FINISHED[system].format(s=_checked(schema)))
        return float(finished) - start
    finally:
        await conn.close()


# ---------------------------------------------------------------- worker processes


async def _read_line() -> str:
    return await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)


async def _floodgate_worker(dsn: str, concurrency: int) -> None:
    from scheduler import BacklogOptions, Lane, Scheduler

    sched = Scheduler(
        dsn,
        lanes=[Lane("bench", max_concurrency=concurrency, durable=True)],
        backlog_options=BacklogOptions(poll_interval=0.05),
        shutdown_grace=0,
    )

    async def noop(i: int) -> None:
        return None

    sched.task(name="bench.noop", lane="bench")(noop)
    print("ready", flush=True)
    await _read_line()  # go
    async with sched:
        await _read_line()  # stop


async def _procrastinate_worker(dsn: str, schema: str, concurrency: int) -> None:
    app = _procrastinate_app(dsn, schema)
    print("ready", flush=True)
    await _read_line()  # go
    async with app.open_async():
        worker = asyncio.create_task(
            app.run_worker_async(
                queues=["bench"],
                concurrency=concurrency,
                wait=True,
                install_signal_handlers=False,
                listen_notify=True,
            )
        )
        await _read_line()  # stop
        worker.cancel()
        await asyncio.gather(worker, return_exceptions=True)


async def _pgqueuer_worker(dsn: str, schema: str, concurrency: int) -> None:
    from datetime import timedelta

    import asyncpg
    from pgqueuer import AsyncpgDriver, Queries, QueueManager

    print("ready", flush=True)
    await _read_line()  # go
    conn = await asyncpg.connect(
        dsn, server_settings={"search_path": schema, "application_name": "pgqueuer-bench"}
    )
    manager = QueueManager(Queries(AsyncpgDriver(conn)))

    @manager.entrypoint("bench.noop")
    async def noop(job: Any) -> None:
        return None

    worker = asyncio.create_task(
        manager.run(
            batch_size=concurrency // 2,  # max_concurrent_tasks must be >= 2 x batch_size
            max_concurrent_tasks=concurrency,
            dequeue_timeout=timedelta(seconds=1),
            log_aggregation_interval=timedelta(0),  # keep pgqueuer_log for the count
        )
    )
    await _read_line()  # stop
    manager.shutdown.set()
    try:
        await asyncio.wait_for(worker, 20)
    finally:
        await conn.close()


def _worker_main(argv: Sequence[str]) -> int:
    system, *rest = argv
    if system == "floodgate":
        asyncio.run(_floodgate_worker(rest[0], int(rest[1])))
    elif system == "procrastinate":
        asyncio.run(_procrastinate_worker(rest[0], rest[1], int(rest[2])))
    else:
        asyncio.run(_pgqueuer_worker(rest[0], rest[1], int(rest[2])))
    return 0


# ---------------------------------------------------------------- the benchmark


def run(options: Options) -> Outcome:
    dsn, source = postgres_dsn()
    if dsn is None:
        progress(f"{NAME}: skipped: {source}")
        return Outcome(NAME, True, "", None, skipped=source)
    progress(f"{NAME}: PostgreSQL from {source}")
    sizes = QUICK if options.quick else FULL
    reps = {
        "floodgate": sizes.floodgate_reps,
        "procrastinate": sizes.reps,
        "pgqueuer": sizes.pgqueuer_reps,
    }
    progress(f"{NAME}: {sizes.jobs:,} no-op jobs x workers {WORKER_COUNTS}, reps {reps}")
    drains: list[Drain] = []
    for rep in range(max(reps.values())):
        for workers in WORKER_COUNTS:
            shift = (rep + workers) % len(SYSTEMS)  # rotate who goes first
            order = SYSTEMS[shift:] + SYSTEMS[:shift]
            for system in (s for s in order if rep < reps[s]):
                drain = asyncio.run(_drain(system, dsn, workers, sizes.jobs))
                drains.append(drain)
                progress(
                    f"{NAME}: rep {rep + 1}/{reps[system]} {system} x{workers}: "
                    f"{fmt_rate(drain.rate)} jobs/s ({drain.seconds:.2f} s, {drain.done:,} done)"
                )
    results = _summarize(drains)
    passed = all(r.passed for r in results)
    summary = ", ".join(f"x{r.workers}: {r.ratio:.2f}x / {r.ratio_pgqueuer:.2f}x" for r in results)
    report = write_report(
        options,
        NAME,
        "PostgreSQL drain throughput: Floodgate vs procrastinate and pgqueuer, "
        "1/2/4 worker processes",
        _report_blocks(results, drains, sizes, dsn),
        command=f"python -m benchmarks.{NAME}" + (" --quick" if options.quick else ""),
    )
    unfinished = [f"x{r.workers}" for r in results if not r.complete]
    broken = f"jobs left undone at {', '.join(unfinished)}" if unfinished else None
    summary = f"Floodgate/procrastinate / Floodgate/pgqueuer {summary} (target >= 1.00x)"
    return Outcome(NAME, passed, summary, report, broken=broken)


@dataclass(frozen=True, slots=True)
class Result:
    workers: int
    floodgate: float  # median jobs/s
    procrastinate: float
    pgqueuer: float
    complete: bool  # every drain finished every job

    @property
    def ratio(self) -> float:
        return self.floodgate / self.procrastinate

    @property
    def ratio_pgqueuer(self) -> float:
        return self.floodgate / self.pgqueuer

    @property
    def passed(self) -> bool:
        return self.complete and self.ratio >= 1.0 and self.ratio_pgqueuer >= 1.0


def _summarize(drains: list[Drain]) -> list[Result]:
    out = []
    for workers in WORKER_COUNTS:
        mine = [d for d in drains if d.workers == workers]
        rate = {s: median([d.rate for d in mine if d.system == s]) for s in SYSTEMS}
        complete = all(d.done == d.jobs for d in mine)
        out.append(
            Result(workers, rate["floodgate"], rate["procrastinate"], rate["pgqueuer"], complete)
        )
    return out


def _report_blocks(
    results: list[Result], drains: list[Drain], sizes: Sizes, dsn: str
) -> list[str | Table]:
    base = results[0]
    headline = Table(
        ["worker processes", "Floodgate jobs/s", "procrastinate jobs/s", "pgqueuer jobs/s",
         "ratio Floodgate/procrastinate", "ratio Floodgate/pgqueuer", "every job done",
         "target", "result"],
        [
            [str(r.workers), fmt_rate(r.floodgate), fmt_rate(r.procrastinate),
             fmt_rate(r.pgqueuer), f"{r.ratio:.2f}", f"{r.ratio_pgqueuer:.2f}",
             "yes" if r.complete else "NO", ">= 1.00 both", verdict(r.passed)]
            for r in results
        ],
    )  # fmt: skip
    scaling = Table(
        ["worker processes", "Floodgate speed-up vs 1 worker",
         "procrastinate speed-up vs 1 worker", "pgqueuer speed-up vs 1 worker"],
        [
            [str(r.workers), f"{r.floodgate / base.floodgate:.2f}x",
             f"{r.procrastinate / base.procrastinate:.2f}x",
             f"{r.pgqueuer / base.pgqueuer:.2f}x"]
            for r in results
        ],
    )  # fmt: skip
    per_rep = Table(
        ["system", "workers", "seconds", "jobs/s", "done"],
        [
            [d.system, str(d.workers), f"{d.seconds:.2f}", fmt_rate(d.rate), f"{d.done:,}"]
            for d in drains
        ],
    )
    setup = (
        f"{sizes.jobs:,} no-op jobs per drain, loaded before the workers start; "
        f"{sizes.floodgate_reps} Floodgate, {sizes.reps} procrastinate and "
        f"{sizes.pgqueuer_reps} pgqueuer drain(s) per cell, median shown. Time runs from the "
        "start signal to the last completion the database recorded (Floodgate: the newest "
        "`updated_at` of a done job; procrastinate: the newest `succeeded` event; pgqueuer: "
        "the newest `successful` row of `pgqueuer_log`); the benchmark "
        "only checks every 100 ms whether the drain is over, so it adds no load. Worker "
        "processes are started and their imports done before the signal; connecting "
        "is inside the timed window for both systems. Each drain uses a fresh schema. "
        f"Floodgate: one durable lane, `max_concurrency` = workers x {CONCURRENCY} "
        f"(the lane ceiling is fleet-wide), default claim batch; procrastinate "
        f"{_version('procrastinate')}: `concurrency={CONCURRENCY}` per worker, "
        f"psycopg pool of up to {PROCRASTINATE_POOL}, `listen_notify=True`; pgqueuer "
        f"{_version('pgqueuer')}: one asyncpg connection per worker, `QueueManager.run("
        f"batch_size={CONCURRENCY // 2}, max_concurrent_tasks={CONCURRENCY})`, default "
        "durability (all tables logged), log aggregation off so its log can be counted. "
        "The PostgreSQL server runs on the same machine and shares its CPUs with "
        "the workers, so the scaling curve flattens once the cores are busy."
    )
    reading = (
        "Why the gap: Floodgate leases as many jobs as it has free seats in one "
        "statement (`FOR UPDATE SKIP LOCKED`) and writes outcomes in batches, so a "
        "no-op job costs a fraction of a round trip; procrastinate fetches and "
        "finishes each job with statements of its own (and records an event row per "
        "state change), and its fetch slows as more jobs wait: a `--quick` run "
        "(2,000 jobs) shows it faster than here. The ratio matters for short jobs "
        "and deep backlogs; with jobs that take a second (an LLM call) both are far "
        "from their limits. The lane ceiling check (an advisory lock per lane, taken "
        "by every claim) is included in Floodgate's figures."
    )
    return [
        "## Result",
        headline,
        "## Scaling",
        scaling,
        "## Reading the numbers",
        reading,
        "## Setup",
        setup,
        f"PostgreSQL: {_server_version(dsn)}.",
        "## Every drain",
        per_rep,
    ]


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "(not installed)"


def _server_version(dsn: str) -> str:
    rows = asyncio.run(_sql(dsn, "SHOW server_version"))
    return str(rows[0][0])


if __name__ == "__main__":
    # through the imported module, so procrastinate's App is not built in __main__
    from benchmarks import postgres as this_module

    if sys.argv[1:2] == ["--worker"]:
        raise SystemExit(this_module._worker_main(sys.argv[2:]))
    raise SystemExit(main(NAME, __doc__, this_module.run))
