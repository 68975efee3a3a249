"""``call()`` with an upstream in play: its health, retries, a fallback.

The plain ``call()`` path stays lean; a call naming an ``upstream=``, a
``retry=`` policy or a ``fallback=`` comes here::

    the upstream's permit (a paced turn, a breaker trial, the answer of a trial
    in flight), waited for while the deadline allows; else UpstreamUnavailable
    (or the fallback)
    admission ── seat ── run ── permit.finish(outcome) ── failed and retryable?
                                                   │ within the deadline and the
                                                   │ upstream's retry budget
                                                   └── sleep the backoff, go again
                                                       (else: raise, or the fallback)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from ._validate import check_number
from .classify import FailureKind, classify
from .errors import JobCancelled, SubmitError, UpstreamUnavailable
from .jobs import JobState
from .lanes import LaneState, Ticket
from .logs import debug_enabled, get_logger
from .retry import RetryPolicy
from .upstream import MAX_PACING_WAIT, PACING, Denied, Permit, UpstreamHealth

if TYPE_CHECKING:
    from .seats import Seats

__all__ = ["call_with_policies", "run_fallback"]

#: most times a live call asks its upstream again for a permit before giving up
_MAX_PERMIT_WAITS = 1000
#: seconds a live call without a deadline waits at most for its upstream's permit
_NO_DEADLINE_WAIT = MAX_PACING_WAIT

T = TypeVar("T")

_log = get_logger()


async def call_with_policies(
    seats: Seats,
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
    tenant: str | None = None,
) -> T:
    """``call()`` with an upstream's health, retries and a fallback in play."""
    if retry is not None and not isinstance(retry, RetryPolicy):
        raise TypeError(f"retry must be a RetryPolicy, got {type(retry).__name__}")
    if fallback is not None and not callable(fallback):
        raise TypeError(f"fallback must be a coroutine function, got {fallback!r}")
    check_number("cost", cost, minimum=0)
    clock = seats.clock
    started = clock.now()
    health = None
    if upstream is not None:
        health = seats.gate.upstream(upstream)
        if lane.gated:
            lane.upstreams.add(upstream)
    attempt = 1

    def left() -> float | None:
        return None if deadline is None else deadline - (clock.now() - started)

    while True:
        try:
            permit = None
            if health is not None:
                if attempt == 1:
                    health.retry_budget.record_request()
                if not lane.gated:  # gated lanes wait on the gate, then take it at the start
                    permit = await _live_permit(seats, health, cost, left())
            try:
                ticket = seats.admit(lane, priority, left(), upstream, tenant)
            except BaseException:
                if permit is not None:
                    permit.cancel()  # it never went: hand the upstream's turn back
                raise
            ticket.permit = permit
            ticket.attempt = attempt
            if ticket.future is not None:
                await _wait_for_seat(seats, ticket)
            if health is not None and lane.gated:
                got = await health.paced_permit(cost=cost)
                if isinstance(got, Denied):
                    seats.release_unstarted(ticket)
                    raise UpstreamUnavailable(health.name, got.retry_in)
                ticket.permit = got
            return await seats.run(ticket, fn, args, timeout)
        except UpstreamUnavailable:
            if fallback is None:
                raise
            return await run_fallback(
                seats, lane, fallback, args, priority, left(), timeout, tenant
            )
        except (SubmitError, JobCancelled):
            raise
        except Exception as exc:
            verdict = classify(exc, now=clock.wall())
            delay = None
            if retry is not None and verdict.retryable and attempt < retry.max_attempts:
                delay = retry.delay(attempt, retry_after=verdict.retry_after)
                remaining = left()
                too_late = remaining is not None and delay >= remaining
                if too_late or (health is not None and not health.retry_budget.try_acquire_retry()):
                    delay = None
            if delay is None:
                if fallback is None or (verdict.kind is FailureKind.CLIENT_ERROR):
                    raise
                return await run_fallback(
                    seats, lane, fallback, args, priority, left(), timeout, tenant
                )
            if debug_enabled():
                _log.debug(
                    "job.retry",
                    lane=lane.name,
                    attempt=attempt,
                    delay=delay,
                    error=f"{type(exc).__name__}: {exc}",
                )
            await clock.sleep(delay)
            attempt += 1


async def _live_permit(
    seats: Seats, health: UpstreamHealth, cost: float, left: float | None
) -> Permit:
    """The upstream's permit for a live call, waiting for it while the call's
    deadline allows (a paced turn, a breaker trial, the answer of a trial in
    flight); else :class:`UpstreamUnavailable`."""
    clock = seats.clock
    until = clock.now() + (_NO_DEADLINE_WAIT if left is None else left)
    waiting = False  # counted in health.live_waiting: batch lets us have the next turn
    try:
        for _ in range(_MAX_PERMIT_WAITS):
            got = health.admit(gated=False, cost=cost)
            if isinstance(got, Permit):
                return got
            wait = got.retry_in
            now = clock.now()
            if (
                left is not None
                and got.reason == "breaker_open"
                and health.trials_in_flight > 0
                and now < until
            ):
                # a breaker trial is out: its answer, a round trip away, may close the
                # breaker or free a trial for this call; wait for it within the deadline
                # rather than give up because the next paced trial turn is too far
                timeout = until - now if wait is None else min(until - now, wait)
                await health.wait_for_trials(max(timeout, 1e-3))
                continue
            # without a deadline only a paced turn is waited for, not a breaker's trial
            paced_only = left is None and got.reason not in PACING
            if wait is None or clock.now() + wait >= until or paced_only:
                raise UpstreamUnavailable(health.name, wait)
            if not waiting and got.reason in PACING:
                waiting = True
                health.live_waiting += 1
            await clock.sleep(max(wait, 1e-3))
        raise UpstreamUnavailable(health.name, None)
    finally:
        if waiting:
            health.live_waiting -= 1


async def _wait_for_seat(seats: Seats, ticket: Ticket) -> None:
    """Wait for a seat; a call that never gets to start hands its permit back."""
    try:
        await seats.wait_for_seat(ticket)
    except BaseException:
        if ticket.permit is not None and ticket.state is not JobState.RUNNING:
            ticket.permit.cancel()
            ticket.permit = None
        raise


async def run_fallback(
    seats: Seats,
    lane: LaneState,
    fallback: Callable[..., Awaitable[T]],
    args: tuple[Any, ...],
    priority: float,
    deadline: float | None,
    timeout: float | None,
    tenant: str | None = None,
) -> T:
    lane.fallbacks += 1
    _log.info("job.fallback", lane=lane.name, fallback=getattr(fallback, "__qualname__", "?"))
    ticket = seats.admit(lane, priority, deadline, None, tenant)
    if ticket.future is not None:
        await seats.wait_for_seat(ticket)
    return await seats.run(ticket, fallback, args, timeout)
