"""PostgresBacklog: the durable backlog shared by many machines, on PostgreSQL (asyncpg).

Same protocol and semantics as :class:`~scheduler.backlog.sqlite.SQLiteBacklog`
(the contract suite in ``tests/backlog`` runs against both). Select it with a
DSN: ``Scheduler(backlog="postgresql://user@host/db")``; install the driver
with ``pip install 'floodgate[postgres]'``.

Schema (``floodgate_meta.version`` = 4; forward migrations in
``_postgres_schema.MIGRATIONS`` run in order at :meth:`PostgresBacklog.open`,
under a per-schema advisory lock so processes starting together do not
collide)::

    floodgate_jobs(seq bigint identity PRIMARY KEY, id text UNIQUE, task, lane,
                   args text (JSON array), priority float8, state text, attempts,
                   max_attempts, run_at, created_at, updated_at (epoch s float8),
                   key text, lease_owner, lease_until, result text (JSON), error,
                   traceback, deadline_at, cost float8 (NULL: the task's cost; v2),
                   cancel_requested_at float8 (a cancel of the RUNNING job was asked; v4))
    floodgate_jobs_claim         (lane, state, priority, run_at, seq)
    floodgate_jobs_key  UNIQUE   (key) WHERE key IS NOT NULL
    floodgate_jobs_state_updated (state, updated_at)
    floodgate_claim(...)         the claim, as one PL/pgSQL function
    floodgate_lane_queued(lane text PRIMARY KEY, n)  each lane's QUEUED count, kept by
                                 statement triggers on floodgate_jobs (v3)
    floodgate_owners(owner text PRIMARY KEY, registered_at)  who holds leases (v3)
    floodgate_reclaim_dead(...)  ends dead owners' leases (v3)
    floodgate_meta(id = 1, version)

``args``/``result`` are ``text``, not ``jsonb``, as in SQLite: a row that is
not valid JSON can exist (written behind Floodgate's back) and is handled by
the contract's corrupt-row rule instead of breaking every read.

Where the tables live: the first schema of the connection's ``search_path``
(``public`` by default). ``schema="name"`` sets the search path and creates
the schema if needed; a DSN's ``?search_path=name`` works as well (asyncpg
passes unknown DSN parameters to the server as settings).

Round trips: ``submit`` is group-committed: concurrent submitters share one
transaction that locks the batch's lanes' ``floodgate_lane_queued`` rows (in
lane order, the order the count trigger takes them in), admits the submits
that fit their ``max_queued`` by those counts (``Overloaded`` for the rest),
then runs one ``INSERT ... SELECT FROM unnest(...) ON CONFLICT (key) DO
NOTHING`` (the batch's keys are looked up first; rows go in by key, with
``seq`` drawn in submission order, so batches sharing keys cannot deadlock).
``claim`` is one call of the ``floodgate_claim`` function: expired leases
with no attempts left go DEAD, then the lane's next due jobs are leased with
``FOR UPDATE SKIP LOCKED``, so concurrent claimers never wait for each
other's rows. With ``max_running`` the function first takes
``pg_advisory_xact_lock`` for the lane and counts the live leases other
owners hold in it, so the ceiling holds across every process. ``complete``,
``heartbeat`` and ``release`` are one statement each over arrays.

Dead owners: a worker's first claim opens one more connection that holds a
session advisory lock per lease owner for the process's life, and registers
the owner in ``floodgate_owners``. A claimer (at an owner's first claim, then
at most once per :data:`DEAD_OWNER_CHECK` seconds per lane) tries each
registered owner's lock with ``pg_try_advisory_xact_lock``: taking it means
the owner's session is gone, so its leases end at once, as if expired
(``backlog.dead_owner_reclaimed``). A cut owner connection is replaced at
once, in the background, and its locks taken again; until then its owners
look dead to other claimers (their jobs may then run twice, as after any
lease loss: at-least-once).

Cancellation: ``cancel`` locks the job's row (``FOR UPDATE``) in its transaction, so
a claim (``FOR UPDATE SKIP LOCKED``) either took it first or never sees it
queued; for a running job it records the request and sends the job id on a
second channel (``floodgate-cancel:<schema>``), which :meth:`PostgresBacklog.on_cancel`
subscribers hear within milliseconds.

Wake-ups: submits, requeues, releases and due retries send ``NOTIFY`` (on a
channel per schema, payload = lane) in the same transaction; one extra
connection per backlog ``LISTEN``\\ s, and :meth:`PostgresBacklog.wait_for_work`
returns as soon as its lane is named. It is a hint: the runner still polls.

Errors: a refused or lost connection (socket errors, ``pg_terminate_backend``,
a server restart or failover) raises
:class:`~scheduler.backlog.base.BacklogUnavailable`; the pool replaces dead
connections on the next call and the listener reconnects with backoff. A
claim that failed so may still have committed: the next claim of the same
lane and owner first gives those jobs back (with their attempt), so a lost
answer costs neither a lease timeout nor an attempt. A full disk raises
``BacklogFull``; anything else ``BacklogError``. Messages name the DSN
without its password. Every write runs to its end even if the awaiting
caller is cancelled (as in SQLite).

Deployment notes: each backlog holds up to ``pool_max`` connections plus one
listening connection (and, in a process that claims, one owner connection).
Statements are prepared (asyncpg's statement cache) and owners' locks live in
a session, so put a pooler such as PgBouncer in session mode, not
transaction mode, in front.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import asyncpg  # type: ignore[import-untyped]

from ..errors import BacklogError, ConfigError, Overloaded
from ..jobs import JobState
from ..logs import get_logger
from . import _postgres_schema as sql
from ._fair import EQUAL_SHARES, FAIR_ROUNDS, NO_TENANT, page_flows, plan_claim
from ._group_commit import GroupCommitter
from ._template import BacklogBase, ClaimArgs
from .base import (
    CANCELLED_ERROR,
    BacklogUnavailable,
    JobRecord,
    NewJob,
    Outcome,
    admit,
    bounded_tenants,
    corrupt,
    new_record,
)

__all__ = ["DEAD_OWNER_CHECK", "PostgresBacklog"]

T = TypeVar("T")
_log = get_logger()

#: seconds (of the callers' ``now``) between a lane's checks for dead lease owners
DEAD_OWNER_CHECK = 1.0
Conn = Any  # asyncpg.Connection (asyncpg ships no type information)

#: One ``submit()`` call: its jobs, their decoded args, its ``now``.
Submit = tuple[Sequence[NewJob], list[list[Any]], float]

_KIND_STATE = {"done": "done", "retry": "queued", "dead": "dead", "cancelled": "cancelled"}
_STATES = {state.value: state for state in JobState}
_PURGE_CHUNK = 5000  # rows deleted per purge statement
_KEY_RETRIES = 5  # a key that conflicts, then is purged before we read it: insert again
#: errors of the connection rather than of the statement (InternalClientError: asyncpg's
#: protocol state after a connection was cut mid-operation)
_UNREACHABLE = (OSError, TimeoutError, asyncpg.InterfaceError, asyncpg.InternalClientError)
_LISTEN_BACKOFF = (0.05, 5.0)  # first and longest pause between listener reconnects
_LISTEN_PING = 15.0  # seconds between liveness checks of the listening connection
_RELOCK_TRIES = 20  # background attempts to take owner locks again after a lost connection


class PostgresBacklog(BacklogBase):
    """A :class:`~scheduler.backlog.base.Backlog` in PostgreSQL; see the module docstring.

    Args:
        dsn: ``postgresql://user:password@host:port/database[?search_path=...]``.
        schema: where the tables live (created if missing); default: the
            DSN's ``search_path``, else ``public``.
        application_name: shown in ``pg_stat_activity`` (default ``floodgate``
            unless the DSN names one).
        pool_min, pool_max: connections kept open / at most (plus one listener).
        batch_max: most jobs written by one group commit.
        connect_timeout: seconds to connect, or to wait for a free pooled connection.
        command_timeout: seconds one statement may take.
        listen: ``LISTEN`` for new work (:meth:`wait_for_work`); ``False`` only polls.
    """

    _committer: GroupCommitter[Submit, list[JobRecord]]

    def __init__(
        self,
        dsn: str,
        *,
        schema: str | None = None,
        application_name: str | None = None,
        pool_min: int = 1,
        pool_max: int = 8,
        batch_max: int = 512,
        connect_timeout: float = 10.0,
        command_timeout: float | None = 60.0,
        listen: bool = True,
    ) -> None:
        if not isinstance(dsn, str) or not dsn.startswith(("postgres://", "postgresql://")):
            raise ConfigError("a PostgreSQL backlog needs a postgresql:// or postgres:// DSN")
        if not 0 <= pool_min <= pool_max or pool_max < 1 or batch_max < 1:
            raise ConfigError("need 0 <= pool_min <= pool_max, pool_max >= 1 and batch_max >= 1")
        if connect_timeout <= 0 or (command_timeout is not None and command_timeout <= 0):
            raise ConfigError("connect_timeout and command_timeout must be > 0")
        self.dsn = dsn
        self.schema = None if schema is None else sql.check_schema(schema)
        self.pool_min, self.pool_max = pool_min, pool_max
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        self.listen = listen
        self._settings: dict[str, str] = {}
        query = parse_qs(urlsplit(dsn).query)
        if application_name is not None or "application_name" not in query:
            self._settings["application_name"] = application_name or "floodgate"
        if self.schema is not None:
            self._settings["search_path"] = f'"{self.schema}"'
        self._where = _redact(dsn) + ("" if schema is None else f" (schema {schema})")
        super().__init__(f"backlog {self._where}")
        self._pool: Any = None  # asyncpg.Pool
        self._closing = False
        self._channel = ""
        self._cancel_channel = ""
        self._cancel_callbacks: list[Callable[[str], object]] = []
        self._committer = GroupCommitter[Submit, list[JobRecord]](
            self._write_submits, batch_max=batch_max
        )
        # claims whose answer was lost with the connection: (lane, owner) -> (now, lease_until)
        self._unheard: dict[tuple[str, str], list[tuple[float, float]]] = {}
        # LISTEN side: lanes named by a NOTIFY nobody was waiting for, and the waiters
        self._listener: asyncio.Task[None] | None = None
        self._listening = False
        self._notified: set[str] = set()
        self._waiters: dict[str, set[asyncio.Future[None]]] = {}
        # dead-owner detection: the connection holding our owners' advisory locks
        self._owner_conn: Conn | None = None
        self._owner_lock = asyncio.Lock()
        self._owners: set[str] = set()  # owners that claimed through this backlog
        self._held: set[str] = set()  # ... whose lock _owner_conn holds
        self._owner_now = 0.0  # the latest ``now`` of a claim (a registration's time)
        self._relocking: asyncio.Task[None] | None = None
        self._dead_checked: dict[str, float] = {}  # lane -> ``now`` of its last check

    @property
    def server_settings(self) -> dict[str, str]:
        """The session settings every connection of this backlog uses (a copy)."""
        return dict(self._settings)

    # -- lifecycle ----------------------------------------------------------------

    async def open(self) -> None:
        """Connect, create or migrate the schema, start listening. A no-op when open."""
        if self._pool is not None:
            return
        try:
            pool = await asyncpg.create_pool(
                self.dsn,
                min_size=self.pool_min,
                max_size=self.pool_max,
                server_settings=self._settings,
                timeout=self.connect_timeout,
                command_timeout=self.command_timeout,
            )
        except Exception as exc:
            raise self._error(exc) from exc
        try:
            async with pool.acquire(timeout=self.connect_timeout) as conn:
                schema = await self._migrate(conn)
        except BaseException as exc:
            pool.terminate()
            if isinstance(exc, Exception) and not isinstance(exc, BacklogError):
                raise self._error(exc) from exc
            raise
        self._pool, self._closing = pool, False
        self._channel = sql.channel_for(schema)
        self._cancel_channel = sql.channel_for(schema, "floodgate-cancel")
        if self.listen:
            ready = asyncio.get_running_loop().create_future()
            self._listener = asyncio.create_task(
                self._listen_loop(ready), name="floodgate-pg-listener"
            )
            await asyncio.shield(ready)  # first attempt made (if it failed, we poll meanwhile)

    async def _migrate(self, conn: Conn) -> str:
        """Apply pending migrations in one transaction under the schema's advisory lock."""
        async with conn.transaction():
            schema = self.schema or await conn.fetchval("SELECT current_schema()")
            if schema is None:
                path = await conn.fetchval("SHOW search_path")
                raise BacklogError(
                    f"backlog {self._where}: no schema of search_path ({path}) exists; "
                    "create it, or pass schema= to have Floodgate create it"
                )
            await conn.execute(sql.MIGRATE_LOCK, schema)
            if self.schema is not None:
                await conn.execute(sql.create_schema(self.schema))
            await conn.execute(sql.META)
            version = int(await conn.fetchval(sql.META_VERSION) or 0)
            if version > sql.SCHEMA_VERSION:
                raise BacklogError(
                    f"backlog {self._where} has schema version {version}, newer than this "
                    f"Floodgate knows ({sql.SCHEMA_VERSION}); upgrade Floodgate to open it"
                )
            for statements in sql.MIGRATIONS[version:]:
                for statement in statements:
                    await conn.execute(statement)
            if version < sql.SCHEMA_VERSION:
                await conn.execute(sql.META_SET, sql.SCHEMA_VERSION)
        return str(schema)

    async def close(self) -> None:
        """Refuse new calls, write pending submits, wait for writes, disconnect."""
        if self._pool is None:
            return
        self._closing = True
        await self._finish_writes()
        await self._forget_owners()
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)
        pool, self._pool = self._pool, None
        try:
            async with asyncio.timeout(self.connect_timeout):
                await pool.close()
        except Exception:
            pool.terminate()
        self._wake_all()

    # -- plumbing -------------------------------------------------------------------

    def _is_open(self) -> bool:
        return self._pool is not None and not self._closing

    def _error(self, exc: BaseException) -> BacklogError:
        if isinstance(exc, BacklogError):
            return exc
        return sql.translate_error(exc, self._where, unreachable=isinstance(exc, _UNREACHABLE))

    async def _call(self, body: Callable[[Conn], Awaitable[T]]) -> T:
        """``body(conn)`` on a pooled connection, with errors translated."""
        pool = self._pool
        if pool is None:
            raise self._not_open()
        try:
            async with pool.acquire(timeout=self.connect_timeout) as conn:
                return await body(conn)
        except (BacklogError, ValueError):
            raise
        except Exception as exc:
            raise self._error(exc) from exc

    async def _write(self, body: Callable[[Conn], Awaitable[T]]) -> T:
        """:meth:`_call` for a write: shielded, so a cancelled caller stops waiting but the
        statement still finishes (and :meth:`close` waits for it)."""
        result = await self._to_the_end(self._call(body))
        self._counters.commits += 1
        return result

    async def _fetch(self, query: str, *params: Any) -> list[Any]:
        async def body(conn: Conn) -> list[Any]:
            return list(await conn.fetch(query, *params))

        return await self._call(body)

    async def _count_and_notify(self, query: str, *params: Any) -> int:
        """A write whose statement answers ``(rows changed, notifications sent)``."""

        async def body(conn: Conn) -> int:
            row = await conn.fetchrow(query, *params)
            return int(row[0])

        return await self._write(body)

    # -- submit: group commit -------------------------------------------------------

    async def _submit(
        self, jobs: Sequence[NewJob], args: list[list[Any]], now: float
    ) -> list[JobRecord]:
        return await self._committer.put((jobs, args, now), len(jobs))

    async def _write_submits(self, batch: list[Submit]) -> list[list[JobRecord] | Overloaded]:
        """One group commit, one transaction: new records for new jobs; a key already
        stored, or seen earlier in the batch, gets its existing record instead; a submit
        that does not fit its lanes' ``max_queued`` gets its ``Overloaded``.

        The transaction first locks the batch's lanes' counter rows (in lane order), so
        the counts it admits by cannot change before it commits.
        """
        lanes = sorted({job.lane for jobs, _, _ in batch for job in jobs})
        keys = sorted({job.key for jobs, _, _ in batch for job in jobs if job.key is not None})

        async def body(conn: Conn) -> list[list[JobRecord] | Overloaded]:
            for attempt in range(_KEY_RETRIES):  # a deadlock undid it all: run it again
                try:
                    async with conn.transaction():
                        return await self._submit_in(conn, batch, lanes, keys)
                except asyncpg.PostgresError as exc:
                    if exc.sqlstate not in sql.RETRY_CODES or attempt == _KEY_RETRIES - 1:
                        raise
            raise AssertionError("unreachable")

        return await self._write(body)

    async def _submit_in(
        self, conn: Conn, batch: list[Submit], lanes: list[str], keys: list[str]
    ) -> list[list[JobRecord] | Overloaded]:
        """The body of :meth:`_write_submits`, inside its transaction."""
        counts = {str(r[0]): int(r[1]) for r in await conn.fetch(sql.LOCK_LANES, lanes)}
        flows = bounded_tenants([jobs for jobs, _, _ in batch])
        tenant_counts: dict[tuple[str, str], int] = {}
        if flows:
            found = await conn.fetch(
                sql.LOCK_TENANTS, [lane for lane, _ in flows], [t for _, t in flows]
            )
            tenant_counts = {(str(r[0]), str(r[1])): int(r[2]) for r in found}
        by_key: dict[str, JobRecord] = {}
        if keys:
            for row in await conn.fetch(sql.SELECT_BY_KEYS, keys):
                stored = sql.decode(row)[1]
                if stored.key is not None:
                    by_key[stored.key] = stored
        verdicts = admit([jobs for jobs, _, _ in batch], counts, list(by_key), tenant_counts)
        plan: list[list[JobRecord | str] | Overloaded] = []  # per job: a record, or its key
        pending: list[tuple[JobRecord, str]] = []  # (record, args_json) to insert
        for (jobs, args, when), refused in zip(batch, verdicts, strict=True):
            if refused is not None:
                plan.append(refused)
                continue
            now = float(when)
            out: list[JobRecord | str] = []
            for job, job_args in zip(jobs, args, strict=True):
                if job.key is not None and job.key in by_key:
                    out.append(job.key)
                    continue
                record = new_record(job, job_args, now)
                pending.append((record, job.args_json))
                if job.key is None:
                    out.append(record)
                else:
                    by_key[job.key] = record
                    out.append(job.key)
            plan.append(out)
        todo = pending
        for _ in range(_KEY_RETRIES):
            if not todo:
                break
            inserted = {row[0] for row in await conn.fetch(sql.SUBMIT, *self._columns(todo))}
            # a key stored meanwhile (by a submit to another lane) is returned as stored
            conflicts = {r.key: (r, a) for r, a in todo if r.id not in inserted}
            if conflicts:
                for row in await conn.fetch(sql.SELECT_BY_KEYS, list(conflicts)):
                    stored = sql.decode(row)[1]
                    if stored.key is not None:
                        by_key[stored.key] = stored
                        conflicts.pop(stored.key, None)
            todo = list(conflicts.values())  # purged between our insert and our read
        if todo:
            raise BacklogError(f"backlog {self._where}: keys kept conflicting, then vanishing")
        return [
            out
            if isinstance(out, Overloaded)
            else [by_key[k] if isinstance(k, str) else k for k in out]
            for out in plan
        ]

    def _columns(self, todo: list[tuple[JobRecord, str]]) -> list[Any]:
        """The SUBMIT statement's parameters: one array per column, then the channel."""
        return [
            [r.id for r, _ in todo],
            [r.task for r, _ in todo],
            [r.lane for r, _ in todo],
            [a for _, a in todo],
            [r.priority for r, _ in todo],
            [r.max_attempts for r, _ in todo],
            [r.run_at for r, _ in todo],
            [r.key for r, _ in todo],
            [r.deadline_at for r, _ in todo],
            [r.created_at for r, _ in todo],
            [r.cost for r, _ in todo],
            self._channel,
            [r.rank for r, _ in todo],
            [r.tenant for r, _ in todo],
            [r.trace for r, _ in todo],
        ]

    # -- claim and outcomes -----------------------------------------------------------

    async def _claim(self, claim: ClaimArgs) -> list[JobRecord]:
        lane, limit, owner, now = claim.lane, claim.limit, claim.owner, claim.now
        self._notified.discard(lane)  # this claim sees whatever was announced so far
        await self._release_unheard(lane, owner, now)
        await self._owner_checks(lane, owner, now)
        lease_until = claim.lease_until

        async def body(conn: Conn) -> list[tuple[int, JobRecord]]:
            if await conn.fetchval(sql.FAIR_ANY, lane):
                async with conn.transaction():
                    return await self._claim_fair(conn, claim)
            found: list[tuple[int, JobRecord]] = []
            while len(found) < limit:
                rows = await conn.fetch(
                    sql.CLAIM, lane, limit - len(found), owner, lease_until, now,
                    claim.max_running, sql.LOST_FORMAT, CANCELLED_ERROR,
                )  # fmt: skip
                good = await _decode_leased(conn, rows, now)
                found += good
                if len(good) == len(rows):
                    break
                # corrupt rows went DEAD alone; the claim is topped up with the next jobs
            return found

        try:
            found = await self._write(body)
        except BacklogUnavailable:
            # it may have committed: the next claim of (lane, owner) gives those jobs back
            self._unheard.setdefault((lane, owner), []).append((now, lease_until))
            raise
        found.sort(key=lambda sr: (*sr[1].order, sr[0]))
        return [record for _, record in found]

    async def _claim_fair(self, conn: Conn, claim: ClaimArgs) -> list[tuple[int, JobRecord]]:
        """A claim on a lane whose queued jobs name tenants, in the caller's transaction
        under the lane's advisory lock: expired leases first, then the tenants' fair turns
        (see :mod:`scheduler.backlog._fair`)."""
        lane, owner, lease_until, now = claim.lane, claim.owner, claim.lease_until, claim.now
        max_running, policy = claim.max_running, claim.tenants or EQUAL_SHARES
        await conn.execute(sql.FAIR_LOCK, lane)
        # the claim function with no room: it ends expired leases that are cancelled or
        # out of attempts, as every claim does first
        await conn.fetch(
            sql.CLAIM, lane, 0, owner, lease_until, now, None, sql.LOST_FORMAT, CANCELLED_ERROR
        )
        n = claim.limit
        if max_running is not None:
            n = min(n, max_running - int(await conn.fetchval(sql.FAIR_LIVE, lane, now, owner)))
        lease = (lane, owner, lease_until, now)
        found = await self._leased(conn, sql.FAIR_LOST, lease, n, now) if n > 0 else []
        n -= len(found)
        if n <= 0:
            return found
        clock, anonymous, none_time, _ = await conn.fetchrow(sql.FAIR_CLOCK, lane)
        clock = float(clock)
        running = None
        if policy.max_in_flight is not None:
            running = {str(t): int(k) for t, k in await conn.fetch(sql.FAIR_RUNNING, lane, now)}
        rows, bound = await _fair_page(conn, lane, (clock, NO_TENANT), n)
        if none_time is not None:
            rows.append((NO_TENANT, 0, float(none_time)))
        plan = plan_claim(rows, clock, bool(anonymous), n, policy, running, bound)
        for _ in range(FAIR_ROUNDS):
            shares = plan.take(n)
            while plan.short and plan.bound is not None:
                rows, bound = await _fair_page(conn, lane, plan.bound, n)
                plan.extend(page_flows(rows, policy, running), bound)
                for tenant, k in plan.take(n - sum(shares.values())).items():
                    shares[tenant] = shares.get(tenant, 0) + k
            if not shares:
                break
            for tenant, k in shares.items():
                if tenant == NO_TENANT:
                    got = await self._leased(conn, sql.FAIR_NONE, lease, k, now)
                else:
                    got = await self._leased(conn, sql.FAIR_TENANT, (*lease, k, tenant), None, now)
                plan.got(tenant, k, len(got))
                found += got
                n -= len(got)
            if n <= 0:
                break
        served = plan.times()
        await conn.execute(sql.FAIR_STORE, lane, list(served), list(served.values()), plan.clock)
        return found

    async def _leased(
        self, conn: Conn, query: str, params: tuple[Any, ...], n: int | None, now: float
    ) -> list[tuple[int, JobRecord]]:
        """Run a FAIR_* lease statement (``n`` appended to ``params`` unless ``None``);
        a corrupt row among the leased goes DEAD and is left out."""
        rows = await conn.fetch(query, *params, *(() if n is None else (n,)))
        return await _decode_leased(conn, rows, now)

    async def _release_unheard(self, lane: str, owner: str, now: float) -> None:
        """Give back what earlier claims of (lane, owner) took if their answer was lost."""
        unheard = self._unheard.get((lane, owner))
        while unheard:
            when, until = unheard[0]
            released = await self._count_and_notify(
                sql.RELEASE_UNHEARD, lane, owner, when, until, self._channel, now
            )
            self._counters.unheard_released += released
            unheard.pop(0)
        self._unheard.pop((lane, owner), None)

    # -- lease owners: dead-owner detection --------------------------------------------

    async def _owner_checks(self, lane: str, owner: str, now: float) -> None:
        """Before a claim: hold ``owner``'s lock (at its first claim here, or again after
        the owner connection was lost), then, at most once per :data:`DEAD_OWNER_CHECK`
        per lane, end the leases of owners whose session is gone."""
        self._owner_now = now
        if (owner not in self._held or self._owner_lost()) and await self._hold_owners(owner):
            await self._reclaim_dead(None, owner, now)  # this schema's other owners
        last = self._dead_checked.get(lane)
        if last is None or not 0 <= now - last < DEAD_OWNER_CHECK:
            await self._reclaim_dead(lane, owner, now)
            self._dead_checked[lane] = now

    def _owner_lost(self) -> bool:
        conn = self._owner_conn
        return conn is None or conn.is_closed()

    async def _hold_owners(self, owner: str | None = None) -> bool:
        """Hold the session advisory lock of ``owner`` and of every owner held before on
        the owner connection (opened again if it was lost: its locks died with it),
        registering each in ``floodgate_owners``. Whether ``owner`` is newly held."""
        async with self._owner_lock:
            try:
                conn = self._owner_conn
                if conn is None or conn.is_closed():
                    self._held.clear()
                    self._owner_conn = None
                    if conn is not None:
                        conn.terminate()
                    conn = await asyncpg.connect(
                        self.dsn, server_settings=self._settings, timeout=self.connect_timeout
                    )
                    conn.add_termination_listener(self._on_owner_lost)
                    self._owner_conn = conn
                if owner is not None:
                    self._owners.add(owner)
                newly = False
                for name in sorted(self._owners - self._held):
                    # not granted: a claimer is checking it right now; try again later
                    if await conn.fetchval(sql.OWNER_LOCK, name):
                        await conn.execute(sql.REGISTER_OWNER, name, self._owner_now)
                        self._held.add(name)
                        newly = newly or name == owner
            except Exception as exc:
                raise self._error(exc) from exc
        return newly

    def _on_owner_lost(self, conn: Conn) -> None:
        """The owner connection closed: take the locks again at once, in the background
        (until then other claimers take this process's owners for dead)."""
        if self._closing or conn is not self._owner_conn or self._relocking is not None:
            return
        self._relocking = asyncio.create_task(self._relock(), name="floodgate-pg-owner")

    async def _relock(self) -> None:
        """Reconnect and lock again with backoff (a claim also does, if this gives up)."""
        delay = _LISTEN_BACKOFF[0]
        try:
            for _ in range(_RELOCK_TRIES):
                if self._closing:
                    return
                with contextlib.suppress(BacklogError):
                    await self._hold_owners()
                if not self._owner_lost() and self._held == self._owners:
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, _LISTEN_BACKOFF[1])
        finally:
            self._relocking = None

    async def _reclaim_dead(self, lane: str | None, owner: str, now: float) -> None:
        """``floodgate_reclaim_dead``: end dead owners' leases now; log each owner found."""

        async def body(conn: Conn) -> list[Any]:
            return list(await conn.fetch(sql.RECLAIM_DEAD, lane, owner, now))

        for dead, ended in await self._call(body):  # one statement: all or nothing
            _log.warning("backlog.dead_owner_reclaimed", owner=dead, jobs=int(ended), lane=lane)

    async def _forget_owners(self) -> None:
        """At close: unregister our owners, then drop the connection holding their locks."""
        relocking, self._relocking = self._relocking, None
        if relocking is not None:
            relocking.cancel()
            await asyncio.gather(relocking, return_exceptions=True)
        owners = sorted(self._owners)
        self._owners, self._held = set(), set()
        conn, self._owner_conn = self._owner_conn, None
        if owners:

            async def body(c: Conn) -> None:
                await c.execute(sql.DELETE_OWNERS, owners)

            with contextlib.suppress(BacklogError):
                await self._write(body)
        if conn is not None:
            try:
                async with asyncio.timeout(self.connect_timeout):
                    await conn.close()
            except Exception:
                conn.terminate()

    async def _heartbeat(self, job_ids: Sequence[str], owner: str, lease_until: float) -> int:
        async def body(conn: Conn) -> int:
            status = await conn.execute(sql.HEARTBEAT, lease_until, list(job_ids), owner)
            return sql.status_count(status)

        return await self._write(body)

    async def _complete(self, outcomes: Sequence[Outcome], now: float) -> int:
        done = [o.kind == "done" for o in outcomes]
        return await self._count_and_notify(
            sql.COMPLETE,
            [o.job_id for o in outcomes],
            [o.owner for o in outcomes],
            [_KIND_STATE[o.kind] for o in outcomes],
            [o.result_json if d else None for o, d in zip(outcomes, done, strict=True)],
            [None if d else o.error for o, d in zip(outcomes, done, strict=True)],
            [None if d else o.traceback for o, d in zip(outcomes, done, strict=True)],
            [o.run_at if o.kind == "retry" else None for o in outcomes],
            [o.attempt for o in outcomes],
            now,
            self._channel,
        )

    async def _release(self, job_ids: Sequence[str], owner: str, now: float) -> int:
        return await self._count_and_notify(
            sql.RELEASE, now, list(job_ids), owner, self._channel, CANCELLED_ERROR
        )

    # -- inspection and maintenance -----------------------------------------------------

    async def _get(self, job_id: str) -> JobRecord | None:
        rows = await self._fetch(sql.GET, job_id)
        return sql.decode(rows[0])[1] if rows else None

    async def _list_jobs(
        self, state: JobState | None, lane: str | None, limit: int, offset: int
    ) -> list[JobRecord]:
        params: list[Any] = [] if state is None else [state.value]
        if lane is not None:
            params.append(lane)
        query = sql.list_query(state is not None, lane is not None)
        rows = await self._fetch(query, *params, limit, offset)
        return [sql.decode(row)[1] for row in rows]

    async def _requeue(self, job_id: str | None, lane: str | None, now: float) -> int:
        if job_id is not None:
            return await self._count_and_notify(sql.REQUEUE_ONE, now, job_id, lane, self._channel)
        return await self._count_and_notify(sql.REQUEUE_DEAD, now, lane, self._channel)

    async def _cancel(self, job_id: str, now: float) -> JobState | None:
        """One transaction that first locks the job's row (see ``sql.CANCEL_LOCK``); a
        running job's lease holder hears of it by ``NOTIFY`` at once."""

        async def body(conn: Conn) -> JobState | None:
            async with conn.transaction():
                state = await conn.fetchval(sql.CANCEL_LOCK, job_id)
                if state is None:
                    return None
                await conn.fetchval(sql.CANCEL, job_id, now, CANCELLED_ERROR, self._cancel_channel)
                return _STATES.get(str(state), JobState.DEAD)  # unreadable: read as DEAD

        return await self._write(body)

    async def _cancel_task(self, task: str | None, tenant: str | None, now: float) -> int:
        return await self._count_and_notify(
            sql.CANCEL_TASK, task, now, CANCELLED_ERROR, self._cancel_channel, tenant
        )

    async def _cancel_requested(self, job_ids: Sequence[str]) -> list[str]:
        return [str(row[0]) for row in await self._fetch(sql.CANCEL_REQUESTED, list(job_ids))]

    def on_cancel(self, callback: Callable[[str], object]) -> Callable[[], None]:
        """``callback(job_id)`` for each cancel request of a running job, as its
        ``NOTIFY`` arrives (from any process); returns the call that stops it."""
        self._cancel_callbacks.append(callback)

        def stop() -> None:
            with contextlib.suppress(ValueError):
                self._cancel_callbacks.remove(callback)

        return stop

    def _on_cancel_notify(self, _conn: Conn, _pid: int, _channel: str, job_id: str) -> None:
        for callback in list(self._cancel_callbacks):
            try:
                callback(job_id)
            except Exception as exc:  # one subscriber's bug must not silence the others
                _log.warning("backlog.cancel_callback_failed", job_id=job_id, error=str(exc))

    async def _counts(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for lane, state, n in await self._fetch(sql.COUNTS):
            out.setdefault(str(lane), {})[str(state)] = int(n)
        return out

    async def _purge(self, finished_before: float) -> int:
        """Delete in chunks, one short statement each, so writers are not held up."""

        async def body(conn: Conn) -> int:
            return sql.status_count(await conn.execute(sql.PURGE, finished_before, _PURGE_CHUNK))

        total = 0
        while True:
            n = await self._write(body)
            total += n
            if n < _PURGE_CHUNK:
                return total

    async def _queued_count(self, lane: str) -> int:
        """The lane's QUEUED count, kept by triggers: one row read, however deep the lane."""
        found = await self._fetch(sql.QUEUED_COUNT, lane)
        return max(0, int(found[0][0])) if found else 0

    async def _queued_by_tenant(self, lane: str, limit: int) -> list[tuple[str, int]]:
        return [(str(t), int(n)) for t, n in await self._fetch(sql.TOP_TENANTS, lane, limit)]

    # -- LISTEN/NOTIFY ------------------------------------------------------------------

    async def wait_for_work(self, lane: str, timeout: float) -> None:
        """Return once a NOTIFY names ``lane`` (in any process) or after ``timeout`` s.

        A NOTIFY that arrived since this process last claimed from ``lane``
        returns at once. Without a listening connection (lost, reconnecting,
        or ``listen=False``) it just waits ``timeout``: callers poll anyway.
        """
        self._check_open()
        if lane in self._notified:
            self._notified.discard(lane)
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiters = self._waiters.setdefault(lane, set())
        waiters.add(waiter)
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, timeout)):
                    await waiter
        finally:
            waiters.discard(waiter)
            if not waiters:
                self._waiters.pop(lane, None)

    def _on_notify(self, _conn: Conn, _pid: int, _channel: str, lane: str) -> None:
        self._counters.notified += 1
        waiters = self._waiters.get(lane)
        if not waiters:
            self._notified.add(lane)
            return
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _wake_all(self) -> None:
        """Wake every waiter (we may have missed notifications, or we are closing)."""
        for waiters in self._waiters.values():
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    async def _listen_loop(self, ready: asyncio.Future[None]) -> None:
        """Keep one connection LISTENing; reconnect with backoff when it is lost.

        ``ready`` resolves after the first attempt, whether it connected or not.
        """
        delay = _LISTEN_BACKOFF[0]
        connected_before = False
        while True:
            conn = None
            try:
                conn = await asyncpg.connect(
                    self.dsn, server_settings=self._settings, timeout=self.connect_timeout
                )
                lost = asyncio.Event()
                conn.add_termination_listener(lambda _c, lost=lost: lost.set())
                await conn.add_listener(self._channel, self._on_notify)
                await conn.add_listener(self._cancel_channel, self._on_cancel_notify)
                self._listening = True
                if connected_before:
                    self._counters.reconnects += 1
                connected_before, delay = True, _LISTEN_BACKOFF[0]
                self._wake_all()  # notifications may have been missed while not listening
                if not ready.done():
                    ready.set_result(None)
                while not lost.is_set():
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(_LISTEN_PING):
                            await lost.wait()
                    if not lost.is_set():  # a silent network can hide a dead connection
                        await conn.fetchval("SELECT 1", timeout=self.connect_timeout)
            except asyncio.CancelledError:
                raise
            except Exception:
                pass  # unreachable for now: retry below, the runner polls meanwhile
            finally:
                self._listening = False
                if not ready.done():
                    ready.set_result(None)
                if conn is not None:
                    conn.terminate()
            await asyncio.sleep(delay)
            delay = min(delay * 2, _LISTEN_BACKOFF[1])

    def __repr__(self) -> str:
        return f"<PostgresBacklog {self._where} {'open' if self._pool is not None else 'closed'}>"


