"""Property tests: claim order against a sorted model; every backend against the memory one."""

from __future__ import annotations

import asyncio
import dataclasses
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scheduler import JobState, Overloaded
from scheduler.backlog import Backlog, JobRecord, MemoryBacklog, NewJob, Outcome, SQLiteBacklog
from scheduler.backlog.base import admit
from tests.backlog import pg
from tests.backlog.helpers import new_job

PROPERTY = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def run_with(kind: str, body: Callable[[Backlog], Awaitable[Any]]) -> Any:
    """Run ``body`` on a fresh, open backlog of ``kind`` in its own event loop.

    ``kind`` is "memory", "sqlite" or a PostgreSQL schema name (emptied first).
    """

    async def main(directory: str) -> Any:
        backlog: Backlog
        if kind == "memory":
            backlog = MemoryBacklog()
        elif kind == "sqlite":
            backlog = SQLiteBacklog(Path(directory) / "b.db")
        else:
            from scheduler.backlog.postgres import PostgresBacklog

            backlog = PostgresBacklog(pg.dsn_or_skip(), schema=kind, listen=False)
        await backlog.open()
        if kind not in ("memory", "sqlite"):
            raw = pg.with_settings(pg.dsn_or_skip(), search_path=kind)
            await pg.execute(
                raw, "TRUNCATE floodgate_jobs, floodgate_lane_tenants RESTART IDENTITY"
            )
            await pg.execute(raw, "UPDATE floodgate_lane_queued SET vclock = 0")
        try:
            return await body(backlog)
        finally:
            await backlog.close()

    with tempfile.TemporaryDirectory() as directory:
        return asyncio.run(main(directory))


SPECS = st.lists(
    st.tuples(st.sampled_from([-1.0, 0.0, 2.5, 3.0]), st.sampled_from([0.0, 1.0, 5.0, 9.0])),
    max_size=30,
)
NOWS = st.sampled_from([0.0, 1.0, 5.0, 9.0])
BATCHES = st.lists(st.integers(1, 7), min_size=1, max_size=8)


@PROPERTY
@given(specs=SPECS, now=NOWS, batches=BATCHES)
@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_claim_order_matches_a_sorted_model(
    kind: str, specs: list[tuple[float, float]], now: float, batches: list[int]
) -> None:
    check_claim_order(kind, specs, now, batches)


@settings(PROPERTY, max_examples=25)
@given(specs=SPECS, now=NOWS, batches=BATCHES)
def test_postgres_claim_order_matches_a_sorted_model(
    pg_property_schema: str, specs: list[tuple[float, float]], now: float, batches: list[int]
) -> None:
    check_claim_order(pg_property_schema, specs, now, batches)


def check_claim_order(
    kind: str, specs: list[tuple[float, float]], now: float, batches: list[int]
) -> None:
    async def body(backlog: Backlog) -> list[int]:
        for i, (priority, run_at) in enumerate(specs):  # one submit each: insertion order = i
            await backlog.submit([new_job(i, priority=priority, run_at=run_at)], now=0)
        got: list[int] = []
        for limit in batches:
            claimed = await backlog.claim("batch", limit, owner="w", lease_seconds=60, now=now)
            assert len(claimed) <= limit
            got += [r.args[0] for r in claimed]
        return got

    due = sorted((p, r, i) for i, (p, r) in enumerate(specs) if r <= now)
    assert run_with(kind, body) == [i for _, _, i in due][: sum(batches)]


OWNERS = st.sampled_from(["a", "b"])
SUBMIT = st.tuples(
    st.just("submit"),
    st.integers(1, 4),
    st.sampled_from([0.0, 1.0]),
    st.sampled_from([0.0, 3.0]),
    st.sampled_from([None, "k1", "k2"]),
    st.sampled_from([None, None, 3, 6]),  # max_queued
)
CLAIM = st.tuples(st.just("claim"), st.integers(0, 4), OWNERS, st.sampled_from([2.0, 5.0]))
COMPLETE = st.tuples(
    st.just("complete"), OWNERS, st.sampled_from(["done", "retry", "dead", "cancelled"])
)
ADVANCE = st.tuples(st.just("advance"), st.sampled_from([1.0, 3.0]))
# Repeated branches weight the draw toward the operations that move jobs along.
OPS = st.one_of(
    SUBMIT, CLAIM, CLAIM, CLAIM, COMPLETE, COMPLETE, ADVANCE, ADVANCE,
    st.tuples(st.just("heartbeat"), OWNERS),
    st.tuples(st.just("release"), OWNERS),
    st.tuples(st.just("requeue")),
    st.tuples(st.just("purge")),
    st.tuples(st.just("cancel"), st.integers(0, 20)),
)  # fmt: skip


