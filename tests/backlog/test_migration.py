"""Backlogs written by an earlier Floodgate open, migrate forward and keep their jobs."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

from scheduler import JobState
from scheduler.backlog import SQLiteBacklog
from scheduler.backlog import _postgres_schema as pg_sql
from scheduler.backlog import _sqlite_schema as sqlite_sql
from tests.backlog import pg
from tests.backlog.helpers import new_job

_V1_ROW = (
    "INSERT INTO {table} (id, task, lane, args, priority, state, attempts, max_attempts, run_at,"
    " created_at, updated_at) VALUES ('old-job', 'tests.work', 'batch', '[1]', 0, 'queued', 0,"
    " 3, 0, 0, 0)"
)


async def test_a_version_1_sqlite_file_migrates_to_the_cost_column(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        for statement in sqlite_sql.MIGRATIONS[0]:
            conn.execute(statement)
        conn.execute("PRAGMA user_version = 1")
        conn.execute(_V1_ROW.format(table="jobs"))
    assert sqlite_sql.SCHEMA_VERSION == 2
    async with SQLiteBacklog(path) as backlog:
        old = await backlog.get("old-job")
        assert old is not None
        assert (old.args, old.state, old.cost, old.error) == ([1], JobState.QUEUED, None, None)
        [new] = await backlog.submit([new_job(2)], now=1)
        [again] = await backlog.submit([new_job(3, key="k")], now=1)
        assert again.cost is None
        claimed = await backlog.claim("batch", 10, owner="w", lease_seconds=10, now=2)
        assert [r.id for r in claimed] == ["old-job", new.id, again.id]
    with contextlib.closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
        columns = [row[1] for row in conn.execute("PRAGMA table_info(jobs)")]
        assert columns[-1] == "cost"
    async with SQLiteBacklog(path) as backlog:  # reopening a v2 file changes nothing
        old = await backlog.get("old-job")
        assert old is not None
        assert old.state is JobState.RUNNING


async def test_a_version_1_postgres_schema_migrates_to_the_cost_column() -> None:
    from scheduler.backlog.postgres import PostgresBacklog

    dsn = pg.dsn_or_skip()
    schema = pg.new_schema()
    try:
        await pg.create_schema(dsn, schema)
        raw = pg.with_settings(dsn, search_path=schema)
        await pg.execute(raw, pg_sql.META)
        for statement in pg_sql.MIGRATIONS[0]:
            await pg.execute(raw, statement)
        await pg.execute(raw, pg_sql.META_SET, 1)
        await pg.execute(raw, _V1_ROW.format(table="floodgate_jobs"))
        async with PostgresBacklog(dsn, schema=schema) as backlog:
            old = await backlog.get("old-job")
            assert old is not None
            assert (old.args, old.state, old.cost, old.error) == ([1], JobState.QUEUED, None, None)
            [new] = await backlog.submit([new_job(2)], now=1)
            claimed = await backlog.claim("batch", 10, owner="w", lease_seconds=10, now=2)
            assert [(r.id, r.cost) for r in claimed] == [("old-job", None), (new.id, None)]
        [[version]] = await pg.execute(raw, pg_sql.META_VERSION)
        assert version == pg_sql.SCHEMA_VERSION == 2
    finally:
        await pg.drop_schema(dsn, schema)
