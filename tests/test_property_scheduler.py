"""Property-based tests for the scheduler core.

Everything runs on a :class:`FakeClock`: time moves only through
``clock.advance()``, one due timer at a time, with the event loop allowed to go
quiet (every task blocked on a pending future) in between, so what the tests see
is what a real loop would do at those instants. Nothing sleeps on the wall clock.

* ``SchedulerMachine``: a hypothesis state machine that submits, finishes,
  fails and cancels jobs on 2-3 lanes (sometimes under a scheduler-wide
  ceiling with reserved seats, sometimes with a gated lane), moves time so
  timeouts and deadlines fire, pauses and resumes the gate, and shuts down.
  ``burst`` and ``seat_race`` also do several of these without letting the
  loop settle in between (a caller cancelled as a seat frees for it, a seat
  handed over just before a pause or a clock jump).
  Ceilings, queue bounds, seat counts, queue order and work conservation are
  checked after every step (and ceilings/order/gate/deadline also at every job
  start, from inside the job function), and every call's single outcome and the
  stats counters are checked at the end. ``AgingSchedulerMachine``: the same
  with aging lanes.
* ``test_priority_order`` / ``test_aging_order``: queue order on a lane with one
  seat, against a sorted-list model.
* ``test_priority_queue_model`` / ``..._aging_model``: ``PriorityQueue`` against
  a sorted-list model.

"Quiet" is ``scheduler.testing.wait_all_tasks_blocked()``: every other task is
blocked and nothing else is ready to run on the loop, so nothing can happen
until the test acts.
"""

from __future__ import annotations

import asyncio
import functools
import math
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeVar

import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from scheduler import (
    DeadlineExceeded,
    FakeClock,
    JobCancelled,
    JobTimeout,
    Lane,
    Overloaded,
    Scheduler,
    SchedulerClosed,
    current_job,
)
from scheduler.lanes import PriorityQueue
from scheduler.testing import wait_all_tasks_blocked

T = TypeVar("T")

# --------------------------------------------------------------------------- helpers


async def advance(clock: FakeClock, dt: float) -> None:
    """Move ``clock`` forward by ``dt``, stopping at every due timer to let tasks run."""
    target = clock.now() + dt
    while (when := clock.next_timer()) is not None and when <= target:
        now = clock.now()
        step = max(0.0, when - now)
        while now + step < when:  # never fall short of the timer by a rounding error
            step = math.nextafter(step, math.inf)
        clock.advance(step)
        await wait_all_tasks_blocked()
    clock.advance(max(0.0, target - clock.now()))
    await wait_all_tasks_blocked()


def run_in_new_loop(coro: Coroutine[Any, Any, T]) -> T:
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        _close_loop(loop)


def _close_loop(loop: asyncio.AbstractEventLoop) -> None:
    try:
        pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for task in pending:
            task.cancel()
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        loop.close()


class JobBoom(Exception):
    """The job's own error; must reach the caller unchanged."""


# --------------------------------------------------------------------------- the machine

LANE_NAMES = ("a", "b", "c")
TIMES = st.sampled_from([0.25, 0.5, 1.0, 1.5, 2.0, 3.0])

#: outcomes of a call that was never admitted (raised at submission)
REJECTED = frozenset({"overloaded", "deadline_admission", "closed"})
#: outcomes of an admitted call
ACCEPTED = frozenset(
    {
        "result",
        "own_error",
        "timeout",
        "deadline_queue",
        "job_cancelled",
        "closed",
        "cancelled",
    }
)


class JobSpec(NamedTuple):
    lane_index: int
    priority: float
    deadline: float | None  # None: no deadline; <= 0: shed at admission
    timeout: float | None
    mode: str  # "event" (waits for finish()), "sleep" (clock.sleep), "instant"
    sleep: float
    fail: bool  # sleep/instant jobs: raise JobBoom at the end


JOB_SPECS = st.builds(
    JobSpec,
    lane_index=st.integers(0, len(LANE_NAMES) - 1),
    priority=st.integers(-2, 2) | st.sampled_from([0.5, -0.5]),
    deadline=st.sampled_from([None, None, None, 0.0, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0]),
    timeout=st.none() | TIMES,
    mode=st.sampled_from(["event", "event", "sleep", "instant"]),
    sleep=TIMES,
    fail=st.booleans(),
)


@dataclass(eq=False)
class Rec:
    """One call() as the test sees it."""

    id: int
    lane: str
    priority: float
    deadline: float | None
    timeout: float | None
    mode: str  # "event" (waits for finish()), "sleep" (clock.sleep), "instant"
    sleep: float
    fail: bool
    submitted_at: float
    key: float  # expected queue order: priority + submitted_at / aging (see expected_key)
    event: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    accepted: bool | None = None
    queued_at_submit: int = 0
    scheduler_state_at_submit: str = ""
    started: bool = False
    start_time: float | None = None
    job_done: bool = False
    end_time: float | None = None
    released: bool = False
    cancel_requested: bool = False
    cancel_time: float | None = None
    outcome: str | None = None
    error: BaseException | None = None
    value: object = None
    outcome_time: float | None = None

    @property
    def deadline_at(self) -> float | None:
        return None if self.deadline is None else self.submitted_at + self.deadline


