"""Backlog fixtures: ``backlog`` runs each contract test once per backend.

Adding a backend means adding its name to ``BACKENDS`` and a branch to
``make_backlog`` and ``corrupt_row``; the tests stay unchanged.

``postgres`` runs when ``FLOODGATE_TEST_POSTGRES_DSN`` is set (see
``tests/backlog/pg.py``) and is skipped with that reason otherwise; every
test gets a schema of its own, dropped afterwards.
"""

from __future__ import annotations

import contextlib
import math
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from scheduler.backlog import Backlog, MemoryBacklog, SQLiteBacklog
from tests.backlog import pg

BACKENDS = ["memory", "sqlite", "postgres"]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "backlog.db"


@pytest.fixture
async def pg_schema(backend: str) -> AsyncIterator[str | None]:
    """A fresh schema for the postgres backend (``None`` for the others), dropped after."""
    if backend != "postgres":
        yield None
        return
    dsn = pg.dsn_or_skip()
    schema = pg.new_schema()
    try:
        yield schema
    finally:
        await pg.drop_schema(dsn, schema)


def _postgres(schema: str) -> Backlog:
    from scheduler.backlog.postgres import PostgresBacklog

    return PostgresBacklog(pg.dsn_or_skip(), schema=schema, application_name=schema)


@pytest.fixture
async def make_backlog(
    backend: str, db_path: Path, pg_schema: str | None
) -> AsyncIterator[Callable[[], Backlog]]:
    """A factory of unopened backlogs of this backend, all on one store (SQLite: one file,
    PostgreSQL: one schema); closed after."""
    made: list[Backlog] = []

    def make() -> Backlog:
        backlog: Backlog
        if backend == "memory":
            backlog = MemoryBacklog()
        elif backend == "sqlite":
            backlog = SQLiteBacklog(db_path)
        else:
            assert pg_schema is not None
            backlog = _postgres(pg_schema)
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
def corrupt_row(
    backend: str, db_path: Path, pg_schema: str | None
) -> Callable[[str, str, object], None]:
    """``corrupt_row(job_id, column, value)`` writes a raw value behind the backlog's back.

    PostgreSQL's typed columns cannot hold text where a number belongs, so a
    non-numeric ``priority`` is written as NaN there (which ``submit`` refuses,
    so it is just as corrupt); text columns take the value as it is.
    """
    if backend == "memory":
        pytest.skip("the memory backlog keeps validated rows; there is no file to corrupt")
    columns = {"args", "result", "state", "priority"}

    def corrupt_sqlite(job_id: str, column: str, value: object) -> None:
        assert column in columns
        with contextlib.closing(sqlite3.connect(db_path)) as conn, conn:
            conn.execute(f"UPDATE jobs SET {column} = ? WHERE id = ?", (value, job_id))

    def corrupt_postgres(job_id: str, column: str, value: object) -> None:
        assert column in columns
        assert pg_schema is not None
        if column == "priority" and not isinstance(value, int | float):
            value = math.nan
        dsn = pg.with_settings(pg.dsn_or_skip(), search_path=pg_schema)
        query = f"UPDATE floodgate_jobs SET {column} = $1 WHERE id = $2"
        pg.run_blocking(lambda: pg.execute(dsn, query, value, job_id))

    return corrupt_sqlite if backend == "sqlite" else corrupt_postgres
