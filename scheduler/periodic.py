"""Periodic jobs: a durable task submitted once per period, by every process that
runs its lane, and run once per period across all of them.

``@sched.periodic("*/5 * * * *")`` (a cron expression, UTC, parsed by croniter)
or ``@sched.periodic(every=timedelta(minutes=5))`` (periods aligned to the
Unix epoch, so every process computes the same ones) registers a task that
takes no arguments. While the scheduler runs the task's lane, a loop submits
the job of each period with the idempotency key ``periodic:<task>:<start>``
(``start`` in whole epoch seconds): the first process to submit it stores the
job, the others get the same job back, so a period runs once however many
processes share the backlog. The next period's job is submitted ahead with
``run_at`` at its start, so it waits in the backlog (and shows in
``floodgate jobs list``) until then, even if every process stops meanwhile.

Missed periods: when the loop starts, it submits the latest ``catch_up``
periods that began at or before now (default 1: one catch-up run after a
downtime, or at the first start). A period whose job is still in the backlog
is not run again (its key finds it); one purged after ``retention`` would be.
``catch_up=0`` skips missed periods.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from croniter import croniter  # type: ignore[import-untyped]

from .clock import Clock
from .errors import ConfigError, SchedulerError
from .lanes import LaneState
from .logs import get_logger
from .metrics import PeriodicStats
from .task_group import TaskGroup, cancel_and_wait

if TYPE_CHECKING:
    from .tasks import Task

__all__ = ["PeriodicRunner", "Schedule"]

_log = get_logger()

#: the key prefix of periodic jobs
KEY_PREFIX = "periodic:"
#: seconds a failed submit waits before the loop tries again
_RETRY_SUBMIT = 5.0
#: most missed periods one start catches up
MAX_CATCH_UP = 100


@dataclass(frozen=True, slots=True)
class Schedule:
    """When a periodic task runs: a cron expression (UTC) or a fixed interval."""

    cron: str | None = None
    every: float | None = None  # seconds

    @classmethod
    def parse(cls, cron: str | None, every: dt.timedelta | float | None) -> Schedule:
        """Check and build a schedule (exactly one of ``cron`` and ``every``)."""
        if (cron is None) == (every is None):
            raise ConfigError("a periodic task takes a cron expression or every=, not both")
        if cron is not None:
            if not isinstance(cron, str):
                raise TypeError(f"the cron expression must be a str, got {type(cron).__name__}")
            if not croniter.is_valid(cron):
                raise ConfigError(f"not a valid cron expression: {cron!r}")
            return cls(cron=cron)
        seconds = every.total_seconds() if isinstance(every, dt.timedelta) else every
        if isinstance(seconds, bool) or not isinstance(seconds, int | float):
            raise TypeError(f"every must be a timedelta or seconds, got {type(every).__name__}")
        if not math.isfinite(seconds) or seconds < 1:
            raise ConfigError(f"every must be at least one second, got {seconds!r}")
        return cls(every=float(seconds))

    def latest(self, wall: float) -> float:
        """The start (epoch seconds) of the latest period that began at or before ``wall``."""
        if self.every is not None:
            return math.floor(wall / self.every) * self.every
        return self._cron(wall + 1e-6, forward=False)

    def next_after(self, wall: float) -> float:
        """The start of the first period that begins after ``wall``."""
        if self.every is not None:
            return (math.floor(wall / self.every) + 1) * self.every
        return self._cron(wall, forward=True)

    def _cron(self, wall: float, *, forward: bool) -> float:
        assert self.cron is not None
        base = dt.datetime.fromtimestamp(wall, tz=dt.UTC)
        it = croniter(self.cron, base)
        return float(it.get_next(float) if forward else it.get_prev(float))

    def __str__(self) -> str:
        return self.cron if self.cron is not None else f"every {self.every:g} s"


@dataclass(slots=True)
class _Periodic:
    task: Task[[], Any]
    schedule: Schedule
    catch_up: int
    next_run: float | None = None  # wall clock: the next period's start (submitted ahead)


def period_key(task: str, start: float) -> str:
    """The idempotency key of ``task``'s period starting at ``start`` (epoch s)."""
    return f"{KEY_PREFIX}{task}:{round(start)}"


