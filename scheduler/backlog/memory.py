"""MemoryBacklog: the Backlog protocol in plain dicts and heaps.

For ``backlog=":memory:"`` and unit tests. Same semantics as the SQLite
backlog (the contract suite runs against both); nothing outlives the process.

Rows keep their JSON as text and decode it on every read, so records handed
out are copies, as they would be from a database. Per lane and tenant, QUEUED
jobs sit in one of two heaps: *delayed* ``(run_at, seq)`` until they are
due, then *ready* ``(rank, run_at, seq)``; a lane whose queued jobs name
tenants is claimed fairly between them (:mod:`scheduler.backlog._fair`). Heap
entries carry the row's version; an entry whose row moved on (claimed,
requeued, purged) is stale and skipped.
RUNNING ids are kept per lane so expired leases are found without a scan.
"""

from __future__ import annotations

import heapq
import itertools
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

from ..jobs import JobState
from ._fair import EQUAL_SHARES, FAIR_ROUNDS, NO_TENANT, FairPolicy, plan_claim
from ._template import ClaimArgs, CombinedBacklogBase
from .base import (
    CANCELLED_ERROR,
    JobRecord,
    NewJob,
    Outcome,
    admit,
    bounded_lanes,
    bounded_tenants,
    claim_room,
    decode_args,
    decode_json,
    lease_lost_error,
    new_job_id,
)

__all__ = ["MemoryBacklog"]

# ready: (rank, run_at, seq, version, id); delayed: (run_at, 0.0, seq, version, id)
_Entry = tuple[float, float, int, int, str]


_PLAIN_FIELDS = [f.name for f in fields(JobRecord) if f.name not in ("args", "result")]


@dataclass(slots=True)
class _Row:
    seq: int
    id: str
    task: str
    lane: str
    args_json: str
    priority: float
    state: JobState
    attempts: int
    max_attempts: int
    run_at: float
    created_at: float
    updated_at: float
    key: str | None
    deadline_at: float | None
    cost: float | None = None
    lease_owner: str | None = None
    lease_until: float | None = None
    result_json: str | None = None
    error: str | None = None
    traceback: str | None = None
    cancel_requested_at: float | None = None
    rank: float = 0.0
    tenant: str | None = None
    trace: str | None = None
    version: int = 0

    def record(self) -> JobRecord:
        """A fresh JobRecord, JSON decoded anew (so callers never share our state)."""
        plain = {name: getattr(self, name) for name in _PLAIN_FIELDS}
        result = None if self.result_json is None else decode_json(self.result_json, "result")
        return JobRecord(args=decode_args(self.args_json), result=result, **plain)

    @property
    def order(self) -> tuple[float, float, int]:
        return (self.rank, self.run_at, self.seq)

    @property
    def flow(self) -> tuple[str, str]:
        """The heaps it queues in: its lane and tenant."""
        return (self.lane, NO_TENANT if self.tenant is None else self.tenant)


def _ready_entry(row: _Row) -> _Entry:
    return (row.rank, row.run_at, row.seq, row.version, row.id)


def _delayed_entry(row: _Row) -> _Entry:
    return (row.run_at, 0.0, row.seq, row.version, row.id)


