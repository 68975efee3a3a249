"""``kill -9`` during a streamed ``submit_many`` (``_run_stream``): a real process
on a real SQLite file dies while handing chunks over, at the COMMIT, or just
after the call returned. The file then holds every job of the acknowledged call
and all or none of the killed one, never part of it, with its lane count true;
a new scheduler opens it and stores more."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from scheduler import Lane, Scheduler
from scheduler.backlog._run_stream import CHUNK, STREAM_MIN

REPO = Path(__file__).resolve().parent.parent
COUNT = STREAM_MIN + CHUNK + 11  # three chunks


def queued(db: Path) -> tuple[int, int, str]:
    """(rows, the lane's kept count, integrity check) of the file."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT COUNT(*) FROM jobs WHERE state = 'queued'").fetchone()[0]
        kept = conn.execute("SELECT n FROM lane_queued WHERE lane = 'batch'").fetchone()[0]
        check = conn.execute("PRAGMA integrity_check").fetchone()[0]
    return int(rows), int(kept), str(check)


@pytest.mark.parametrize(
    ("event", "n", "second_stored"),
    [("add", 1, False), ("add", 3, False), ("commit", 1, False), ("returned", 1, True)],
)
def test_a_killed_streamed_call_is_all_or_none(
    tmp_path: Path, event: str, n: int, second_stored: bool
) -> None:
    db, acks = tmp_path / "jobs.db", tmp_path / "acks"
    victim = subprocess.run(
        [sys.executable, "-m", "tests.procs.stream_victim", str(db), str(acks), event, str(n),
         str(COUNT)],
        cwd=REPO, capture_output=True, timeout=120, check=False,
    )  # fmt: skip
    assert victim.returncode == -signal.SIGKILL, victim.stderr.decode()[-2000:]
    assert acks.read_text().split("\n")[0] == f"first {COUNT}"  # the first call was acked
    rows, kept, check = queued(db)
    assert check == "ok"
    assert rows == kept == (2 * COUNT if second_stored else COUNT)

    async def again() -> int:
        sched = Scheduler(str(db), lanes=[Lane("batch", 4, durable=True)], fleet=False)
        sched.task(_noop, name="victim.noop")
        async with sched.open(run=()):
            await sched.submit_many("victim.noop", [[i] for i in range(COUNT)])
            return (await sched.backlog_counts())["batch"]["queued"]

    assert asyncio.run(again()) == rows + COUNT


async def _noop(i: int) -> None:
    return None