class PeriodicRunner:
    """Submits the periodic tasks of one scheduler (see the module docstring)."""

    def __init__(self, clock: Clock, lanes: Mapping[str, LaneState], group: TaskGroup) -> None:
        self._clock = clock
        self._lanes = lanes
        self._group = group
        self._entries: dict[str, _Periodic] = {}
        self._task: asyncio.Task[None] | None = None

    def add(self, task: Task[[], Any], schedule: Schedule, *, catch_up: int) -> None:
        """Run the registered ``task`` on ``schedule`` (its lane must be durable)."""
        lane = self._lanes[task.lane]
        if not lane.config.durable:
            raise ConfigError(
                f"periodic task {task.name!r} needs a durable lane; {task.lane!r} is not"
            )
        if task.name in self._entries:
            raise ConfigError(f"task {task.name!r} is already periodic")
        self._entries[task.name] = _Periodic(task, schedule, catch_up)

    def stats(self) -> tuple[PeriodicStats, ...]:
        """Each periodic task: its schedule and the next period's start (epoch s;
        while nothing here submits it, when its schedule says the next one begins)."""
        wall = self._clock.wall()
        return tuple(
            PeriodicStats(
                task=name,
                schedule=str(entry.schedule),
                lane=entry.task.lane,
                next_run=entry.schedule.next_after(wall)
                if entry.next_run is None
                else entry.next_run,
                scheduled_here=self._runs_here(entry),
            )
            for name, entry in self._entries.items()
        )

    def _runs_here(self, entry: _Periodic) -> bool:
        return self._lanes[entry.task.lane].run_here

    # -- the loop ---------------------------------------------------------------------

    def start(self) -> None:
        """Start submitting (only the tasks whose lane runs in this process)."""
        if self._task is None and any(self._runs_here(e) for e in self._entries.values()):
            self._task = self._group.start(self._run(), name="floodgate-periodic")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait(task)

    async def _run(self) -> None:
        clock = self._clock
        entries = [e for e in self._entries.values() if self._runs_here(e)]
        for entry in entries:
            await self._catch_up(entry)
        while True:
            wall = clock.wall()
            for entry in entries:
                if entry.next_run is None or entry.next_run <= wall:
                    await self._submit_next(entry)
            upcoming = [e.next_run for e in entries if e.next_run is not None]
            wait = (min(upcoming) - clock.wall()) if upcoming else _RETRY_SUBMIT
            await clock.sleep(max(0.001, min(wait, _RETRY_SUBMIT * 12)))

    async def _catch_up(self, entry: _Periodic) -> None:
        """Submit the latest ``catch_up`` periods that began at or before now."""
        wall = self._clock.wall()
        starts: list[float] = []
        start = entry.schedule.latest(wall)
        for _ in range(entry.catch_up):
            starts.append(start)
            start = entry.schedule.latest(start - 1e-3)
        for start in reversed(starts):
            await self._submit(entry, start, run_at=None)

    async def _submit_next(self, entry: _Periodic) -> None:
        """Submit the next period's job ahead, to run at the period's start (the one
        that has just begun was submitted ahead the same way)."""
        start = entry.schedule.next_after(self._clock.wall())
        if await self._submit(entry, start, run_at=start):
            entry.next_run = start

    async def _submit(self, entry: _Periodic, start: float, *, run_at: float | None) -> bool:
        key = period_key(entry.task.name, start)
        try:
            job = await entry.task.submit(key=key, run_at=run_at)
        except SchedulerError as exc:  # a full or locked backlog: try again later
            _log.warning("periodic.submit_failed", task=entry.task.name, key=key, error=str(exc))
            entry.next_run = self._clock.wall() + _RETRY_SUBMIT
            return False
        _log.debug("periodic.submitted", task=entry.task.name, key=key, job_id=job.id)
        return True
