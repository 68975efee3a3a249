"""The command line under hostile or awkward input (issue 14).

- task names, lanes, errors and tracebacks read from a backlog (and error
  lines) are printed with terminal control characters escaped;
- args nested 100,000 deep get one clear error line, no traceback;
- ``--grace`` must be a finite number >= 0;
- the read-only commands (status, jobs list, jobs show) open the SQLite file
  read-only: they work on a file nobody may write, never migrate it or switch
  its journal mode, and leave its bytes and mtime as they were.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import logging
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scheduler import BacklogError
from scheduler.backlog import NewJob, Outcome, SQLiteBacklog
from scheduler.backlog import _sqlite_schema as schema
from scheduler.tasks import MAX_JSON_DEPTH
from workers.cli import main
from workers.logging_setup import get_logger, logging_configured
from workers.textsafe import printable

from .worker_helpers import REPO

APP = "tests.procs.worker_app:sched"
EVIL_TASK = "evil\x1b[2J\x1b]0;pwned\x07task"
EVIL_LANE = "la\x1b[31mne"
EVIL_ERROR = "boom\x1b[5m\r\x08\x7f\u202eoops\u0085\nsecond line"
EVIL_TRACE = "Traceback (most recent call last):\n  File \x1b[1mx.py\x1b[0m\n\tline\rRuntimeError"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_no_control(text: str) -> None:
    allowed = {"\n"}
    bad = [ch for ch in text if not ch.isprintable() and ch not in allowed]
    assert not bad, f"raw control characters in output: {bad!r}"


def make_backlog(db: Path, *, evil: bool = False) -> str:
    """A backlog with one queued and one dead job; returns the dead job's id."""
    task, lane = (EVIL_TASK, EVIL_LANE) if evil else ("t.ok", "batch")

    async def fill() -> str:
        async with SQLiteBacklog(db) as backlog:
            await backlog.submit([NewJob(task, lane, '["\\u001b[2J"]', key="k\x1b1")], now=1.0)
            await backlog.submit([NewJob(task, lane, "[2]", max_attempts=1)], now=2.0)
            first, second = await backlog.claim(lane, 2, owner="w\x1b", lease_seconds=9, now=3)
            dead = Outcome.dead(second.id, "w\x1b", error=EVIL_ERROR, traceback=EVIL_TRACE)
            await backlog.complete([dead], now=4.0)
            await backlog.release([first.id], owner="w\x1b", now=5.0)
            return second.id

    return asyncio.run(fill())


# -- escaping --------------------------------------------------------------------------


def test_printable_escapes_control_characters_visibly() -> None:
    assert printable("plain text, ünïcödé, 日本") == "plain text, ünïcödé, 日本"
    assert printable("a\x1b[31mb") == "a\\x1b[31mb"
    assert printable("\t\r\n\x00\x7f\x85") == "\\t\\r\\n\\x00\\x7f\\x85"
    assert printable("rtl\u202eltr\u200b\u2028") == "rtl\\u202eltr\\u200b\\u2028"
    assert printable("two\nlines\r", multiline=True) == "two\nlines\\r"
    assert printable("\U000e0041") == "\\U000e0041"


@given(st.text(), st.booleans())
def test_printable_output_never_holds_a_control_character(text: str, multiline: bool) -> None:
    shown = printable(text, multiline=multiline)
    assert all(ch.isprintable() or (multiline and ch == "\n") for ch in shown)
    if text.isprintable():
        assert shown == text
    assert shown.count("\n") == (text.count("\n") if multiline else 0)


