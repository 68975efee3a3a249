"""Periodic jobs: once per period across every scheduler sharing a backlog, one
catch-up after a downtime, clear errors for bad schedules (fake clock; a real
SQLite file shared by two schedulers; two worker processes at the end)."""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import itertools
import os
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler import ConfigError, FakeClock, JobState, Lane, Scheduler, current_job
from scheduler.backlog import SQLiteBacklog
from scheduler.periodic import Schedule, period_key

from .test_durable import until

# 2027-01-15T12:00:00Z: a whole hour, so cron periods are easy to read
NOON = dt.datetime(2027, 1, 15, 12, tzinfo=dt.UTC).timestamp()
LANES = [Lane("interactive", 2), Lane("batch", 2, durable=True)]
REPO = str(Path(__file__).resolve().parent.parent)


def test_a_schedule_takes_a_cron_expression_or_an_interval_and_says_what_is_wrong() -> None:
    with pytest.raises(ConfigError, match="not both"):
        Schedule.parse("* * * * *", 60)
    with pytest.raises(ConfigError, match="not both"):
        Schedule.parse(None, None)
    with pytest.raises(ConfigError, match="not a valid cron expression: 'every minute'"):
        Schedule.parse("every minute", None)
    with pytest.raises(ConfigError, match="at least one second"):
        Schedule.parse(None, dt.timedelta(milliseconds=10))
    with pytest.raises(TypeError, match="timedelta or seconds"):
        Schedule.parse(None, "60")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="must be a str"):
        Schedule.parse(5, None)  # type: ignore[arg-type]


def test_cron_periods_are_utc_and_intervals_are_aligned_to_the_epoch() -> None:
    cron = Schedule.parse("*/15 * * * *", None)
    assert cron.latest(NOON + 20 * 60) == NOON + 15 * 60
    assert cron.latest(NOON) == NOON  # a period that begins now has begun
    assert cron.next_after(NOON) == NOON + 15 * 60
    every = Schedule.parse(None, dt.timedelta(minutes=10))
    assert every.latest(NOON + 61) == NOON
    assert every.next_after(NOON + 61) == NOON + 600


@settings(max_examples=200, deadline=None)
@given(
    wall=st.floats(1.7e9, 2.0e9),
    seconds=st.integers(1, 86_400),
    cron=st.sampled_from(["* * * * *", "*/5 * * * *", "0 * * * *", "30 2 * * 1"]),
)
def test_latest_and_next_bracket_every_moment(wall: float, seconds: int, cron: str) -> None:
    for schedule in (Schedule.parse(None, seconds), Schedule.parse(cron, None)):
        latest, upcoming = schedule.latest(wall), schedule.next_after(wall)
        assert latest <= wall < upcoming
        assert schedule.next_after(latest) == upcoming  # no period in between


