"""Test helpers: a job body released by hand; a one-lane scheduler on the fake clock.

Settling the loop and polling real I/O are ``scheduler.testing``'s
``wait_all_tasks_blocked`` and ``eventually``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from scheduler import FakeClock, Lane, Scheduler

# the old name, still imported by tests/test_tenants.py
from scheduler.testing import wait_all_tasks_blocked as settle

__all__ = ["Gate", "one_lane", "settle"]


class Gate:
    """Job bodies the test releases by hand; counts how many run at once."""

    def __init__(self) -> None:
        self.running = 0
        self.peak = 0
        self.started: list[object] = []
        self.finished: list[object] = []
        self._all = asyncio.Event()
        self._one = asyncio.Semaphore(0)

    def release(self) -> None:
        """Let every job (running now or later) finish."""
        self._all.set()
        self._one.release()

    def release_one(self) -> None:
        """Let one running job finish."""
        self._one.release()

    def job(self, tag: object = None) -> Callable[[], Coroutine[Any, Any, object]]:
        async def body() -> object:
            self.running += 1
            self.peak = max(self.peak, self.running)
            self.started.append(tag)
            try:
                await self._one.acquire()
                if self._all.is_set():
                    self._one.release()  # pass it on: everyone may go
            finally:
                self.running -= 1
            self.finished.append(tag)
            return tag

        return body


def one_lane(clock: FakeClock, **lane: Any) -> Scheduler:
    """A scheduler with one ``interactive`` lane on the fake clock, no shutdown grace."""
    return Scheduler(":memory:", lanes=[Lane("interactive", **lane)], clock=clock, shutdown_grace=0)