def test_status_and_jobs_escape_what_they_read(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    db = tmp_path / "evil.db"
    dead_id = make_backlog(db, evil=True)

    code, out, err = run(capsys, "status", "--backlog", str(db))
    assert code == 0, err
    assert_no_control(out)
    assert "la\\x1b[31mne" in out
    assert "total queued 1, running 0, done 0, dead 1" in out

    code, out, err = run(capsys, "jobs", "list", "--backlog", str(db))
    assert code == 0, err
    assert_no_control(out)
    assert "evil\\x1b[2J\\x1b]0;" in out
    assert "boom\\x1b[5m\\r\\x08\\x7f\\u202eoops\\x85" in out, "the error's first line"
    assert "second line" not in out

    code, out, err = run(capsys, "jobs", "show", dead_id, "--backlog", str(db))
    assert code == 0, err
    assert_no_control(out)
    assert f"task:      {printable(EVIL_TASK)}" in out
    assert f"lane:      {printable(EVIL_LANE)}" in out
    assert "lease:     -" in out
    assert "boom\\x1b[5m\\r\\x08\\x7f\\u202eoops\\x85\nsecond line" in out, "newlines kept"
    assert "  File \\x1b[1mx.py\\x1b[0m\n\\tline\\rRuntimeError" in out
    queued = run(capsys, "jobs", "list", "--state", "queued", "--backlog", str(db))[1]
    queued_id = queued.splitlines()[2].split()[0]
    out = run(capsys, "jobs", "show", queued_id, "--backlog", str(db))[1]
    assert_no_control(out)
    assert "key:       k\\x1b1" in out
    assert 'args:      ["\\u001b[2J"]' in out, "args stay JSON (JSON escapes them itself)"


def test_status_escapes_the_backlog_path(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    db = tmp_path / "odd\x1b[31mname.db"
    make_backlog(db)
    code, out, err = run(capsys, "status", "--backlog", str(db))
    assert code == 0, err
    assert_no_control(out)
    assert "odd\\x1b[31mname.db" in out.splitlines()[0]


def test_error_lines_escape_control_characters(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "pause", "--admin", "127.0.0.1:9/\x1b[2Jx\ry", "--token", "t")
    assert code == 2, "not a URL: one line, no traceback"
    assert_no_control(err)
    assert "--admin http://127.0.0.1:9/\\x1b[2Jx\\ry is not a usable URL" in err
    assert err.count("\n") == 1, "one line"
    # port 9 on loopback: nothing listens, so the error names the address as given
    code, _, err = run(capsys, "pause", "--admin", "127.0.0.1:9/\u202ex\u0085y", "--token", "t")
    assert code == 1
    assert_no_control(err)
    assert "no admin API answering at http://127.0.0.1:9/\\u202ex\\x85y" in err
    assert err.count("\n") == 1


# -- args nested too deep --------------------------------------------------------------


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 100_000])
def test_submit_with_args_nested_too_deep_is_one_clear_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, depth: int
) -> None:
    db = tmp_path / "deep.db"
    deep = "[" * depth + "]" * depth
    code, out, err = run(capsys, "submit", "test.work", "--args", deep, "--app", APP,
                         "--backlog", str(db))  # fmt: skip
    assert code == 2
    assert out == ""
    assert "Traceback" not in err
    assert err.count("\n") == 1
    assert f"nested deeper than {MAX_JSON_DEPTH:,} levels" in err
    if db.exists():
        assert make_counts(db) == {}


