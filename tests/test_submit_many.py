"""``task.submit_many`` / ``sched.submit_many``: bulk enqueue on every backlog.

Each test runs on the memory, SQLite and PostgreSQL backlogs (PostgreSQL when
``FLOODGATE_TEST_POSTGRES_DSN`` is set). The property at the end checks that a
``submit_many`` leaves the backlog exactly as the same submits made one by one.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scheduler import Lane, Overloaded, Scheduler
from scheduler.backlog import SQLiteBacklog

BACKENDS = ["memory", "sqlite", "postgres"]


@pytest.fixture(params=BACKENDS)
def target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The ``backlog=`` string of a fresh backlog of each kind (PostgreSQL: a DSN
    whose search_path is a fresh schema, from the ``dsn`` fixture)."""
    kind = str(request.param)
    if kind == "memory":
        return ":memory:"
    if kind == "sqlite":
        return str(tmp_path / "jobs.db")
    return str(request.getfixturevalue("dsn"))


def make(target: str, *, max_queued: int | None = None) -> Scheduler:
    lane = (
        Lane("batch", 4, durable=True)
        if max_queued is None
        else Lane("batch", 4, max_queued, durable=True)
    )
    sched = Scheduler(target, lanes=[lane], fleet=False, shutdown_grace=5.0)

    async def double(x: Any) -> Any:
        return [x, x] if isinstance(x, str) else x * 2

    sched.task(name="double")(double)
    return sched


async def test_jobs_come_back_in_order_and_run_with_their_args(target: str) -> None:
    sched = make(target)
    async with sched:
        task = sched.tasks["double"]
        jobs = await task.submit_many([[i] for i in range(50)] + [("x",)], priority=3)
        assert len({job.id for job in jobs}) == 51
        assert all(job.priority == 3 and job.task == "double" for job in jobs)
        results = [await job.result(timeout=10) for job in jobs]
    assert results == [i * 2 for i in range(50)] + [["x", "x"]]


async def test_an_empty_list_stores_nothing(target: str) -> None:
    sched = make(target)
    async with sched.open(run=()):
        assert await sched.submit_many("double", []) == []
        assert await sched.backlog_counts() == {}


async def test_a_bad_item_is_named_and_nothing_is_stored(target: str) -> None:
    sched = make(target)
    async with sched.open(run=()):
        task = sched.tasks["double"]
        with pytest.raises(TypeError, match=r"args_list\[2\]: argument 0 \(set\)"):
            await task.submit_many([[1], [2], [{1, 2}], [3]])
        with pytest.raises(TypeError, match=r"args_list\[1\] must be a list or tuple"):
            await task.submit_many([[1], 2])  # type: ignore[list-item]
        with pytest.raises(TypeError, match=r"args_list must be a list"):
            await task.submit_many("abc")
        with pytest.raises(TypeError, match=r"keys\[1\] must be a non-empty str"):
            await task.submit_many([[1], [2]], keys=["a", 7])  # type: ignore[list-item]
        with pytest.raises(ValueError, match="keys has 1 items, args_list 2"):
            await task.submit_many([[1], [2]], keys=["a"])
        assert await sched.backlog_counts() == {}


async def test_keys_make_it_idempotent(target: str) -> None:
    sched = make(target)
    async with sched.open(run=()):
        task = sched.tasks["double"]
        first = await task.submit_many([[1], [2], [3]], keys=["a", None, "b"])
        again = await task.submit_many([[9], [8], [7], [6]], keys=["b", "c", "c", "a"])
        assert again[0].id == first[2].id
        assert again[3].id == first[0].id
        assert again[1].id == again[2].id  # the same key twice in one call: one job
        assert len({j.id for j in first + again}) == 4
        assert await sched.backlog_counts() == {"batch": {"queued": 4}}


