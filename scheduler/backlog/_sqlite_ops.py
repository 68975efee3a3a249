"""The multi-statement transactions of the SQLite backlog: migrate, insert a batch
(with its lanes' ``max_queued``), claim, register lease owners and reclaim dead ones.

Each runs inside a ``BEGIN IMMEDIATE`` transaction opened by the caller, so
the write lock is held throughout: a key looked up here cannot be inserted
by another process before our insert, and two claimers never take one job.
They are plain functions on a ``sqlite3.Connection``: the backlog runs a whole
transaction on its connection's thread in one hop (statements are prepared
once, by the connection's statement cache).
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import replace
from operator import itemgetter
from typing import Any, cast

from ..errors import BacklogError, Overloaded
from ..jobs import JobState
from . import _owners
from . import _sqlite_schema as sql
from ._fair import EQUAL_SHARES, FAIR_ROUNDS, NO_TENANT, FairPolicy, page_flows, plan_claim
from ._run_stream import RunAborted, RunStream
from ._run_stream import pairs_json as _encode
from .base import (
    CANCELLED_ERROR,
    LEASE_LOST_FMT,
    JobRecord,
    NewJob,
    admit,
    bounded_lanes,
    bounded_tenants,
    claim_room,
    new_job_ids,
    new_record,
)

__all__ = [
    "Conn",
    "JobRun",
    "Submit",
    "claim",
    "fetch",
    "insert",
    "migrate",
    "reclaim_dead",
    "register_owner",
    "rows",
]

_Q, _R, _DEAD = JobState.QUEUED.value, JobState.RUNNING.value, JobState.DEAD.value
_KEY_CHUNK = 500  # keys per IN (...) lookup, well under SQLite's bound-parameter limit


Conn = sqlite3.Connection


def rows(result: Iterable[Any]) -> list[Sequence[Any]]:
    """Fetched rows, typed as the tuples they are."""
    return cast(list[Sequence[Any]], list(result))


def fetch(db: Conn, query: str, params: Sequence[Any] = ()) -> list[Sequence[Any]]:
    return cast(list[Sequence[Any]], db.execute(query, params).fetchall())


def migrate(db: Conn, path: str) -> None:
    """Apply the migrations this file has not had yet; refuse a newer schema."""
    version = int(fetch(db, "PRAGMA user_version")[0][0])
    if version > sql.SCHEMA_VERSION:
        raise BacklogError(
            f"backlog {path!r} has schema version {version}, newer than this "
            f"Floodgate knows ({sql.SCHEMA_VERSION}); upgrade Floodgate to open it"
        )
    for statements in sql.MIGRATIONS[version:]:
        for statement in statements:
            db.execute(statement)
    if version < sql.SCHEMA_VERSION:
        db.execute(f"PRAGMA user_version={int(sql.SCHEMA_VERSION)}")


class JobRun:
    """The jobs of a run (``SubmitsRuns.submit_run``) as one :data:`Submit`'s jobs:
    ``template`` but for each one's ``args_json``. :func:`insert` stores them without
    a ``NewJob`` or a ``JobRecord`` each."""

    __slots__ = ("template", "texts")

    def __init__(self, template: NewJob, texts: list[str]) -> None:
        self.template = template
        self.texts = texts

    def __len__(self) -> int:
        return len(self.texts)

    def shapes(self) -> list[NewJob]:
        """The template once per job: what the lane and tenant bounds look at."""
        return [self.template] * len(self.texts)


#: One ``submit()`` call: its jobs, their decoded args, its ``now``.
Submit = tuple[Sequence[NewJob] | JobRun | RunStream, list[list[Any]], float]


def insert(
    db: Conn, batch: list[Submit]
) -> list[list[JobRecord] | list[str] | Overloaded | RunAborted]:
    """Insert a batch of submits; one record list per submit, in order (a
    :class:`JobRun`'s: the ids of its jobs; a :class:`RunStream`'s: an empty list,
    its ids were made as it was handed over, or the ``RunAborted`` that rolled it back).

    A key already stored, or seen earlier in the batch, is not inserted again:
    its existing record is returned in its place. A submit that does not fit
    its lanes' ``max_queued`` gets its ``Overloaded`` instead and stores
    nothing (the counts are read under the write lock the insert is made under).
    """
    calls = [_shapes(jobs) for jobs, _, _ in batch]
    keys = sorted({job.key for jobs in calls for job in jobs if job.key is not None})
    known: dict[str | None, JobRecord] = {}
    for i in range(0, len(keys), _KEY_CHUNK):
        chunk = keys[i : i + _KEY_CHUNK]
        for row in fetch(db, sql.select_by_keys(len(chunk)), chunk):
            record = sql.decode_row(row)[1]
            known[record.key] = record
    lanes = bounded_lanes(calls)
    queued: dict[str, int] = {}
    if lanes:
        found = fetch(db, sql.queued_counts(len(lanes)), lanes)
        queued = {str(lane): int(n) for lane, n in found}
    pairs = bounded_tenants(calls)
    tenant_queued: dict[tuple[str, str], int] = {}
    for i in range(0, len(pairs), _KEY_CHUNK // 2):
        part = pairs[i : i + _KEY_CHUNK // 2]
        params = [v for flow in part for v in flow]
        for lane, tenant, n in fetch(db, sql.tenant_counts(len(part)), params):
            tenant_queued[(str(lane), str(tenant))] = int(n)
    verdicts = admit(calls, queued, [k for k in known if k is not None], tenant_queued)
    inserts: list[tuple[Any, ...]] = []  # rows not inserted yet, in order
    added: Counter[str] = Counter()  # new QUEUED jobs per lane
    per_tenant: Counter[tuple[str, str]] = Counter()
    results: list[list[JobRecord] | list[str] | Overloaded | RunAborted] = []
    made = sum(len(jobs) for jobs, _, _ in batch if not isinstance(jobs, RunStream))
    ids = iter(new_job_ids(made))
    for (jobs, args, when), refused in zip(batch, verdicts, strict=True):
        if refused is not None:
            results.append(refused)
            continue
        now = float(when)
        if isinstance(jobs, RunStream):
            _insert_rows(db, inserts)  # the rows of the calls before it go first
            inserts = []
            streamed = _insert_stream(db, jobs, now)
            results.append(streamed)
            if isinstance(streamed, RunAborted):
                continue
            template = jobs.template
            added[template.lane] += len(jobs)
            if template.tenant is not None:
                per_tenant[(template.lane, template.tenant)] += len(jobs)
            continue
        if isinstance(jobs, JobRun):
            template = jobs.template
            run_ids = [next(ids) for _ in jobs.texts]
            if len(run_ids) >= _RUN_MIN and all(t.isascii() for t in jobs.texts):
                _insert_rows(db, inserts)  # the rows of the calls before it go first
                inserts = []
                _insert_run(db, jobs, run_ids, now)
            else:  # a few jobs (a single submit): rows among the others', no record
                inserts += _run_rows(template, jobs.texts, run_ids, now)
            results.append(run_ids)
            added[template.lane] += len(jobs)
            if template.tenant is not None:
                per_tenant[(template.lane, template.tenant)] += len(jobs)
            continue
        records: list[JobRecord] = []
        for job, job_args in zip(jobs, args, strict=True):
            if job.key is not None and job.key in known:
                records.append(known[job.key])
                continue
            record = new_record(job, job_args, now, next(ids))
            if job.key is not None:
                known[job.key] = record
            inserts.append(
                (record.id, job.task, job.lane, job.args_json, record.priority, _Q,
                 job.max_attempts, record.run_at, now, now, job.key, job.deadline_at,
                 record.cost, record.rank, job.tenant, job.trace)
            )  # fmt: skip
            added[job.lane] += 1
            if job.tenant is not None:
                per_tenant[(job.lane, job.tenant)] += 1
            records.append(record)
        results.append(records)
    _insert_rows(db, inserts)
    if added:
        create, add = sql.ADD_QUEUED
        db.executemany(create, [(lane,) for lane in added])
        db.executemany(add, [(n, lane) for lane, n in added.items()])
    if per_tenant:
        create, add = sql.ADD_TENANT_QUEUED
        db.executemany(create, list(per_tenant))
        db.executemany(add, [(n, lane, t) for (lane, t), n in per_tenant.items()])
    return results


def _insert_run(db: Conn, run: JobRun, ids: list[str], now: float) -> list[str]:
    """A run's rows, ASCII ``args`` text only (see :func:`_insert_rows`), in one
    ``INSERT_RUN``; their ids."""
    pairs = _encode([[i, a] for i, a in zip(ids, run.texts, strict=True)])
    db.execute(sql.INSERT_RUN, (*_run_shape(run.template, now), pairs))
    return ids


def _shapes(jobs: Sequence[NewJob] | JobRun | RunStream) -> Sequence[NewJob]:
    """The jobs of one submit as the bounds look at them (a run's: its template once
    per job). Runs and streams are plain classes, not ``Sequence``s, so telling them
    apart is no ABC check."""
    return jobs.shapes() if isinstance(jobs, JobRun | RunStream) else jobs


def _run_rows(t: NewJob, texts: list[str], ids: list[str], now: float) -> list[tuple[Any, ...]]:
    """``sql.INSERT``'s parameters for the jobs of a run, one tuple each."""
    priority = float(t.priority)
    run_at = float(t.run_at)
    cost = None if t.cost is None else float(t.cost)
    rank = priority if t.rank is None else float(t.rank)
    return [
        (i, t.task, t.lane, a, priority, _Q, t.max_attempts, run_at, now, now, None,
         t.deadline_at, cost, rank, t.tenant, t.trace)
        for i, a in zip(ids, texts, strict=True)
    ]  # fmt: skip


