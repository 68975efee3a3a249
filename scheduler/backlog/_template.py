"""BacklogBase: the :class:`~scheduler.backlog.base.Backlog` methods written once.

Every backend's public methods begin and end alike: refuse a backlog that is
not open (``BacklogError: <backlog> is not open``), check the arguments
(``ValueError``), answer at once when there is nothing to do (no jobs, no
outcomes, no room to claim), and afterwards count what happened
(:class:`~scheduler.backlog.base.BacklogStats`). :class:`BacklogBase` does that
in each public method (a template method) and hands the rest to the backend's
``_``-prefixed primitive, which can take its arguments as checked: ``_claim``
gets a :class:`ClaimArgs` that may take something, ``_heartbeat``/``_release``/
``_complete`` a non-empty batch, ``_list_jobs`` a limit and offset >= 0,
``_requeue`` either a ``job_id`` or (``None``) every dead job.

A backend that can write outcomes and claim in one transaction subclasses
:class:`CombinedBacklogBase` instead, which adds ``complete_and_claim``
(:class:`~scheduler.backlog.base.CompletesAndClaims`) over ``_complete_and_claim``.

The :class:`~scheduler.backlog.base.Backlog` protocol stays the contract: a
backend may implement it directly; this class is how the built-in ones do.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

from ..errors import BacklogError
from ..jobs import JobState
from ._fair import FairPolicy
from ._group_commit import GroupCommitter
from .base import (
    AsyncContext,
    BacklogStats,
    JobRecord,
    NewJob,
    Outcome,
    check_cancel_match,
    check_new_job,
    check_requeue_args,
    may_claim,
    validate_new_job,
    with_args,
)

__all__ = ["BacklogBase", "ClaimArgs", "CombinedBacklogBase", "Counters"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ClaimArgs:
    """One claim's arguments as :meth:`BacklogBase.claim` got them (it may take a job:
    ``limit > 0`` and ``max_running`` is ``None`` or > 0)."""

    lane: str
    limit: int
    owner: str
    lease_seconds: float
    now: float
    max_running: int | None = None
    tenants: FairPolicy | None = None

    @property
    def lease_until(self) -> float:
        return self.now + self.lease_seconds


@dataclass(slots=True)
class Counters:
    """The counters a backlog keeps: the fields of :class:`BacklogStats` but its gauges
    (read live) and the group committer's (it counts its own)."""

    submitted: int = 0
    claimed: int = 0
    applied: int = 0
    ignored: int = 0
    commits: int = 0
    notified: int = 0
    reconnects: int = 0
    unheard_released: int = 0
    inline_commits: int = 0
    inline_busy: int = 0


