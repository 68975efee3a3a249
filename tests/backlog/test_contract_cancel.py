"""Cancellation in the Backlog contract, against every backend (see conftest.BACKENDS)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from scheduler import JobState
from scheduler.backlog import Backlog, Outcome
from scheduler.backlog.base import CANCELLED_ERROR
from tests.backlog.helpers import new_job

OWNER = "worker-a"


async def _claim(backlog: Backlog, now: float = 1.0, lease: float = 10.0) -> list[str]:
    got = await backlog.claim("batch", 10, owner=OWNER, lease_seconds=lease, now=now)
    return [r.id for r in got]


async def test_a_queued_job_is_cancelled_at_once_and_never_claimed(backlog: Backlog) -> None:
    [a, b] = await backlog.submit([new_job(1), new_job(2)], now=0)
    assert await backlog.cancel(a.id, now=0.5) is JobState.QUEUED
    got = await backlog.get(a.id)
    assert got is not None
    assert (got.state, got.error, got.updated_at) == (JobState.CANCELLED, CANCELLED_ERROR, 0.5)
    assert await backlog.queued_count("batch") == 1
    assert await _claim(backlog) == [b.id]
    assert await _claim(backlog, now=5) == []
    assert (await backlog.counts())["batch"] == {"cancelled": 1, "running": 1}


async def test_finished_jobs_are_left_as_they_are_and_unknown_ids_answer_none(
    backlog: Backlog,
) -> None:
    [a, b] = await backlog.submit([new_job(1), new_job(2)], now=0)
    await _claim(backlog)
    await backlog.complete(
        [Outcome.done(a.id, OWNER), Outcome.dead(b.id, OWNER, error="boom")], now=2
    )
    assert await backlog.cancel(a.id, now=3) is JobState.DONE
    assert await backlog.cancel(b.id, now=3) is JobState.DEAD
    done, dead = await backlog.get(a.id), await backlog.get(b.id)
    assert done is not None
    assert dead is not None
    assert (done.state, done.updated_at, done.cancel_requested_at) == (JobState.DONE, 2, None)
    assert (dead.state, dead.error) == (JobState.DEAD, "boom")
    assert await backlog.cancel("no-such-job", now=3) is None
    [c] = await backlog.submit([new_job(3)], now=0)
    await backlog.cancel(c.id, now=1)
    assert await backlog.cancel(c.id, now=2) is JobState.CANCELLED  # again: a no-op


async def test_a_running_job_gets_a_request_its_lease_holder_ends(backlog: Backlog) -> None:
    [a, b] = await backlog.submit([new_job(1), new_job(2)], now=0)
    await _claim(backlog)
    assert await backlog.cancel_requested([a.id, b.id]) == []
    assert await backlog.cancel(a.id, now=2) is JobState.RUNNING
    assert await backlog.cancel(a.id, now=3) is JobState.RUNNING  # asked once
    running = await backlog.get(a.id)
    assert running is not None
    assert (running.state, running.cancel_requested_at) == (JobState.RUNNING, 2)
    assert await backlog.cancel_requested([a.id, b.id, "nope"]) == [a.id]
    assert await backlog.complete([Outcome.cancelled(a.id, OWNER, attempt=1)], now=4) == 1
    ended = await backlog.get(a.id)
    assert ended is not None
    assert (ended.state, ended.error, ended.lease_owner) == (
        JobState.CANCELLED,
        CANCELLED_ERROR,
        None,
    )
    assert await backlog.cancel_requested([a.id]) == []


@pytest.mark.parametrize("ending", ["retry", "release", "lease expiry"])
async def test_a_job_asked_to_stop_is_never_queued_again(backlog: Backlog, ending: str) -> None:
    [a] = await backlog.submit([new_job(1, max_attempts=5)], now=0)
    await _claim(backlog, lease=5)
    await backlog.cancel(a.id, now=0)  # asked at time 0: a request all the same
    if ending == "retry":
        outcome = Outcome.retry(a.id, OWNER, run_at=3, error="busy")
        assert await backlog.complete([outcome], now=2) == 1
    elif ending == "release":
        assert await backlog.release([a.id], owner=OWNER, now=2) == 1
    assert await _claim(backlog, now=100) == []  # the lease ran out long ago
    ended = await backlog.get(a.id)
    assert ended is not None
    assert ended.state is JobState.CANCELLED
    assert await backlog.queued_count("batch") == 0


async def test_a_job_that_finished_before_it_heard_keeps_its_outcome(backlog: Backlog) -> None:
    [a] = await backlog.submit([new_job(1)], now=0)
    await _claim(backlog)
    await backlog.cancel(a.id, now=2)
    await backlog.complete([Outcome.done(a.id, OWNER, '"r"')], now=3)
    done = await backlog.get(a.id)
    assert done is not None
    assert (done.state, done.result) == (JobState.DONE, "r")


async def test_cancel_task_reaches_every_live_job_of_the_task(backlog: Backlog) -> None:
    jobs = await backlog.submit(
        [new_job(1, task="t.a"), new_job(2, task="t.a"), new_job(3, task="t.b")], now=0
    )
    [first] = await backlog.claim("batch", 1, owner=OWNER, lease_seconds=10, now=1)
    assert first.id == jobs[0].id
    assert await backlog.cancel_task("t.a", now=2) == 2  # one cancelled, one asked to stop
    assert await backlog.cancel_task("t.a", now=3) == 0
    states = [(await backlog.get(j.id)).state for j in jobs]  # type: ignore[union-attr]
    assert states == [JobState.RUNNING, JobState.CANCELLED, JobState.QUEUED]
    assert await backlog.cancel_requested([j.id for j in jobs]) == [jobs[0].id]


async def test_requeue_leaves_cancelled_jobs_alone(backlog: Backlog) -> None:
    [a] = await backlog.submit([new_job(1)], now=0)
    await backlog.cancel(a.id, now=1)
    assert await backlog.requeue(a.id, now=2) == 0
    assert await backlog.requeue(all_dead=True, now=2) == 0


async def test_purge_deletes_old_cancelled_jobs(backlog: Backlog) -> None:
    [a, b] = await backlog.submit([new_job(1), new_job(2)], now=0)
    await backlog.cancel(a.id, now=1)
    await backlog.cancel(b.id, now=5)
    assert await backlog.purge(finished_before=3) == 1
    assert await backlog.get(a.id) is None
    assert await backlog.get(b.id) is not None


async def test_a_cancel_racing_claims_leaves_exactly_one_answer(
    make_backlog: Callable[[], Backlog], backend: str
) -> None:
    """Claims from another connection race the cancels: each job is either claimed
    (then its cancel says RUNNING) or cancelled unclaimed (QUEUED), never both."""
    one = make_backlog()
    await one.open()
    two = one  # the memory backlog lives in one object: both sides share it
    if backend != "memory":
        two = make_backlog()
        await two.open()
    jobs = await one.submit([new_job(i) for i in range(60)], now=0)

    async def claims() -> set[str]:
        taken: set[str] = set()
        for _ in range(30):
            got = await two.claim("batch", 2, owner="other", lease_seconds=10, now=1)
            taken |= {r.id for r in got}
            await asyncio.sleep(0)
        return taken

    async def cancels() -> dict[str, JobState | None]:
        answers: dict[str, JobState | None] = {}
        for job in jobs:
            answers[job.id] = await one.cancel(job.id, now=1)
            await asyncio.sleep(0)
        return answers

    taken, answers = await asyncio.gather(claims(), cancels())
    for job in jobs:
        expected = JobState.RUNNING if job.id in taken else JobState.QUEUED
        assert answers[job.id] is expected
    assert await one.queued_count("batch") == 0
