"""What every backend shares through ``BacklogBase``: the counters of ``stats()`` and
the refusal of a backlog that is not open, run against every backend."""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from scheduler import BacklogError, BacklogStats, JobState, Lane, Scheduler
from scheduler.backlog import (
    Backlog,
    BacklogBase,
    CombinedBacklogBase,
    MemoryBacklog,
    Outcome,
)
from scheduler.backlog.base import CompletesAndClaims
from tests.backlog.helpers import new_job

OWNER, OTHER = "worker-a", "worker-b"

Call = Callable[[Any], Awaitable[object]]

#: one call of each public method, with arguments a refused call would otherwise take
CALLS: dict[str, Call] = {
    "submit": lambda b: b.submit([new_job(1)], now=0),
    "claim": lambda b: b.claim("batch", 1, owner=OWNER, lease_seconds=5, now=0),
    "heartbeat": lambda b: b.heartbeat(["x"], owner=OWNER, lease_seconds=5, now=0),
    "complete": lambda b: b.complete([Outcome.done("x", OWNER)], now=0),
    "release": lambda b: b.release(["x"], owner=OWNER, now=0),
    "get": lambda b: b.get("x"),
    "list_jobs": lambda b: b.list_jobs(),
    "requeue": lambda b: b.requeue(all_dead=True, now=0),
    "cancel": lambda b: b.cancel("x", now=0),
    "cancel_task": lambda b: b.cancel_task("tests.work", now=0),
    "cancel_requested": lambda b: b.cancel_requested(["x"]),
    "counts": lambda b: b.counts(),
    "purge": lambda b: b.purge(0),
    "queued_count": lambda b: b.queued_count("batch"),
    "queued_by_tenant": lambda b: b.queued_by_tenant("batch"),
    "complete_and_claim": lambda b: b.complete_and_claim(
        [Outcome.done("x", OWNER)], "batch", 1, owner=OWNER, lease_seconds=5, now=0
    ),
    # the open check comes before the argument checks (these would be ValueErrors)
    "requeue, bad arguments": lambda b: b.requeue(now=0),
    "cancel_task, bad arguments": lambda b: b.cancel_task(None, now=0),
    # ... and before the shortcuts of calls with nothing to do
    "submit, no jobs": lambda b: b.submit([], now=0),
    "claim, no room": lambda b: b.claim("batch", 0, owner=OWNER, lease_seconds=5, now=0),
    "complete, no outcomes": lambda b: b.complete([], now=0),
}


def test_the_calls_cover_every_async_method_of_the_protocol() -> None:
    protocol = {
        name
        for name, member in inspect.getmembers(Backlog)
        if inspect.iscoroutinefunction(member) and name not in ("open", "close")
    }
    assert protocol | {"complete_and_claim"} <= set(CALLS)


@pytest.mark.parametrize("method", list(CALLS))
async def test_a_backlog_that_is_not_open_refuses_every_call_alike(
    make_backlog: Callable[[], Backlog], method: str
) -> None:
    backlog = make_backlog()
    if method == "complete_and_claim" and not isinstance(backlog, CompletesAndClaims):
        pytest.skip(f"{type(backlog).__name__} has no complete_and_claim")
    with pytest.raises(BacklogError) as never_opened:
        await CALLS["get"](backlog)
    with pytest.raises(BacklogError) as before:
        await CALLS[method](backlog)
    await backlog.open()
    await backlog.close()
    with pytest.raises(BacklogError) as after:
        await CALLS[method](backlog)
    message = str(never_opened.value)
    assert message.endswith(" is not open")
    assert type(before.value) is type(after.value) is BacklogError
    assert str(before.value) == str(after.value) == message


async def test_the_built_in_backends_share_the_base_class(backlog: Backlog) -> None:
    assert isinstance(backlog, BacklogBase)
    assert isinstance(backlog, Backlog)
    combines = isinstance(backlog, CombinedBacklogBase)
    assert isinstance(backlog, CompletesAndClaims) is combines


