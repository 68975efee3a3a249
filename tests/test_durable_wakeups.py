"""Wake-ups of an idle durable worker: a submit in the same process starts the job at
once (or, due later, when it falls due, as a retry does when its backoff ends), and
on SQLite a submit from another connection (another process) is noticed within
milliseconds (the idle worker watches the ``-wal`` file), not at the next poll.

Both workers poll only every 30 s, so a job that starts within a second was woken.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from scheduler import BacklogOptions, Lane, RetryableError, RetryPolicy, Scheduler
from scheduler.durable import _MAX_DUES, DueTimes

SLOW_POLL = BacklogOptions(poll_interval=30.0)


def make(path: Path, started: list[float]) -> Scheduler:
    sched = Scheduler(
        str(path),
        lanes=[Lane("batch", 4, durable=True)],
        backlog_options=SLOW_POLL,
        fleet=False,
        shutdown_grace=5.0,
    )

    async def mark(i: int) -> int:
        started.append(time.monotonic())
        return i

    sched.task(name="wake.mark")(mark)
    return sched


async def test_a_local_submit_wakes_the_idle_worker_at_once(tmp_path: Path) -> None:
    started: list[float] = []
    sched = make(tmp_path / "jobs.db", started)
    async with sched:
        await asyncio.sleep(0.05)  # the worker's first claim found nothing: it is idle
        for i in range(3):
            begun = time.monotonic()
            job = await sched.submit("wake.mark", i)
            assert await job.result(timeout=5) == i
            assert started[-1] - begun < 1.0


async def test_a_submit_from_another_connection_wakes_an_idle_sqlite_worker(
    tmp_path: Path,
) -> None:
    started: list[float] = []
    worker = make(tmp_path / "jobs.db", started)
    client = make(tmp_path / "jobs.db", [])
    async with worker.open(run=("batch",)), client.open(run=()):
        await asyncio.sleep(0.05)  # idle, its last claim found nothing
        for i in range(3):
            begun = time.monotonic()
            job = await client.submit("wake.mark", i)
            assert await job.result(timeout=5) == i
            assert len(started) == i + 1
            assert started[-1] - begun < 1.0, "woken by the commit, not by the 30 s poll"
            await asyncio.sleep(0.02)


async def test_a_job_submitted_to_run_later_starts_when_due_not_at_the_poll(
    tmp_path: Path,
) -> None:
    """A later ``run_at`` (a delay, a periodic period) started up to a poll late: the
    idle worker only looked again at its next poll (30 s here)."""
    started: list[float] = []
    sched = make(tmp_path / "jobs.db", started)
    async with sched:
        await asyncio.sleep(0.05)  # idle: its last claim found nothing
        for i, delay in enumerate((0.15, 0.25)):
            due = time.monotonic() + delay
            job = await sched.submit("wake.mark", i, delay=delay)
            assert await job.result(timeout=5) == i
            assert due <= started[-1] < due + 1.0, "started when due, not at the 30 s poll"


async def test_a_retry_starts_when_its_backoff_ends_not_at_the_poll(tmp_path: Path) -> None:
    """An idle worker looked again at a retry only after doubling waits (0.05 s, 0.1 s,
    ... up to its poll), so a 0.8 s backoff started about 0.75 s late."""
    sched = Scheduler(
        str(tmp_path / "jobs.db"),
        lanes=[Lane("batch", 4, durable=True)],
        backlog_options=SLOW_POLL,
        fleet=False,
        shutdown_grace=5.0,
    )
    attempts: list[float] = []
    backoff = RetryPolicy(max_attempts=2, base=0.8, cap=0.8, jitter="none")

    @sched.task(name="wake.flaky", retry=backoff)
    async def flaky() -> str:
        attempts.append(time.monotonic())
        if len(attempts) == 1:
            raise RetryableError("busy for a moment")
        return "ok"

    async with sched:
        await asyncio.sleep(0.05)
        job = await flaky.submit()
        assert await job.result(timeout=5) == "ok"
    first, second = attempts
    assert 0.8 <= second - first < 0.8 + 0.3, "retried when the backoff ended"


@given(
    st.lists(st.floats(0, 1000, allow_nan=False), max_size=60),
    st.lists(st.floats(0, 1000, allow_nan=False), max_size=20),
)
def test_due_times_give_the_earliest_due_after_each_claim(
    dues: list[float], claims: list[float]
) -> None:
    """:class:`DueTimes` against a sorted list: after a claim at ``t`` the next due time
    is the earliest one later than ``t`` (claims come in time order)."""
    times = DueTimes()
    for when in dues:
        times.add(when)
    for moment in sorted(claims):
        later = [when for when in dues if when > moment]
        assert times.next_after(moment) == (min(later) if later else None)


def test_due_times_keep_the_earliest_half_when_full() -> None:
    times = DueTimes()
    for when in range(_MAX_DUES + 1, 0, -1):  # latest first
        times.add(float(when))
    assert len(times) == _MAX_DUES // 2
    assert times.next_after(0.0) == 1.0
    assert times.next_after(float(_MAX_DUES // 2)) is None  # the later half: to the poll
