"""Submitting durable jobs and finding them again.

The scheduler's ``submit``, ``job``, ``jobs`` and ``requeue`` land here. A
submit validates everything before a row is written (JSON args, a known
durable lane), then stores the job through the backlog's group commit, which
enforces the lane's ``max_queued`` for the backlog as a whole (every process),
and returns a :class:`Job` once the row is durable.

Waiting for a job's end needs no polling inside one process (the runner
that completes it wakes the waiters); across processes it polls the backlog
with backoff from 10 ms to 1 s.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, NamedTuple, Protocol

from ._validate import check_number
from .backlog import Backlog, JobRecord, NewJob
from .backlog._run_stream import CHUNK, STREAM_MIN
from .backlog.base import StreamsRuns, SubmitsRuns, job_rank, with_args
from .clock import Clock
from .errors import ConfigError, Overloaded, UnknownJob
from .jobs import Job, JobState, _JobWaiter
from .lanes import TOP_TENANTS, LaneState, check_tenant
from .logs import get_logger
from .tasks import Task, encode_args
from .tracing import Tracing

__all__ = ["JobStore"]

_log = get_logger()

#: how long a durable lane's cached queued count is trusted (seconds)
_COUNT_TTL = 1.0


class _Runner(Protocol):
    """What a store asks of the lanes' runners here (:class:`~scheduler.durable.DurableRunner`)."""

    def cancel_local(self, job_id: str) -> bool: ...

    async def check_cancels(self) -> None: ...


