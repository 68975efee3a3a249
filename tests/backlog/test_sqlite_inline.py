"""Small SQLite writes run inline on the event loop's thread (``_sqlite_thread``):
when, when not, and that a held lock or a failure neither blocks the loop nor
loses a job. A real SQLite file throughout; the lock is held by a second, plain
connection, as another process would hold it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scheduler import BacklogError, BacklogOptions, JobState, Scheduler
from scheduler.backlog import Outcome, SQLiteBacklog
from scheduler.backlog._sqlite_thread import INLINE_ROWS
from tests.backlog.helpers import new_job, raw

OWNER = "w1"


def counted(backlog: SQLiteBacklog) -> tuple[int, int, int]:
    stats = backlog.stats()
    return stats.commits, stats.inline_commits, stats.inline_busy


async def test_small_writes_run_inline_when_the_thread_is_idle(db_path: Path) -> None:
    async with SQLiteBacklog(db_path) as backlog:
        commits, inline, _ = counted(backlog)
        [job] = await backlog.submit([new_job(1)], now=0)
        [leased] = await backlog.claim("batch", 8, owner=OWNER, lease_seconds=5, now=1)
        assert await backlog.complete([Outcome.done(leased.id, OWNER, "2")], now=2) == 1
        assert counted(backlog)[:2] == (commits + 3, inline + 3)
        stored = await backlog.get(job.id)
    assert stored is not None
    assert stored.state is JobState.DONE
    with raw(db_path) as conn:  # committed: another connection sees it
        assert conn.execute("SELECT state FROM jobs").fetchall() == [("done",)]


@pytest.mark.parametrize(
    "options", [{"synchronous": "FULL"}, {"inline_writes": False}], ids=["FULL", "switched-off"]
)
async def test_full_synchronous_or_switched_off_never_runs_inline(
    db_path: Path, options: dict[str, Any]
) -> None:
    async with SQLiteBacklog(db_path, **options) as backlog:
        await backlog.submit([new_job(1)], now=0)
        [job] = await backlog.claim("batch", 1, owner=OWNER, lease_seconds=5, now=1)
        await backlog.complete([Outcome.done(job.id, OWNER)], now=2)
        stats = backlog.stats()
        assert (stats.commits, stats.inline_commits) == (4, 0)  # the migration, 3 writes


async def test_the_scheduler_passes_inline_writes_on(db_path: Path) -> None:
    """``BacklogOptions(inline_writes=...)`` reaches the SQLite backlog; on by default."""
    for options, inline in ((None, True), (BacklogOptions(inline_writes=False), False)):
        sched = Scheduler(str(db_path), backlog_options=options)
        task = sched.task(_noop, name="tests.inline.noop")
        async with sched.open(run=()):
            for i in range(3):  # the first may queue behind the fleet's start-up write
                await task.submit(i)
            backlog = sched.stats().backlog
            assert backlog is not None
            assert (backlog.inline_commits > 0) is inline
    with pytest.raises(TypeError, match="inline_writes must be a bool"):
        BacklogOptions(inline_writes="no")  # type: ignore[arg-type]


async def _noop(i: int) -> None:
    return None


async def test_big_writes_stay_on_the_thread(db_path: Path) -> None:
    async with SQLiteBacklog(db_path) as backlog:
        commits, inline, _ = counted(backlog)
        jobs = await backlog.submit([new_job(i) for i in range(INLINE_ROWS + 1)], now=2)
        assert counted(backlog)[:2] == (commits + 1, inline)
        await backlog.submit([new_job(i) for i in range(INLINE_ROWS)], now=3)
        assert counted(backlog)[:2] == (commits + 2, inline + 1)
        assert len(jobs) == INLINE_ROWS + 1


async def test_a_write_waits_behind_a_read_queued_on_the_thread(db_path: Path) -> None:
    """The thread and the loop never share the connection: with a read still on the
    thread, a small write queues behind it instead of running inline."""
    async with SQLiteBacklog(db_path) as backlog:
        await backlog.submit([new_job(0)], now=0)
        reading = asyncio.ensure_future(backlog.counts())
        await asyncio.sleep(0)  # the read is queued on the thread now
        _, inline, _ = counted(backlog)
        await backlog.submit([new_job(1)], now=1)
        assert counted(backlog)[1] == inline
        assert (await reading)["batch"]["queued"] in (1, 2)
        await backlog.submit([new_job(2)], now=2)  # the thread is idle again
        assert counted(backlog)[1] == inline + 1


async def test_a_held_lock_sends_the_write_to_the_thread_and_the_loop_runs_on(
    db_path: Path,
) -> None:
    """Another connection holds the write lock: the inline attempt does not wait
    (the loop keeps turning), the write waits on the thread up to ``busy_timeout``
    and lands once the lock is free; then writes run inline again."""
    async with SQLiteBacklog(db_path, busy_timeout=5.0) as backlog:
        await backlog.submit([new_job(0)], now=0)
        turns = 0
        with raw(db_path) as locker:
            locker.execute("BEGIN IMMEDIATE")
            submit = asyncio.ensure_future(backlog.submit([new_job(1)], now=1))
            for _ in range(20):  # the loop runs while the write waits for the lock
                await asyncio.sleep(0.002)
                turns += 1
                assert not submit.done()
            locker.execute("COMMIT")
            [job] = await submit
        assert turns == 20
        assert counted(backlog)[2] == 1
        _, inline, _ = counted(backlog)
        await backlog.submit([new_job(2)], now=2)
        assert counted(backlog)[1:] == (inline + 1, 1)
        assert (await backlog.get(job.id)) == job
        assert [j.args for j in await backlog.list_jobs()] == [[0], [1], [2]]


async def test_the_thread_still_waits_for_a_lock_after_inline_writes(db_path: Path) -> None:
    """Inline writes set the connection's busy timeout to 0; a write on the thread
    gets ``busy_timeout`` back (a lock held past it is still ``BacklogLocked``)."""
    async with SQLiteBacklog(db_path, busy_timeout=0.2) as backlog:
        await backlog.submit([new_job(0)], now=0)  # inline: busy timeout 0 now
        assert counted(backlog)[1] >= 1
        with raw(db_path) as locker:
            locker.execute("BEGIN IMMEDIATE")
            loop = asyncio.get_running_loop()
            loop.call_later(0.05, locker.execute, "COMMIT")  # well within 0.2 s
            await backlog.submit([new_job(i) for i in range(INLINE_ROWS + 1)], now=1)
        assert len(await backlog.list_jobs(limit=1000)) == INLINE_ROWS + 2


async def test_a_failed_inline_write_rolls_back_and_loses_nothing(db_path: Path) -> None:
    async with SQLiteBacklog(db_path) as backlog:
        [kept] = await backlog.submit([new_job("kept")], now=0)
        with raw(db_path) as conn:
            conn.execute(
                "CREATE TRIGGER boom BEFORE INSERT ON jobs WHEN NEW.task = 'boom'"
                " BEGIN SELECT RAISE(ABORT, 'boom refused'); END"
            )
        _, inline, _ = counted(backlog)
        with pytest.raises(BacklogError, match="boom refused"):
            await backlog.submit([new_job("a"), new_job("b", task="boom")], now=1)
        [after] = await backlog.submit([new_job("after")], now=2)
        assert counted(backlog)[1] == inline + 1  # the connection is usable inline
        assert [j.args for j in await backlog.list_jobs()] == [["kept"], ["after"]]
        assert (await backlog.get(kept.id)) == kept
        assert after.state is JobState.QUEUED


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    steps=st.lists(
        st.tuples(
            st.sampled_from(["submit", "claim", "complete", "read", "lock"]),
            st.integers(min_value=1, max_value=2 * INLINE_ROWS),
        ),
        min_size=1,
        max_size=12,
    )
)
def test_any_mix_of_inline_and_thread_writes_keeps_every_job_once(
    tmp_path_factory: pytest.TempPathFactory, steps: list[tuple[str, int]]
) -> None:
    """Concurrent submits, claims, completes and reads, some under a lock another
    connection holds for a few ms: every submitted job is stored once, claimed at
    most once, and the counts agree with what the calls returned."""
    path = tmp_path_factory.mktemp("inline") / "backlog.db"

    async def scenario() -> None:
        async with SQLiteBacklog(path, busy_timeout=5.0) as backlog:
            submitted: list[str] = []
            leased: list[str] = []
            done: list[str] = []
            one_locker = asyncio.Lock()  # two would wait for each other on this thread

            async def step(i: int, kind: str, n: int) -> None:
                await asyncio.sleep(0.001 * (i % 3))
                if kind == "submit":
                    jobs = await backlog.submit([new_job(i, k) for k in range(n)], now=i)
                    submitted.extend(j.id for j in jobs)
                elif kind == "claim":
                    got = await backlog.claim("batch", n, owner=OWNER, lease_seconds=60, now=i)
                    leased.extend(j.id for j in got)
                elif kind == "complete":
                    mine = [j for j in leased if j not in done][:n]
                    done.extend(mine)
                    outcomes = [Outcome.done(j, OWNER) for j in mine]
                    assert await backlog.complete(outcomes, now=i) == len(mine)
                elif kind == "read":
                    await backlog.counts()
                else:
                    async with one_locker:
                        await hold_lock(n)

            async def hold_lock(n: int) -> None:
                with raw(path) as locker:
                    locker.execute("BEGIN IMMEDIATE")
                    await asyncio.sleep(0.001 * (n % 5))
                    locker.execute("COMMIT")

            await asyncio.gather(*(step(i, kind, n) for i, (kind, n) in enumerate(steps)))
            assert len(set(submitted)) == len(submitted)
            assert len(set(leased)) == len(leased)
            assert set(leased) <= set(submitted)
            counts = (await backlog.counts()).get("batch", {})
            assert counts.get("done", 0) == len(done)
            assert counts.get("running", 0) == len(leased) - len(done)
            assert counts.get("queued", 0) == len(submitted) - len(leased)
            stats = backlog.stats()
            assert stats.inline_commits <= stats.commits

    asyncio.run(scenario())