def _guarded(fn: Callable[..., None]) -> Callable[..., None]:
    """Mark the machine broken when a step fails, so teardown only cleans up."""

    @functools.wraps(fn)
    def wrapper(self: SchedulerMachine, *args: Any, **kwargs: Any) -> None:
        try:
            fn(self, *args, **kwargs)
        except BaseException:
            self.broken = True
            raise

    return wrapper


Config = tuple[list[Lane], int | None, float]


@st.composite
def scheduler_configs(draw: st.DrawFn, *, aging: bool) -> Config:
    n = draw(st.integers(2, 3))
    shared = draw(st.booleans())
    gated_idx = draw(st.none() | st.integers(0, n - 1))
    lanes = []
    for i in range(n):
        ceiling = draw(st.integers(1, 3))
        extra: dict[str, Any] = {}
        if shared:
            extra["reserved"] = draw(st.integers(0, ceiling))
        lanes.append(
            Lane(
                LANE_NAMES[i],
                max_concurrency=ceiling,
                max_queued=draw(st.integers(0, 4)),
                gated=i == gated_idx,
                # powers of two: keys stay exact, so ties are FIFO in any formula
                aging=draw(st.none() | st.sampled_from([0.5, 1.0, 2.0])) if aging else None,
                **extra,
            )
        )
    max_concurrency = None
    if shared:
        reserved = sum(lane.reserved for lane in lanes)
        total = sum(lane.max_concurrency for lane in lanes)
        max_concurrency = draw(st.integers(max(1, reserved), max(1, reserved, total - 1)))
    grace = draw(st.sampled_from([0.0, 0.5, 2.0]))
    return lanes, max_concurrency, grace


class SchedulerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.broken = False
        self.recs: list[Rec] = []
        self.violations: list[str] = []
        self.shutdown_at: float | None = None
        self.steps = 0
        # Set once time has moved without the loop settling at each timer (burst):
        # timings are then only bounded, not exact.
        self.raw_time = False
        # Seats handed to a waiter that had not resumed yet when the gate was paused /
        # time jumped: such a job may legitimately start while paused / past its
        # deadline (it got its seat before). Reset whenever the loop is quiet.
        self.paused_allowance: dict[str, int] = {}
        self.late_allowance: dict[str, int] = {}

    # ---------------------------------------------------------------- plumbing

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run one step's coroutine; every step ends with the loop quiet."""
        result = self.loop.run_until_complete(coro)
        self.steps += 1
        self.paused_allowance.clear()
        self.late_allowance.clear()
        return result

    def handed_not_started(self) -> dict[str, int]:
        """Seats the scheduler handed out whose job has not begun yet, per lane."""
        stats = self.sched.stats()
        return {n: stats.lanes[n].running - self.in_job[n] for n in self.lanes}

    def raw_advance(self, dt: float) -> None:
        """Move the clock without letting the loop run at each timer on the way."""
        self.raw_time = True
        for lane, n in self.handed_not_started().items():
            self.late_allowance[lane] = self.late_allowance.get(lane, 0) + n
        self.clock.advance(dt)

    def pause(self) -> None:
        if self.sched.gate.is_open:
            self.paused_allowance = self.handed_not_started()
        self.sched.gate.pause("test")

    def pending(self) -> list[Rec]:
        return [r for r in self.recs if r.task is not None and not r.task.done()]

    def model_queued(self, lane: str) -> list[Rec]:
        """Admitted calls still waiting for a seat, as far as the test knows."""
        return [
            r
            for r in self.recs
            if r.lane == lane and r.accepted and not r.started and r.outcome is None
        ]

    def eligible_waiters(self, lane: str) -> list[Rec]:
        now = self.clock.now()
        return [
            r
            for r in self.model_queued(lane)
            if not r.cancel_requested and (r.deadline_at is None or now < r.deadline_at)
        ]

    def expected_key(self, lane: str, priority: float, now: float) -> float:
        """Queue order of a job enqueued at ``now``, lowest first, FIFO among equals.

        Aging improves a waiting job's effective priority by one level per ``aging``
        seconds: at time T it is ``priority - (T - now) / aging``. T is common to all
        waiters, so the order is that of ``priority + now / aging``.
        """
        aging = self.lanes[lane].aging
        return priority + now / aging if aging else priority

    # ---------------------------------------------------------------- jobs and callers

    async def job(self, rec: Rec) -> tuple[str, int]:
        clock = self.clock
        lane = rec.lane
        self.on_job_start(rec)
        try:
            if rec.mode == "event":
                await rec.event.wait()
            elif rec.mode == "sleep":
                await clock.sleep(rec.sleep)
            if rec.fail:
                raise JobBoom(rec.id)
            return ("done", rec.id)
        finally:
            self.in_job[lane] -= 1
            rec.job_done = True
            rec.end_time = clock.now()

    def on_job_start(self, rec: Rec) -> None:
        clock = self.clock
        sched = self.sched
        lane = rec.lane
        cfg = self.lanes[lane]
        now = clock.now()
        bad = self.violations.append
        if rec.started:
            bad(f"job {rec.id} ran twice")
        if rec.outcome is not None:
            bad(f"job {rec.id} started after its caller got {rec.outcome}")
        # Order: no waiter of this lane that is still eligible comes before us.
        if rec.accepted is None:
            # Still in admission: it took a free seat at once, so nobody may be waiting.
            if waiting := self.eligible_waiters(lane):
                bad(f"job {rec.id} took a seat at admission past {[r.id for r in waiting]}")
        else:
            mine = (rec.key, rec.id)
            for other in self.eligible_waiters(lane):
                if other is not rec and (other.key, other.id) < mine:
                    bad(
                        f"job {rec.id} (key {rec.key}) started before waiting job "
                        f"{other.id} (key {other.key}) in lane {lane}"
                    )
        rec.started = True
        rec.start_time = now
        self.in_job[lane] += 1
        if self.in_job[lane] > cfg.max_concurrency:
            bad(f"lane {lane}: {self.in_job[lane]} jobs running > {cfg.max_concurrency}")
        total = sum(self.in_job.values())
        if self.max_concurrency is not None and total > self.max_concurrency:
            bad(f"{total} jobs running > scheduler max_concurrency {self.max_concurrency}")
        stats = sched.stats()
        if stats.lanes[lane].running < self.in_job[lane]:
            bad(f"lane {lane}: stats running {stats.lanes[lane].running} < {self.in_job[lane]}")
        if cfg.gated and not sched.gate.is_open:
            if self.paused_allowance.get(lane, 0) > 0:
                self.paused_allowance[lane] -= 1
            else:
                bad(f"job {rec.id} started in gated lane {lane} while the gate is paused")
        if stats.state == "stopped":
            bad(f"job {rec.id} started after the scheduler stopped")
        if rec.deadline_at is not None and not now < rec.deadline_at:
            if self.late_allowance.get(lane, 0) > 0:
                self.late_allowance[lane] -= 1
            else:
                bad(f"job {rec.id} started at {now}, not before its deadline {rec.deadline_at}")
        ctx = current_job()
        if ctx.lane != lane or ctx.priority != rec.priority:
            bad(f"job {rec.id}: wrong current_job() {ctx}")
        if rec.timeout is not None and ctx.timeout_at != now + rec.timeout:
            bad(f"job {rec.id}: timeout_at {ctx.timeout_at} != {now} + {rec.timeout}")

    async def caller(self, rec: Rec) -> None:
        try:
            value = await self.sched.call(
                self.job,
                rec,
                lane=rec.lane,
                priority=rec.priority,
                deadline=rec.deadline,
                timeout=rec.timeout,
            )
        except asyncio.CancelledError as exc:
            self.record(rec, "cancelled", exc)
        except JobBoom as exc:
            self.record(rec, "own_error", exc)
        except JobTimeout as exc:
            self.record(rec, "timeout", exc)
        except JobCancelled as exc:
            self.record(rec, "job_cancelled", exc)
        except Overloaded as exc:
            self.record(rec, "overloaded", exc)
        except DeadlineExceeded as exc:
            self.record(rec, f"deadline_{exc.where}", exc)
        except SchedulerClosed as exc:
            self.record(rec, "closed", exc)
        except Exception as exc:
            self.record(rec, f"unexpected {type(exc).__name__}: {exc}", exc)
        else:
            self.record(rec, "result", None)
            rec.value = value

    def record(self, rec: Rec, outcome: str, error: BaseException | None) -> None:
        if rec.outcome is not None:
            self.violations.append(f"call {rec.id} ended twice: {rec.outcome}, {outcome}")
        rec.outcome = outcome
        rec.error = error
        rec.outcome_time = self.clock.now()

    # ---------------------------------------------------------------- setup

    @initialize(config=scheduler_configs(aging=False))
    @_guarded
    def setup(self, config: Config) -> None:
        self._setup(config)

    def _setup(self, config: Config) -> None:
        lanes, max_concurrency, grace = config
        self.lanes = {lane.name: lane for lane in lanes}
        self.max_concurrency = max_concurrency
        self.grace = grace
        self.clock = FakeClock()
        self.sched = Scheduler(
            ":memory:",
            lanes=lanes,
            clock=self.clock,
            shutdown_grace=grace,
            max_concurrency=max_concurrency,
        )
        self.in_job = dict.fromkeys(self.lanes, 0)
        self.run(self._start())

    async def _start(self) -> None:
        self.stop = asyncio.Event()
        started = asyncio.Event()

        async def host() -> None:
            async with self.sched:
                started.set()
                await self.stop.wait()

        self.host = asyncio.create_task(host())
        await started.wait()
        await wait_all_tasks_blocked()

    # ---------------------------------------------------------------- rules

    # After the shutdown, keep submitting only while it drains (SchedulerClosed).
    @precondition(lambda self: self.sched.stats().state == "running" or not self.host.done())
    @rule(jobs=st.lists(JOB_SPECS, min_size=1, max_size=3))
    @_guarded
    def submit(self, jobs: list[JobSpec]) -> None:
        for spec in jobs:
            self.run(self._submit(spec))

    async def _submit(self, spec: JobSpec) -> None:
        lane = LANE_NAMES[spec.lane_index % len(self.lanes)]
        mode = spec.mode
        priority = spec.priority
        now = self.clock.now()
        before = self.sched.stats()
        rec = Rec(
            id=len(self.recs),
            lane=lane,
            priority=priority,
            deadline=spec.deadline,
            timeout=spec.timeout,
            mode=mode,
            sleep=spec.sleep,
            fail=spec.fail and mode != "event",
            submitted_at=now,
            key=self.expected_key(lane, priority, now),
            queued_at_submit=before.lanes[lane].queued,
            scheduler_state_at_submit=before.state,
        )
        self.recs.append(rec)
        rec.task = asyncio.create_task(self.caller(rec))
        # The loop was quiet, so the new task's first step (admission) runs next.
        await asyncio.sleep(0)
        admitted = self.sched.stats().lanes[lane].admitted - before.lanes[lane].admitted
        assert admitted in (0, 1), admitted
        rec.accepted = admitted == 1
        await wait_all_tasks_blocked()

    @precondition(lambda self: any(r.mode == "event" and not r.released for r in self.pending()))
    @rule(index=st.integers(0, 1000), fail=st.booleans())
    @_guarded
    def finish(self, index: int, fail: bool) -> None:
        """Let an event job (running, or still waiting) end with a result or its own error."""
        choices = [r for r in self.pending() if r.mode == "event" and not r.released]
        self._finish(choices[index % len(choices)], fail)
        self.run(wait_all_tasks_blocked())

    def _finish(self, rec: Rec, fail: bool) -> None:
        rec.fail = fail
        rec.released = True
        rec.event.set()

    @precondition(lambda self: any(not r.cancel_requested for r in self.pending()))
    @rule(index=st.integers(0, 1000))
    @_guarded
    def cancel_caller(self, index: int) -> None:
        choices = [r for r in self.pending() if not r.cancel_requested]
        self._cancel(choices[index % len(choices)])
        self.run(wait_all_tasks_blocked())

    def _cancel(self, rec: Rec) -> None:
        assert rec.task is not None
        rec.cancel_requested = True
        rec.cancel_time = self.clock.now()
        rec.task.cancel()

    @rule(dt=TIMES)
    @_guarded
    def advance_clock(self, dt: float) -> None:
        self.run(advance(self.clock, dt))

    @precondition(lambda self: self.sched.gate.is_open)
    @rule()
    @_guarded
    def pause_gate(self) -> None:
        self.pause()
        self.run(wait_all_tasks_blocked())

    @precondition(lambda self: not self.sched.gate.is_open)
    @rule()
    @_guarded
    def resume_gate(self) -> None:
        self.sched.gate.resume()
        self.run(wait_all_tasks_blocked())

    @rule(
        actions=st.lists(
            st.one_of(
                st.tuples(st.just("cancel"), st.integers(0, 1000)),
                st.tuples(st.just("finish"), st.integers(0, 1000), st.booleans()),
                st.tuples(st.just("yield"), st.integers(1, 3)),
                st.tuples(st.just("advance"), TIMES),
                st.tuples(st.just("pause")),
                st.tuples(st.just("resume")),
            ),
            min_size=2,
            max_size=6,
        )
    )
    @_guarded
    def burst(self, actions: list[tuple[Any, ...]]) -> None:
        """Several things at (nearly) the same instant, without letting the loop settle
        in between: races between a cancel, a finishing job, a handed-over seat, a
        timer and the gate."""
        self.run(self._burst(actions))

    async def _burst(self, actions: list[tuple[Any, ...]]) -> None:
        for action in actions:
            name = action[0]
            if name == "cancel":
                choices = [r for r in self.pending() if not r.cancel_requested]
                if choices:
                    self._cancel(choices[action[1] % len(choices)])
            elif name == "finish":
                choices = [r for r in self.pending() if r.mode == "event" and not r.released]
                if choices:
                    self._finish(choices[action[1] % len(choices)], action[2])
            elif name == "yield":
                for _ in range(action[1]):
                    await asyncio.sleep(0)
            elif name == "advance":
                self.raw_advance(action[1])
            elif name == "pause":
                self.pause()
            elif name == "resume":
                self.sched.gate.resume()
        await wait_all_tasks_blocked()

    @precondition(lambda self: any(self.waiting_callers(lane) for lane in self.lanes))
    @rule(
        index=st.integers(0, 1000),
        trigger=st.sampled_from(["finish", "fail", "resume", "timer"]),
        cancel_first=st.booleans(),
        yields=st.integers(0, 2),
    )
    @_guarded
    def seat_race(self, index: int, trigger: str, cancel_first: bool, yields: int) -> None:
        """A waiter's caller is cancelled just as a seat frees in its lane: before the
        seat is handed over, or after it was handed but before the waiter resumed."""
        waiters = [r for lane in self.lanes for r in self.waiting_callers(lane)]
        self.run(self._seat_race(waiters[index % len(waiters)], trigger, cancel_first, yields))

    def waiting_callers(self, lane: str) -> list[Rec]:
        return [r for r in self.model_queued(lane) if not r.cancel_requested]

    async def _seat_race(self, waiter: Rec, trigger: str, cancel_first: bool, yields: int) -> None:
        if cancel_first:
            self._cancel(waiter)
        if trigger in ("finish", "fail"):
            running = [
                r
                for r in self.pending()
                if r.lane == waiter.lane and r.started and r.mode == "event" and not r.released
            ]
            if running:
                self._finish(running[0], trigger == "fail")
        elif trigger == "resume":
            self.sched.gate.resume()
        elif (when := self.clock.next_timer()) is not None:
            self.raw_advance(max(0.0, when - self.clock.now()))
        for _ in range(yields):
            await asyncio.sleep(0)
        if not cancel_first and waiter.task is not None and not waiter.task.done():
            self._cancel(waiter)
        await wait_all_tasks_blocked()

    @precondition(lambda self: self.shutdown_at is None and self.steps >= 30)
    @rule()
    @_guarded
    def shutdown(self) -> None:
        self.run(self._shutdown())

    async def _shutdown(self) -> None:
        self.shutdown_at = self.clock.now()
        self.stop.set()
        await wait_all_tasks_blocked()

    # ---------------------------------------------------------------- invariants

    @invariant()
    @_guarded
    def no_violations(self) -> None:
        assert not self.violations, self.violations

    @invariant()
    @_guarded
    def seats_and_queues(self) -> None:
        stats = self.sched.stats()
        total = 0
        for name, cfg in self.lanes.items():
            ls = stats.lanes[name]
            running = self.in_job[name]
            total += running
            assert running <= cfg.max_concurrency
            assert ls.queued <= cfg.max_queued
            # The loop is quiet: every seat handed out is in use by a running job.
            assert ls.running == running, (name, ls.running, running)
            assert ls.queued == len(self.model_queued(name)), (name, ls.queued)
            shed_queue = ls.shed.get("deadline_queue", 0)
            assert ls.admitted == (
                ls.completed + ls.failed + ls.cancelled + shed_queue + ls.queued + ls.running
            ), (name, ls)
        if self.max_concurrency is not None:
            assert total <= self.max_concurrency
        assert stats.running == total
        if stats.state == "stopped":
            assert total == 0
            assert all(ls.queued == 0 for ls in stats.lanes.values())

    @invariant()
    @_guarded
    def work_conserving(self) -> None:
        """No seat a waiter could take stays free once the loop is quiet.

        A gated lane may also be held by interactive pressure (a non-gated lane
        has waiters) and by its adaptive limit (``LaneStats.limit``).
        """
        gate_open = self.sched.gate.is_open
        stats = self.sched.stats()
        pressure = [n for n, c in self.lanes.items() if not c.gated and stats.lanes[n].queued]
        shared_cap = None
        shared_used = 0
        if self.max_concurrency is not None:
            shared_cap = self.max_concurrency - sum(c.reserved for c in self.lanes.values())
            shared_used = sum(max(0, self.in_job[n] - c.reserved) for n, c in self.lanes.items())
        for name, cfg in self.lanes.items():
            if not self.eligible_waiters(name):
                continue
            running = self.in_job[name]
            limit = getattr(stats.lanes[name], "limit", None)
            blocked = (
                running >= cfg.max_concurrency
                or (cfg.gated and (not gate_open or bool(pressure)))
                or (cfg.gated and limit is not None and running >= limit)
                or (
                    shared_cap is not None and running >= cfg.reserved and shared_used >= shared_cap
                )
            )
            assert blocked, (
                f"lane {name} has waiters but a free seat: running {running}, "
                f"shared {shared_used}/{shared_cap}, gate open {gate_open}, "
                f"waiting in non-gated lanes {pressure}, limit {limit}"
            )

    # ---------------------------------------------------------------- the end

    def teardown(self) -> None:
        try:
            if not self.broken and hasattr(self, "sched"):
                self.run(self._drain())
                self.final_checks()
        finally:
            _close_loop(self.loop)

    async def _drain(self) -> None:
        if self.shutdown_at is None:
            await self._shutdown()
        for _ in range(20):
            if self.host.done():
                break
            await advance(self.clock, max(self.grace, 0.25))
        assert self.host.done(), "shutdown did not finish after its grace"
        self.host.result()
        await wait_all_tasks_blocked()
        assert not self.pending(), [r.id for r in self.pending()]
        assert self.sched.stats().state == "stopped"

    def final_checks(self) -> None:
        assert not self.violations, self.violations
        assert self.shutdown_at is not None
        grace_end = self.shutdown_at + self.grace
        counts: dict[str, dict[str, int]] = {n: {} for n in self.lanes}
        for rec in self.recs:
            what = f"call {rec.id}: {rec}"
            assert rec.outcome is not None, what
            assert rec.accepted is not None, what
            counts[rec.lane][rec.outcome] = counts[rec.lane].get(rec.outcome, 0) + 1
            assert rec.outcome in (ACCEPTED if rec.accepted else REJECTED), what
            if rec.started:
                assert rec.job_done, what
                assert rec.outcome in (
                    "result",
                    "own_error",
                    "timeout",
                    "job_cancelled",
                    "cancelled",
                )
            if rec.cancel_requested:
                assert rec.outcome == "cancelled", what
            else:
                assert rec.outcome != "cancelled", what
            if rec.outcome == "result":
                assert rec.started, what
                assert rec.value == ("done", rec.id), what
                assert not rec.fail, what
                if rec.timeout is not None:
                    assert rec.end_time < rec.start_time + rec.timeout, what
                if rec.mode == "sleep":
                    assert rec.end_time is not None, what
                    assert rec.start_time is not None, what
                    if self.raw_time:
                        assert rec.end_time >= rec.start_time + rec.sleep, what
                    else:
                        assert rec.end_time == rec.start_time + rec.sleep, what
            elif rec.outcome == "own_error":
                assert rec.started, what
                assert rec.fail, what
                assert isinstance(rec.error, JobBoom), what
                assert rec.error.args == (rec.id,), what
            elif rec.outcome == "timeout":
                assert rec.started, what
                assert rec.timeout is not None, what
                assert rec.outcome_time is not None, what
                assert rec.start_time is not None, what
                if self.raw_time:
                    assert rec.outcome_time >= rec.start_time + rec.timeout, what
                else:
                    assert rec.outcome_time == rec.start_time + rec.timeout, what
                    if rec.mode == "sleep":
                        assert rec.sleep >= rec.timeout, what
            elif rec.outcome == "deadline_queue":
                assert not rec.started, what
                assert rec.deadline_at is not None, what
                assert rec.outcome_time is not None, what
                assert rec.outcome_time >= rec.deadline_at, what
            elif rec.outcome == "job_cancelled":
                # Cancelled by the shutdown: usually while running, but also when it
                # had been handed a seat during the grace and had not resumed yet.
                assert rec.outcome_time is not None, what
                assert rec.outcome_time >= grace_end, what
            elif rec.outcome == "closed":
                assert not rec.started, what
                if rec.accepted:  # dropped from the queue when the grace ran out
                    assert rec.outcome_time is not None, what
                    assert rec.outcome_time >= grace_end, what
                else:
                    assert rec.scheduler_state_at_submit != "running", what
            elif rec.outcome == "overloaded":
                assert not rec.started, what
                assert rec.queued_at_submit >= self.lanes[rec.lane].max_queued, what
                assert rec.scheduler_state_at_submit == "running", what
            elif rec.outcome == "deadline_admission":
                assert not rec.started, what
                assert rec.deadline is not None, what
                assert rec.scheduler_state_at_submit == "running", what
            if rec.accepted and rec.started is False and rec.outcome != "cancelled":
                assert rec.outcome in ("deadline_queue", "closed", "job_cancelled"), what
        stats = self.sched.stats()
        for name in self.lanes:
            ls = stats.lanes[name]
            c = counts[name]
            shed = dict(ls.shed)
            assert ls.queued == 0, ls
            assert ls.running == 0, ls
            assert ls.admitted == ls.completed + ls.failed + ls.cancelled + shed.get(
                "deadline_queue", 0
            ), ls
            accepted = [r for r in self.recs if r.lane == name and r.accepted]
            assert ls.admitted == len(accepted), ls
            started = sum(1 for r in accepted if r.started)
            assert ls.wait.count == started, (ls.wait, started)
            assert ls.run.count == started, (ls.run, started)
            assert ls.completed == c.get("result", 0), (ls, c)
            assert ls.failed == c.get("own_error", 0) + c.get("timeout", 0), (ls, c)
            assert shed.get("queue_full", 0) == c.get("overloaded", 0), (ls, c)
            assert shed.get("deadline_admission", 0) == c.get("deadline_admission", 0), (ls, c)
            closed_accepted = sum(1 for r in accepted if r.outcome == "closed")
            cancelled_accepted = sum(1 for r in accepted if r.outcome == "cancelled")
            # We cancelled a caller whose deadline had already shed it from the
            # queue (it had not resumed yet): the caller sees CancelledError, the
            # scheduler counted the shed. Either count is right.
            ambiguous = sum(
                1
                for r in accepted
                if r.outcome == "cancelled"
                and not r.started
                and r.deadline_at is not None
                and r.cancel_time is not None
                and r.cancel_time >= r.deadline_at
            )
            expected_cancelled = c.get("job_cancelled", 0) + closed_accepted + cancelled_accepted
            assert expected_cancelled - ambiguous <= ls.cancelled <= expected_cancelled, (ls, c)
            assert ls.cancelled + shed.get("deadline_queue", 0) == expected_cancelled + c.get(
                "deadline_queue", 0
            ), (ls, c)


