"""Draining a durable lane from the backlog.

One :class:`DurableRunner` per durable lane run in this process::

    seats free? ──> reserve them ──> claim up to that many due jobs (one call)
        ^                                   │ none due: wait for a local submit,
        │                                   │ a freed seat, or the poll interval
        │                                   v
        └── seat released <── run each job in its own task under the lane's
                               ceiling ──> outcome queued ──> complete() in batches

Claims and completions are batched (one backlog call for many jobs), leases
are extended by a heartbeat, and at shutdown the leases of jobs that did not
finish are released so another worker picks them up at once. Failed attempts
are retried per the task's :class:`RetryPolicy` through a persisted
``run_at``; after the last attempt the job is ``DEAD`` with its error and
traceback. Waiting behind a closed gate never uses up an attempt: nothing is
claimed while the lane cannot run it.
"""

from __future__ import annotations

import asyncio
import heapq
import os
import socket
import traceback
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, cast

from .backlog import Backlog, JobRecord, Outcome
from .backlog.base import CANCEL_POLL, CompletesAndClaims, PushesCancels, WaitsForWork
from .classify import Classified, classify
from .errors import BacklogError, JobCancelled
from .lanes import LaneState, Ticket
from .logs import get_logger
from .retry import RetryPolicy
from .seats import Seats
from .task_group import TaskGroup
from .tasks import Task, encode_result
from .upstream import Permit, UpstreamHealth

__all__ = ["BacklogOptions", "DurableRunner", "new_owner_id"]

_log = get_logger()

#: seconds between purges of finished rows past their retention
_PURGE_EVERY = 300.0
#: seconds a retry waits at least when its upstream's retry budget is spent
_BUDGET_WAIT = 1.0
#: job ids named in ``backlog.outcomes_unsaved`` (the count is always complete)
_UNSAVED_IDS_SHOWN = 20
#: seconds between looks at a fleet share's paced room while it is full
_PACED_RECHECK = 0.05
#: a claim for a fleet share's next turn goes this many seconds before it is due ...
_PACED_LEAD = 0.05
#: ... and waits at least this long between looks
_PACED_MIN_WAIT = 0.002
#: the ``cancel_reason`` of a job whose cancel was requested (``sched.cancel``)
CANCEL_REASON = "cancelled on request"
#: seconds between looks for cancel requests on a backend that pushes them (PostgreSQL
#: NOTIFY): a safety net for a notification lost while its listener reconnected
_CANCEL_POLL_PUSHED = 5.0
#: seconds before the first look again after a claim found nothing, when the one
#: before found work (doubling up to ``poll_interval``)
_RECHECK_AFTER_WORK = 0.05
#: due times (jobs submitted or retried here with a later ``run_at``) a runner keeps
#: to wake for; beyond it the latest half are forgotten (the lane's poll finds them)
_MAX_DUES = 1024
#: seconds past a due time the claim is made at, so its ``now`` has reached ``run_at``
_DUE_SLACK = 0.001


