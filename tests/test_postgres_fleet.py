"""Several real worker processes on one PostgreSQL backlog.

- The lane ceiling holds across the fleet: 4 processes, a lane of
  ``max_concurrency=3``, and a real HTTP upstream (uvicorn, in this process)
  that counts its own in-flight requests never sees more than 3.
- ``kill -9`` of one worker mid-drain loses nothing: the others take over its
  jobs once its leases expire, and only those jobs run twice.

Needs ``FLOODGATE_TEST_POSTGRES_DSN`` (skipped without it).
"""

from __future__ import annotations

import asyncio
import collections
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from scheduler import JobState, Lane, Scheduler
from tests.backlog import pg

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent


class Upstream:
    """A tiny ASGI upstream: each request holds a slot for ~20 ms; it records the peak."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.peak = 0
        self.served = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            await asyncio.sleep(0.02)
        finally:
            self.in_flight -= 1
        self.served += 1
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain")]})  # fmt: skip
        await send({"type": "http.response.body", "body": b"ok"})


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[Upstream, str]]:
    app = Upstream()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app, lifespan="off", log_level="warning", access_log=False, http="h11", ws="none"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    for _ in range(1000):  # bounded: ~5 s
        if server.started:
            break
        await asyncio.sleep(0.005)
    assert server.started
    try:
        yield app, f"http://127.0.0.1:{port}/"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        sock.close()


async def start_worker(
    dsn: str, *args: str, procs: list[asyncio.subprocess.Process]
) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.procs.pg_worker", dsn, *args,
        cwd=REPO, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    procs.append(proc)
    return proc


async def submit(dsn: str, task: str, n: int, concurrency: int) -> list[str]:
    sched = Scheduler(dsn, lanes=[Lane("batch", concurrency, durable=True)], shutdown_grace=0)

    async def stub(i: int) -> int:
        return i

    sched.task(name=task)(stub)
    async with sched.open(run=()):
        jobs = [await sched.submit(task, i) for i in range(n)]
    return [job.id for job in jobs]


async def results(dsn: str, ids: list[str]) -> dict[str, tuple[JobState, Any]]:
    sched = Scheduler(dsn, lanes=[Lane("batch", 3, durable=True)], shutdown_grace=0)
    async with sched.open(run=()):
        jobs = [await sched.job(job_id) for job_id in ids]
        assert await sched.backlog_counts() == {"batch": {"done": len(ids)}}
    return {j.id: (j.state, await j.result(timeout=0) if j.state is JobState.DONE else None)
            for j in jobs}  # fmt: skip


async def test_four_workers_keep_the_lane_ceiling_fleet_wide(
    dsn: str, upstream: tuple[Upstream, str], procs: list[asyncio.subprocess.Process]
) -> None:
    app, url = upstream
    n = 90
    ids = await submit(dsn, "fleet.call", n, 3)
    args = ("--concurrency", "3", "--upstream", url, "--until-done")
    workers = [await start_worker(dsn, *args, procs=procs) for _ in range(4)]
    codes = await asyncio.wait_for(asyncio.gather(*(w.wait() for w in workers)), 60)
    assert codes == [0, 0, 0, 0]
    assert app.peak <= 3, f"the upstream saw {app.peak} requests at once"
    assert app.peak >= 2  # the workers did overlap
    assert app.served >= n
    got = await results(dsn, ids)
    assert [got[job_id] for job_id in ids] == [(JobState.DONE, i) for i in range(n)]


def runs(log: Path) -> list[tuple[str, int]]:
    """(job id, pid) of every started attempt so far."""
    if not log.exists():
        return []
    lines = [line.split() for line in log.read_text().splitlines() if line.strip()]
    return [(parts[0], int(parts[2])) for parts in lines if len(parts) == 3]


async def test_kill_9_of_one_worker_mid_drain_loses_nothing(
    dsn: str, tmp_path: Path, procs: list[asyncio.subprocess.Process]
) -> None:
    """One worker drains 400 jobs of ~40 ms (lane ceiling 8: ~2 s of work) and is killed
    with SIGKILL while it holds leases; two more start and finish everything (its
    leases end when they find its process gone, or expire); only the jobs it held
    run twice."""
    log = tmp_path / "runs.log"
    n = 400
    ids = await submit(dsn, "fleet.work", n, 8)
    args = ("--concurrency", "8", "--log", str(log), "--work-ms", "40")
    victim = await start_worker(dsn, *args, procs=procs)
    held = 0
    for _ in range(2000):  # bounded (~10 s): until the victim holds leases
        held = len(await leased_by(dsn, victim.pid))
        if held >= 2 or victim.returncode is not None:
            break
        await asyncio.sleep(0.005)
    assert held >= 2, "the victim never held leases"
    assert victim.returncode is None, "the victim must still be running when killed"
    # killed mid-drain, at once: on a loaded machine the two others could take longer to
    # start than the victim takes to drain everything alone
    victim.send_signal(signal.SIGKILL)
    assert await victim.wait() == -signal.SIGKILL
    others = [await start_worker(dsn, *args, "--until-done", procs=procs) for _ in range(2)]
    codes = await asyncio.wait_for(asyncio.gather(*(w.wait() for w in others)), 60)
    assert codes == [0, 0]

    got = await results(dsn, ids)
    assert [got[job_id] for job_id in ids] == [(JobState.DONE, i) for i in range(n)]
    counts = collections.Counter(job_id for job_id, _ in runs(log))
    assert set(counts) == set(ids), "every job ran"
    rerun = {job_id for job_id, k in counts.items() if k > 1}
    # (the others may reclaim a dead owner's leases before the count after the kill
    # reads them, so what the victim started is taken from the run log)
    started_by_victim = {job_id for job_id, pid in runs(log) if pid == victim.pid}
    assert rerun <= started_by_victim, "only jobs the killed worker had started ran twice"
    assert all(counts[job_id] == 2 for job_id in rerun)


async def leased_by(dsn: str, pid: int | None) -> set[str]:
    """Ids of the jobs running under a lease of the worker process ``pid``."""
    rows = await pg.execute(
        dsn,
        "SELECT id FROM floodgate_jobs WHERE state = 'running' AND lease_owner LIKE $1",
        f"%:{pid}:%",
    )
    return {row[0] for row in rows}
