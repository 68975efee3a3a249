"""The fleet as users reach it: the admin API, the CLI, stats() and /metrics."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from scheduler import Scheduler
from scheduler.asgi import admin_app
from scheduler.fleet_stores import SQLiteFleetStore
from scheduler.testing import eventually
from workers.cli import main

from .admin_fixtures import TOKEN, make_scheduler
from .http_helpers import serve

AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def test_a_fleet_pause_through_one_workers_admin_api_pauses_the_other(
    tmp_path: Path,
) -> None:
    path = tmp_path / "a.db"
    first, second = make_scheduler(path), make_scheduler(path)
    async with (
        first,
        second,
        serve(admin_app(first, token=TOKEN)) as url,
        httpx.AsyncClient(base_url=url, headers=AUTH) as client,
    ):
        paused = await client.post("/api/gate/pause", json={"reason": "deploy", "fleet": True})
        assert paused.status_code == 200
        await eventually(lambda: not second.gate.is_open, timeout=3)
        assert second.gate.reason == f"fleet: deploy (by {first.owner})"
        fleet = second.stats().fleet
        assert fleet is not None
        assert fleet.paused_reason == "deploy"
        assert fleet.paused_by == first.owner
        status = (await client.get("/api/status")).json()
        assert status["fleet"]["paused_reason"] == "deploy"
        metrics = (await client.get("/metrics")).text
        assert "floodgate_fleet_paused 1.0" in metrics
        assert "floodgate_fleet_reachable 1.0" in metrics
        bad = await client.post("/api/gate/resume", json={"fleet": "yes"})
        assert bad.status_code == 400
        resumed = await client.post("/api/gate/resume", json={"fleet": True})
        assert resumed.status_code == 200
        await eventually(lambda: second.gate.is_open, timeout=3)
        assert first.gate.is_open


async def test_a_fleet_pause_needs_a_shared_backlog() -> None:
    sched = Scheduler(":memory:")
    async with (
        sched,
        serve(admin_app(sched, token=TOKEN)) as url,
        httpx.AsyncClient(base_url=url, headers=AUTH) as client,
    ):
        refused = await client.post("/api/gate/pause", json={"fleet": True})
        assert refused.status_code == 409
        assert "fleet" in refused.json()["error"]
        assert sched.gate.is_open


async def test_floodgate_pause_fleet_writes_the_backlog_and_workers_follow(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "a.db"
    sched = make_scheduler(path)
    async with sched:
        argv = ["pause", "--fleet", "--backlog", str(path), "--reason", "quota \x1b[31m"]
        code = await asyncio.to_thread(main, argv)
        out = capsys.readouterr().out
        assert code == 0
        assert "fleet gate paused" in out
        assert "\x1b" not in out  # printed escaped
        await eventually(lambda: not sched.gate.is_open, timeout=3)
        assert sched.gate.reason is not None
        assert sched.gate.reason.startswith("fleet: quota")
        store = SQLiteFleetStore(str(path))
        try:
            pause = await store.operator()
        finally:
            await store.close()
        assert pause is not None
        assert "floodgate pause" in pause.by
        code = await asyncio.to_thread(main, ["status", "--backlog", str(path)])
        shown = capsys.readouterr().out
        assert code == 0
        assert "fleet gate PAUSED" in shown
        assert "quota" in shown
        code = await asyncio.to_thread(main, ["resume", "--fleet", "--backlog", str(path)])
        assert code == 0
        await eventually(lambda: sched.gate.is_open, timeout=3)


def test_floodgate_pause_fleet_on_a_missing_backlog_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["pause", "--fleet", "--backlog", str(tmp_path / "nope.db")])
    assert code != 0
    assert "no backlog" in capsys.readouterr().err
