"""The Scheduler: lanes, admission, dispatch and lifecycle.

How a job moves::

    call() ── admission ──> seat free and nobody waiting? ──yes──> run in the caller's task
                 │                       │ no
                 │                       v
                 │            queue full? ── Overloaded(retry_after)
                 │            deadline < expected wait? ── DeadlineExceeded
                 │                       v
                 │            wait in the lane's heap ── (deadline passes) ── DeadlineExceeded
                 │                       │ a seat is handed over on release
                 v                       v
            SchedulerClosed           run ── release seat ── hand it to the next waiter

Jobs run in the caller's own task (no task is spawned per job). Seats are
handed directly from a finishing job to the next waiter, so a ceiling is
never exceeded, even briefly, and FIFO order among equals holds.

With a scheduler-wide ``max_concurrency``, each lane keeps ``Lane.reserved``
seats of it for itself and competes for the rest in lane order (the lane
listed first is the most urgent).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any, ParamSpec, TypeVar

from ._validate import check_int, check_number
from .backlog import Backlog, make_backlog
from .calls import call_with_policies
from .clock import Clock, SystemClock
from .durable import BacklogOptions, DurableRunner, new_owner_id
from .errors import (
    ConfigError,
    SchedulerClosed,
    SchedulerCrashed,
    UnknownLane,
    UnknownTask,
)
from .fleet import FleetStore, FleetSync
from .fleet_stores import PostgresFleetStore, fleet_store_for
from .gate import HealthGate
from .job_store import JobStore
from .jobs import Job, JobState
from .lanes import Lane, LaneState, check_tenant
from .logs import get_logger
from .metrics import SchedulerStats
from .periodic import MAX_CATCH_UP, PeriodicRunner, Schedule
from .retry import RetryPolicy
from .seats import LaneControl, Seats
from .task_group import TaskGroup, cancel_and_wait
from .tasks import DEFAULT_RETRY, Task, check_task_function, task_name
from .tracing import Tracing
from .upstream import Upstream

__all__ = ["DEFAULT_LANES", "Scheduler"]

T = TypeVar("T")
P = ParamSpec("P")

DEFAULT_LANES: tuple[Lane, ...] = (
    Lane("interactive", max_concurrency=16, max_queued=256),
    Lane("batch", max_concurrency=8, durable=True, gated=True),
)

_log = get_logger()
#: the attempt's span when tracing is off: nothing, reused


class _State(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    DRAINING = "draining"
    STOPPED = "stopped"


class Scheduler:
    """An asyncio job scheduler with bounded lanes.

    Args:
        backlog: where durable work is kept: a SQLite file path (default
            ``"floodgate.db"``), ``":memory:"``, or a ``postgresql://`` DSN.
            Opened when the scheduler starts if any lane is durable; a plain
            attribute until then (the worker's ``--backlog`` sets it).
        lanes: the lanes; by default ``interactive`` (16 seats, 256 queued) and
            ``batch`` (8 seats, durable, gated). Earlier lanes are more urgent.
        gate: the :class:`HealthGate` gated lanes wait on (a fresh one by default).
        max_concurrency: optional ceiling across all lanes (one upstream's capacity).
        clock: the clock all timing goes through (:class:`SystemClock` by default).
        shutdown_grace: seconds running and queued jobs get to finish when the
            scheduler stops, before they are cancelled (a finite number >= 0).
            It also bounds writing their outcomes: when the backlog cannot be
            written (a full disk), the stop ends with the grace anyway, and
            the unsaved jobs run again later (``backlog.outcomes_unsaved``).
        backlog_options: leases, polling, batching and retention of durable
            lanes (:class:`BacklogOptions`).
        upstreams: per-upstream health settings (:class:`Upstream`); a shortcut
            for ``gate=HealthGate(upstreams)``.
        fleet: share upstream budgets (pauses, open breakers, ``rpm``/``tpm``
            split, the operator pause) with every process on the same backlog
            (SQLite file or PostgreSQL; see :mod:`scheduler.fleet`). ``False``:
            this process keeps its own; a ``FleetStore``: use that store.
        tracing: an OpenTelemetry span per attempt (see :mod:`scheduler.tracing`);
            ``None`` (default): when ``opentelemetry-api`` is installed.
    """

    def __init__(
        self,
        backlog: str = "floodgate.db",
        *,
        lanes: Sequence[Lane] | None = None,
        gate: HealthGate | None = None,
        max_concurrency: int | None = None,
        clock: Clock | None = None,
        shutdown_grace: float = 30.0,
        backlog_options: BacklogOptions | None = None,
        upstreams: Sequence[Upstream] | None = None,
        fleet: bool | FleetStore = True,
        tracing: bool | None = None,
    ) -> None:
        if not isinstance(backlog, str) or not backlog:
            raise ConfigError(f"backlog must be a non-empty str (path or DSN), got {backlog!r}")
        lanes = DEFAULT_LANES if lanes is None else tuple(lanes)
        if not lanes:
            raise ConfigError("a scheduler needs at least one lane")
        for lane in lanes:
            if not isinstance(lane, Lane):
                raise TypeError(f"lanes must be Lane objects, got {type(lane).__name__}")
        names = [lane.name for lane in lanes]
        if len(set(names)) != len(names):
            raise ConfigError(f"lane names must be unique, got {names}")
        if max_concurrency is not None:
            if isinstance(max_concurrency, bool) or not isinstance(max_concurrency, int):
                raise TypeError(f"max_concurrency must be an int or None, got {max_concurrency!r}")
            reserved = sum(lane.reserved for lane in lanes)
            if max_concurrency < max(1, reserved):
                raise ConfigError(
                    f"max_concurrency={max_concurrency} is below the {reserved} seats the "
                    "lanes reserve (Lane.reserved); raise it or lower the reservations"
                )
        grace = check_number("shutdown_grace", shutdown_grace, minimum=0)

        self.backlog = backlog
        self.lanes: tuple[Lane, ...] = lanes
        if gate is not None and upstreams is not None:
            raise ConfigError("give upstreams= or gate=HealthGate(upstreams), not both")
        self.gate = gate if gate is not None else HealthGate(upstreams or ())
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.gate.bind_clock(self.clock)
        self.shutdown_grace = grace
        self.backlog_options = backlog_options if backlog_options is not None else BacklogOptions()

        self._lanes: dict[str, LaneState] = {
            lane.name: LaneState(lane, self.clock, urgency=i) for i, lane in enumerate(lanes)
        }
        self._ordered = tuple(self._lanes.values())
        self._gated = tuple(ln for ln in self._ordered if ln.gated)
        self._tracing = Tracing(tracing)
        #: admission, ceilings and running jobs (see :mod:`scheduler.seats`)
        self.seats = Seats(
            self._ordered,
            clock=self.clock,
            gate=self.gate,
            tracing=self._tracing,
            on_release=self._on_release,
            max_concurrency=max_concurrency,
        )
        self._state = _State.NEW
        self._grace_cut = False
        self._unsubscribe_gate: Callable[[], None] | None = None
        self._tasks: dict[str, Task[Any, Any]] = {}
        self._store: JobStore | None = None
        self._runners: dict[str, DurableRunner] = {}
        self.owner = new_owner_id()
        self._fleet_option = fleet
        self._fleet_task: asyncio.Task[None] | None = None
        # every loop and job task of a run (see task_group), and the task that started it
        self._task_group = TaskGroup(self._on_crash)
        self._owner_task: asyncio.Task[Any] | None = None
        self._periodic = PeriodicRunner(self.clock, self._lanes, self._task_group)

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Scheduler:
        await self._start(None)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stop()

    @contextlib.asynccontextmanager
    async def open(self, *, run: Iterable[str] | None = None) -> AsyncIterator[Scheduler]:
        """Run only the named lanes in this process (``run=()``: none).

        Calls to a lane that is not run here raise :class:`SchedulerClosed`.
        """
        if isinstance(run, str):
            raise TypeError("run= takes a collection of lane names, e.g. run=('interactive',)")
        await self._start(None if run is None else tuple(run))
        try:
            yield self
        finally:
            await self._stop()

    async def _start(self, run: tuple[str, ...] | None) -> None:
        if self._state in (_State.RUNNING, _State.DRAINING):
            raise SchedulerClosed("this scheduler is already running")
        if run is not None:
            for name in run:
                if name not in self._lanes:
                    raise UnknownLane(name, tuple(self._lanes))
        for lane in self._ordered:
            lane.run_here = run is None or lane.name in run
        self._task_group.reset()
        self._owner_task = asyncio.current_task()
        if any(lane.config.durable for lane in self._ordered):
            await self._open_backlog()
        self._unsubscribe_gate = self.gate.subscribe(self._on_gate_change)
        self.gate.start_probes(self._task_group)
        self._state = _State.RUNNING
        self._tracing.start()
        self._periodic.start()
        _log.info("scheduler.started", lanes=[ln.name for ln in self._ordered if ln.run_here])

    async def _open_backlog(self) -> None:
        opts = self.backlog_options
        backlog = make_backlog(
            self.backlog,
            synchronous=opts.synchronous,
            busy_timeout=opts.busy_timeout,
            inline_writes=opts.inline_writes,
        )
        await backlog.open()
        store = JobStore(
            backlog,
            self._wake_runner,
            owner=self,
            clock=self.clock,
            lanes=self._lanes,
            tracing=self._tracing,
            runners=lambda: self._runners.values(),
        )
        self._store = store
        self._runners = {
            lane.name: DurableRunner(
                self.seats,
                lane,
                backlog,
                self.owner,
                opts,
                store.finished,
                tasks=self._tasks,
                group=self._task_group,
                purge=(i == 0),
                count_queued=functools.partial(store.refresh_counts, [lane]),
            )
            for i, lane in enumerate(
                ln for ln in self._ordered if ln.config.durable and ln.run_here
            )
        }
        await store.refresh_counts([ln for ln in self._ordered if ln.config.durable])
        for runner in self._runners.values():
            runner.start()
        self._start_fleet(backlog)

    def _start_fleet(self, backlog: Backlog) -> None:
        """Share upstream budgets with the other processes on this backlog."""
        option = self._fleet_option
        if option is False:
            return
        fleet_store = fleet_store_for(backlog) if option is True else option
        if fleet_store is None:
            return
        self.gate.touch_configured()  # the first exchange tells the fleet of them all
        sync = FleetSync(self.gate, fleet_store, self.clock, member=self.owner)
        if isinstance(fleet_store, PostgresFleetStore):
            fleet_store.on_notify = sync.wake
        self.gate.fleet = sync
        self._fleet_task = self._task_group.start(sync.run(), name="floodgate-fleet")

    async def _stop_fleet(self) -> None:
        task, self._fleet_task = self._fleet_task, None
        sync, self.gate.fleet = self.gate.fleet, None
        if task is not None:
            await cancel_and_wait(task)
        if sync is not None:
            with contextlib.suppress(Exception):
                await sync.sync_once()  # an operator pause asked for just before the stop
            await sync.leave()
            await sync.store.close()

    def _wake_runner(self, lane: str, due: float | None = None) -> None:
        """The lane's runner here may claim now or, ``due`` (a wall time), then."""
        runner = self._runners.get(lane)
        if runner is None:
            return
        if due is None:
            runner.wake()
        else:
            runner.due_at(due)

    def _wake_runners(self) -> None:
        for runner in self._runners.values():
            runner.wake()

    def _on_release(self, lane: str | None) -> None:
        """A seat was released (or the ceilings changed): the lane's runner (``None``:
        every runner) may claim again."""
        if not self._runners:
            return
        if lane is None:
            self._wake_runners()
        else:
            self._wake_runner(lane)

    def _on_gate_change(self) -> None:
        self.seats.dispatch_all()
        self._wake_runners()

    async def _stop(self) -> None:
        if self._state is not _State.RUNNING:
            return
        self._state = _State.DRAINING
        await self._periodic.stop()
        seats = self.seats
        _log.info("scheduler.draining", grace=self.shutdown_grace, running=seats.running)
        # the grace bounds writing the last outcomes too (a full disk must not hold the stop)
        grace_end = self.clock.now() + (0.0 if self._grace_cut else self.shutdown_grace)
        for runner in self._runners.values():
            runner.stop_claiming()
        try:
            if self.shutdown_grace > 0 and not self._grace_cut and not seats.is_idle():
                handle = self.clock.call_at(
                    self.clock.now() + self.shutdown_grace, lambda: seats.resolve_idle(False)
                )
                try:
                    await seats.wait_idle()
                finally:
                    handle.cancel()
        finally:
            seats.hard_stop()
            while seats.running:
                # Cancelled jobs unwind in their own tasks; wait for the last seat.
                await seats.wait_idle()
            # the last outcomes and lease releases are written even if we are cancelled
            await asyncio.shield(self._close_backlog(grace_end))
            await self.gate.stop_probes()
            self._grace_cut = False
            if self._unsubscribe_gate is not None:
                self._unsubscribe_gate()
                self._unsubscribe_gate = None
            await self._task_group.close()
            self._state = _State.STOPPED
            _log.info("scheduler.stopped")
        self._raise_crash()

    def _on_crash(self) -> None:
        """A task of the run crashed (see task_group): end the ``async with`` it runs
        in, whose exit stops the scheduler and raises :class:`SchedulerCrashed`."""
        owner = self._owner_task
        if self._state is _State.RUNNING and owner is not None and not owner.done():
            owner.cancel("floodgate: a scheduler task crashed")

    def _raise_crash(self) -> None:
        """After the stop: raise the crash of a task of the run, if one crashed."""
        crashed, where = self._task_group.crashed, self._task_group.crashed_in
        if crashed is None:
            return
        owner, self._owner_task = self._owner_task, None
        if owner is not None and owner is asyncio.current_task() and owner.cancelling():
            owner.uncancel()  # the cancel was ours: the crash is the news
        raise SchedulerCrashed(where or "?", crashed) from crashed

    async def _close_backlog(self, give_up_at: float | None = None) -> None:
        """Write the last outcomes, release unfinished leases, close the backlog.

        Failed writes are retried until ``give_up_at`` (or :meth:`end_grace`).
        """
        try:
            await self._stop_fleet()
        except Exception as exc:  # e.g. a full disk: the outcomes still get their try
            _log.warning("fleet.leave_failed", error=f"{type(exc).__name__}: {exc}")
        try:
            for runner in list(self._runners.values()):  # end_grace() reaches them meanwhile
                await runner.close(give_up_at)
        finally:
            self._runners = {}
        store, self._store = self._store, None
        if store is not None:
            await store.backlog.close()

    def end_grace(self) -> None:
        """Cut the shutdown grace short (a worker's second signal).

        During the grace: running jobs are cancelled now (durable ones have
        their leases released). Before the stop began: it will take no grace.
        Outcomes and lease releases the backlog refuses (a full disk) are not
        retried: the stop ends now, and those jobs run again later.
        """
        self._grace_cut = True
        if self._state is _State.DRAINING:
            self.seats.resolve_idle(False)
            for runner in self._runners.values():
                runner.give_up()

    # ------------------------------------------------------------------ calls

    async def call(
        self,
        fn: Callable[..., Awaitable[T]],
        /,
        *args: Any,
        lane: str = "interactive",
        priority: float = 0,
        deadline: float | None = None,
        timeout: float | None = None,
        upstream: str | None = None,
        retry: RetryPolicy | None = None,
        fallback: Callable[..., Awaitable[T]] | None = None,
        cost: float = 0,
        tenant: str | None = None,
    ) -> T:
        """Run ``fn(*args)`` in ``lane`` under its ceiling and return its result.

        Args:
            priority: lower runs first; FIFO among equals.
            deadline: seconds within which the job must *start*, or it is shed
                with :class:`DeadlineExceeded` (at admission, or from the queue).
            timeout: seconds the job may *run* before it is cancelled and
                :class:`JobTimeout` is raised.
            upstream: the upstream this call talks to (health is kept per name):
                while its breaker is open the call fails at once with
                :class:`UpstreamUnavailable` without touching it.
            retry: retry retryable failures (429, 5xx, timeouts, transport
                errors) with this policy, only while the retry can still start
                within ``deadline`` and the upstream's retry budget allows.
            fallback: run ``fallback(*args)`` instead when the upstream is
                unavailable or the retries are spent; ``stats()`` counts it.
            cost: what the call draws from the upstream's token-rate limit.
            tenant: who the call is for (a customer, an API key): tenants share
                the lane fairly, by their weights (see :class:`Tenants`).

        Raises:
            Overloaded: the lane's queue is full, or the tenant's own bound is
                reached (``tenant`` says so; ``retry_after`` says when to retry).
            DeadlineExceeded: the job could not start before ``deadline``.
            SchedulerClosed: the scheduler is not running this lane.
            JobTimeout: the job ran past ``timeout``.
            JobCancelled: the scheduler cancelled the job (shutdown grace ran out).
            Exception: whatever ``fn`` raised, unchanged.
        """
        state = self._lanes.get(lane)
        if state is None:
            raise UnknownLane(lane, tuple(self._lanes))
        if priority.__class__ is not int:
            check_number("priority", priority, minimum=-math.inf)
        if deadline is not None:
            check_number("deadline", deadline, minimum=-math.inf)
        if timeout is not None:
            check_number("timeout", timeout, minimum=0, exclusive=True)
        if tenant is not None:
            check_tenant(tenant)
        if self._state is not _State.RUNNING or not state.run_here:
            raise SchedulerClosed(self._closed_reason(state))
        if upstream is not None or retry is not None or fallback is not None:
            return await call_with_policies(
                self.seats, state, fn, args, priority, deadline, timeout, upstream, retry, fallback,
                cost, tenant,
            )  # fmt: skip
        seats = self.seats
        ticket = seats.admit(state, priority, deadline, upstream, tenant)
        if ticket.future is not None:
            await seats.wait_for_seat(ticket)
        return await seats.run(ticket, fn, args, timeout)

    @property
    def max_concurrency(self) -> int | None:
        """The ceiling across every lane (``None``: only the lanes' own).

        Settable at run time: a higher ceiling hands the new seats to waiting
        jobs at once; a lower one lets running jobs finish and starts none above
        it (``ConfigError`` below the seats the lanes reserve).
        """
        return self.seats.max_concurrency

    @max_concurrency.setter
    def max_concurrency(self, value: int | None) -> None:
        self.seats.set_shared_ceiling(value)

    def lane(self, name: str) -> LaneControl:
        """The lane called ``name`` at run time: its ``max_concurrency`` can be set
        (it takes effect at once, as :attr:`max_concurrency` does) and its
        ``stats()`` read."""
        state = self._lanes.get(name)
        if state is None:
            raise UnknownLane(name, tuple(self._lanes))
        return LaneControl(state, self.seats)

    def _closed_reason(self, lane: LaneState) -> str:
        if self._state is _State.NEW:
            return "the scheduler is not started; use 'async with sched:'"
        if self._state is not _State.RUNNING:
            return "the scheduler is shutting down and accepts no new jobs"
        return f"lane {lane.name!r} is not run in this process (see open(run=...))"

    # ------------------------------------------------------------------ durable jobs

    def periodic(
        self,
        cron: str | None = None,
        /,
        *,
        every: timedelta | float | None = None,
        catch_up: int = 1,
        lane: str = "batch",
        name: str | None = None,
        retry: RetryPolicy | None = None,
        upstream: str | None = None,
        timeout: float | None = None,
    ) -> Callable[[Callable[[], Awaitable[T]]], Task[[], T]]:
        """Register a task (no arguments) run once per period, across every process
        sharing the backlog (use as ``@sched.periodic("*/5 * * * *")`` or
        ``@sched.periodic(every=timedelta(minutes=5))``; see :mod:`scheduler.periodic`).

        Args:
            cron: a cron expression, in UTC (croniter's syntax).
            every: a fixed period (a ``timedelta`` or seconds, at least 1 s),
                aligned to the Unix epoch.
            catch_up: how many of the latest periods that began before the
                scheduler started it submits at once (missed ones after a
                downtime; 0: none).
            lane, name, retry, upstream, timeout: as for :meth:`task`; the lane
                must be durable.
        """
        schedule = Schedule.parse(cron, every)

        check_int("catch_up", catch_up, minimum=0)
        if catch_up > MAX_CATCH_UP:
            raise ConfigError(f"catch_up is at most {MAX_CATCH_UP}, got {catch_up}")

        def register(fn: Callable[[], Awaitable[T]]) -> Task[[], T]:
            task: Task[[], T] = self.task(
                lane=lane, name=name, retry=retry, upstream=upstream, timeout=timeout
            )(fn)
            self._periodic.add(task, schedule, catch_up=catch_up)
            return task

        return register

    def task(
        self,
        fn: Callable[P, Awaitable[T]] | None = None,
        /,
        *,
        lane: str = "batch",
        name: str | None = None,
        retry: RetryPolicy | None = None,
        upstream: str | None = None,
        timeout: float | None = None,
        fallback: Callable[..., Awaitable[Any]] | None = None,
        cost: float | Callable[..., float] = 0,
    ) -> Any:
        """Register a coroutine function as a task (use as ``@sched.task(...)``).

        Args:
            lane: where its jobs run (a durable lane for ``submit``).
            name: the name stored with its jobs; by default ``module.qualname``.
            retry: how failed attempts are retried (default ``RetryPolicy()``).
            upstream: the upstream it calls (health is kept per name).
            timeout: seconds one attempt may run.
            fallback: runs with the same args when the retries are spent; its
                result is the job's result (``stats()`` counts fallbacks).
            cost: tokens one job draws from the upstream's token-rate limit,
                or a function of the job's args that says so.
        """

        def register(fn: Callable[P, Awaitable[T]]) -> Task[P, T]:
            check_task_function(fn)
            if lane not in self._lanes:
                raise UnknownLane(lane, tuple(self._lanes))
            if retry is not None and not isinstance(retry, RetryPolicy):
                raise TypeError(f"retry must be a RetryPolicy, got {type(retry).__name__}")
            if timeout is not None:
                check_number("timeout", timeout, minimum=0, exclusive=True)
            task_name_ = task_name(fn) if name is None else name
            if not isinstance(task_name_, str) or not task_name_:
                raise TypeError(f"a task name must be a non-empty str, got {task_name_!r}")
            existing = self._tasks.get(task_name_)
            if existing is not None and existing.fn is not fn:
                raise ConfigError(f"another function is already registered as task {task_name_!r}")
            task = Task(
                fn=fn,
                name=task_name_,
                lane=lane,
                retry=retry if retry is not None else DEFAULT_RETRY,
                upstream=upstream,
                timeout=timeout,
                scheduler=self,
                fallback=fallback,
                cost=cost,
            )
            self._tasks[task_name_] = task
            if upstream is not None and self._lanes[lane].gated:
                self._lanes[lane].upstreams.add(upstream)
            return task

        return register if fn is None else register(fn)

    @property
    def tasks(self) -> dict[str, Task[Any, Any]]:
        """The registered tasks by name (a copy)."""
        return dict(self._tasks)

    async def submit(
        self,
        task: Task[Any, Any] | str,
        /,
        *args: Any,
        priority: float = 0,
        key: str | None = None,
        run_at: float | datetime | None = None,
        delay: float | None = None,
        deadline: float | None = None,
        cost: float | None = None,
        tenant: str | None = None,
    ) -> Job:
        """Store a durable job for ``task(*args)``; returns once its row is committed.

        Args:
            priority: lower runs first; FIFO among equals.
            key: idempotency key: a second submit with the same key returns the
                first job instead of adding another.
            run_at: when it may start (epoch seconds or an aware datetime), or
            delay: seconds from now.
            deadline: seconds after its start time within which it must start,
                or it ends ``DEAD`` unrun.
            cost: tokens this job draws from its upstream's token-rate limit when
                it starts (e.g. an estimate of its prompt and answer), stored
                with the job so whichever worker runs it draws that much;
                ``None`` uses the task's ``cost``.
            tenant: whose job it is (a customer, an API key): the lane's claims
                take turns between tenants, in every process sharing the
                backlog (see :class:`~scheduler.lanes.Tenants`).

        Raises:
            TypeError: an argument is not JSON-serializable, or ``cost`` is not a
                number, or ``tenant`` is not a str (nothing is stored).
            ConfigError: ``cost`` is negative or not finite.
            Overloaded: the lane's backlog holds ``max_queued`` jobs already, or
                the tenant its ``Tenants.max_queued`` (``tenant`` says so).
            SchedulerClosed: the scheduler is not open.
        """
        task, lane = self._durable_task(task, "submit")
        return await self._require_store().submit(
            task,
            lane,
            args,
            priority=priority,
            key=key,
            run_at=run_at,
            delay=delay,
            deadline=deadline,
            cost=cost,
            tenant=tenant,
        )

    async def submit_many(
        self,
        task: Task[Any, Any] | str,
        args_list: Sequence[Sequence[Any]],
        /,
        *,
        keys: Sequence[str | None] | None = None,
        priority: float = 0,
        run_at: float | datetime | None = None,
        delay: float | None = None,
        deadline: float | None = None,
        cost: float | None = None,
        tenant: str | None = None,
    ) -> list[Job]:
        """Store one durable job per item of ``args_list`` (each a list of positional
        args); returns the jobs in order, once all are committed in one transaction.

        ``keys``: ``None``, or one idempotency key (or ``None``) per item; an item
        whose key is stored already gets that job back. The other options apply to
        every job, as in :meth:`submit`.

        Raises:
            TypeError: an item is not a list/tuple of JSON-serializable args (the
                message names its index), or a key is not a str; nothing is stored.
            Overloaded: the jobs do not all fit under the lane's ``max_queued``;
                none of them is stored.
            SchedulerClosed: the scheduler is not open.
        """
        task, lane = self._durable_task(task, "submit_many")
        return await self._require_store().submit_many(
            task,
            lane,
            args_list,
            keys,
            priority=priority,
            run_at=run_at,
            delay=delay,
            deadline=deadline,
            cost=cost,
            tenant=tenant,
        )

    def _durable_task(
        self, task: Task[Any, Any] | str, what: str
    ) -> tuple[Task[Any, Any], LaneState]:
        """The task (by object or name) and its lane, which must be durable."""
        if isinstance(task, str):
            found = self._tasks.get(task)
            if found is None:
                raise UnknownTask(task, tuple(self._tasks))
            task = found
        elif not isinstance(task, Task):
            raise TypeError(f"{what}() takes a task or its name, got {type(task).__name__}")
        lane = self._lanes[task.lane]
        if not lane.config.durable:
            raise ConfigError(
                f"task {task.name!r} runs in lane {lane.name!r}, which is not durable: "
                "use call() for in-memory work, or Lane(..., durable=True)"
            )
        return task, lane

    async def job(self, job_id: str) -> Job:
        """The durable job with this id, as it is now (``UnknownJob`` if none)."""
        return await self._require_store().get(job_id)

    async def jobs(
        self,
        state: JobState | str | None = None,
        *,
        lane: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Job]:
        """Durable jobs, oldest first, optionally only one state (e.g. ``"dead"``) or lane."""
        if isinstance(state, str):
            try:
                state = JobState(state)
            except ValueError:
                raise ConfigError(
                    f"unknown job state {state!r}; one of {', '.join(s.value for s in JobState)}"
                ) from None
        return await self._require_store().list(state, lane, limit, offset)

    async def requeue(
        self, job_id: str | None = None, *, all_dead: bool = False, lane: str | None = None
    ) -> int:
        """Put ``DEAD`` jobs back in the queue with fresh attempts; returns how many."""
        if (job_id is None) == (not all_dead):
            raise TypeError("requeue() takes a job id or all_dead=True (not both, not neither)")
        return await self._require_store().requeue(job_id, all_dead, lane)

    async def cancel(self, job_id: str) -> bool:
        """Cancel a durable job, from any process sharing the backlog.

        A queued job is ``CANCELLED`` at once and never starts. A running one is
        cancelled cooperatively: the process running it cancels its task (at
        once here; within a second elsewhere) and it ends ``CANCELLED``, never
        retried. Waiters on ``result()`` get ``JobCancelled``.

        Returns ``True`` if the job was queued or running, ``False`` if it had
        already finished (done, dead or cancelled): nothing changes then.

        Raises:
            UnknownJob: no job with that id (never submitted, or purged).
        """
        return await self._require_store().cancel(job_id)

    async def cancel_task(self, task: str | None = None, *, tenant: str | None = None) -> int:
        """:meth:`cancel` every queued and running job of the task named ``task``, of
        ``tenant``, or of both (one of them is needed); returns how many it reached."""
        return await self._require_store().cancel_task(task, tenant)

    async def backlog_counts(self) -> dict[str, dict[str, int]]:
        """Durable jobs in the backlog: ``{lane: {state: count}}`` (empty states left out)."""
        return await self._require_store().backlog.counts()

    async def _wait_job(self, job_id: str, timeout: float | None) -> Job:
        return await self._require_store().wait(job_id, timeout)

    def _require_store(self) -> JobStore:
        if self._store is None:
            if self._state is not _State.RUNNING:
                raise SchedulerClosed(
                    "durable jobs need an open scheduler: 'async with sched:' or sched.open(run=())"
                )
            raise ConfigError("this scheduler has no durable lane, so no backlog to keep jobs in")
        return self._store

    # ------------------------------------------------------------------ seats

    # ------------------------------------------------------------------ introspection

    def stats(self) -> SchedulerStats:
        """A snapshot of every lane (queued, running, counters, latency quantiles)."""
        gate = self.gate.stats()
        return SchedulerStats(
            lanes={lane.name: lane.stats() for lane in self._ordered},
            running=self.seats.running,
            max_concurrency=self.max_concurrency,
            state=self._state.value,
            gate_open=gate.open,
            gate_reason=gate.reason,
            upstreams={
                name: health.stats(self._limit_for(name))
                for name, health in self.gate.upstreams.items()
            },
            fleet=None if self.gate.fleet is None else self.gate.fleet.stats(),
            periodic=self._periodic.stats(),
            # issue 13: the backlog's own counters (None without a durable lane)
            backlog=None if self._store is None else self._store.backlog.stats(),
        )

    def _limit_for(self, upstream: str) -> int | None:
        limits = [ln.limiter.limit for ln in self._gated if ln.limiter and upstream in ln.upstreams]
        return min(limits) if limits else None

    def __repr__(self) -> str:
        lanes = ", ".join(lane.name for lane in self._ordered)
        return f"<Scheduler {self._state.value} lanes=[{lanes}] backlog={self.backlog!r}>"