class BacklogBase(AsyncContext, ABC):
    """The public methods of a backlog (open check, argument checks, counters), over
    the ``_``-prefixed primitives a backend implements; see the module docstring.

    ``label`` names the backlog in errors (``"<label> is not open"``).
    """

    #: the backend's group committer of submits, if it has one (its flushes and
    #: waiting submits show in :meth:`stats`)
    _committer: GroupCommitter[Any, Any] | None = None
    #: a connection listens for wake-ups now (a backend that listens sets it)
    _listening: bool = False

    def __init__(self, label: str) -> None:
        self._label = label
        self._counters = Counters()
        self._inflight: set[asyncio.Future[Any]] = set()  # writes under way

    # -- the open check ---------------------------------------------------------------

    @abstractmethod
    def _is_open(self) -> bool:
        """Whether calls are taken now (open, and not closing)."""

    def _not_open(self) -> BacklogError:
        return BacklogError(f"{self._label} is not open")

    def _check_open(self) -> None:
        if not self._is_open():
            raise self._not_open()

    # -- writes that outlive a cancelled caller ---------------------------------------

    async def _to_the_end(self, write: Awaitable[T]) -> T:
        """Await ``write`` shielded: a cancelled caller stops waiting, but the write still
        finishes (commits or rolls back), and :meth:`_finish_writes` waits for it."""
        task = asyncio.ensure_future(write)
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        return await asyncio.shield(task)

    async def _finish_writes(self) -> None:
        """At close: write the submits still queued, then wait for every write under way."""
        if self._committer is not None:
            await self._committer.drain()
        while self._inflight:
            await asyncio.wait(set(self._inflight))

    # -- counters -------------------------------------------------------------------

    def stats(self) -> BacklogStats:
        """This object's counters (see :class:`BacklogStats`)."""
        group = self._committer
        return BacklogStats(
            **asdict(self._counters),
            submit_flushes=0 if group is None else group.flushes,
            pending_submits=0 if group is None else group.pending,
            listening=self._listening,
        )

    def _count_outcomes(self, written: int, applied: int) -> None:
        self._counters.applied += applied
        self._counters.ignored += written - applied

    async def _take(self, claim: ClaimArgs) -> list[JobRecord]:
        records = await self._claim(claim)
        self._counters.claimed += len(records)
        return records

    # -- the protocol -----------------------------------------------------------------

    async def submit(self, jobs: Sequence[NewJob], *, now: float) -> list[JobRecord]:
        self._check_open()
        args = [validate_new_job(job) for job in jobs]
        if not jobs:
            return []
        records = await self._submit(jobs, args, now)
        self._counters.submitted += len(records)
        return records

    async def submit_run(
        self,
        template: NewJob,
        args_json: Sequence[str],
        args: Sequence[list[Any]],
        *,
        now: float,
    ) -> list[str]:
        """See :class:`~scheduler.backlog.base.SubmitsRuns`."""
        self._check_run(template)
        if len(args_json) != len(args):
            raise ValueError(f"{len(args_json)} args_json for {len(args)} args")
        for text in args_json:
            if type(text) is not str:
                raise ValueError(f"args_json must be str, got {type(text).__name__}")
        if not args_json:
            return []
        ids = await self._submit_run(template, list(args_json), list(args), now)
        self._counters.submitted += len(ids)
        return ids

    def _check_run(self, template: NewJob) -> None:
        """Refuse a run's template: closed backlog, a key, a malformed job."""
        self._check_open()
        if template.key is not None:
            raise ValueError("the jobs of a run have no key: submit keyed jobs one by one")
        check_new_job(template)

    def _submit_run(
        self, template: NewJob, texts: list[str], args: list[list[Any]], now: float
    ) -> Awaitable[list[str]]:
        """Store a run (checked; not empty): by default one ``NewJob`` each, through
        :meth:`_submit`. An ``async def``, or a plain call returning an awaitable."""
        return self._submit_each(template, texts, args, now)

    async def _submit_each(
        self, template: NewJob, texts: list[str], args: list[list[Any]], now: float
    ) -> list[str]:
        jobs = [with_args(template, t, a) for t, a in zip(texts, args, strict=True)]
        return [record.id for record in await self._submit(jobs, args, now)]

    async def claim(
        self,
        lane: str,
        limit: int,
        *,
        owner: str,
        lease_seconds: float,
        now: float,
        max_running: int | None = None,
        tenants: FairPolicy | None = None,
    ) -> list[JobRecord]:
        self._check_open()
        if not may_claim(limit, max_running):
            return []
        return await self._take(
            ClaimArgs(lane, limit, owner, lease_seconds, now, max_running, tenants)
        )

    async def heartbeat(
        self, job_ids: Sequence[str], *, owner: str, lease_seconds: float, now: float
    ) -> int:
        self._check_open()
        return await self._heartbeat(job_ids, owner, now + lease_seconds) if job_ids else 0

    async def complete(self, outcomes: Sequence[Outcome], *, now: float) -> int:
        self._check_open()
        if not outcomes:
            return 0
        applied = await self._complete(outcomes, now)
        self._count_outcomes(len(outcomes), applied)
        return applied

    async def release(self, job_ids: Sequence[str], *, owner: str, now: float) -> int:
        self._check_open()
        return await self._release(job_ids, owner, now) if job_ids else 0

    async def get(self, job_id: str) -> JobRecord | None:
        self._check_open()
        return await self._get(job_id)

    async def list_jobs(
        self,
        state: JobState | None = None,
        lane: str | None = None,
        *,
        limit: int = 100,
        offset: int = 0,
    ) -> list[JobRecord]:
        self._check_open()
        return await self._list_jobs(state, lane, max(0, limit), max(0, offset))

    async def requeue(
        self,
        job_id: str | None = None,
        *,
        all_dead: bool = False,
        lane: str | None = None,
        now: float,
    ) -> int:
        self._check_open()
        check_requeue_args(job_id, all_dead)
        return await self._requeue(job_id, lane, now)

    async def cancel(self, job_id: str, *, now: float) -> JobState | None:
        self._check_open()
        return await self._cancel(job_id, now)

    async def cancel_task(self, task: str | None, *, now: float, tenant: str | None = None) -> int:
        """Counts the jobs this call cancelled or newly asked to stop."""
        self._check_open()
        check_cancel_match(task, tenant)
        return await self._cancel_task(task, tenant, now)

    async def cancel_requested(self, job_ids: Sequence[str]) -> list[str]:
        self._check_open()
        return await self._cancel_requested(job_ids) if job_ids else []

    async def counts(self) -> dict[str, dict[str, int]]:
        self._check_open()
        return await self._counts()

    async def purge(self, finished_before: float) -> int:
        self._check_open()
        return await self._purge(finished_before)

    async def queued_count(self, lane: str, *, limit: int | None = None) -> int:
        self._check_open()
        count = await self._queued_count(lane)
        return count if limit is None else min(count, max(0, limit))

    async def queued_by_tenant(self, lane: str, *, limit: int = 10) -> list[tuple[str, int]]:
        self._check_open()
        return await self._queued_by_tenant(lane, limit)

    # -- the primitives ---------------------------------------------------------------

    @abstractmethod
    def _submit(
        self, jobs: Sequence[NewJob], args: list[list[Any]], now: float
    ) -> Awaitable[list[JobRecord]]:
        """Store ``jobs`` (not empty, validated; ``args``: each one's decoded args).
        An ``async def``, or a plain call returning an awaitable (one frame less)."""

    @abstractmethod
    async def _claim(self, claim: ClaimArgs) -> list[JobRecord]:
        """Lease jobs as :meth:`~scheduler.backlog.base.Backlog.claim` says."""

    @abstractmethod
    async def _heartbeat(self, job_ids: Sequence[str], owner: str, lease_until: float) -> int:
        """Extend ``owner``'s held leases of ``job_ids`` (not empty) to ``lease_until``."""

    @abstractmethod
    async def _complete(self, outcomes: Sequence[Outcome], now: float) -> int:
        """Apply ``outcomes`` (not empty) whose lease is held; how many applied."""

    @abstractmethod
    async def _release(self, job_ids: Sequence[str], owner: str, now: float) -> int:
        """Give ``owner``'s held leases of ``job_ids`` (not empty) back unrun."""

    @abstractmethod
    async def _get(self, job_id: str) -> JobRecord | None: ...

    @abstractmethod
    async def _list_jobs(
        self, state: JobState | None, lane: str | None, limit: int, offset: int
    ) -> list[JobRecord]:
        """``limit`` and ``offset`` are >= 0."""

    @abstractmethod
    async def _requeue(self, job_id: str | None, lane: str | None, now: float) -> int:
        """Requeue the dead job ``job_id``, or (``None``) every dead job (of ``lane``)."""

    @abstractmethod
    async def _cancel(self, job_id: str, now: float) -> JobState | None: ...

    @abstractmethod
    async def _cancel_task(self, task: str | None, tenant: str | None, now: float) -> int:
        """``task`` and ``tenant`` are not both ``None``."""

    @abstractmethod
    async def _cancel_requested(self, job_ids: Sequence[str]) -> list[str]:
        """``job_ids`` is not empty."""

    @abstractmethod
    async def _counts(self) -> dict[str, dict[str, int]]: ...

    @abstractmethod
    async def _purge(self, finished_before: float) -> int: ...

    @abstractmethod
    async def _queued_count(self, lane: str) -> int:
        """The lane's whole ``QUEUED`` count (the caller applies ``limit``)."""

    @abstractmethod
    async def _queued_by_tenant(self, lane: str, limit: int) -> list[tuple[str, int]]: ...


