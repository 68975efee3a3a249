"""A worker killed with ``kill -9`` does not block its lane until its leases expire.

A real worker process (``tests/procs/lease_worker.py``, lease 600 s) takes the
lane's whole fleet-wide ceiling and is killed. A new worker (a scheduler in
this process, on a fake clock that never gets near the lease's end) finds the
lease owner dead, frees its leases at once and drains every job, the killed
worker's included (as a lease expiry: one more attempt). SQLite (same host:
pid and process start time) and the real PostgreSQL (the owner's session
advisory lock) alike.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from scheduler import BacklogOptions, FakeClock, JobState, Lane, Scheduler
from tests.backlog import pg

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
LEASE = 600.0
JOBS = 4
SEATS = 2


def worker(target: str, clock: FakeClock) -> Scheduler:
    sched = Scheduler(
        target,
        lanes=[Lane("batch", max_concurrency=SEATS, durable=True)],
        clock=clock,
        backlog_options=BacklogOptions(lease=LEASE, poll_interval=0.05),
        shutdown_grace=0,
    )

    async def hold(i: int) -> int:  # the new worker's version finishes at once
        return i

    sched.task(name="lease.hold")(hold)
    return sched


def started(log: Path) -> list[str]:
    if not log.exists():
        return []
    return [line.split()[0] for line in log.read_text().splitlines() if line.strip()]


def events(caplog: pytest.LogCaptureFixture, name: str) -> list[dict[str, Any]]:
    return [r.msg for r in caplog.records if isinstance(r.msg, dict) and r.msg.get("event") == name]


async def kill_a_worker_holding_the_lane_then_drain(
    target: str,
    tmp_path: Path,
    procs: list[asyncio.subprocess.Process],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="floodgate")
    log = tmp_path / "runs.log"
    clock = FakeClock(wall_start=time.time())
    submitter = worker(target, clock)
    async with submitter.open(run=()):
        jobs = [await submitter.submit("lease.hold", i) for i in range(JOBS)]

    victim = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.procs.lease_worker", target, str(log),
        "--concurrency", str(SEATS), "--lease", str(LEASE),
        cwd=REPO, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    procs.append(victim)
    for _ in range(2000):  # bounded (~10 s): until the victim runs a full lane
        if len(started(log)) >= SEATS or victim.returncode is not None:
            break
        await asyncio.sleep(0.005)
    held = set(started(log))
    assert len(held) == SEATS, "the victim took the lane's whole ceiling"
    victim.send_signal(signal.SIGKILL)
    assert await victim.wait() == -signal.SIGKILL

    sched = worker(target, clock)
    begun = clock.wall()
    async with sched:
        records = {j.id: j for j in jobs}
        for _ in range(400):  # bounded: 0.05 fake seconds a round, 20 s at most
            records = {job_id: await sched.job(job_id) for job_id in records}
            if all(j.state is JobState.DONE for j in records.values()):
                break
            await asyncio.sleep(0.002)
            await clock.advance_and_settle(0.05)
        assert {j.state for j in records.values()} == {JobState.DONE}
        results = [await records[j.id].result(timeout=0) for j in jobs]
    assert clock.wall() - begun < 30 < LEASE, "drained long before the leases could expire"
    assert results == list(range(JOBS))
    attempts = {j.id: j.attempts for j in records.values()}
    assert {i for i, n in attempts.items() if n == 2} == held, "the victim's jobs ran again"
    assert all(attempts[i] == 1 for i in attempts if i not in held)
    [event] = events(caplog, "backlog.dead_owner_reclaimed")
    assert event["jobs"] == SEATS
    assert f":{victim.pid}:" in event["owner"]


async def test_sqlite_a_killed_workers_leases_are_freed_at_once(
    tmp_path: Path, procs: list[asyncio.subprocess.Process], caplog: pytest.LogCaptureFixture
) -> None:
    await kill_a_worker_holding_the_lane_then_drain(
        str(tmp_path / "jobs.db"), tmp_path, procs, caplog
    )


async def test_postgres_a_killed_workers_leases_are_freed_at_once(
    dsn: str,
    tmp_path: Path,
    procs: list[asyncio.subprocess.Process],
    caplog: pytest.LogCaptureFixture,
) -> None:
    await kill_a_worker_holding_the_lane_then_drain(dsn, tmp_path, procs, caplog)


async def test_postgres_an_owner_whose_connection_was_cut_registers_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The connection holding an owner's lock is cut while the owner lives: it takes the
    lock again at once (no claim needed), so other claimers keep counting its leases."""
    from scheduler.backlog import BacklogUnavailable
    from scheduler.backlog.postgres import PostgresBacklog
    from tests.backlog.helpers import new_job

    caplog.set_level(logging.INFO, logger="floodgate")
    base = pg.dsn_or_skip()
    schema = pg.new_schema()
    a = PostgresBacklog(base, schema=schema, application_name=f"{schema}_a", listen=False)
    b = PostgresBacklog(base, schema=schema, application_name=f"{schema}_b", listen=False)
    try:
        await a.open()
        await b.open()
        await a.submit([new_job(i) for i in range(6)], now=0)
        assert len(await a.claim("batch", 2, owner="a", lease_seconds=LEASE, now=0)) == 2
        before = await lock_holders(base, f"{schema}_a")
        assert len(before) == 1
        assert await pg.terminate(base, f"{schema}_a") >= 2  # the pool's and the owner's
        after: set[int] = set()
        for _ in range(1000):  # bounded (~5 s): until a new connection holds the lock
            after = await lock_holders(base, f"{schema}_a")
            if after and after != before:
                break
            await asyncio.sleep(0.005)
        assert after, "the owner's lock is taken again, unasked"
        assert after != before
        again: list[Any] = []
        for _ in range(50):  # bounded: the pool replaces its dead connection
            try:
                again = await a.claim("batch", 1, owner="a", lease_seconds=LEASE, now=1)
                break
            except BacklogUnavailable:
                await asyncio.sleep(0.01)
        assert len(again) == 1
        got = await b.claim("batch", 6, owner="b", lease_seconds=LEASE, now=2, max_running=5)
        assert len(got) == 2, "a's three leases still count: a holds its lock again"
        rows = await pg.execute(
            pg.with_settings(base, search_path=schema),
            "SELECT lease_owner, count(*) FROM floodgate_jobs WHERE state = 'running'"
            " GROUP BY lease_owner ORDER BY lease_owner",
        )
        assert [tuple(r) for r in rows] == [("a", 3), ("b", 2)]
        assert events(caplog, "backlog.dead_owner_reclaimed") == []
    finally:
        await a.close()
        await b.close()
        await pg.drop_schema(base, schema)


async def lock_holders(dsn: str, application_name: str) -> set[int]:
    """Pids of the connections of ``application_name`` holding an advisory lock."""
    rows = await pg.execute(
        dsn,
        "SELECT a.pid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
        " WHERE l.locktype = 'advisory' AND l.granted AND a.application_name = $1",
        application_name,
    )
    return {int(r[0]) for r in rows}
