"""Crash test: a real worker process killed with SIGKILL, again and again, loses nothing."""

from __future__ import annotations

import asyncio
import collections
import signal
import sys
from pathlib import Path

import pytest

from scheduler import JobState, Lane, Scheduler
from scheduler.backlog import SQLiteBacklog
from scheduler.testing import eventually

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
JOBS = 300
KILLS = 8


def start_worker(db: Path, log: Path, *extra: str) -> asyncio.subprocess.Process:
    return asyncio.create_subprocess_exec(  # type: ignore[return-value]
        sys.executable, "-m", "tests.procs.crash_worker", str(db), str(log), *extra, cwd=REPO
    )


def runs(log: Path) -> list[str]:
    if not log.exists():
        return []
    return [line.split()[0] for line in log.read_text().splitlines() if line.strip()]


async def wait_for_runs(log: Path, at_least: int, proc: asyncio.subprocess.Process) -> None:
    """Until ``at_least`` runs are logged, or the worker died (the caller says so)."""
    await eventually(
        lambda: len(runs(log)) >= at_least or proc.returncode is not None,
        timeout=10,
        interval=0.005,
    )


async def test_sigkill_at_many_points_loses_nothing_and_reruns_only_leased_jobs(
    tmp_path: Path,
) -> None:
    db, log = tmp_path / "crash.db", tmp_path / "runs.log"
    submitter = Scheduler(str(db), lanes=[Lane("batch", 8, durable=True)], shutdown_grace=0)

    async def work(i: int) -> int:
        return i

    submitter.task(name="crash.work")(work)
    async with submitter.open(run=()):
        submitted = [await submitter.submit("crash.work", i) for i in range(JOBS)]
    ids = {job.id for job in submitted}

    leased_at_a_kill: set[str] = set()
    step = JOBS // (KILLS + 2)
    for k in range(KILLS):
        proc = await start_worker(db, log)
        await wait_for_runs(log, (k + 1) * step, proc)
        assert proc.returncode is None, "the worker must still be running when killed"
        proc.send_signal(signal.SIGKILL)
        assert await proc.wait() == -signal.SIGKILL
        async with SQLiteBacklog(db) as backlog:
            running = await backlog.list_jobs(JobState.RUNNING, limit=JOBS)
        leased_at_a_kill |= {r.id for r in running}

    final = await start_worker(db, log, "--until-done")
    assert await asyncio.wait_for(final.wait(), 60) == 0

    async with SQLiteBacklog(db) as backlog:
        records = await backlog.list_jobs(limit=JOBS + 10)
    by_id = {r.id: r for r in records}
    assert set(by_id) == ids, "no job is missing and none was invented"
    assert {r.state for r in records} == {JobState.DONE}
    assert all(by_id[job.id].result == i for i, job in enumerate(submitted))

    counts = collections.Counter(runs(log))
    assert set(counts) == ids, "every job ran"
    rerun = {job_id for job_id, n in counts.items() if n > 1}
    assert rerun <= leased_at_a_kill, "only jobs leased at a kill ran twice"
    assert leased_at_a_kill, "the kills landed while jobs were running"