async def test_max_queued_is_all_or_nothing(target: str) -> None:
    sched = make(target, max_queued=5)
    async with sched.open(run=()):
        task = sched.tasks["double"]
        await task.submit_many([[i] for i in range(3)])
        with pytest.raises(Overloaded, match="none of the 3 jobs was stored") as caught:
            await task.submit_many([[i] for i in range(3)])
        assert caught.value.lane == "batch"
        assert await sched.backlog_counts() == {"batch": {"queued": 3}}
        # keys already stored need no room
        stored = await task.submit_many([[0], [1]], keys=["k0", "k1"])
        again = await task.submit_many([[0], [1]], keys=["k1", "k0"])
        assert [j.id for j in again] == [stored[1].id, stored[0].id]
        with pytest.raises(Overloaded):
            await task.submit_many([[0], [1]], keys=["k0", None])
        assert await sched.backlog_counts() == {"batch": {"queued": 5}}


async def test_the_backlog_bound_holds_whatever_the_cached_count_says(target: str) -> None:
    """Another process filled the lane: the backlog's own count refuses the whole call."""
    first, second = make(target, max_queued=4), make(target, max_queued=4)
    if target == ":memory:":
        pytest.skip("a memory backlog is not shared between schedulers")
    async with first.open(run=()), second.open(run=()):
        await first.tasks["double"].submit_many([[1], [2]])
        await second.tasks["double"].submit_many([[3]])  # second's cache: 1 queued
        await first.tasks["double"].submit_many([[4]])
        with pytest.raises(Overloaded, match="none of the 2 jobs"):
            await second.tasks["double"].submit_many([[5], [6]])
        assert await first.backlog_counts() == {"batch": {"queued": 4}}


async def test_one_call_is_one_sqlite_transaction(tmp_path: Path) -> None:
    sched = make(str(tmp_path / "jobs.db"))
    async with sched.open(run=()):
        store = sched._store
        assert store is not None
        assert isinstance(store.backlog, SQLiteBacklog)
        before = store.backlog.stats()["commits"]
        jobs = await sched.tasks["double"].submit_many([[i] for i in range(5_000)])
        assert store.backlog.stats()["commits"] == before + 1
        assert len(jobs) == 5_000
        assert await sched.backlog_counts() == {"batch": {"queued": 5_000}}


# -- property: submit_many == the same submits one by one -------------------------

ITEMS = st.lists(
    st.tuples(
        st.lists(st.one_of(st.integers(-5, 5), st.text(max_size=3), st.none()), max_size=3),
        st.one_of(st.none(), st.sampled_from(["a", "b", "c", "d"])),
    ),
    max_size=25,
)


def _stored(
    target_of: Callable[[str], str],
    items: list[tuple[list[Any], str | None]],
    bulk: bool,
    bound: int | None,
) -> tuple[list[tuple[Any, ...]], list[int], str]:
    """Store ``items`` (one call, or one submit each); return what the backlog holds
    (args, key, state in insertion order), the index of each returned job among the
    stored ones, and the outcome ("ok" or "overloaded")."""

    async def main(directory: str) -> tuple[list[tuple[Any, ...]], list[int], str]:
        sched = make(target_of(directory), max_queued=bound)
        async with sched.open(run=()):
            task = sched.tasks["double"]
            outcome = "ok"
            jobs = []
            try:
                if bulk:
                    jobs = await task.submit_many(
                        [args for args, _ in items], keys=[key for _, key in items]
                    )
                else:
                    for args, key in items:
                        jobs.append(await task.submit(*args, key=key))
            except Overloaded:
                outcome = "overloaded"
            assert sched._store is not None
            records = await sched._store.backlog.list_jobs(limit=1_000)
        order = {r.id: i for i, r in enumerate(records)}
        stored = [(tuple(r.args), r.key, r.state.value, r.priority) for r in records]
        return stored, [order[j.id] for j in jobs], outcome

    with tempfile.TemporaryDirectory() as directory:
        return asyncio.run(main(directory))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(items=ITEMS)
