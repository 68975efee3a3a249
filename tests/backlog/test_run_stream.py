"""A big keyless ``submit_many`` streams into one SQLite transaction while it is
encoded (``_run_stream``): it stores exactly what it hands back, all or none (a
bad item, a cancelled caller, a stalled or miscounted stream roll it back), lets
other writers in, and never stalls the event loop on a held lock. A real SQLite
file throughout; another process's lock is held by a second, plain connection."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any, overload

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scheduler import BacklogError, Lane, Overloaded, Scheduler
from scheduler.backlog import NewJob, SQLiteBacklog
from scheduler.backlog import _sqlite_ops as ops
from scheduler.backlog._run_stream import CHUNK, STREAM_MIN, RunAborted, RunStream
from scheduler.backlog.sqlite import _in_transaction
from tests.backlog.helpers import new_job, raw

TASK = "tests.stream.noop"


def make(path: Path, *, max_queued: int | None = None) -> Scheduler:
    lane = Lane("batch", 4, max_queued, durable=True)
    sched = Scheduler(str(path), lanes=[lane], fleet=False, shutdown_grace=5.0)
    sched.task(_noop, name=TASK)
    return sched


async def _noop(*args: Any) -> None:
    return None


def spy_streams(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The ``count`` of every run the SQLite backlog is asked to stream."""
    opened: list[int] = []
    original = SQLiteBacklog.open_run

    def open_run(self: SQLiteBacklog, template: NewJob, count: int, *, now: float) -> Any:
        opened.append(count)
        return original(self, template, count, now=now)

    monkeypatch.setattr(SQLiteBacklog, "open_run", open_run)
    return opened


def stored(path: Path) -> list[tuple[str, str, float, str | None, float | None]]:
    """(id, args, priority, tenant, cost) of every row, in insertion order."""
    with raw(path) as conn:
        return conn.execute(
            "SELECT id, args, priority, tenant, cost FROM jobs ORDER BY seq"
        ).fetchall()


def lane_count(path: Path) -> int:
    with raw(path) as conn:
        row = conn.execute("SELECT n FROM lane_queued WHERE lane = 'batch'").fetchone()
    return 0 if row is None else int(row[0])


