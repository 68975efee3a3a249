"""The worker as a real subprocess: SIGTERM mid-drain, a second signal, its admin API."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
import pytest

from scheduler import JobState
from scheduler.backlog import SQLiteBacklog
from scheduler.testing import eventually
from tests.procs.worker_app import make_scheduler

from .worker_helpers import WorkerProcess, ends, starts

pytestmark = pytest.mark.slow

APP = "tests.procs.worker_app:sched"


async def submit(db: Path, task: str, args: list[list[object]]) -> list[str]:
    sched = make_scheduler(str(db))
    async with sched.open(run=()):
        return [(await sched.submit(task, *a)).id for a in args]


async def records(db: Path) -> dict[str, object]:
    async with SQLiteBacklog(db) as backlog:
        return {r.id: r for r in await backlog.list_jobs(limit=1000)}


async def test_sigterm_mid_drain_loses_nothing_and_runs_nothing_twice(tmp_path: Path) -> None:
    db, runlog = tmp_path / "jobs.db", tmp_path / "runs.log"
    ids = await submit(db, "test.work", [[i, 30] for i in range(40)])
    env = {"FLOODGATE_TEST_RUNLOG": str(runlog)}
    worker = await WorkerProcess.start(
        "worker", "--app", APP, "--backlog", str(db), "--grace", "10",
        "--admin", "127.0.0.1:0", env=env,
    )  # fmt: skip
    try:
        ready = await worker.wait_event("worker.ready")
        assert ready["lanes"] == ["batch"]
        assert ready["backlog"] == str(db)
        async with httpx.AsyncClient(base_url=ready["admin"]) as client:
            assert (await client.get("/healthz")).status_code == 200
            assert (await client.get("/readyz")).json()["ready"] is True
        await eventually(lambda: sum(starts(runlog).values()) >= 8, timeout=15)
        worker.proc.send_signal(signal.SIGTERM)
        assert await worker.wait() == 0, worker.stderr
    finally:
        worker.kill()

    assert {"worker.signal", "worker.stopping", "worker.stopped"} <= {
        e["event"] for e in worker.events
    }
    started, finished = starts(runlog), ends(runlog)
    assert set(started) == set(finished), "every job that started finished within the grace"
    assert 8 <= len(started) < len(ids), "the signal landed mid-drain"
    by_id = await records(db)
    for job_id in ids:
        record = by_id[job_id]
        if job_id in started:
            assert record.state is JobState.DONE  # type: ignore[attr-defined]
        else:
            assert record.state is JobState.QUEUED  # type: ignore[attr-defined]
            assert record.attempts == 0
            assert record.lease_owner is None

    drain = await WorkerProcess.start(
        "drain", "--until-empty", "--app", APP, "--backlog", str(db), env=env
    )
    try:
        assert await drain.wait() == 0, drain.stderr
    finally:
        drain.kill()
    assert f"{len(ids) - len(started)}/{len(ids) - len(started)}" in drain.stderr
    by_id = await records(db)
    assert {r.state for r in by_id.values()} == {JobState.DONE}  # type: ignore[attr-defined]
    assert set(starts(runlog)) == set(ids)
    assert max(starts(runlog).values()) == 1, "no job ran twice"


async def test_second_signal_cancels_at_once_and_still_releases_leases(tmp_path: Path) -> None:
    db, runlog = tmp_path / "jobs.db", tmp_path / "runs.log"
    ids = await submit(db, "test.block", [[i] for i in range(6)])
    worker = await WorkerProcess.start(
        "worker", "--app", APP, "--backlog", str(db), "--grace", "30",
        env={"FLOODGATE_TEST_RUNLOG": str(runlog)},
    )  # fmt: skip
    try:
        await worker.wait_event("worker.ready")
        await eventually(lambda: len(starts(runlog)) == 4, timeout=15)  # the lane's ceiling
        worker.proc.send_signal(signal.SIGTERM)
        stopping = await worker.wait_event("worker.stopping")
        assert stopping["running"] == 4
        assert stopping["grace"] == 30
        worker.proc.send_signal(signal.SIGINT)
        assert await worker.wait(timeout=10) == 0, worker.stderr  # far less than the grace
    finally:
        worker.kill()

    actions = [e.get("action") for e in worker.events if e["event"] == "worker.signal"]
    assert actions[-1] == "cancel running jobs"
    assert not ends(runlog), "no blocked job finished"
    by_id = await records(db)
    assert set(by_id) == set(ids)
    for record in by_id.values():
        assert record.state is JobState.QUEUED, record  # type: ignore[attr-defined]
        assert record.lease_owner is None
        assert record.attempts == 0
