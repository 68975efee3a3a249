"""``call()`` with an upstream in play: its health, retries, a fallback.

The plain ``call()`` path stays lean; a call naming an ``upstream=``, a
``retry=`` policy or a ``fallback=`` comes here::

    upstream's breaker open / throttled? ── UpstreamUnavailable (or the fallback)
    admission ── seat ── breaker admits? ── run ── failed and retryable?
                                                   │ within the deadline and the
                                                   │ upstream's retry budget
                                                   └── sleep the backoff, go again
                                                       (else: raise, or the fallback)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from ._lane_state import LaneState
from ._validate import check_number
from .breaker import BreakerState
from .errors import JobCancelled, SubmitError, UpstreamUnavailable
from .logs import debug_enabled, get_logger
from .retry import RetryPolicy
from .upstream import FailureKind, classify
from .upstream_health import UpstreamHealth

if TYPE_CHECKING:
    from .scheduler import Scheduler

__all__ = ["breaker_admits", "call_with_policies", "run_fallback"]

T = TypeVar("T")

_log = get_logger()


async def call_with_policies(
    sched: Scheduler,
    lane: LaneState,
    fn: Callable[..., Awaitable[T]],
    args: tuple[Any, ...],
    priority: float,
    deadline: float | None,
    timeout: float | None,
    upstream: str | None,
    retry: RetryPolicy | None,
    fallback: Callable[..., Awaitable[T]] | None,
    cost: float,
) -> T:
    """``call()`` with an upstream's health, retries and a fallback in play."""
    if retry is not None and not isinstance(retry, RetryPolicy):
        raise TypeError(f"retry must be a RetryPolicy, got {type(retry).__name__}")
    if fallback is not None and not callable(fallback):
        raise TypeError(f"fallback must be a coroutine function, got {fallback!r}")
    check_number("cost", cost, minimum=0)
    clock = sched.clock
    started = clock.now()
    health = None
    if upstream is not None:
        health = sched.gate.upstream(upstream)
        if lane.gated:
            lane.upstreams.add(upstream)
    attempt = 1
    while True:
        left = None if deadline is None else deadline - (clock.now() - started)
        try:
            if health is not None:
                if not lane.gated:  # gated lanes wait on the gate instead
                    health.admit_interactive(cost)
                if attempt == 1:
                    health.retry_budget.record_request()
            ticket = sched._admit(lane, priority, left, upstream)
            if ticket.future is not None:
                await sched._wait_for_seat(ticket)
            if health is not None and not breaker_admits(health, lane):
                sched._release_unstarted(ticket)
                raise UpstreamUnavailable(upstream or "", health.breaker.retry_after())
            return await sched._run(ticket, fn, args, timeout)
        except UpstreamUnavailable:
            if fallback is None:
                raise
            return await run_fallback(sched, lane, fallback, args, priority, left, timeout)
        except (SubmitError, JobCancelled):
            raise
        except Exception as exc:
            verdict = classify(exc, now=clock.wall())
            delay = None
            if retry is not None and verdict.retryable and attempt < retry.max_attempts:
                delay = retry.delay(attempt, retry_after=verdict.retry_after)
                remaining = None if deadline is None else deadline - (clock.now() - started)
                too_late = remaining is not None and delay >= remaining
                if too_late or (health is not None and not health.retry_budget.try_acquire_retry()):
                    delay = None
            if delay is None:
                if fallback is None or (verdict.kind is FailureKind.CLIENT_ERROR):
                    raise
                return await run_fallback(sched, lane, fallback, args, priority, left, timeout)
            if debug_enabled():
                _log.debug("job.retry", lane=lane.name, attempt=attempt, delay=delay)
            await clock.sleep(delay)
            attempt += 1


def breaker_admits(health: UpstreamHealth, lane: LaneState) -> bool:
    """Gated work takes a half-open trial slot; live work only needs it not open."""
    if lane.gated:
        return health.breaker.allow()
    return health.breaker.state is not BreakerState.OPEN


async def run_fallback(
    sched: Scheduler,
    lane: LaneState,
    fallback: Callable[..., Awaitable[T]],
    args: tuple[Any, ...],
    priority: float,
    deadline: float | None,
    timeout: float | None,
) -> T:
    lane.fallbacks += 1
    _log.info("job.fallback", lane=lane.name, fallback=getattr(fallback, "__qualname__", "?"))
    ticket = sched._admit(lane, priority, deadline, None)
    if ticket.future is not None:
        await sched._wait_for_seat(ticket)
    return await sched._run(ticket, fallback, args, timeout)
