"""Stopping while the backlog cannot be written (a full disk): the grace still holds.

Outcomes that cannot be saved by the end of the grace (or by a second signal)
are logged once (``backlog.outcomes_unsaved``) and left to their leases: the
jobs run again later, nothing is lost.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path
from typing import Any

import pytest

from scheduler import BacklogOptions, FakeClock, Job, JobState, Lane, Scheduler
from scheduler.backlog import BacklogFull, JobRecord, SQLiteBacklog
from scheduler.testing import eventually
from tests.procs import full_backlog_app

from .worker_helpers import WorkerProcess, starts

OPTIONS = BacklogOptions(lease=10.0, heartbeat=2.0, poll_interval=0.5)


def batch_sched(db: str, clock: FakeClock, ran: list[int], grace: float) -> Scheduler:
    sched = Scheduler(
        db,
        lanes=[Lane("batch", 2, durable=True)],
        clock=clock,
        backlog_options=OPTIONS,
        shutdown_grace=grace,
    )

    @sched.task(name="full.work")
    async def work(i: int) -> int:
        ran.append(i)
        return i * 10

    return sched


def fill_the_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every write of an outcome fails the way a full disk makes it fail."""

    async def full(self: SQLiteBacklog, *args: Any, **kwargs: Any) -> Any:
        raise BacklogFull(
            f"backlog {self.path!r}: disk or database full (database or disk is full); "
            "nothing stored"
        )

    monkeypatch.setattr(SQLiteBacklog, "complete", full)
    monkeypatch.setattr(SQLiteBacklog, "complete_and_claim", full)


def events(caplog: pytest.LogCaptureFixture, name: str) -> list[dict[str, Any]]:
    return [r.msg for r in caplog.records if isinstance(r.msg, dict) and r.msg.get("event") == name]


async def drive(clock: FakeClock, seconds: float) -> None:
    """Fake time in 0.5 s steps, each after a real moment for the backlog's I/O thread.

    The stop writes to SQLite in a thread, which ``wait_all_tasks_blocked()`` (in
    ``advance_and_settle``) counts as blocked: without the moment, fake time
    would run past the grace before the stop had set its timer for it.
    """
    for _ in range(round(seconds / 0.5)):
        await asyncio.sleep(0.002)
        await clock.advance_and_settle(0.5)


async def stored(db: str) -> dict[str, JobRecord]:
    async with SQLiteBacklog(db) as backlog:
        return {r.id: r for r in await backlog.list_jobs(limit=100)}


async def rerun_after_space_returns(db: str, clock: FakeClock, ids: list[str]) -> list[int]:
    """A new scheduler on the same file, leases long expired: the unsaved jobs run again."""
    ran: list[int] = []
    later = FakeClock(wall_start=clock.wall() + 60)
    sched = batch_sched(db, later, ran, grace=0)
    async with sched:
        await eventually(lambda: len(ran) == len(ids))

        async def all_done() -> list[Job]:
            jobs = [await sched.job(job_id) for job_id in ids]
            return jobs if all(job.state is JobState.DONE for job in jobs) else []

        jobs = await eventually(all_done)
        assert [await job.result(timeout=1) for job in jobs] == [i * 10 for i in range(len(ids))]
    return ran