class AgingSchedulerMachine(SchedulerMachine):
    """The same, with aging lanes: queue order is then by effective priority."""

    @initialize(config=scheduler_configs(aging=True))
    @_guarded
    def setup(self, config: Config) -> None:
        self._setup(config)


MACHINE_SETTINGS = settings(
    max_examples=400,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    # no "explain" phase: it traces every line and takes minutes on a long machine
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
)
SchedulerMachine.TestCase.settings = MACHINE_SETTINGS
AgingSchedulerMachine.TestCase.settings = MACHINE_SETTINGS
# A failing machine takes a while to shrink; give it room beyond the default 60 s.
TestSchedulerMachine = pytest.mark.timeout(300)(SchedulerMachine.TestCase)
TestAgingSchedulerMachine = pytest.mark.timeout(300)(AgingSchedulerMachine.TestCase)


# --------------------------------------------------------------------------- queue order

PRIORITIES = st.integers(-3, 3) | st.sampled_from([-1.5, 0.0, 0.5, 1.0, 2.0])


async def _order_run(lane: Lane, jobs: list[tuple[float, float]]) -> tuple[list[int], list[float]]:
    """Queue ``jobs`` ((priority, wait before submitting)) behind a blocker on a
    one-seat lane; release the blocker; return the start order and enqueue times."""
    clock = FakeClock()
    sched = Scheduler(":memory:", lanes=[lane], clock=clock, shutdown_grace=0)
    order: list[int] = []
    enqueued: list[float] = []
    release = asyncio.Event()

    async def blocker() -> None:
        await release.wait()

    async def job(i: int) -> int:
        order.append(i)
        await asyncio.sleep(0)
        return i

    async with sched:
        first = asyncio.create_task(sched.call(blocker, lane=lane.name))
        await wait_all_tasks_blocked()
        tasks = []
        for i, (priority, wait) in enumerate(jobs):
            await advance(clock, wait)
            enqueued.append(clock.now())
            tasks.append(asyncio.create_task(sched.call(job, i, lane=lane.name, priority=priority)))
            await wait_all_tasks_blocked()
        assert sched.stats().lanes[lane.name].queued == len(jobs)
        assert order == []
        release.set()
        await first
        assert await asyncio.gather(*tasks) == list(range(len(jobs)))
    return order, enqueued


