"""What only the PostgreSQL backlog promises: migrations, NOTIFY, connection loss, errors.

The shared contract runs in ``tests/backlog`` (backend ``postgres``). These
tests need ``FLOODGATE_TEST_POSTGRES_DSN`` and are skipped without it.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from scheduler import BacklogError, ConfigError, JobState
from scheduler.backlog import (
    BacklogUnavailable,
    MemoryBacklog,
    Outcome,
    SQLiteBacklog,
    WaitsForWork,
    make_backlog,
)
from scheduler.backlog._postgres_schema import SCHEMA_VERSION
from scheduler.backlog.postgres import PostgresBacklog
from scheduler.testing import eventually
from tests.backlog import pg
from tests.backlog.helpers import new_job

OWNER = "w1"


@pytest.fixture
def dsn() -> str:
    return pg.dsn_or_skip()


@pytest.fixture
async def schema(dsn: str) -> AsyncIterator[str]:
    name = pg.new_schema()
    try:
        yield name
    finally:
        await pg.drop_schema(dsn, name)


Factory = Callable[..., Awaitable[PostgresBacklog]]


@pytest.fixture
async def opened(dsn: str, schema: str) -> AsyncIterator[Factory]:
    """``await opened(**options)``: an open PostgresBacklog on the test's schema."""
    made: list[PostgresBacklog] = []

    async def make(**options: Any) -> PostgresBacklog:
        options.setdefault("schema", schema)
        options.setdefault("application_name", schema)
        backlog = PostgresBacklog(dsn, **options)
        made.append(backlog)
        await backlog.open()
        return backlog

    yield make
    for backlog in made:
        await backlog.close()


# -- make_backlog ---------------------------------------------------------------------


def test_make_backlog_picks_postgres_for_a_dsn(monkeypatch: pytest.MonkeyPatch) -> None:
    for dsn in ("postgresql://u@127.0.0.1/db", "postgres://u@127.0.0.1/db"):
        assert isinstance(make_backlog(dsn), PostgresBacklog)
    assert isinstance(make_backlog(":memory:"), MemoryBacklog)
    assert isinstance(make_backlog("x.db"), SQLiteBacklog)
    monkeypatch.setitem(sys.modules, "asyncpg", None)  # as if not installed
    with pytest.raises(ConfigError, match=r"pip install 'floodgate\[postgres\]'"):
        make_backlog("postgresql://u@127.0.0.1/db")


def test_bad_options_are_refused() -> None:
    with pytest.raises(ConfigError, match="schema"):
        PostgresBacklog("postgresql://u@127.0.0.1/db", schema='x"; DROP TABLE t; --')
    with pytest.raises(ConfigError, match="DSN"):
        PostgresBacklog("mysql://u@127.0.0.1/db")
    with pytest.raises(ConfigError):
        PostgresBacklog("postgresql://u@127.0.0.1/db", pool_max=0)


async def test_an_unreachable_server_is_backlog_unavailable_without_the_password() -> None:
    backlog = PostgresBacklog(
        "postgresql://someone:s3cret@127.0.0.1:1/db", connect_timeout=2, listen=False
    )
    with pytest.raises(BacklogUnavailable, match="unreachable") as info:
        await backlog.open()
    assert isinstance(info.value, BacklogError)
    assert "s3cret" not in str(info.value)
    assert "someone@127.0.0.1:1/db" in str(info.value)
    with pytest.raises(BacklogError, match="not open"):
        await backlog.get("x")


# -- schema and migrations --------------------------------------------------------------


async def test_schema_is_created_versioned_and_indexed(
    opened: Factory, dsn: str, schema: str
) -> None:
    backlog = await opened()
    assert isinstance(backlog, WaitsForWork)
    local = pg.with_settings(dsn, search_path=schema)
    [[version]] = await pg.execute(local, "SELECT version FROM floodgate_meta")
    assert version == SCHEMA_VERSION >= 1
    names = {r[0] for r in await pg.execute(local, "SELECT indexname FROM pg_indexes"
                                                   " WHERE schemaname = $1", schema)}  # fmt: skip
    assert {"floodgate_jobs_claim", "floodgate_jobs_key", "floodgate_jobs_state_updated"} <= names
    types = dict(
        await pg.execute(
            local,
            "SELECT column_name, data_type FROM information_schema.columns"
            " WHERE table_schema = $1 AND table_name = 'floodgate_jobs'",
            schema,
        )
    )
    assert types["args"] == types["result"] == "text"  # not jsonb: corrupt rows can exist


