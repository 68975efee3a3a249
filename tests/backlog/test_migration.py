"""Backlogs written by an earlier Floodgate open, migrate forward and keep their jobs."""

from __future__ import annotations

import contextlib
import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest

from scheduler import JobState, Overloaded
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
        assert conn.execute("PRAGMA user_version").fetchone()[0] == sqlite_sql.SCHEMA_VERSION
        columns = [row[1] for row in conn.execute("PRAGMA table_info(jobs)")]
        assert "cost" in columns
    async with SQLiteBacklog(path) as backlog:  # reopening a migrated file changes nothing
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
        assert version == pg_sql.SCHEMA_VERSION
    finally:
        await pg.drop_schema(dsn, schema)


_V2_ROWS = [
    f"INSERT INTO {{table}} (id, task, lane, args, priority, state, attempts, max_attempts,"
    f" run_at, created_at, updated_at) VALUES ('{i}', 't', '{lane}', '[]', 0, '{state}', 0, 3,"
    f" 0, 0, 0)"
    for i, (lane, state) in enumerate(
        [("a", "queued"), ("a", "queued"), ("a", "running"), ("b", "queued"), ("a", "done")]
    )
]


def _sqlite_file_at(path: Path, version: int) -> Path:
    """A SQLite backlog file as Floodgate left it at schema ``version``, with _V2_ROWS."""
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        for statements in sqlite_sql.MIGRATIONS[:version]:
            for statement in statements:
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {int(version)}")
        for row in _V2_ROWS:
            conn.execute(row.format(table="jobs"))
    return path


async def test_a_version_2_sqlite_file_gets_lane_counts_and_bounds_hold(tmp_path: Path) -> None:
    path = _sqlite_file_at(tmp_path / "v2.db", 2)
    async with SQLiteBacklog(path) as backlog:
        assert (await backlog.queued_count("a"), await backlog.queued_count("b")) == (2, 1)
        await backlog.submit([replace(new_job(1, lane="a"), max_queued=3)], now=1)
        with pytest.raises(Overloaded):
            await backlog.submit([replace(new_job(2, lane="a"), max_queued=3)], now=1)


async def test_a_version_3_sqlite_file_gets_partial_indexes_and_keeps_its_counts(
    tmp_path: Path,
) -> None:
    """Migration 4 swaps the indexes and the per-row insert trigger for partial indexes
    and a count per insert transaction: the counts stay true, the claim order too."""
    path = _sqlite_file_at(tmp_path / "v3.db", 3)  # its rows counted by the insert trigger
    async with SQLiteBacklog(path) as backlog:
        assert (await backlog.queued_count("a"), await backlog.queued_count("b")) == (2, 1)
        [new] = await backlog.submit([replace(new_job(1, lane="a"), max_queued=4)], now=1)
        with pytest.raises(Overloaded):
            await backlog.submit([replace(new_job(2, lane="a"), max_queued=3)], now=1)
        claimed = await backlog.claim("a", 10, owner="w", lease_seconds=10, now=2)
        assert [r.id for r in claimed][-1] == new.id  # the older rows first
        assert await backlog.queued_count("a") == 0
    with contextlib.closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == sqlite_sql.SCHEMA_VERSION
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        assert {"jobs_queued", "jobs_running", "jobs_done"} <= names
        assert not {"jobs_claim", "jobs_state_updated", "jobs_queued_insert"} & names


async def _postgres_schema_at(dsn: str, schema: str, version: int) -> str:
    """``schema`` as Floodgate left it at ``version``, with _V2_ROWS; its raw DSN."""
    await pg.create_schema(dsn, schema)
    raw = pg.with_settings(dsn, search_path=schema)
    await pg.execute(raw, pg_sql.META)
    for statements in pg_sql.MIGRATIONS[:version]:
        for statement in statements:
            await pg.execute(raw, statement)
    await pg.execute(raw, pg_sql.META_SET, version)
    for row in _V2_ROWS:
        await pg.execute(raw, row.format(table="floodgate_jobs"))
    return raw


