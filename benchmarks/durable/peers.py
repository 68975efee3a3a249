"""The peers on the same disk: huey's ``SqliteHuey`` and persist-queue's ``SQLiteAckQueue``,
each switched to the run's ``synchronous`` setting (read back and reported)."""

from __future__ import annotations

import signal
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, cast

import huey  # type: ignore[import-untyped]
import persistqueue

from .._common import stopwatch
from .phase import TIME_LIMIT_S, Phase

Sync = Literal["NORMAL", "FULL"]
TASK = "bench.noop"
PQ_CLEAR_EVERY = 1_000  # persist-queue: delete acked rows every this many acks
_SYNC_VALUE = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}


@dataclass(frozen=True, slots=True)
class PeerRun:
    enqueue: Phase
    drain: Phase
    synchronous: str  # read back from the peer's own connection
    journal_mode: str


def _pragmas(conn: sqlite3.Connection, sync: Sync) -> tuple[str, str]:
    """Switch a peer's connection to ``sync``; read both settings back."""
    conn.execute(f"PRAGMA synchronous={sync}")
    value = int(conn.execute("PRAGMA synchronous").fetchone()[0])
    journal = str(conn.execute("PRAGMA journal_mode").fetchone()[0])
    return _SYNC_VALUE.get(value, str(value)), journal


def run_huey(directory: Path, sync: Sync, n: int) -> PeerRun:
    """``SqliteHuey``: enqueue N, then one consumer worker thread until all N ran."""
    app = huey.SqliteHuey("bench", filename=str(directory / "huey.db"))
    # huey's own knob is fsync=True (FULL) or unset (SQLite's default, FULL):
    # set the run's setting on the one connection its storage keeps, and read it back.
    setting, journal = _pragmas(app.storage.conn, sync)
    lock = threading.Lock()
    ran = [0]
    all_ran = threading.Event()

    def noop(i: int) -> None:
        with lock:
            ran[0] += 1
            if ran[0] >= n:
                all_ran.set()

    wrapped = app.task(name=TASK)(noop)
    with stopwatch() as enqueue:
        for i in range(n):
            wrapped(i)
    if app.pending_count() != n:
        raise RuntimeError(f"huey: {app.pending_count()} pending after {n} enqueues")
    consumer = app.create_consumer(
        workers=1,
        worker_type="thread",
        periodic=False,
        initial_delay=0.001,
        max_delay=0.01,
        check_worker_health=False,
    )
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        with stopwatch() as drain:
            consumer.start()  # installs its signal handlers; restored below
            finished = all_ran.wait(TIME_LIMIT_S)
    finally:
        consumer.stop(graceful=True)
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    pending = app.pending_count()
    if not finished or ran[0] != n or pending:
        raise RuntimeError(f"huey: ran {ran[0]}/{n}, {pending} still pending")
    if _pragmas(app.storage.conn, sync)[0] != setting:
        raise RuntimeError("huey: its connection's synchronous setting changed during the run")
    app.storage.close()
    return PeerRun(Phase.of(enqueue, n), Phase.of(drain, n), setting, journal)


def _pq_noop(item: object) -> None:
    return None


def run_persist_queue(directory: Path, sync: Sync, n: int) -> PeerRun:
    """``SQLiteAckQueue``: put N, then get + run + ack until empty."""
    queue = persistqueue.SQLiteAckQueue(str(directory / "pq"), auto_resume=False)
    # one connection (multithreading=False); persist-queue has no synchronous knob
    setting, journal = _pragmas(cast(sqlite3.Connection, queue._putter), sync)
    with stopwatch() as enqueue:
        for i in range(n):
            queue.put(i)
    deadline = time.perf_counter() + TIME_LIMIT_S
    acked = 0
    with stopwatch() as drain:
        for _ in range(n + 1):
            try:
                item = queue.get(block=False, raw=True)
            except persistqueue.Empty:
                break
            _pq_noop(item["data"])
            queue.ack(id=item["pqid"])
            acked += 1
            if acked % PQ_CLEAR_EVERY == 0:
                # without this, every get re-scans all acked rows (quadratic)
                queue.clear_acked_data(max_delete=0, keep_latest=0)
                if time.perf_counter() > deadline:
                    raise RuntimeError(f"persist-queue: only {acked}/{n} after {TIME_LIMIT_S}s")
    if acked != n or queue.size != 0:
        raise RuntimeError(f"persist-queue: acked {acked}/{n}, {queue.size} left")
    queue.close()
    return PeerRun(Phase.of(enqueue, n), Phase.of(drain, n), setting, journal)


PEERS: dict[str, Callable[[Path, Sync, int], PeerRun]] = {
    "huey": run_huey,
    "persist-queue": run_persist_queue,
}

PEER_HOW = {
    "huey": "`SqliteHuey`: N task calls; then its consumer, 1 worker thread",
    "persist-queue": "`SQLiteAckQueue`: N `put`; then `get` + run + `ack`",
}
