"""Backlog fixtures: ``backlog`` runs each contract test once per backend.

Adding a backend (PostgreSQL) means adding its name to ``BACKENDS`` and a
branch to ``make_backlog`` and ``corrupt_row``; the tests stay unchanged.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from scheduler.backlog import Backlog, MemoryBacklog, SQLiteBacklog

BACKENDS = ["memory", "sqlite"]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "backlog.db"


@pytest.fixture
async def make_backlog(backend: str, db_path: Path) -> AsyncIterator[Callable[[], Backlog]]:
    """A factory of unopened backlogs of this backend (SQLite: all on one file); closed after."""
    made: list[Backlog] = []

    def make() -> Backlog:
        backlog: Backlog = MemoryBacklog() if backend == "memory" else SQLiteBacklog(db_path)
        made.append(backlog)
        return backlog

    yield make
    for backlog in made:
        await backlog.close()


@pytest.fixture
async def backlog(make_backlog: Callable[[], Backlog]) -> Backlog:
    """An open backlog of the parametrized backend."""
    backlog = make_backlog()
    await backlog.open()
    return backlog


@pytest.fixture
def corrupt_row(backend: str, db_path: Path) -> Callable[[str, str, object], None]:
    """``corrupt_row(job_id, column, value)`` writes a raw value behind the backlog's back."""
    if backend == "memory":
        pytest.skip("the memory backlog keeps validated rows; there is no file to corrupt")
    columns = {"args", "result", "state", "priority"}

    def corrupt(job_id: str, column: str, value: object) -> None:
        assert column in columns
        with contextlib.closing(sqlite3.connect(db_path)) as conn, conn:
            conn.execute(f"UPDATE jobs SET {column} = ? WHERE id = ?", (value, job_id))

    return corrupt
