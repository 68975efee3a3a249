"""The injectable clock every timing in Floodgate goes through.

A clock answers three questions: what time is it (``now()``, monotonic seconds),
call this back at that time (``call_at()``), and sleep until then (``sleep()``).
The scheduler never reads ``time.*`` or ``loop.time()`` itself, so a test can
hand it a :class:`FakeClock` and move time forward with ``advance()`` instead of
sleeping.

- :class:`SystemClock` is the default: the running event loop's monotonic time,
  and ``time.time()`` for ``wall()``.
- :class:`FakeClock` starts at 0.0 and only moves when told to; timers due by
  then fire, in order, during ``advance()``.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from ._quiet import wait_all_tasks_blocked

__all__ = ["Clock", "FakeClock", "SystemClock", "TimerHandle"]


@runtime_checkable
class TimerHandle(Protocol):
    """A scheduled callback that can still be cancelled."""

    def cancel(self) -> None: ...


@runtime_checkable
class Clock(Protocol):
    """Monotonic time, timers and sleep: all the scheduler needs of time."""

    def now(self) -> float:
        """Monotonic seconds; only differences are meaningful."""
        ...

    def wall(self) -> float:
        """Wall-clock epoch seconds: the time base shared with other processes
        (leases and ``run_at`` in the persistent backlog)."""
        ...

    def call_at(self, when: float, callback: Callable[[], object]) -> TimerHandle:
        """Run ``callback`` (on the event loop) once ``now() >= when``."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Suspend the calling task for ``seconds`` of this clock's time."""
        ...


#: the ``time()`` of asyncio's own event loops: ``time.monotonic()``
_ASYNCIO_TIME = asyncio.BaseEventLoop.time


def _running_loop_time() -> float:
    return asyncio.get_running_loop().time()


class SystemClock:
    """The real clock: the running event loop's monotonic time and timers.

    ``now()`` reads ``time.monotonic()`` itself, which is what asyncio's own loops'
    ``time()`` returns: finding the running loop first cost about three times the
    read, and the scheduler reads the time a few times per job. Once this clock
    meets a loop with a ``time()`` of its own (at ``call_at`` or ``sleep``, which
    every scheduler makes on start), ``now()`` asks the running loop instead."""

    __slots__ = ("_now",)

    def __init__(self) -> None:
        self._now: Callable[[], float] = time.monotonic

    def now(self) -> float:
        return self._now()

    def wall(self) -> float:
        return time.time()

    def call_at(self, when: float, callback: Callable[[], object]) -> TimerHandle:
        loop = asyncio.get_running_loop()
        self._check(loop)
        return loop.call_at(when, callback)

    async def sleep(self, seconds: float) -> None:
        self._check(asyncio.get_running_loop())
        await asyncio.sleep(max(0.0, seconds))

    def _check(self, loop: asyncio.AbstractEventLoop) -> None:
        if type(loop).time is not _ASYNCIO_TIME:
            self._now = _running_loop_time

    def __repr__(self) -> str:
        return "SystemClock()"


class _FakeTimer:
    __slots__ = ("callback", "cancelled", "when")

    def __init__(self, when: float, callback: Callable[[], object]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    """A clock for tests: time stands still until :meth:`advance` moves it.

    ``advance(dt)`` runs every timer due by ``now() + dt`` in time order,
    setting ``now()`` to each timer's time as it fires, so callbacks observe a
    consistent clock. Woken tasks run when the event loop next gets control;
    ``await clock.advance_and_settle(dt)`` also lets them run until they block.
    """

    def __init__(self, start: float = 0.0, *, wall_start: float = 1_800_000_000.0) -> None:
        self._now = float(start)
        self._wall_offset = float(wall_start) - self._now
        self._timers: list[tuple[float, int, _FakeTimer]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self._now

    def wall(self) -> float:
        """``wall_start`` plus the time advanced so far."""
        return self._wall_offset + self._now

    def call_at(self, when: float, callback: Callable[[], object]) -> TimerHandle:
        timer = _FakeTimer(float(when), callback)
        heapq.heappush(self._timers, (timer.when, next(self._seq), timer))
        return timer

    async def sleep(self, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = loop.create_future()

        def wake() -> None:
            if not fut.done():
                fut.set_result(None)

        handle = self.call_at(self._now + seconds, wake)
        try:
            await fut
        finally:
            handle.cancel()

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds`` (>= 0), firing due timers in order."""
        if seconds < 0:
            raise ValueError(f"cannot move a clock backwards (advance({seconds!r}))")
        target = self._now + seconds
        while self._timers and self._timers[0][0] <= target:
            when, _, timer = heapq.heappop(self._timers)
            if timer.cancelled:
                continue
            self._now = max(self._now, when)
            timer.callback()
        self._now = target

    async def advance_and_settle(
        self, seconds: float, *, step: float | None = None, rounds: int | None = None
    ) -> None:
        """Let the loop settle, ``advance(seconds)``, and let it settle again.

        "Settle" is ``scheduler.testing.wait_all_tasks_blocked()``: every
        task runs until it waits on something (no real sleeping). With
        ``step``, time moves in steps of ``step`` seconds, settling after
        each one, so a task that sleeps again when woken keeps its rhythm.
        ``rounds`` is accepted for compatibility and ignored.
        """
        del rounds  # the old fixed number of yields: settling now waits for real
        if step is not None and step <= 0:
            raise ValueError(f"step must be > 0 (got {step!r})")
        await wait_all_tasks_blocked()
        remaining = seconds
        while True:
            moved = remaining if step is None else min(step, remaining)
            self.advance(moved)
            remaining -= moved
            await wait_all_tasks_blocked()
            if remaining <= 0:
                return

    @property
    def pending_timers(self) -> int:
        """Timers scheduled and not yet fired or cancelled."""
        return sum(1 for _, _, t in self._timers if not t.cancelled)

    def next_timer(self) -> float | None:
        """When the earliest live timer is due, or ``None`` when there is none."""
        for when, _, timer in sorted(self._timers):
            if not timer.cancelled:
                return when
        return None

    def __repr__(self) -> str:
        return f"FakeClock(now={self._now!r})"
