"""Tenants on durable lanes through the scheduler: fair turns in the claim, per-tenant
bounds, stats from the backlog, cancel by tenant; and fair turns across real worker
processes on one SQLite file and on PostgreSQL."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import pytest

from scheduler import JobCancelled, JobState, Lane, Overloaded, Scheduler, Tenants
from scheduler.testing import eventually
from tests.procs.worker_app import make_scheduler

from .worker_helpers import WorkerProcess, run_log


def one_seat(path: Path, tenants: Tenants | None = None) -> Scheduler:
    """A durable lane with one seat: jobs start one by one, in claim order."""
    return Scheduler(
        str(path),
        lanes=[Lane("batch", 1, durable=True, tenants=tenants or Tenants())],
        shutdown_grace=0,
    )


async def test_a_durable_lane_takes_turns_between_tenants(tmp_path: Path) -> None:
    sched = one_seat(tmp_path / "t.db")
    started: list[str | None] = []

    @sched.task(name="app.work")
    async def work(tenant: str | None) -> None:
        started.append(tenant)

    async with sched.open(run=()):
        await work.submit_many([["big"]] * 60, tenant="big")
        for name in ("a", "b"):
            await work.submit_many([[name]] * 3, tenant=name)
        await work.submit(None)  # no tenant: one flow of its own
    async with sched:
        for _ in range(500):  # bounded: each start takes a few ms
            if len(started) >= 12:
                break
            await asyncio.sleep(0.01)
    first = Counter(started[:9])
    assert first == {"a": 3, "b": 3, "big": 2, None: 1}, started[:12]


async def test_a_tenants_bound_on_a_durable_lane_is_its_own(tmp_path: Path) -> None:
    sched = one_seat(tmp_path / "t.db", Tenants(max_queued=2))

    @sched.task(name="app.work")
    async def work(n: int) -> int:
        return n

    async with sched.open(run=()):
        jobs = [await work.submit(i, tenant="acme") for i in range(2)]
        assert [j.tenant for j in jobs] == ["acme", "acme"]
        with pytest.raises(Overloaded) as caught:
            await work.submit(3, tenant="acme")
        assert caught.value.tenant == "acme"
        with pytest.raises(Overloaded):
            await work.submit_many([[4], [5]], tenant="acme")
        await work.submit_many([[6], [7]], tenant="other")  # other tenants are not held
        await work.submit(8)  # nor jobs without a tenant
        assert await sched.backlog_counts() == {"batch": {"queued": 5}}
        lane = sched.stats().lanes["batch"]
        assert lane.shed["tenant_queue_full"] == 2
        with pytest.raises(TypeError, match="tenant"):
            await work.submit(9, tenant=7)  # type: ignore[arg-type]
    async with sched.open(run=()):  # the backlog's busiest tenants, read at open
        rows = {t.tenant: t.queued for t in sched.stats().lanes["batch"].tenants}
        assert rows == {"acme": 2, "other": 2}


async def test_cancel_by_tenant_cancels_only_that_tenants_jobs(tmp_path: Path) -> None:
    sched = one_seat(tmp_path / "t.db")

    @sched.task(name="app.work")
    async def work(n: int) -> int:
        return n

    async with sched.open(run=()):
        gone = await work.submit_many([[i] for i in range(3)], tenant="acme")
        kept = await work.submit(9, tenant="zeta")
        assert await sched.cancel_task(tenant="acme") == 3
        assert await sched.cancel_task("app.work", tenant="acme") == 0
        with pytest.raises(TypeError, match="task name, tenant"):
            await sched.cancel_task()
        for job in gone:
            with pytest.raises(JobCancelled):
                await job.result(timeout=5)
        assert (await sched.job(kept.id)).state is JobState.QUEUED


@pytest.fixture(params=["sqlite", "postgres"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A SQLite file, or a DSN on a fresh PostgreSQL schema (conftest's ``dsn``)."""
    if request.param == "sqlite":
        return str(tmp_path / "jobs.db")
    return str(request.getfixturevalue("dsn"))


@pytest.mark.slow
async def test_fair_turns_hold_across_worker_processes(target: str, tmp_path: Path) -> None:
    """Two real worker processes drain one backlog (a lane of 4 seats fleet-wide): a
    tenant's flood of 300 jobs, submitted first, does not hold back three tenants' 3."""
    runlog = tmp_path / "runs.log"
    sched = make_scheduler(target)
    async with sched.open(run=()):
        await sched.submit_many("test.work", [[i, 20] for i in range(300)], tenant="big")
        small = {
            job.id: name
            for name in ("s1", "s2", "s3")
            for job in await sched.submit_many("test.work", [[0, 20]] * 3, tenant=name)
        }
    args = ("worker", "--app", "tests.procs.worker_app:sched", "--backlog", target)
    env = {"FLOODGATE_TEST_RUNLOG": str(runlog)}
    workers = [await WorkerProcess.start(*args, env=env) for _ in range(2)]
    try:

        def started() -> list[str]:
            return [fields[1] for fields in run_log(runlog) if fields[0] == "start"]

        await eventually(lambda: len(started()) >= 24, timeout=30)
    finally:
        for worker in workers:
            worker.proc.terminate()
        for worker in workers:
            await worker.wait()
            worker.kill()
    order = started()
    # four flows take turns: the nine small jobs start among the first 12, give or
    # take the two processes' claims overlapping (FIFO would start them after 300)
    positions = [i for i, job_id in enumerate(order) if job_id in small]
    assert len(positions) == 9, order[:24]
    assert max(positions) < 16, positions
