"""``scheduler.testing``: settle the loop for real, poll real I/O with a bound."""

from __future__ import annotations

import asyncio
import time
import types

import pytest

import scheduler.clock
from scheduler import _quiet
from scheduler.testing import FakeClock, eventually, wait_all_tasks_blocked

CHAIN = 50  # each link needs its own loop iteration: far more than the old ten yields


async def chain(n: int) -> tuple[list[asyncio.Event], list[int], list[asyncio.Task[None]]]:
    """``n`` tasks, all waiting; each, once its event is set, sets the next one's."""
    events = [asyncio.Event() for _ in range(n + 1)]
    reached: list[int] = []

    async def link(i: int) -> None:
        await events[i].wait()
        reached.append(i)
        events[i + 1].set()

    tasks = [asyncio.create_task(link(i)) for i in range(n)]
    await asyncio.sleep(0)  # they all start, and wait
    return events, reached, tasks


def test_the_kit_re_exports_the_fake_clock() -> None:
    assert FakeClock is scheduler.clock.FakeClock is scheduler.FakeClock


async def test_it_returns_only_after_a_long_chain_of_wake_ups_ran_to_its_end() -> None:
    events, reached, tasks = await chain(CHAIN)
    events[0].set()
    for _ in range(10):  # what "settling" used to be
        await asyncio.sleep(0)
    assert len(reached) < CHAIN, "the chain is too short to tell the two apart"
    await wait_all_tasks_blocked()
    assert reached == list(range(CHAIN))
    assert all(task.done() for task in tasks)


async def test_it_returns_at_once_when_every_task_waits_on_a_future() -> None:
    never: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    waiters = [asyncio.create_task(asyncio.wait_for(never, 60)) for _ in range(20)]
    started = time.monotonic()
    await wait_all_tasks_blocked()
    assert time.monotonic() - started < 0.5
    assert not any(w.done() for w in waiters)
    for w in waiters:
        w.cancel()
    await asyncio.gather(*waiters, return_exceptions=True)


async def test_it_gives_up_in_bounded_time_on_a_task_that_never_blocks() -> None:
    async def spin() -> None:
        while True:  # noqa: ASYNC110 - the point: a task that never blocks
            await asyncio.sleep(0)

    spinner = asyncio.create_task(spin())
    started = time.monotonic()
    try:
        with pytest.raises(TimeoutError, match=r"still busy after 0\.05 s"):
            await wait_all_tasks_blocked(timeout=0.05)
    finally:
        spinner.cancel()
    assert time.monotonic() - started < 2.0


async def test_a_thread_counts_as_blocked_and_eventually_waits_for_it() -> None:
    worker = asyncio.create_task(asyncio.to_thread(time.sleep, 0.1))
    await wait_all_tasks_blocked()
    assert not worker.done(), "the loop cannot see into the thread"
    await eventually(worker.done, timeout=5)


async def test_without_the_loops_ready_queue_it_falls_back_to_yielding(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake_asyncio = types.SimpleNamespace(get_running_loop=object, sleep=asyncio.sleep)
    monkeypatch.setattr(_quiet, "asyncio", fake_asyncio)
    events, reached, _ = await chain(5)
    events[0].set()
    await wait_all_tasks_blocked()
    assert reached == list(range(5))


# -- FakeClock.advance_and_settle --------------------------------------------------------


async def test_advance_and_settle_lets_a_chain_woken_by_a_timer_finish(clock: FakeClock) -> None:
    events, reached, _ = await chain(CHAIN)
    clock.call_at(1.0, events[0].set)
    await clock.advance_and_settle(1.0, rounds=10)  # rounds: still accepted, not needed
    assert reached == list(range(CHAIN))


async def test_advance_and_settle_in_steps_keeps_a_sleepers_rhythm(clock: FakeClock) -> None:
    ticks: list[float] = []

    async def ticker() -> None:
        while True:
            await clock.sleep(0.5)
            ticks.append(clock.now())

    task = asyncio.create_task(ticker())
    await clock.advance_and_settle(5, step=0.5)
    assert ticks == [0.5 * i for i in range(1, 11)]
    await clock.advance_and_settle(5)  # one jump: the sleeper wakes once
    assert len(ticks) == 11
    assert clock.now() == 10.0
    task.cancel()
    with pytest.raises(ValueError, match="step"):
        await clock.advance_and_settle(1, step=0)


# -- eventually -----------------------------------------------------------------------------


async def test_eventually_returns_the_first_truthy_result() -> None:
    items: list[int] = []
    loop = asyncio.get_running_loop()
    for i in range(3):
        loop.call_later(0.01 * (i + 1), items.append, i)
    assert await eventually(lambda: len(items) == 3 and items) == [0, 1, 2]

    async def latest() -> int | None:
        await asyncio.sleep(0)
        return items[-1] if items else None

    assert await eventually(latest, timeout=1) == 2


async def test_eventually_fails_with_what_it_checked_and_for_how_long() -> None:
    items: list[int] = []
    started = time.monotonic()
    with pytest.raises(AssertionError) as failed:
        await eventually(lambda: len(items) == 3, timeout=0.03)
    assert time.monotonic() - started < 1.0
    message = str(failed.value)
    assert message.startswith("timed out after 0.03 s waiting until `len(items) == 3` (")
    assert "the last returned False" in message

    def nothing_yet() -> list[int]:
        return items

    with pytest.raises(AssertionError, match=r"until nothing_yet\(\) \(.* returned \[\]\)$"):
        await eventually(nothing_yet, timeout=0.001, interval=0.001)
    with pytest.raises(AssertionError, match=r"^timed out after 0 s waiting until the queue"):
        await eventually(lambda: items, timeout=0, what="the queue drains")
