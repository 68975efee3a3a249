"""Child processes of the ``durable`` benchmark's memory measurement.

The parent (:mod:`benchmarks.durable`) runs each step in a fresh interpreter so
that no other benchmark's memory is counted, and reads one JSON object from the
last line of stdout::

    python -m benchmarks._durable_rss fill PATH N
    python -m benchmarks._durable_rss hold PATH N PAUSED_S DRAIN DRAIN_S

``fill`` stores N queued jobs through the backlog's own batch ``submit()``
(2,000 jobs per call, 4 callers at once, so 1,000,000 jobs take seconds, not
minutes). ``hold`` opens a Scheduler on that file as a worker of a gated lane
whose gate is paused, holds it for PAUSED_S seconds, then resumes the gate and
lets it drain until DRAIN jobs are done or DRAIN_S seconds have passed. RSS is
sampled every 20 ms (psutil) and the process's lifetime peak (``VmHWM``) is
read at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]

from scheduler import BacklogOptions, Lane, RetryPolicy, Scheduler
from scheduler.backlog import NewJob, SQLiteBacklog

LANE = "batch"
TASK = "bench.noop"
SEATS = 64
CLAIM_BATCH = 512
POLL_S = 0.01
FILL_BATCH = 2_000
FILL_CALLERS = 4
SAMPLE_S = 0.020
TIME_LIMIT_S = 240.0

_MB = 1024 * 1024
_PROCESS = psutil.Process()


def rss_mb() -> float:
    """This process's resident set size now, in MiB."""
    return float(_PROCESS.memory_info().rss) / _MB


