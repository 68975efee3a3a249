"""The worker's errors tell the user what to fix: exit 2 for a wrong --app, 1 for
an unreadable backlog or a taken port (each a real subprocess)."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from .worker_helpers import WorkerProcess

pytestmark = pytest.mark.slow


async def run(*args: str) -> tuple[int, str]:
    proc = await WorkerProcess.start("worker", *args)
    try:
        return await proc.wait(), proc.stderr
    finally:
        proc.kill()


async def test_bad_app_exits_2_naming_the_module_or_attribute(tmp_path: Path) -> None:
    db = str(tmp_path / "x.db")
    (no_module, out1), (no_attr, out2), (not_sched, out3), (malformed, out4) = await asyncio.gather(
        run("--app", "tests.procs.no_such_module:sched", "--backlog", db),
        run("--app", "tests.procs.worker_app:schedd", "--backlog", db),
        run("--app", "tests.procs.worker_app:make_scheduler", "--backlog", db),
        run("--app", "tests.procs.worker_app", "--backlog", db),
    )
    assert no_module == 2
    assert "no module named 'tests.procs.no_such_module'" in out1
    assert no_attr == 2
    assert "has no attribute 'schedd'" in out2
    assert "schedulers in that module: sched" in out2
    assert not_sched == 2
    assert "'make_scheduler' is a function, not a scheduler.Scheduler" in out3
    assert malformed == 2
    assert "expected 'module:attribute'" in out4
    assert "Traceback" not in out1 + out2 + out3 + out4
    assert not (tmp_path / "x.db").exists(), "nothing was opened"


async def test_taken_port_exits_1_naming_the_port_before_touching_the_backlog(
    tmp_path: Path,
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, err = await run(
            "--app", "tests.procs.worker_app:sched", "--backlog", str(tmp_path / "x.db"),
            "--admin", f"127.0.0.1:{port}",
        )  # fmt: skip
    assert code == 1, err
    assert f"127.0.0.1:{port}" in err
    assert f"port {port} is taken" in err
    assert not (tmp_path / "x.db").exists()


async def test_unreadable_backlog_exits_1_naming_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "not-a-db.db"
    bad.write_bytes(b"this is not a SQLite database, " * 40)
    missing_dir = tmp_path / "no" / "such" / "dir.db"
    (code1, err1), (code2, err2) = await asyncio.gather(
        run("--app", "tests.procs.worker_app:sched", "--backlog", str(bad)),
        run("--app", "tests.procs.worker_app:sched", "--backlog", str(missing_dir)),
    )
    assert code1 == 1
    assert str(bad) in err1
    assert "cannot open the backlog" in err1
    assert code2 == 1
    assert str(missing_dir) in err2
    assert "Traceback" not in err1 + err2


async def test_public_admin_address_without_a_token_is_refused(tmp_path: Path) -> None:
    code, err = await run(
        "--app", "tests.procs.worker_app:sched", "--backlog", str(tmp_path / "x.db"),
        "--admin", "0.0.0.0:0",
    )  # fmt: skip
    assert code == 2
    assert "needs --admin-token" in err
