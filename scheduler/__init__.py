"""Floodgate: an asyncio priority job scheduler with bounded lanes.

Everything public is re-exported here; the modules behind it are private.
"""

from .backlog import BacklogFull, BacklogLocked, BacklogStats, BacklogUnavailable
from .breaker import BreakerConfig, BreakerState, BreakerStats, CircuitBreaker
from .classify import RetryableError, httpx_event_hooks
from .clock import Clock, FakeClock, SystemClock
from .durable import BacklogOptions
from .errors import (
    BacklogError,
    ConfigError,
    DeadlineExceeded,
    JobCancelled,
    JobError,
    JobFailed,
    JobTimeout,
    Overloaded,
    RunAborted,
    SchedulerClosed,
    SchedulerCrashed,
    SchedulerError,
    SubmitError,
    UnknownJob,
    UnknownLane,
    UnknownTask,
    UpstreamUnavailable,
)
from .gate import GateStats, HealthGate
from .jobs import Job, JobContext, JobState, current_job
from .lanes import Lane, Tenants
from .metrics import (
    FleetStats,
    LaneStats,
    LatencySummary,
    SchedulerStats,
    TenantStats,
    UpstreamStats,
)
from .retry import RetryBudget, RetryBudgetStats, RetryPolicy
from .scheduler import DEFAULT_LANES, Scheduler
from .tasks import Task
from .upstream import Upstream

__all__ = [
    "DEFAULT_LANES",
    "BacklogError",
    "BacklogFull",
    "BacklogLocked",
    "BacklogOptions",
    "BacklogStats",
    "BacklogUnavailable",
    "BreakerConfig",
    "BreakerState",
    "BreakerStats",
    "CircuitBreaker",
    "Clock",
    "ConfigError",
    "DeadlineExceeded",
    "FakeClock",
    "FleetStats",
    "GateStats",
    "HealthGate",
    "Job",
    "JobCancelled",
    "JobContext",
    "JobError",
    "JobFailed",
    "JobState",
    "JobTimeout",
    "Lane",
    "LaneStats",
    "LatencySummary",
    "Overloaded",
    "RetryBudget",
    "RetryBudgetStats",
    "RetryPolicy",
    "RetryableError",
    "RunAborted",
    "Scheduler",
    "SchedulerClosed",
    "SchedulerCrashed",
    "SchedulerError",
    "SchedulerStats",
    "SubmitError",
    "SystemClock",
    "Task",
    "TenantStats",
    "Tenants",
    "UnknownJob",
    "UnknownLane",
    "UnknownTask",
    "Upstream",
    "UpstreamStats",
    "UpstreamUnavailable",
    "current_job",
    "httpx_event_hooks",
]