class MemoryBacklog(CombinedBacklogBase):
    """An in-process :class:`~scheduler.backlog.base.Backlog`; see the module docstring."""

    def __init__(self) -> None:
        super().__init__("the memory backlog")
        self._open = False
        self._rows: dict[str, _Row] = {}  # insertion order == seq order
        self._by_key: dict[str, str] = {}
        self._seq = itertools.count(1)
        # heaps per (lane, tenant)
        self._ready: defaultdict[tuple[str, str], list[_Entry]] = defaultdict(list)
        self._delayed: defaultdict[tuple[str, str], list[_Entry]] = defaultdict(list)
        self._queued: defaultdict[str, set[str]] = defaultdict(set)
        # per lane: named tenants' QUEUED counts, virtual times and the virtual clock
        self._tenant_queued: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self._vtime: defaultdict[str, dict[str, float]] = defaultdict(dict)
        self._vclock: dict[str, float] = {}
        self._running: defaultdict[str, set[str]] = defaultdict(set)

    async def open(self) -> None:
        self._open = True

    async def close(self) -> None:
        self._open = False

    def _is_open(self) -> bool:
        return self._open

    # -- state moves: the one place that keeps the per-lane indexes true ------------

    def _move(self, row: _Row, state: JobState, now: float) -> None:
        if row.state is JobState.RUNNING:
            self._running[row.lane].discard(row.id)
            row.lease_owner = row.lease_until = None
        elif row.state is JobState.QUEUED:
            self._queued[row.lane].discard(row.id)
            if row.tenant is not None:
                counts = self._tenant_queued[row.lane]
                counts[row.tenant] -= 1
                if counts[row.tenant] <= 0:  # it comes back at the lane's clock
                    del counts[row.tenant]
                    self._vtime[row.lane].pop(row.tenant, None)
        row.state = state
        row.updated_at = float(now)
        row.version += 1
        if state is JobState.QUEUED:
            self._queued[row.lane].add(row.id)
            if row.tenant is not None:
                self._tenant_queued[row.lane][row.tenant] += 1
            heapq.heappush(self._delayed[row.flow], _delayed_entry(row))
        elif state is JobState.RUNNING:
            self._running[row.lane].add(row.id)

    def _live(self, entry: _Entry) -> _Row | None:
        row = self._rows.get(entry[4])
        if row is None or row.version != entry[3] or row.state is not JobState.QUEUED:
            return None
        return row

    def _held(self, job_id: str, owner: str) -> _Row | None:
        row = self._rows.get(job_id)
        if row is None or row.state is not JobState.RUNNING or row.lease_owner != owner:
            return None
        return row

    # -- the primitives (BacklogBase did the open check, the guards and the counters) --

    async def _submit(
        self, jobs: Sequence[NewJob], args: list[list[Any]], now: float
    ) -> list[JobRecord]:
        queued = {lane: len(self._queued[lane]) for lane in bounded_lanes([jobs])}
        per_tenant = {
            (lane, t): self._tenant_queued[lane][t] for lane, t in bounded_tenants([jobs])
        }
        stored = [j.key for j in jobs if j.key is not None and j.key in self._by_key]
        [refused] = admit([jobs], queued, stored, per_tenant)
        if refused is not None:
            raise refused
        out: list[JobRecord] = []
        for job in jobs:
            existing = self._by_key.get(job.key) if job.key is not None else None
            if existing is not None:
                out.append(self._rows[existing].record())
                continue
            row = _Row(
                seq=next(self._seq),
                id=new_job_id(),
                task=job.task,
                lane=job.lane,
                args_json=job.args_json,
                priority=float(job.priority),
                state=JobState.DONE,  # placeholder; _move sets QUEUED and indexes it
                attempts=0,
                max_attempts=job.max_attempts,
                run_at=float(job.run_at),
                created_at=float(now),
                updated_at=float(now),
                key=job.key,
                deadline_at=job.deadline_at,
                cost=None if job.cost is None else float(job.cost),
                rank=float(job.priority) if job.rank is None else float(job.rank),
                tenant=job.tenant,
                trace=job.trace,
            )
            self._rows[row.id] = row
            if job.key is not None:
                self._by_key[job.key] = row.id
            self._move(row, JobState.QUEUED, now)
            out.append(row.record())
        return out

    async def _claim(self, claim: ClaimArgs) -> list[JobRecord]:
        lane, limit, owner, now = claim.lane, claim.limit, claim.owner, claim.now
        expired = self._expired(lane, now)
        if claim.max_running is not None:
            rows = (self._rows[i] for i in self._running[lane])
            live = sum(
                1
                for r in rows
                if r.lease_owner != owner and r.lease_until is not None and r.lease_until > now
            )
            limit = claim_room(limit, claim.max_running, live)
            if limit <= 0:
                return []
        if self._tenant_queued[lane]:
            # expired leases first (they had their turn), then the tenants' turns
            chosen = sorted(expired, key=lambda r: r.order)[:limit]
            policy = claim.tenants or EQUAL_SHARES
            chosen += self._pop_fair(lane, limit - len(chosen), now, policy, chosen)
            chosen.sort(key=lambda r: r.order)
        else:
            due = self._pop_due((lane, NO_TENANT), limit, now)
            chosen = sorted(due + expired, key=lambda r: r.order)[:limit]
            taken = {row.id for row in chosen}
            for row in due:
                if row.id not in taken:
                    heapq.heappush(self._ready[row.flow], _ready_entry(row))
        for row in chosen:
            self._move(row, JobState.RUNNING, now)
            row.attempts += 1
            row.lease_owner = owner
            row.lease_until = claim.lease_until
        return [row.record() for row in chosen]

    def _pop_fair(
        self, lane: str, n: int, now: float, policy: FairPolicy, retaken: Sequence[_Row] = ()
    ) -> list[_Row]:
        """Up to ``n`` due QUEUED rows of ``lane``, shared fairly between its tenants
        (``retaken``: expired leases this claim takes over, which count as running)."""
        if n <= 0:
            return []
        named = self._tenant_queued[lane]
        running: Counter[str] | None = None
        if policy.max_in_flight is not None:
            running = Counter(
                tenant
                for i in self._running[lane]
                if (tenant := self._rows[i].tenant) is not None
                and (until := self._rows[i].lease_until) is not None
                and until > now
            )
            running.update(row.tenant for row in retaken if row.tenant is not None)
        times = self._vtime[lane]
        flows = [(t, k, times.get(t, 0.0)) for t, k in named.items()]
        if NO_TENANT in times:
            flows.append((NO_TENANT, 0, times[NO_TENANT]))
        anonymous = len(self._queued[lane]) > sum(named.values())
        plan = plan_claim(flows, self._vclock.get(lane, 0.0), anonymous, n, policy, running)
        out: list[_Row] = []
        for _ in range(FAIR_ROUNDS):
            shares = plan.take(n - len(out))
            if not shares:
                break
            for tenant, k in shares.items():
                got = self._pop_due((lane, tenant), k, now)
                plan.got(tenant, k, len(got))
                out += got
            if len(out) >= n:
                break
        times.update(plan.times())
        for tenant in list(times):  # served tenants with nothing queued are forgotten
            if tenant != NO_TENANT and not named[tenant]:
                del times[tenant]
        self._vclock[lane] = plan.clock
        return out

    def _pop_due(self, flow: tuple[str, str], limit: int, now: float) -> list[_Row]:
        """Up to ``limit`` due QUEUED rows of a (lane, tenant) in claim order, off the heaps."""
        delayed, ready = self._delayed[flow], self._ready[flow]
        while delayed and delayed[0][0] <= now:
            if (row := self._live(heapq.heappop(delayed))) is not None:
                heapq.heappush(ready, _ready_entry(row))
        due: list[_Row] = []
        while ready and len(due) < limit:
            if (row := self._live(heapq.heappop(ready))) is None:
                continue
            if row.run_at > now:  # the caller's clock went backwards: not due after all
                heapq.heappush(delayed, _delayed_entry(row))
            else:
                due.append(row)
        return due

    def _expired(self, lane: str, now: float) -> list[_Row]:
        """RUNNING rows of ``lane`` whose lease passed; those out of attempts go DEAD."""
        out: list[_Row] = []
        for job_id in list(self._running[lane]):
            row = self._rows[job_id]
            if row.lease_until is None or row.lease_until > now:
                continue
            if row.cancel_requested_at is not None:
                row.error = CANCELLED_ERROR
                self._move(row, JobState.CANCELLED, now)
            elif row.attempts >= row.max_attempts:
                self._move(row, JobState.DEAD, now)
                row.error = lease_lost_error(row.attempts, row.max_attempts)
            else:
                out.append(row)
        return out

    async def _heartbeat(self, job_ids: Sequence[str], owner: str, lease_until: float) -> int:
        n = 0
        for job_id in job_ids:
            row = self._held(job_id, owner)
            if row is not None:
                row.lease_until = lease_until
                n += 1
        return n

    async def _complete(self, outcomes: Sequence[Outcome], now: float) -> int:
        n = 0
        for o in outcomes:
            row = self._held(o.job_id, o.owner)
            if row is None or (o.attempt is not None and row.attempts != o.attempt):
                continue
            n += 1
            if o.kind == "done":
                row.result_json, row.error, row.traceback = o.result_json, None, None
                self._move(row, JobState.DONE, now)
                continue
            row.result_json, row.error, row.traceback = None, o.error, o.traceback
            if o.kind == "retry":
                assert o.run_at is not None  # Outcome checks this
                row.run_at = float(o.run_at)
            if o.kind == "cancelled" or (o.kind == "retry" and row.cancel_requested_at is not None):
                self._move(row, JobState.CANCELLED, now)  # a cancelled job is never retried
            elif o.kind == "retry":
                self._move(row, JobState.QUEUED, now)
            else:
                self._move(row, JobState.DEAD, now)
        return n

    async def _complete_and_claim(
        self, outcomes: Sequence[Outcome], claim: ClaimArgs
    ) -> tuple[int, list[JobRecord]]:
        """``_complete`` then ``_claim``: atomic here, as nothing awaits in between."""
        return await self._complete(outcomes, claim.now), await self._claim(claim)

    async def _release(self, job_ids: Sequence[str], owner: str, now: float) -> int:
        n = 0
        for job_id in job_ids:
            row = self._held(job_id, owner)
            if row is not None:
                row.attempts = max(0, row.attempts - 1)
                if row.cancel_requested_at is None:
                    self._move(row, JobState.QUEUED, now)
                else:
                    row.error = CANCELLED_ERROR
                    self._move(row, JobState.CANCELLED, now)
                n += 1
        return n

    async def _get(self, job_id: str) -> JobRecord | None:
        row = self._rows.get(job_id)
        return None if row is None else row.record()

    async def _list_jobs(
        self, state: JobState | None, lane: str | None, limit: int, offset: int
    ) -> list[JobRecord]:
        rows = (
            r
            for r in self._rows.values()
            if (state is None or r.state is state) and (lane is None or r.lane == lane)
        )
        return [r.record() for r in itertools.islice(rows, offset, offset + limit)]

    async def _requeue(self, job_id: str | None, lane: str | None, now: float) -> int:
        if job_id is not None:
            one = self._rows.get(job_id)
            rows = [one] if one is not None else []
        else:
            rows = list(self._rows.values())
        n = 0
        for row in rows:
            if row.state is JobState.DEAD and (lane is None or row.lane == lane):
                row.attempts = 0
                row.run_at = now
                row.cancel_requested_at = None
                self._move(row, JobState.QUEUED, now)
                n += 1
        return n

    async def _cancel(self, job_id: str, now: float) -> JobState | None:
        row = self._rows.get(job_id)
        return None if row is None else self._cancel_row(row, now)

    def _cancel_row(self, row: _Row, now: float) -> JobState:
        was = row.state
        if was is JobState.QUEUED:
            row.error = CANCELLED_ERROR
            self._move(row, JobState.CANCELLED, now)
        elif was is JobState.RUNNING and row.cancel_requested_at is None:
            row.cancel_requested_at = float(now)
        return was

    async def _cancel_task(self, task: str | None, tenant: str | None, now: float) -> int:
        rows = [
            r
            for r in self._rows.values()
            if (task is None or r.task == task)
            and (tenant is None or r.tenant == tenant)
            and (
                r.state is JobState.QUEUED
                or (r.state is JobState.RUNNING and r.cancel_requested_at is None)
            )
        ]
        for row in rows:
            self._cancel_row(row, now)
        return len(rows)

    async def _cancel_requested(self, job_ids: Sequence[str]) -> list[str]:
        return [
            job_id
            for job_id in job_ids
            if (row := self._rows.get(job_id)) is not None
            and row.state is JobState.RUNNING
            and row.cancel_requested_at is not None
        ]

    async def _counts(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for row in self._rows.values():
            per_lane = out.setdefault(row.lane, {})
            per_lane[row.state.value] = per_lane.get(row.state.value, 0) + 1
        return out

    async def _purge(self, finished_before: float) -> int:
        gone = [
            r
            for r in self._rows.values()
            if r.state in (JobState.DONE, JobState.CANCELLED) and r.updated_at < finished_before
        ]
        for row in gone:
            del self._rows[row.id]
            if row.key is not None:
                self._by_key.pop(row.key, None)
        return len(gone)

    async def _queued_count(self, lane: str) -> int:
        return len(self._queued[lane])

    async def _queued_by_tenant(self, lane: str, limit: int) -> list[tuple[str, int]]:
        return self._tenant_queued[lane].most_common(limit)

    def __repr__(self) -> str:
        return f"<MemoryBacklog {len(self._rows)} jobs {'open' if self._open else 'closed'}>"