def _run_shape(t: NewJob, now: float) -> tuple[Any, ...]:
    """The columns a run's rows share, in ``sql.INSERT_RUN``'s parameter order."""
    return (
        t.task, t.lane, float(t.priority), _Q, t.max_attempts, float(t.run_at), now, now,
        t.deadline_at, None if t.cost is None else float(t.cost),
        float(t.priority) if t.rank is None else float(t.rank), t.tenant, t.trace,
    )  # fmt: skip


_RUN_SAVEPOINT = "floodgate_run"


def _insert_stream(db: Conn, run: RunStream, now: float) -> list[str] | RunAborted:
    """A streamed run's chunks as they come (see ``_run_stream``), under a savepoint:
    released once all came, rolled back (and the ``RunAborted`` returned) if the
    loop gave the run up. An SQLite error is raised (the whole transaction fails)."""
    shape = _run_shape(run.template, now)
    db.execute(f"SAVEPOINT {_RUN_SAVEPOINT}")
    try:
        for ids, texts, param in run.chunks():
            if param is not None:
                db.execute(sql.INSERT_RUN, (*shape, param))
                continue
            _insert_alike(db, _run_rows(run.template, texts, ids, now))
    except RunAborted as exc:
        db.execute(f"ROLLBACK TO {_RUN_SAVEPOINT}")
        db.execute(f"RELEASE {_RUN_SAVEPOINT}")
        return exc
    db.execute(f"RELEASE {_RUN_SAVEPOINT}")
    return []