@settings(max_examples=150, deadline=None)
@given(
    jobs=st.lists(
        st.tuples(PRIORITIES, st.sampled_from([0.0, 0.0, 0.5, 1.0])), min_size=1, max_size=12
    )
)
def test_priority_order(jobs: list[tuple[float, float]]) -> None:
    """One seat, a blocked first job: the rest start by priority, FIFO among equals."""
    lane = Lane("only", max_concurrency=1, max_queued=len(jobs))
    order, _ = run_in_new_loop(_order_run(lane, jobs))
    assert order == sorted(range(len(jobs)), key=lambda i: (jobs[i][0], i))


def _effective_order(
    jobs: list[tuple[float, float]], enqueued: list[float], aging: float
) -> list[int]:
    """Start order by effective priority when the blocker ends at ``now = enqueued[-1]``.

    A job that has waited ``w`` seconds has effective priority ``priority - w / aging``
    (one level better per ``aging`` seconds); FIFO among equals.
    """
    now = enqueued[-1]
    effective = [jobs[i][0] - (now - enqueued[i]) / aging for i in range(len(jobs))]
    return sorted(range(len(jobs)), key=lambda i: (effective[i], i))


@settings(max_examples=150, deadline=None)
@given(
    # powers of two with quarter-second waits: every key is exact, ties are real ties
    aging=st.sampled_from([0.25, 0.5, 1.0, 2.0, 4.0]),
    jobs=st.lists(
        st.tuples(PRIORITIES, st.sampled_from([0.0, 0.25, 0.5, 1.0, 2.0, 5.0])),
        min_size=1,
        max_size=12,
    ),
)
# A priority-2 job that waited 3.5 s (aging 1 s) starts before later priority-0 ones.
@example(aging=1.0, jobs=[(2, 0.0), (0, 3.0), (0, 0.5)])
def test_aging_order(aging: float, jobs: list[tuple[float, float]]) -> None:
    """With aging, waiters start by effective priority (``priority - waited / aging``),
    i.e. by ``priority + enqueued_at / aging``, FIFO among equals."""
    lane = Lane("aged", max_concurrency=1, max_queued=len(jobs), aging=aging)
    order, enqueued = run_in_new_loop(_order_run(lane, jobs))
    assert order == _effective_order(jobs, enqueued, aging)


