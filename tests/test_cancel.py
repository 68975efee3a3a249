"""Cancelling durable jobs through the scheduler: queued, running here, running in
another scheduler on the same backlog; finished jobs and unknown ids (fake clock)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from scheduler import FakeClock, JobCancelled, JobState, UnknownJob
from tests.test_durable import durable_sched, until


@pytest.fixture(params=["memory", "sqlite"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return ":memory:" if request.param == "memory" else str(tmp_path / "jobs.db")


async def test_a_queued_job_never_starts_and_its_waiters_hear_why(target: str) -> None:
    clock = FakeClock()
    sched = durable_sched(target, clock)
    started: list[int] = []

    @sched.task(lane="batch")
    async def work(n: int) -> int:
        started.append(n)
        return n

    async with sched.open(run=()):  # nothing drains: the job stays queued
        job = await work.submit(1)
        waiter = asyncio.create_task(job.result(timeout=60))
        await asyncio.sleep(0.01)
        assert await job.cancel() is True
        with pytest.raises(JobCancelled, match="cancelled on request"):
            await waiter
        assert (await sched.job(job.id)).state is JobState.CANCELLED
        assert sched.stats().lanes["batch"].cancelled == 1
        assert (await sched.backlog_counts())["batch"] == {"cancelled": 1}
    async with sched:  # now it drains: the cancelled job does not run
        other = await work.submit(2)
        await until(lambda: started, clock)
        assert await other.result(timeout=5) == 2
    assert started == [2]


async def test_a_running_job_is_cancelled_cooperatively_and_not_retried(target: str) -> None:
    clock = FakeClock()
    sched = durable_sched(target, clock)
    began, cleaned = asyncio.Event(), []

    @sched.task(lane="batch")
    async def slow() -> None:
        began.set()
        try:
            await clock.sleep(3600)
        finally:
            cleaned.append(True)

    async with sched:
        job = await slow.submit()
        await until(began.is_set, clock)
        assert await sched.cancel(job.id) is True
        with pytest.raises(JobCancelled):
            await job.result(timeout=5)
        ended = await sched.job(job.id)
        assert (ended.state, ended.attempts) == (JobState.CANCELLED, 1)
        assert cleaned == [True]
        await clock.advance_and_settle(60)  # no retry comes
        assert (await sched.job(job.id)).state is JobState.CANCELLED
        assert sched.stats().lanes["batch"].cancelled == 1


async def test_finished_jobs_answer_false_and_unknown_ids_raise(target: str) -> None:
    clock = FakeClock()
    sched = durable_sched(target, clock)

    @sched.task(lane="batch")
    async def quick() -> str:
        return "ok"

    async with sched:
        job = await quick.submit()
        assert await job.result(timeout=5) == "ok"
        assert await job.cancel() is False
        assert (await sched.job(job.id)).state is JobState.DONE
        with pytest.raises(UnknownJob):
            await sched.cancel("no-such-job")


async def test_a_job_running_in_another_scheduler_stops_within_a_poll(tmp_path: Path) -> None:
    """Two schedulers share one SQLite file: the one running the job hears the
    request by its poll (a quarter second of its clock) and cancels the task."""
    target = str(tmp_path / "shared.db")
    clock = FakeClock()
    worker, web = durable_sched(target, clock), durable_sched(target, clock)
    began = asyncio.Event()

    for sched in (worker, web):

        @sched.task(lane="batch", name="tests.cancel.slow")
        async def slow() -> None:
            began.set()
            await clock.sleep(3600)

    async with worker, web.open(run=()):
        job = await web.submit("tests.cancel.slow")
        await until(began.is_set, clock, step=0.05)
        asked_at = clock.now()
        assert await web.cancel(job.id) is True
        await until(lambda: worker.stats().lanes["batch"].cancelled == 1, clock, step=0.05)
        assert clock.now() - asked_at <= 0.5
        for _ in range(500):  # the worker writes the outcome a moment later (real I/O)
            if (await web.job(job.id)).state is JobState.CANCELLED:
                break
            await asyncio.sleep(0.002)
            await clock.advance_and_settle(0.01)
        with pytest.raises(JobCancelled):
            await job.result(timeout=5)


async def test_cancel_task_reaches_queued_and_running_jobs(target: str) -> None:
    clock = FakeClock()
    sched = durable_sched(target, clock)
    began = asyncio.Event()

    @sched.task(lane="batch")
    async def slow(n: int) -> None:
        began.set()
        await clock.sleep(3600)

    async with sched:
        jobs = [await slow.submit(n) for n in range(5)]
        await until(began.is_set, clock)
        assert await sched.cancel_task(slow.name) == 5
        for job in jobs:
            with pytest.raises(JobCancelled):
                await job.result(timeout=5)