#: rows in a run of alike rows worth one INSERT_RUN rather than executemany
_RUN_MIN = 4


def _shared(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """The columns of an ``sql.INSERT`` row that a run's rows share (all but ``id``,
    ``args`` and ``key``), in ``sql.INSERT_RUN``'s parameter order."""
    return row[1:3] + row[4:10] + row[11:]


def _insert_rows(db: Conn, rows: list[tuple[Any, ...]]) -> None:
    """Insert ``rows`` (``sql.INSERT``'s parameters) in order: each run of at least
    :data:`_RUN_MIN` keyless rows alike but for ``id`` and ``args`` as one
    ``INSERT_RUN``, the others by :func:`_insert_alike`. Only ASCII ``args`` text (what
    the scheduler's encoder writes) joins a run; other text is bound as it is, so it
    is stored, or refused, exactly as before runs existed."""
    single: list[tuple[Any, ...]] = []
    start = 0
    while start < len(rows):
        first = rows[start]
        end = start + 1
        if first[10] is None and first[3].isascii():  # no key, plain text
            shape = _shared(first)
            while end < len(rows) and rows[end][10] is None:
                row = rows[end]
                if not row[3].isascii() or _shared(row) != shape:
                    break
                end += 1
        if end - start < _RUN_MIN:
            single.extend(rows[start:end])
        else:
            if single:
                _insert_alike(db, single)
                single = []
            pairs = _encode([[row[0], row[3]] for row in rows[start:end]])
            db.execute(sql.INSERT_RUN, (*shape, pairs))
        start = end
    if single:
        _insert_alike(db, single)


#: an ``sql.INSERT`` row's columns that ``sql.insert_rows`` binds once for its rows
_common = itemgetter(1, 2, 4, 5, 6, 12, 14, 15)
#: and those it binds for each row
_own = itemgetter(0, 3, 7, 8, 9, 10, 11, 13)


def _insert_alike(db: Conn, rows: list[tuple[Any, ...]]) -> None:
    """Insert ``rows`` (``sql.INSERT``'s parameters) in order: each stretch of rows
    alike in the columns submits share (task, lane, priority, ...) with one
    ``sql.insert_rows`` statement per 2**k rows, at most ``INSERT_ROWS_MAX`` (so the
    connection's statement cache holds a few texts, not one per batch size)."""
    start, total, most = 0, len(rows), sql.INSERT_ROWS_MAX
    while start < total:
        common = _common(rows[start])
        end = start + 1
        while end < total and end - start < most and _common(rows[end]) == common:
            end += 1
        n = sql.statement_rows(end - start, most)
        params = list(common)
        for row in rows[start : start + n]:
            params += _own(row)
        db.execute(sql.insert_rows(n), params)
        start += n


def claim(
    db: Conn,
    lane: str,
    limit: int,
    owner: str,
    lease_until: float,
    now: float,
    *,
    returning: bool,
    max_running: int | None = None,
    tenants: FairPolicy | None = None,
) -> list[JobRecord]:
    """Lease up to ``limit`` jobs of ``lane``; see :meth:`Backlog.claim`.

    Expired leases with no attempts left go DEAD first. A corrupt row among
    the claimed goes DEAD alone and the claim is topped up with the next jobs.
    With ``max_running``, other owners' live leases of the lane are counted
    first (the caller's ``BEGIN IMMEDIATE`` holds the write lock, so the count
    stays true).
    """
    # one look at the lane's leases; the two updates only when one has expired (they
    # touch expired leases only, so the live count holds after them)
    live, expired = fetch(db, sql.LEASES, (now, owner, now, lane))[0]
    if expired:
        db.execute(sql.CANCEL_EXPIRED, (CANCELLED_ERROR, now, lane, now))
        db.execute(sql.KILL_LOST, (_DEAD, LEASE_LOST_FMT, now, lane, now))
    if max_running is not None:
        limit = claim_room(limit, max_running, int(live))
    if limit <= 0:
        return []
    if fetch(db, sql.LANE_FAIR, (lane,))[0][0]:
        found = _claim_fair(db, lane, limit, owner, lease_until, now, returning, tenants)
    else:
        found = _claim_in_order(db, lane, limit, owner, lease_until, now, returning)
    found.sort(key=lambda sr: (*sr[1].order, sr[0]))
    return [record for _, record in found]


def _claim_in_order(
    db: Conn, lane: str, limit: int, owner: str, lease_until: float, now: float, returning: bool
) -> list[tuple[int, JobRecord]]:
    """A claim on a lane without tenants queued: the due jobs (and expired leases) in
    claim order, topped up past corrupt rows."""
    found: list[tuple[int, JobRecord]] = []
    while len(found) < limit:
        n = limit - len(found)
        where = (lane, now, n, lane, now, n, n)
        lease = (_R, owner, lease_until, now)
        if returning:
            got = fetch(db, sql.CLAIM_RETURNING, lease + where)
        else:
            got = fetch(db, sql.CLAIM_SELECT, where)
            db.executemany(sql.CLAIM_UPDATE, [(*lease, row[0]) for row in got])
        leased = _decode_leased(db, got, owner, lease_until, now, returning)
        found += leased
        if len(leased) == len(got):  # no corrupt row: nothing to top up
            break
    return found


def _claim_fair(
    db: Conn,
    lane: str,
    limit: int,
    owner: str,
    lease_until: float,
    now: float,
    returning: bool,
    tenants: FairPolicy | None,
) -> list[tuple[int, JobRecord]]:
    """A claim on a lane whose queued jobs name tenants: expired leases first, then the
    tenants' fair turns (see :mod:`scheduler.backlog._fair`), under the write lock.

    Reads the lane's tenants a page of ``n`` at a time in fair order (most claims
    need one); picks each round's jobs with one statement and leases them with one."""
    policy = tenants or EQUAL_SHARES
    lost = [int(r[0]) for r in fetch(db, sql.FLOW_LOST, (lane, now, limit))]
    found = _lease(db, lost, owner, lease_until, now, returning)
    n = limit - len(found)
    if n <= 0:
        return found
    found_clock = fetch(db, sql.LANE_CLOCK, (lane, lane))
    clock, anonymous, none_time = found_clock[0] if found_clock else (0.0, 0, None)
    clock = float(clock)
    db.execute(sql.LIFT_VTIMES, (clock, lane, clock))
    running = None
    if policy.max_in_flight is not None:
        running = {str(t): int(k) for t, k in fetch(db, sql.TENANTS_RUNNING, (lane, now))}
    rows, bound = _fair_page(db, lane, (clock, NO_TENANT), n)
    if none_time is not None:
        rows.append((NO_TENANT, 0, float(none_time)))
    plan = plan_claim(rows, clock, bool(anonymous), n, policy, running, bound)
    for _ in range(FAIR_ROUNDS):
        shares = plan.take(n)
        while plan.short and plan.bound is not None:
            rows, bound = _fair_page(db, lane, plan.bound, n)
            plan.extend(page_flows(rows, policy, running), bound)
            for tenant, k in plan.take(n - sum(shares.values())).items():
                shares[tenant] = shares.get(tenant, 0) + k
        if not shares:
            break
        flow_of: dict[int, str] = {}
        todo = list(shares.items())
        for i in range(0, len(todo), _FLOWS_PER_SELECT):
            part = todo[i : i + _FLOWS_PER_SELECT]
            params: list[object] = []
            for tenant, k in part:
                named = tenant != NO_TENANT
                params += (tenant, lane, tenant, now, k) if named else (lane, now, k)
            query = sql.flow_seqs(tuple(t != NO_TENANT for t, _ in part))
            flow_of.update((int(seq), str(t)) for seq, t in fetch(db, query, params))
        got = _lease(db, list(flow_of), owner, lease_until, now, returning)
        filled = Counter(flow_of[seq] for seq, _ in got)
        for tenant, k in shares.items():
            plan.got(tenant, k, filled[tenant])
        found += got
        n -= len(got)
        if n <= 0:
            break
    served = plan.times()
    db.executemany(sql.SET_VTIME, [(lane, t, v) for t, v in served.items()])
    db.executemany(sql.PRUNE_TENANT, [(lane, t) for t in served])
    db.execute(sql.SET_VCLOCK, (plan.clock, lane))
    return found


#: flows whose next jobs one fair claim's statement selects (SQLite allows 500 terms)
_FLOWS_PER_SELECT = 100


def _fair_page(
    db: Conn, lane: str, after: tuple[float, str], n: int
) -> tuple[list[tuple[str, int, float]], tuple[float, str] | None]:
    """The lane's next ``n`` queued tenants after ``after`` in fair order, and the
    plan's bound (the last of them; ``None`` when no tenant is left unread)."""
    rows = [(str(t), int(k), float(v)) for t, k, v in fetch(db, sql.FAIR_PAGE, (lane, *after, n))]
    bound = (rows[-1][2], rows[-1][0]) if len(rows) == n else None
    return rows, bound


def _lease(
    db: Conn, seqs: list[int], owner: str, lease_until: float, now: float, returning: bool
) -> list[tuple[int, JobRecord]]:
    """Lease the jobs of ``seqs``; a corrupt row among them goes DEAD and is left out."""
    if not seqs:
        return []
    lease = (_R, owner, lease_until, now)
    if returning:
        got = fetch(db, sql.claim_seqs(len(seqs), True), (*lease, *seqs))
    else:
        got = fetch(db, sql.select_seqs(len(seqs)), seqs)
        db.execute(sql.claim_seqs(len(seqs), False), (*lease, *seqs))
    return _decode_leased(db, got, owner, lease_until, now, returning)


def _decode_leased(
    db: Conn,
    got: list[Sequence[Any]],
    owner: str,
    lease_until: float,
    now: float,
    returning: bool,
) -> list[tuple[int, JobRecord]]:
    """The records of rows a claim just leased; a corrupt one goes DEAD and is left out."""
    out: list[tuple[int, JobRecord]] = []
    for row in got:
        seq, record, problem = sql.decode_row(row)
        if problem is not None:
            db.execute(sql.KILL_CORRUPT, (_DEAD, record.error, now, seq))
            continue
        if not returning:  # the row was read before the update
            record = replace(
                record, state=JobState.RUNNING, attempts=record.attempts + 1,
                lease_owner=owner, lease_until=lease_until, updated_at=now,
            )  # fmt: skip
        out.append((seq, record))
    return out


#: other owners of this host checked for death when an owner registers
_PRUNE_LIMIT = 100


def register_owner(db: Conn, owner: str, now: float) -> list[tuple[str, int]]:
    """Record that this process holds ``owner``'s leases; reclaim dead owners of this host.

    Returns ``(owner, leases ended)`` of each dead owner found.
    """
    me = _owners.this_process()
    db.execute(sql.REGISTER_OWNER, (owner, me.host, me.boot_id, me.pidns, me.pid, me.started, now))
    if me.boot_id is None or me.pidns is None:
        return []
    found = fetch(db, sql.LOCAL_OWNERS, (me.host, me.boot_id, me.pidns, owner, _PRUNE_LIMIT))
    return _reclaim(db, found, now)


def reclaim_dead(db: Conn, lane: str, owner: str, now: float) -> list[tuple[str, int]]:
    """End at once the leases of every owner of a live lease in ``lane`` whose process
    is gone (see :mod:`._owners`); ``(owner, leases ended)`` of each."""
    return _reclaim(db, fetch(db, sql.LEASING_OWNERS, (lane, now, owner)), now)


def _reclaim(db: Conn, found: list[Sequence[Any]], now: float) -> list[tuple[str, int]]:
    reclaimed: list[tuple[str, int]] = []
    for row in found:
        if not _owners.is_dead(_owners.ProcessId.from_row(row[1:])):
            continue
        dead = str(row[0])
        ended = db.execute(sql.EXPIRE_OWNER, (now, dead, now)).rowcount
        db.execute(sql.DELETE_OWNER, (dead,))
        reclaimed.append((dead, ended))
    return reclaimed
