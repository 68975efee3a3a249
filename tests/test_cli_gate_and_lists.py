"""The CLI as a newcomer meets it: one spelling of the admin token, ``status`` showing a
paused gate (one worker's, or the fleet's), ``jobs list`` saying how many more there are."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from scheduler.asgi import admin_app
from scheduler.testing import eventually
from workers.cli import main
from workers.commands import jobs as jobs_command

from .admin_fixtures import TOKEN, make_scheduler
from .http_helpers import serve
from .worker_helpers import REPO, WorkerProcess

APP = "tests.procs.worker_app:sched"


def cli(*argv: str) -> subprocess.CompletedProcess[str]:
    """``python -m workers ARGV`` in a real process."""
    return subprocess.run(
        [sys.executable, "-m", "workers", *argv],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.slow
async def test_status_shows_a_workers_paused_gate_through_its_admin_api(tmp_path: Path) -> None:
    db, token_file = tmp_path / "w.db", tmp_path / "token"
    token_file.write_text(TOKEN + "\n", encoding="utf-8")
    worker = await WorkerProcess.start(
        "worker", "--app", APP, "--backlog", str(db), "--admin", "127.0.0.1:0",
        "--admin-token-file", str(token_file),
    )  # fmt: skip
    try:
        url = (await worker.wait_event("worker.ready"))["admin"]
        paused = await asyncio.to_thread(
            cli,
            "pause",
            "--admin",
            url,
            "--admin-token-file",
            str(token_file),
            "--reason",
            "deploy",
        )
        assert (paused.returncode, paused.stdout) == (0, "gate paused: deploy\n"), paused.stderr
        status = await asyncio.to_thread(cli, "status", "--backlog", str(db), "--admin", url)
        assert status.returncode == 0, status.stderr
        assert f"worker gate ({url}): PAUSED: deploy (floodgate resume --admin {url} ends it)" in (
            status.stdout
        )
        # the old spelling still works, hidden from --help
        resumed = await asyncio.to_thread(
            cli, "resume", "--admin", url, "--token-file", str(token_file)
        )
        assert (resumed.returncode, resumed.stdout) == (0, "gate open\n"), resumed.stderr
        status = await asyncio.to_thread(cli, "status", "--backlog", str(db), "--admin", url)
        assert f"worker gate ({url}): open" in status.stdout
    finally:
        worker.proc.send_signal(signal.SIGTERM)
        assert await worker.wait() == 0

    nobody = f"127.0.0.1:{free_port()}"
    status = await asyncio.to_thread(cli, "status", "--backlog", str(db), "--admin", nobody)
    assert status.returncode == 0  # the counts are what status is for
    assert f"worker gate: not known (no admin API answering at http://{nobody}" in status.stdout


def test_one_token_option_name_everywhere() -> None:
    for command in ("worker", "pause", "resume", "status"):
        shown = cli(command, "--help").stdout
        assert "--admin-token-file" in shown, command
        assert "--token-file" not in shown.replace("--admin-token-file", ""), command


async def test_status_shows_a_fleet_pause_once_and_the_worker_gate_follows_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "fleet.db"
    sched = make_scheduler(path)
    async with sched, serve(admin_app(sched, token=TOKEN)) as url:
        sched.gate.pause("quota", fleet=True)
        await eventually(
            lambda: getattr(sched.stats().fleet, "paused_reason", 0) == "quota", timeout=3
        )
        code = await asyncio.to_thread(main, ["status", "--backlog", str(path), "--admin", url])
        out = capsys.readouterr().out
    assert code == 0
    assert out.count("fleet gate PAUSED") == 1
    assert "quota" in out.split("fleet gate PAUSED")[1].splitlines()[0]
    worker_line = next(line for line in out.splitlines() if line.startswith("worker gate"))
    assert "PAUSED" in worker_line
    assert worker_line.endswith("(the fleet pause above)")


def test_jobs_list_says_how_many_more_and_shows_all_on_request(
    capsys: pytest.CaptureFixture[str], busy_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = str(busy_db)

    def listed(*argv: str) -> tuple[int, list[str], str]:
        code = main(["jobs", "list", "--backlog", db, *argv])
        out = capsys.readouterr().out.splitlines()
        rows = [line for line in out if " t.ok " in line or " t.fail " in line]
        more = [line for line in out if line.startswith("...")]
        return code, rows, more[0] if more else ""

    code, rows, more = listed("--limit", "2")
    assert (code, len(rows)) == (0, 2)
    assert more == "... 3 more (of 5): --limit N, --offset 2 or --all"
    code, rows, more = listed("--limit", "1", "--state", "queued")
    assert (len(rows), more) == (1, "... 2 more (of 3): --limit N, --offset 1 or --all")
    code, rows, more = listed("--limit", "2", "--offset", "2")
    assert (len(rows), more) == (2, "... 1 more (of 5): --limit N, --offset 4 or --all")
    code, rows, more = listed()  # the default 50 shows all five
    assert (len(rows), more) == (5, "")
    monkeypatch.setattr(jobs_command, "_PAGE", 2)  # --all reads page after page
    code, rows, more = listed("--all")
    assert (len(rows), more) == (5, "")
    assert len({line.split()[0] for line in rows}) == 5
    with pytest.raises(SystemExit) as usage:
        main(["jobs", "list", "--backlog", db, "--all", "--limit", "3"])
    assert usage.value.code == 2
