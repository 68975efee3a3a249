"""The admin API over real HTTP (uvicorn on 127.0.0.1): probes, status, jobs, gate, tokens."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from scheduler import ConfigError, JobState
from scheduler.asgi import admin_app

from .admin_fixtures import TOKEN, busy_scheduler, make_scheduler
from .http_helpers import serve

AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def test_probes_and_status_match_the_scheduler(tmp_path: Path) -> None:
    async with (
        busy_scheduler(tmp_path / "a.db") as sched,
        serve(admin_app(sched)) as url,
        httpx.AsyncClient(base_url=url) as client,
    ):
        assert (await client.get("/healthz")).json() == {"status": "alive"}
        ready = await client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["ready"] is True
        assert ready.json()["backlog"] == "ok"
        assert ready.json()["gate"] == {"open": False, "reason": "maintenance"}

        status = (await client.get("/api/status")).json()
        stats = sched.stats()
        assert [lane["name"] for lane in status["lanes"]] == ["interactive", "batch"]
        for lane in status["lanes"]:
            expected = stats[lane["name"]]
            for field in ("queued", "running", "max_concurrency", "completed", "failed"):
                assert lane[field] == getattr(expected, field), field
            assert lane["shed_total"] == expected.shed_total
            assert lane["wait"]["p95"] == expected.wait.p95
        assert status["lanes"][0]["shed"] == {"queue_full": 1}
        assert status["backlog"] == {"batch": {"dead": 2, "queued": 3}}
        assert status["gate"] == {"open": False, "reason": "maintenance"}
        assert status["scheduler"]["state"] == "running"
        assert status["upstreams"] == []
        assert status["admin"] == {"read_only": True}


async def test_readyz_is_503_until_the_scheduler_runs(tmp_path: Path) -> None:
    sched = make_scheduler(tmp_path / "a.db")
    async with serve(admin_app(sched)) as url, httpx.AsyncClient(base_url=url) as client:
        response = await client.get("/readyz")
        assert response.status_code == 503
        assert response.json()["problems"] == ["scheduler is new"]
        assert (await client.get("/healthz")).status_code == 200
        status = (await client.get("/api/status")).json()
        assert status["backlog"] is None
        assert "open scheduler" in status["backlog_error"]
        assert (await client.get("/api/jobs")).status_code == 503


async def test_jobs_list_show_and_requeue_with_the_token(tmp_path: Path) -> None:
    async with busy_scheduler(tmp_path / "a.db") as sched:
        app = admin_app(sched, token=TOKEN)
        async with serve(app) as url, httpx.AsyncClient(base_url=url) as client:
            dead = (await client.get("/api/jobs", params={"state": "dead"})).json()["jobs"]
            assert [job["state"] for job in dead] == ["dead", "dead"]
            assert dead[0]["error"] == "RuntimeError: boom 0"
            assert "traceback" not in dead[0]
            one = (await client.get(f"/api/jobs/{dead[0]['id']}")).json()
            assert "RuntimeError: boom 0" in one["traceback"]
            queued = (await client.get("/api/jobs", params={"state": "queued"})).json()["jobs"]
            assert len(queued) == 3
            assert (await client.get("/api/jobs/nope")).status_code == 404

            path = f"/api/jobs/{dead[0]['id']}/requeue"
            assert (await client.post(path)).status_code == 401
            wrong = await client.post(path, headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401
            assert "Bearer" in wrong.headers["www-authenticate"]
            assert (await client.post(path, headers=AUTH)).json() == {"requeued": 1}
            again = await client.post(path, headers=AUTH)  # queued now, not dead
            assert again.status_code == 409
            assert "queued" in again.json()["error"]
            assert (await client.post("/api/jobs/nope/requeue", headers=AUTH)).status_code == 404
            everything = await client.post("/api/jobs/requeue-dead", headers=AUTH)
            assert everything.json() == {"requeued": 1}
            assert await sched.jobs(JobState.DEAD) == []

            bad = await client.get("/api/jobs", params={"state": "sleeping"})
            assert bad.status_code == 400
            assert (await client.get("/api/jobs", params={"limit": "0"})).status_code == 400


async def test_gate_pause_and_resume(tmp_path: Path) -> None:
    sched = make_scheduler(tmp_path / "a.db")
    async with (
        sched,
        serve(admin_app(sched, token=TOKEN)) as url,
        httpx.AsyncClient(base_url=url, headers=AUTH) as client,
    ):
        paused = await client.post("/api/gate/pause", json={"reason": "deploy"})
        assert paused.json()["gate"] == {"open": False, "reason": "deploy"}
        assert paused.json()["fleet"]["paused"] is False  # only this worker
        assert sched.gate.reason == "deploy"
        assert not sched.stats().gate_open
        assert (await client.post("/api/gate/resume")).json()["gate"]["open"] is True
        assert sched.gate.is_open
        default = await client.post("/api/gate/pause")
        assert default.json()["gate"]["reason"] == "paused from the admin API"
        bad = await client.post("/api/gate/pause", json={"reason": 5})
        assert bad.status_code == 400
        garbage = await client.post("/api/gate/pause", content=b"{not json")
        assert garbage.status_code == 400


async def test_without_a_token_the_api_is_read_only(tmp_path: Path) -> None:
    sched = make_scheduler(tmp_path / "a.db")
    async with sched:
        for app in (admin_app(sched), admin_app(sched, token=TOKEN, read_only=True)):
            async with serve(app) as url, httpx.AsyncClient(base_url=url, headers=AUTH) as c:
                for path in ("/api/gate/pause", "/api/gate/resume", "/api/jobs/requeue-dead"):
                    refused = await c.post(path)
                    assert refused.status_code == 403
                    assert "read-only" in refused.json()["error"]
                assert (await c.get("/api/status")).json()["admin"]["read_only"] is True
        assert sched.gate.is_open
    with pytest.raises(ConfigError, match="needs a token"):
        admin_app(sched, read_only=False)
    with pytest.raises(TypeError):
        admin_app("not a scheduler")  # type: ignore[arg-type]


async def test_mounted_under_a_prefix_the_dashboard_and_api_work(tmp_path: Path) -> None:
    sched = make_scheduler(tmp_path / "a.db")
    host = Starlette(routes=[Mount("/admin", admin_app(sched))])
    async with sched, serve(host) as url, httpx.AsyncClient(base_url=url) as client:
        page = await client.get("/admin", follow_redirects=True)
        assert page.status_code == 200
        assert str(page.url).endswith("/admin/")
        assert "<title>Floodgate</title>" in page.text
        assert "connect-src 'self'" in page.headers["content-security-policy"]
        assert "http" not in page.text.split("<script>")[1], "no URL outside the app"
        status = await client.get("/admin/api/status")
        assert status.json()["scheduler"]["state"] == "running"


async def test_cancel_a_job_with_the_token(tmp_path: Path) -> None:
    async with busy_scheduler(tmp_path / "a.db") as sched:
        app = admin_app(sched, token=TOKEN)
        async with serve(app) as url, httpx.AsyncClient(base_url=url) as client:
            queued = (await client.get("/api/jobs", params={"state": "queued"})).json()["jobs"]
            path = f"/api/jobs/{queued[0]['id']}/cancel"
            assert (await client.post(path)).status_code == 401
            answer = await client.post(path, headers=AUTH)
            assert answer.json() == {"cancelled": True, "state": "cancelled"}
            again = await client.post(path, headers=AUTH)  # finished: a no-op answer
            assert again.json() == {"cancelled": False, "state": "cancelled"}
            assert (await client.post("/api/jobs/nope/cancel", headers=AUTH)).status_code == 404
            assert (await sched.job(queued[0]["id"])).state is JobState.CANCELLED
