"""The multi-statement transactions of the SQLite backlog: migrate, insert a batch, claim.

Each runs inside a ``BEGIN IMMEDIATE`` transaction opened by the caller, so
the write lock is held throughout: a key looked up here cannot be inserted
by another process before our insert, and two claimers never take one job.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any, cast

import aiosqlite

from ..errors import BacklogError
from ..jobs import JobState
from . import _sqlite_schema as sql
from .base import LEASE_LOST_FMT, JobRecord, NewJob, claim_room, new_record

__all__ = ["Submit", "claim", "insert", "migrate", "rows"]

#: One ``submit()`` call: its jobs, their decoded args, its ``now``.
Submit = tuple[Sequence[NewJob], list[list[Any]], float]

_Q, _R, _DEAD = JobState.QUEUED.value, JobState.RUNNING.value, JobState.DEAD.value
_KEY_CHUNK = 500  # keys per IN (...) lookup, well under SQLite's bound-parameter limit


def rows(result: Iterable[Any]) -> list[Sequence[Any]]:
    """aiosqlite's fetched rows, typed as the tuples they are."""
    return cast(list[Sequence[Any]], list(result))


async def migrate(db: aiosqlite.Connection, path: str) -> None:
    """Apply the migrations this file has not had yet; refuse a newer schema."""
    version = int(rows(await db.execute_fetchall("PRAGMA user_version"))[0][0])
    if version > sql.SCHEMA_VERSION:
        raise BacklogError(
            f"backlog {path!r} has schema version {version}, newer than this "
            f"Floodgate knows ({sql.SCHEMA_VERSION}); upgrade Floodgate to open it"
        )
    for statements in sql.MIGRATIONS[version:]:
        for statement in statements:
            await db.execute(statement)
    if version < sql.SCHEMA_VERSION:
        await db.execute(f"PRAGMA user_version={int(sql.SCHEMA_VERSION)}")


async def insert(db: aiosqlite.Connection, batch: list[Submit]) -> list[list[JobRecord]]:
    """Insert a batch of submits; one record list per submit, in order.

    A key already stored, or seen earlier in the batch, is not inserted again:
    its existing record is returned in its place.
    """
    keys = sorted({job.key for jobs, _, _ in batch for job in jobs if job.key is not None})
    known: dict[str | None, JobRecord] = {}
    for i in range(0, len(keys), _KEY_CHUNK):
        chunk = keys[i : i + _KEY_CHUNK]
        for row in rows(await db.execute_fetchall(sql.select_by_keys(len(chunk)), chunk)):
            record = sql.decode_row(row)[1]
            known[record.key] = record
    inserts: list[tuple[Any, ...]] = []
    results: list[list[JobRecord]] = []
    for jobs, args, when in batch:
        now = float(when)
        records: list[JobRecord] = []
        for job, job_args in zip(jobs, args, strict=True):
            if job.key is not None and job.key in known:
                records.append(known[job.key])
                continue
            record = new_record(job, job_args, now)
            if job.key is not None:
                known[job.key] = record
            inserts.append(
                (record.id, job.task, job.lane, job.args_json, record.priority, _Q,
                 job.max_attempts, record.run_at, now, now, job.key, job.deadline_at,
                 record.cost)
            )  # fmt: skip
            records.append(record)
        results.append(records)
    if inserts:
        await db.executemany(sql.INSERT, inserts)
    return results


async def claim(
    db: aiosqlite.Connection,
    lane: str,
    limit: int,
    owner: str,
    lease_until: float,
    now: float,
    *,
    returning: bool,
    max_running: int | None = None,
) -> list[JobRecord]:
    """Lease up to ``limit`` jobs of ``lane``; see :meth:`Backlog.claim`.

    Expired leases with no attempts left go DEAD first. A corrupt row among
    the claimed goes DEAD alone and the claim is topped up with the next jobs.
    With ``max_running``, other owners' live leases of the lane are counted
    first (the caller's ``BEGIN IMMEDIATE`` holds the write lock, so the count
    stays true).
    """
    await db.execute(sql.KILL_LOST, (_DEAD, LEASE_LOST_FMT, now, lane, _R, now))
    if max_running is not None:
        live = rows(await db.execute_fetchall(sql.LIVE_LEASES, (lane, _R, now, owner)))[0][0]
        limit = claim_room(limit, max_running, int(live))
    found: list[tuple[int, JobRecord]] = []
    while len(found) < limit:
        n = limit - len(found)
        where = (lane, _Q, now, n, lane, _R, now, n, n)
        lease = (_R, owner, lease_until, now)
        if returning:
            got = rows(await db.execute_fetchall(sql.CLAIM_RETURNING, lease + where))
        else:
            got = rows(await db.execute_fetchall(sql.CLAIM_SELECT, where))
            await db.executemany(sql.CLAIM_UPDATE, [(*lease, row[0]) for row in got])
        corrupt = 0
        for row in got:
            seq, record, problem = sql.decode_row(row)
            if problem is not None:
                await db.execute(sql.KILL_CORRUPT, (_DEAD, record.error, now, seq))
                corrupt += 1
                continue
            if not returning:  # the row was read before the update
                record = replace(
                    record, state=JobState.RUNNING, attempts=record.attempts + 1,
                    lease_owner=owner, lease_until=lease_until, updated_at=now,
                )  # fmt: skip
            found.append((seq, record))
        if not corrupt:
            break
    found.sort(key=lambda sr: (sr[1].priority, sr[1].run_at, sr[0]))
    return [record for _, record in found]
