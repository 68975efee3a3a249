"""The worker's life: open the scheduler, drain its durable lanes, stop on a signal.

::

    start ── bind admin socket ── open backlog, run lanes ── serve admin ── ready
                                                                              │
    SIGTERM/SIGINT ── stop claiming; running jobs get ``grace`` seconds ◄─────┘
         │            (what is still running then is cancelled, its lease released)
         └─ again ── cancel running jobs now, release their leases ── exit 0

Stopping is the scheduler's own: leaving ``async with sched.open(...)`` stops
claiming, waits up to ``sched.shutdown_grace`` for running jobs, cancels the
rest and releases their leases. The second signal calls
``Scheduler.end_grace()``: running jobs are cancelled at once, and their
leases are still released.

A backlog that cannot be written (a full disk) holds neither: outcomes are
retried until the grace is over (or the second signal), then the worker exits
0 anyway, logging ``backlog.outcomes_unsaved``; those jobs run again later.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any

from scheduler import BacklogError, Scheduler

from .errors import EXIT_FAILURE, CommandError
from .logging_setup import get_logger
from .signals import shutdown_signals

__all__ = ["Worker"]


class Worker:
    """Runs ``lanes`` of ``sched`` until a signal, or until ``watch()`` (started
    once the lanes run) returns.

    Args:
        admin: a server with ``start()``, ``stop()`` and ``url`` (the admin API),
            started once the scheduler is open and stopped after it closed.
        watch: e.g. the drain command's "until the backlog is empty" loop.
    """

    def __init__(
        self,
        sched: Scheduler,
        lanes: tuple[str, ...],
        *,
        admin: Any = None,
        watch: Callable[[], Coroutine[Any, Any, None]] | None = None,
    ) -> None:
        self._sched = sched
        self._lanes = lanes
        self._admin = admin
        self._watch = watch
        self._log = get_logger()
        self._stop = asyncio.Event()
        self._drain_task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        """Drain until stopped. ``CommandError`` if the backlog cannot be opened."""
        with shutdown_signals(self._on_signal, self._on_signal_again):
            self._drain_task = asyncio.create_task(self._drain(), name="floodgate-worker")
            await asyncio.wait([self._drain_task])
        if self._drain_task.cancelled():
            self._log.warning("worker.stopped", cancelled=True)
            return
        try:
            self._drain_task.result()
        except BacklogError as exc:
            raise CommandError(f"cannot open the backlog: {exc}", exit_code=EXIT_FAILURE) from None
        self._log.info("worker.stopped", cancelled=False)

    async def _wait_for_stop(self) -> None:
        if self._watch is None:
            await self._stop.wait()
            return
        watch = asyncio.create_task(self._watch(), name="floodgate-watch")
        stop = asyncio.create_task(self._stop.wait())
        try:
            await asyncio.wait([watch, stop], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (watch, stop):
                task.cancel()
            await asyncio.gather(watch, stop, return_exceptions=True)
        error = None if watch.cancelled() else watch.exception()
        if error is not None:
            raise error

    async def _drain(self) -> None:
        sched = self._sched
        try:
            async with sched.open(run=self._lanes):
                if self._admin is not None:
                    await self._admin.start()
                self._log.info(
                    "worker.ready",
                    pid=os.getpid(),
                    lanes=list(self._lanes),
                    backlog=sched.backlog,
                    admin=None if self._admin is None else self._admin.url,
                    grace=sched.shutdown_grace,
                )
                await self._wait_for_stop()
                stats = sched.stats()
                self._log.info("worker.stopping", grace=sched.shutdown_grace, running=stats.running)
        finally:
            if self._admin is not None:
                await self._admin.stop()

    # -- signals ------------------------------------------------------------------

    def _on_signal(self, name: str) -> None:
        self._log.info("worker.signal", signal=name, action="stop claiming, finish running jobs")
        self._stop.set()

    def _on_signal_again(self, name: str, count: int) -> None:
        self._log.warning("worker.signal", signal=name, count=count, action="cancel running jobs")
        self._sched.end_grace()
