"""Where a fleet's shared upstream state lives: tables beside the backlog.

:class:`SQLiteFleetStore` (processes on one machine sharing a SQLite file) and
:class:`PostgresFleetStore` (processes anywhere sharing a PostgreSQL backlog;
``NOTIFY`` wakes the others at once) keep four small tables, created if
missing::

    floodgate_fleet_holds     (upstream, kind) -> until, by_member
    floodgate_fleet_presence  (upstream, member) -> seen, active (0 or 1)
    floodgate_fleet_cuts      upstream -> at, peak, k, c, by_member (the latest cut)
    floodgate_fleet_gate      one row while the fleet is paused: reason, by_member, at

Times are wall-clock seconds. Every exchange is one short transaction; SQL is
always parameterized. :func:`fleet_store_for` picks the store for a backlog.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sqlite3
import sys
import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from .backlog import Backlog, SQLiteBacklog
from .fleet import FleetStore, FleetView, Hold, OperatorPause, SharedCut
from .logs import get_logger

__all__ = ["PostgresFleetStore", "SQLiteFleetStore", "fleet_store_for", "read_sqlite_operator"]

_log = get_logger()

#: rows of members not seen for this long are deleted (seconds)
_FORGET_AFTER = 600.0
#: the PostgreSQL channel other processes are woken on
CHANNEL = "floodgate_fleet"

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS floodgate_fleet_holds ("
    " upstream TEXT NOT NULL, kind TEXT NOT NULL, until DOUBLE PRECISION NOT NULL,"
    " by_member TEXT NOT NULL, PRIMARY KEY (upstream, kind))",
    "CREATE TABLE IF NOT EXISTS floodgate_fleet_presence ("
    " upstream TEXT NOT NULL, member TEXT NOT NULL, seen DOUBLE PRECISION NOT NULL,"
    " active INTEGER NOT NULL, PRIMARY KEY (upstream, member))",
    "CREATE TABLE IF NOT EXISTS floodgate_fleet_cuts ("
    " upstream TEXT PRIMARY KEY, at DOUBLE PRECISION NOT NULL,"
    " peak DOUBLE PRECISION NOT NULL, k DOUBLE PRECISION NOT NULL,"
    " c DOUBLE PRECISION NOT NULL, by_member TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS floodgate_fleet_gate ("
    " id INTEGER PRIMARY KEY CHECK (id = 1), reason TEXT NOT NULL,"
    " by_member TEXT NOT NULL, at DOUBLE PRECISION NOT NULL)",
)
# a later hold wins; the member that set a breaker or probe hold may end it early;
# the probe's lease stays its holder's until it lapses (params: ..., now)
_UPSERT_HOLD = (
    "INSERT INTO floodgate_fleet_holds (upstream, kind, until, by_member) VALUES ({}, {}, {}, {})"
    " ON CONFLICT (upstream, kind) DO UPDATE SET until = excluded.until,"
    " by_member = excluded.by_member WHERE"
    " (excluded.kind = 'probe' AND (floodgate_fleet_holds.until <= {}"
    " OR excluded.by_member = floodgate_fleet_holds.by_member))"
    " OR (excluded.kind <> 'probe' AND (excluded.until > floodgate_fleet_holds.until"
    " OR (excluded.kind IN ('breaker_open', 'probe_failed')"
    " AND excluded.by_member = floodgate_fleet_holds.by_member)))"
)
_UPSERT_MEMBER = (
    "INSERT INTO floodgate_fleet_presence (upstream, member, seen, active) VALUES ({}, {}, {}, {})"
    " ON CONFLICT (upstream, member) DO UPDATE SET seen = excluded.seen,"
    " active = excluded.active"
)
# the latest cut wins
_UPSERT_CUT = (
    "INSERT INTO floodgate_fleet_cuts (upstream, at, peak, k, c, by_member)"
    " VALUES ({}, {}, {}, {}, {}, {})"
    " ON CONFLICT (upstream) DO UPDATE SET at = excluded.at, peak = excluded.peak,"
    " k = excluded.k, c = excluded.c, by_member = excluded.by_member"
    " WHERE excluded.at > floodgate_fleet_cuts.at"
)
_READ_HOLDS = "SELECT upstream, kind, until, by_member FROM floodgate_fleet_holds WHERE until > {}"
_READ_MEMBERS = (
    "SELECT upstream, sum(active), count(*) FROM floodgate_fleet_presence"
    " WHERE seen > {} GROUP BY upstream"
)
_READ_CUTS = "SELECT upstream, at, peak, k, c, by_member FROM floodgate_fleet_cuts"
_READ_GATE = "SELECT reason, by_member, at FROM floodgate_fleet_gate WHERE id = 1"
_FORGET = "DELETE FROM floodgate_fleet_presence WHERE seen < {}"
_FORGET_HOLDS = "DELETE FROM floodgate_fleet_holds WHERE until < {}"
_SET_GATE = (
    "INSERT INTO floodgate_fleet_gate (id, reason, by_member, at) VALUES (1, {}, {}, {})"
    " ON CONFLICT (id) DO UPDATE SET reason = excluded.reason,"
    " by_member = excluded.by_member, at = excluded.at"
)
_CLEAR_GATE = "DELETE FROM floodgate_fleet_gate"
_LEAVE = "DELETE FROM floodgate_fleet_presence WHERE member = {}"


@functools.cache
def _qmarks(sql: str) -> str:
    return sql.format(*("?" * sql.count("{}")))


@functools.cache
def _dollars(sql: str) -> str:
    return sql.format(*(f"${i + 1}" for i in range(sql.count("{}"))))


#: one exchange every this many also forgets long-gone members and holds
_FORGET_EVERY = 200


def _exchange_writes(
    member: str,
    now: float,
    holds: Sequence[Hold],
    presence: Sequence[tuple[str, bool]],
    cuts: Sequence[SharedCut],
    forget: bool,
) -> list[tuple[str, tuple[Any, ...]]]:
    """The statements (``{}`` placeholders) and arguments one exchange writes."""
    writes: list[tuple[str, tuple[Any, ...]]] = [
        (_UPSERT_HOLD, (hold.upstream, hold.kind, hold.until, hold.by, now)) for hold in holds
    ]
    writes.extend((_UPSERT_MEMBER, (name, member, now, int(using))) for name, using in presence)
    writes.extend((_UPSERT_CUT, (c.upstream, c.at, c.peak, c.k, c.c, c.by)) for c in cuts)
    if forget:
        writes.append((_FORGET, (now - _FORGET_AFTER,)))
        writes.append((_FORGET_HOLDS, (now - _FORGET_AFTER,)))
    return writes


def _pause(row: Any | None) -> OperatorPause | None:
    return None if row is None else OperatorPause(str(row[0]), str(row[1]), float(row[2]))


def _presence(active: Sequence[str], known: Sequence[str]) -> list[tuple[str, bool]]:
    """(upstream, in use) for every upstream a member knows or uses, sorted (one
    lock order for every writer)."""
    using = set(active)
    return [(name, name in using) for name in sorted(using.union(known))]


def _view(
    holds: Sequence[Any], members: Sequence[Any], cuts: Sequence[Any], gate: Any | None
) -> FleetView:
    return FleetView(
        holds=tuple(Hold(str(u), str(k), float(t), str(b)) for u, k, t, b in holds),
        operator=_pause(gate),
        members={str(u): int(n or 0) for u, n, _ in members if n},
        alive={str(u): int(n) for u, _, n in members},
        cuts={
            str(u): SharedCut(str(u), float(at), float(p), float(k), float(c), str(by))
            for u, at, p, k, c, by in cuts
        },
    )


#: runs ``work(conn)`` in one transaction on another component's connection
#: (:meth:`SQLiteBacklog.side_transaction`)
SideTransaction = Callable[[Callable[[sqlite3.Connection], Any]], Awaitable[Any]]


class SQLiteFleetStore:
    """The fleet tables in the backlog's SQLite file.

    Beside an open backlog of this process (``writer``: its ``side_transaction``),
    each exchange is a transaction on the backlog's own connection, queued in turn
    with its writes. Otherwise (``writer=None``: a command-line tool, a test) the
    store opens its own connection and runs it in a thread; SQLite's busy handler
    then waits up to ``busy_timeout`` for the write lock.
    """

    def __init__(
        self, path: str, *, busy_timeout: float = 0.5, writer: SideTransaction | None = None
    ) -> None:
        self.path = path
        self.busy_timeout = busy_timeout
        self._writer = writer
        self._schema_made = False  # on the writer's connection
        self._conn: sqlite3.Connection | None = None
        self._lock = asyncio.Lock()
        self._in_use = threading.Lock()
        self._closed = False
        self._exchanges = 0

    def _connect(self) -> sqlite3.Connection:
        if self._closed:
            raise sqlite3.ProgrammingError("the fleet store is closed")
        if self._conn is None:
            conn = sqlite3.connect(
                self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False
            )
            try:
                for statement in _SCHEMA:
                    conn.execute(statement)
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    async def _run(self, work: Callable[[sqlite3.Connection], Any]) -> Any:
        async with self._lock:
            if self._writer is None:
                return await asyncio.to_thread(self._transaction, work)
            if self._closed:
                raise sqlite3.ProgrammingError("the fleet store is closed")
            if self._schema_made:
                return await self._writer(work)
            result = await self._writer(functools.partial(_with_schema, work))
            self._schema_made = True
            return result

    def _transaction(self, work: Callable[[sqlite3.Connection], Any]) -> Any:
        # a cancelled caller does not stop its thread: the connection is used by one
        # thread at a time, and closed only between transactions
        with self._in_use:
            return self._transaction_locked(work)

    def _transaction_locked(self, work: Callable[[sqlite3.Connection], Any]) -> Any:
        conn = self._connect()
        try:
            conn.execute("BEGIN IMMEDIATE")
            result = work(conn)
            conn.execute("COMMIT")
            return result
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise

    async def exchange(
        self,
        member: str,
        now: float,
        holds: Sequence[Hold],
        active: Sequence[str],
        member_ttl: float,
        *,
        known: Sequence[str] = (),
        cuts: Sequence[SharedCut] = (),
    ) -> FleetView:
        self._exchanges += 1
        forget = self._exchanges % _FORGET_EVERY == 1
        writes = _exchange_writes(member, now, holds, _presence(active, known), cuts, forget)

        def work(conn: sqlite3.Connection) -> FleetView:
            for sql, args in writes:
                conn.execute(_qmarks(sql), args)
            return _view(
                conn.execute(_qmarks(_READ_HOLDS), (now,)).fetchall(),
                conn.execute(_qmarks(_READ_MEMBERS), (now - member_ttl,)).fetchall(),
                conn.execute(_READ_CUTS).fetchall(),
                conn.execute(_READ_GATE).fetchone(),
            )

        view: FleetView = await self._run(work)
        return view

    async def set_operator(self, pause: OperatorPause | None) -> None:
        def work(conn: sqlite3.Connection) -> None:
            if pause is None:
                conn.execute(_CLEAR_GATE)
            else:
                conn.execute(_qmarks(_SET_GATE), (pause.reason, pause.by, pause.at))

        await self._run(work)

    async def operator(self) -> OperatorPause | None:
        """The fleet-wide operator pause, if any (for ``status``)."""

        def work(conn: sqlite3.Connection) -> OperatorPause | None:
            return _pause(conn.execute(_READ_GATE).fetchone())

        result: OperatorPause | None = await self._run(work)
        return result

    async def leave(self, member: str) -> None:
        await self._run(lambda conn: conn.execute(_qmarks(_LEAVE), (member,)))

    async def close(self) -> None:
        async with self._lock:
            await asyncio.to_thread(self._close)

    def _close(self) -> None:
        with self._in_use:
            self._closed = True
            if self._conn is not None:
                conn, self._conn = self._conn, None
                conn.close()


def _with_schema(work: Callable[[sqlite3.Connection], Any], conn: sqlite3.Connection) -> Any:
    for statement in _SCHEMA:
        conn.execute(statement)
    return work(conn)


class PostgresFleetStore:
    """The fleet tables in the backlog's PostgreSQL schema (one connection of its
    own; ``NOTIFY floodgate_fleet`` after a write wakes every other process)."""

    def __init__(self, dsn: str, settings: dict[str, str] | None = None) -> None:
        self.dsn = dsn
        self.settings = dict(settings or {})
        self._conn: Any = None
        self._lock = asyncio.Lock()
        self.on_notify: Callable[[], None] | None = None
        self._exchanges = 0

    async def _connection(self) -> Any:
        import asyncpg  # type: ignore[import-untyped]

        if self._conn is not None and not self._conn.is_closed():
            return self._conn
        conn = await asyncpg.connect(self.dsn, server_settings=self.settings, timeout=5.0)
        try:
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(hashtext('floodgate_fleet'))")
                for statement in _SCHEMA:
                    await conn.execute(statement)
            await conn.add_listener(CHANNEL, self._notified)
        except BaseException:
            await conn.close()
            raise
        self._conn = conn
        return conn

    def _notified(self, *_: object) -> None:
        if self.on_notify is not None:
            self.on_notify()

    async def exchange(
        self,
        member: str,
        now: float,
        holds: Sequence[Hold],
        active: Sequence[str],
        member_ttl: float,
        *,
        known: Sequence[str] = (),
        cuts: Sequence[SharedCut] = (),
    ) -> FleetView:
        self._exchanges += 1
        forget = self._exchanges % _FORGET_EVERY == 1
        writes = _exchange_writes(member, now, holds, _presence(active, known), cuts, forget)
        async with self._lock:
            conn = await self._connection()
            async with conn.transaction():
                for sql, args in writes:
                    await conn.execute(_dollars(sql), *args)
                if holds or cuts:
                    await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, member)
                held = await conn.fetch(_dollars(_READ_HOLDS), now)
                members = await conn.fetch(_dollars(_READ_MEMBERS), now - member_ttl)
                cut_rows = await conn.fetch(_READ_CUTS)
                gate = await conn.fetchrow(_READ_GATE)
        return _view(
            [tuple(r) for r in held],
            [tuple(r) for r in members],
            [tuple(r) for r in cut_rows],
            gate,
        )

    async def set_operator(self, pause: OperatorPause | None) -> None:
        async with self._lock:
            conn = await self._connection()
            async with conn.transaction():
                if pause is None:
                    await conn.execute(_CLEAR_GATE)
                else:
                    await conn.execute(_dollars(_SET_GATE), pause.reason, pause.by, pause.at)
                await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, "gate")

    async def operator(self) -> OperatorPause | None:
        """The fleet-wide operator pause, if any (for ``status``)."""
        async with self._lock:
            conn = await self._connection()
            row = await conn.fetchrow(_READ_GATE)
        return _pause(row)

    async def leave(self, member: str) -> None:
        async with self._lock:
            conn = await self._connection()
            await conn.execute(_dollars(_LEAVE), member)

    async def close(self) -> None:
        async with self._lock:
            if self._conn is not None:
                conn, self._conn = self._conn, None
                with contextlib.suppress(Exception):
                    await conn.close()


def fleet_store_for(backlog: Backlog) -> FleetStore | None:
    """The fleet store beside ``backlog`` (``None``: it is not shared, e.g. in memory)."""
    if isinstance(backlog, SQLiteBacklog):
        writer = None if backlog.read_only else backlog.side_transaction
        return SQLiteFleetStore(str(backlog.path), writer=writer)
    if "asyncpg" in sys.modules:  # a PostgresBacklog exists only once asyncpg is imported
        from .backlog.postgres import PostgresBacklog

        if isinstance(backlog, PostgresBacklog):
            return PostgresFleetStore(backlog.dsn, backlog.server_settings)
    return None


def read_sqlite_operator(path: str) -> OperatorPause | None:
    """The fleet-wide operator pause in a SQLite backlog, read without writing
    (for ``floodgate status``; ``None`` when the fleet never paused)."""
    from pathlib import Path

    file = Path(path).resolve()
    # no -wal beside it: nobody writes now, and immutable creates no -wal / -shm either
    quiet = "" if Path(f"{file}-wal").exists() else "&immutable=1"
    conn = sqlite3.connect(f"{file.as_uri()}?mode=ro{quiet}", uri=True, timeout=1.0)
    try:
        table = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
            ("floodgate_fleet_gate",),
        ).fetchone()
        return None if table is None else _pause(conn.execute(_READ_GATE).fetchone())
    finally:
        conn.close()