async def full_backlog_at_stop(
    db: str, clock: FakeClock, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> tuple[Scheduler, list[str], list[int]]:
    """A running scheduler whose two jobs ran and whose outcomes cannot be written."""
    caplog.set_level(logging.WARNING, logger="floodgate")
    ran: list[int] = []
    sched = batch_sched(db, clock, ran, grace=10.0)
    await sched.__aenter__()
    fill_the_disk(monkeypatch)
    ids = [(await sched.submit("full.work", i)).id for i in range(2)]
    await eventually(lambda: len(ran) == 2 and events(caplog, "backlog.complete_failed"))
    return sched, ids, ran


async def test_a_full_backlog_holds_the_stop_no_longer_than_the_grace(
    tmp_path: Path,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    db = str(tmp_path / "jobs.db")
    sched, ids, ran = await full_backlog_at_stop(db, clock, caplog, monkeypatch)
    stop = asyncio.create_task(sched.__aexit__(None, None, None))
    try:
        await drive(clock, 9)  # 9 s of the 10 s grace: still trying to save them
        assert not stop.done()
        assert events(caplog, "backlog.outcomes_unsaved") == []
        await drive(clock, 1)  # the grace is over: the stop ends, no more fake time passes
        await asyncio.wait_for(asyncio.shield(stop), 5)
    finally:
        stop.cancel()
    assert sched.stats().state == "stopped"
    [unsaved] = events(caplog, "backlog.outcomes_unsaved")
    assert unsaved["count"] == 2
    assert sorted(unsaved["job_ids"]) == sorted(ids)
    assert unsaved["lane"] == "batch"
    assert "full" in unsaved["error"]

    monkeypatch.undo()  # disk space returns
    before = await stored(db)
    for job_id in ids:
        assert before[job_id].state is JobState.RUNNING, "not marked done"
    assert sorted(await rerun_after_space_returns(db, clock, ids)) == [0, 1]
    assert sorted(ran) == [0, 1]


async def test_end_grace_stops_a_stop_stuck_on_a_full_backlog_at_once(
    tmp_path: Path,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    db = str(tmp_path / "jobs.db")
    sched, ids, _ = await full_backlog_at_stop(db, clock, caplog, monkeypatch)
    stop = asyncio.create_task(sched.__aexit__(None, None, None))
    try:
        await drive(clock, 2)
        assert not stop.done()
        sched.end_grace()  # a worker's second signal
        await asyncio.wait_for(asyncio.shield(stop), 5)  # no fake time passes
    finally:
        stop.cancel()
    [unsaved] = events(caplog, "backlog.outcomes_unsaved")
    assert unsaved["count"] == 2

    monkeypatch.undo()
    assert sorted(await rerun_after_space_returns(db, clock, ids)) == [0, 1]


# -- the worker process, with a database that is really full for it --------------------

APP = "tests.procs.full_backlog_app:sched"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("grace", "second_signal"), [(2, False), (60, True)], ids=["grace-ends", "second-signal"]
)
async def test_a_worker_with_a_full_backlog_stops_on_time_and_loses_nothing(
    tmp_path: Path, grace: int, second_signal: bool
) -> None:
    db, runlog = tmp_path / "jobs.db", tmp_path / "runs.log"
    submitter = full_backlog_app.make_scheduler(str(db))
    async with submitter.open(run=()):
        ids = [(await submitter.submit("test.fill", i)).id for i in range(6)]
    env = {"FLOODGATE_TEST_RUNLOG": str(runlog)}
    worker = await WorkerProcess.start(
        "worker", "--app", APP, "--backlog", str(db), "--grace", str(grace),
        env={**env, "FLOODGATE_TEST_FULL": "1"},
    )  # fmt: skip
    try:
        failed = await worker.wait_event("backlog.complete_failed")
        assert "full" in failed["error"]
        worker.proc.send_signal(signal.SIGTERM)
        await worker.wait_event("scheduler.draining")
        if second_signal:
            worker.proc.send_signal(signal.SIGTERM)
        # without the fix it retried for ever; with it: the grace, or at once
        assert await worker.wait(timeout=10 if second_signal else grace + 10) == 0, worker.stderr
    finally:
        worker.kill()

    ran = starts(runlog)
    [unsaved] = [e for e in worker.events if e["event"] == "backlog.outcomes_unsaved"]
    assert set(unsaved["job_ids"]) == set(ran)
    assert unsaved["count"] == len(ran) >= 1
    assert "worker.stopped" in {e["event"] for e in worker.events}
    before = await stored(str(db))
    assert {before[job_id].state for job_id in ran} == {JobState.RUNNING}, "none marked done"

    drain = await WorkerProcess.start(  # room again: a process without the limit
        "drain", "--until-empty", "--app", APP, "--backlog", str(db), env=env
    )
    try:
        assert await drain.wait(timeout=30) == 0, drain.stderr
    finally:
        drain.kill()
    after = await stored(str(db))
    assert {after[job_id].state for job_id in ids} == {JobState.DONE}
    for i, job_id in enumerate(ids):
        assert after[job_id].result == {"i": i, "pad": "x" * full_backlog_app.PAD}
    rerun = starts(runlog)
    assert set(rerun) == set(ids), "nothing lost"
    assert all(rerun[job_id] == 2 for job_id in ran), "the unsaved ones ran again"
