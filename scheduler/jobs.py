"""Job states and the running job's context.

Inside a running job, :func:`current_job` tells the job who it is (id, lane,
attempt) and how much of its time budget is left, so it can hand the rest on
to its upstream call as a timeout::

    async def ask(prompt):
        ctx = current_job()
        async with httpx.AsyncClient(timeout=ctx.remaining()) as client: ...
"""

from __future__ import annotations

import enum
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Protocol

from ._frozen import quick_init
from .clock import Clock
from .errors import JobCancelled, JobFailed

__all__ = ["Job", "JobContext", "JobState", "current_job"]


class JobState(enum.Enum):
    """Where a job is in its life. Terminal states: DONE, FAILED, CANCELLED, EXPIRED, DEAD."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    DEAD = "dead"

    @property
    def terminal(self) -> bool:
        return self in _TERMINAL


_TERMINAL = frozenset(
    {JobState.DONE, JobState.FAILED, JobState.CANCELLED, JobState.EXPIRED, JobState.DEAD}
)


@dataclass(frozen=True, slots=True)
class JobContext:
    """What a running job may know about itself."""

    id: str
    lane: str
    attempt: int
    priority: float
    upstream: str | None
    started_at: float
    timeout_at: float | None
    _clock: Clock

    def remaining(self) -> float | None:
        """Seconds left before the job's ``timeout`` (never negative); ``None`` if unbounded."""
        if self.timeout_at is None:
            return None
        return max(0.0, self.timeout_at - self._clock.now())


class _ContextSource(Protocol):
    def context(self) -> JobContext: ...


# Holds the running job's internal record; the JobContext is built only when
# asked for, so jobs that never look pay nothing.
_current: ContextVar[_ContextSource | None] = ContextVar("floodgate_current_job", default=None)


def current_job() -> JobContext:
    """The context of the job running in this task; ``LookupError`` outside a job."""
    source = _current.get()
    if source is None:
        raise LookupError("current_job() was called outside a Floodgate job")
    return source.context()


class _JobWaiter(Protocol):
    async def _wait_job(self, job_id: str, timeout: float | None) -> Job: ...

    async def cancel(self, job_id: str) -> bool: ...


@quick_init
@dataclass(frozen=True, slots=True, eq=False)
class Job:
    """A durable job as last read from the backlog, and a way to await its end.

    ``state`` is a snapshot: :meth:`refresh` reads it again. :meth:`result`
    waits for the job to end (from any process sharing the backlog).
    """

    id: str
    task: str
    lane: str
    state: JobState
    attempts: int
    max_attempts: int
    priority: float
    run_at: float
    created_at: float
    updated_at: float
    key: str | None
    error: str | None
    traceback: str | None
    _value: Any
    _owner: _JobWaiter
    #: tokens the job draws from its upstream's token-rate limit (``None``: the task's cost)
    cost: float | None = None
    #: whose job it is (``submit(..., tenant=)``), or ``None``
    tenant: str | None = None

    async def result(self, timeout: float | None = None) -> Any:
        """The job's result once it is ``DONE``.

        Raises:
            JobFailed: the job ended ``DEAD`` (its error is on the exception).
            JobCancelled: the job was cancelled (:meth:`cancel`) before it finished.
            TimeoutError: ``timeout`` seconds passed first; the job keeps going.
        """
        job = self if self.state.terminal else await self._owner._wait_job(self.id, timeout)
        if job.state is JobState.DONE:
            return job._value
        if job.state is JobState.CANCELLED:
            raise JobCancelled(job.id, job.error or "cancelled")
        raise JobFailed(job.id, job.error or job.state.value, attempts=job.attempts)

    async def cancel(self) -> bool:
        """Cancel the job (see :meth:`Scheduler.cancel <scheduler.Scheduler.cancel>`):
        ``True`` if it was queued or running, ``False`` if it had already finished."""
        return await self._owner.cancel(self.id)

    async def refresh(self) -> Job:
        """The job as it is now in the backlog."""
        return await self._owner._wait_job(self.id, 0)

    def __repr__(self) -> str:
        return f"<Job {self.id} {self.task} lane={self.lane!r} {self.state.value}>"
