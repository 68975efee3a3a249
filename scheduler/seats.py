"""Seats: admission, ceilings, the shared ceiling, hand-over, and running a job in one.

Every job, in-memory call or durable job, holds a *seat* of its lane while it
runs. :class:`Seats` decides who gets one, in this order:

    admit ── a free seat? ── take it ───────────────────────────┐
      │          (the lane's ceiling, a gated lane's gate,       │
      │           the scheduler-wide shared ceiling)             ▼
      └── else queue (or shed: full queue, deadline) ── wait ── run ── release ── hand
                                                                  the seat to the
                                                                  most urgent waiter

A durable lane's runner reserves seats (:meth:`Seats.reserve`) before it
claims jobs from the backlog, so a claim never takes more than the lane may
run. Releasing a seat tells the scheduler (``on_release(lane)``: that lane's
runner may claim; ``on_release(None)``: every runner) and hands it on.

Ceilings can change at run time (:meth:`Seats.set_ceiling`,
:meth:`Seats.set_shared_ceiling`): a higher one hands the new seats to waiters
at once, a lower one lets running jobs finish and takes no new ones above it,
as anyio's ``CapacityLimiter.total_tokens`` does. :meth:`Seats.acquire_nowait`
is the non-waiting twin of :meth:`Seats.acquire`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

from .classify import classify
from .clock import Clock
from .errors import (
    ConfigError,
    DeadlineExceeded,
    JobCancelled,
    JobTimeout,
    Overloaded,
    SchedulerClosed,
)
from .gate import HealthGate
from .jobs import JobState, _current
from .lanes import LaneState, Ticket
from .logs import debug_enabled, get_logger
from .metrics import LaneStats
from .tracing import Tracing

__all__ = ["LaneControl", "Seats"]

T = TypeVar("T")
_log = get_logger()

#: the attempt's span when tracing is off: nothing, reused
_NO_SPAN = contextlib.nullcontext()


class Seats:
    """The seats of a scheduler's lanes (see the module docstring)."""

    def __init__(
        self,
        lanes: Iterable[LaneState],
        *,
        clock: Clock,
        gate: HealthGate,
        tracing: Tracing,
        on_release: Callable[[str | None], None],
        max_concurrency: int | None = None,
    ) -> None:
        self.clock = clock
        self.gate = gate
        self.tracing = tracing
        self._on_release = on_release
        self._ordered = tuple(lanes)
        self._gated = tuple(ln for ln in self._ordered if ln.gated)
        self._ungated = tuple(ln for ln in self._ordered if not ln.gated)
        self._shared_capacity: int | None = None
        self._shared_used = 0
        #: jobs holding a seat, every lane
        self.running = 0
        self._idle_waiter: asyncio.Future[bool] | None = None
        self._set_shared(max_concurrency)

    # -- ceilings ---------------------------------------------------------------------

    @property
    def max_concurrency(self) -> int | None:
        """The ceiling across every lane (``None``: only the lanes' own)."""
        if self._shared_capacity is None:
            return None
        return self._shared_capacity + sum(ln.reserved for ln in self._ordered)

    def _set_shared(self, max_concurrency: int | None) -> None:
        if max_concurrency is None:
            self._shared_capacity = None
            for lane in self._ordered:
                lane.seats = lane.max_concurrency
            return
        reserved = sum(lane.reserved for lane in self._ordered)
        shared = max_concurrency - reserved
        self._shared_capacity = shared
        # what the shared seats in use were counted against: recount under the new split
        self._shared_used = sum(max(0, ln.running - ln.reserved) for ln in self._ordered)
        for lane in self._ordered:
            lane.seats = min(lane.max_concurrency, lane.reserved + shared)

    def set_shared_ceiling(self, max_concurrency: int | None) -> None:
        """Change the ceiling across every lane now (see the module docstring)."""
        if max_concurrency is not None:
            check_ceiling("max_concurrency", max_concurrency)
            reserved = sum(lane.reserved for lane in self._ordered)
            if max_concurrency < max(1, reserved):
                raise ConfigError(
                    f"max_concurrency={max_concurrency} is below the {reserved} seats the "
                    "lanes reserve (Lane.reserved); raise it or lower the reservations"
                )
        self._set_shared(max_concurrency)
        self.dispatch_all()
        self._on_release(None)

    def set_ceiling(self, lane: LaneState, max_concurrency: int) -> None:
        """Change ``lane``'s ceiling now (see the module docstring)."""
        check_ceiling(f"lane {lane.name!r}: max_concurrency", max_concurrency)
        if max_concurrency < lane.reserved:
            raise ConfigError(
                f"lane {lane.name!r}: max_concurrency={max_concurrency} is below its "
                f"reserved={lane.reserved}"
            )
        lane.max_concurrency = max_concurrency
        if lane.limiter is not None:
            lane.limiter.set_ceiling(max_concurrency)
        self._set_shared(self.max_concurrency)
        if lane.queue:
            self.dispatch(lane)
        self._on_release(lane.name)

    # -- admission ---------------------------------------------------------------------

    def acquire_nowait(
        self,
        lane: LaneState,
        priority: float = 0,
        deadline: float | None = None,
        upstream: str | None = None,
        tenant: str | None = None,
    ) -> Ticket:
        """A seat now, or :class:`~scheduler.errors.Overloaded` (nothing is queued)."""
        if lane.queue or not self.can_take(lane) or not lane.may_run(tenant):
            lane.count_shed("queue_full", tenant)
            raise Overloaded(lane.name, lane.retry_after(), queued=len(lane.queue))
        return self.admit(lane, priority, deadline, upstream, tenant)

    async def acquire(
        self,
        lane: LaneState,
        priority: float = 0,
        deadline: float | None = None,
        upstream: str | None = None,
        tenant: str | None = None,
    ) -> Ticket:
        """A seat, waiting in the lane's queue for one (shed as :meth:`admit` says)."""
        ticket = self.admit(lane, priority, deadline, upstream, tenant)
        if ticket.future is not None:
            await self.wait_for_seat(ticket)
        return ticket

    def release_unstarted(self, ticket: Ticket) -> None:
        """Give back a seat whose job will not run after all."""
        ticket.state = JobState.CANCELLED
        ticket.lane.cancelled += 1
        self.release(ticket.lane, ticket)

    def admit(
        self,
        lane: LaneState,
        priority: float,
        deadline: float | None,
        upstream: str | None,
        tenant: str | None = None,
    ) -> Ticket:
        """Admit a job: give it a seat now, queue it, or shed it (raises)."""
        now = self.clock.now()
        if deadline is not None and deadline <= 0:
            lane.count_shed("deadline_admission", tenant)
            self._log_shed(lane, "deadline_admission")
            raise DeadlineExceeded(lane.name, deadline, where="admission", expected_wait=0.0)
        ticket = Ticket(lane, priority, now, deadline, upstream, asyncio.current_task(), tenant)
        if not lane.queue and self.can_take(lane) and lane.may_run(tenant):
            self._take_seat(lane, ticket)
            lane.admitted += 1
            if debug_enabled():
                _log.debug("job.admitted", lane=lane.name, job_id=ticket.id, queued=False)
            return ticket
        if len(lane.queue) >= lane.max_queued:
            lane.count_shed("queue_full", tenant)
            self._log_shed(lane, "queue_full")
            raise Overloaded(lane.name, lane.retry_after(), queued=len(lane.queue))
        most = lane.tenant_max_queued
        if tenant is not None and most is not None and lane.queue.queued(tenant) >= most:
            lane.count_shed("tenant_queue_full", tenant)
            self._log_shed(lane, "tenant_queue_full", tenant=tenant)
            raise Overloaded(lane.name, lane.retry_after(), queued=most, tenant=tenant)
        if deadline is not None:
            expected = lane.expected_wait()
            if expected is not None and expected > deadline:
                lane.count_shed("deadline_admission")
                self._log_shed(lane, "deadline_admission")
                raise DeadlineExceeded(
                    lane.name, deadline, where="admission", expected_wait=expected
                )
        ticket.future = asyncio.get_running_loop().create_future()
        ticket.entry = lane.queue.push(ticket, priority, now, tenant)
        if ticket.deadline_at is not None:
            ticket.timer = self.clock.call_at(ticket.deadline_at, lambda: self._expire(ticket))
        lane.admitted += 1
        if debug_enabled():
            _log.debug("job.admitted", lane=lane.name, job_id=ticket.id, queued=True)
        if lane.tenant_max_in_flight is not None and self.can_take(lane):
            # the seats are free but the tenants waiting hold all they may: this
            # tenant's job may take one (the dispatch hands it over)
            self.dispatch(lane)
        return ticket

    async def wait_for_seat(self, ticket: Ticket) -> None:
        assert ticket.future is not None
        try:
            await ticket.future
        except asyncio.CancelledError:
            lane = ticket.lane
            if ticket.state is JobState.RUNNING:
                # A seat was handed over, but the waiter was cancelled before it could
                # use it: pass the seat on.
                ticket.state = JobState.CANCELLED
                lane.cancelled += 1
                self.release(lane, ticket)
            elif ticket.state is JobState.QUEUED:
                assert ticket.entry is not None
                lane.queue.remove(ticket.entry)
                self.finish_unstarted(ticket, JobState.CANCELLED, None)
            reason = ticket.cancel_reason
            if reason is not None and ticket.task is not None and ticket.task.uncancel() == 0:
                if reason == "shutdown":  # it never started
                    raise SchedulerClosed(
                        "the scheduler shut down before the job started"
                    ) from None
                raise JobCancelled(ticket.id, reason) from None
            raise
        finally:
            if ticket.timer is not None:
                ticket.timer.cancel()
                ticket.timer = None

    def _expire(self, ticket: Ticket) -> None:
        """Deadline timer: the job is still queued, so shed it, unrun."""
        if ticket.state is not JobState.QUEUED or (ticket.future and ticket.future.done()):
            return
        assert ticket.entry is not None
        ticket.lane.queue.remove(ticket.entry)
        self._shed_expired(ticket)

    def _shed_expired(self, ticket: Ticket) -> None:
        lane = ticket.lane
        lane.count_shed("deadline_queue", ticket.tenant)
        self._log_shed(lane, "deadline_queue", job_id=ticket.id)
        assert ticket.deadline is not None
        self.finish_unstarted(
            ticket,
            JobState.EXPIRED,
            DeadlineExceeded(lane.name, ticket.deadline, where="queue", job_id=ticket.id),
        )

    def finish_unstarted(
        self, ticket: Ticket, state: JobState, error: BaseException | None
    ) -> None:
        ticket.state = state
        if state is JobState.CANCELLED:
            ticket.lane.cancelled += 1
        fut = ticket.future
        if error is not None and fut is not None and not fut.done():
            fut.set_exception(error)
        lane = ticket.lane
        if self._gated and not lane.gated and not lane.queue:
            self.lift_pressure()
        if self._idle_waiter is not None and self.is_idle():
            self.resolve_idle(True)

    def lift_pressure(self) -> None:
        """No interactive queue any more: gated lanes may start work again."""
        for gated in self._gated:
            if gated.queue:
                self.dispatch(gated)
        self._on_release(None)

    async def run(
        self,
        ticket: Ticket,
        fn: Callable[..., Awaitable[T]],
        args: tuple[Any, ...],
        timeout: float | None,
    ) -> T:
        lane = ticket.lane
        clock = self.clock
        task = ticket.task
        started = clock.now()
        ticket.started_at = started
        admitted = ticket.admitted_at
        lane.wait_hist.observe(started - admitted)
        handle = None
        if timeout is not None:
            ticket.timeout_at = started + timeout
            ticket.cancelling = task.cancelling() if task is not None else 0
            handle = clock.call_at(ticket.timeout_at, lambda: ticket.cancel_task("timeout"))
        token = _current.set(ticket)
        log = debug_enabled()
        if log:
            _log.debug("job.started", lane=lane.name, job_id=ticket.id)
        outcome = JobState.FAILED
        error: BaseException | None = None
        tracing = self.tracing
        span = _NO_SPAN if tracing.tracer is None else tracing.attempt(ticket, started - admitted)
        try:
            with span:
                awaitable = fn(*args)
                if not hasattr(awaitable, "__await__"):
                    raise TypeError(
                        f"{getattr(fn, '__qualname__', fn)!r} returned "
                        f"{type(awaitable).__name__}, not an awaitable: call() runs "
                        "coroutine functions (async def)"
                    )
                result = await awaitable
            outcome = JobState.DONE
            return result
        except asyncio.CancelledError:
            outcome = JobState.CANCELLED
            reason = ticket.cancel_reason
            if reason is not None and task is not None and task.uncancel() <= ticket.cancelling:
                if reason == "timeout":
                    assert timeout is not None
                    outcome = JobState.FAILED
                    error = JobTimeout(ticket.id, timeout)
                    raise error from None
                raise JobCancelled(ticket.id, reason) from None
            raise
        except BaseException as exc:
            error = exc
            raise
        finally:
            if handle is not None:
                handle.cancel()
            _current.reset(token)
            ticket.state = outcome
            if outcome is JobState.DONE:
                lane.completed += 1
            elif outcome is JobState.FAILED:
                lane.failed += 1
            else:
                lane.cancelled += 1
            run_time = clock.now() - started
            lane.record_run(run_time)
            if log:
                _log.debug("job.finished", lane=lane.name, job_id=ticket.id, state=outcome.value)
            if ticket.permit is not None or (lane.limiter is not None and lane.upstreams):
                self._observe(ticket, outcome, error, run_time)
            self.release(lane, ticket)

    def _observe(
        self, ticket: Ticket, outcome: JobState, error: BaseException | None, run_time: float
    ) -> None:
        """Feed a finished job's outcome to its upstream's permit and its lane's limit."""
        permit, ticket.permit = ticket.permit, None
        if outcome is JobState.CANCELLED:
            if permit is not None:
                permit.cancel()
            return
        verdict = classify(error, now=self.clock.wall())
        if permit is not None:
            permit.finish(verdict, run_time)
        limiter = ticket.lane.limiter
        if limiter is not None:
            if verdict.ok:
                limiter.on_success(run_time)
            elif verdict.upstream_fault:
                limiter.on_overload()

    def can_take(self, lane: LaneState) -> bool:
        if lane.running >= lane.max_concurrency:
            return False
        if lane.gated and not self._gate_permits(lane):
            return False
        shared = self._shared_capacity
        return shared is None or lane.running < lane.reserved or self._shared_used < shared

    def _gate_permits(self, lane: LaneState) -> bool:
        """Every signal in front of a gated lane: health, pressure, adaptive limit."""
        reason = self.gate.blocked(lane.upstreams)
        if reason is not None:
            return False
        limiter = lane.limiter
        if limiter is not None and lane.upstreams:
            outages = sum(self.gate.upstream(name).outages for name in lane.upstreams)
            if outages != lane.outages_seen:
                # a real outage (a breaker opened) is over: ramp up gently; a
                # Retry-After pause or pacing is not one and keeps the limit
                lane.outages_seen = outages
                limiter.reset()
        # batch yields only to live work waiting for seats it holds (the shared
        # ceiling's): a live lane queued on its own ceiling gains nothing from it
        pressure = False  # a loop, not any(generator): this runs once per seat taken
        for other in self._ungated:
            if other.queue and other.running < other.max_concurrency:
                pressure = True
                break
        if pressure != lane.under_pressure:
            lane.under_pressure = pressure
            self.gate.note_pressure(lane.name, pressure)
        if pressure:
            return False  # interactive pressure: batch yields while live work waits
        # the adaptive limit is the upstreams' (their outcomes move it): a lane with
        # no upstream-bound work is not held to it
        return limiter is None or not lane.upstreams or lane.running < limiter.limit

    def _take_seat(self, lane: LaneState, ticket: Ticket) -> None:
        if self._shared_capacity is not None and lane.running >= lane.reserved:
            self._shared_used += 1
        lane.running += 1
        self.running += 1
        lane.active.add(ticket)
        ticket.state = JobState.RUNNING
        if ticket.tenant is not None:
            self._count_tenant(lane, ticket.tenant)

    def name_tenant(self, ticket: Ticket, tenant: str | None) -> None:
        """Say whose job a seat reserved for a durable claim holds (known once claimed)."""
        ticket.tenant = tenant
        if tenant is not None:
            self._count_tenant(ticket.lane, tenant)

    @staticmethod
    def _count_tenant(lane: LaneState, tenant: str) -> None:
        lane.tenant_running[tenant] = lane.tenant_running.get(tenant, 0) + 1

    def release(self, lane: LaneState, ticket: Ticket) -> None:
        lane.active.discard(ticket)
        lane.running -= 1
        self.running -= 1
        tenant = ticket.tenant
        if tenant is not None:
            left = lane.tenant_running[tenant] - 1
            if left:
                lane.tenant_running[tenant] = left
            else:
                del lane.tenant_running[tenant]
        if self._shared_capacity is None:
            if lane.queue:
                self.dispatch(lane)
        else:
            if lane.running >= lane.reserved:
                self._shared_used -= 1
            self.dispatch_all()
        if self._gated and not lane.gated and not lane.queue:
            self.lift_pressure()  # tells every lane too
        elif self._shared_capacity is None and not self._gated:
            self._on_release(lane.name)
        else:
            self._on_release(None)
        if self._idle_waiter is not None and self.is_idle():
            self.resolve_idle(True)

    def reserve(self, lane: LaneState, most: int) -> list[Ticket]:
        """Take up to ``most`` free seats of ``lane`` for durable jobs about to be
        claimed (none while in-memory callers wait for that lane)."""
        tickets: list[Ticket] = []
        if lane.queue:
            return tickets
        now = self.clock.now()
        while len(tickets) < most and self.can_take(lane):
            ticket = Ticket(lane, 0, now, None, None, None)
            self._take_seat(lane, ticket)
            tickets.append(ticket)
        return tickets

    def dispatch_all(self) -> None:
        for lane in self._ordered:
            if lane.queue:
                self.dispatch(lane)

    def dispatch(self, lane: LaneState) -> None:
        """Hand free seats to the most urgent waiters of ``lane``."""
        queue = lane.queue
        eligible = None if lane.tenant_max_in_flight is None else lane.may_run
        while queue and self.can_take(lane):
            ticket = queue.pop(eligible)
            if ticket is None:
                return  # every tenant waiting holds all the seats it may
            assert ticket.future is not None
            if ticket.future.done():
                # Its task was cancelled while waiting; the waiter's own handler
                # records the cancellation when it resumes. No seat for it.
                continue
            if ticket.deadline_at is not None and self.clock.now() >= ticket.deadline_at:
                self._shed_expired(ticket)
                continue
            self._take_seat(lane, ticket)
            ticket.future.set_result(None)

    def _log_shed(
        self, lane: LaneState, reason: str, job_id: str | None = None, tenant: str | None = None
    ) -> None:
        if debug_enabled():
            _log.debug("job.shed", lane=lane.name, reason=reason, job_id=job_id, tenant=tenant)

    def hard_stop(self) -> None:
        """Grace is over: drop what still waits, cancel what still runs."""
        for lane in self._ordered:
            while (ticket := lane.queue.pop()) is not None:
                self.finish_unstarted(
                    ticket,
                    JobState.CANCELLED,
                    SchedulerClosed("the scheduler shut down before the job started"),
                )
            for ticket in list(lane.active):
                ticket.cancel_task("shutdown")

    def is_idle(self) -> bool:
        return self.running == 0 and not any(lane.queue for lane in self._ordered)

    async def wait_idle(self) -> bool:
        if self.is_idle():
            return True
        if self._idle_waiter is None or self._idle_waiter.done():
            self._idle_waiter = asyncio.get_running_loop().create_future()
        return await self._idle_waiter

    def resolve_idle(self, value: bool) -> None:
        waiter = self._idle_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(value)


class LaneControl:
    """A lane at run time (``sched.lane(name)``): its ceiling, settable, and its stats."""

    __slots__ = ("_lane", "_seats")

    def __init__(self, lane: LaneState, seats: Seats) -> None:
        self._lane = lane
        self._seats = seats

    @property
    def name(self) -> str:
        return self._lane.name

    @property
    def max_concurrency(self) -> int:
        """The lane's ceiling; setting it takes effect at once (see :mod:`scheduler.seats`)."""
        return self._lane.max_concurrency

    @max_concurrency.setter
    def max_concurrency(self, value: int) -> None:
        self._seats.set_ceiling(self._lane, value)

    def stats(self) -> LaneStats:
        """A snapshot of the lane (as in ``sched.stats().lanes[name]``)."""
        return self._lane.stats()

    def __repr__(self) -> str:
        lane = self._lane
        return f"<Lane {lane.name} running={lane.running}/{lane.max_concurrency}>"


def check_ceiling(what: str, value: object) -> int:
    """A ceiling is an int >= 1."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, got {value!r}")
    if value < 1:
        raise ConfigError(f"{what} must be >= 1, got {value}")
    return value