def test_aging_lets_an_old_low_priority_job_overtake() -> None:
    """aging=1 s: priority 2 queued at t=0 beats priority 0 queued at t=3 and t=3.5.

    When the seat frees (t=3.5) their effective priorities are 2 - 3.5 = -1.5,
    0 - 0.5 = -0.5 and 0 - 0 = 0. Equal priorities stay FIFO.
    """
    jobs = [(2.0, 0.0), (0.0, 3.0), (0.0, 0.5)]
    order, _ = run_in_new_loop(_order_run(Lane("aged", max_concurrency=1, aging=1.0), jobs))
    assert order == [0, 1, 2]
    # without aging the old job goes last
    order, _ = run_in_new_loop(_order_run(Lane("plain", max_concurrency=1), jobs))
    assert order == [1, 2, 0]


# --------------------------------------------------------------------------- PriorityQueue

QUEUE_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("push"), PRIORITIES, st.sampled_from([0.0, 0.5, 1.0])),
        st.tuples(st.just("push_many"), st.lists(PRIORITIES, min_size=1, max_size=80)),
        st.tuples(st.just("pop")),
        st.tuples(st.just("peek")),
        st.tuples(st.just("remove"), st.integers(0, 10_000)),
        st.tuples(st.just("remove_many"), st.integers(1, 4), st.integers(0, 3)),
    ),
    max_size=60,
)


