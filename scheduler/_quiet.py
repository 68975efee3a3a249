"""Waiting until an asyncio event loop has nothing left to run (``scheduler.testing``).

It lives apart from ``testing.py`` so that :class:`~scheduler.clock.FakeClock`
can use it without an import cycle.
"""

from __future__ import annotations

import asyncio
import collections
import time

__all__ = ["wait_all_tasks_blocked"]

#: consecutive checks that found nothing else ready: the first shows every other
#: task waiting, the second that the loop's next iteration (which polls the
#: selector and moves due timers) found no I/O event and no timer either
_QUIET_ROUNDS = 2
#: on a loop without CPython's ``_ready`` queue (uvloop, ...): yields, no more
_FALLBACK_YIELDS = 50


async def wait_all_tasks_blocked(*, timeout: float = 5.0) -> None:
    """Return once every other task on the running loop is blocked.

    "Blocked" as in ``trio.testing.wait_all_tasks_blocked``: waiting on
    something that has not happened yet (a future, an event, a lock, a timer,
    a socket), with no callback, wake-up or I/O event ready to run. The caller
    yields (``asyncio.sleep(0)``, never real sleeping) until the loop's ready
    queue held nothing but its own wake-up twice in a row. On a loop without
    that (private) queue, uvloop for one, it yields 50 times instead.

    Work done in another thread (``aiosqlite``, ``asyncio.to_thread``,
    ``run_in_executor``) counts as blocked while the thread runs: wait for its
    outcome with ``eventually()`` instead.

    Args:
        timeout: real seconds to keep trying, so a task that never blocks
            (``while True: await asyncio.sleep(0)``) cannot hang the test.

    Raises:
        TimeoutError: the loop was still busy after ``timeout`` seconds.
    """
    loop = asyncio.get_running_loop()
    ready = getattr(loop, "_ready", None)  # private to asyncio.BaseEventLoop
    if not isinstance(ready, collections.deque):
        for _ in range(_FALLBACK_YIELDS):
            await asyncio.sleep(0)
        return
    deadline = time.monotonic() + timeout
    quiet = rounds = 0
    while quiet < _QUIET_ROUNDS:
        await asyncio.sleep(0)
        rounds += 1
        # this task is running now: whatever sits in the queue is someone else's
        quiet = 0 if ready else quiet + 1
        if not quiet and time.monotonic() >= deadline:
            raise TimeoutError(
                f"the event loop was still busy after {timeout:g} s ({rounds} rounds, "
                f"{len(ready)} callbacks ready): is a task looping without blocking?"
            )
