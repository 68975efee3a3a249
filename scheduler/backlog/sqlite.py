"""SQLiteBacklog: the default durable backlog, one SQLite file in WAL mode.

Schema (``PRAGMA user_version`` = 5; forward migrations in ``_sqlite_schema.MIGRATIONS``
run in order at :meth:`SQLiteBacklog.open`)::

    jobs(seq INTEGER PRIMARY KEY,     -- insertion order (the FIFO tie-break)
         id TEXT UNIQUE,              -- 32 hex digits, time-ordered (base.new_job_id)
         task, lane, args (JSON array), priority REAL, state TEXT (JobState value),
         attempts, max_attempts, run_at, created_at, updated_at (epoch s),
         key TEXT, lease_owner, lease_until, result (JSON), error, traceback, deadline_at,
         cost REAL,                   -- NULL: the task's cost (added by migration 1 -> 2)
         cancel_requested_at REAL)    -- a cancel of the RUNNING job was asked for (4 -> 5)
    jobs_queued  (lane, priority, run_at, seq) WHERE state = 'queued'   claim order
    jobs_running (lane, lease_until) WHERE state = 'running'          expired and live leases
    jobs_done    (updated_at) WHERE state = 'done'                    purge
    jobs_cancelled (updated_at) WHERE state = 'cancelled'             purge (4 -> 5)
    jobs_key UNIQUE (key) WHERE key IS NOT NULL                       idempotent submit
                                           -- (migration 3 -> 4: these partial indexes
                                           -- replace jobs_claim and jobs_state_updated)
    lane_queued(lane TEXT PRIMARY KEY, n)  -- each lane's QUEUED count, kept by three
                                           -- triggers on jobs (migration 2 -> 3) and,
                                           -- for inserts, once per transaction (3 -> 4)
    owners(owner TEXT PRIMARY KEY, host, boot_id, pidns, pid, started, registered_at)
                                           -- who holds leases (migration 2 -> 3)

Durability: ``synchronous="NORMAL"`` (default) in WAL survives a process crash
or ``kill -9`` (commits are in the WAL before ``submit`` returns) but the last
commits may be lost on power loss or an OS crash; ``"FULL"`` also fsyncs the
WAL at every commit, surviving power loss at some cost in commit latency.

Writes: every write is one ``BEGIN IMMEDIATE`` transaction, run to its end even
if the awaiting caller is cancelled. A transaction is one plain function run on
the connection's thread (aiosqlite's), begin to commit: one thread hop per
transaction, not one per statement, and nothing else on the connection can run
in between (calls queue in order for that thread). A small write (a claim,
outcomes, a group commit of at most ``INLINE_ROWS`` rows) asked for while that
thread is idle runs inline on the event loop's thread instead, never waiting for
a lock (see :mod:`._sqlite_thread`; ``synchronous="NORMAL"`` only). Concurrent
``submit()`` calls are *group-committed*: callers queue their rows and await a
future; one flusher task writes everything queued (up to ``batch_max`` rows) in
one transaction and resolves the futures, so each ``submit`` returns once its
own rows are committed, and N concurrent submitters cost far fewer than N
commits; the rows of the group's submits go in by multi-row ``INSERT``s (their
shared columns bound once), a run of alike jobs by one ``INSERT ... SELECT``
from a JSON array. ``claim`` is one ``UPDATE ... WHERE seq IN (SELECT ... LIMIT ?)
RETURNING`` (select-then-update on SQLite < 3.35); with ``max_running`` it first
counts other owners' live leases of the lane in the same ``BEGIN IMMEDIATE``
transaction, which holds the write lock, so claimers in other processes cannot
interleave. ``complete`` writes its outcomes by one ``UPDATE ... FROM (VALUES
...)`` per up to 64 of them; ``heartbeat``/``release`` are one ``executemany``
transaction each; ``complete_and_claim`` runs the ``complete`` statements and
then the claim in one transaction (one commit).

Queue bounds: a group commit reads its bounded lanes' ``lane_queued`` counts
inside its ``BEGIN IMMEDIATE`` transaction (one row per lane, however deep the
lane) and refuses the submits that do not fit (``Overloaded``), so
``max_queued`` holds for every process sharing the file.

Dead owners: an owner's first claim here registers this process (see
:mod:`._owners`: host, boot, pid namespace, pid, start time) and checks the
host's other registered owners; after that each lane's claim checks, at most
once per :data:`DEAD_OWNER_CHECK` seconds, the owners of the lane's other
live leases. An owner whose process is surely gone has its leases ended at
once, in the claim's transaction (``backlog.dead_owner_reclaimed``); the
claim then takes them over as expired leases. ``close`` unregisters.

Errors: a lock held past ``busy_timeout`` raises ``BacklogLocked``, a full
disk ``BacklogFull``, a file that is not a database ``BacklogError`` naming
the path. Reads are always ``LIMIT``-ed: a million jobs never come into RAM.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import os
import sqlite3
from collections.abc import Callable, Sequence
from functools import partial
from operator import itemgetter
from typing import Any, Literal, TypeVar, cast

import aiosqlite

from ..errors import BacklogError, BacklogLocked, ConfigError, Overloaded
from ..jobs import JobState
from ..logs import get_logger
from . import _sqlite_ops as _ops
from . import _sqlite_schema as sql
from ._checkpointer import FALLBACK_PAGES, Checkpointer
from ._group_commit import GroupCommitter
from ._run_stream import RunAborted, RunStream, StreamWriter
from ._sqlite_ops import Conn, Submit, fetch
from ._sqlite_readonly import open_read_only
from ._sqlite_thread import INLINE_ROWS, Busy, ConnectionRunner, queue_on_thread
from ._template import ClaimArgs, CombinedBacklogBase
from .base import CANCELLED_ERROR, JobRecord, NewJob, Outcome

__all__ = [
    "DEAD_OWNER_CHECK",
    "HAS_RETURNING",
    "WATCH_INTERVAL",
    "WATCH_INTERVAL_MAX",
    "SQLiteBacklog",
]

T = TypeVar("T")
Db = aiosqlite.Connection
_log = get_logger()

#: seconds (of the callers' ``now``) between a lane's checks for dead lease owners
DEAD_OWNER_CHECK = 1.0
#: seconds between looks at the ``-wal`` file while an idle claimer waits for work from
#: other processes (a ``stat`` each; see :meth:`SQLiteBacklog.wait_for_work`): at first,
#: then doubling up to :data:`WATCH_INTERVAL_MAX` while nothing is written
WATCH_INTERVAL = 0.005
WATCH_INTERVAL_MAX = 0.05

#: UPDATE ... RETURNING needs SQLite 3.35+; older versions select, then update.
HAS_RETURNING = sqlite3.sqlite_version_info >= (3, 35, 0)
_Q, _R, _DONE, _DEAD, _CANCELLED = (
    s.value
    for s in (JobState.QUEUED, JobState.RUNNING, JobState.DONE, JobState.DEAD, JobState.CANCELLED)
)
_KIND_STATE = {"done": _DONE, "retry": _Q, "dead": _DEAD, "cancelled": _CANCELLED}
_ID_CHUNK = 500  # ids per IN (...) lookup
_STATES = {state.value: state for state in JobState}
_PURGE_CHUNK = 5000  # rows deleted per purge transaction


def _stamp(path: str) -> tuple[int, int] | None:
    """Size and modification time of ``path`` (``None``: no such file)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def commit_point() -> None:
    """Called on the connection's thread just before each ``COMMIT`` (a hook for the
    crash tests, which kill the process there)."""


