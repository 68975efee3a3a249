"""Durable tenants where operators meet them: ``floodgate jobs cancel --tenant`` and
``jobs list``/``show`` against a real SQLite backlog file (and PostgreSQL), and the
admin API over real HTTP (uvicorn on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from scheduler import JobState
from scheduler.asgi import admin_app
from scheduler.backlog import JobRecord, make_backlog
from workers.cli import main
from workers.commands import jobs as jobs_command

from .admin_fixtures import TOKEN, make_scheduler
from .http_helpers import serve
from .worker_helpers import REPO

AUTH = {"Authorization": f"Bearer {TOKEN}"}
#: (task, tenant) of the jobs submitted, in order
SUBMITTED = [
    ("t.ok", "acme"),
    ("t.ok", "globex"),
    ("t.ok", None),
    ("t.ok", "acme"),
    ("t.fail", "acme"),
    ("t.ok", "globex"),
    ("t.ok", None),
    ("t.ok", "acme"),
]


async def fill(target: Path | str) -> None:
    """Queue :data:`SUBMITTED` (in the SQLite file or PostgreSQL DSN ``target``), then
    lease three jobs to a worker that is not there (one per flow: fair claims take
    turns), so that each flow has a running job and queued ones."""
    sched = make_scheduler(target)  # type: ignore[arg-type]  # str(target): a DSN works too
    async with sched.open(run=()):
        for i, (task, tenant) in enumerate(SUBMITTED):
            await sched.submit(task, i if task == "t.ok" else f"boom {i}", tenant=tenant)
    async with make_backlog(str(target)) as backlog:
        running = await backlog.claim(
            "batch", 3, owner="elsewhere", lease_seconds=3600, now=time.time()
        )
    assert sorted(str(r.tenant) for r in running) == ["None", "acme", "globex"]


@pytest.fixture
def tenant_db(tmp_path: Path) -> Path:
    db = tmp_path / "tenants.db"
    asyncio.run(fill(db))
    return db


def read(target: Path | str) -> list[JobRecord]:
    async def go() -> list[JobRecord]:
        async with make_backlog(str(target)) as backlog:
            return await backlog.list_jobs(limit=1000)

    return asyncio.run(go())


def states(target: Path | str) -> list[tuple[str, str | None, str, bool]]:
    """(task, tenant, state, cancel requested) of every job, in submission order."""
    return [
        (r.task, r.tenant, r.state.value, r.cancel_requested_at is not None) for r in read(target)
    ]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# -- the CLI --------------------------------------------------------------------------


def test_cancel_by_tenant_reaches_exactly_that_tenants_jobs(
    capsys: pytest.CaptureFixture[str], tenant_db: Path
) -> None:
    before = states(tenant_db)
    assert [s for s in before if s[2] == "running"] == [
        ("t.ok", "acme", "running", False),
        ("t.ok", "globex", "running", False),
        ("t.ok", None, "running", False),
    ]
    code, out, err = run(capsys, "jobs", "cancel", "--tenant", "acme", "--backlog", str(tenant_db))
    assert (code, out, err) == (0, "cancelled 4 jobs of tenant acme\n", "")
    after = states(tenant_db)
    for (task, tenant, was, _), now in zip(before, after, strict=True):
        if tenant != "acme":
            assert now == (task, tenant, was, False)  # untouched
        elif was == "queued":
            assert now == (task, tenant, "cancelled", False)  # at once: it never starts
        else:  # running: its worker is asked, and ends it
            assert now == (task, tenant, "running", True)

    code, out, _ = run(capsys, "jobs", "cancel", "--tenant", "acme", "--backlog", str(tenant_db))
    assert (code, out) == (0, "cancelled 0 jobs of tenant acme\n")  # its running one was asked
    code, out, _ = run(capsys, "jobs", "cancel", "--tenant", "nobody", "--backlog", str(tenant_db))
    assert (code, out) == (0, "cancelled 0 jobs of tenant nobody\n")
    assert states(tenant_db)[1:3] == before[1:3]


def test_cancel_by_task_and_tenant_takes_both_to_match(
    capsys: pytest.CaptureFixture[str], tenant_db: Path
) -> None:
    db = str(tenant_db)
    code, out, _ = run(capsys, "jobs", "cancel", "--task", "t.fail", "--tenant", "globex",
                       "--backlog", db)  # fmt: skip
    assert (code, out) == (0, "cancelled 0 jobs of t.fail of tenant globex\n")
    code, out, _ = run(capsys, "jobs", "cancel", "--task", "t.ok", "--tenant", "acme",
                       "--backlog", db)  # fmt: skip
    assert (code, out) == (0, "cancelled 3 jobs of t.ok of tenant acme\n")
    left = {(task, tenant): state for task, tenant, state, _ in states(tenant_db)}
    assert left[("t.fail", "acme")] == "queued"  # acme's, but of another task
    assert sorted(s[2] for s in states(tenant_db) if s[1] == "globex") == ["queued", "running"]
    # --task alone still means every tenant's (and no tenant's) jobs of the task
    code, out, _ = run(capsys, "jobs", "cancel", "--task", "t.ok", "--backlog", db)
    assert (code, out) == (0, "cancelled 4 jobs of t.ok\n")  # acme's running one was asked
    assert [s[2] for s in states(tenant_db) if s[0] == "t.ok" and s[1] != "acme"] == [
        "running", "running", "cancelled", "cancelled"
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["JOBID", "--task", "t.ok"], "give a job ID, or --task/--tenant, not both"),
        (["JOBID", "--tenant", "acme"], "give a job ID, or --task/--tenant, not both"),
        (["JOBID", "--task", "t.ok", "--tenant", "acme"], "not both"),
        ([], "which jobs? give a job ID, --task T, --tenant X, or --task T --tenant X"),
        (["--tenant", ""], "--tenant needs a name"),
        (["--task", "", "--tenant", "acme"], "--task needs a name"),
    ],
)
def test_bad_cancel_combinations_are_usage_errors_that_change_nothing(
    capsys: pytest.CaptureFixture[str], tenant_db: Path, argv: list[str], message: str
) -> None:
    before = states(tenant_db)
    job_id = read(tenant_db)[3].id
    argv = [job_id if a == "JOBID" else a for a in argv]
    code, out, err = run(capsys, "jobs", "cancel", *argv, "--backlog", str(tenant_db))
    assert (code, out) == (2, "")
    assert err.startswith("floodgate jobs: error: ")
    assert message in err
    assert len(err.splitlines()) == 1  # one line, no traceback
    assert states(tenant_db) == before


def test_cancel_from_a_real_process_exit_codes(tenant_db: Path) -> None:
    def cli(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "workers", "jobs", "cancel", *argv, "--backlog", str(tenant_db)],
            cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip

    nothing = cli()
    assert (nothing.returncode, nothing.stdout) == (2, "")
    assert "which jobs?" in nothing.stderr
    assert "Traceback" not in nothing.stderr
    done = cli("--tenant", "globex")
    assert (done.returncode, done.stdout) == (0, "cancelled 2 jobs of tenant globex\n")
    assert [s[2] for s in states(tenant_db) if s[1] == "globex"] == ["running", "cancelled"]


async def test_cancel_by_tenant_on_postgresql(dsn: str) -> None:
    await fill(dsn)
    before = await asyncio.to_thread(states, dsn)

    def cli(*argv: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(["jobs", *argv, "--backlog", dsn])
        return code, out.getvalue(), err.getvalue()

    done = await asyncio.to_thread(cli, "cancel", "--task", "t.ok", "--tenant", "acme")
    assert done == (0, "cancelled 3 jobs of t.ok of tenant acme\n", "")
    done = await asyncio.to_thread(cli, "cancel", "--tenant", "globex")
    assert done == (0, "cancelled 2 jobs of tenant globex\n", "")
    after = await asyncio.to_thread(states, dsn)
    for (task, tenant, was, _), now in zip(before, after, strict=True):
        if tenant is None or task == "t.fail":
            assert now == (task, tenant, was, False)  # untouched
        else:
            assert now == (task, tenant, "cancelled" if was == "queued" else "running",
                           was == "running")  # fmt: skip
    code, out, _ = await asyncio.to_thread(cli, "list", "--tenant", "acme")
    assert code == 0
    assert [row.split()[3] for row in out.splitlines()[2:]] == ["acme"] * 4


def test_jobs_list_shows_and_filters_tenants(
    capsys: pytest.CaptureFixture[str],
    tenant_db: Path,
    busy_db: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    db = str(tenant_db)
    code, out, _ = run(capsys, "jobs", "list", "--backlog", db)
    header, _, *rows = out.splitlines()
    assert code == 0
    assert header.split()[:5] == ["id", "task", "lane", "tenant", "state"]
    assert [row.split()[3] for row in rows] == [str(t or "-") for _, t in SUBMITTED]

    def listed(*argv: str) -> tuple[list[str], str]:
        assert main(["jobs", "list", "--backlog", db, *argv]) == 0
        lines = capsys.readouterr().out.splitlines()
        rows = [line for line in lines[2:] if not line.startswith("...")]
        more = [line for line in lines if line.startswith("...")]
        return [row.split()[0] for row in rows], more[0] if more else ""

    ids = [r.id for r in read(tenant_db)]
    acme = [ids[i] for i, (_, tenant) in enumerate(SUBMITTED) if tenant == "acme"]
    monkeypatch.setattr(jobs_command, "_SCAN_PAGE", 3)  # the filter reads page after page
    assert listed("--tenant", "acme") == (acme, "")
    assert listed("--tenant", "acme", "--limit", "2") == (
        acme[:2],
        "... more of tenant acme: --limit N, --offset 2 or --all",
    )
    assert listed("--tenant", "acme", "--limit", "2", "--offset", "2") == (acme[2:], "")
    assert listed("--tenant", "acme", "--all", "--offset", "1") == (acme[1:], "")
    assert listed("--tenant", "acme", "--state", "running") == (acme[:1], "")
    assert listed("--tenant", "nobody") == ([], "")
    code, _, err = run(capsys, "jobs", "list", "--tenant", "", "--backlog", db)
    assert (code, err) == (2, "floodgate jobs: error: --tenant needs a tenant's name\n")

    # jobs without any tenant: no tenant column, as before
    code, out, _ = run(capsys, "jobs", "list", "--backlog", str(busy_db))
    assert code == 0
    assert "tenant" not in out.splitlines()[0]


def test_jobs_show_prints_the_tenant(capsys: pytest.CaptureFixture[str], tenant_db: Path) -> None:
    records = read(tenant_db)
    code, out, _ = run(capsys, "jobs", "show", records[0].id, "--backlog", str(tenant_db))
    assert code == 0
    assert "tenant:    acme\n" in out
    code, out, _ = run(capsys, "jobs", "show", records[2].id, "--backlog", str(tenant_db))
    assert "tenant:    -\n" in out


def test_cancel_help_names_every_form(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["jobs", "cancel", "--help"])
    out = capsys.readouterr().out
    assert "ID | --task T | --tenant X | --task T --tenant X" in out
    assert "no --tenant" not in out


# -- the admin API --------------------------------------------------------------------


async def test_admin_job_json_carries_the_tenant(tmp_path: Path) -> None:
    sched = make_scheduler(tmp_path / "a.db")
    async with sched:
        sched.gate.pause("maintenance")
        acme = await sched.submit("t.ok", 1, tenant="acme")
        nobody = await sched.submit("t.ok", 2)
        async with (
            serve(admin_app(sched, token=TOKEN)) as url,
            httpx.AsyncClient(base_url=url) as client,
        ):
            listed = (await client.get("/api/jobs", params={"state": "queued"})).json()["jobs"]
            assert [(job["id"], job["tenant"]) for job in listed] == [
                (acme.id, "acme"),
                (nobody.id, None),
            ]
            one = (await client.get(f"/api/jobs/{acme.id}")).json()
            assert (one["tenant"], one["state"]) == ("acme", JobState.QUEUED.value)


async def test_admin_cancels_by_tenant_and_by_task_and_tenant(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    await fill(db)  # three jobs leased elsewhere (one per flow), five queued
    before = await asyncio.to_thread(states, db)
    sched = make_scheduler(db)
    async with (
        sched.open(run=()),  # looks up and cancels; runs nothing
        serve(admin_app(sched, token=TOKEN)) as url,
        httpx.AsyncClient(base_url=url) as client,
    ):
        body = {"tenant": "acme"}
        assert (await client.post("/api/jobs/cancel", json=body)).status_code == 401
        assert await asyncio.to_thread(states, db) == before
        both = {"task": "t.fail", "tenant": "acme"}
        answer = await client.post("/api/jobs/cancel", json=both, headers=AUTH)
        assert (answer.status_code, answer.json()) == (200, {"cancelled": 1})
        answer = await client.post("/api/jobs/cancel", json=body, headers=AUTH)
        assert (answer.status_code, answer.json()) == (200, {"cancelled": 3})
        after = await asyncio.to_thread(states, db)
        for (task, tenant, was, _), now in zip(before, after, strict=True):
            if tenant != "acme":
                assert now == (task, tenant, was, False)  # untouched
            elif was == "queued":
                assert now == (task, tenant, "cancelled", False)
            else:  # leased by a worker that is not there: asked, still running
                assert now == (task, tenant, "running", True)
        answer = await client.post("/api/jobs/cancel", json={"task": "t.ok"}, headers=AUTH)
        assert answer.json() == {"cancelled": 4}  # globex's and no tenant's
        listed = (await client.get("/api/jobs", params={"state": "cancelled"})).json()
        tenants = sorted(str(job["tenant"]) for job in listed["jobs"])
        assert tenants == ["None", "acme", "acme", "acme", "globex"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "the body must be JSON"),
        ("not json", "the body must be JSON"),
        ('["acme"]', "the body must be JSON"),
        ("{}", "which jobs?"),
        ('{"task": null, "tenant": null}', "which jobs?"),
        ('{"tenant": ""}', "tenant must be a non-empty string"),
        ('{"task": 3}', "task must be a non-empty string"),
        ('{"tenant": "acme", "lane": "batch"}', "unknown field(s) lane"),
        ('{"tenant": "' + "x" * 1000 + '"}', "tenant must be 1 to"),
    ],
)
async def test_admin_cancel_refuses_a_bad_body_and_changes_nothing(
    tmp_path: Path, content: str | None, message: str
) -> None:
    db = tmp_path / "a.db"
    await fill(db)
    before = await asyncio.to_thread(states, db)
    sched = make_scheduler(db)
    async with (
        sched.open(run=()),  # looks up and cancels; runs nothing
        serve(admin_app(sched, token=TOKEN)) as url,
        httpx.AsyncClient(base_url=url) as client,
    ):
        answer = await client.post("/api/jobs/cancel", content=content, headers=AUTH)
    assert answer.status_code == 400
    assert message in answer.json()["error"]
    assert await asyncio.to_thread(states, db) == before


async def test_admin_cancel_by_tenant_is_refused_read_only(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    await fill(db)
    sched = make_scheduler(db)
    async with (
        sched.open(run=()),
        serve(admin_app(sched)) as url,
        httpx.AsyncClient(base_url=url) as client,
    ):
        answer = await client.post("/api/jobs/cancel", json={"tenant": "acme"}, headers=AUTH)
        assert answer.status_code == 403
    assert all(state != "cancelled" for _, _, state, _ in await asyncio.to_thread(states, db))


def test_cancel_with_a_tenant_name_too_long_is_a_usage_error(tmp_path: Path) -> None:
    from scheduler.lanes import MAX_TENANT_LENGTH

    code = main(
        ["jobs", "cancel", "--tenant", "x" * (MAX_TENANT_LENGTH + 1), "--backlog",
         str(tmp_path / "none.db")]
    )  # fmt: skip
    assert code == 2