def _check_queue_against_model(aging: float | None, ops: list[tuple[Any, ...]]) -> None:
    """push/pop/peek/remove/len/iter agree with a sorted list of live (key, seq, item).

    The model's key is the queue order of a waiter: ``priority`` without aging,
    ``priority + enqueued_at / aging`` with it (see ``SchedulerMachine.expected_key``).
    """
    queue: PriorityQueue[int] = PriorityQueue(aging)
    model: list[tuple[float, int, int]] = []  # live entries, kept sorted
    tokens: list[tuple[list[object], tuple[float, int, int]]] = []  # every entry pushed
    now = 0.0
    seq = 0

    def push(priority: float) -> None:
        nonlocal seq
        seq += 1
        key = priority + now / aging if aging else priority
        item = seq * 10
        token = queue.push(item, priority, now)
        model.append((key, seq, item))
        model.sort()
        tokens.append((token, (key, seq, item)))

    def remove(index: int) -> None:
        token, entry = tokens[index]
        alive = entry in model
        assert queue.remove(token) is alive
        if alive:
            model.remove(entry)
        assert queue.remove(token) is False  # a second removal is a no-op

    for op in ops:
        name = op[0]
        if name == "push":
            now += op[2]
            push(op[1])
        elif name == "push_many":
            for priority in op[1]:
                push(priority)
        elif name == "pop":
            got = queue.pop()
            assert got == (model.pop(0)[2] if model else None)
        elif name == "peek":
            assert queue.peek() == (model[0][2] if model else None)
        elif name == "remove" and tokens:
            remove(op[1] % len(tokens))
        elif name == "remove_many" and tokens:
            step, offset = op[1], op[2]
            for index in range(offset % len(tokens), len(tokens), step):
                remove(index)
        assert len(queue) == len(model)
        assert bool(queue) is bool(model)
        assert sorted(queue) == sorted(item for _, _, item in model)
    # drain: everything left comes out in model order
    drained = []
    while (item := queue.pop()) is not None:
        drained.append(item)
    assert drained == [item for _, _, item in model]
    assert len(queue) == 0
    assert not queue


