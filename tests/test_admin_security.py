"""Who may read the admin API: the token on a public bind, the Host check, token strength.

Non-loopback binds are configured logically (``bind=("0.0.0.0", port)``) while
the socket itself listens on 127.0.0.1 only: the decision follows the
configured bind, so no public socket is ever opened.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.routing import Mount

from scheduler import ConfigError
from scheduler.asgi import admin_app
from workers.admin_server import UvicornServer, bind_socket
from workers.cli import main

from .admin_fixtures import TOKEN, busy_scheduler, make_scheduler
from .http_helpers import serve
from .worker_helpers import WorkerProcess

BEARER = {"Authorization": f"Bearer {TOKEN}"}
READS = ("/", "/metrics", "/api/status", "/api/jobs", "/api/jobs?state=dead")


def basic(user: str, password: str) -> dict[str, str]:
    encoded = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {encoded}"}


def asgi_client(app: Any, base_url: str = "http://127.0.0.1:8765") -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base_url)


async def test_public_bind_needs_the_token_for_every_read_but_the_probes(tmp_path: Path) -> None:
    """Real uvicorn on 127.0.0.1; the app is told it is bound to 0.0.0.0 on that port."""
    async with busy_scheduler(tmp_path / "a.db") as sched:
        sock = bind_socket("127.0.0.1", 0)
        port = sock.getsockname()[1]
        app = admin_app(sched, token=TOKEN, bind=("0.0.0.0", port))
        async with (
            UvicornServer(app, sock) as server,
            httpx.AsyncClient(base_url=server.url) as client,
        ):
            dead = [job.id for job in await sched.jobs(state=None) if job.state.value == "dead"]
            assert dead
            job_path = f"/api/jobs/{dead[0]}"
            for path in (*READS, job_path):
                refused = await client.get(path)
                assert refused.status_code == 401, path
                assert "boom" not in refused.text, f"{path} leaked job data"
                assert "token" in refused.json()["error"]
                assert refused.headers["www-authenticate"].startswith(
                    "Basic" if path == "/" else "Bearer"
                )
                wrong = await client.get(path, headers={"Authorization": "Bearer " + "x" * 20})
                assert wrong.status_code == 401, path
                assert (await client.get(path, headers=BEARER)).status_code == 200, path
                # a browser signs in to the dashboard with Basic auth: any user, the token
                assert (await client.get(path, headers=basic("ops", TOKEN))).status_code == 200
                assert (await client.get(path, headers=basic("ops", "nope"))).status_code == 401
            shown = (await client.get(job_path, headers=BEARER)).json()
            assert "RuntimeError: boom" in shown["traceback"]
            for probe in ("/healthz", "/readyz"):
                assert (await client.get(probe)).status_code == 200, probe
            # mutations stay Bearer-only (Basic credentials are sent by browsers on their own)
            basic_post = await client.post("/api/gate/resume", headers=basic("ops", TOKEN))
            assert basic_post.status_code == 401
            assert (await client.post("/api/gate/resume", headers=BEARER)).status_code == 200


async def test_loopback_bind_keeps_reads_open_and_mutations_behind_the_token(
    tmp_path: Path,
) -> None:
    async with busy_scheduler(tmp_path / "a.db") as sched:
        app = admin_app(sched, token=TOKEN, bind="127.0.0.1:8765")
        async with asgi_client(app) as client:
            for path in READS:
                assert (await client.get(path)).status_code == 200, path
            assert (await client.post("/api/gate/resume")).status_code == 401


@pytest.mark.parametrize(
    ("host", "status"),
    [
        ("127.0.0.1:8765", 200),
        ("localhost:8765", 200),
        ("LOCALHOST.:8765", 200),
        ("[::1]:8765", 200),
        ("[0:0:0:0:0:0:0:1]:8765", 200),
        ("attacker.example:8765", 421),  # DNS rebinding: the name is the attacker's
        ("attacker.example", 421),
        ("localhost:9999", 421),  # another port on this machine
        ("localhost", 421),  # no port means 80
        ("10.1.2.3:8765", 421),
        ("[::1", 400),
        ("localhost:port", 400),
    ],
)
async def test_host_must_name_a_loopback_bind_and_its_port(
    tmp_path: Path, host: str, status: int
) -> None:
    sched = make_scheduler(tmp_path / "a.db")
    async with sched, asgi_client(admin_app(sched, bind=("127.0.0.1", 8765))) as client:
        response = await client.get("/api/status", headers={"Host": host})
        assert response.status_code == status
        if status != 200:
            error = response.json()["error"]
            assert "Host" in error
            if status == 421:
                assert host in error
                assert "localhost:8765" in error, "the message says which names are served"
                assert "--admin-allowed-host" in error
        # the probes answer whatever the Host (orchestrators probe by pod IP)
        assert (await client.get("/healthz", headers={"Host": host})).status_code == 200


async def test_a_request_without_a_host_header_is_refused(tmp_path: Path) -> None:
    sched = make_scheduler(tmp_path / "a.db")
    app = admin_app(sched, bind=("127.0.0.1", 8765))
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.0", "method": "GET",
        "scheme": "http", "path": "/api/status", "raw_path": b"/api/status",
        "root_path": "", "query_string": b"", "headers": [],
        "server": ("127.0.0.1", 8765), "client": ("127.0.0.1", 50000),
    }  # fmt: skip
    async with sched:
        await app(scope, receive, send)
    assert sent[0]["status"] == 400
    assert "Host header" in json.loads(sent[1]["body"])["error"]


async def test_allowed_hosts_extend_the_bind_and_make_reads_need_the_token(
    tmp_path: Path,
) -> None:
    sched = make_scheduler(tmp_path / "a.db")
    async with sched:
        tunnel = admin_app(sched, bind=("127.0.0.1", 8765), allowed_hosts=["localhost:9000"])
        async with asgi_client(tunnel) as client:
            ok = await client.get("/api/status", headers={"Host": "localhost:9000"})
            assert ok.status_code == 200, "a loopback alias stays open to read"
            assert (await client.get("/", headers={"Host": "localhost:9001"})).status_code == 421

        with pytest.raises(ConfigError, match="token"):
            admin_app(sched, bind=("127.0.0.1", 8765), allowed_hosts=["admin.example.com"])
        proxied = admin_app(
            sched, token=TOKEN, bind=("127.0.0.1", 8765), allowed_hosts=["admin.example.com"]
        )
        async with asgi_client(proxied, "https://admin.example.com") as client:
            assert (await client.get("/api/status")).status_code == 401
            assert (await client.get("/api/status", headers=BEARER)).status_code == 200
            other = await client.get("/api/status", headers={**BEARER, "Host": "evil.example"})
            assert other.status_code == 421

        public = admin_app(sched, token=TOKEN, bind=("0.0.0.0", 8765), allowed_hosts=["srv1"])
        async with asgi_client(public, "http://srv1:8765") as client:
            assert (await client.get("/metrics", headers=BEARER)).status_code == 200
            loop_name = await client.get("/metrics", headers={**BEARER, "Host": "localhost:8765"})
            assert loop_name.status_code == 200
            assert (await client.get("/metrics", headers={"Host": "srv2:8765"})).status_code == 421


async def test_mounted_without_a_bind_serves_loopback_names_on_any_port(tmp_path: Path) -> None:
    sched = make_scheduler(tmp_path / "a.db")
    host = Starlette(routes=[Mount("/admin", admin_app(sched))])
    async with sched:
        async with asgi_client(host, "http://localhost:8000") as client:
            assert (await client.get("/admin/api/status")).status_code == 200
            assert (await client.get("/admin/healthz")).status_code == 200
            refused = await client.get("/admin/api/status", headers={"Host": "rebound.example"})
            assert refused.status_code == 421
            assert (await client.get("/admin/healthz", headers={"Host": "x.y"})).status_code == 200
        anything = Starlette(
            routes=[Mount("/admin", admin_app(sched, token=TOKEN, allowed_hosts=["*"]))]
        )
        async with asgi_client(anything, "http://behind.proxy") as client:
            assert (await client.get("/admin/api/status")).status_code == 401
            assert (await client.get("/admin/api/status", headers=BEARER)).status_code == 200


@pytest.mark.parametrize(
    ("token", "message"),
    [
        ("s3cret", "at least 16"),
        ("x" * 15, "at least 16"),
        ("", "empty"),
        (" " * 24, "whitespace"),
        ("\t\n" * 10, "whitespace"),
        ("correct horse battery staple", "whitespace"),
        ("long-enough-token-0123\n", "whitespace"),
        ("t\u00f6ken-with-umlaut-0123", "printable ASCII"),
    ],
)
def test_weak_tokens_are_refused_with_a_typed_error(
    tmp_path: Path, token: str, message: str
) -> None:
    sched = make_scheduler(tmp_path / "a.db")
    with pytest.raises(ConfigError, match=message) as caught:
        admin_app(sched, token=token)
    assert token.strip() not in str(caught.value) or not token.strip(), "never echo the token"


def test_a_public_bind_without_a_token_is_a_config_error(tmp_path: Path) -> None:
    sched = make_scheduler(tmp_path / "a.db")
    for bind in ("0.0.0.0:8765", ("::", 8765), "192.0.2.10:8765"):
        with pytest.raises(ConfigError, match="needs a token"):
            admin_app(sched, bind=bind)
    with pytest.raises(ConfigError, match="bind"):
        admin_app(sched, bind="no-port-here")
    admin_app(sched, token="x" * 16, bind="0.0.0.0:8765")  # the shortest accepted


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        st.text(max_size=40),
        st.sampled_from([TOKEN, TOKEN[:-1], TOKEN + "0", f" {TOKEN} ", TOKEN.upper()]),
        st.builds(lambda a, b: a + TOKEN + b, st.text(max_size=3), st.text(max_size=3)),
    )
)
def test_only_the_exact_token_reads_a_public_bind(given_token: str) -> None:
    async def check() -> int:
        sched = make_scheduler(Path(os.devnull))  # never opened: /api/status needs no backlog
        app = admin_app(sched, token=TOKEN, bind=("0.0.0.0", 8765))
        async with asgi_client(app) as client:
            headers = {"Authorization": f"Bearer {given_token}"}
            try:
                response = await client.get("/api/status", headers=headers)
            except (httpx.LocalProtocolError, UnicodeEncodeError):
                return -1  # not a header value httpx will send at all
            return response.status_code

    status = asyncio.run(check())
    assert status in (-1, 401, 200)
    if status != -1:  # e.g. TOKEN + "\xa0": str.strip() drops it, but httpx cannot send it
        assert (status == 200) == (given_token.strip() == TOKEN)


# -- the worker's flags (real subprocesses) --------------------------------------------------

APP = "tests.procs.worker_app:sched"


async def worker_exit(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> str:
    """Start a worker that must refuse its admin flags: exit 2, nothing opened."""
    proc = await WorkerProcess.start(
        "worker", "--app", APP, "--backlog", str(tmp_path / "x.db"), *args,
        env={"FLOODGATE_ADMIN_TOKEN": "", **(env or {})},
    )  # fmt: skip
    try:
        code = await proc.wait()
    finally:
        proc.kill()
    assert code == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "x.db").exists(), "refused before the backlog was opened"
    return proc.stderr


@pytest.mark.slow
async def test_worker_refuses_weak_or_conflicting_tokens_with_exit_2(tmp_path: Path) -> None:
    admin = ("--admin", "127.0.0.1:0")
    err = await worker_exit(tmp_path, *admin, "--admin-token", "short")
    assert "at least 16 characters" in err
    assert "short" not in err.replace("shorter", ""), "the token is not echoed"
    assert "worker.admin_token_visible" in err, "a token on the command line is warned about"
    err = await worker_exit(tmp_path, *admin, env={"FLOODGATE_ADMIN_TOKEN": " " * 20})
    assert "whitespace" in err
    assert "$FLOODGATE_ADMIN_TOKEN" in err
    blank = tmp_path / "blank"
    blank.write_text("\n\n")
    err = await worker_exit(tmp_path, *admin, "--admin-token-file", str(blank))
    assert str(blank) in err
    assert "empty" in err
    err = await worker_exit(tmp_path, *admin, "--admin-token-file", str(tmp_path / "missing"))
    assert "cannot read" in err
    assert str(tmp_path / "missing") in err
    good = tmp_path / "token"
    good.write_text(TOKEN + "\n")
    err = await worker_exit(
        tmp_path, *admin, "--admin-token", TOKEN, "--admin-token-file", str(good)
    )
    assert "not both" in err
    err = await worker_exit(tmp_path, "--admin", "0.0.0.0:0")
    assert "needs --admin-token" in err
    err = await worker_exit(tmp_path, *admin, "--admin-allowed-host", "admin.example.com")
    assert "admin.example.com" in err
    assert "needs a token" in err or "needs --admin-token" in err


@pytest.mark.slow
async def test_worker_reads_its_token_from_a_file_and_checks_the_host(tmp_path: Path) -> None:
    token_file = tmp_path / "admin-token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    worker = await WorkerProcess.start(
        "worker", "--app", APP, "--backlog", str(tmp_path / "x.db"),
        "--admin", "127.0.0.1:0", "--admin-token-file", str(token_file),
        "--admin-allowed-host", "localhost:9000",
        env={"FLOODGATE_ADMIN_TOKEN": ""},
    )  # fmt: skip
    try:
        ready = await worker.wait_event("worker.ready")
        cmdline = Path(f"/proc/{worker.proc.pid}/cmdline").read_bytes()  # noqa: ASYNC240
        assert TOKEN.encode() not in cmdline, "the token is not visible in ps"
        async with httpx.AsyncClient(base_url=ready["admin"]) as client:
            assert (await client.get("/api/status")).status_code == 200  # loopback: open
            paused = await client.post("/api/gate/pause", headers=BEARER)
            assert paused.status_code == 200
            tunnel = await client.get("/api/status", headers={"Host": "localhost:9000"})
            assert tunnel.status_code == 200
            rebound = await client.get("/api/status", headers={"Host": "evil.example"})
            assert rebound.status_code == 421
        assert worker.proc.returncode is None
    finally:
        worker.kill()
        await worker.wait()


async def test_pause_and_resume_read_the_token_from_a_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FLOODGATE_ADMIN_TOKEN", raising=False)
    monkeypatch.delenv("FLOODGATE_ADMIN_TOKEN_FILE", raising=False)
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    sched = make_scheduler(tmp_path / "g.db")
    async with sched, serve(admin_app(sched, token=TOKEN)) as url:
        code = await asyncio.to_thread(
            main, ["pause", "--admin", url, "--token-file", str(token_file)]
        )
        assert code == 0, capsys.readouterr().err
        assert sched.gate.reason == "paused from the command line"
        monkeypatch.setenv("FLOODGATE_ADMIN_TOKEN_FILE", str(token_file))
        assert await asyncio.to_thread(main, ["resume", "--admin", url]) == 0
        assert sched.gate.is_open
        missing = str(tmp_path / "nope")
        code = await asyncio.to_thread(main, ["resume", "--admin", url, "--token-file", missing])
        assert code == 2
        assert f"cannot read {missing}" in capsys.readouterr().err
