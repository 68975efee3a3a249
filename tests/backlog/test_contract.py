"""The Backlog contract, run against every backend (see conftest.BACKENDS)."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from scheduler import BacklogError, JobState
from scheduler.backlog import Backlog, NewJob, Outcome
from tests.backlog.helpers import new_job

OWNER, OTHER = "worker-a", "worker-b"


async def claim(backlog: Backlog, *, limit: int = 10, now: float = 0.0, lane: str = "batch",
                owner: str = OWNER, lease: float = 10.0) -> list[str]:  # fmt: skip
    records = await backlog.claim(lane, limit, owner=owner, lease_seconds=lease, now=now)
    return [r.id for r in records]


async def test_closed_backlog_refuses_calls(make_backlog: Callable[[], Backlog]) -> None:
    backlog = make_backlog()
    with pytest.raises(BacklogError):
        await backlog.submit([new_job()], now=0)
    await backlog.open()
    await backlog.close()
    await backlog.close()  # idempotent
    with pytest.raises(BacklogError):
        await backlog.get("x")


async def test_is_a_backlog(backlog: Backlog) -> None:
    assert isinstance(backlog, Backlog)


async def test_submit_stores_queued_records(backlog: Backlog) -> None:
    [a, b] = await backlog.submit(
        [new_job(1, "x", priority=2, run_at=5, deadline_at=99), new_job(lane="other")], now=3.0
    )
    assert a.id != b.id
    assert (a.task, a.lane, a.args, a.priority, a.run_at) == ("tests.work", "batch", [1, "x"], 2, 5)
    assert (a.state, a.attempts, a.max_attempts) == (JobState.QUEUED, 0, 3)
    assert (a.created_at, a.updated_at, a.deadline_at) == (3.0, 3.0, 99)
    assert (a.lease_owner, a.lease_until, a.result, a.error, a.key) == (None,) * 5
    assert await backlog.get(a.id) == a
    assert await backlog.get("no-such-id") is None
    assert await backlog.submit([], now=0) == []


async def test_submit_is_idempotent_by_key(backlog: Backlog) -> None:
    [first] = await backlog.submit([new_job(1, key="doc-1")], now=0)
    again, other, same_batch = await backlog.submit(
        [new_job(2, key="doc-1"), new_job(3, key="doc-2"), new_job(4, key="doc-2")], now=1
    )
    assert again == first
    assert again.args == [1]
    assert other.id == same_batch.id
    assert same_batch.args == [3]
    assert (await backlog.counts())["batch"] == {"queued": 2}
    await backlog.claim("batch", 10, owner=OWNER, lease_seconds=5, now=2)
    await backlog.complete([Outcome.done(first.id, OWNER, '"ok"')], now=3)
    [done] = await backlog.submit([new_job(key="doc-1")], now=4)  # whatever its state
    assert (done.id, done.state, done.result) == (first.id, JobState.DONE, "ok")


async def test_json_round_trip(backlog: Backlog) -> None:
    args = [{"nested": [1, 2.5, None, True]}, "ünïcødé ✓", -3, 1e300, "", [], {}]
    result = {"text": "résumé", "tokens": [1, 2], "meta": {"ok": False, "none": None}}
    [job] = await backlog.submit([new_job(*args)], now=0)
    assert (await backlog.get(job.id)).args == args  # type: ignore[union-attr]
    [claimed] = await backlog.claim("batch", 1, owner=OWNER, lease_seconds=5, now=0)
    assert claimed.args == args
    await backlog.complete([Outcome.done(job.id, OWNER, json.dumps(result))], now=1)
    assert (await backlog.get(job.id)).result == result  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "bad",
    [
        NewJob("t", "batch", "not json"),
        NewJob("t", "batch", '{"a": 1}'),
        NewJob("t", "batch", "[]", max_attempts=0),
        NewJob("", "batch", "[]"),
        NewJob("t", "batch", "[]", priority=float("nan")),
    ],
)
async def test_malformed_jobs_are_refused_whole(backlog: Backlog, bad: NewJob) -> None:
    with pytest.raises(ValueError):  # noqa: PT011
        await backlog.submit([new_job(1), bad], now=0)
    assert await backlog.counts() == {}


async def test_claim_order_is_priority_then_run_at_then_fifo(backlog: Backlog) -> None:
    specs = [(5, 0), (1, 3), (1, 1), (5, 0), (0, 2), (1, 1)]
    jobs = await backlog.submit(
        [new_job(i, priority=p, run_at=r) for i, (p, r) in enumerate(specs)], now=0
    )
    ids = [j.id for j in jobs]
    got = await claim(backlog, limit=4, now=10) + await claim(backlog, limit=4, now=10)
    assert got == [ids[4], ids[2], ids[5], ids[1], ids[0], ids[3]]


async def test_claim_takes_only_its_lane_and_limit(backlog: Backlog) -> None:
    await backlog.submit([new_job(i) for i in range(5)] + [new_job(lane="other")], now=0)
    assert len(await claim(backlog, limit=3)) == 3
    assert len(await claim(backlog, limit=3)) == 2
    assert await claim(backlog) == []
    assert await claim(backlog, limit=0, lane="other") == []
    assert len(await claim(backlog, lane="other")) == 1


async def test_future_run_at_waits_until_due(backlog: Backlog) -> None:
    [later] = await backlog.submit([new_job(run_at=100.0)], now=0)
    assert await claim(backlog, now=99.9) == []
    assert await claim(backlog, now=100.0) == [later.id]


async def test_claim_leases_the_job(backlog: Backlog) -> None:
    [job] = await backlog.submit([new_job()], now=0)
    [rec] = await backlog.claim("batch", 5, owner=OWNER, lease_seconds=30, now=7)
    assert (rec.id, rec.state, rec.attempts) == (job.id, JobState.RUNNING, 1)
    assert (rec.lease_owner, rec.lease_until, rec.updated_at) == (OWNER, 37, 7)
    assert await backlog.get(job.id) == rec
    assert await claim(backlog, now=36.9, owner=OTHER) == []  # lease holds


async def test_expired_lease_is_reclaimed_and_old_owner_ignored(backlog: Backlog) -> None:
    [job] = await backlog.submit([new_job(max_attempts=3)], now=0)
    await claim(backlog, now=0, lease=10)
    [rec] = await backlog.claim("batch", 5, owner=OTHER, lease_seconds=10, now=10)
    assert (rec.id, rec.attempts, rec.lease_owner, rec.lease_until) == (job.id, 2, OTHER, 20)
    assert await backlog.heartbeat([job.id], owner=OWNER, lease_seconds=10, now=11) == 0
    assert await backlog.complete([Outcome.done(job.id, OWNER)], now=11) == 0
    assert await backlog.release([job.id], owner=OWNER, now=11) == 0
    assert await backlog.get(job.id) == rec


async def test_an_outcome_of_an_earlier_attempt_is_fenced_off(backlog: Backlog) -> None:
    """The same owner reclaimed the job after its lease expired: the late outcome
    of attempt 1 must not end attempt 2."""
    [job] = await backlog.submit([new_job(max_attempts=3)], now=0)
    await claim(backlog, now=0, lease=10)
    [again] = await backlog.claim("batch", 5, owner=OWNER, lease_seconds=10, now=10)
    assert again.attempts == 2
    late = Outcome.dead(job.id, OWNER, error="from attempt 1", attempt=1)
    assert await backlog.complete([late], now=11) == 0
    assert (await backlog.get(job.id)) == again
    current = Outcome.done(job.id, OWNER, '"ok"', attempt=2)
    assert await backlog.complete([current], now=12) == 1
    done = await backlog.get(job.id)
    assert done is not None
    assert (done.state, done.result) == (JobState.DONE, "ok")


async def test_expired_lease_on_last_attempt_goes_dead(backlog: Backlog) -> None:
    [job] = await backlog.submit([new_job(max_attempts=1)], now=0)
    [keep] = await backlog.submit([new_job(max_attempts=2)], now=0)
    await claim(backlog, now=0, lease=5)
    assert await claim(backlog, now=6, owner=OTHER) == [keep.id]
    dead = await backlog.get(job.id)
    assert dead is not None
    assert dead.state is JobState.DEAD
    assert dead.error is not None
    assert "lease expired on attempt 1 of 1" in dead.error
    assert dead.lease_owner is None


async def test_heartbeat_extends_only_held_leases(backlog: Backlog) -> None:
    [a, b] = await backlog.submit([new_job(1), new_job(2)], now=0)
    await claim(backlog, now=0, lease=10)
    assert await backlog.heartbeat([a.id, b.id, "nope"], owner=OWNER, lease_seconds=10, now=8) == 2
    assert await backlog.heartbeat([a.id], owner=OTHER, lease_seconds=99, now=8) == 0
    assert (await backlog.get(a.id)).lease_until == 18  # type: ignore[union-attr]
    assert await claim(backlog, now=15, owner=OTHER) == []
    assert len(await claim(backlog, now=18, owner=OTHER)) == 2


async def test_complete_done_stores_result_and_clears_lease(backlog: Backlog) -> None:
    [job] = await backlog.submit([new_job()], now=0)
    await claim(backlog)
    assert await backlog.complete([Outcome.done(job.id, OWNER, '{"n": 1}')], now=4) == 1
    rec = await backlog.get(job.id)
    assert rec is not None
    assert rec.state is JobState.DONE
    assert (rec.result, rec.error, rec.lease_owner, rec.lease_until, rec.updated_at) == (
        {"n": 1}, None, None, None, 4,
    )  # fmt: skip
    assert await backlog.complete([Outcome.done(job.id, OWNER)], now=5) == 0  # not twice


async def test_retry_requeues_at_run_at_keeping_the_error(backlog: Backlog) -> None:
    [job] = await backlog.submit([new_job()], now=0)
    await claim(backlog)
    retry = Outcome.retry(job.id, OWNER, run_at=60, error="HTTP 503", traceback="tb...")
    assert await backlog.complete([retry], now=1) == 1
    rec = await backlog.get(job.id)
    assert rec is not None
    assert (rec.state, rec.run_at, rec.error, rec.traceback) == (
        JobState.QUEUED,
        60,
        "HTTP 503",
        "tb...",
    )
    assert (rec.attempts, rec.lease_owner) == (1, None)
    assert await claim(backlog, now=59) == []
    [again] = await backlog.claim("batch", 1, owner=OWNER, lease_seconds=5, now=60)
    assert (again.attempts, again.error) == (2, "HTTP 503")
    await backlog.complete([Outcome.done(job.id, OWNER, "1")], now=61)
    assert (await backlog.get(job.id)).error is None  # type: ignore[union-attr]


async def test_dead_jobs_are_kept_listed_and_requeued(backlog: Backlog) -> None:
    jobs = await backlog.submit([new_job(i) for i in range(3)] + [new_job(lane="other")], now=0)
    await claim(backlog)
    await claim(backlog, lane="other")
    await backlog.complete(
        [
            Outcome.dead(j.id, OWNER, error=f"boom {j.args}", traceback="Traceback ...")
            for j in jobs
        ],
        now=2,
    )
    dead = await backlog.list_jobs(JobState.DEAD, "batch")
    assert [d.id for d in dead] == [j.id for j in jobs[:3]]
    assert (dead[0].error, dead[0].traceback, dead[0].attempts) == ("boom [0]", "Traceback ...", 1)
    assert await backlog.requeue(jobs[0].id, now=50) == 1
    assert await backlog.requeue(jobs[0].id, now=50) == 0  # no longer dead
    rec = await backlog.get(jobs[0].id)
    assert rec is not None
    assert (rec.state, rec.attempts, rec.run_at, rec.updated_at) == (JobState.QUEUED, 0, 50, 50)
    assert await backlog.requeue(all_dead=True, lane="batch", now=51) == 2
    assert await backlog.requeue(all_dead=True, now=51) == 1  # the "other" lane
    assert await backlog.list_jobs(JobState.DEAD) == []
    assert len(await claim(backlog, now=51)) == 3
    for bad in ({}, {"job_id": "x", "all_dead": True}):
        with pytest.raises(ValueError):  # noqa: PT011
            await backlog.requeue(**bad, now=0)  # type: ignore[arg-type]


async def test_complete_is_batched_and_applies_each_outcome_once(backlog: Backlog) -> None:
    a, b, c, d = await backlog.submit([new_job(i) for i in range(4)], now=0)
    await claim(backlog, limit=3)
    outcomes = [
        Outcome.done(a.id, OWNER, "1"),
        Outcome.retry(b.id, OWNER, run_at=9, error="e"),
        Outcome.dead(c.id, OWNER, error="x"),
        Outcome.done(a.id, OWNER, "2"),  # a second outcome for a: ignored
        Outcome.done(d.id, OWNER),  # never claimed: ignored
    ]
    assert await backlog.complete(outcomes, now=1) == 3
    states = [(await backlog.get(j.id)).state for j in (a, b, c, d)]  # type: ignore[union-attr]
    assert states == [JobState.DONE, JobState.QUEUED, JobState.DEAD, JobState.QUEUED]
    assert (await backlog.get(a.id)).result == 1  # type: ignore[union-attr]
    assert await backlog.complete([], now=1) == 0


async def test_release_gives_the_attempt_back(backlog: Backlog) -> None:
    [job, other] = await backlog.submit([new_job(1, run_at=3), new_job(2, run_at=4)], now=0)
    await claim(backlog, now=5)
    assert await backlog.release([job.id], owner=OTHER, now=6) == 0
    assert await backlog.release([job.id, other.id, "nope"], owner=OWNER, now=6) == 2
    rec = await backlog.get(job.id)
    assert rec is not None
    assert (rec.state, rec.attempts, rec.lease_owner, rec.run_at) == (JobState.QUEUED, 0, None, 3)
    [again, _] = await backlog.claim("batch", 5, owner=OTHER, lease_seconds=5, now=7)
    assert (again.id, again.attempts) == (job.id, 1)  # order kept


async def test_list_jobs_filters_pages_in_insertion_order(backlog: Backlog) -> None:
    jobs = await backlog.submit(
        [new_job(i, lane="ab"[i % 2], priority=-i) for i in range(7)], now=0
    )
    everything = await backlog.list_jobs()
    assert [j.id for j in everything] == [j.id for j in jobs]
    assert [j.args for j in await backlog.list_jobs(lane="b")] == [[1], [3], [5]]
    page = await backlog.list_jobs(limit=2, offset=3)
    assert [j.args for j in page] == [[3], [4]]
    await backlog.claim("a", 1, owner=OWNER, lease_seconds=5, now=0)
    assert [j.args for j in await backlog.list_jobs(JobState.RUNNING)] == [[6]]
    assert [j.args for j in await backlog.list_jobs(JobState.QUEUED, "a", limit=2)] == [[0], [2]]
    assert await backlog.list_jobs(limit=0) == []


async def test_counts_per_lane_and_state(backlog: Backlog) -> None:
    assert await backlog.counts() == {}
    jobs = await backlog.submit([new_job(i) for i in range(4)] + [new_job(lane="x")], now=0)
    await claim(backlog, limit=3)
    await backlog.complete(
        [Outcome.done(jobs[0].id, OWNER), Outcome.dead(jobs[1].id, OWNER, error="e")], now=1
    )
    assert await backlog.counts() == {
        "batch": {"queued": 1, "running": 1, "done": 1, "dead": 1},
        "x": {"queued": 1},
    }


async def test_purge_deletes_old_done_jobs_only(backlog: Backlog) -> None:
    jobs = await backlog.submit([new_job(i, key=f"k{i}") for i in range(4)], now=0)
    await claim(backlog, limit=3)
    await backlog.complete([Outcome.done(jobs[0].id, OWNER)], now=10)
    await backlog.complete([Outcome.done(jobs[1].id, OWNER)], now=20)
    await backlog.complete([Outcome.dead(jobs[2].id, OWNER, error="e")], now=5)
    assert await backlog.purge(finished_before=20) == 1
    assert await backlog.get(jobs[0].id) is None
    assert all([await backlog.get(j.id) for j in jobs[1:]])
    [fresh] = await backlog.submit([new_job(key="k0")], now=30)  # its key is free again
    assert fresh.id != jobs[0].id
    assert await backlog.purge(finished_before=1000) == 1


async def test_queued_count_counts_waiting_jobs(backlog: Backlog) -> None:
    jobs = await backlog.submit([new_job(i) for i in range(5)] + [new_job(run_at=99)], now=0)
    await backlog.submit([new_job(lane="other")], now=0)
    assert await backlog.queued_count("batch") == 6  # scheduled ones included
    await claim(backlog, limit=2)
    assert await backlog.queued_count("batch") == 4  # running ones not
    assert await backlog.queued_count("batch", limit=3) == 3
    await backlog.complete([Outcome.retry(jobs[0].id, OWNER, run_at=50, error="e")], now=1)
    assert await backlog.queued_count("batch") == 5
    assert await backlog.queued_count("nope") == 0


def test_outcome_validates_itself() -> None:
    with pytest.raises(ValueError, match="run_at"):
        Outcome("j", "o", "retry", error="e")
    with pytest.raises(ValueError, match="kind"):
        Outcome("j", "o", "maybe")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="JSON"):
        Outcome.done("j", "o", "{nope")


# -- corrupt rows (backends with raw storage; skipped for memory) -------------------------


async def test_claim_kills_a_corrupt_row_and_goes_on(
    backlog: Backlog, corrupt_row: Callable[[str, str, object], None]
) -> None:
    a, bad, c, d = await backlog.submit([new_job(i) for i in range(4)], now=0)
    corrupt_row(bad.id, "args", "{not json")
    got = await backlog.claim("batch", 3, owner=OWNER, lease_seconds=5, now=1)
    assert [r.id for r in got] == [a.id, c.id, d.id]  # topped up past the bad one
    rec = await backlog.get(bad.id)
    assert rec is not None
    assert rec.state is JobState.DEAD
    assert rec.error is not None
    assert rec.error.startswith("corrupt row: args")
    assert await claim(backlog, now=2) == []


async def test_corrupt_values_read_back_with_an_error(
    backlog: Backlog, corrupt_row: Callable[[str, str, object], None]
) -> None:
    a, b, c = await backlog.submit([new_job(1), new_job(2), new_job(3)], now=0)
    corrupt_row(a.id, "result", "nope{")
    corrupt_row(b.id, "state", "exploded")
    corrupt_row(c.id, "priority", "high")
    ra, rb, rc = [await backlog.get(j.id) for j in (a, b, c)]
    assert ra is not None
    assert rb is not None
    assert rc is not None
    assert (ra.state, ra.result, ra.args) == (JobState.QUEUED, None, [1])
    assert ra.error is not None
    assert ra.error.startswith("corrupt row: result")
    assert rb.state is JobState.DEAD
    assert "corrupt row: state" in (rb.error or "")
    assert "corrupt row: priority" in (rc.error or "")
    assert [r.error for r in await backlog.list_jobs()] == [ra.error, rb.error, rc.error]
    assert (await backlog.counts())["batch"] == {"queued": 2, "exploded": 1}
    assert await claim(backlog, now=1) == []  # a and c go DEAD; b's state is not claimable
    for job in (a, c):
        assert (await backlog.get(job.id)).state is JobState.DEAD  # type: ignore[union-attr]
    assert await backlog.requeue(b.id, now=2) == 1  # an unreadable state can be revived
    assert await claim(backlog, now=2) == [b.id]