async def test_a_periodic_task_runs_once_per_period_and_catches_up_once() -> None:
    clock = FakeClock(wall_start=NOON + 30)
    sched = Scheduler(":memory:", lanes=LANES, clock=clock, shutdown_grace=0)
    runs: list[float] = []

    @sched.periodic(every=dt.timedelta(minutes=1))
    async def tick() -> None:
        runs.append(clock.wall())

    async with sched:
        await until(lambda: len(runs) == 1, clock, step=1.0)
        assert runs[0] < NOON + 60  # the current minute at once: the catch-up
        info = sched.stats().periodic
        assert [(p.task, p.schedule, p.next_run, p.scheduled_here) for p in info] == [
            (tick.name, "every 60 s", NOON + 60, True)
        ]
        await until(lambda: len(runs) == 6, clock, step=1.0, rounds=600)
        jobs = await sched.jobs(JobState.DONE)
    assert [round(r - NOON) // 60 for r in runs] == [0, 1, 2, 3, 4, 5]
    assert all(r - (NOON + 60 * i) < 2.0 for i, r in enumerate(runs) if i)  # on time
    keys = sorted(job.key or "" for job in jobs)
    assert keys == sorted(period_key(tick.name, NOON + 60 * i) for i in range(6))


async def test_without_catch_up_a_start_waits_for_the_next_period() -> None:
    clock = FakeClock(wall_start=NOON + 30)
    sched = Scheduler(":memory:", lanes=LANES, clock=clock, shutdown_grace=0)
    runs: list[float] = []

    @sched.periodic("* * * * *", catch_up=0)
    async def tick() -> None:
        runs.append(clock.wall())

    async with sched:
        for _ in range(20):
            await clock.advance_and_settle(1.0)
        assert runs == []
        await until(lambda: len(runs) == 1, clock, step=1.0)
    assert NOON + 60 <= runs[0] < NOON + 62


async def test_two_schedulers_on_one_sqlite_file_run_each_period_once(tmp_path: Path) -> None:
    clock = FakeClock(wall_start=NOON + 5)
    db = str(tmp_path / "periodic.db")
    runs: collections.Counter[str] = collections.Counter()  # job id -> runs
    scheds = [Scheduler(db, lanes=LANES, clock=clock, shutdown_grace=0) for _ in range(2)]
    for sched in scheds:

        @sched.periodic(every=30, name="app.report", catch_up=3)
        async def report() -> None:
            runs[current_job().id] += 1

    async with scheds[0], scheds[1]:
        await until(lambda: sum(runs.values()) >= 7, clock, step=0.5, rounds=400)
        ran = set(runs)
        for _ in range(400):  # their outcomes are written a moment after they ran
            done = [job for job in await scheds[0].jobs(JobState.DONE) if job.id in ran]
            if len(done) == len(ran):
                break
            await asyncio.sleep(0.002)
            await clock.advance_and_settle(0.01)  # far less than a period
    assert set(runs.values()) == {1}, runs  # no job ran twice ...
    keys = [job.key for job in done]
    assert len(set(keys)) == len(keys) == len(ran)  # ... and no period had two jobs
    # the catch-up: the latest three periods that began (11:59:00, 11:59:30, 12:00:00),
    # then one per 30 s
    starts = sorted(int((key or "").rsplit(":", 1)[1]) for key in keys)
    assert starts[:3] == [round(NOON) - 60, round(NOON) - 30, round(NOON)]
    assert all(b - a == 30 for a, b in itertools.pairwise(starts))


def test_a_periodic_task_needs_a_durable_lane_and_no_arguments_are_passed() -> None:
    sched = Scheduler(":memory:", lanes=LANES)
    with pytest.raises(ConfigError, match="needs a durable lane"):

        @sched.periodic(every=60, lane="interactive")
        async def live() -> None:
            return None

    with pytest.raises(ConfigError, match="catch_up is at most"):

        @sched.periodic(every=60, catch_up=10_000)
        async def many() -> None:
            return None


WORKER = """
import asyncio, os, sys, time
from scheduler import Lane, Scheduler, current_job

db, log, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
sched = Scheduler(db, lanes=[Lane("batch", 2, durable=True)], shutdown_grace=1)

@sched.periodic(every=1, name="app.beat", catch_up=0)
async def beat() -> None:
    with open(log, "a") as f:
        # the job's id: one per period (its idempotency key), whenever it starts
        f.write(f"{current_job().id} {int(time.time())} {os.getpid()}\\n")

async def main() -> None:
    async with sched:
        print("ready", flush=True)
        await asyncio.sleep(seconds)

asyncio.run(main())
"""


@pytest.mark.slow
async def test_two_worker_processes_run_each_second_once(tmp_path: Path) -> None:
    db, log = str(tmp_path / "beat.db"), tmp_path / "beat.log"
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "PYTHONPATH": REPO}
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            str(script),
            db,
            str(log),
            "4",
            stdout=asyncio.subprocess.PIPE,
            env=env,
        )
        for _ in range(2)
    ]
    try:
        codes = await asyncio.wait_for(asyncio.gather(*(p.wait() for p in procs)), 60)
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    assert codes == [0, 0]
    lines = log.read_text().splitlines()
    periods = [line.split()[0] for line in lines]
    assert len(periods) >= 2, f"at least two periods ran in 4 s: {lines}"
    assert len(periods) == len(set(periods)), f"a period ran twice: {lines}"


def test_status_lists_periodic_tasks_with_their_next_run(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from workers.cli import main

    db = str(tmp_path / "status.db")

    async def create() -> None:
        async with SQLiteBacklog(db):
            pass

    asyncio.run(create())
    code = main(["status", "--app", "tests.procs.periodic_app:sched", "--backlog", db])
    out = capsys.readouterr().out
    assert code == 0
    line = next(line for line in out.splitlines() if line.startswith("periodic "))
    assert line.startswith("periodic app.nightly (0 3 * * *, lane batch): next ")
    assert line.endswith(" 03:00:00 UTC")
