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
from typing import Protocol

from .clock import Clock

__all__ = ["JobContext", "JobState", "current_job"]


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