async def test_stats_count_submits_claims_and_outcomes_alike(backlog: Backlog) -> None:
    fresh = backlog.stats()
    assert isinstance(fresh, BacklogStats)
    assert (fresh.submitted, fresh.claimed, fresh.applied, fresh.ignored) == (0, 0, 0, 0)
    # calls with nothing to do count nothing
    await backlog.submit([], now=0)
    await backlog.claim("batch", 0, owner=OWNER, lease_seconds=5, now=0)
    await backlog.complete([], now=0)
    assert backlog.stats() == fresh

    # a stored key counts: its record came back
    jobs = await backlog.submit([new_job(i, key=f"k{i}") for i in range(4)], now=0)
    again = await backlog.submit([new_job(0, key="k0")], now=0)
    assert again[0].id == jobs[0].id
    running = await backlog.claim("batch", 3, owner=OWNER, lease_seconds=5, now=1)
    assert len(running) == 3
    await backlog.heartbeat([r.id for r in running], owner=OWNER, lease_seconds=5, now=2)
    outcomes = [
        Outcome.done(running[0].id, OWNER, attempt=1),
        Outcome.done(running[1].id, OTHER),  # not its lease: ignored
        Outcome.retry(running[2].id, OWNER, run_at=2, error="again", attempt=2),  # stale
    ]
    assert await backlog.complete(outcomes, now=2) == 1
    assert await backlog.release([running[1].id], owner=OWNER, now=3) == 1

    stats = backlog.stats()
    assert (stats.submitted, stats.claimed, stats.applied, stats.ignored) == (5, 3, 1, 2)
    assert stats.pending_submits == 0
    if isinstance(backlog, MemoryBacklog):  # nothing to commit, nothing to hear
        assert stats == dataclasses.replace(fresh, submitted=5, claimed=3, applied=1, ignored=2)
    else:
        assert stats.commits > 0
        assert stats.submit_flushes >= 2

    # the combined call counts its outcomes and its claim the same way
    if isinstance(backlog, CompletesAndClaims):
        applied, claimed = await backlog.complete_and_claim(
            [Outcome.done(running[2].id, OWNER, attempt=1), Outcome.done("nope", OWNER)],
            "batch", 10, owner=OWNER, lease_seconds=5, now=4,
        )  # fmt: skip
        assert (applied, len(claimed)) == (1, 2)
        after = backlog.stats()
        assert (after.claimed, after.applied, after.ignored) == (5, 2, 3)


async def test_stats_is_frozen_and_reads_like_the_old_dict(backlog: Backlog) -> None:
    await backlog.submit([new_job(1)], now=0)
    await backlog.claim("batch", 1, owner=OWNER, lease_seconds=5, now=0)
    stats = backlog.stats()
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.claimed = 7  # type: ignore[misc]
    assert stats["claimed"] == stats.claimed == 1
    assert stats["submitted"] == 1
    assert stats["listening"] == int(stats.listening)
    with pytest.raises(KeyError):
        stats["nope"]
    await backlog.close()
    assert backlog.stats().claimed == 1  # readable once closed


async def test_scheduler_stats_include_the_backlogs() -> None:
    plain = Scheduler(":memory:", lanes=[Lane("interactive", 1)])
    async with plain:
        assert plain.stats().backlog is None  # no durable lane, no backlog
    sched = Scheduler(":memory:", lanes=[Lane("batch", 2, durable=True)])

    @sched.task(lane="batch")
    async def work(n: int) -> int:
        return n * 2

    assert sched.stats().backlog is None  # not started
    async with sched:
        job = await work.submit(21)
        assert (await job.result(timeout=10)) == 42
        stats = sched.stats().backlog
        assert stats is not None
        assert (stats.submitted, stats.claimed) == (1, 1)
        assert (await sched.job(job.id)).state is JobState.DONE
    assert sched.stats().backlog is None  # stopped: the backlog is closed