class JobStore:
    """Durable submissions and look-ups on one open backlog.

    ``owner`` answers the jobs' ``result()`` and ``cancel()`` (the scheduler);
    ``runners`` gives the lanes' runners in this process (a cancel reaches their
    jobs at once); ``wake(lane)`` tells a lane's runner that work arrived.
    """

    def __init__(
        self,
        backlog: Backlog,
        wake: Callable[[str, float | None], None],
        *,
        owner: _JobWaiter,
        clock: Clock,
        lanes: Mapping[str, LaneState],
        tracing: Tracing,
        runners: Callable[[], Iterable[_Runner]],
    ) -> None:
        self.backlog = backlog
        #: the backlog's ``submit_run``, looked up once (a protocol check costs a few µs)
        self._runs = backlog if isinstance(backlog, SubmitsRuns) else None
        self._streams = backlog if isinstance(backlog, StreamsRuns) else None
        self._owner = owner
        self._clock = clock
        self._lanes = lanes
        self._tracing = tracing
        self._runners = runners
        self._wake = wake
        self._waiters: dict[str, set[asyncio.Future[None]]] = {}
        self._counted_at: dict[str, float] = {}
        self._counting: dict[str, asyncio.Future[int]] = {}

    # -- submit ---------------------------------------------------------------------

    async def submit(
        self,
        task: Task[Any, Any],
        lane: LaneState,
        args: tuple[Any, ...],
        *,
        priority: float,
        key: str | None,
        run_at: float | datetime | None,
        delay: float | None,
        deadline: float | None,
        cost: float | None = None,
        tenant: str | None = None,
    ) -> Job:
        text = encode_args(args)
        _check_key(key, "key")
        shared = _Shared(priority, run_at, delay, deadline, cost, tenant)
        items = list(args)
        job, due, now = self._template(task, lane, shared, text, items, key)
        if key is None and not self._roomy(lane, 1):  # a stored key needs no room
            await self._check_room(lane, 1)
        try:
            [record] = await self.backlog.submit([job], now=now)
        except Overloaded as exc:
            raise self._refused(lane, exc, 1) from None
        self._stored(lane, 1, due, now)
        return self.job_from(record)

    async def submit_many(
        self,
        task: Task[Any, Any],
        lane: LaneState,
        args_list: Sequence[Sequence[Any]],
        keys: Sequence[str | None] | None,
        *,
        priority: float,
        run_at: float | datetime | None,
        delay: float | None,
        deadline: float | None,
        cost: float | None = None,
        tenant: str | None = None,
    ) -> list[Job]:
        """Store one job per item of ``args_list`` in one backlog call (one transaction):
        all of them or, when they do not fit the lane's ``max_queued``, none."""
        if isinstance(args_list, str | bytes) or not isinstance(args_list, Sequence):
            raise TypeError(
                f"args_list must be a list of argument lists, got {type(args_list).__name__}"
            )
        if keys is None and len(args_list) >= STREAM_MIN and self._streams is not None:
            shared = _Shared(priority, run_at, delay, deadline, cost, tenant)
            return await self._stream(self._streams, task, lane, args_list, shared)
        items = [_item(i, item) for i, item in enumerate(args_list)]
        texts = [_encode_item(i, item) for i, item in enumerate(items)]
        if keys is None:
            key_list: list[str | None] = [None] * len(texts)
        else:
            if isinstance(keys, str | bytes) or not isinstance(keys, Sequence):
                raise TypeError(f"keys must be a list of str or None, got {type(keys).__name__}")
            if len(keys) != len(texts):
                raise ValueError(f"keys has {len(keys)} items, args_list {len(texts)}")
            key_list = list(keys)
            for i, key in enumerate(key_list):
                _check_key(key, f"keys[{i}]")
        if not texts:
            return []
        shared = _Shared(priority, run_at, delay, deadline, cost, tenant)
        return await self._store(task, lane, items, texts, key_list, shared)

    async def _store(
        self,
        task: Task[Any, Any],
        lane: LaneState,
        items: list[list[Any]],
        texts: list[str],
        keys: list[str | None],
        shared: _Shared,
    ) -> list[Job]:
        """Validate the options shared by the jobs, check the room, store them at once."""
        unkeyed = keys.count(None)
        template, due, now = self._template(task, lane, shared)
        if unkeyed:  # a stored key needs no room: the backlog gives its job back
            await self._check_room(lane, unkeyed)
        if unkeyed > 1 and unkeyed == len(keys) and self._runs is not None:
            try:
                ids = await self._runs.submit_run(template, texts, items, now=now)
            except Overloaded as exc:
                raise self._refused(lane, exc, len(texts)) from None
            self._stored(lane, len(ids), due, now)
            return [self._queued_job(template, job_id, now) for job_id in ids]
        new = [
            with_args(template, text, item, key)
            for item, text, key in zip(items, texts, keys, strict=True)
        ]
        try:
            records = await self.backlog.submit(new, now=now)
        except Overloaded as exc:
            raise self._refused(lane, exc, len(new)) from None
        self._stored(lane, len(records), due, now)
        return [self.job_from(record) for record in records]

    async def _stream(
        self,
        backlog: StreamsRuns,
        task: Task[Any, Any],
        lane: LaneState,
        args_list: Sequence[Sequence[Any]],
        shared: _Shared,
    ) -> list[Job]:
        """A big keyless ``submit_many``: each chunk of items is encoded and handed to
        the backlog, which inserts it while the next is encoded (``_run_stream``); a
        bad item aborts the run, so still none of the jobs is stored."""
        count = len(args_list)
        template, due, now = self._template(task, lane, shared)
        await self._check_room(lane, count)
        writer = backlog.open_run(template, count, now=now)
        jobs: list[Job] = []
        try:
            for start in range(0, count, CHUNK):
                part = args_list[start : start + CHUNK]
                texts = [_item_text(i, item) for i, item in enumerate(part, start)]
                jobs += [self._queued_job(template, job_id, now) for job_id in writer.add(texts)]
                if start == 0:  # the backlog inserts each chunk while the next is encoded
                    await writer.started()
                await asyncio.sleep(0)
        except BaseException as exc:
            writer.abort(f"submit_many gave up: {type(exc).__name__}")
            raise
        try:
            await writer.finish()
        except Overloaded as exc:
            raise self._refused(lane, exc, count) from None
        self._stored(lane, count, due, now)
        return jobs

    def _template(
        self,
        task: Task[Any, Any],
        lane: LaneState,
        shared: _Shared,
        args_json: str = "[]",
        args: list[Any] | None = None,
        key: str | None = None,
    ) -> tuple[NewJob, float, float]:
        """The options shared by the jobs, checked, as a template ``NewJob`` (with
        ``args_json``, ``args`` and ``key``: a single submit's own job), its due time
        and now. Positional, in ``NewJob``'s field order (tests pin it)."""
        priority, run_at, delay, deadline, cost, tenant = shared
        check_number("priority", priority, minimum=-math.inf)
        check_tenant(tenant)
        job_cost = None if cost is None else check_number("cost", cost, minimum=0)
        now = self._clock.wall()
        if run_at is not None and delay is not None:
            raise ConfigError("give run_at= or delay=, not both")
        if isinstance(run_at, datetime):
            if run_at.tzinfo is None:
                raise ConfigError("run_at must be timezone-aware (e.g. datetime.now(UTC))")
            due = run_at.timestamp()
        elif run_at is not None:
            due = check_number("run_at", run_at, minimum=0)
        else:
            due = now + (0.0 if delay is None else check_number("delay", delay, minimum=0))
        deadline_at = None
        if deadline is not None:
            deadline_at = due + check_number("deadline", deadline, minimum=0, exclusive=True)
        rank = job_rank(priority, due, lane.config.aging)
        tenant_bound = None if tenant is None else lane.tenant_max_queued
        template = NewJob(
            task.name, lane.name, args_json, float(priority), due, key,
            task.retry.max_attempts, deadline_at, job_cost, lane.max_queued, args, rank,
            tenant, tenant_bound, self._tracing.carrier(),
        )  # fmt: skip
        return template, due, now

    def _refused(self, lane: LaneState, exc: Overloaded, jobs: int) -> Overloaded:
        """The lane's ``Overloaded`` for the backlog's own (its count, across every
        process), counted as shed."""
        if exc.tenant is not None:  # the tenant's own bound
            lane.count_shed("tenant_queue_full", exc.tenant)
            return Overloaded(lane.name, lane.retry_after(), queued=exc.queued, tenant=exc.tenant)
        lane.count_shed("queue_full")
        lane.backlog_queued = max(lane.backlog_queued, exc.queued or 0)
        return self._full(lane, exc.queued, jobs)

    def _stored(self, lane: LaneState, jobs: int, due: float, now: float) -> None:
        lane.admitted += jobs
        lane.backlog_queued += jobs
        # the lane's runner here claims the jobs now or, due later, when they fall due
        self._wake(lane.name, due if due > now else None)

    def _queued_job(self, stored: NewJob, job_id: str, now: float) -> Job:
        """The job of a run just stored (as :meth:`job_from` its record would give);
        positional, as in :meth:`job_from`."""
        s = stored
        return Job(
            job_id, s.task, s.lane, JobState.QUEUED, 0, s.max_attempts, float(s.priority),
            float(s.run_at), now, now, None, None, None, None, self._owner, s.cost, s.tenant,
        )  # fmt: skip

    def _full(self, lane: LaneState, queued: int | None, jobs: int) -> Overloaded:
        """The lane's ``Overloaded``; for more than one job, saying none of them was stored."""
        exc = Overloaded(lane.name, lane.retry_after(), queued=queued)
        if jobs > 1:
            exc.args = (
                f"{exc.args[0]}: none of the {jobs:,} jobs was stored "
                f"(max_queued={lane.max_queued:,})",
            )
        return exc

    def _roomy(self, lane: LaneState, jobs: int) -> bool:
        """Whether ``jobs`` more surely fit the lane by a fresh cached count (the fast
        path of :meth:`_check_room`, with no coroutine of its own)."""
        fresh = self._clock.now() - self._counted_at.get(lane.name, -math.inf) < _COUNT_TTL
        return fresh and lane.backlog_queued + jobs <= lane.max_queued * 0.9

    async def _check_room(self, lane: LaneState, jobs: int = 1) -> None:
        """Refuse early when ``jobs`` more do not fit a durable lane by a cached count
        (refreshed at most once a second, and at once near the bound). The bound itself
        is enforced by the backlog, atomically with the insert (``NewJob.max_queued``)."""
        if self._roomy(lane, jobs):
            return
        bound = lane.max_queued
        count = await self.count(lane)
        if count + jobs > bound:
            lane.count_shed("queue_full")
            raise self._full(lane, count, jobs)

    async def count(self, lane: LaneState) -> int:
        """Single-flight count of a lane's queued jobs in the backlog."""
        pending = self._counting.get(lane.name)
        if pending is not None:
            return await asyncio.shield(pending)
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._counting[lane.name] = fut
        try:
            count = await self.backlog.queued_count(lane.name, limit=lane.max_queued)
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # retrieved: the waiters above re-raise it
            raise
        finally:
            self._counting.pop(lane.name, None)
        lane.backlog_queued = count
        self._counted_at[lane.name] = self._clock.now()
        fut.set_result(count)
        return count

    async def count_tenants(self, lane: LaneState) -> None:
        """Refresh the lane's busiest tenants in the backlog (for stats)."""
        found = await self.backlog.queued_by_tenant(lane.name, limit=TOP_TENANTS)
        lane.backlog_tenants = dict(found)

    async def refresh_counts(self, lanes: list[LaneState]) -> None:
        for lane in lanes:
            await self.count(lane)
            await self.count_tenants(lane)

    # -- look-ups -------------------------------------------------------------------

    def job_from(self, record: JobRecord) -> Job:
        r = record
        # positional, in ``Job``'s field order (a call by keyword costs 3x here: this
        # runs once per job submitted or looked up; tests pin the order)
        return Job(
            r.id, r.task, r.lane, r.state, r.attempts, r.max_attempts, r.priority, r.run_at,
            r.created_at, r.updated_at, r.key, r.error, r.traceback, r.result, self._owner,
            r.cost, r.tenant,
        )  # fmt: skip

    async def get(self, job_id: str) -> Job:
        if not isinstance(job_id, str):
            raise TypeError(f"job ids are str, got {type(job_id).__name__} {job_id!r}")
        record = await self.backlog.get(job_id)
        if record is None:
            raise UnknownJob(job_id)
        return self.job_from(record)

    async def wait(self, job_id: str, timeout: float | None) -> Job:
        """The job once it is DONE or DEAD (``timeout=0``: as it is now)."""
        if timeout is not None:
            check_number("timeout", timeout, minimum=0)
        clock = self._clock
        until = None if timeout is None else clock.now() + timeout
        poll = 0.01
        while True:
            job = await self.get(job_id)
            if job.state.terminal or timeout == 0:
                return job
            left = None if until is None else until - clock.now()
            if left is not None and left <= 0:
                raise TimeoutError(
                    f"job {job_id} is still {job.state.value} after {timeout}s (it keeps going)"
                )
            await self._wait_local(job_id, poll if left is None else min(poll, left))
            poll = min(poll * 2, 1.0)

    async def _wait_local(self, job_id: str, seconds: float) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiters = self._waiters.setdefault(job_id, set())
        waiters.add(fut)
        handle = self._clock.call_at(self._clock.now() + seconds, lambda: _resolve(fut))
        try:
            await fut
        finally:
            handle.cancel()
            waiters.discard(fut)
            if not waiters:
                self._waiters.pop(job_id, None)

    def finished(self, job_ids: list[str]) -> None:
        """Outcomes for these jobs are stored: wake whoever waits on them here."""
        for job_id in job_ids:
            for fut in self._waiters.get(job_id, ()):
                _resolve(fut)

    async def list(
        self, state: JobState | None, lane: str | None, limit: int, offset: int
    ) -> list[Job]:
        records = await self.backlog.list_jobs(state, lane, limit=limit, offset=offset)
        return [self.job_from(r) for r in records]

    async def cancel(self, job_id: str) -> bool:
        """Cancel one job (see ``Scheduler.cancel``); ``False`` if it had finished."""
        if not isinstance(job_id, str):
            raise TypeError(f"job ids are str, got {type(job_id).__name__} {job_id!r}")
        was = await self.backlog.cancel(job_id, now=self._clock.wall())
        if was is None:
            raise UnknownJob(job_id)
        if was is JobState.RUNNING:
            _log.info("job.cancel_requested", job_id=job_id)
            for runner in self._runners():  # it may run here: stop it now
                runner.cancel_local(job_id)
            return True
        if was is not JobState.QUEUED:
            return False
        record = await self.backlog.get(job_id)
        lane = None if record is None else self._lanes.get(record.lane)
        if lane is not None:
            lane.cancelled += 1
            lane.backlog_queued = max(0, lane.backlog_queued - 1)
        _log.info("job.cancelled", job_id=job_id, was="queued")
        self.finished([job_id])
        return True

    async def cancel_task(self, task: str | None, tenant: str | None = None) -> int:
        """Cancel every queued and running job of ``task`` and/or ``tenant``; how many
        were reached."""
        if task is None and tenant is None:
            raise TypeError("cancel_task() needs a task name, tenant=, or both")
        if task is not None and not isinstance(task, str):
            raise TypeError(f"task names are str, got {type(task).__name__} {task!r}")
        check_tenant(tenant)
        count = await self.backlog.cancel_task(task, now=self._clock.wall(), tenant=tenant)
        _log.info("job.cancelled_task", task=task, tenant=tenant, jobs=count)
        for runner in self._runners():  # those running here stop now
            await runner.check_cancels()
        self.finished(list(self._waiters))  # local waiters look again
        return count

    async def requeue(self, job_id: str | None, all_dead: bool, lane: str | None) -> int:
        count = await self.backlog.requeue(
            job_id, all_dead=all_dead, lane=lane, now=self._clock.wall()
        )
        if count:
            for name in self._lanes:
                self._wake(name, None)
        return count