async def test_concurrent_opens_migrate_once(opened: Factory, dsn: str, schema: str) -> None:
    backlogs = await asyncio.gather(*(opened(listen=False) for _ in range(6)))
    jobs = await backlogs[0].submit([new_job(1)], now=0)
    assert await backlogs[5].get(jobs[0].id) == jobs[0]
    local = pg.with_settings(dsn, search_path=schema)
    assert await pg.execute(local, "SELECT id, version FROM floodgate_meta") == [
        (1, SCHEMA_VERSION)
    ]


async def test_a_newer_schema_is_refused_and_reopening_keeps_everything(
    opened: Factory, dsn: str, schema: str
) -> None:
    first = await opened()
    [job] = await first.submit([new_job(1, key="k")], now=0)
    await first.close()
    again = await opened()
    assert await again.get(job.id) == job
    [same] = await again.submit([new_job(2, key="k")], now=1)
    assert same.id == job.id
    local = pg.with_settings(dsn, search_path=schema)
    await pg.execute(local, "UPDATE floodgate_meta SET version = 99")
    with pytest.raises(BacklogError, match="newer than this Floodgate knows"):
        await opened()


async def test_the_dsn_search_path_picks_the_schema(dsn: str, schema: str) -> None:
    await pg.create_schema(dsn, schema)
    backlog = make_backlog(pg.with_settings(dsn, search_path=schema))
    async with backlog:  # type: ignore[attr-defined]
        [job] = await backlog.submit([new_job(7)], now=0)
    local = pg.with_settings(dsn, search_path=schema)
    assert await pg.execute(local, "SELECT id FROM floodgate_jobs") == [(job.id,)]
    missing = PostgresBacklog(pg.with_settings(dsn, search_path="floodgate_nowhere"))
    with pytest.raises(BacklogError, match="no schema of search_path"):
        await missing.open()


# -- submit ---------------------------------------------------------------------------------


async def test_concurrent_submits_are_group_committed(opened: Factory) -> None:
    backlog = await opened()
    records = await asyncio.gather(*(backlog.submit([new_job(i)], now=0) for i in range(60)))
    assert [r[0].args for r in records] == [[i] for i in range(60)]
    stats = backlog.stats()
    assert stats["submitted"] == 60
    assert stats["submit_flushes"] < 60
    listed = await backlog.list_jobs(limit=100)
    assert [j.args[0] for j in listed] == list(range(60))  # one batch, insertion order kept


async def test_racing_submitters_agree_on_every_key(opened: Factory) -> None:
    a, b = await opened(listen=False), await opened(listen=False)
    jobs = [new_job(i, key=f"doc-{i}") for i in range(30)]
    got_a, got_b = await asyncio.gather(a.submit(jobs, now=0), b.submit(jobs[::-1], now=0))
    assert [r.id for r in got_a] == [r.id for r in got_b][::-1]
    assert (await a.counts())["batch"] == {"queued": 30}


# -- LISTEN / NOTIFY ----------------------------------------------------------------------


async def timed_wait(backlog: PostgresBacklog, lane: str, timeout: float) -> float:
    start = time.monotonic()
    await backlog.wait_for_work(lane, timeout)
    return time.monotonic() - start


async def test_wait_for_work_wakes_on_a_submit_from_another_backlog(opened: Factory) -> None:
    listener, submitter = await opened(), await opened(listen=False)
    waiting = asyncio.create_task(timed_wait(listener, "batch", 10))
    other_lane = asyncio.create_task(timed_wait(listener, "other", 0.05))
    await asyncio.sleep(0.005)
    await submitter.submit([new_job(1)], now=0)
    assert await waiting < 5
    assert await other_lane >= 0.05  # a NOTIFY for "batch" does not wake "other"
    # a NOTIFY nobody waited for is kept until the lane's next claim
    await submitter.submit([new_job(2, lane="other")], now=0)
    await eventually(lambda: listener.stats()["notified"] >= 2, timeout=10)
    assert await timed_wait(listener, "other", 10) < 1
    await submitter.submit([new_job(3, lane="other")], now=0)
    await eventually(lambda: listener.stats()["notified"] >= 3, timeout=10)
    await listener.claim("other", 10, owner=OWNER, lease_seconds=5, now=0)  # saw it
    assert await timed_wait(listener, "other", 0.05) >= 0.05
    # a job scheduled for later wakes nobody
    await submitter.submit([new_job(4, run_at=1e12)], now=0)
    assert await timed_wait(listener, "batch", 0.05) >= 0.05


