"""Aging on durable lanes, in the Backlog contract (every backend): the claim order is
by ``rank`` (``base.job_rank``), fixed at submit and kept by retries and releases."""

from __future__ import annotations

from dataclasses import replace

from scheduler.backlog import Backlog, NewJob, Outcome
from scheduler.backlog.base import job_rank
from tests.backlog import pg
from tests.backlog.helpers import new_job

OWNER = "worker-a"


def aged(job: NewJob, aging: float | None) -> NewJob:
    """``job`` with the rank a lane with ``aging`` gives it (as the scheduler does)."""
    return replace(job, rank=job_rank(job.priority, job.run_at, aging))


async def order(backlog: Backlog, now: float) -> list[object]:
    got = await backlog.claim("batch", 10, owner=OWNER, lease_seconds=100, now=now)
    return [r.args[0] for r in got]


async def test_an_old_low_priority_job_overtakes_newer_urgent_ones(backlog: Backlog) -> None:
    # aging 10 s per level: the priority-5 job submitted at 0 is worth priority 0 at 50
    await backlog.submit([aged(new_job("old", priority=5, run_at=0), 10)], now=0)
    await backlog.submit(
        [aged(new_job(f"new{i}", priority=0, run_at=60), 10) for i in range(3)], now=60
    )
    assert await order(backlog, now=60) == ["old", "new0", "new1", "new2"]


async def test_before_it_has_waited_enough_the_urgent_ones_go_first(backlog: Backlog) -> None:
    await backlog.submit([aged(new_job("old", priority=5, run_at=0), 10)], now=0)
    await backlog.submit(
        [aged(new_job(f"new{i}", priority=0, run_at=40), 10) for i in range(3)], now=40
    )
    assert await order(backlog, now=40) == ["new0", "new1", "new2", "old"]


async def test_without_aging_the_order_is_priority_then_run_at(backlog: Backlog) -> None:
    await backlog.submit([aged(new_job("old", priority=5, run_at=0), None)], now=0)
    await backlog.submit([new_job("plain", priority=1, run_at=0)], now=0)  # rank None
    await backlog.submit(
        [aged(new_job(f"new{i}", priority=0, run_at=600), None) for i in range(2)], now=600
    )
    assert await order(backlog, now=600) == ["new0", "new1", "plain", "old"]


async def test_a_retried_or_released_job_keeps_its_age(backlog: Backlog) -> None:
    [old] = await backlog.submit(
        [aged(new_job("old", priority=5, run_at=0, max_attempts=3), 10)], now=0
    )
    [claimed] = await backlog.claim("batch", 1, owner=OWNER, lease_seconds=100, now=0)
    assert claimed.rank == 5.0
    await backlog.complete([Outcome.retry(old.id, OWNER, run_at=100, error="busy")], now=1)
    await backlog.submit(
        [aged(new_job(f"new{i}", priority=0, run_at=100), 10) for i in range(2)], now=100
    )
    # its retry is due at 100, as the new ones; its rank is still the one it got at 0
    assert await order(backlog, now=100) == ["old", "new0", "new1"]
    stored = await backlog.get(old.id)
    assert stored is not None
    assert stored.rank == 5.0


async def test_the_postgres_claim_walks_the_queued_index_in_rank_order() -> None:
    """The claim's due-jobs query on a lane of 20,000 queued jobs (after ANALYZE): an
    index scan of ``floodgate_jobs_queued`` in claim order, no sort, no table scan."""
    from scheduler.backlog.postgres import PostgresBacklog

    dsn = pg.dsn_or_skip()
    schema = pg.new_schema()
    try:
        async with PostgresBacklog(dsn, schema=schema, listen=False) as backlog:
            for chunk in range(4):
                jobs = [
                    replace(new_job(i, lane="batch" if i % 4 else "other", priority=i % 10,
                                    run_at=chunk * 5000 + i),
                            rank=job_rank(i % 10, chunk * 5000 + i, 60.0))
                    for i in range(5000)
                ]  # fmt: skip
                await backlog.submit(jobs, now=0)
        raw = pg.with_settings(dsn, search_path=schema)
        await pg.execute(raw, "ANALYZE floodgate_jobs")
        rows = await pg.execute(
            raw,
            "EXPLAIN (COSTS OFF) SELECT seq, rank, run_at FROM floodgate_jobs"
            " WHERE lane = $1 AND state = 'queued' AND tenant IS NULL AND run_at <= $2"
            " ORDER BY rank, run_at, seq LIMIT 256 FOR UPDATE SKIP LOCKED",
            "batch",
            15000.0,
        )
        plan = "\n".join(str(r[0]) for r in rows)
        assert "Index Scan using floodgate_jobs_queued" in plan, plan
        assert "Sort" not in plan, plan
        assert "Seq Scan" not in plan, plan
    finally:
        await pg.drop_schema(dsn, schema)