async def _fair_page(
    conn: Conn, lane: str, after: tuple[float, str], n: int
) -> tuple[list[tuple[str, int, float]], tuple[float, str] | None]:
    """The lane's next ``n`` queued tenants after ``after`` in fair order, and the fair
    plan's bound (the last of them; ``None`` when no tenant is left unread)."""
    found = await conn.fetch(sql.FAIR_PAGE, lane, *after, n)
    rows = [(str(t), int(k), float(v)) for t, k, v in found]
    bound = (rows[-1][2], rows[-1][0]) if len(rows) == n else None
    return rows, bound


async def _decode_leased(conn: Conn, rows: list[Any], now: float) -> list[tuple[int, JobRecord]]:
    """The records of rows a claim just leased; a corrupt one goes DEAD and is left out."""
    found: list[tuple[int, JobRecord]] = []
    bad: list[tuple[int, str]] = []
    for row in rows:
        seq, record, problem = sql.decode(row)
        if problem is None:
            found.append((seq, record))
        else:
            bad.append((seq, record.error or corrupt(problem)))
    if bad:
        await conn.execute(sql.KILL_CORRUPT, [s for s, _ in bad], [e for _, e in bad], now)
    return found


def _redact(dsn: str) -> str:
    """The DSN without its password (and without query parameters)."""
    parts = urlsplit(dsn)
    netloc = parts.netloc
    if "@" in netloc:
        user, host = netloc.rsplit("@", 1)
        netloc = f"{user.split(':', 1)[0]}@{host}"
    return f"{parts.scheme}://{netloc}{parts.path}"