async def test_a_version_2_postgres_schema_gets_lane_counts_and_bounds_hold() -> None:
    from scheduler.backlog.postgres import PostgresBacklog

    dsn = pg.dsn_or_skip()
    schema = pg.new_schema()
    try:
        raw = await _postgres_schema_at(dsn, schema, 2)
        async with PostgresBacklog(dsn, schema=schema) as backlog:
            assert (await backlog.queued_count("a"), await backlog.queued_count("b")) == (2, 1)
            await backlog.submit([replace(new_job(1, lane="a"), max_queued=3)], now=1)
            with pytest.raises(Overloaded):
                await backlog.submit([replace(new_job(2, lane="a"), max_queued=3)], now=1)
        [[version]] = await pg.execute(raw, pg_sql.META_VERSION)
        assert version == pg_sql.SCHEMA_VERSION
    finally:
        await pg.drop_schema(dsn, schema)


async def test_a_version_4_sqlite_file_gets_cancellation(tmp_path: Path) -> None:
    """Migration 5 adds cancel_requested_at and the purge index of cancelled jobs: old
    rows read with no request, and cancel works on them, queued and running."""
    path = _sqlite_file_at(tmp_path / "v4.db", 4)
    async with SQLiteBacklog(path) as backlog:
        old = await backlog.get("0")
        assert old is not None
        assert (old.state, old.cancel_requested_at) == (JobState.QUEUED, None)
        assert old.rank == old.priority  # migration 6: no aging before it
        assert await backlog.cancel("0", now=5) is JobState.QUEUED
        assert await backlog.cancel("2", now=5) is JobState.RUNNING
        assert await backlog.cancel_requested(["2"]) == ["2"]
        assert await backlog.purge(finished_before=10) == 2  # the done one and "0"
    with contextlib.closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == sqlite_sql.SCHEMA_VERSION
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        assert "jobs_cancelled" in names


async def test_a_version_3_postgres_schema_gets_cancellation() -> None:
    from scheduler.backlog.postgres import PostgresBacklog

    dsn = pg.dsn_or_skip()
    schema = pg.new_schema()
    try:
        raw = await _postgres_schema_at(dsn, schema, 3)
        async with PostgresBacklog(dsn, schema=schema) as backlog:
            assert await backlog.cancel("0", now=5) is JobState.QUEUED
            assert await backlog.cancel("2", now=5) is JobState.RUNNING
            assert await backlog.cancel_requested(["2"]) == ["2"]
            old = await backlog.get("1")
            assert old is not None
            assert old.rank == old.priority  # migration 5: no aging before it
            # the claim function (new signature, rank order) claims the one job left queued
            claimed = await backlog.claim("a", 10, owner="w", lease_seconds=1, now=6)
            assert [r.id for r in claimed] == ["1"]
        [[version]] = await pg.execute(raw, pg_sql.META_VERSION)
        assert version == pg_sql.SCHEMA_VERSION
    finally:
        await pg.drop_schema(dsn, schema)


async def test_a_version_6_sqlite_file_gets_tenants_and_claims_old_jobs(tmp_path: Path) -> None:
    """Migration 7 adds tenant and trace (old rows have none), the per-tenant queue index
    and the fair-share tables: old jobs are claimed by the plain path, and a tenant's new
    jobs take turns with them."""
    path = _sqlite_file_at(tmp_path / "v6.db", 6)
    async with SQLiteBacklog(path) as backlog:
        old = await backlog.get("0")
        assert old is not None
        assert (old.tenant, old.trace) == (None, None)
        await backlog.submit(
            [replace(new_job(i, lane="a"), tenant="acme") for i in range(3)], now=1
        )
        got = await backlog.claim("a", 2, owner="w", lease_seconds=10, now=2)
        assert sorted(r.tenant or "-" for r in got) == ["-", "acme"]
        assert await backlog.queued_by_tenant("a") == [("acme", 2)]
    with contextlib.closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == sqlite_sql.SCHEMA_VERSION
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        assert {"jobs_queued", "jobs_queued_tenant", "lane_tenants"} <= names


