"""Floodgate's one exception tree.

Callers catch by what they can do about it::

    SchedulerError                    anything Floodgate raises on its own account
    ├── ConfigError (ValueError)      bad arguments to Lane / Scheduler / call
    │   ├── UnknownLane (KeyError)    a lane name the scheduler does not have
    │   └── UnknownTask (KeyError)    a task name no @sched.task registered here
    ├── SubmitError                   the job was not run; nothing happened upstream
    │   ├── Overloaded                the lane is full: retry after ``retry_after`` s
    │   ├── DeadlineExceeded          the job could not *start* before its deadline
    │   ├── SchedulerClosed           not started, shutting down, or lane not run here
    │   └── UpstreamUnavailable       the upstream's breaker is open (or throttled)
    ├── UnknownJob (KeyError)         no job with that id in the backlog (or purged)
    ├── JobError                      the job was admitted and then did not succeed
    │   ├── JobFailed                 a durable job ended DEAD (carries its last error)
    │   ├── JobTimeout (TimeoutError) the job ran past its ``timeout``
    │   └── JobCancelled              cancelled by the scheduler (shutdown, cancel())
    ├── RetryableError                raised *by a job*: "upstream busy, retry after"
    ├── SchedulerCrashed              a loop of the scheduler crashed; it stopped
    └── BacklogError                  the persistent backlog could not do its part
        ├── BacklogLocked             another process held the write lock too long
        ├── BacklogFull               the disk is full; nothing was stored
        ├── BacklogUnavailable        the database connection is lost (PostgreSQL)
        └── RunAborted                a streamed submit_many was given up; none stored

(``scheduler.backlog`` re-exports the backlog's errors as before.)

Errors raised *by a job itself* through ``call()`` propagate unchanged, so a
caller handles its own ``httpx.HTTPStatusError`` as if it had made the call.
"""

from __future__ import annotations

__all__ = [
    "BacklogError",
    "BacklogFull",
    "BacklogLocked",
    "BacklogUnavailable",
    "ConfigError",
    "DeadlineExceeded",
    "JobCancelled",
    "JobError",
    "JobFailed",
    "JobTimeout",
    "Overloaded",
    "RetryableError",
    "RunAborted",
    "SchedulerClosed",
    "SchedulerCrashed",
    "SchedulerError",
    "SubmitError",
    "UnknownJob",
    "UnknownLane",
    "UnknownTask",
    "UpstreamUnavailable",
]


class SchedulerError(Exception):
    """Root of every error Floodgate raises on its own account."""


class ConfigError(SchedulerError, ValueError):
    """A lane, scheduler or call was configured with values that cannot work."""


class UnknownLane(ConfigError, KeyError):
    """The named lane does not exist in this scheduler."""

    def __init__(self, lane: str, known: tuple[str, ...]) -> None:
        self.lane = lane
        self.known = known
        super().__init__(f"unknown lane {lane!r}; this scheduler has {', '.join(known) or 'none'}")

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return str(self.args[0])


class UnknownTask(ConfigError, KeyError):
    """No task of that name is registered with this scheduler."""

    def __init__(self, name: str, known: tuple[str, ...]) -> None:
        self.name = name
        self.known = known
        shown = ", ".join(sorted(known)[:10]) or "none"
        super().__init__(f"unknown task {name!r}; registered here: {shown}")

    def __str__(self) -> str:
        return str(self.args[0])