async def replay(backlog: Backlog, ops: list[tuple[Any, ...]]) -> list[Any]:
    """Apply ``ops``; return every answer with ids replaced by the job's label (its first arg).

    Checks on the way that a job is never claimed once a cancel of it returned
    (queued: it is CANCELLED; running: its lease holder alone may still end it).
    """
    now, label = 0.0, 0
    trace: list[Any] = []
    stopped: set[str] = set()  # jobs a cancel reached: none may be claimed again

    def norm(r: JobRecord) -> tuple[Any, ...]:
        return tuple(v for k, v in dataclasses.asdict(r).items() if k != "id")

    async def held(owner: str) -> list[str]:
        running = await backlog.list_jobs(JobState.RUNNING, limit=1000)
        return [r.id for r in running if r.lease_owner == owner][:2]

    for op in ops:
        match op:
            case ("submit", n, priority, delay, key, bound):
                jobs = [replace(new_job(label + i, priority=priority, run_at=now + delay,
                                        key=key, max_attempts=2), max_queued=bound)
                        for i in range(n)]  # fmt: skip
                label += n
                try:
                    trace.append([norm(r) for r in await backlog.submit(jobs, now=now)])
                except Overloaded as exc:
                    trace.append(("full", exc.lane, exc.queued))
            case ("claim", limit, owner, lease):
                got = await backlog.claim("batch", limit, owner=owner, lease_seconds=lease, now=now)
                assert not {r.id for r in got} & stopped, "a cancelled job was claimed"
                trace.append([norm(r) for r in got])
            case ("complete", owner, kind):
                outcomes = [
                    Outcome(i, owner, kind, result_json='"r"' if kind == "done" else None,
                            error=None if kind == "done" else "e", run_at=now + 1)
                    for i in await held(owner)
                ]  # fmt: skip
                trace.append(await backlog.complete(outcomes, now=now))
            case ("heartbeat", owner):
                ids = await held(owner)
                trace.append(await backlog.heartbeat(ids, owner=owner, lease_seconds=4, now=now))
            case ("release", owner):
                trace.append(await backlog.release(await held(owner), owner=owner, now=now))
            case ("advance", dt):
                now += dt
            case ("requeue",):
                trace.append(await backlog.requeue(all_dead=True, now=now))
                queued = await backlog.list_jobs(JobState.QUEUED, limit=1000)
                stopped -= {r.id for r in queued}  # a DEAD job requeued is a fresh start
            case ("cancel", n):
                jobs = await backlog.list_jobs(limit=1000)
                if jobs:
                    job = jobs[n % len(jobs)]
                    was = await backlog.cancel(job.id, now=now)
                    if was in (JobState.QUEUED, JobState.RUNNING):
                        stopped.add(job.id)
                    after = await backlog.get(job.id)
                    assert after is not None
                    if was is JobState.QUEUED:
                        assert after.state is JobState.CANCELLED
                    elif was is not JobState.RUNNING:
                        assert after.state is was  # finished: left as it was
                    trace.append((was, after.state, after.cancel_requested_at))
            case ("purge",):
                trace.append(await backlog.purge(finished_before=now))
        trace.append(await backlog.queued_count("batch"))
    trace.append([norm(r) for r in await backlog.list_jobs(limit=1000)])
    trace.append(await backlog.counts())
    return trace


@PROPERTY
@given(ops=st.lists(OPS, min_size=5, max_size=30))
def test_sqlite_behaves_exactly_like_memory(ops: list[tuple[Any, ...]]) -> None:
    async def body(backlog: Backlog) -> list[Any]:
        return await replay(backlog, [("submit", 4, 0.0, 0.0, None, None), *ops])

    assert run_with("sqlite", body) == run_with("memory", body)


@pytest.fixture(scope="module")
def pg_property_schema() -> Iterator[str]:
    """One schema for every example of a PostgreSQL property test (emptied per example)."""
    dsn = pg.dsn_or_skip()
    schema = pg.new_schema()
    try:
        yield schema
    finally:
        asyncio.run(pg.drop_schema(dsn, schema))


