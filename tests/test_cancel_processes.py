"""Cancel a job running in another worker process (real subprocesses, real SQLite file
and PostgreSQL): the worker holding the lease stops it within a second, CANCELLED."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from scheduler import JobCancelled, JobState
from scheduler.testing import eventually
from tests.procs.worker_app import make_scheduler

from .worker_helpers import WorkerProcess, ends, starts

pytestmark = pytest.mark.slow

APP = "tests.procs.worker_app:sched"


@pytest.fixture(params=["sqlite", "postgres"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A SQLite file, or a DSN on a fresh PostgreSQL schema (conftest's ``dsn``)."""
    if request.param == "sqlite":
        return str(tmp_path / "jobs.db")
    return str(request.getfixturevalue("dsn"))


async def test_cancel_reaches_a_job_running_in_another_worker(target: str, tmp_path: Path) -> None:
    runlog = tmp_path / "runs.log"
    sched = make_scheduler(target)
    async with sched.open(run=()):
        job = await sched.submit("test.block", 1)
        waiting = await sched.submit("test.block", 2)
        worker = await WorkerProcess.start(
            "worker", "--app", APP, "--backlog", target, "--grace", "10",
            env={"FLOODGATE_TEST_RUNLOG": str(runlog)},
        )  # fmt: skip
        try:
            await worker.wait_event("worker.ready")
            await eventually(lambda: len(starts(runlog)) == 2, timeout=15)
            asked = time.monotonic()
            assert await job.cancel() is True
            for _ in range(200):  # bounded: 2 s at most
                if (await sched.job(job.id)).state is JobState.CANCELLED:
                    break
                await asyncio.sleep(0.01)
            took = time.monotonic() - asked
            assert (await sched.job(job.id)).state is JobState.CANCELLED
            assert took < 1.0, f"the worker took {took:.2f}s to cancel the job"
            with pytest.raises(JobCancelled):
                await job.result(timeout=1)
            assert job.id not in ends(runlog)  # cancelled mid-wait, it never returned
            assert (await sched.job(waiting.id)).state is JobState.RUNNING  # the other runs on
            assert await waiting.cancel() is True
            with pytest.raises(JobCancelled):
                await waiting.result(timeout=2)
            await asyncio.sleep(0.5)  # no retry, no second start
            assert starts(runlog) == {job.id: 1, waiting.id: 1}
        finally:
            worker.proc.terminate()
            await worker.wait()
            worker.kill()
