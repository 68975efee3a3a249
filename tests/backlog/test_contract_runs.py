"""The Backlog contract for ``submit_run`` (``SubmitsRuns``): many jobs alike but for
their args, stored at once (a ``submit_many`` call without keys).

Run against every backend (see conftest.BACKENDS). A run stores exactly what
``submit`` stores for the same jobs, in order, all or none under the lane's
bound; SQLite writes it as one ``INSERT_RUN`` with no record per job, in its
place among the other submits of a group commit.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scheduler import JobState, Overloaded
from scheduler.backlog import Backlog, NewJob, SQLiteBacklog
from scheduler.backlog.base import JobRecord, SubmitsRuns, with_args
from tests.backlog.helpers import new_job, raw


def template(**changes: Any) -> NewJob:
    return replace(new_job(), **changes)


def texts_of(args: list[list[Any]]) -> list[str]:
    return [json.dumps(a, separators=(",", ":")) for a in args]


def same_but_id(a: JobRecord, b: JobRecord) -> bool:
    return replace(a, id="") == replace(b, id="")


async def test_a_run_stores_what_submit_stores(backlog: Backlog) -> None:
    assert isinstance(backlog, SubmitsRuns)
    shape = template(
        priority=2.5, run_at=10.0, max_attempts=4, deadline_at=99.0, cost=3.0, rank=1.5,
        tenant="acme", trace='{"traceparent":"00-x"}',
    )  # fmt: skip
    args: list[list[Any]] = [[i, "x" * i, {"n": None}] for i in range(6)]
    ids = await backlog.submit_run(shape, texts_of(args), args, now=5.0)
    singles = await backlog.submit(
        [with_args(shape, t, a) for t, a in zip(texts_of(args), args, strict=True)], now=5.0
    )
    assert len(set(ids)) == 6
    stored = [await backlog.get(i) for i in ids]
    for record, single, a in zip(stored, singles, args, strict=True):
        assert record is not None
        assert same_but_id(record, single)
        assert (record.args, record.state, record.attempts) == (a, JobState.QUEUED, 0)
    listed = [r.id for r in await backlog.list_jobs()]
    assert listed[:6] == ids  # in order, before the later submit
    assert await backlog.queued_count("batch") == 12
    assert backlog.stats().submitted == 12


async def test_a_run_is_all_or_nothing_under_the_bound(backlog: Backlog) -> None:
    assert isinstance(backlog, SubmitsRuns)
    await backlog.submit([replace(new_job(0), max_queued=5)], now=0)
    args: list[list[Any]] = [[i] for i in range(5)]
    with pytest.raises(Overloaded):
        await backlog.submit_run(template(max_queued=5), texts_of(args), args, now=1)
    assert len(await backlog.list_jobs()) == 1
    ids = await backlog.submit_run(template(max_queued=5), texts_of(args[:4]), args[:4], now=2)
    assert len(ids) == 4
    assert await backlog.queued_count("batch") == 5


async def test_a_bad_run_is_refused_before_anything_is_stored(backlog: Backlog) -> None:
    assert isinstance(backlog, SubmitsRuns)
    with pytest.raises(ValueError, match="no key"):
        await backlog.submit_run(template(key="k"), ["[1]"], [[1]], now=0)
    with pytest.raises(ValueError, match="2 args_json for 1 args"):
        await backlog.submit_run(template(), ["[1]", "[2]"], [[1]], now=0)
    with pytest.raises(ValueError, match="args_json must be str"):
        await backlog.submit_run(template(), [b"[1]"], [[1]], now=0)  # type: ignore[list-item]
    with pytest.raises(ValueError, match="max_attempts"):
        await backlog.submit_run(template(max_attempts=0), ["[1]"], [[1]], now=0)
    assert await backlog.submit_run(template(), [], [], now=0) == []
    assert await backlog.list_jobs() == []


async def test_a_run_keeps_its_place_in_a_group_commit(db_path: Path) -> None:
    """Submits before and after a run in one group commit keep the order of the calls."""
    async with SQLiteBacklog(db_path) as backlog:
        args: list[list[Any]] = [[i] for i in range(10)]
        first, ids, last = await asyncio.gather(
            backlog.submit([new_job("first")], now=0),
            backlog.submit_run(template(), texts_of(args), args, now=0),
            backlog.submit([new_job("last")], now=0),
        )
        assert backlog.stats().submit_flushes == 1
        order = [r.id for r in await backlog.list_jobs()]
        assert order == [first[0].id, *ids, last[0].id]
        assert await backlog.queued_count("batch") == 12


async def test_a_run_that_is_not_ascii_is_stored_as_bound(db_path: Path) -> None:
    """Text that is not ASCII does not go through JSON on its way in: it is bound
    row by row, byte for byte, as a single submit's would be."""
    async with SQLiteBacklog(db_path) as backlog:
        texts = ['["é"]', '["\\u00e9"]', "[1]", '["日本"]']
        args: list[list[Any]] = [json.loads(t) for t in texts]
        ids = await backlog.submit_run(template(), texts, args, now=0)
        assert [(await backlog.get(i)).args for i in ids] == args  # type: ignore[union-attr]
    with raw(db_path) as conn:
        assert [r[0] for r in conn.execute("SELECT args FROM jobs ORDER BY seq")] == texts


ARGS = st.lists(
    st.lists(st.one_of(st.integers(-3, 3), st.text(max_size=4), st.none()), max_size=3),
    max_size=20,
)


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    runs=st.lists(st.tuples(ARGS, st.booleans()), min_size=1, max_size=4),
    priority=st.floats(-5, 5, allow_nan=False),
)
def test_interleaved_runs_and_submits_store_every_job_once_in_order(
    tmp_path_factory: pytest.TempPathFactory,
    runs: list[tuple[list[list[Any]], bool]],
    priority: float,
) -> None:
    """Concurrent runs and one-by-one submits of the same args, on a real file: every
    job stored once, each call's jobs in its order, rows as ``submit`` stores them."""
    path = tmp_path_factory.mktemp("runs") / "backlog.db"

    async def scenario() -> None:
        async with SQLiteBacklog(path) as backlog:
            shape = template(priority=priority)

            async def call(args: list[list[Any]], as_run: bool) -> list[str]:
                if as_run:
                    return await backlog.submit_run(shape, texts_of(args), args, now=1.0)
                jobs = [with_args(shape, t, a) for t, a in zip(texts_of(args), args, strict=True)]
                return [r.id for r in await backlog.submit(jobs, now=1.0)] if jobs else []

            answers = await asyncio.gather(*(call(args, as_run) for args, as_run in runs))
            stored = {r.id: r for r in await backlog.list_jobs(limit=1_000)}
            order = list(stored)
            assert len(stored) == sum(len(args) for args, _ in runs)
            for (args, _), ids in zip(runs, answers, strict=True):
                assert [stored[i].args for i in ids] == args
                assert [order.index(i) for i in ids] == sorted(order.index(i) for i in ids)
                for i in ids:
                    assert stored[i].priority == priority
                    assert stored[i].state is JobState.QUEUED
            assert await backlog.queued_count("batch") == len(stored)

    asyncio.run(scenario())