@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_submit_many_stores_what_one_by_one_submits_store(
    kind: str, items: list[tuple[list[Any], str | None]]
) -> None:
    def target_of(directory: str) -> str:
        return ":memory:" if kind == "memory" else str(Path(directory) / "jobs.db")

    bulk = _stored(target_of, items, True, None)
    single = _stored(target_of, items, False, None)
    assert bulk == single


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(items=ITEMS, bound=st.integers(0, 8))
def test_under_a_bound_submit_many_stores_all_or_nothing(
    items: list[tuple[list[Any], str | None]], bound: int
) -> None:
    """One by one, submits store until the lane is full; in bulk, the call stores
    everything exactly when one by one would have stored everything, else nothing."""

    def target_of(directory: str) -> str:
        return str(Path(directory) / "jobs.db")

    bulk = _stored(target_of, items, True, bound)
    single = _stored(target_of, items, False, bound)
    if single[2] == "ok":
        assert bulk == single
    else:
        assert bulk == ([], [], "overloaded")


def _fields(job: Any) -> tuple[Any, ...]:
    return (
        job.id, job.task, job.lane, job.state, job.attempts, job.max_attempts, job.priority,
        job.run_at, job.created_at, job.updated_at, job.key, job.error, job.traceback,
        job.cost, job.tenant,
    )  # fmt: skip


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    args=st.lists(st.lists(st.integers(-9, 9), max_size=2), min_size=2, max_size=30),
    priority=st.floats(-3, 3, allow_nan=False),
    delay=st.one_of(st.none(), st.floats(0, 100)),
    cost=st.one_of(st.none(), st.integers(0, 50)),
    tenant=st.one_of(st.none(), st.sampled_from(["acme", "globex"])),
)
@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_a_keyless_call_returns_each_job_as_stored(
    kind: str,
    args: list[list[int]],
    priority: float,
    delay: float | None,
    cost: int | None,
    tenant: str | None,
) -> None:
    """Without keys the jobs go in as one run (SQLite: no record per job): each job
    handed back equals the job read back from the backlog, field by field."""

    async def main(directory: str) -> None:
        target = ":memory:" if kind == "memory" else str(Path(directory) / "jobs.db")
        sched = make(target)
        async with sched.open(run=()):
            jobs = await sched.tasks["double"].submit_many(
                args, priority=priority, delay=delay, cost=cost, tenant=tenant
            )
            for job in jobs:
                assert _fields(job) == _fields(await job.refresh())
            assert sched.stats().backlog.submitted == len(args)  # type: ignore[union-attr]

    with tempfile.TemporaryDirectory() as directory:
        asyncio.run(main(directory))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    args=st.lists(st.one_of(st.integers(-9, 9), st.text(max_size=3)), max_size=3),
    priority=st.floats(-3, 3, allow_nan=False),
    delay=st.one_of(st.none(), st.floats(0, 100)),
    cost=st.one_of(st.none(), st.integers(0, 50)),
    tenant=st.one_of(st.none(), st.sampled_from(["acme", "globex"])),
    key=st.one_of(st.none(), st.sampled_from(["k1", "k2"])),
)
@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_a_single_submit_returns_its_job_as_stored(
    kind: str,
    args: list[Any],
    priority: float,
    delay: float | None,
    cost: int | None,
    tenant: str | None,
    key: str | None,
) -> None:
    """Concurrent submits, keyed or not, with any options: each job handed back
    equals the job read back, field by field, and holds its own args."""

    async def main(directory: str) -> None:
        target = ":memory:" if kind == "memory" else str(Path(directory) / "jobs.db")
        sched = make(target)
        async with sched.open(run=()):
            task = sched.tasks["double"]
            jobs = await asyncio.gather(
                *(
                    task.submit(*args, i, priority=priority, delay=delay, cost=cost,
                                tenant=tenant, key=None if key is None else f"{key}-{i}")
                    for i in range(3)
                )
            )  # fmt: skip
            for job in jobs:
                assert _fields(job) == _fields(await job.refresh())
            assert sched._store is not None
            records = await sched._store.backlog.list_jobs(limit=10)
        assert sorted(tuple(r.args) for r in records) == sorted((*args, i) for i in range(3))

    with tempfile.TemporaryDirectory() as directory:
        asyncio.run(main(directory))