@settings(PROPERTY, max_examples=25)
@given(ops=st.lists(OPS, min_size=5, max_size=30))
def test_postgres_behaves_exactly_like_memory(
    pg_property_schema: str, ops: list[tuple[Any, ...]]
) -> None:
    async def body(backlog: Backlog) -> list[Any]:
        return await replay(backlog, [("submit", 4, 0.0, 0.0, None, None), *ops])

    assert run_with(pg_property_schema, body) == run_with("memory", body)


# -- max_queued: the admission of a group-committed batch ---------------------------

JOB_SPEC = st.tuples(
    st.sampled_from(["a", "b"]),  # lane
    st.sampled_from([None, None, "k1", "k2", "k3"]),  # key
    st.sampled_from([None, 0, 1, 2, 3, 5]),  # max_queued
)
CALLS = st.lists(st.lists(JOB_SPEC, min_size=1, max_size=3), min_size=1, max_size=12)


def as_calls(specs: list[list[tuple[str, str | None, int | None]]]) -> list[list[NewJob]]:
    label = iter(range(1000))
    return [
        [replace(new_job(next(label), lane=lane, key=key), max_queued=bound)
         for lane, key, bound in call]
        for call in specs
    ]  # fmt: skip


@PROPERTY
@given(
    specs=CALLS,
    queued=st.fixed_dictionaries({"a": st.integers(0, 4), "b": st.integers(0, 4)}),
    stored=st.sets(st.sampled_from(["k1", "k2", "k3"])),
)
def test_admit_never_overfills_a_lane_and_never_refuses_a_call_that_fits(
    specs: list[list[tuple[str, str | None, int | None]]], queued: dict[str, int], stored: set[str]
) -> None:
    """Replaying the verdicts one call at a time: every job of an admitted call went into
    a lane holding fewer than its bound; every refused call had a job that would not."""
    calls = as_calls(specs)
    verdicts = admit(calls, queued, stored)
    counts, keys = dict(queued), set(stored)
    for jobs, refused in zip(calls, verdicts, strict=True):
        trial, trial_keys, fits = dict(counts), set(keys), True
        for job in jobs:
            if job.key is not None and job.key in trial_keys:
                continue  # stored already (or by this call): no room needed
            if job.max_queued is not None and trial[job.lane] >= job.max_queued:
                fits = False
            trial[job.lane] += 1
            if job.key is not None:
                trial_keys.add(job.key)
        assert (refused is None) == fits
        if refused is None:
            counts, keys = trial, trial_keys
        else:
            assert isinstance(refused, Overloaded)
            assert refused.queued == counts[refused.lane]


def check_concurrent_bounded_submits(
    kind: str, specs: list[list[tuple[str, str | None, int | None]]]
) -> None:
    """Calls submitted at once (one group commit, or several in order) get exactly the
    verdicts of ``admit`` from an empty backlog, and the lanes hold what it admitted."""
    calls = as_calls(specs)

    async def body(backlog: Backlog) -> tuple[list[bool], dict[str, int]]:
        answers = await asyncio.gather(
            *(backlog.submit(jobs, now=0) for jobs in calls), return_exceptions=True
        )
        for answer in answers:
            assert not isinstance(answer, BaseException) or isinstance(answer, Overloaded)
        counts = {lane: await backlog.queued_count(lane) for lane in ("a", "b")}
        return [not isinstance(a, BaseException) for a in answers], counts

    verdicts = admit(calls, {}, ())
    admitted, counts = run_with(kind, body)
    assert admitted == [v is None for v in verdicts]
    expected = dict.fromkeys(("a", "b"), 0)
    keys: set[str] = set()
    for jobs, verdict in zip(calls, verdicts, strict=True):
        if verdict is None:
            for job in jobs:
                if job.key is not None and job.key in keys:
                    continue
                expected[job.lane] += 1
                if job.key is not None:
                    keys.add(job.key)
    assert counts == expected


@PROPERTY
@given(specs=CALLS)
@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_concurrent_bounded_submits_get_the_verdicts_of_admit(
    kind: str, specs: list[list[tuple[str, str | None, int | None]]]
) -> None:
    check_concurrent_bounded_submits(kind, specs)


@settings(PROPERTY, max_examples=25)
@given(specs=CALLS)
def test_postgres_concurrent_bounded_submits_get_the_verdicts_of_admit(
    pg_property_schema: str, specs: list[list[tuple[str, str | None, int | None]]]
) -> None:
    check_concurrent_bounded_submits(pg_property_schema, specs)
