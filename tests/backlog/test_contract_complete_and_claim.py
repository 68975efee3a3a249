"""The optional ``complete_and_claim`` (``CompletesAndClaims``): exactly ``complete``
then ``claim``, in one transaction.

Run against every backend that has it (memory, SQLite); the others are skipped.
Each scenario is played twice on two fresh stores of the same backend, once with
the two calls and once with the combined one, and both must end the same.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from scheduler import BacklogError, JobState
from scheduler.backlog import Backlog, JobRecord, MemoryBacklog, Outcome, SQLiteBacklog
from scheduler.backlog.base import CompletesAndClaims
from tests.backlog.helpers import new_job

OWNER, OTHER = "worker-a", "worker-b"

#: makes any claim by the owner "fail" abort (inside the claim's UPDATE)
FAIL_CLAIMS_BY_FAIL = """
    CREATE TRIGGER no_claims BEFORE UPDATE OF lease_owner ON jobs
    WHEN NEW.lease_owner = 'fail' BEGIN SELECT RAISE(ABORT, 'no claims'); END"""

Claimed = tuple[int, list[JobRecord]]
Step = Callable[[Backlog, list[Outcome], int, float, int | None], Awaitable[Claimed]]


def combined(backlog: Backlog) -> CompletesAndClaims:
    if not isinstance(backlog, CompletesAndClaims):
        pytest.skip(f"{type(backlog).__name__} has no complete_and_claim (callers fall back)")
    return backlog


async def separate(
    backlog: Backlog, outcomes: list[Outcome], limit: int, now: float, ceiling: int | None
) -> Claimed:
    applied = await backlog.complete(outcomes, now=now)
    records = await backlog.claim(
        "batch", limit, owner=OWNER, lease_seconds=10, now=now, max_running=ceiling
    )
    return applied, records


async def together(
    backlog: Backlog, outcomes: list[Outcome], limit: int, now: float, ceiling: int | None
) -> Claimed:
    return await combined(backlog).complete_and_claim(
        outcomes, "batch", limit, owner=OWNER, lease_seconds=10, now=now, max_running=ceiling
    )


async def scenario(backlog: Backlog, step: Step) -> list[object]:
    """Fencing by owner and attempt, retries due at once, a ceiling held by another owner."""
    seen: list[object] = []
    jobs = await backlog.submit([new_job(i, max_attempts=3) for i in range(12)], now=0)
    ids = {j.id: n for n, j in enumerate(jobs)}  # job ids differ per store: compare indexes

    def view(claimed: Claimed) -> tuple[int, list[tuple[int, int, str | None, float | None]]]:
        applied, records = claimed
        return applied, [(ids[r.id], r.attempts, r.lease_owner, r.lease_until) for r in records]

    first = await backlog.claim("batch", 4, owner=OWNER, lease_seconds=10, now=0)
    await backlog.claim("batch", 2, owner=OTHER, lease_seconds=10, now=0)  # jobs 4, 5
    a, b, c, d = (r.id for r in first)
    outcomes = [
        Outcome.done(a, OWNER, '"ok"', attempt=1),
        Outcome.retry(b, OWNER, run_at=0, error="again", attempt=1),  # due at once
        Outcome.dead(c, OWNER, error="boom", attempt=1),
        Outcome.done(c, OWNER, attempt=1),  # a second outcome for c: ignored
        Outcome.done(d, OWNER, attempt=2),  # an attempt it is not on: fenced off
        Outcome.done(jobs[4].id, OWNER, attempt=1),  # OTHER's lease: ignored
        Outcome.done(jobs[11].id, OWNER),  # never claimed: ignored
    ]
    # OTHER's 2 live leases count against the ceiling: 5 - 2 = 3 jobs, b among them
    seen.append(view(await step(backlog, outcomes, 10, 1.0, 5)))
    # ceiling already spent by OTHER: the outcomes still apply, nothing is claimed
    late = [Outcome.done(d, OWNER, attempt=1)]
    seen.append(view(await step(backlog, late, 10, 2.0, 2)))
    # OTHER's leases expired at 10: no ceiling left to fill, the claim takes them over
    seen.append(view(await step(backlog, [], 20, 12.0, None)))
    # a zero limit claims nothing but writes the outcomes (b is on its third attempt)
    seen.append(view(await step(backlog, [Outcome.done(b, OWNER, attempt=3)], 0, 13.0, None)))
    for job in jobs:
        rec = await backlog.get(job.id)
        assert rec is not None
        seen.append((ids[rec.id], rec.state, rec.attempts, rec.result, rec.error,
                     rec.lease_owner, rec.lease_until, rec.updated_at))  # fmt: skip
    return seen


async def test_complete_and_claim_is_complete_then_claim(
    make_backlog: Callable[[], Backlog], tmp_path: Path, backend: str
) -> None:
    combined(make_backlog())
    if backend == "memory":
        reference: Backlog = MemoryBacklog()
    else:
        reference = SQLiteBacklog(tmp_path / "reference.db")
    backlog = make_backlog()
    async with reference:
        await backlog.open()
        expected = await scenario(reference, separate)
        got = await scenario(backlog, together)
    assert got == expected
    assert expected[0] == (3, [(1, 2, OWNER, 11.0), (6, 1, OWNER, 11.0), (7, 1, OWNER, 11.0)])
    assert expected[1] == (1, [])
    assert expected[3] == (1, [])
    done = expected[4]
    assert isinstance(done, tuple)
    assert (done[1], done[3]) == (JobState.DONE, "ok")


async def test_complete_and_claim_on_a_closed_backlog_fails(
    make_backlog: Callable[[], Backlog],
) -> None:
    backlog = combined(make_backlog())
    with pytest.raises(BacklogError):
        await backlog.complete_and_claim([], "batch", 1, owner=OWNER, lease_seconds=1, now=0)


async def test_sqlite_complete_and_claim_is_one_transaction(db_path: Path) -> None:
    async with SQLiteBacklog(db_path) as backlog:
        assert isinstance(backlog, CompletesAndClaims)
        jobs = await backlog.submit([new_job(i) for i in range(6)], now=0)
        running = await backlog.claim("batch", 3, owner=OWNER, lease_seconds=10, now=0)
        before = backlog.stats()
        outcomes = [Outcome.done(r.id, OWNER, attempt=r.attempts) for r in running]
        outcomes.append(Outcome.done(jobs[5].id, OWNER))  # not claimed: ignored
        applied, records = await backlog.complete_and_claim(
            outcomes, "batch", 10, owner=OWNER, lease_seconds=10, now=1, max_running=2
        )
        after = backlog.stats()
        assert applied == 3
        assert [r.id for r in records] == [j.id for j in jobs[3:5]]
        assert after.commits == before.commits + 1
        assert after.applied == before.applied + 3
        assert after.ignored == before.ignored + 1
        assert after.claimed == before.claimed + 2


async def test_sqlite_complete_and_claim_rolls_back_whole(db_path: Path) -> None:
    """A claim that fails leaves the outcomes unwritten too."""
    async with SQLiteBacklog(db_path) as backlog:
        [job, _] = await backlog.submit([new_job(1), new_job(2)], now=0)
        [rec] = await backlog.claim("batch", 1, owner=OWNER, lease_seconds=10, now=0)
        with contextlib.closing(sqlite3.connect(db_path)) as conn, conn:
            conn.execute(FAIL_CLAIMS_BY_FAIL)
        commits = backlog.stats().commits
        with pytest.raises(BacklogError):
            await backlog.complete_and_claim(
                [Outcome.done(rec.id, OWNER, attempt=1)], "batch", 1,
                owner="fail", lease_seconds=10, now=1,
            )  # fmt: skip
        assert backlog.stats().commits == commits
        kept = await backlog.get(job.id)
        assert kept is not None
        assert (kept.state, kept.lease_owner) == (JobState.RUNNING, OWNER)
