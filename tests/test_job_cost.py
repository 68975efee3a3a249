"""A job's own ``cost``: stored at submit, drawn by whichever worker runs it."""

from __future__ import annotations

import math

import pytest

from scheduler import BacklogOptions, ConfigError, FakeClock, JobState, Lane, Scheduler
from scheduler.tasks import Task
from scheduler.testing import wait_all_tasks_blocked
from scheduler.upstream import Upstream, UpstreamHealth


def make_scheduler(
    clock: FakeClock, *, task_cost: float
) -> tuple[Scheduler, Task[[int], int], list[int]]:
    """A gated durable lane running one job at a time in front of ``llm`` (600 TPM: 10
    tokens/s, 600 at most, 60 of them kept for interactive work)."""
    sched = Scheduler(
        ":memory:",
        lanes=[Lane("batch", 1, durable=True, gated=True)],
        clock=clock,
        upstreams=[Upstream("llm", tpm=600, burst=60.0)],
        backlog_options=BacklogOptions(poll_interval=0.5),
        shutdown_grace=0,
    )
    ran: list[int] = []

    @sched.task(name="tests.ask", upstream="llm", cost=task_cost)
    async def ask(i: int) -> int:
        ran.append(i)
        return i

    return sched, ask, ran


def tpm_level(health: UpstreamHealth) -> float:
    bucket = health._tpm
    assert bucket is not None
    return bucket.level


async def test_the_cost_given_at_submit_is_stored_with_the_job(clock: FakeClock) -> None:
    sched, task, _ = make_scheduler(clock, task_cost=10)
    async with sched.open(run=()):
        job = await task.submit(1, cost=1200)
        default = await sched.submit("tests.ask", 2)
        assert job.cost == 1200.0
        assert (await sched.job(job.id)).cost == 1200.0
        assert default.cost is None
        assert (await sched.job(default.id)).cost is None
        assert (await task.submit(3, cost=0)).cost == 0.0


@pytest.mark.parametrize(
    ("cost", "error"),
    [(-1, ConfigError), (math.inf, ConfigError), (math.nan, ConfigError), ("5", TypeError),
     (True, TypeError)],
)  # fmt: skip
async def test_a_bad_cost_is_refused_before_anything_is_stored(
    clock: FakeClock, cost: object, error: type[Exception]
) -> None:
    sched, _, _ = make_scheduler(clock, task_cost=10)
    async with sched.open(run=()):
        with pytest.raises(error, match="cost"):
            await sched.submit("tests.ask", 1, cost=cost)  # type: ignore[arg-type]
        assert await sched.jobs() == []


async def test_the_runner_draws_the_jobs_cost_not_the_tasks(clock: FakeClock) -> None:
    sched, _, ran = make_scheduler(clock, task_cost=10)
    async with sched:
        jobs = [await sched.submit("tests.ask", i, cost=300) for i in range(4)]
        await wait_all_tasks_blocked()
        # 600 -> 300 -> 0: a third job would leave less than the 60-token reserve
        assert ran == [0, 1]
        health = sched.gate.upstream("llm")
        assert health.blocked() == "tpm"
        assert tpm_level(health) == pytest.approx(0)  # exactly the two jobs' 600 tokens
        await clock.advance_and_settle(5.9)
        assert ran == [0, 1]  # 59 tokens back: still under the reserve
        await clock.advance_and_settle(0.2)
        assert ran == [0, 1, 2]  # 61 tokens: it starts and draws its 300 in full (debt)
        await clock.advance_and_settle(29.0)
        assert ran == [0, 1, 2], "the debt of 239 plus the 60 reserve takes 30 s to repay"
        await clock.advance_and_settle(5, step=1)
        assert sorted(ran) == [0, 1, 2, 3]
        assert {(await sched.job(j.id)).state for j in jobs} == {JobState.DONE}


async def test_a_job_without_cost_draws_the_tasks_and_zero_is_a_cost(clock: FakeClock) -> None:
    sched, _, ran = make_scheduler(clock, task_cost=300)
    async with sched:
        await sched.submit("tests.ask", 0)  # the task's 300
        await sched.submit("tests.ask", 1, cost=0)  # its own 0, not the task's 300
        await sched.submit("tests.ask", 2, cost=0)
        await sched.submit("tests.ask", 3)  # the task's 300: 600 - 300 - 300 = 0
        await sched.submit("tests.ask", 4, cost=0)  # blocked: the bucket is under the reserve
        await wait_all_tasks_blocked()
        assert ran == [0, 1, 2, 3]
        health = sched.gate.upstream("llm")
        assert health.blocked() == "tpm"
        assert tpm_level(health) == pytest.approx(0)
