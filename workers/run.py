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

While it runs, a worker logs ``worker.summary`` at info every
``summary_every`` seconds (30 s, on the scheduler's clock): jobs done per
second since the last line, jobs done, failed attempts, running, queued in the
backlog for its lanes, and the gate (``open`` or ``paused: reason``).

A backlog that cannot be written (a full disk) holds neither: outcomes are
retried until the grace is over (or the second signal), then the worker exits
0 anyway, logging ``backlog.outcomes_unsaved``; those jobs run again later.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any

from scheduler import BacklogError, Scheduler, SchedulerCrashed

from .errors import EXIT_FAILURE, CommandError
from .logging_setup import get_logger
from .signals import shutdown_signals

__all__ = ["SUMMARY_EVERY", "Worker"]

#: seconds between two ``worker.summary`` lines
SUMMARY_EVERY = 30.0


class Worker:
    """Runs ``lanes`` of ``sched`` until a signal, or until ``watch()`` (started
    once the lanes run) returns.

    Args:
        admin: a server with ``start()``, ``stop()`` and ``url`` (the admin API),
            started once the scheduler is open and stopped after it closed.
        watch: e.g. the drain command's "until the backlog is empty" loop.
        summary_every: seconds between ``worker.summary`` lines (``None``: none).
    """

    def __init__(
        self,
        sched: Scheduler,
        lanes: tuple[str, ...],
        *,
        admin: Any = None,
        watch: Callable[[], Coroutine[Any, Any, None]] | None = None,
        summary_every: float | None = SUMMARY_EVERY,
    ) -> None:
        self._sched = sched
        self._summary_every = summary_every
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
        except SchedulerCrashed as exc:  # logged with its traceback (scheduler.loop_crashed)
            raise CommandError(str(exc), exit_code=EXIT_FAILURE) from exc
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
                summaries = None
                if self._summary_every is not None:
                    summaries = asyncio.create_task(self._summaries(self._summary_every))
                try:
                    await self._wait_for_stop()
                finally:
                    if summaries is not None:
                        summaries.cancel()
                        await asyncio.gather(summaries, return_exceptions=True)
                stats = sched.stats()
                self._log.info("worker.stopping", grace=sched.shutdown_grace, running=stats.running)
        finally:
            if self._admin is not None:
                await self._admin.stop()

    async def _summaries(self, every: float) -> None:
        """Log ``worker.summary`` every ``every`` seconds until cancelled."""
        clock = self._sched.clock
        done, since = self._done(), clock.now()
        while not self._stop.is_set():
            await clock.sleep(every)
            now_done, now = self._done(), clock.now()
            rate = (now_done - done) / (now - since) if now > since else 0.0
            done, since = now_done, now
            await self._log_summary(rate, now_done)

    def _done(self) -> int:
        stats = self._sched.stats()
        return sum(stats[name].completed for name in self._lanes)

    async def _log_summary(self, rate: float, done: int) -> None:
        stats = self._sched.stats()
        queued: int | None
        try:
            counts = await self._sched.backlog_counts()
            queued = sum(counts.get(name, {}).get("queued", 0) for name in self._lanes)
        except Exception:  # a summary never stops the worker; the backlog logs its own trouble
            queued = None
        self._log.info(
            "worker.summary",
            done_per_s=round(rate, 2),
            done=done,
            failed=sum(stats[name].failed for name in self._lanes),
            running=sum(stats[name].running for name in self._lanes),
            queued=queued,
            gate="open" if stats.gate_open else f"paused: {stats.gate_reason}",
        )

    # -- signals ------------------------------------------------------------------

    def _on_signal(self, name: str) -> None:
        self._log.info("worker.signal", signal=name, action="stop claiming, finish running jobs")
        self._stop.set()

    def _on_signal_again(self, name: str, count: int) -> None:
        self._log.warning("worker.signal", signal=name, count=count, action="cancel running jobs")
        self._sched.end_grace()