def _in_transaction(conn: Conn, body: Callable[[Conn], T], backlog: bool = True) -> T:
    """On the connection's thread: ``BEGIN IMMEDIATE``, ``body``, ``COMMIT``; rolled
    back if anything fails. ``backlog``: a write of the backlog's own (a commit point)."""
    conn.execute("BEGIN IMMEDIATE")
    return _to_commit(conn, body, backlog)


def _to_commit(conn: Conn, body: Callable[[Conn], T], backlog: bool = True) -> T:
    """After ``BEGIN IMMEDIATE``: ``body``, ``COMMIT``; rolled back if anything fails."""
    try:
        result = body(conn)
        if backlog:
            commit_point()
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.rollback()
        raise
    return result


def _probe(path: str, busy_timeout: float) -> None:
    sqlite3.connect(path, timeout=busy_timeout).close()


#: the statements that write some outcomes: ``(query, params, executemany?)`` each
Statements = list[tuple[str, Sequence[Any], bool]]


def complete_statements(outcomes: Sequence[Outcome], now: float) -> Statements:
    """The statements that write ``outcomes``: one ``sql.complete_rows`` per 2**k of
    them (at most ``COMPLETE_ROWS_MAX``), or ``sql.COMPLETE`` once per outcome when two
    are of one job (or SQLite predates ``UPDATE ... FROM``)."""
    rows = _outcome_rows(outcomes, now)
    if not sql.UPDATE_FROM or len({o.job_id for o in outcomes}) != len(outcomes):
        return [(sql.COMPLETE, rows, True)]
    statements: Statements = []
    start = 0
    while start < len(rows):
        k = sql.statement_rows(len(rows) - start, sql.COMPLETE_ROWS_MAX)
        params: list[Any] = [now]
        for row in rows[start : start + k]:
            params += _per_outcome(row)
        statements.append((sql.complete_rows(k), params, False))
        start += k
    return statements


