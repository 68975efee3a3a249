"""The scheduler's task group: a crashed loop stops the scheduler and ends its
``async with`` with SchedulerCrashed, after the usual stop (leases released)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from scheduler import BacklogOptions, JobState, Lane, Scheduler, SchedulerCrashed
from scheduler.backlog import SQLiteBacklog
from scheduler.task_group import TaskGroup, cancel_and_wait
from scheduler.tasks import Task


def blocking_scheduler(path: Path) -> tuple[Scheduler, Task[[], None], asyncio.Event]:
    """A durable lane whose task ``app.block`` waits for ever once started (``started``
    is set then); heartbeats every 50 ms, so a broken lease loop shows at once."""
    sched = Scheduler(
        str(path),
        lanes=[Lane("batch", 2, durable=True)],
        backlog_options=BacklogOptions(lease=30.0, heartbeat=0.05, poll_interval=0.01),
        shutdown_grace=0,
    )
    started = asyncio.Event()

    @sched.task(name="app.block")
    async def block() -> None:
        started.set()
        await asyncio.Event().wait()

    return sched, block, started


async def test_a_crashed_lease_loop_stops_the_scheduler_and_releases_its_leases(
    tmp_path: Path,
) -> None:
    path = tmp_path / "t.db"
    sched, block, started = blocking_scheduler(path)

    reached_end_of_body = False
    submitted: list[str] = []

    async def run() -> None:
        nonlocal reached_end_of_body
        async with sched:
            submitted.append((await block.submit()).id)
            await asyncio.wait_for(started.wait(), 10)
            backlog = sched._require_store().backlog

            async def broken(*args: object, **kwargs: object) -> int:
                raise RuntimeError("a bug in the lease loop")

            backlog.heartbeat = broken  # type: ignore[method-assign]
            # the crash ends this wait (bounded if it does not)
            await asyncio.wait_for(asyncio.Event().wait(), 30)
            reached_end_of_body = True

    with pytest.raises(SchedulerCrashed) as caught:
        await run()
    assert not reached_end_of_body
    assert "floodgate-lease-batch" in str(caught.value)
    assert isinstance(caught.value.__cause__, RuntimeError)
    assert caught.value.task == "floodgate-lease-batch"
    async with SQLiteBacklog(path) as fresh:  # the running job was given back, not lost
        stored = await fresh.get(submitted[0])
    assert stored is not None
    assert (stored.state, stored.attempts, stored.lease_owner) == (JobState.QUEUED, 0, None)


async def test_a_clean_run_ends_without_an_error_and_leaves_no_task(tmp_path: Path) -> None:
    sched = Scheduler(str(tmp_path / "t.db"), shutdown_grace=0)

    @sched.task(name="app.work")
    async def work(n: int) -> int:
        return n

    async with sched:
        assert await (await work.submit(4)).result(timeout=10) == 4
        assert len(sched._task_group) >= 4  # the lane's claim, flush, lease, cancel loops
    assert len(sched._task_group) == 0
    names = {t.get_name() for t in asyncio.all_tasks()}
    assert not any(name.startswith("floodgate-") for name in names)


async def test_the_group_keeps_the_first_crash_and_ignores_cancelled_tasks() -> None:
    crashes: list[str] = []
    group = TaskGroup(lambda: crashes.append("crash"))

    async def fail(message: str) -> None:
        raise ValueError(message)

    async def wait() -> None:
        await asyncio.Event().wait()

    waiting = group.start(wait(), name="waits")
    group.start(fail("first"), name="one")
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    group.start(fail("second"), name="two")
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert crashes == ["crash"]
    assert str(group.crashed) == "first"
    assert group.crashed_in == "one"
    await group.close()
    assert waiting.cancelled()
    assert len(group) == 0


async def test_a_worker_whose_scheduler_crashed_fails_with_a_clear_error(tmp_path: Path) -> None:
    from workers.errors import CommandError
    from workers.run import Worker

    sched, block, started = blocking_scheduler(tmp_path / "w.db")

    async with sched.open(run=()):
        await block.submit()
    worker = Worker(sched, ("batch",), summary_every=None)
    run = asyncio.create_task(worker.run())
    await asyncio.wait_for(started.wait(), 10)

    async def broken(*args: object, **kwargs: object) -> int:
        raise RuntimeError("a bug in the lease loop")

    sched._require_store().backlog.heartbeat = broken  # type: ignore[method-assign]
    with pytest.raises(CommandError) as caught:
        await asyncio.wait_for(run, 10)
    assert caught.value.exit_code == 1
    assert "floodgate-lease-batch" in str(caught.value)
    assert "crashed" in str(caught.value)


async def test_on_done_runs_once_after_the_groups_own_bookkeeping() -> None:
    crashes: list[str] = []
    group = TaskGroup(on_crash=lambda: crashes.append("crash"))
    seen: list[tuple[str, int, bool]] = []

    def on_done(task: asyncio.Task[None]) -> None:
        # the group has already forgotten the task and recorded its crash
        seen.append((task.get_name(), len(group), group.crashed is not None))

    async def ok() -> None:
        await asyncio.sleep(0)

    async def boom() -> None:
        raise RuntimeError("a bug")

    await asyncio.gather(group.start(ok(), name="ok", on_done=on_done), return_exceptions=True)
    await asyncio.gather(group.start(boom(), name="boom", on_done=on_done), return_exceptions=True)
    await asyncio.sleep(0)  # done callbacks run on the loop's next turn
    assert seen == [("ok", 0, False), ("boom", 0, True)]
    assert crashes == ["crash"]
    assert group.crashed_in == "boom"


async def test_cancel_and_wait_ends_the_tasks_and_keeps_the_caller_s_own_cancel() -> None:
    release = asyncio.Event()

    async def slow_to_stop() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            await release.wait()  # takes a while to end once cancelled

    child = asyncio.create_task(slow_to_stop())
    await asyncio.sleep(0)
    stopper = asyncio.create_task(cancel_and_wait(child))
    await asyncio.sleep(0)
    stopper.cancel()  # the stop itself is cancelled while the child winds down
    await asyncio.wait({stopper}, timeout=5)
    assert stopper.cancelled(), "the caller's cancel was swallowed"
    release.set()
    await asyncio.wait({child}, timeout=5)
    assert child.cancelled()
    await cancel_and_wait()  # nothing to cancel: returns at once
