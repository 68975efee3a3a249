"""WAL checkpoints run on their own thread (``_checkpointer``), on a real SQLite file."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest

from scheduler.backlog import SQLiteBacklog, _checkpointer
from scheduler.backlog._checkpointer import FALLBACK_PAGES, Checkpointer
from scheduler.testing import eventually
from tests.backlog.helpers import new_job


def _writer(path: Path) -> sqlite3.Connection:
    """A WAL writer that never checkpoints by itself."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA wal_autocheckpoint=0")
    conn.execute("CREATE TABLE IF NOT EXISTS t (x BLOB)")
    return conn


def _write(conn: sqlite3.Connection, rows: int) -> None:
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO t VALUES (?)", [(b"x" * 3000,) for _ in range(rows)])
    conn.execute("COMMIT")


def _copied_rows(path: Path, tmp_path: Path) -> int:
    """Rows of ``t`` in the database file itself (a copy without its log): the rows
    a checkpoint has copied there."""
    alone = tmp_path / "alone.db"
    alone.write_bytes(path.read_bytes())
    with sqlite3.connect(alone) as conn:
        (n,) = conn.execute("SELECT COUNT(*) FROM t").fetchone()
    alone.unlink()
    return int(n)


def _checkpoint_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("floodgate-checkpoint")]


async def test_a_poke_gets_the_log_copied_without_the_writer(tmp_path: Path) -> None:
    path = tmp_path / "w.db"
    conn = _writer(path)
    checkpointer = Checkpointer(str(path), 5.0, delay=0.01)
    checkpointer.start()
    try:
        _write(conn, 50)
        assert checkpointer.checkpoints == 0  # nothing happens until poked
        checkpointer.poke()
        await eventually(lambda: checkpointer.checkpoints >= 1)
        assert _copied_rows(path, tmp_path) == 50
    finally:
        checkpointer.stop()
        conn.close()
    assert checkpointer.failures == 0
    assert _checkpoint_threads() == []


async def test_a_long_log_is_started_afresh(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_checkpointer, "RESTART_FRAMES", 20)
    path = tmp_path / "w.db"
    conn = _writer(path)
    checkpointer = Checkpointer(str(path), 5.0, delay=0.01)
    checkpointer.start()
    try:
        _write(conn, 100)  # ~100 frames, more than RESTART_FRAMES
        checkpointer.poke()
        await eventually(lambda: checkpointer.restarts >= 1)
        size = (tmp_path / "w.db-wal").stat().st_size
        for _ in range(5):  # new writes go to the start of the log again
            _write(conn, 5)
        assert (tmp_path / "w.db-wal").stat().st_size == size
    finally:
        checkpointer.stop()
        conn.close()


class _LockedConnection:
    """Stands in for the checkpointer's connection while another holds the file."""

    def execute(self, query: str) -> sqlite3.Cursor:
        raise sqlite3.OperationalError("database is locked")


async def test_a_failed_checkpoint_is_counted_and_the_next_poke_retries(tmp_path: Path) -> None:
    path = tmp_path / "w.db"
    conn = _writer(path)
    _write(conn, 5)
    checkpointer = Checkpointer(str(path), 5.0, delay=0.01)
    checkpointer._checkpoint(_LockedConnection())  # type: ignore[arg-type]
    assert (checkpointer.failures, checkpointer.checkpoints) == (1, 0)
    checkpointer.start()
    try:
        checkpointer.poke()
        await eventually(lambda: checkpointer.checkpoints == 1)
        assert _copied_rows(path, tmp_path) == 5
    finally:
        checkpointer.stop()
        conn.close()


async def test_the_backlog_checkpoints_off_its_commits(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    backlog = SQLiteBacklog(path)
    await backlog.open()
    try:
        assert len(_checkpoint_threads()) == 1
        # the writer's own auto-checkpoint is only the safety net
        checkpointer = backlog._checkpointer
        assert checkpointer is not None
        pages = await backlog._read("PRAGMA wal_autocheckpoint")
        assert pages[0][0] == FALLBACK_PAGES
        for _ in range(20):
            await backlog.submit([new_job("t") for _ in range(50)], now=time.time())
        await eventually(lambda: checkpointer.checkpoints >= 1)
    finally:
        await backlog.close()
    assert _checkpoint_threads() == []
    # nothing was lost on the way: a fresh open reads every job
    async with SQLiteBacklog(path) as again:
        assert (await again.counts()) == {"batch": {"queued": 1000}}


class _StopLandsBeforeTheClear(threading.Event):
    """The checkpointer's ``_wanted``: its first ``clear()`` lets a ``stop()`` land just
    before it (between the thread's delay and its clear), as it may on any run."""

    def __init__(self, checkpointer: Checkpointer) -> None:
        super().__init__()
        self.checkpointer = checkpointer
        self.raced = False

    def clear(self) -> None:
        if not self.raced:
            self.raced = True
            self.checkpointer._stopping.set()  # what stop() does before its join
            self.set()
        super().clear()


def test_a_stop_landing_while_the_thread_clears_its_poke_still_ends_the_thread(
    tmp_path: Path,
) -> None:
    """A stop that set the poke just before the thread cleared it was lost: the thread
    checkpointed, then waited for a poke for ever, and the backlog's close hung in
    ``stop()``'s join (seen once in a benchmark loop)."""
    path = tmp_path / "w.db"
    conn = _writer(path)
    _write(conn, 5)
    checkpointer = Checkpointer(str(path), 5.0, delay=0.001)
    wanted = checkpointer._wanted = _StopLandsBeforeTheClear(checkpointer)
    checkpointer.start()
    thread = checkpointer._thread
    assert thread is not None
    try:
        checkpointer.poke()
        thread.join(timeout=5.0)  # returns at once when the thread ends
        assert wanted.raced
        assert not thread.is_alive(), "the checkpointer thread missed the stop"
        assert checkpointer.checkpoints == 1  # the poke it had taken was served
    finally:
        checkpointer.stop()
        conn.close()