#: a ``sql.COMPLETE`` row's values that ``sql.complete_rows`` takes per outcome: state,
#: result, error, traceback, run_at, id, owner, attempt
_per_outcome = itemgetter(0, 2, 3, 4, 5, 7, 9, 10)


def run_statements(db: Conn, statements: Statements) -> int:
    """Run ``statements`` (see :func:`complete_statements`); the rows they changed."""
    changed = 0
    for query, params, many in statements:
        changed += (db.executemany(query, params) if many else db.execute(query, params)).rowcount
    return changed


def _outcome_rows(outcomes: Sequence[Outcome], now: float) -> list[tuple[Any, ...]]:
    """The parameters of ``sql.COMPLETE``, one tuple per outcome."""
    rows: list[tuple[Any, ...]] = []
    for o in outcomes:
        done = o.kind == "done"
        state = _KIND_STATE[o.kind]
        rows.append(
            (state, state, o.result_json if done else None,
             None if done else o.error, None if done else o.traceback,
             o.run_at if o.kind == "retry" else None, now, o.job_id, _R, o.owner,
             o.attempt, o.attempt)
        )  # fmt: skip
    return rows


class SQLiteBacklog(CombinedBacklogBase):
    """A :class:`~scheduler.backlog.base.Backlog` in one SQLite file; see the module docstring."""

    _committer: GroupCommitter[Submit, list[JobRecord] | list[str]]

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
        busy_timeout: float = 5.0,
        batch_max: int = 512,
        read_only: bool = False,
        inline_writes: bool = True,
    ) -> None:
        """``read_only``: open the file with ``mode=ro`` (no migration, WAL switch or
        write; see ``_sqlite_readonly``); every write raises ``BacklogError``.
        ``inline_writes``: small writes may run on the event loop's thread (see
        ``_sqlite_thread``; only with ``synchronous="NORMAL"``)."""
        if synchronous not in ("NORMAL", "FULL"):
            raise ConfigError(f"synchronous must be 'NORMAL' or 'FULL', not {synchronous!r}")
        if busy_timeout < 0 or batch_max < 1:
            raise ConfigError("busy_timeout must be >= 0 and batch_max >= 1")
        self.path = os.fspath(path)
        super().__init__(f"backlog {self.path!r}")
        self.synchronous = synchronous
        self.busy_timeout = busy_timeout
        self.read_only = read_only
        self.inline_writes = inline_writes
        self.use_returning = HAS_RETURNING
        self._db: Db | None = None
        self._runner: ConnectionRunner | None = None  # set while open (writable)
        self._closing = False
        self._committer = GroupCommitter[Submit, list[JobRecord] | list[str]](
            self._write_submits, batch_max=batch_max
        )
        self._owners: set[str] = set()  # lease owners registered by this connection
        self._dead_checked: dict[str, float] = {}  # lane -> ``now`` of its last dead-owner check
        # ``PRAGMA data_version`` at the last claim: it moves when another connection commits
        self._seen_version: int | None = None
        self._checkpointer: Checkpointer | None = None

    # -- lifecycle ----------------------------------------------------------------

    async def open(self) -> None:
        """Connect, switch to WAL, apply pending migrations (``read_only``: connect and
        check the schema version only). A no-op when already open."""
        if self._db is not None:
            return
        if self.read_only:
            self._db, self._closing = await open_read_only(self.path, self.busy_timeout), False
            return
        try:
            # Probe with plain sqlite3 first: when aiosqlite's own connect fails, its
            # worker thread outlives the call and can report to a loop already closed.
            await asyncio.to_thread(_probe, self.path, self.busy_timeout)
            db = await aiosqlite.connect(
                self.path, timeout=self.busy_timeout, isolation_level=None,
                check_same_thread=False,  # small writes run inline (see _sqlite_thread)
            )  # fmt: skip
        except sqlite3.Error as exc:
            raise self._error(exc) from exc
        self._db, self._closing = db, False
        self._runner = ConnectionRunner(
            db,
            self.busy_timeout,
            inline_allowed=self.inline_writes and self.synchronous == "NORMAL",
        )
        try:
            mode = await self._switch_to_wal()
            if str(mode).lower() != "wal" and self.path != ":memory:":
                raise BacklogError(f"backlog {self.path!r} could not switch to WAL mode ({mode})")
            await self._read(f"PRAGMA synchronous={self.synchronous}")
            await self._transaction(partial(_ops.migrate, path=self.path))
            if self.path != ":memory:":
                await self._read(f"PRAGMA wal_autocheckpoint={FALLBACK_PAGES}")
                self._checkpointer = Checkpointer(self.path, self.busy_timeout)
                self._checkpointer.start()
        except BaseException:
            self._db, self._runner = None, None
            await self._stop_checkpointer()
            await db.close()
            raise

    async def _switch_to_wal(self) -> str:
        """``PRAGMA journal_mode=WAL``; the journal mode it reports.

        Processes starting together on a new file race to switch it: each holds a
        shared lock and wants the exclusive one, and SQLite breaks that deadlock by
        answering one of them "database is locked" at once, without waiting out
        ``busy_timeout``. So a lock error is tried again, after 5 ms doubling to
        100 ms, until ``busy_timeout`` has passed.
        """
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self.busy_timeout
        pause = 0.005
        while True:
            try:
                return str((await self._read("PRAGMA journal_mode=WAL"))[0][0])
            except BacklogLocked:
                if loop.time() + pause > give_up:
                    raise
            await asyncio.sleep(pause)
            pause = min(2 * pause, 0.1)

    async def _stop_checkpointer(self) -> None:
        checkpointer, self._checkpointer = self._checkpointer, None
        if checkpointer is not None:
            await asyncio.to_thread(checkpointer.stop)

    async def close(self) -> None:
        """Refuse new calls, write pending submits, wait for transactions, disconnect."""
        if self._db is None:
            return
        self._closing = True
        await self._finish_writes()
        owners, self._owners = sorted(self._owners), set()
        if owners:  # we hold no leases any more (or they run out): forget who we were
            with contextlib.suppress(BacklogError):
                await self._write_many(sql.DELETE_OWNER, [(o,) for o in owners])
        await self._stop_checkpointer()
        db, self._db, self._runner = self._db, None, None
        await db.close()

    # -- plumbing -------------------------------------------------------------------

    def _is_open(self) -> bool:
        return self._db is not None and not self._closing

    def _live(self) -> Db:
        if self._db is None:
            raise self._not_open()
        return self._db

    def _error(self, exc: sqlite3.Error) -> BacklogError:
        return sql.translate_error(exc, self.path, self.busy_timeout)

    async def _read(self, query: str, params: Sequence[Any] = ()) -> list[Sequence[Any]]:
        try:
            db = self._live()
            return await self._on_thread(db, fetch, db._conn, query, params)
        except sqlite3.Error as exc:
            raise self._error(exc) from exc

    def _on_thread(self, db: Db, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """``fn(*args)`` queued on the connection's thread (``ValueError``: closed)."""
        if self._runner is None:  # read-only: aiosqlite's thread only
            return queue_on_thread(db, fn, *args)
        return self._runner.on_thread(fn, *args)

    async def _transaction(
        self, body: Callable[[Conn], T], *, backlog: bool = True, rows: int | None = None
    ) -> T:
        """``body(conn)`` inside ``BEGIN IMMEDIATE ... COMMIT``, on the connection's
        thread (in this task's context, so context variables read the same there), or
        inline on this one when ``rows`` (the rows it touches; ``None``: unknown) is at
        most ``INLINE_ROWS``, the thread is idle and the write lock is free (see
        ``_sqlite_thread``). ``backlog=False``: another component's tables (not counted
        in ``commits``, not a commit point).

        Shielded: a cancelled caller stops waiting, but the transaction still
        commits or rolls back before the connection is used again.
        """
        if self.read_only:
            raise BacklogError(f"backlog {self.path!r} was opened read-only: no writes")
        db = self._live()
        runner = self._runner
        if runner is not None and rows is not None and rows <= INLINE_ROWS and runner.can_inline():
            try:
                result = runner.inline(partial(_to_commit, body=body, backlog=backlog))
            except sqlite3.Error as exc:
                raise self._error(exc) from exc
            if not isinstance(result, Busy):
                self._committed(backlog, inline=True)
                await asyncio.sleep(0)  # an awaited write still lets others run
                return result
            self._counters.inline_busy += 1
        run = contextvars.copy_context().run
        try:
            write = self._on_thread(db, run, _in_transaction, db._conn, body, backlog)
        except ValueError as exc:  # closed under us
            raise BacklogError(f"backlog {self.path!r} is closed") from exc
        self._inflight.add(write)
        write.add_done_callback(partial(self._written, backlog=backlog))
        try:
            return await asyncio.shield(write)
        except sqlite3.Error as exc:
            raise self._error(exc) from exc

    def _written(self, write: asyncio.Future[Any], *, backlog: bool) -> None:
        """A transaction on the thread ended (whether or not its caller still waits):
        count it (see :meth:`_committed`), or leave its error to the caller (who
        converts it, if it still waits)."""
        self._inflight.discard(write)
        if write.cancelled() or write.exception() is not None:
            return
        self._committed(backlog)

    def _committed(self, backlog: bool, *, inline: bool = False) -> None:
        """A transaction committed: count a commit (``inline``: run on the event
        loop's thread), wake the checkpointer."""
        if backlog:
            self._counters.commits += 1
            if inline:
                self._counters.inline_commits += 1
        if self._checkpointer is not None:
            self._checkpointer.poke()

    async def side_transaction(self, work: Callable[[Conn], T]) -> T:
        """``work(conn)`` in its own ``BEGIN IMMEDIATE ... COMMIT`` on this backlog's
        connection, queued in turn with the backlog's writes: for other tables in the
        same file (the fleet's). A second connection of this process would wait for
        the write lock by polling, and can lose it to back-to-back group commits for
        its whole busy timeout. Shielded like the backlog's writes; not counted in
        ``stats().commits``. ``sqlite3`` errors are raised as ``BacklogError``."""
        return await self._transaction(work, backlog=False)

    async def _write(self, query: str, params: Sequence[Any]) -> int:
        def body(db: Conn) -> int:
            return db.execute(query, params).rowcount

        return await self._transaction(body)

    async def _write_many(self, query: str, params: list[tuple[Any, ...]]) -> int:
        """``query`` once per tuple of ``params``: one row each (by id), so small."""
        if not params:
            return 0

        def body(db: Conn) -> int:
            return db.executemany(query, params).rowcount

        return await self._transaction(body, rows=len(params))

    # -- submit: group commit -------------------------------------------------------

    def _submit(
        self, jobs: Sequence[NewJob], args: list[list[Any]], now: float
    ) -> asyncio.Future[list[JobRecord]]:
        """The group commit's future for ``jobs`` (a plain call: no frame of its own)."""
        put = self._committer.put((jobs, args, now), len(jobs))
        return cast(asyncio.Future[list[JobRecord]], put)

    def _submit_run(
        self, template: NewJob, texts: list[str], args: list[list[Any]], now: float
    ) -> asyncio.Future[list[str]]:
        """A run in the group commit as one submit: one ``INSERT_RUN`` (a few jobs:
        rows among the others'), no record each; the group commit's future."""
        run = _ops.JobRun(template, texts)
        return cast(asyncio.Future[list[str]], self._committer.put((run, args, now), len(texts)))

    def open_run(self, template: NewJob, count: int, *, now: float) -> StreamWriter:
        """See :class:`~scheduler.backlog.base.StreamsRuns` and ``_run_stream``: the run
        joins the group commit as one submit, now, and its transaction inserts each
        chunk as it is added."""
        self._check_run(template)
        if self.read_only:
            raise BacklogError(f"backlog {self.path!r} was opened read-only: no writes")
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(f"count must be an int >= 1, got {count!r}")
        started = asyncio.Event()
        on_start = partial(asyncio.get_running_loop().call_soon_threadsafe, started.set)
        stream = RunStream(template, count, on_start=on_start)
        write = asyncio.ensure_future(self._write_stream(stream, now))
        return StreamWriter(stream, write, started)

    async def _write_stream(self, stream: RunStream, now: float) -> None:
        await self._committer.put((stream, [], now), stream.count)
        self._counters.submitted += stream.count

    async def _write_submits(
        self, batch: list[Submit]
    ) -> list[list[JobRecord] | list[str] | Overloaded | RunAborted]:
        # a stream waits for the event loop to hand its chunks over: never inline
        streams = any(isinstance(jobs, RunStream) for jobs, _, _ in batch)
        rows = None if streams else sum(len(jobs) for jobs, _, _ in batch)
        return await self._transaction(partial(_ops.insert, batch=batch), rows=rows)

    # -- claim and outcomes -----------------------------------------------------------

    async def _claim(self, claim: ClaimArgs) -> list[JobRecord]:
        reclaimed: list[tuple[str, int]] = []
        body = partial(self._claim_ops, claim, reclaimed)
        records = await self._transaction(body, rows=claim.limit)
        self._claimed(claim, reclaimed)
        return records

    def _claim_ops(
        self, claim: ClaimArgs, reclaimed: list[tuple[str, int]], db: Conn
    ) -> list[JobRecord]:
        """The claim statements, inside the caller's transaction: first (at an owner's
        first claim here, then at most once a second per lane) end the leases of owners
        whose process is gone, then claim."""
        lane, owner, now = claim.lane, claim.owner, claim.now
        if owner not in self._owners:
            reclaimed += _ops.register_owner(db, owner, now)
        last = self._dead_checked.get(lane)
        if last is None or not 0 <= now - last < DEAD_OWNER_CHECK:
            reclaimed += _ops.reclaim_dead(db, lane, owner, now)
        self._seen_version = int(fetch(db, "PRAGMA data_version")[0][0])
        return _ops.claim(
            db, lane, claim.limit, owner, claim.lease_until, now,
            returning=self.use_returning, max_running=claim.max_running, tenants=claim.tenants,
        )  # fmt: skip

    def _claimed(self, claim: ClaimArgs, reclaimed: list[tuple[str, int]]) -> None:
        """After a claim committed: remember the owner and the check; log reclaimed owners."""
        self._owners.add(claim.owner)
        last = self._dead_checked.get(claim.lane)
        if last is None or not 0 <= claim.now - last < DEAD_OWNER_CHECK:
            self._dead_checked[claim.lane] = claim.now
        for dead, jobs in reclaimed:
            _log.warning("backlog.dead_owner_reclaimed", owner=dead, jobs=jobs, lane=claim.lane)

    async def _complete_and_claim(
        self, outcomes: Sequence[Outcome], claim: ClaimArgs
    ) -> tuple[int, list[JobRecord]]:
        """``complete`` then ``claim`` in one ``BEGIN IMMEDIATE`` transaction (one commit)."""
        statements = complete_statements(outcomes, claim.now)
        reclaimed: list[tuple[str, int]] = []

        def body(db: Conn) -> tuple[int, list[JobRecord]]:
            applied = run_statements(db, statements)
            return applied, self._claim_ops(claim, reclaimed, db)

        applied, records = await self._transaction(body, rows=len(outcomes) + claim.limit)
        self._claimed(claim, reclaimed)
        return applied, records

    async def wait_for_work(self, lane: str, timeout: float) -> None:
        """Return once another connection (another process, most likely) may have
        committed to the file since this backlog's last claim, or after ``timeout`` s.

        SQLite has no notifications. A commit changes the ``-wal`` file, so this
        looks at the file's size and modification time, every
        :data:`WATCH_INTERVAL` seconds at first, backing off to
        :data:`WATCH_INTERVAL_MAX` (a ``stat``, no database call: an idle worker
        costs next to nothing), after one look at ``PRAGMA data_version``
        (other connections' commits since the last claim). Work submitted
        elsewhere starts within milliseconds rather than at the next poll. Any
        write wakes it, this process's own included (a hint: the caller claims,
        and may find nothing).
        """
        self._check_open()
        seen = self._seen_version
        if seen is not None and await self._data_version() != seen:
            return
        loop = asyncio.get_running_loop()
        end = loop.time() + max(0.0, timeout)
        wal = self.path + "-wal"
        before = _stamp(wal)
        interval = WATCH_INTERVAL
        while (left := end - loop.time()) > 0:
            await asyncio.sleep(min(interval, left))
            if _stamp(wal) != before:
                return
            interval = min(interval * 2, WATCH_INTERVAL_MAX)

    async def _data_version(self) -> int:
        return int((await self._read("PRAGMA data_version"))[0][0])

    async def _heartbeat(self, job_ids: Sequence[str], owner: str, lease_until: float) -> int:
        params = [(lease_until, i, _R, owner) for i in job_ids]
        return await self._write_many(sql.HEARTBEAT, params)

    async def _complete(self, outcomes: Sequence[Outcome], now: float) -> int:
        if not outcomes:
            return 0
        statements = complete_statements(outcomes, now)
        return await self._transaction(partial(run_statements, statements=statements),
                                       rows=len(outcomes))  # fmt: skip

    async def _release(self, job_ids: Sequence[str], owner: str, now: float) -> int:
        return await self._write_many(
            sql.RELEASE, [(_Q, CANCELLED_ERROR, now, i, _R, owner) for i in job_ids]
        )

    # -- inspection and maintenance -----------------------------------------------------

    async def _get(self, job_id: str) -> JobRecord | None:
        rows = await self._read(f"SELECT {sql.COLUMNS} FROM jobs WHERE id = ?", (job_id,))
        return sql.decode_row(rows[0])[1] if rows else None

    async def _list_jobs(
        self, state: JobState | None, lane: str | None, limit: int, offset: int
    ) -> list[JobRecord]:
        where, params = ["1"], []
        if state is not None:
            where.append("state = ?")
            params.append(state.value)
        if lane is not None:
            where.append("lane = ?")
            params.append(lane)
        query = f"SELECT {sql.COLUMNS} FROM jobs WHERE {' AND '.join(where)}"
        query += " ORDER BY seq LIMIT ? OFFSET ?"
        rows = await self._read(query, (*params, limit, offset))
        return [sql.decode_row(row)[1] for row in rows]

    async def _requeue(self, job_id: str | None, lane: str | None, now: float) -> int:
        if job_id is not None:  # also revives a row whose state is unreadable (read as DEAD)
            where = "id = ? AND state NOT IN (?, ?, ?, ?)"
            params = [job_id, _Q, _R, _DONE, _CANCELLED]
        else:
            where, params = "state = ?", [_DEAD]
        if lane is not None:
            where += " AND lane = ?"
            params.append(lane)
        return await self._write(sql.REQUEUE + where, (_Q, now, now, *params))

    async def _cancel(self, job_id: str, now: float) -> JobState | None:
        """One ``BEGIN IMMEDIATE`` transaction: claims (which hold the same lock) come
        wholly before it or after it."""

        def body(db: Conn) -> JobState | None:
            found = fetch(db, sql.CANCEL_STATE, (job_id,))
            if not found:
                return None
            db.execute(sql.CANCEL_QUEUED, (CANCELLED_ERROR, now, job_id))
            db.execute(sql.CANCEL_RUNNING, (now, job_id))
            return _STATES.get(found[0][0], JobState.DEAD)  # unreadable: read as DEAD

        return await self._transaction(body, rows=1)

    async def _cancel_task(self, task: str | None, tenant: str | None, now: float) -> int:
        match = (task, task, tenant, tenant)

        def body(db: Conn) -> int:
            queued = db.execute(sql.CANCEL_TASK_QUEUED, (CANCELLED_ERROR, now, *match)).rowcount
            return queued + db.execute(sql.CANCEL_TASK_RUNNING, (now, *match)).rowcount

        return await self._transaction(body)

    async def _cancel_requested(self, job_ids: Sequence[str]) -> list[str]:
        """A read by id (the unique index): cheap enough to ask a few times a second."""
        found: list[str] = []
        for i in range(0, len(job_ids), _ID_CHUNK):
            chunk = list(job_ids[i : i + _ID_CHUNK])
            found += [
                str(row[0]) for row in await self._read(sql.cancel_requested(len(chunk)), chunk)
            ]
        return found

    async def _counts(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for lane, state, n in await self._read(sql.COUNTS):
            out.setdefault(str(lane), {})[str(state)] = int(n)
        return out

    async def _purge(self, finished_before: float) -> int:
        """Delete in chunks, one short transaction each, so writers are not held up."""
        total = 0
        for query in sql.PURGE:
            while True:
                n = await self._write(query, (finished_before, _PURGE_CHUNK))
                total += n
                if n < _PURGE_CHUNK:
                    break
        return total

    async def _queued_count(self, lane: str) -> int:
        """The lane's QUEUED count, kept by triggers: one row read, however deep the lane."""
        found = await self._read(sql.QUEUED_COUNT, (lane,))
        return max(0, int(found[0][0])) if found else 0

    async def _queued_by_tenant(self, lane: str, limit: int) -> list[tuple[str, int]]:
        return [(str(t), int(n)) for t, n in await self._read(sql.TOP_TENANTS, (lane, limit))]

    def __repr__(self) -> str:
        return f"<SQLiteBacklog {self.path!r} {'open' if self._db is not None else 'closed'}>"