def test_submit_with_args_nested_too_deep_in_a_subprocess_has_no_traceback(
    tmp_path: Path,
) -> None:
    deep = "[" * 60_000 + "]" * 60_000  # one argv string may hold at most 128 KiB
    proc = subprocess.run(
        [sys.executable, "-m", "workers", "submit", "test.work", "--args", deep, "--app", APP,
         "--backlog", str(tmp_path / "deep.db")],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("floodgate submit: error: --args")


def make_counts(db: Path) -> dict[str, dict[str, int]]:
    async def read() -> dict[str, dict[str, int]]:
        async with SQLiteBacklog(db) as backlog:
            return await backlog.counts()

    return asyncio.run(read())


# -- --grace ---------------------------------------------------------------------------


@pytest.mark.parametrize("grace", ["nan", "inf", "-inf", "-1"])
def test_worker_grace_must_be_finite_and_not_negative(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, grace: str
) -> None:
    db = tmp_path / "g.db"
    code, _, err = run(capsys, "worker", "--app", APP, "--backlog", str(db), f"--grace={grace}")
    assert code == 2
    assert "--grace must be a finite number >= 0" in err
    assert "Traceback" not in err
    assert not db.exists(), "refused before anything was opened"


# -- read-only commands ----------------------------------------------------------------


def snapshot(directory: Path) -> dict[str, tuple[str, int]]:
    """Every file in ``directory``: its content hash and mtime (ns)."""
    return {
        p.name: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(directory.iterdir())
    }


@contextlib.contextmanager
def read_only(db: Path) -> Iterator[None]:
    """chmod 444 the file and 555 its directory (as root this stops nothing by itself)."""
    db.chmod(0o444)
    db.parent.chmod(0o555)
    try:
        yield
    finally:
        db.parent.chmod(0o755)
        db.chmod(0o644)


def check_read_commands(capsys: pytest.CaptureFixture[str], db: Path, dead_id: str) -> None:
    code, out, err = run(capsys, "status", "--backlog", str(db))
    assert code == 0, err
    assert "total queued 1, running 0, done 0, dead 1" in out
    code, out, err = run(capsys, "jobs", "list", "--backlog", str(db))
    assert code == 0, err
    assert len(out.splitlines()) == 4
    code, out, err = run(capsys, "jobs", "show", dead_id, "--backlog", str(db))
    assert code == 0, err
    assert "state:     dead" in out


def test_read_commands_leave_a_rollback_journal_backlog_untouched(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A writable open would switch the file to WAL (rewriting its header):
    the read-only one must not, root or not."""
    directory = tmp_path / "ro"
    directory.mkdir()
    db = directory / "rollback.db"
    dead_id = make_backlog(db)
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA journal_mode=DELETE")
    conn.close()
    before = snapshot(directory)
    with read_only(db):
        check_read_commands(capsys, db, dead_id)
    assert snapshot(directory) == before


def test_read_commands_leave_a_wal_backlog_untouched(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    directory = tmp_path / "ro"
    directory.mkdir()
    db = directory / "wal.db"
    dead_id = make_backlog(db)
    before = snapshot(directory)
    assert list(before) == ["wal.db"], "closed cleanly: no -wal / -shm left"
    with read_only(db):
        check_read_commands(capsys, db, dead_id)
    assert snapshot(directory) == before


def test_read_commands_do_not_migrate_an_older_backlog(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    db = tmp_path / "v1.db"
    with sqlite3.connect(db) as conn:
        for statement in schema.MIGRATIONS[0]:
            conn.execute(statement)
        conn.execute("PRAGMA user_version=1")
    conn.close()
    before = snapshot(tmp_path)
    code, _, err = run(capsys, "status", "--backlog", str(db))
    assert code == 1
    assert "schema version 1" in err
    assert "floodgate worker" in err
    assert snapshot(tmp_path) == before
    code, _, err = run(capsys, "jobs", "list", "--backlog", str(db))
    assert code == 1
    assert "does not migrate it" in err
    assert snapshot(tmp_path) == before


def test_read_commands_on_a_file_that_is_not_a_backlog(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    text = tmp_path / "text.db"
    text.write_bytes(b"not a database at all " * 100)
    before = snapshot(tmp_path)
    code, _, err = run(capsys, "status", "--backlog", str(empty))
    assert code == 1
    assert "not a Floodgate backlog" in err
    code, _, err = run(capsys, "jobs", "list", "--backlog", str(text))
    assert code == 1
    assert "text.db" in err
    assert "Traceback" not in err
    assert snapshot(tmp_path) == before


async def test_a_read_only_backlog_refuses_writes_and_missing_files(tmp_path: Path) -> None:
    missing = tmp_path / "missing.db"
    with pytest.raises(BacklogError, match=r"missing\.db"):
        await SQLiteBacklog(missing, read_only=True).open()
    assert not missing.exists()
    db = tmp_path / "jobs.db"
    await asyncio.to_thread(make_backlog, db)
    async with SQLiteBacklog(db, read_only=True) as backlog:
        assert (await backlog.counts())["batch"] == {"queued": 1, "dead": 1}
        with pytest.raises(BacklogError, match="read-only"):
            await backlog.submit([NewJob("t.ok", "batch", "[]")], now=9.0)
        with pytest.raises(BacklogError, match="read-only"):
            await backlog.requeue(all_dead=True, now=9.0)
        with pytest.raises(BacklogError, match="read-only"):
            await backlog.claim("batch", 1, owner="w", lease_seconds=1, now=9.0)
    assert (await asyncio.to_thread(make_counts, db))["batch"] == {"queued": 1, "dead": 1}


def _as_other_user() -> list[str]:
    """A prefix running a command as ``nobody`` when we are root (whom chmod does not
    stop), else nothing: the test's own user already cannot write a 444 file."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: cannot drop to a user chmod stops")
    return [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"]


@pytest.mark.parametrize("journal", ["wal", "delete"])
def test_read_commands_work_for_a_user_who_cannot_write_the_file(journal: str) -> None:
    prefix = _as_other_user()
    top = Path(tempfile.mkdtemp(prefix="floodgate-ro-", dir="/tmp"))
    try:
        top.chmod(0o755)  # the other user must reach the file
        directory = top / "data"
        directory.mkdir()
        db = directory / "jobs.db"
        dead_id = make_backlog(db)
        if journal == "delete":
            with sqlite3.connect(db) as conn:
                conn.execute("PRAGMA journal_mode=DELETE")
            conn.close()
        before = snapshot(directory)
        env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
        with read_only(db):
            for argv in (["status"], ["jobs", "list"], ["jobs", "show", dead_id]):
                proc = subprocess.run(
                    [*prefix, sys.executable, "-m", "workers", *argv, "--backlog", str(db)],
                    cwd=REPO, env=env, capture_output=True, text=True, timeout=60, check=False,
                )  # fmt: skip
                assert proc.returncode == 0, f"{argv}: {proc.stderr}"
                assert "readonly" not in proc.stderr
            assert "total queued 1, running 0, done 0, dead 1" in subprocess.run(
                [*prefix, sys.executable, "-m", "workers", "status", "--backlog", str(db)],
                cwd=REPO, env=env, capture_output=True, text=True, timeout=60, check=True,
            ).stdout  # fmt: skip
        assert snapshot(directory) == before
        assert stat.S_IMODE(db.stat().st_mode) == 0o644
    finally:
        for path in (top, top / "data"):
            with contextlib.suppress(OSError):
                path.chmod(0o755)
        shutil.rmtree(top, ignore_errors=True)


def test_worker_lines_on_a_terminal_escape_control_characters() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Terminal()
    with logging_configured("info", stream=out):
        get_logger().info("job.finished", task=EVIL_TASK, lanes=[EVIL_LANE])
        try:
            raise RuntimeError(EVIL_ERROR)
        except RuntimeError:
            get_logger().exception("job.crashed", error=EVIL_ERROR)
        logging.getLogger("some.lib").warning("stdlib %s", "\x1b[2Jrecord")
    text = out.getvalue()
    for raw in ("\x1b[2J", "\x1b]0;", "\x07", "\r", "\u202e", "\x1b[5m"):
        assert raw not in text, repr(raw)
    assert "evil\\x1b[2J\\x1b]0;pwned\\x07task" in text
    assert "RuntimeError: boom\\x1b[5m\\r\\x08\\x7f\\u202eoops\\x85\nsecond line" in text
    assert "stdlib \\x1b[2Jrecord" in text


async def test_a_read_only_open_sees_what_a_live_writer_committed(tmp_path: Path) -> None:
    db = tmp_path / "live.db"
    async with SQLiteBacklog(db) as writer:
        await writer.submit([NewJob("t.ok", "batch", "[1]")], now=1.0)
        assert (tmp_path / "live.db-wal").exists(), "the commit is still in the WAL"
        async with SQLiteBacklog(db, read_only=True) as reader:
            assert await reader.counts() == {"batch": {"queued": 1}}
            await writer.submit([NewJob("t.ok", "batch", "[2]")], now=2.0)
            assert await reader.counts() == {"batch": {"queued": 2}}