class UnknownJob(SchedulerError, KeyError):
    """The backlog has no job with that id (it never existed, or was purged)."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        super().__init__(f"no job {job_id!r} in the backlog (never submitted, or purged)")

    def __str__(self) -> str:
        return str(self.args[0])


class RetryableError(SchedulerError):
    """Raise from a job to say "the upstream is busy; retry after ``retry_after`` s".

    Counted against the job's upstream like a 429, and retried.
    """

    def __init__(self, message: str = "upstream busy", *, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class SchedulerCrashed(SchedulerError):
    """A background loop of the scheduler (a durable lane's claims, its outcome writes,
    the fleet exchange, ...) raised instead of running on. The scheduler stopped as it
    does on exit (outcomes written, leases released); ``__cause__`` is the loop's
    exception and ``task`` names the loop."""

    def __init__(self, task: str, error: BaseException) -> None:
        self.task = task
        super().__init__(
            f"the scheduler's task {task!r} crashed ({type(error).__name__}: {error}); "
            "the scheduler stopped"
        )


class SubmitError(SchedulerError):
    """The job was refused or shed before it started; it never ran."""

    def __init__(self, message: str, *, lane: str | None = None) -> None:
        super().__init__(message)
        self.lane = lane


class Overloaded(SubmitError):
    """The lane's queue is full. Nothing was queued; try again after ``retry_after``."""

    def __init__(
        self,
        lane: str,
        retry_after: float,
        *,
        queued: int | None = None,
        tenant: str | None = None,
    ) -> None:
        self.retry_after = retry_after
        self.queued = queued
        self.tenant = tenant  # set when the tenant's own bound was reached
        whose = f"lane {lane!r}" if tenant is None else f"tenant {tenant!r} in lane {lane!r}"
        super().__init__(
            f"{whose} is full ({queued} queued); retry after {retry_after:.3g}s", lane=lane
        )


class DeadlineExceeded(SubmitError):
    """The job could not start before its deadline, so it was shed unrun.

    ``where`` is ``"admission"`` when the lane's expected wait already exceeded
    the deadline, or ``"queue"`` when the deadline passed while it waited.
    """

    def __init__(
        self,
        lane: str,
        deadline: float,
        *,
        where: str,
        expected_wait: float | None = None,
        job_id: str | None = None,
    ) -> None:
        self.deadline = deadline
        self.where = where
        self.expected_wait = expected_wait
        self.job_id = job_id
        if where == "admission":
            detail = f"expected wait {expected_wait:.3g}s exceeds deadline {deadline:.3g}s"
        else:
            detail = f"deadline {deadline:.3g}s passed while queued"
        super().__init__(f"lane {lane!r}: {detail}", lane=lane)


class SchedulerClosed(SubmitError):
    """The scheduler is not accepting this job: not started, shutting down, or
    the lane is not run in this process."""


class UpstreamUnavailable(SubmitError):
    """The upstream's circuit breaker is open; the call was not attempted."""

    def __init__(self, upstream: str, retry_after: float | None = None) -> None:
        self.upstream = upstream
        self.retry_after = retry_after
        hint = f"; retry after {retry_after:.3g}s" if retry_after is not None else ""
        super().__init__(f"upstream {upstream!r} is unavailable{hint}")


class JobError(SchedulerError):
    """The job was admitted and did not complete successfully."""

    def __init__(self, message: str, *, job_id: str | None = None) -> None:
        super().__init__(message)
        self.job_id = job_id


class JobFailed(JobError):
    """The job ended ``DEAD``: its retries are spent. ``error`` is the last one."""

    def __init__(self, job_id: str, error: str, *, attempts: int | None = None) -> None:
        self.error = error
        self.attempts = attempts
        super().__init__(f"job {job_id} failed: {error}", job_id=job_id)


class JobTimeout(JobError, TimeoutError):
    """The job ran longer than its ``timeout`` and was cancelled."""

    def __init__(self, job_id: str, timeout: float) -> None:
        self.timeout = timeout
        super().__init__(f"job {job_id} ran past its timeout of {timeout:.3g}s", job_id=job_id)


class JobCancelled(JobError):
    """The scheduler cancelled the job (for example at the end of a shutdown grace)."""

    def __init__(self, job_id: str, reason: str) -> None:
        self.reason = reason
        super().__init__(f"job {job_id} cancelled: {reason}", job_id=job_id)


class BacklogError(SchedulerError):
    """The persistent backlog could not store or load what was asked."""


class BacklogLocked(BacklogError):
    """Another connection held the backlog's write lock past ``busy_timeout``.

    Nothing from the failed call was stored; everything stored earlier is safe.
    Retry later, or raise ``busy_timeout``.
    """


class BacklogUnavailable(BacklogError):
    """The backlog's database could not be reached, or the connection was lost mid-call.

    A write that failed this way may or may not have been applied (its commit
    could have been lost in flight, as with any database); retry with backoff:
    the backend reconnects by itself.
    """


class BacklogFull(BacklogError):
    """The disk (or the database's size limit) is full; the call stored nothing."""


class RunAborted(BacklogError):
    """A streamed ``submit_many`` run was given up (a bad item, a cancelled caller, a
    caller that stopped handing its jobs over, a miscount): none of it was stored."""
