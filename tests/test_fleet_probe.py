"""The probe's lease and a failing probe through the real fleet stores (two
connections to one SQLite file; two to PostgreSQL): one process probes, the
other heeds what it says, and takes over once the lease lapses."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from scheduler import FakeClock
from scheduler.fleet import FleetSync
from scheduler.fleet_stores import PostgresFleetStore, SQLiteFleetStore
from scheduler.gate import HealthGate
from scheduler.upstream import Upstream

PG_DSN = os.environ.get("FLOODGATE_TEST_POSTGRES_DSN")
PROBE = Upstream("llm", probe_url="http://127.0.0.1:9/health", probe_interval=1.0)


async def _probe_through(store_a: object, store_b: object) -> None:
    clock = FakeClock()
    gates = [HealthGate([PROBE], clock=clock) for _ in range(2)]
    syncs = [
        FleetSync(gate, store, clock, member=name)  # type: ignore[arg-type]
        for gate, store, name in zip(gates, (store_a, store_b), "ab", strict=True)
    ]
    a, b = (gate.upstream("llm") for gate in gates)
    try:
        for sync in (*syncs, *syncs):
            await sync.sync_once()
        assert not a.probe_elsewhere()
        assert b.probe_elsewhere()
        a.probe_ok = False
        for sync in syncs:
            await sync.sync_once()
        assert b.blocked() == "probe"
        a.probe_ok = True
        for sync in syncs:
            await sync.sync_once()
        assert b.blocked() is None
        clock.advance(0.5)  # b tries to take the lease while a's is live: refused
        b.fleet_probe_until = float("-inf")
        await syncs[1].sync_once()
        assert b.probe_elsewhere()
        clock.advance(2 * PROBE.probe_interval + 2.0)  # a stopped renewing: it lapses
        await syncs[1].sync_once()  # b sees no live lease ...
        await syncs[1].sync_once()  # ... takes it ...
        await syncs[0].sync_once()  # ... and a hears of it
        assert not b.probe_elsewhere()
        assert a.probe_elsewhere()
    finally:
        for sync in syncs:
            await sync.store.close()


async def test_the_probe_lease_through_one_sqlite_file(tmp_path: Path) -> None:
    path = str(tmp_path / "fleet.db")
    await _probe_through(SQLiteFleetStore(path), SQLiteFleetStore(path))


@pytest.mark.skipif(PG_DSN is None, reason="PostgreSQL tests need FLOODGATE_TEST_POSTGRES_DSN")
async def test_the_probe_lease_through_postgresql() -> None:
    assert PG_DSN is not None
    import asyncpg  # type: ignore[import-untyped]

    schema = f"fleet_probe_{os.getpid()}"
    admin = await asyncpg.connect(PG_DSN)
    try:
        await admin.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        settings = {"search_path": f'"{schema}"'}
        await _probe_through(
            PostgresFleetStore(PG_DSN, settings), PostgresFleetStore(PG_DSN, settings)
        )
    finally:
        await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await admin.close()
