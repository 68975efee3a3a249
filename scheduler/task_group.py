"""The scheduler's task group: every loop and job task it starts, and what a crash does.

A scheduler starts background tasks (each durable lane's claim, flush, lease
and cancel loops and its jobs, the fleet exchange, periodic submits, upstream
probes) through :meth:`TaskGroup.start`. They are expected to end only when
cancelled. One that raises instead has crashed: the group logs
``scheduler.loop_crashed``, keeps the first such exception and calls the
scheduler's ``on_crash``, which cancels the task that entered ``async with
sched`` so the crash cannot go unnoticed while the scheduler runs on half
alive. The scheduler then stops as usual (outcomes written, leases released)
and ends its ``async with`` by raising :class:`~scheduler.errors.SchedulerCrashed`
from the loop's exception.

Unlike :class:`asyncio.TaskGroup`, a crash does not cancel the other tasks at
once: the scheduler's stop ends them in order, so the last outcomes are
written and leases released before the loops go.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from .logs import get_logger

__all__ = ["TaskGroup", "cancel_and_wait"]

T = TypeVar("T")
_log = get_logger()


async def cancel_and_wait(*tasks: asyncio.Future[Any]) -> None:
    """Cancel ``tasks`` and wait until each has ended.

    Their own ``CancelledError`` is not raised here, but the caller's is: a
    ``suppress(CancelledError)`` around ``await task`` would swallow both, and a
    cancel that reached the caller just then was lost (a stop waited for ever on
    a loop that had swallowed its own cancel this way). Nothing else the tasks
    ended with is raised either; the task group reports crashes.
    """
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks)


class TaskGroup:
    """The tasks one scheduler run started (see the module docstring)."""

    __slots__ = ("_on_crash", "_tasks", "crashed", "crashed_in")

    def __init__(self, on_crash: Callable[[], None]) -> None:
        self._on_crash = on_crash
        self._tasks: set[asyncio.Task[Any]] = set()
        #: the first exception a task of the group ended with, and that task's name
        self.crashed: BaseException | None = None
        self.crashed_in: str | None = None

    def start(
        self,
        coro: Coroutine[Any, Any, T],
        *,
        name: str,
        on_done: Callable[[asyncio.Task[T]], object] | None = None,
    ) -> asyncio.Task[T]:
        """Run ``coro`` as a task of the group; ``on_done(task)`` once it has ended
        (after the group's own bookkeeping, in the same callback: one per task)."""
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        if on_done is None:
            task.add_done_callback(self._ended)
        else:
            ended = self._ended

            def both(task: asyncio.Task[T]) -> None:
                try:
                    ended(task)
                finally:
                    on_done(task)

            task.add_done_callback(both)
        return task

    def reset(self) -> None:
        """Forget a crash of an earlier run (a scheduler may run again after a stop)."""
        self.crashed = self.crashed_in = None

    def __len__(self) -> int:
        return len(self._tasks)

    def _ended(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None:
            return
        _log.error(
            "scheduler.loop_crashed",
            task=task.get_name(),
            error=f"{type(exc).__name__}: {exc}",
            exc_info=exc,
        )
        if self.crashed is None:
            self.crashed, self.crashed_in = exc, task.get_name()
            self._on_crash()

    async def close(self) -> None:
        """Cancel the tasks still running and wait for them to end."""
        while self._tasks:
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