class DueTimes:
    """Wall times at which jobs fall due, earliest first (a heap), at most
    :data:`_MAX_DUES`: beyond that the latest half are forgotten."""

    __slots__ = ("_heap",)

    def __init__(self) -> None:
        self._heap: list[float] = []

    def __len__(self) -> int:
        return len(self._heap)

    def add(self, when: float) -> None:
        heapq.heappush(self._heap, when)
        if len(self._heap) > _MAX_DUES:
            self._heap = heapq.nsmallest(_MAX_DUES // 2, self._heap)  # sorted: a heap

    def next_after(self, moment: float) -> float | None:
        """The earliest due time later than ``moment`` (those up to it are dropped)."""
        heap = self._heap
        while heap and heap[0] <= moment:
            heapq.heappop(heap)
        return heap[0] if heap else None


@dataclass(frozen=True, slots=True, kw_only=True)
class BacklogOptions:
    """How durable lanes use the backlog.

    Args:
        lease: seconds a claimed job is lent to this process; if the process
            dies, other workers reclaim the job this long after its last heartbeat.
        heartbeat: seconds between lease extensions (default ``lease / 3``).
        poll_interval: how often an idle lane looks for work submitted by
            other processes (local submits wake it at once, and so does a
            PostgreSQL ``NOTIFY``; a job submitted or retried here to run later
            wakes it when it falls due).
        claim_batch: most jobs claimed in one backlog call.
        retention: seconds a finished (``DONE``) job is kept before it is purged.
        synchronous: SQLite ``synchronous``: ``"NORMAL"`` (WAL; survives a
            process crash or ``kill -9``) or ``"FULL"`` (also survives power loss).
        busy_timeout: seconds SQLite waits for another process's write lock.
        inline_writes: let small SQLite writes (a claim, outcomes, a group commit
            of at most 128 rows) run on the event loop's thread while the
            connection's thread is idle; they never wait for a lock, but a
            write that stalls in the OS (a slow or network disk) stalls the
            loop with it. ``False`` keeps every statement on the connection's
            thread (slower: see ``docs/benchmarks.md#inline-writes``).
    """

    lease: float = 15.0
    heartbeat: float | None = None
    poll_interval: float = 0.5
    claim_batch: int = 256
    retention: float = 7 * 86400.0
    synchronous: Literal["NORMAL", "FULL"] = "NORMAL"
    busy_timeout: float = 5.0
    inline_writes: bool = True

    def __post_init__(self) -> None:
        from ._validate import check_int, check_number

        check_number("lease", self.lease, minimum=0, exclusive=True)
        if self.heartbeat is not None:
            check_number("heartbeat", self.heartbeat, minimum=0, exclusive=True, maximum=self.lease)
        check_number("poll_interval", self.poll_interval, minimum=0, exclusive=True)
        check_int("claim_batch", self.claim_batch, minimum=1)
        check_number("retention", self.retention, minimum=0)
        check_number("busy_timeout", self.busy_timeout, minimum=0)
        if not isinstance(self.inline_writes, bool):
            raise TypeError(f"inline_writes must be a bool, got {self.inline_writes!r}")

    @property
    def heartbeat_interval(self) -> float:
        return self.heartbeat if self.heartbeat is not None else self.lease / 3


def new_owner_id() -> str:
    """A lease owner id unique to this process: host, pid and a random part."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class DurableRunner:
    """Claims, runs and completes the jobs of one durable lane in this process."""

    def __init__(
        self,
        seats: Seats,
        lane: LaneState,
        backlog: Backlog,
        owner: str,
        options: BacklogOptions,
        on_finished: Callable[[list[str]], None],
        *,
        tasks: Mapping[str, Task[Any, Any]],
        group: TaskGroup,
        purge: bool = False,
        count_queued: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        self._seats = seats
        self._clock = seats.clock
        self._gate = seats.gate
        self._registry = tasks  # the scheduler's tasks by name (registered before or after)
        self._group = group
        self.lane = lane
        self._backlog = backlog
        self._owner = owner
        self._options = options
        self._on_finished = on_finished
        self._purge = purge
        self._count_queued_fn = count_queued
        self._stopping = False
        self._wakeup: asyncio.Future[None] | None = None
        #: when jobs of this lane submitted or retried here fall due: an idle lane
        #: claims then, not at its next poll
        self._dues = DueTimes()
        #: the jobs claimed here and not yet ended, by job id (their leases are ours)
        self._tickets: dict[str, Ticket] = {}
        self._unsubscribe: Callable[[], None] | None = None
        self._outcomes: list[Outcome] = []
        self._to_release: list[str] = []
        self._flushed = asyncio.Event()
        self._flush_wanted = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False  # the flush loop ends after its current flush
        self._giving_up = False  # failed writes are no longer retried
        self._backoff: asyncio.Future[None] | None = None
        self._write_error = ""
        # protocol checks once (a runtime_checkable isinstance is slow per claim)
        self._combines = isinstance(backlog, CompletesAndClaims)
        self._notifies = isinstance(backlog, WaitsForWork)

    # -- lifecycle ------------------------------------------------------------------

    def start(self) -> None:
        group, lane = self._group, self.lane.name
        self._tasks = [
            group.start(self._claim_loop(), name=f"floodgate-claim-{lane}"),
            group.start(self._flush_loop(), name=f"floodgate-complete-{lane}"),
            group.start(self._heartbeat_loop(), name=f"floodgate-lease-{lane}"),
            group.start(self._cancel_loop(), name=f"floodgate-cancel-{lane}"),
        ]
        if isinstance(self._backlog, PushesCancels):
            self._unsubscribe = self._backlog.on_cancel(self.cancel_local)

    def stop_claiming(self) -> None:
        self._stopping = True
        self.wake()

    async def close(self, give_up_at: float | None = None) -> None:
        """After every job here has ended: write outcomes, release leases, stop loops.

        Failed writes are retried until ``give_up_at`` (the scheduler's clock;
        ``None``: for ever) or :meth:`give_up`, each tried at least once. What
        is still unwritten then is logged once (``backlog.outcomes_unsaved``)
        and left to the leases: those jobs are claimed and run again later.
        """
        self.stop_claiming()
        timer = None
        if give_up_at is not None:
            timer = self._clock.call_at(give_up_at, self.give_up)
        try:
            # the claim loop ends on stop_claiming (one that crashed is the group's news)
            await asyncio.gather(*self._tasks[:1], return_exceptions=True)
            self._closing = True
            self._flush_wanted.set()
            # the flush loop writes what is left and ends (not cancelled mid-write)
            flusher = self._tasks[1:2]
            await asyncio.gather(*flusher, return_exceptions=True)
            if any(task.cancelled() or task.exception() for task in flusher):
                await self._flush()  # the flush loop had died: write what it left
        finally:
            if timer is not None:
                timer.cancel()
            if self._unsubscribe is not None:
                self._unsubscribe()
                self._unsubscribe = None
            for task in self._tasks[1:]:
                task.cancel()
            await asyncio.gather(*self._tasks[1:], return_exceptions=True)
        self._log_unsaved()

    def give_up(self) -> None:
        """Stop retrying failed backlog writes (the shutdown grace is over)."""
        self._giving_up = True
        backoff = self._backoff
        if backoff is not None and not backoff.done():
            backoff.set_result(None)

    def wake(self) -> None:
        waiter = self._wakeup
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def due_at(self, when: float) -> None:
        """A job of this lane falls due at wall time ``when`` (submitted or retried in
        this process with a later ``run_at``): claim then, not at the next poll.
        Jobs due later that other processes stored are found by the poll."""
        self._dues.add(when)
        self.wake()  # an idle claim loop looks at the new due time

    def _next_due_in(self, claimed_at: float) -> float | None:
        """Seconds until the earliest due time later than ``claimed_at`` (the wall time
        a claim was made at: jobs due by then were claimable), ``None`` if none."""
        due = self._dues.next_after(claimed_at)
        if due is None:
            return None
        return max(0.0, due - self._clock.wall()) + _DUE_SLACK

    async def _sleep(self, seconds: float | None) -> None:
        """Wait for :meth:`wake` or ``seconds`` of the scheduler's clock."""
        loop = asyncio.get_running_loop()
        self._wakeup = waiter = loop.create_future()
        handle = None
        if seconds is not None:
            handle = self._clock.call_at(self._clock.now() + seconds, self.wake)
        try:
            await waiter
        finally:
            self._wakeup = None
            if handle is not None:
                handle.cancel()

    # -- claiming -------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        seats, clock, lane, options = self._seats, self._clock, self.lane, self._options
        failures = 0
        recheck = options.poll_interval  # after an empty claim: see below
        while not self._stopping:
            room = self._pacing_room()
            if room == 0:  # the fleet's seats go to processes whose slice is free
                await self._sleep(self._until_paced_room())
                continue
            most = options.claim_batch if room is None else min(options.claim_batch, room)
            tickets = seats.reserve(lane, most)
            if not tickets:
                await self._sleep(None)  # a seat frees, the gate opens, or we stop
                continue
            outcomes = self._take_outcomes()
            claimed_at = clock.wall()
            try:
                records = await self._claim(len(tickets), outcomes)
            except BacklogError as exc:
                self._put_back(outcomes)
                for ticket in tickets:
                    seats.release(lane, ticket)
                failures += 1
                delay = min(options.poll_interval * 2**failures, 30.0)
                _log.warning("backlog.claim_failed", lane=lane.name, error=str(exc), retry_in=delay)
                if not self._stopping:  # stopping: the flush writes the outcomes
                    await self._sleep(delay)
                continue
            except BaseException:
                self._put_back(outcomes)  # cancelled: rewriting one that landed is ignored
                raise
            failures = 0
            if outcomes:
                self._written(outcomes, [])
            lane.backlog_queued = max(0, lane.backlog_queued - len(records))
            for ticket in tickets[len(records) :]:
                seats.release(lane, ticket)
            for record, ticket in zip(records, tickets, strict=False):
                self._start_job(record, ticket)
            if records:
                recheck = min(_RECHECK_AFTER_WORK, options.poll_interval)
            else:
                # work was flowing a moment ago: the claim came back empty most likely
                # because the lane's ceiling is full across processes (their leases
                # end within moments), so look again soon, backing off to the poll
                idle_from = clock.now()
                due_in = self._next_due_in(claimed_at)
                await self._idle(recheck if due_in is None else min(recheck, due_in))
                if clock.now() - idle_from >= recheck:  # not woken early
                    recheck = min(recheck * 2, options.poll_interval)

    def _pacing_room(self) -> int | None:
        """Most jobs worth claiming now for the lane's upstreams' paced slices
        (``None``: no such limit; see :meth:`UpstreamHealth.pacing_room`)."""
        rooms = [
            room
            for name in self.lane.upstreams
            if (room := self._gate.upstream(name).pacing_room()) is not None
        ]
        return min(rooms) if rooms else None

    def _until_paced_room(self) -> float:
        """Seconds to wait before looking at the paced room again: until the next
        turn of the slowest of the lane's upstreams is near, at most
        ``_PACED_RECHECK`` (a seat frees or the slice grows meanwhile)."""
        gate = self._gate
        wait = max((gate.upstream(name).next_turn_in() for name in self.lane.upstreams), default=0)
        return min(_PACED_RECHECK, max(_PACED_MIN_WAIT, wait - _PACED_LEAD))

    def _take_outcomes(self) -> list[Outcome]:
        """The queued outcomes, to be written with the next claim (one commit for
        both), when the backlog can do that; taken off the shared list, so the
        flush loop never writes them too."""
        if not self._outcomes or not self._combines:
            return []
        outcomes, self._outcomes = self._outcomes, []
        return outcomes

    async def _claim(self, seats: int, outcomes: list[Outcome]) -> list[JobRecord]:
        """Claim up to ``seats`` jobs, writing ``outcomes`` in the same transaction."""
        lane, options = self.lane, self._options
        now = self._clock.wall()
        # the lane's ceiling across processes: the backlog counts the other processes'
        # leases, our seats count ours (a finished job still holds its lease in the
        # backlog until its outcome is written)
        max_running = lane.max_concurrency - (lane.running - seats)
        if outcomes:
            backlog = cast(CompletesAndClaims, self._backlog)  # _take_outcomes checked
            _, records = await backlog.complete_and_claim(
                outcomes,
                lane.name,
                seats,
                owner=self._owner,
                lease_seconds=options.lease,
                now=now,
                max_running=max_running,
                tenants=lane.config.tenants,
            )
            return records
        return await self._backlog.claim(
            lane.name,
            seats,
            owner=self._owner,
            lease_seconds=options.lease,
            now=now,
            max_running=max_running,
            tenants=lane.config.tenants,
        )

    async def _idle(self, seconds: float) -> None:
        """:meth:`_sleep`, also woken by the backlog's news of work (PostgreSQL NOTIFY)."""
        backlog = self._backlog
        if not self._notifies or not isinstance(backlog, WaitsForWork):
            await self._sleep(seconds)
            return
        notified = asyncio.ensure_future(backlog.wait_for_work(self.lane.name, seconds))

        def woken(task: asyncio.Future[None]) -> None:
            if not task.cancelled() and task.exception() is None:
                self.wake()

        notified.add_done_callback(woken)
        try:
            await self._sleep(seconds)
        finally:
            notified.cancel()

    def _start_job(self, record: JobRecord, ticket: Ticket) -> None:
        job_id = record.id
        tickets = self._tickets
        tickets[job_id] = ticket

        def forget(_: asyncio.Task[None]) -> None:
            tickets.pop(job_id, None)

        self._group.start(
            self._execute(record, ticket), name=f"floodgate-job-{job_id}", on_done=forget
        )

    # -- running --------------------------------------------------------------------

    async def _execute(self, record: JobRecord, ticket: Ticket) -> None:
        seats = self._seats
        clock = self._clock
        # set here, not when the task is made: a task cancelled before its first step
        # never runs this body, so its seat and lease would never be given back
        ticket.task = asyncio.current_task()
        ticket.job_id = record.id
        ticket.attempt = record.attempts
        ticket.priority = record.priority
        ticket.trace = record.trace
        seats.name_tenant(ticket, record.tenant)  # the seat was taken before the claim
        waited = max(0.0, clock.wall() - record.run_at)
        ticket.admitted_at = clock.now() - waited
        if ticket.cancel_reason == CANCEL_REASON:  # cancelled before it began
            seats.release_unstarted(ticket)
            self._finish(Outcome.cancelled(record.id, self._owner, attempt=record.attempts))
            return
        task = self._registry.get(record.task)
        if task is None:
            known = ", ".join(sorted(self._registry)) or "none"
            self._end_unrun(
                record, ticket, f"unknown task {record.task!r} (registered here: {known})"
            )
            return
        if record.deadline_at is not None and clock.wall() > record.deadline_at:
            self._end_unrun(record, ticket, "deadline passed before the job started")
            return
        args = tuple(record.args)
        health = None
        if task.upstream is not None:
            health = self._gate.upstream(task.upstream)
            ticket.upstream = task.upstream
            cost = record.cost if record.cost is not None else task.cost_of(args)
            permit = await self._permit(health, ticket, cost)
            if permit is None:
                # the upstream went down between claim and start: not an attempt
                seats.release_unstarted(ticket)
                self._defer(record.id)
                return
            ticket.permit = permit
            if record.attempts == 1:
                health.retry_budget.record_request()
        trial = ticket.permit is not None and ticket.permit.trial
        try:
            result = await seats.run(ticket, task.fn, args, task.timeout)
        except JobCancelled:
            if ticket.cancel_reason == CANCEL_REASON:
                _log.info("job.cancelled", job_id=record.id, lane=self.lane.name, was="running")
                self._finish(Outcome.cancelled(record.id, self._owner, attempt=record.attempts))
            else:
                self._defer(record.id)  # shutdown: another worker runs it
            return
        except Exception as exc:
            verdict = classify(exc, now=clock.wall())
            if trial and verdict.upstream_fault:
                # a failed probe of a recovering upstream says nothing about the
                # job: give the attempt back; the reopened breaker holds it
                self._defer(record.id)
                return
            outcome = self._failure(record, task.retry, exc, verdict, health)
            if outcome.kind == "dead" and task.fallback is not None and verdict.retryable:
                await self._run_fallback(record, task.fallback, args)
                return
            self._finish(outcome)
            return
        try:
            outcome = Outcome.done(
                record.id, self._owner, encode_result(result), attempt=record.attempts
            )
        except TypeError as exc:
            outcome = Outcome.dead(record.id, self._owner, error=str(exc), attempt=record.attempts)
        self._finish(outcome)

    async def _permit(self, health: UpstreamHealth, ticket: Ticket, cost: float) -> Permit | None:
        """The upstream's permit for this attempt. Pacing (the learned rate, the
        RPM/TPM buckets, rate-limit headers) is waited out here, holding the seat;
        anything else (breaker, Retry-After, probe, error rate) gives ``None``."""
        try:
            got = await health.paced_permit(cost=cost, give_up=lambda: self._stopping)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if ticket.cancel_reason is not None and task is not None:
                task.uncancel()  # the scheduler stops: give the job back unrun
                return None
            raise
        return got if isinstance(got, Permit) else None

    def _end_unrun(self, record: JobRecord, ticket: Ticket, error: str) -> None:
        """The job cannot run here at all: give its seat back, end it ``DEAD``."""
        self._seats.release(self.lane, ticket)
        self._finish(Outcome.dead(record.id, self._owner, error=error, attempt=record.attempts))

    def _defer(self, job_id: str) -> None:
        """Give the job back unrun (its attempt is returned)."""
        self._to_release.append(job_id)
        self._flush_wanted.set()

    async def _run_fallback(
        self, record: JobRecord, fallback: Callable[..., Any], args: tuple[Any, ...]
    ) -> None:
        """Retries spent: the fallback's answer becomes the job's result."""
        self.lane.fallbacks += 1
        _log.info("job.fallback", job_id=record.id, task=record.task)
        try:
            result = await fallback(*args)
            outcome = Outcome.done(
                record.id, self._owner, encode_result(result), attempt=record.attempts
            )
        except Exception as exc:
            outcome = Outcome.dead(
                record.id,
                self._owner,
                error=f"fallback failed: {type(exc).__name__}: {exc}",
                traceback="".join(traceback.format_exception(exc)),
                attempt=record.attempts,
            )
        self._finish(outcome)

    def _failure(
        self,
        record: JobRecord,
        policy: RetryPolicy,
        exc: Exception,
        verdict: Classified,
        health: UpstreamHealth | None,
    ) -> Outcome:
        error = f"{type(exc).__name__}: {exc}"
        trace = "".join(traceback.format_exception(exc))
        if verdict.retryable and record.attempts < record.max_attempts:
            delay = policy.delay(record.attempts, retry_after=verdict.retry_after)
            if health is not None and not health.retry_budget.try_acquire_retry():
                # the upstream's retry budget is spent: wait longer, never hammer it
                delay = max(delay, _BUDGET_WAIT)
            run_at = self._clock.wall() + delay
            _log.info(
                "job.retry",
                job_id=record.id,
                task=record.task,
                attempt=record.attempts,
                delay=delay,
                error=error,
            )
            return Outcome.retry(
                record.id,
                self._owner,
                run_at=run_at,
                error=error,
                traceback=trace,
                attempt=record.attempts,
            )
        _log.warning("job.dead", job_id=record.id, attempts=record.attempts, error=error)
        return Outcome.dead(
            record.id, self._owner, error=error, traceback=trace, attempt=record.attempts
        )

    def _finish(self, outcome: Outcome) -> None:
        self._outcomes.append(outcome)
        self._flush_wanted.set()

    # -- writing outcomes -----------------------------------------------------------

    async def _flush_loop(self) -> None:
        while not self._closing:
            await self._flush_wanted.wait()
            # cleared here, not only in _flush: the claim loop may have taken the
            # outcomes that set it, and a set event with nothing to write would spin
            self._flush_wanted.clear()
            await self._flush()

    async def _flush(self) -> None:
        """Write every queued outcome and lease release; retry on backlog errors
        (after :meth:`give_up`, a failed write is left queued and not retried)."""
        failures = 0
        while self._outcomes or self._to_release:
            self._flush_wanted.clear()
            outcomes, self._outcomes = self._outcomes, []
            releases, self._to_release = self._to_release, []
            now = self._clock.wall()
            try:
                if outcomes:
                    await self._backlog.complete(outcomes, now=now)
                    self._written(outcomes, [])
                    outcomes = []
                if releases:
                    await self._backlog.release(releases, owner=self._owner, now=now)
            except BacklogError as exc:
                self._outcomes[:0] = outcomes
                self._to_release[:0] = releases
                self._write_error = str(exc)
                if self._giving_up:
                    return
                failures += 1
                delay = min(0.05 * 2**failures, 5.0)
                _log.warning("backlog.complete_failed", error=str(exc), retry_in=delay)
                await self._sleep_before_retry(delay)
                continue
            failures = 0
            self._written(outcomes, releases)

    async def _sleep_before_retry(self, seconds: float) -> None:
        """``seconds`` of the scheduler's clock, cut short by :meth:`give_up`."""
        if self._giving_up:
            return
        self._backoff = waiter = asyncio.get_running_loop().create_future()

        def due() -> None:
            if not waiter.done():
                waiter.set_result(None)

        handle = self._clock.call_at(self._clock.now() + seconds, due)
        try:
            await waiter
        finally:
            handle.cancel()
            self._backoff = None

    def _log_unsaved(self) -> None:
        """Once, at close: the outcomes and lease releases the backlog never took."""
        outcomes, self._outcomes = self._outcomes, []
        releases, self._to_release = self._to_release, []
        if not outcomes and not releases:
            return
        ids = [o.job_id for o in outcomes] + releases
        _log.error(
            "backlog.outcomes_unsaved",
            lane=self.lane.name,
            count=len(ids),
            outcomes=len(outcomes),
            releases=len(releases),
            job_ids=ids[:_UNSAVED_IDS_SHOWN],
            truncated=len(ids) > _UNSAVED_IDS_SHOWN,
            error=self._write_error,
            consequence="these jobs run again once their leases expire",
        )

    def _written(self, outcomes: list[Outcome], releases: list[str]) -> None:
        """Bookkeeping once ``outcomes`` and ``releases`` are in the backlog."""
        # retried and released jobs wait in the backlog again
        self.lane.backlog_queued += len(releases) + sum(o.kind == "retry" for o in outcomes)
        if outcomes:
            self._on_finished([o.job_id for o in outcomes])
            retries = [o.run_at for o in outcomes if o.kind == "retry" and o.run_at is not None]
            for when in retries:  # their backoffs end then: claim them on time
                self._dues.add(when)
            if retries:
                self.wake()

    def _put_back(self, outcomes: list[Outcome]) -> None:
        """Outcomes a failed claim did not write: first in line for the flush loop."""
        if outcomes:
            self._outcomes[:0] = outcomes
            self._flush_wanted.set()

    # -- leases ---------------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        """Extend the leases of running jobs; now and then purge old finished rows."""
        options, clock = self._options, self._clock
        next_purge = clock.now()
        while True:
            await clock.sleep(options.heartbeat_interval)
            try:
                ids = list(self._tickets)
                if ids:
                    await self._backlog.heartbeat(
                        ids, owner=self._owner, lease_seconds=options.lease, now=clock.wall()
                    )
                await self._count_queued()
                if self._purge and clock.now() >= next_purge:
                    next_purge = clock.now() + _PURGE_EVERY
                    purged = await self._backlog.purge(clock.wall() - options.retention)
                    if purged:
                        _log.info("backlog.purged", jobs=purged)
            except BacklogError as exc:
                _log.warning("backlog.heartbeat_failed", lane=self.lane.name, error=str(exc))

    async def _count_queued(self) -> None:
        """Correct the lane's cached queued count (other processes submit too)."""
        if self._count_queued_fn is not None:
            await self._count_queued_fn()

    def running_job_ids(self) -> list[str]:
        return list(self._tickets)

    # -- cancellation ---------------------------------------------------------------

    def cancel_local(self, job_id: str) -> bool:
        """Cancel the job's task if it runs here (its outcome becomes ``CANCELLED``)."""
        ticket = self._tickets.get(job_id)
        if ticket is None or ticket.cancel_reason is not None:
            return False
        if ticket.task is None:  # claimed, not begun: _execute ends it unrun
            ticket.cancel_reason = CANCEL_REASON
        else:
            ticket.cancel_task(CANCEL_REASON)
        return True

    async def _cancel_loop(self) -> None:
        """While jobs run here, look for cancel requests from other processes: every
        :data:`CANCEL_POLL` seconds (one read by id), or rarely where the backlog
        pushes them (PostgreSQL NOTIFY), as a safety net."""
        pushed = isinstance(self._backlog, PushesCancels)
        interval = _CANCEL_POLL_PUSHED if pushed else CANCEL_POLL
        clock = self._clock
        while True:
            await clock.sleep(interval)
            try:
                await self.check_cancels()
            except BacklogError as exc:
                _log.warning("backlog.cancel_poll_failed", lane=self.lane.name, error=str(exc))

    async def check_cancels(self) -> None:
        """Cancel the jobs running here whose cancel was requested."""
        ids = [i for i, t in self._tickets.items() if t.cancel_reason is None]
        if ids:
            for job_id in await self._backlog.cancel_requested(ids):
                self.cancel_local(job_id)
