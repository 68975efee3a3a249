"""Durable backlog: Floodgate's SQLite backlog with its defaults, against huey and
persist-queue on the same disk, and memory with 1,000,000 queued jobs.

Each repetition runs Floodgate (``Scheduler(path)``: the default lanes, one no-op
task; see :mod:`.floodgate`), huey and persist-queue (:mod:`.peers`) one after
another, the first one rotating, at ``synchronous=NORMAL`` (Floodgate's default;
the peers are switched to it) and then at ``FULL`` with a smaller N. Every figure
is the median (min..max) over the repetitions (``--repeat K``, default 5).

Targets (issue 10): submit with 100 submitters >= 50,000 jobs/s; ``submit_many``
>= 200,000 jobs/s; drain of no-op jobs with the defaults >= 20,000 jobs/s; submit
latency p50 < 1 ms while the same process drains; pickup p50 of an idle worker
< 1 ms in-process and < 20 ms from another process; peak RSS with 1,000,000
queued jobs < 200 MB. Event-loop CPU per job is reported, not judged; so are
submit and drain run again with the process on one CPU (``taskset -c N``), which
shows what handing work between threads costs on the machine (see ``_cpus``).

Run: ``python -m benchmarks --only durable --repeat 5`` (or ``python -m
benchmarks.durable``; ``--quick`` for a smoke run, ``--record`` to write
``benchmarks/results/durable.md``).
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .._common import Options, Outcome, fmt_rate, progress, verdict, write_report
from .._cpus import one_cpu
from . import floodgate as fg
from .memory import measure as measure_memory
from .peers import PEERS, PeerRun, Sync
from .report import Figures, blocks, verdicts

NAME = "durable"
__all__ = ["NAME", "run"]


@dataclass(frozen=True, slots=True)
class Sizes:
    jobs: int  # N: submit (100 submitters), drain, and the peers at NORMAL
    many: int  # jobs stored by submit_many
    latency_queued: int  # jobs draining while the latency caller submits ...
    latency_submits: int  # ... this many, one after another
    pickups: int  # jobs offered at 100/s to an idle worker (each: in and cross process)
    full_jobs: int  # N of the synchronous=FULL supplement
    reps: int
    rss_jobs: int
    rss_paused_s: float
    rss_drain: int
    rss_drain_s: float


FULL = Sizes(30_000, 100_000, 30_000, 2_000, 200, 1_000, 5, 1_000_000, 2.0, 20_000, 3.0)
QUICK = Sizes(3_000, 10_000, 3_000, 300, 50, 200, 1, 100_000, 0.5, 5_000, 1.5)
SYSTEMS = ("floodgate", *PEERS)


@dataclass(slots=True)
class Rep:
    index: int
    order: tuple[str, ...]
    floodgate: fg.FloodgateRun | None = None
    floodgate_full: fg.FloodgateRun | None = None
    peers: dict[str, PeerRun] = field(default_factory=dict)
    peers_full: dict[str, PeerRun] = field(default_factory=dict)


def _floodgate(directory: Path, sync: Sync, sizes: Sizes) -> fg.FloodgateRun:
    n = sizes.jobs if sync == "NORMAL" else sizes.full_jobs
    many = sizes.many if sync == "NORMAL" else sizes.full_jobs
    submit = asyncio.run(fg.submit(directory / "fg.db", sync, n))
    submit_many = asyncio.run(fg.submit_many(directory / "fg-many.db", sync, many))
    drain = asyncio.run(fg.drain(directory / "fg.db", sync, n))
    if sync != "NORMAL":
        return fg.FloodgateRun(submit, submit_many, drain)
    latency = asyncio.run(
        fg.latency_while_draining(
            directory / "fg-latency.db", sizes.latency_queued, sizes.latency_submits
        )
    )
    local = asyncio.run(fg.pickup_in_process(directory / "fg-pickup.db", sizes.pickups))
    remote = asyncio.run(fg.pickup_cross_process(directory / "fg-remote.db", sizes.pickups))
    # the floor: the drain's SQL alone on a file filled the same way (untimed fill)
    asyncio.run(fg.submit_many(directory / "fg-sql.db", sync, n))
    alone = fg.drain_sql_alone(directory / "fg-sql.db")
    many_alone = fg.insert_sql_alone(directory / "fg-insert-many.db", many, fg.MANY_CHUNK, run=True)
    submit_alone = fg.insert_sql_alone(directory / "fg-insert.db", n, fg.SUBMITTERS)
    # the same submit and drain with the process on one CPU (``taskset -c N``): its
    # threads then hand work to each other without waking another CPU
    one_submit = one_drain = None
    with one_cpu() as cpu:
        if cpu is not None:
            one_submit = asyncio.run(fg.submit(directory / "fg-one-cpu.db", sync, n))
            one_drain = asyncio.run(fg.drain(directory / "fg-one-cpu.db", sync, n))
    return fg.FloodgateRun(
        submit, submit_many, drain, latency, local, remote, alone, many_alone, submit_alone,
        one_submit, one_drain,
    )  # fmt: skip


def _one_rep(root: Path, index: int, sizes: Sizes) -> Rep:
    shift = index % len(SYSTEMS)
    order = SYSTEMS[shift:] + SYSTEMS[:shift]  # who goes first rotates
    rep = Rep(index, order)
    for sync in ("NORMAL", "FULL"):
        for system in order:
            directory = root / f"{sync.lower()}-{index}-{system}"
            directory.mkdir()
            try:
                if system == "floodgate":
                    run_ = _floodgate(directory, sync, sizes)
                    if sync == "NORMAL":
                        rep.floodgate = run_
                    else:
                        rep.floodgate_full = run_
                else:
                    n = sizes.jobs if sync == "NORMAL" else sizes.full_jobs
                    peers = rep.peers if sync == "NORMAL" else rep.peers_full
                    peers[system] = PEERS[system](directory, sync, n)
            finally:
                shutil.rmtree(directory, ignore_errors=True)
    return rep


def _rep_line(rep: Rep) -> str:
    f = rep.floodgate
    assert f is not None
    assert f.latency
    assert f.pickup_local
    assert f.pickup_remote
    return (
        f"submit {fmt_rate(f.submit.rate)}/s, submit_many {fmt_rate(f.submit_many.rate)}/s, "
        f"drain {fmt_rate(f.drain.rate)}/s{_one_cpu_line(f)}; submit p50 while draining "
        f"{f.latency.p(50) * 1e3:.2f} ms; pickup p50 {f.pickup_local.p(50) * 1e3:.2f} ms "
        f"in-process, {f.pickup_remote.p(50) * 1e3:.1f} ms cross-process; "
        + "; ".join(
            f"{name} {fmt_rate(p.enqueue.rate)}/{fmt_rate(p.drain.rate)}"
            for name, p in rep.peers.items()
        )
    )


def _one_cpu_line(f: fg.FloodgateRun) -> str:
    if f.submit_one_cpu is None or f.drain_one_cpu is None:
        return ""
    return (
        f" (on one CPU: submit {fmt_rate(f.submit_one_cpu.rate)}/s, "
        f"drain {fmt_rate(f.drain_one_cpu.rate)}/s)"
    )


def run(options: Options) -> Outcome:
    sizes = QUICK if options.quick else FULL
    reps_n = 1 if options.quick else (options.repeat or sizes.reps)
    progress(
        f"{NAME}: {reps_n} rep(s) of Floodgate (defaults), huey and persist-queue: "
        f"N={sizes.jobs:,} at NORMAL, N={sizes.full_jobs:,} at FULL; then "
        f"{sizes.rss_jobs:,} queued jobs for memory"
    )
    with tempfile.TemporaryDirectory(prefix="floodgate-bench-durable-", dir="/tmp") as tmp:
        root = Path(tmp)
        reps = []
        for index in range(reps_n):
            rep = _one_rep(root, index, sizes)
            reps.append(rep)
            progress(f"{NAME}: rep {index + 1}/{reps_n} ({' -> '.join(rep.order)}): ")
            progress(f"{NAME}:   {_rep_line(rep)}")
        memory = measure_memory(
            root, sizes.rss_jobs, sizes.rss_paused_s, sizes.rss_drain, sizes.rss_drain_s
        )
    figures = Figures(reps, sizes, memory)
    judged = verdicts(figures)
    passed = all(ok for _, _, ok in judged)
    summary = ", ".join(f"{label} {value} ({verdict(ok)})" for label, value, ok in judged)
    command = "python -m benchmarks --only durable" + (
        " --quick" if options.quick else f" --repeat {reps_n}"
    )
    report = write_report(
        options,
        NAME,
        "Durable backlog: Floodgate's SQLite backlog (defaults) vs huey and persist-queue",
        blocks(figures, judged),
        command=command,
    )
    return Outcome(NAME, passed, summary, report)