class CombinedBacklogBase(BacklogBase):
    """A :class:`BacklogBase` that also writes outcomes and claims in one transaction
    (:class:`~scheduler.backlog.base.CompletesAndClaims`), over ``_complete_and_claim``."""

    async def complete_and_claim(
        self,
        outcomes: Sequence[Outcome],
        lane: str,
        limit: int,
        *,
        owner: str,
        lease_seconds: float,
        now: float,
        max_running: int | None = None,
        tenants: FairPolicy | None = None,
    ) -> tuple[int, list[JobRecord]]:
        """``complete(outcomes, now=now)`` then ``claim(...)``, atomically."""
        self._check_open()
        claim = ClaimArgs(lane, limit, owner, lease_seconds, now, max_running, tenants)
        if not may_claim(limit, max_running):
            return await self.complete(outcomes, now=now), []
        if not outcomes:
            return 0, await self._take(claim)
        applied, records = await self._complete_and_claim(outcomes, claim)
        self._count_outcomes(len(outcomes), applied)
        self._counters.claimed += len(records)
        return applied, records

    @abstractmethod
    async def _complete_and_claim(
        self, outcomes: Sequence[Outcome], claim: ClaimArgs
    ) -> tuple[int, list[JobRecord]]:
        """``_complete(outcomes)`` (not empty) then ``_claim(claim)``, in one transaction."""