@pytest.mark.parametrize("how", ["release", "requeue", "retry"])
async def test_work_coming_back_wakes_waiters(opened: Factory, how: str) -> None:
    listener, worker = await opened(), await opened(listen=False)
    [job] = await worker.submit([new_job(max_attempts=2)], now=0)
    await worker.claim("batch", 1, owner=OWNER, lease_seconds=5, now=0)
    if how == "requeue":
        await worker.complete([Outcome.dead(job.id, OWNER, error="e")], now=1)
    await eventually(lambda: listener.stats()["notified"] >= 1, timeout=10)
    await listener.wait_for_work("batch", 0)  # takes the submit's NOTIFY
    waiting = asyncio.create_task(timed_wait(listener, "batch", 10))
    await asyncio.sleep(0.005)
    if how == "release":
        assert await worker.release([job.id], owner=OWNER, now=1) == 1
    elif how == "requeue":
        assert await worker.requeue(job.id, now=2) == 1
    else:
        retry = Outcome.retry(job.id, OWNER, run_at=1, error="503")
        assert await worker.complete([retry], now=1) == 1
    assert await waiting < 5


async def test_the_listener_reconnects_after_its_connection_is_killed(
    opened: Factory, dsn: str, schema: str
) -> None:
    listener = await opened()
    submitter = await opened(listen=False, application_name=f"{schema}_s")
    assert await pg.terminate(dsn, schema) >= 1
    await eventually(lambda: listener.stats()["reconnects"] >= 1, timeout=10)
    waiting = asyncio.create_task(timed_wait(listener, "batch", 10))
    await asyncio.sleep(0.005)
    await submitter.submit([new_job(1)], now=0)
    assert await waiting < 5
    assert await listener.queued_count("batch") == 1  # the pool replaced its dead connection


# -- connection loss -----------------------------------------------------------------------


async def test_a_connection_killed_mid_claim_is_backlog_unavailable_then_recovers(
    opened: Factory, dsn: str, schema: str
) -> None:
    """A claim waiting for the lane's ceiling lock (held by another session) loses its
    connection: BacklogUnavailable, nothing claimed; the next claim works."""
    import asyncpg  # type: ignore[import-untyped]

    backlog = await opened(listen=False)
    await backlog.submit([new_job(i) for i in range(3)], now=0)
    holder = await asyncpg.connect(pg.with_settings(dsn, search_path=schema))
    try:
        tx = holder.transaction()
        await tx.start()
        await holder.execute(
            "SELECT pg_advisory_xact_lock(hashtext('floodgate.lane:' || current_schema()),"
            " hashtext('batch'))"
        )
        claim = asyncio.create_task(
            backlog.claim("batch", 3, owner=OWNER, lease_seconds=5, now=0, max_running=2)
        )
        rows = []
        for _ in range(400):  # bounded: until the claim waits on the lock
            rows = await holder.fetch(
                "SELECT 1 FROM pg_stat_activity WHERE application_name = $1"
                " AND wait_event_type = 'Lock'",
                schema,
            )
            if rows:
                break
            await asyncio.sleep(0.005)
        assert rows, "the claim waits for the lane's lock"
        assert await pg.terminate(dsn, schema) >= 1
        with pytest.raises(BacklogUnavailable):
            await claim
        await tx.rollback()
    finally:
        await holder.close()
    assert (await backlog.counts())["batch"] == {"queued": 3}
    got = await backlog.claim("batch", 3, owner=OWNER, lease_seconds=5, now=0, max_running=2)
    assert len(got) == 2
    assert {r.state for r in got} == {JobState.RUNNING}


async def test_a_claim_whose_answer_was_lost_gives_its_jobs_back_next_time(
    opened: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The claim committed but the connection died before the answer came back: the owner
    never heard of those jobs. Its next claim of the lane hands them back first, attempt
    and all, instead of leaving them leased until the lease runs out."""
    backlog = await opened(listen=False)
    jobs = await backlog.submit([new_job(i, max_attempts=1) for i in range(3)], now=0)
    real_write = backlog._write

    async def lost_answer(body: Any) -> Any:
        await real_write(body)
        raise BacklogUnavailable("connection lost after the commit")

    monkeypatch.setattr(backlog, "_write", lost_answer)
    with pytest.raises(BacklogUnavailable):
        await backlog.claim("batch", 2, owner=OWNER, lease_seconds=60, now=1)
    monkeypatch.setattr(backlog, "_write", real_write)
    assert (await backlog.counts())["batch"] == {"queued": 1, "running": 2}
    got = await backlog.claim("batch", 3, owner=OWNER, lease_seconds=60, now=2)
    assert [r.id for r in got] == [j.id for j in jobs]  # claim order, all of them
    assert [r.attempts for r in got] == [1, 1, 1]  # the unheard claim cost no attempt
    assert backlog.stats()["unheard_released"] == 2