@settings(max_examples=300, deadline=None)
@given(ops=QUEUE_OPS)
def test_priority_queue_model(ops: list[tuple[Any, ...]]) -> None:
    _check_queue_against_model(None, ops)


@settings(max_examples=200, deadline=None)
@given(aging=st.sampled_from([0.25, 0.5, 1.0, 2.0]), ops=QUEUE_OPS)
def test_priority_queue_aging_model(aging: float, ops: list[tuple[Any, ...]]) -> None:
    _check_queue_against_model(aging, ops)


# --------------------------------------------------------------------------- gated lanes


async def _gated_rounds(ceiling: int, rounds: int) -> list[int]:
    """``rounds`` times: queue ``ceiling`` jobs on a gated lane, then let them all end.

    Returns the peak number of jobs running at once in each round.
    """
    clock = FakeClock()
    lane = Lane("batch", max_concurrency=ceiling, max_queued=ceiling, gated=True)
    sched = Scheduler(":memory:", lanes=[lane], clock=clock, shutdown_grace=0)
    peaks = []
    running = 0
    peak = 0

    async def job(release: asyncio.Event) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        try:
            await release.wait()
        finally:
            running -= 1

    async with sched:
        for _ in range(rounds):
            peak = 0
            release = asyncio.Event()
            calls = [
                asyncio.create_task(sched.call(job, release, lane="batch")) for _ in range(ceiling)
            ]
            await wait_all_tasks_blocked()
            release.set()
            await asyncio.gather(*calls)
            await wait_all_tasks_blocked()
            peaks.append(peak)
    return peaks


@settings(max_examples=10, deadline=None)
@given(ceiling=st.integers(2, 4))
def test_gated_lane_reaches_its_ceiling_without_an_upstream(ceiling: int) -> None:
    """A gated lane whose jobs name no upstream still gets to run ``max_concurrency``
    jobs at once: nothing feeds an adaptive limit, so none may pin it at 1 (at most
    a slow start over the first healthy rounds)."""
    peaks = run_in_new_loop(_gated_rounds(ceiling, rounds=8))
    assert peaks[-1] == ceiling, peaks


async def _pressure_lifts(how: str) -> tuple[int, int]:
    """A live job is queued on its lane's own ceiling beside a gated job; then that
    live job leaves the queue (``how``). Returns the gated lane's (queued, running)."""
    clock = FakeClock()
    lanes = [
        Lane("live", max_concurrency=1, max_queued=1),
        Lane("batch", max_concurrency=1, max_queued=1, gated=True),
    ]
    sched = Scheduler(":memory:", lanes=lanes, clock=clock, shutdown_grace=0)
    hold_live = asyncio.Event()
    hold_batch = asyncio.Event()

    async def job(hold: asyncio.Event) -> None:
        await hold.wait()

    async with sched:
        live1 = asyncio.create_task(sched.call(job, hold_live, lane="live"))
        await wait_all_tasks_blocked()
        live2 = asyncio.create_task(sched.call(job, hold_live, lane="live", deadline=1.0))
        await wait_all_tasks_blocked()
        batch = asyncio.create_task(sched.call(job, hold_batch, lane="batch"))
        await wait_all_tasks_blocked()
        stats = sched.stats()
        assert (stats.lanes["live"].queued, stats.lanes["batch"].running) == (1, 1)
        if how == "cancel":  # the queued live caller gives up
            live2.cancel()
        elif how == "deadline":  # its deadline sheds it from the queue
            await advance(clock, 1.0)
        else:  # "start": the running live job ends and the queued one takes its seat
            hold_live.set()
            await wait_all_tasks_blocked()
            await advance(clock, 1.0)
        await wait_all_tasks_blocked()
        stats = sched.stats()
        result = (stats.lanes["batch"].queued, stats.lanes["batch"].running)
        hold_live.set()
        hold_batch.set()
        await asyncio.gather(live1, live2, batch, return_exceptions=True)
    return result


@settings(max_examples=10, deadline=None)
@given(how=st.sampled_from(["start", "cancel", "deadline"]))
def test_gated_work_is_not_held_by_a_live_queue_on_its_own_ceiling(how: str) -> None:
    """Gated work yields only to live work waiting for seats it could free (the
    shared ceiling's): a live lane queued on its own full ceiling does not hold
    it, before or after that queue empties (started, cancelled or shed)."""
    assert run_in_new_loop(_pressure_lifts(how)) == (0, 1)
