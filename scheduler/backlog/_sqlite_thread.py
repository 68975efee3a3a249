"""Where a SQLite backlog's statements run: on the connection's thread, or inline.

Every statement runs on the connection's own thread (aiosqlite's), in the order
queued, except a *small write* asked for while that thread has nothing queued
or running: it runs at once on the event loop's thread ("inline").

Why: a hand-over to another thread and back cost 10-100 µs on the 2-vCPU
virtual machines the benchmarks ran on (the more when the two threads sit on
different CPUs), and the two threads then took turns with the GIL, each idle
about half the time. A drain's claim of 8 jobs costs about 280 µs of SQLite.
Run inline, the drain with the defaults went 1.2-2.1x as fast and the submit
latency while draining fell from 1.8 to 1.1 ms
(``docs/benchmarks.md#inline-writes``).

What keeps the event loop safe:

- only writes the caller marks small (a claim, an outcome, a group commit of at
  most :data:`INLINE_ROWS` rows) and only with ``synchronous="NORMAL"``: in WAL
  such a commit appends to the ``-wal`` file and does not fsync;
- an inline write never waits for a lock: the connection's busy timeout is 0
  while it runs, and a ``BEGIN IMMEDIATE`` that finds the write lock held
  (another process's transaction, a checkpoint's ``RESTART``) returns
  :data:`BUSY`, and the caller queues the write on the thread, which waits up
  to ``busy_timeout`` as before;
- the thread and the loop never use the connection at once: inline only when
  every call queued on the thread has come back.

What it does not protect against: a write that stalls in the OS (a slow or
network disk) stalls the loop with it (``BacklogOptions(inline_writes=False)``
keeps every write on the thread), and a commit that finds the ``-wal`` file past
``wal_autocheckpoint`` pages (64 MiB: only when the checkpointer thread has
fallen far behind, say behind a long reader) checkpoints inside that commit,
inline or not.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, Final, TypeVar

import aiosqlite

__all__ = ["BUSY", "INLINE_ROWS", "Busy", "ConnectionRunner", "queue_on_thread", "retrieved"]

T = TypeVar("T")
Conn = sqlite3.Connection

#: the most rows a write may touch and still run inline (about 1 ms of SQLite here)
INLINE_ROWS = 128


class Busy:
    """The answer of :meth:`ConnectionRunner.inline` when the write lock was held."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "BUSY"


BUSY: Final = Busy()


def queue_on_thread(
    db: aiosqlite.Connection, fn: Callable[..., T], *args: Any
) -> asyncio.Future[T]:
    """Queue ``fn(*args)`` on the connection's thread; return its future, not awaited.

    aiosqlite has no public call for this: its worker takes ``(future, function)``
    pairs from ``_tx`` and resolves the future from its thread, which is what its
    ``_execute`` does before awaiting the future. Putting the pair there directly lets
    a transaction be tracked and shielded as a plain future, with no task of its own:
    a task costs a turn of the event loop to start and two more to pass its result on,
    paid by every claim and group commit. Closed: ``ValueError``, as ``_execute``."""
    tx = getattr(db, "_tx", None)
    if tx is None:  # an aiosqlite without that queue: its own call, as a task
        execute: Callable[..., Awaitable[T]] = db._execute
        return asyncio.ensure_future(execute(fn, *args))
    if not db._running or db._connection is None:
        raise ValueError("Connection closed")
    future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
    tx.put_nowait((future, partial(fn, *args)))
    return future


class ConnectionRunner:
    """Runs calls on one aiosqlite connection: queued on its thread, or inline.

    ``inline_allowed``: whether small writes may run inline at all (the backlog
    passes its ``inline_writes`` and ``synchronous == "NORMAL"``).
    ``busy_timeout``: seconds, the connection's own, restored before any call
    queued on the thread.
    """

    def __init__(self, db: aiosqlite.Connection, busy_timeout: float, *, inline_allowed: bool):
        self.db = db
        self.inline_allowed = inline_allowed
        self._busy_ms = round(busy_timeout * 1000)
        self._queued = 0  # calls queued on the thread whose futures are not done
        self._no_wait = False  # the connection's busy timeout is 0 (an inline write set it)

    def on_thread(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """``fn(*args)`` queued on the connection's thread (``ValueError``: closed)."""
        if self._no_wait:  # FIFO: this runs before ``fn`` and any later thread call
            restore = queue_on_thread(self.db, _set_busy_timeout, self.db._conn, self._busy_ms)
            restore.add_done_callback(retrieved)  # a failure shows in ``fn``'s answer
            self._no_wait = False
        future = queue_on_thread(self.db, fn, *args)
        self._queued += 1
        future.add_done_callback(self._back)
        return future

    def _back(self, _: asyncio.Future[Any]) -> None:
        self._queued -= 1

    def can_inline(self) -> bool:
        """Whether a small write may run inline now: allowed, and the thread idle."""
        return self.inline_allowed and self._queued == 0

    def inline(self, begun: Callable[[Conn], T]) -> T | Busy:
        """``BEGIN IMMEDIATE`` without waiting, then ``begun(conn)`` (which must end
        the transaction), on this thread; :data:`BUSY` if the write lock was held.
        Only when :meth:`can_inline`; ``sqlite3`` errors propagate."""
        conn = self.db._conn
        if not self._no_wait:
            _set_busy_timeout(conn, 0)
            self._no_wait = True
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY:
                raise
            return BUSY
        return begun(conn)


def retrieved(future: asyncio.Future[Any]) -> None:
    """A done callback for a future nobody awaits: its exception counts as seen."""
    if not future.cancelled():
        future.exception()


def _set_busy_timeout(conn: Conn, ms: int) -> None:
    conn.execute(f"PRAGMA busy_timeout = {int(ms)}")