async def test_a_big_call_streams_and_stores_what_it_hands_back(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened = spy_streams(monkeypatch)
    count = STREAM_MIN + CHUNK // 2 + 3  # not a whole number of chunks
    args = [[i, f"s{i}"] if i % 2 else (i,) for i in range(count)]
    sched = make(db_path)
    async with sched.open(run=()):
        backlog = sched.stats().backlog
        assert backlog is not None
        commits = backlog.commits
        jobs = await sched.tasks[TASK].submit_many(args, priority=2, cost=3, tenant="acme")
        after = sched.stats().backlog
        assert after is not None
        assert after.commits == commits + 1  # one transaction
        assert after.submitted - backlog.submitted == count
        for job in jobs[:: CHUNK // 4]:  # a sample of each chunk, read back field by field
            again = await job.refresh()
            assert (job.id, job.state, job.priority, job.run_at, job.created_at, job.cost) == (
                again.id, again.state, again.priority, again.run_at, again.created_at, again.cost
            )  # fmt: skip
    assert opened == [count]
    rows = stored(db_path)
    assert [r[0] for r in rows] == [j.id for j in jobs]
    assert [json.loads(r[1]) for r in rows] == [list(a) for a in args]
    assert {(r[2], r[3], r[4]) for r in rows} == {(2.0, "acme", 3.0)}
    assert lane_count(db_path) == count


async def test_calls_below_the_threshold_do_not_stream(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened = spy_streams(monkeypatch)
    async with make(db_path).open(run=()) as sched:
        await sched.tasks[TASK].submit_many([[i] for i in range(STREAM_MIN - 1)])
        await sched.tasks[TASK].submit_many([[i] for i in range(STREAM_MIN)], keys=None)
        keys = [f"k{i}" for i in range(STREAM_MIN)]
        await sched.tasks[TASK].submit_many([[i] for i in range(STREAM_MIN)], keys=keys)
    assert opened == [STREAM_MIN]  # the keyed call went in one by one, the short one as a run
    assert lane_count(db_path) == 3 * STREAM_MIN - 1


async def test_a_bad_item_late_in_the_call_stores_nothing(db_path: Path) -> None:
    bad = STREAM_MIN + 5  # in a chunk handed over after the thread began the run
    args: list[Any] = [[i] for i in range(STREAM_MIN + CHUNK)]
    args[bad] = [{1, 2}]
    sched = make(db_path)
    async with sched.open(run=()):
        task = sched.tasks[TASK]
        with pytest.raises(TypeError, match=rf"args_list\[{bad}\]: argument 0 \(set\)"):
            await task.submit_many(args)
        args[bad] = 7
        with pytest.raises(TypeError, match=rf"args_list\[{bad}\] must be a list or tuple"):
            await task.submit_many(args)
        assert await sched.backlog_counts() == {}
        assert lane_count(db_path) == 0
        args[bad] = [bad]
        # the backlog is free at once (the run was given up, not left to stall)
        assert len(await asyncio.wait_for(task.submit_many(args), timeout=5)) == len(args)
    assert len(stored(db_path)) == lane_count(db_path) == len(args)


class CancelsAt(Sequence[Sequence[Any]]):
    """Argument lists that cancel the calling task when the chunk at ``at`` is read."""

    def __init__(self, count: int, at: int) -> None:
        self.items = [[i] for i in range(count)]
        self.at = at

    def __len__(self) -> int:
        return len(self.items)

    @overload
    def __getitem__(self, index: int) -> Sequence[Any]: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[Sequence[Any]]: ...
    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice) and index.start == self.at:
            task = asyncio.current_task()
            assert task is not None
            task.cancel()
        return self.items[index]

    def __iter__(self) -> Iterator[Sequence[Any]]:
        return iter(self.items)


async def test_a_caller_cancelled_mid_stream_stores_nothing(db_path: Path) -> None:
    sched = make(db_path)
    async with sched.open(run=()):
        call = asyncio.ensure_future(
            sched.tasks[TASK].submit_many(CancelsAt(STREAM_MIN + CHUNK, at=2 * CHUNK))
        )
        with pytest.raises(asyncio.CancelledError):
            await call
        # the next write queues behind the run's transaction: it ended at once (not
        # after the thread's 30 s wait for a chunk), rolled back
        await asyncio.wait_for(sched.tasks[TASK].submit(1), timeout=5)
        assert await sched.backlog_counts() == {"batch": {"queued": 1}}
    assert lane_count(db_path) == 1


async def test_other_writers_go_on_while_a_run_streams(db_path: Path) -> None:
    sched = make(db_path)
    async with sched.open(run=()):
        task = sched.tasks[TASK]

        async def one_by_one() -> list[str]:
            return [(await task.submit("single", i)).id for i in range(40)]

        many, singles = await asyncio.gather(
            task.submit_many([[i] for i in range(2 * STREAM_MIN)]), one_by_one()
        )
        assert await sched.backlog_counts() == {"batch": {"queued": 2 * STREAM_MIN + 40}}
    ids = [r[0] for r in stored(db_path)]
    run = [job.id for job in many]
    start = ids.index(run[0])
    assert ids[start : start + len(run)] == run  # the run's rows are contiguous, in order
    assert sorted(set(ids) - set(run)) == sorted(singles)


async def test_a_held_lock_does_not_stall_the_loop(db_path: Path) -> None:
    """Another process holds the write lock: the run waits for it on the thread
    while the loop keeps turning, and lands once the lock is released."""
    sched = make(db_path)
    async with sched.open(run=()):
        ticks = 0
        with raw(db_path) as other:
            other.execute("BEGIN IMMEDIATE")
            call = asyncio.ensure_future(
                sched.tasks[TASK].submit_many([[i] for i in range(STREAM_MIN)])
            )
            for _ in range(20):
                await asyncio.sleep(0.002)
                ticks += 1
            assert not call.done()
            other.execute("COMMIT")
        assert len(await call) == STREAM_MIN
        assert ticks == 20
        assert await sched.backlog_counts() == {"batch": {"queued": STREAM_MIN}}


async def test_the_backlog_bound_refuses_a_streamed_call_whole(db_path: Path) -> None:
    """Another process filled the lane: the backlog's own count refuses the run."""
    bound = STREAM_MIN + 10
    first, second = make(db_path, max_queued=bound), make(db_path, max_queued=bound)
    async with first.open(run=()), second.open(run=()):
        await second.tasks[TASK].submit(0)  # second's cached count: 1
        await first.tasks[TASK].submit_many([[i] for i in range(20)])
        with pytest.raises(Overloaded, match=f"none of the {STREAM_MIN:,} jobs"):
            await second.tasks[TASK].submit_many([[i] for i in range(STREAM_MIN)])
        assert await first.backlog_counts() == {"batch": {"queued": 21}}
    assert lane_count(db_path) == 21


# -- the connection thread's side, on a plain connection ---------------------------


def template() -> NewJob:
    return NewJob(task=TASK, lane="batch", args_json="[]", run_at=0.0, max_attempts=3)


def write(path: Path, batch: list[ops.Submit]) -> list[Any]:
    """``ops.insert`` of ``batch`` in its own transaction, on this thread."""
    with raw(path) as conn:
        ops.migrate(conn, str(path))
        return _in_transaction(conn, partial(ops.insert, batch=batch))


def test_a_stalled_stream_is_rolled_back(db_path: Path) -> None:
    stream = RunStream(template(), 10, stall=0.05)
    stream.add(['["a"]'] * 4)  # then nothing: the loop stopped handing the run over
    [outcome] = write(db_path, [(stream, [], 1.0)])
    assert isinstance(outcome, RunAborted)
    assert "stopped handing its jobs over for 0.05 s (4 of 10 came)" in str(outcome)
    assert stored(db_path) == []
    assert lane_count(db_path) == 0


@pytest.mark.parametrize("handed", [3, 12])
def test_a_run_handed_another_count_is_rolled_back(db_path: Path, handed: int) -> None:
    stream = RunStream(template(), 8, stall=5)
    stream.add(['["a"]'] * handed)
    stream.end()
    [outcome] = write(db_path, [(stream, [], 1.0)])
    assert isinstance(outcome, RunAborted)
    assert f"a run of 8 jobs was handed {handed}" in str(outcome)
    assert stored(db_path) == []


def test_an_aborted_run_leaves_the_other_submits_of_its_transaction(db_path: Path) -> None:
    stream = RunStream(template(), 8, stall=5)
    stream.add(["[1]"] * 3)
    stream.abort("a bad item")
    before, after = [new_job("before")], [new_job("after")]
    outcomes = write(
        db_path, [(before, [["before"]], 1.0), (stream, [], 1.0), (after, [["after"]], 1.0)]
    )
    assert isinstance(outcomes[1], RunAborted)
    assert "a bad item" in str(outcomes[1])
    assert [r[1] for r in stored(db_path)] == ['["before"]', '["after"]']
    assert lane_count(db_path) == 2


def test_text_that_is_not_ascii_is_stored_as_it_is(db_path: Path) -> None:
    stream = RunStream(template(), 4, stall=5)
    texts = ['["é"]', '["x"]', '["日本"]', '["\\u00e9"]']
    ids = stream.add(texts[:2]) + stream.add(texts[2:])
    stream.end()
    assert write(db_path, [(stream, [], 1.0)]) == [[]]
    assert [(r[0], r[1]) for r in stored(db_path)] == list(zip(ids, texts, strict=True))


async def test_open_run_refuses_bad_runs(db_path: Path) -> None:
    async with SQLiteBacklog(db_path) as backlog:
        keyed = NewJob(task=TASK, lane="batch", args_json="[]", run_at=0.0, key="k")
        with pytest.raises(ValueError, match="no key"):
            backlog.open_run(keyed, 5, now=0)
        for count in (0, -1, True, 2.0):
            with pytest.raises(ValueError, match="count must be an int >= 1"):
                backlog.open_run(template(), count, now=0)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="max_attempts"):
            backlog.open_run(
                NewJob(task=TASK, lane="batch", args_json="[]", run_at=0.0, max_attempts=0),
                5,
                now=0,
            )
    async with SQLiteBacklog(db_path, read_only=True) as reader:
        with pytest.raises(BacklogError, match="read-only"):
            reader.open_run(template(), 5, now=0)


# -- property: all or none, in order, beside other writers -------------------------


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    count=st.integers(STREAM_MIN, STREAM_MIN + 2 * CHUNK + 7),
    bad=st.one_of(st.none(), st.floats(0, 1)),
    singles=st.integers(0, 12),
)
def test_a_streamed_call_is_all_or_none_beside_other_writers(
    tmp_path_factory: pytest.TempPathFactory, count: int, bad: float | None, singles: int
) -> None:
    path = tmp_path_factory.mktemp("stream") / "jobs.db"
    args: list[Any] = [[i] for i in range(count)]
    bad_at = None if bad is None else min(count - 1, int(bad * count))
    if bad_at is not None:
        args[bad_at] = [float("nan")]

    async def main() -> tuple[list[str] | None, list[str]]:
        sched = make(path)
        async with sched.open(run=()):
            task = sched.tasks[TASK]

            async def many() -> list[str] | None:
                try:
                    return [job.id for job in await task.submit_many(args)]
                except TypeError:
                    return None

            async def one_by_one() -> list[str]:
                return [(await task.submit("single", i)).id for i in range(singles)]

            return await asyncio.gather(many(), one_by_one())

    run, single_ids = asyncio.run(main())
    rows = stored(path)
    ids = [r[0] for r in rows]
    assert (run is None) == (bad_at is not None)
    assert sorted(set(ids) - set(run or [])) == sorted(single_ids)
    if run is not None:
        start = ids.index(run[0])
        assert ids[start : start + count] == run
        assert [json.loads(r[1]) for r in rows[start : start + count]] == args
    assert lane_count(path) == len(rows) == (count if run else 0) + singles
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