async def test_a_version_5_postgres_schema_gets_tenants_and_claims_old_jobs() -> None:
    from scheduler.backlog.postgres import PostgresBacklog

    dsn = pg.dsn_or_skip()
    schema = pg.new_schema()
    try:
        raw = await _postgres_schema_at(dsn, schema, 5)
        async with PostgresBacklog(dsn, schema=schema) as backlog:
            old = await backlog.get("0")
            assert old is not None
            assert (old.tenant, old.trace) == (None, None)
            assert await backlog.queued_count("a") == 2
            await backlog.submit(
                [replace(new_job(i, lane="a"), tenant="acme") for i in range(3)], now=1
            )
            got = await backlog.claim("a", 2, owner="w", lease_seconds=10, now=2)
            assert sorted(r.tenant or "-" for r in got) == ["-", "acme"]
            assert await backlog.queued_by_tenant("a") == [("acme", 2)]
            assert await backlog.cancel_task(None, tenant="acme", now=3) == 3
            assert await backlog.queued_by_tenant("a") == []
        [[version]] = await pg.execute(raw, pg_sql.META_VERSION)
        assert version == pg_sql.SCHEMA_VERSION
    finally:
        await pg.drop_schema(dsn, schema)


async def test_a_version_7_sqlite_file_gets_the_fair_index_and_claims_fairly(
    tmp_path: Path,
) -> None:
    """Migration 8 indexes lane_tenants in fair order. A file from before may store a
    tenant's time below the lane's clock (its start tag is the clock): the claims still
    go in start-tag order, ties by tenant name."""
    path = _sqlite_file_at(tmp_path / "v7.db", 7)
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        for i, tenant in enumerate(["zed", "acme", "beta"]):
            conn.execute(
                "INSERT INTO jobs (id, task, lane, args, priority, state, attempts,"
                " max_attempts, run_at, created_at, updated_at, rank, tenant)"
                f" VALUES ('t{i}', 't', 't', '[]', 0, 'queued', 0, 3, 0, 0, 0, 0, '{tenant}')"
            )
        conn.execute("INSERT INTO lane_queued (lane, n, vclock) VALUES ('t', 3, 5)")
        conn.executemany(
            "INSERT INTO lane_tenants (lane, tenant, n, vtime) VALUES ('t', ?, 1, ?)",
            [("zed", 1.0), ("acme", 5.0), ("beta", 7.0)],
        )
    async with SQLiteBacklog(path) as backlog:
        order = []
        for now in range(1, 5):
            got = await backlog.claim("t", 1, owner="w", lease_seconds=10, now=now)
            order += [r.tenant for r in got]
        assert order == ["acme", "zed", "beta"]  # start tags 5, 5 (zed's 1 < clock), 7
    with contextlib.closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == sqlite_sql.SCHEMA_VERSION
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        assert "lane_tenants_fair" in names


async def test_a_version_6_postgres_schema_gets_the_fair_index_and_claims_fairly() -> None:
    """Migration 7 indexes floodgate_lane_tenants in fair order; times stored below the
    lane's clock (start tag: the clock) still claim in start-tag order, ties by name."""
    from scheduler.backlog.postgres import PostgresBacklog

    dsn = pg.dsn_or_skip()
    schema = pg.new_schema()
    try:
        raw = await _postgres_schema_at(dsn, schema, 6)
        for i, tenant in enumerate(["zed", "acme", "beta"]):
            await pg.execute(
                raw,
                "INSERT INTO floodgate_jobs (id, task, lane, args, priority, state, attempts,"
                " max_attempts, run_at, created_at, updated_at, rank, tenant)"
                f" VALUES ('t{i}', 't', 't', '[]', 0, 'queued', 0, 3, 0, 0, 0, 0, '{tenant}')",
            )
        await pg.execute(raw, "UPDATE floodgate_lane_queued SET vclock = 5 WHERE lane = 't'")
        for tenant, vtime in [("zed", 1), ("acme", 5), ("beta", 7)]:
            await pg.execute(
                raw,
                f"UPDATE floodgate_lane_tenants SET vtime = {vtime}"
                f" WHERE lane = 't' AND tenant = '{tenant}'",
            )
        async with PostgresBacklog(dsn, schema=schema) as backlog:
            order = []
            for now in range(1, 5):
                got = await backlog.claim("t", 1, owner="w", lease_seconds=10, now=now)
                order += [r.tenant for r in got]
            assert order == ["acme", "zed", "beta"]  # start tags 5, 5 (zed's 1 < clock), 7
        [[version]] = await pg.execute(raw, pg_sql.META_VERSION)
        assert version == pg_sql.SCHEMA_VERSION
        [[count]] = await pg.execute(
            raw,
            "SELECT count(*) FROM pg_indexes WHERE indexname = 'floodgate_lane_tenants_fair'"
            " AND schemaname = current_schema()",
        )
        assert count == 1
    finally:
        await pg.drop_schema(dsn, schema)