def peak_rss_mb() -> float:
    """This process's peak resident set size so far, in MiB.

    Linux: ``VmHWM`` of ``/proc/self/status``, the high-water mark of this
    process's own address space. Not ``ru_maxrss``: Linux keeps that across
    ``fork``/``exec``, so a child would report its parent's peak if higher.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def file_sizes_mb(path: str) -> dict[str, float]:
    """Sizes of the database, its WAL and shared-memory files (absent: 0)."""
    out = {}
    for suffix in ("", "-wal", "-shm"):
        file = Path(path + suffix)
        out[suffix or "db"] = file.stat().st_size / _MB if file.exists() else 0.0
    return out


class Sampler:
    """Samples RSS every ``SAMPLE_S`` in the event loop; keeps the peak per phase."""

    def __init__(self) -> None:
        self.peaks: dict[str, float] = {}
        self.phase = "start"
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    def enter(self, phase: str) -> None:
        self.phase = phase
        self._sample()

    def _sample(self) -> None:
        now = rss_mb()
        self.peaks[self.phase] = max(self.peaks.get(self.phase, 0.0), now)

    async def _run(self) -> None:
        while True:
            self._sample()
            await asyncio.sleep(SAMPLE_S)

    async def stop(self) -> None:
        self._sample()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


async def fill(path: str, n: int) -> dict[str, Any]:
    rss_before = rss_mb()
    sampler = Sampler()
    sampler.start()
    sampler.enter("fill")
    backlog = SQLiteBacklog(path)  # synchronous=NORMAL, like the Scheduler's default
    await backlog.open()
    max_attempts = RetryPolicy().max_attempts  # what Scheduler.submit stores by default
    batches = range(0, n, FILL_BATCH)
    start = time.perf_counter()

    async def caller(first: int) -> None:
        for offset in batches[first::FILL_CALLERS]:
            now = time.time()
            jobs = [
                NewJob(TASK, LANE, f"[{i}]", run_at=now, max_attempts=max_attempts)
                for i in range(offset, min(offset + FILL_BATCH, n))
            ]
            await backlog.submit(jobs, now=now)

    try:
        async with asyncio.timeout(TIME_LIMIT_S):
            await asyncio.gather(*(caller(k) for k in range(FILL_CALLERS)))
        seconds = time.perf_counter() - start
        counts = await backlog.counts()
        stats = backlog.stats()
    finally:
        await backlog.close()
    await sampler.stop()
    if counts != {LANE: {"queued": n}}:
        raise RuntimeError(f"fill stored {counts}, expected {n} queued")
    return {
        "jobs": n,
        "seconds": seconds,
        "rss_before_mb": rss_before,
        "rss_after_mb": rss_mb(),
        "phase_peaks_mb": sampler.peaks,
        "peak_rss_mb": peak_rss_mb(),
        "transactions": stats.commits,
        "files_mb": file_sizes_mb(path),
    }


async def hold(path: str, n: int, paused_s: float, drain: int, drain_s: float) -> dict[str, Any]:
    rss_start = rss_mb()
    sampler = Sampler()
    sampler.start()
    runs = 0
    drained = asyncio.Event()

    async def noop(i: int) -> None:
        nonlocal runs
        runs += 1
        if runs >= drain:
            drained.set()

    sched = Scheduler(
        path,
        lanes=[Lane(LANE, SEATS, durable=True, gated=True)],
        backlog_options=BacklogOptions(claim_batch=CLAIM_BATCH, poll_interval=POLL_S),
        shutdown_grace=5.0,
    )
    sched.task(noop, name=TASK)
    sched.gate.pause("benchmark: hold the backlog")
    result: dict[str, Any] = {"jobs": n, "rss_start_mb": rss_start}
    async with asyncio.timeout(TIME_LIMIT_S):
        sampler.enter("open")
        start = time.perf_counter()
        async with sched.open(run=(LANE,)):
            result["open_seconds"] = time.perf_counter() - start
            result["rss_open_mb"] = rss_mb()
            sampler.enter("paused")
            await asyncio.sleep(paused_s)
            counts = await sched.backlog_counts()
            if counts != {LANE: {"queued": n}}:
                raise RuntimeError(f"behind a paused gate the backlog holds {counts}")
            result["lane_queued_stat"] = sched.stats()[LANE].queued
            result["rss_paused_end_mb"] = rss_mb()
            sampler.enter("drain")
            tx_before = _transactions(sched)
            start = time.perf_counter()
            sched.gate.resume()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(drain_s):
                    await drained.wait()
                    await _until_stored(sched, drain)
            result["drain_seconds"] = time.perf_counter() - start
            result["drain_transactions"] = _transactions(sched) - tx_before
            result["rss_drain_end_mb"] = rss_mb()
            sampler.enter("close")
        after = await _counts_after(path)
    await sampler.stop()
    done = after.get("done", 0)
    if done + after.get("queued", 0) != n:
        raise RuntimeError(f"after draining {drain} the backlog holds {after} (n={n})")
    result.update(
        drained=done,
        phase_peaks_mb=sampler.peaks,
        peak_rss_mb=peak_rss_mb(),
        files_mb=file_sizes_mb(path),
    )
    return result


def _transactions(sched: Scheduler) -> int:
    """SQLite transactions so far, from the backlog's own counters (``stats().backlog``)."""
    backlog = sched.stats().backlog
    return 0 if backlog is None else backlog.commits


async def _until_stored(sched: Scheduler, done: int) -> None:
    """Until ``done`` outcomes are committed (the jobs have already run)."""
    while True:
        counts = await sched.backlog_counts()
        if counts[LANE].get("done", 0) >= done:
            return
        await asyncio.sleep(0.005)


async def _counts_after(path: str) -> dict[str, int]:
    backlog = SQLiteBacklog(path)
    await backlog.open()
    try:
        return (await backlog.counts()).get(LANE, {})
    finally:
        await backlog.close()


def main(argv: Sequence[str]) -> int:
    match list(argv):
        case ["fill", path, n]:
            result = asyncio.run(fill(path, int(n)))
        case ["hold", path, n, paused_s, drain, drain_s]:
            result = asyncio.run(hold(path, int(n), float(paused_s), int(drain), float(drain_s)))
        case _:
            print(__doc__, file=sys.stderr)
            return 2
    result["pid"] = os.getpid()
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
