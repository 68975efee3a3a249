"""Floodgate: an asyncio priority job scheduler with bounded lanes.

Everything public is re-exported here; the modules behind it are private.
"""

from .breaker import BreakerConfig, BreakerState, BreakerStats, CircuitBreaker
from .clock import Clock, FakeClock, SystemClock
from .errors import (
    BacklogError,
    ConfigError,
    DeadlineExceeded,
    JobCancelled,
    JobError,
    JobFailed,
    JobTimeout,
    Overloaded,
    SchedulerClosed,
    SchedulerError,
    SubmitError,
    UnknownLane,
    UpstreamUnavailable,
)
from .health import GateStats, HealthGate
from .jobs import JobContext, JobState, current_job
from .lanes import Lane
from .metrics import LaneStats, LatencySummary, SchedulerStats
from .retry import RetryBudget, RetryBudgetStats, RetryPolicy
from .scheduler import DEFAULT_LANES, Scheduler

__all__ = [
    "DEFAULT_LANES",
    "BacklogError",
    "BreakerConfig",
    "BreakerState",
    "BreakerStats",
    "CircuitBreaker",
    "Clock",
    "ConfigError",
    "DeadlineExceeded",
    "FakeClock",
    "GateStats",
    "HealthGate",
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
    "Scheduler",
    "SchedulerClosed",
    "SchedulerError",
    "SchedulerStats",
    "SubmitError",
    "SystemClock",
    "UnknownLane",
    "UpstreamUnavailable",
    "current_job",
]
