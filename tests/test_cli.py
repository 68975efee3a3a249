"""The ``floodgate`` command line, run in-process through ``main()``."""

from __future__ import annotations

import asyncio
import io
import socket
from pathlib import Path

import pytest

from scheduler import JobState
from scheduler.asgi import admin_app
from scheduler.backlog import SQLiteBacklog
from workers.backlog_access import display
from workers.cli import main
from workers.progress import Progress, format_progress

from .admin_fixtures import TOKEN, make_scheduler
from .http_helpers import serve

APP = "tests.procs.worker_app:sched"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def records(db: Path) -> list[object]:
    async def read() -> list[object]:
        async with SQLiteBacklog(db) as backlog:
            return list(await backlog.list_jobs(limit=1000))

    return asyncio.run(read())


def test_no_arguments_print_help_and_version_works(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys)
    assert code == 0
    for command in ("worker", "status", "jobs", "submit", "pause", "resume", "drain"):
        assert command in out
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.startswith("floodgate")
    code, out, _ = run(capsys, "jobs")
    assert code == 0
    assert "requeue" in out


def test_status_reads_the_backlog_file(capsys: pytest.CaptureFixture[str], busy_db: Path) -> None:
    code, out, _ = run(capsys, "status", "--backlog", str(busy_db))
    assert code == 0
    row = next(line.split() for line in out.splitlines() if line.startswith("batch"))
    assert row[1:6] == ["3", "0", "0", "2", "0"]  # queued running done dead cancelled
    assert "total queued 3, running 0, done 0, dead 2, cancelled 0" in out

    code, out, _ = run(capsys, "status", "--app", APP, "--backlog", str(busy_db))
    row = next(line.split() for line in out.splitlines() if line.startswith("batch"))
    assert code == 0
    assert row[6:] == ["4", "durable"]

    code, _, err = run(capsys, "status", "--backlog", str(busy_db.parent / "missing.db"))
    assert code == 1
    assert "no backlog at" in err
    assert "missing.db" in err
    assert not (busy_db.parent / "missing.db").exists()


def test_jobs_list_show_and_requeue(capsys: pytest.CaptureFixture[str], busy_db: Path) -> None:
    db = str(busy_db)
    code, out, _ = run(capsys, "jobs", "list", "--state", "dead", "--backlog", db)
    lines = [line for line in out.splitlines() if " dead " in line]
    assert code == 0
    assert len(lines) == 2
    assert "RuntimeError: boom 0" in lines[0]
    first = lines[0].split()[0]

    code, out, _ = run(capsys, "jobs", "show", first, "--backlog", db)
    assert code == 0
    assert "state:     dead" in out
    assert 'args:      ["boom 0"]' in out
    assert "traceback:" in out
    assert "RuntimeError: boom 0" in out

    assert run(capsys, "jobs", "requeue", first, "--backlog", db)[1] == "requeued 1 job\n"
    code, _, err = run(capsys, "jobs", "requeue", first, "--backlog", db)
    assert code == 1
    assert "is queued; only dead jobs are requeued" in err
    assert run(capsys, "jobs", "requeue", "--all-dead", "--backlog", db)[1] == "requeued 1 job\n"
    assert {r.state for r in records(busy_db)} == {JobState.QUEUED}  # type: ignore[attr-defined]

    code, _, err = run(capsys, "jobs", "show", "nope", "--backlog", db)
    assert code == 1
    assert "no job 'nope'" in err
    with pytest.raises(SystemExit) as usage:
        main(["jobs", "requeue", "--backlog", db])
    assert usage.value.code == 2
    code, out, _ = run(capsys, "jobs", "list", "--lane", "nope", "--backlog", db)
    assert code == 0
    assert out == "(no jobs)\n"


def test_jobs_cancel(capsys: pytest.CaptureFixture[str], busy_db: Path) -> None:
    db = str(busy_db)
    queued = [r for r in records(busy_db) if r.state is JobState.QUEUED]  # type: ignore[attr-defined]
    first = queued[0].id  # type: ignore[attr-defined]
    code, out, _ = run(capsys, "jobs", "cancel", first, "--backlog", db)
    assert (code, out) == (0, f"cancelled {first} (it was queued: it will not start)\n")
    code, out, _ = run(capsys, "jobs", "cancel", first, "--backlog", db)
    assert "had already finished (cancelled)" in out
    code, _, err = run(capsys, "jobs", "cancel", "nope", "--backlog", db)
    assert code == 1
    assert "no job 'nope'" in err
    task = queued[1].task  # type: ignore[attr-defined]
    code, out, _ = run(capsys, "jobs", "cancel", "--task", task, "--backlog", db)
    assert out == f"cancelled 2 jobs of {task}\n"
    assert "cancelled" in run(capsys, "jobs", "list", "--state", "cancelled", "--backlog", db)[1]


