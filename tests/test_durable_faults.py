"""Durable lanes against real faults: another process writing, a held lock, a corrupt row."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
from pathlib import Path

import pytest

from scheduler import (
    BacklogError,
    BacklogOptions,
    JobFailed,
    JobState,
    Lane,
    Scheduler,
)
from scheduler.backlog import BacklogLocked

REPO = Path(__file__).resolve().parent.parent


def drainer(db: Path, **options: float) -> Scheduler:
    sched = Scheduler(
        str(db),
        lanes=[Lane("batch", 4, durable=True)],
        backlog_options=BacklogOptions(poll_interval=0.02, **options),  # type: ignore[arg-type]
        shutdown_grace=0,
    )

    async def work(i: int) -> int:
        return i * 10

    sched.task(name="crash.work")(work)
    return sched


async def test_a_submitter_process_and_a_drainer_share_one_file(tmp_path: Path) -> None:
    db = tmp_path / "shared.db"
    sched = drainer(db)
    async with sched:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.procs.submitter", str(db), "150",
            cwd=REPO, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0
        ids = out.decode().split()
        assert len(ids) == 150
        results = [await (await sched.job(job_id)).result(timeout=30) for job_id in ids]
    assert results == [i * 10 for i in range(150)]


async def test_a_lock_held_by_another_process_gives_a_clear_error_and_loses_nothing(
    tmp_path: Path,
) -> None:
    db = tmp_path / "locked.db"
    sched = drainer(db, busy_timeout=0.05)
    async with sched:
        before = await sched.submit("crash.work", 1)
        assert await before.result(timeout=10) == 10
        holder = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.procs.lock_holder", str(db),
            cwd=REPO, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert holder.stdout is not None
        assert holder.stdin is not None
        assert (await asyncio.wait_for(holder.stdout.readline(), 10)).strip() == b"locked"
        with pytest.raises(BacklogLocked, match="locked") as info:
            await sched.submit("crash.work", 2)
        assert isinstance(info.value, BacklogError)
        holder.stdin.write(b"go\n")
        await holder.stdin.drain()
        assert await asyncio.wait_for(holder.wait(), 10) == 0
        # the scheduler kept running: new work goes through, old work is intact
        after = await sched.submit("crash.work", 3)
        assert await after.result(timeout=10) == 30
        assert (await sched.job(before.id)).state is JobState.DONE
    assert sched.stats()["batch"].completed == 2


async def test_a_corrupt_row_kills_only_that_job(tmp_path: Path) -> None:
    db = tmp_path / "corrupt.db"
    sched = drainer(db)
    async with sched.open(run=()):
        jobs = [await sched.submit("crash.work", i) for i in range(3)]
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE jobs SET args = ? WHERE id = ?", ("{not json", jobs[1].id))
    async with sched:
        assert await jobs[0].result(timeout=10) == 0
        assert await jobs[2].result(timeout=10) == 20
        with pytest.raises(JobFailed, match="corrupt row"):
            await jobs[1].result(timeout=10)
        listed = await sched.jobs("dead")
        assert [j.id for j in listed] == [jobs[1].id]


async def test_a_file_that_is_not_a_database_is_refused_clearly(tmp_path: Path) -> None:
    bogus = tmp_path / "notes.txt"
    bogus.write_bytes(b"this is not a database, just text" * 100)
    sched = drainer(bogus)
    with pytest.raises(BacklogError, match=r"notes\.txt"):
        async with sched:
            pass
    assert bogus.read_bytes().startswith(b"this is not a database")
