"""A durable lane's ``max_queued`` holds for the backlog as a whole, not per process.

Several real submitter processes (``tests/procs/bounded_submitter.py``) race
submits against one backlog (a SQLite file; the real PostgreSQL when
``FLOODGATE_TEST_POSTGRES_DSN`` is set): afterwards exactly
``min(total, max_queued)`` jobs are queued, and every refused submit got
``Overloaded``.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import sys
from pathlib import Path

import pytest

from tests.backlog import pg

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
PROCS = 4
EACH = 400
BOUND = 1000


async def race(
    target: str, bound: int, each: int, procs: list[asyncio.subprocess.Process]
) -> list[str]:
    """Start PROCS submitters, release them at once, collect every answer line."""
    for _ in range(PROCS):
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.procs.bounded_submitter", target, str(bound), str(each),
            cwd=REPO, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        procs.append(proc)
    for proc in procs:
        assert proc.stdout is not None
        assert await asyncio.wait_for(proc.stdout.readline(), 30) == b"ready\n"
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write(b"go\n")
        await proc.stdin.drain()
    outputs = await asyncio.wait_for(asyncio.gather(*(p.communicate() for p in procs)), 60)
    assert [p.returncode for p in procs] == [0] * PROCS
    lines: list[str] = []
    for out, _ in outputs:
        text = out.decode().splitlines()
        assert text[-1] == "end"
        lines += text[:-1]
    return lines


def check(lines: list[str], stored: set[str], total: int, bound: int) -> None:
    errors = [line for line in lines if not (line == "full" or line.startswith("ok "))]
    assert errors == [], "every submit either stored its job or got Overloaded"
    accepted = {line.split()[1] for line in lines if line.startswith("ok ")}
    refused = lines.count("full")
    assert len(lines) == total
    rows = len(stored)
    assert rows == min(total, bound), f"{rows} queued rows with max_queued={bound}"
    assert accepted == stored, "every accepted job is stored, and nothing else"
    assert refused == total - len(accepted)


async def test_processes_racing_one_sqlite_file_never_exceed_max_queued(
    tmp_path: Path, procs: list[asyncio.subprocess.Process]
) -> None:
    db = tmp_path / "bound.db"
    lines = await race(str(db), BOUND, EACH, procs)
    with contextlib.closing(sqlite3.connect(db)) as conn:
        rows = conn.execute("SELECT id FROM jobs WHERE state = 'queued'").fetchall()
    check(lines, {r[0] for r in rows}, PROCS * EACH, BOUND)


async def test_processes_racing_one_postgres_backlog_never_exceed_max_queued(
    dsn: str, procs: list[asyncio.subprocess.Process]
) -> None:
    lines = await race(dsn, BOUND, EACH, procs)
    rows = await pg.execute(dsn, "SELECT id FROM floodgate_jobs WHERE state = 'queued'")
    check(lines, {r[0] for r in rows}, PROCS * EACH, BOUND)