class _Shared(NamedTuple):
    """The options every job of one call shares, as the caller gave them."""

    priority: float
    run_at: float | datetime | None
    delay: float | None
    deadline: float | None
    cost: float | None
    tenant: str | None


def _check_key(key: object, what: str) -> None:
    if key is not None and (not isinstance(key, str) or not key):
        raise TypeError(f"{what} must be a non-empty str or None, got {key!r}")


def _item(index: int, item: object) -> list[Any]:
    """One ``submit_many`` item (a list or tuple of positional args) as a new list;
    ``TypeError`` naming the item's index otherwise."""
    if not isinstance(item, list | tuple):
        raise _not_args(index, item)
    return list(item)


def _not_args(index: int, item: object) -> TypeError:
    return TypeError(
        f"args_list[{index}] must be a list or tuple of positional args, got {type(item).__name__}"
    )


def _item_text(index: int, item: object) -> str:
    """JSON text of one ``submit_many`` item (a list or tuple of positional args, not
    copied); ``TypeError`` naming the item's index otherwise."""
    if not isinstance(item, list | tuple):
        raise _not_args(index, item)
    return _encode_item(index, item)


def _encode_item(index: int, item: list[Any] | tuple[Any, ...]) -> str:
    """JSON text of one ``submit_many`` item; ``TypeError`` naming its index otherwise."""
    try:
        return encode_args(item)
    except TypeError as exc:
        raise TypeError(f"args_list[{index}]: {exc}") from None


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