def test_submit_then_drain_until_empty(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    db = str(tmp_path / "s.db")
    code, out, err = run(capsys, "submit", "test.work", "--args", "[7, 1]", "--key", "k1",
                         "--app", APP, "--backlog", db)  # fmt: skip
    job_id = out.strip()
    assert code == 0
    assert len(job_id) == 32
    assert f"as job {job_id} (queued)" in err
    again = run(capsys, "submit", "test.work", "--args", "[7, 1]", "--key", "k1",
                "--app", APP, "--backlog", db)  # fmt: skip
    assert again[1].strip() == job_id, "same key, same job"
    for i in range(9):
        assert run(capsys, "submit", "test.work", "--args", f"[{i}]", "--app", APP,
                   "--backlog", db)[0] == 0  # fmt: skip

    code, _, err = run(capsys, "drain", "--until-empty", "--app", APP, "--backlog", db)
    assert code == 0, err
    assert "10/10" in err
    assert "done" in err.splitlines()[-1]
    done = records(tmp_path / "s.db")
    assert len(done) == 10
    assert {r.state for r in done} == {JobState.DONE}

    code, _, err = run(capsys, "drain", "--until-empty", "--app", APP, "--backlog", db)
    assert code == 0
    assert "0/0" in err, "an empty backlog drains at once"


def test_submit_errors(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    db = str(tmp_path / "s.db")
    code, _, err = run(capsys, "submit", "no.such.task", "--app", APP, "--backlog", db)
    assert code == 2
    assert "unknown task 'no.such.task'" in err
    assert "test.work" in err
    code, _, err = run(capsys, "submit", "test.work", "--args", "{oops", "--app", APP)
    assert code == 2
    assert "--args is not valid JSON" in err
    code, _, err = run(capsys, "submit", "test.work", "--args", '{"i": 1}', "--app", APP)
    assert code == 2
    assert "must be a JSON array" in err


def test_app_errors_name_what_to_fix(capsys: pytest.CaptureFixture[str], busy_db: Path) -> None:
    code, _, err = run(capsys, "status", "--app", "tests.procs.broken_app:sched")
    assert code == 2
    assert "importing 'tests.procs.broken_app' raised RuntimeError: this app module is" in err
    assert "Traceback" in err, "the user's own import error comes with its traceback"
    code, _, err = run(capsys, "drain", "--until-empty", "--app", APP, "--lanes", "nope",
                       "--backlog", str(busy_db))  # fmt: skip
    assert code == 2
    assert "unknown lane nope" in err
    assert "interactive, batch" in err


async def test_pause_and_resume_a_running_worker_through_its_admin_api(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FLOODGATE_ADMIN_TOKEN", raising=False)
    sched = make_scheduler(tmp_path / "g.db")
    async with sched, serve(admin_app(sched, token=TOKEN)) as url:
        code = await asyncio.to_thread(
            main, ["pause", "--admin", url, "--token", TOKEN, "--reason", "deploy"]
        )
        assert code == 0
        assert capsys.readouterr().out == "gate paused: deploy\n"
        assert sched.gate.reason == "deploy"
        code = await asyncio.to_thread(main, ["resume", "--admin", url, "--token", TOKEN])
        assert code == 0
        assert capsys.readouterr().out == "gate open\n"
        assert sched.gate.is_open

        code = await asyncio.to_thread(main, ["pause", "--admin", url, "--token", "wrong"])
        assert code == 1
        assert "refused the token" in capsys.readouterr().err
        code = await asyncio.to_thread(main, ["pause", "--admin", url])
        assert code == 1
        assert "needs the admin token" in capsys.readouterr().err
    async with sched, serve(admin_app(sched)) as url:
        code = await asyncio.to_thread(main, ["pause", "--admin", url, "--token", TOKEN])
        assert code == 1
        assert "read-only" in capsys.readouterr().err
    assert sched.gate.is_open

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code = await asyncio.to_thread(main, ["resume", "--admin", f"127.0.0.1:{port}", "--token", "t"])
    assert code == 1
    assert "no admin API answering" in capsys.readouterr().err


def test_progress_line_and_throttling() -> None:
    assert format_progress(40, 100, 4.0) == (
        "[##########--------------] 40/100  10.0 jobs/s  ETA 0:06"
    )
    assert format_progress(0, 10, 0.0).endswith("0.0 jobs/s  ETA --:--")
    assert format_progress(5, 5, 2.0).endswith("2.5 jobs/s  done")
    now = [0.0]
    out = io.StringIO()
    progress = Progress(out, tty=False, every=1.0, clock=lambda: now[0])
    for step in range(1, 31):  # three seconds in 0.1 s steps
        now[0] = step / 10
        progress.update(step, 30)
    progress.update(30, 30, final=True)
    lines = out.getvalue().splitlines()
    assert len(lines) == 4
    assert lines[-1].startswith("[" + "#" * 24 + "] 30/30")


def test_backlog_targets_print_without_secrets(capsys: pytest.CaptureFixture[str]) -> None:
    assert display("postgresql://app:hunter2@db:5432/jobs") == "postgresql://app:***@db:5432/jobs"
    assert display("postgresql://db/jobs") == "postgresql://db/jobs"
    code, _, err = run(capsys, "status", "--backlog", ":memory:")
    assert code == 1
    assert "':memory:'" in err
