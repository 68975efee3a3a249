"""Durable jobs end to end: submit, run, retry, dead, requeue, leases, across schedulers."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from scheduler import (
    BacklogOptions,
    ConfigError,
    FakeClock,
    JobFailed,
    JobState,
    Lane,
    Overloaded,
    RetryPolicy,
    Scheduler,
    SchedulerClosed,
    UnknownJob,
    UnknownTask,
    current_job,
)
from scheduler.backlog import SQLiteBacklog
from tests.helpers import settle

OPTIONS = BacklogOptions(lease=10.0, poll_interval=0.5, heartbeat=2.0)


@pytest.fixture(params=["memory", "sqlite"])
def backlog_target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return ":memory:" if request.param == "memory" else str(tmp_path / "jobs.db")


def durable_sched(target: str, clock: FakeClock | None = None, **kw: object) -> Scheduler:
    kw.setdefault("shutdown_grace", 0)
    return Scheduler(
        target,
        lanes=[Lane("interactive", 4), Lane("batch", 2, durable=True, gated=True)],
        clock=clock,
        backlog_options=OPTIONS,
        **kw,  # type: ignore[arg-type]
    )


async def until(
    check: Callable[[], object],
    clock: FakeClock | None = None,
    step: float = 0.5,
    rounds: int = 200,
) -> None:
    """Drive the loop (and the fake clock, if given) until ``check()`` is true.

    Each round first gives the backlog's I/O thread a moment (2 ms), so fake
    time does not race ahead of a write that is still in flight.
    """
    give_up = time.monotonic() + 20.0  # real seconds: a loaded machine's I/O is slow
    for done in range(100_000):  # bounded: at least ``rounds``, at most 20 s
        if check():
            return
        if done >= rounds and time.monotonic() > give_up:
            break
        await asyncio.sleep(0.002)
        if clock is not None and done < rounds:
            await clock.advance_and_settle(step)
    raise AssertionError("condition never became true")


async def test_submit_runs_the_job_and_stores_its_result(backlog_target: str) -> None:
    sched = durable_sched(backlog_target)
    seen: list[tuple[str, int]] = []

    @sched.task(lane="batch")
    async def summarize(doc: str, words: int) -> dict[str, object]:
        ctx = current_job()
        seen.append((ctx.id, ctx.attempt))
        return {"doc": doc, "words": words}

    async with sched:
        job = await summarize.submit("doc-1", 3, priority=5, key="doc-1")
        assert isinstance(job.id, str)
        assert job.state is JobState.QUEUED
        assert job.task.endswith("summarize")
        assert await job.result(timeout=5) == {"doc": "doc-1", "words": 3}
        again = await sched.job(job.id)
        assert again.state is JobState.DONE
        assert again.attempts == 1
    assert seen == [(job.id, 1)]
    assert sched.stats()["batch"].completed == 1


async def test_args_must_be_json_and_nothing_is_stored_otherwise(backlog_target: str) -> None:
    sched = durable_sched(backlog_target)

    @sched.task
    async def work(x: object) -> None:
        return None

    async with sched.open(run=()):
        with pytest.raises(TypeError, match=r"argument 0 \(set\) is not JSON-serializable"):
            await work.submit({1, 2})
        with pytest.raises(TypeError, match="not JSON"):
            await sched.submit(work, float("nan"))
        assert await sched.jobs() == []


async def test_same_key_gives_back_the_same_job(backlog_target: str) -> None:
    sched = durable_sched(backlog_target)

    @sched.task
    async def work(x: int) -> int:
        return x

    async with sched.open(run=()):
        first = await work.submit(1, key="k")
        second = await work.submit(2, key="k")
        assert second.id == first.id
        assert len(await sched.jobs()) == 1


async def test_failures_retry_with_persisted_run_at_then_succeed(
    backlog_target: str, clock: FakeClock
) -> None:
    sched = durable_sched(backlog_target, clock)
    calls: list[float] = []

    @sched.task(retry=RetryPolicy(max_attempts=3, base=4.0, jitter="none"))
    async def flaky() -> str:
        calls.append(clock.wall())
        if len(calls) < 3:
            raise ConnectionError(f"upstream hiccup {len(calls)}")
        return "ok"

    async with sched:
        job = await flaky.submit()
        await until(lambda: len(calls) == 1, clock)
        for _ in range(100):  # the outcome is written by the completion batcher
            stored = await sched.job(job.id)
            if stored.state is not JobState.RUNNING:
                break
            await settle()
        assert stored.state is JobState.QUEUED
        assert stored.error == "ConnectionError: upstream hiccup 1"
        assert stored.run_at == pytest.approx(calls[0] + 4.0)
        await until(lambda: len(calls) == 3, clock)
        assert await job.result(timeout=5) == "ok"
    assert calls[1] - calls[0] >= 4.0
    assert calls[2] - calls[1] >= 8.0


async def test_last_failure_makes_the_job_dead_and_requeue_revives_it(
    backlog_target: str, clock: FakeClock
) -> None:
    sched = durable_sched(backlog_target, clock)
    attempts: list[int] = []
    healthy = False

    @sched.task(retry=RetryPolicy(max_attempts=2, base=1.0, jitter="none"))
    async def fragile() -> str:
        attempts.append(current_job().attempt)
        if not healthy:
            raise RuntimeError("still broken")
        return "fixed"

    async with sched:
        job = await fragile.submit()
        task = asyncio.create_task(job.result())
        await until(task.done, clock)
        with pytest.raises(JobFailed, match="still broken") as info:
            await task
        assert info.value.attempts == 2
        dead = await sched.jobs("dead")
        assert [d.id for d in dead] == [job.id]
        assert dead[0].traceback is not None
        assert "RuntimeError: still broken" in dead[0].traceback
        healthy = True
        assert await sched.requeue(job.id) == 1
        task = asyncio.create_task(job.result())
        await until(task.done, clock)
        assert task.result() == "fixed"
    assert attempts == [1, 2, 1]


async def test_a_closed_gate_delays_durable_work_without_using_attempts(
    backlog_target: str, clock: FakeClock
) -> None:
    sched = durable_sched(backlog_target, clock)
    ran: list[str] = []

    @sched.task
    async def work(tag: str) -> None:
        ran.append(tag)

    async with sched:
        sched.gate.pause("provider outage")
        job = await work.submit("a")
        for _ in range(10):
            await clock.advance_and_settle(1.0)
        assert ran == []
        stored = await sched.job(job.id)
        assert (stored.state, stored.attempts) == (JobState.QUEUED, 0)
        sched.gate.resume()
        await until(lambda: ran == ["a"], clock)


async def test_durable_lane_max_queued_is_enforced(tmp_path: Path) -> None:
    sched = Scheduler(
        str(tmp_path / "q.db"),
        lanes=[Lane("batch", 1, 3, durable=True)],
        shutdown_grace=0,
    )

    @sched.task
    async def work(i: int) -> None:
        return None

    async with sched.open(run=()):
        for i in range(3):
            await work.submit(i)
        with pytest.raises(Overloaded) as info:
            await work.submit(99)
        assert info.value.lane == "batch"
        assert len(await sched.jobs()) == 3


async def test_unknown_task_at_run_time_goes_dead_with_the_reason(tmp_path: Path) -> None:
    db = str(tmp_path / "jobs.db")
    submitter = durable_sched(db)

    @submitter.task(name="reports.build")
    async def build() -> None:
        return None

    async with submitter.open(run=()):
        job = await build.submit()
    drainer = durable_sched(db)  # this process never registered reports.build
    async with drainer:
        with pytest.raises(JobFailed, match=r"unknown task 'reports.build'"):
            await (await drainer.job(job.id)).result(timeout=5)
    with pytest.raises(UnknownTask):
        async with drainer.open(run=()):
            await drainer.submit("reports.build")


async def test_shutdown_releases_the_lease_of_an_unfinished_job(tmp_path: Path) -> None:
    db = str(tmp_path / "jobs.db")
    sched = durable_sched(db)
    started = asyncio.Event()

    @sched.task
    async def slow() -> None:
        started.set()
        await asyncio.Event().wait()

    async with sched:
        job = await slow.submit()
        await started.wait()
    async with SQLiteBacklog(db) as backlog:
        record = await backlog.get(job.id)
    assert record is not None
    assert (record.state, record.attempts, record.lease_owner) == (JobState.QUEUED, 0, None)


async def test_a_dead_workers_lease_expires_and_the_job_runs_again(
    tmp_path: Path, clock: FakeClock
) -> None:
    db = str(tmp_path / "jobs.db")
    sched = durable_sched(db, clock)
    ran: list[int] = []

    @sched.task
    async def work() -> str:
        ran.append(current_job().attempt)
        return "done"

    async with sched.open(run=()):
        job = await work.submit()
    # another worker claims it and dies without a word
    async with SQLiteBacklog(db) as backlog:
        claimed = await backlog.claim(
            "batch", 1, owner="dead-worker", lease_seconds=10.0, now=clock.wall()
        )
        assert [c.id for c in claimed] == [job.id]
    async with sched:
        await clock.advance_and_settle(9.0)
        assert ran == []
        await until(lambda: ran, clock)
        assert await (await sched.job(job.id)).result(timeout=5) == "done"
    assert ran == [2]


async def test_a_web_app_submits_and_a_worker_scheduler_drains_one_file(tmp_path: Path) -> None:
    db = str(tmp_path / "shared.db")
    web = durable_sched(db)
    worker = durable_sched(db)

    async def double(x: int) -> int:
        return 2 * x

    web.task(name="double")(double)
    worker.task(name="double")(double)
    async with web.open(run=()), worker.open(run=("batch",)):
        jobs = [await web.submit("double", i) for i in range(20)]
        results = [await job.result(timeout=10) for job in jobs]
    assert results == [2 * i for i in range(20)]


async def test_result_timeout_raises_timeouterror_and_the_job_keeps_going(
    backlog_target: str, clock: FakeClock
) -> None:
    sched = durable_sched(backlog_target, clock)
    release = asyncio.Event()

    @sched.task
    async def slow() -> str:
        await release.wait()
        return "late"

    async with sched:
        job = await slow.submit()
        waiting = asyncio.create_task(job.result(timeout=3))
        await until(waiting.done, clock)
        with pytest.raises(TimeoutError, match="keeps going"):
            await waiting
        release.set()
        await settle()
        task = asyncio.create_task(job.result())
        await until(task.done, clock)
        assert task.result() == "late"


async def test_bad_calls_get_clear_errors(backlog_target: str) -> None:
    sched = durable_sched(backlog_target)

    @sched.task(lane="interactive")
    async def memory_only() -> None:
        return None

    @sched.task
    async def work() -> None:
        return None

    with pytest.raises(SchedulerClosed, match="open scheduler"):
        await work.submit()
    async with sched.open(run=()):
        with pytest.raises(ConfigError, match="not durable"):
            await memory_only.submit()
        with pytest.raises(UnknownJob):
            await sched.job("nope")
        with pytest.raises(TypeError, match="job ids are str"):
            await sched.job(42)  # type: ignore[arg-type]
        with pytest.raises(ConfigError, match="unknown job state"):
            await sched.jobs("exploded")
        with pytest.raises(ConfigError, match="run_at= or delay="):
            await work.submit(run_at=1.0, delay=1.0)
        with pytest.raises(TypeError, match="key must be"):
            await work.submit(key=5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="coroutine function"):

        @sched.task
        def not_async() -> None:
            return None


async def test_results_must_be_json(backlog_target: str) -> None:
    sched = durable_sched(backlog_target)

    @sched.task
    async def returns_a_set() -> set[int]:
        return {1}

    async with sched:
        job = await returns_a_set.submit()
        with pytest.raises(JobFailed, match="not JSON-serializable"):
            await job.result(timeout=5)
    assert json.dumps([1]) == "[1]"


async def test_an_empty_claim_right_after_work_looks_again_soon_then_backs_off(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # an empty claim while work was flowing most likely met the lane's ceiling,
    # full with other processes' leases (they end within moments): looking again
    # only after poll_interval would leave the seat they free unused for that long
    from scheduler.backlog import MemoryBacklog

    claims: list[float] = []
    for name in ("claim", "complete_and_claim"):
        original = getattr(MemoryBacklog, name)

        def counted(*args: object, _original: Any = original, **kwargs: object) -> Any:
            claims.append(clock.now())
            return _original(*args, **kwargs)

        monkeypatch.setattr(MemoryBacklog, name, counted)
    sched = durable_sched(":memory:", clock)

    @sched.task(lane="batch")
    async def work() -> None:
        return None

    async with sched:
        job = await work.submit()
        await until(lambda: sched.stats()["batch"].completed == 1, clock, step=0.01)
        await until(lambda: len(claims) >= 2, clock, step=0.01)
        start = len(claims) - 1  # the first claim that found nothing
        for _ in range(300):  # 3 s of fake time in small steps
            await clock.advance_and_settle(0.01)
        gaps = [round(b - a, 2) for a, b in itertools.pairwise(claims[start:])]
        assert (await sched.job(job.id)).state is JobState.DONE
    assert gaps[0] <= 0.11, gaps  # soon after the work ...
    assert all(a <= b + 0.02 for a, b in itertools.pairwise(gaps)), gaps  # ... then longer ...
    assert all(abs(gap - 0.5) <= 0.02 for gap in gaps[4:]), gaps  # ... up to poll_interval


async def test_a_job_cancelled_before_its_first_step_still_gives_its_seat_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cancel that reaches a just-claimed job before its task first runs (the
    scheduler stopping at that moment) must not cancel a task whose body never ran:
    the body is what gives the seat and the lease back. Here every claimed job's
    ticket is cancelled as soon as its task is made; the jobs still all end and
    the scheduler closes."""
    from scheduler import durable

    original = durable.DurableRunner._start_job

    def start_then_cancel(self: Any, record: Any, ticket: Any) -> None:
        original(self, record, ticket)
        ticket.cancel_task("shutdown")  # before the task's first step

    monkeypatch.setattr(durable.DurableRunner, "_start_job", start_then_cancel)
    sched = Scheduler(
        str(tmp_path / "jobs.db"), lanes=[Lane("batch", 1, durable=True)],
        backlog_options=OPTIONS, shutdown_grace=0,
    )  # fmt: skip
    ran: list[int] = []

    @sched.task(name="t.work")
    async def work(i: int) -> int:
        ran.append(i)
        return i

    async with sched.open(run=()):
        jobs = [await work.submit(i) for i in range(3)]
    async with asyncio.timeout(20), sched:  # bounded: a leaked seat would hang here
        results = [await job.result(timeout=15) for job in jobs]
    assert results == [0, 1, 2]
    assert sorted(ran) == [0, 1, 2]
