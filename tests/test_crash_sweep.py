"""Crash-point sweep: ``kill -9`` at 100+ precise points of submit, claim, run, complete, requeue.

Each point is one fresh SQLite file and two real processes (forked by
``tests/procs/crash_sweep.py``, which imports Floodgate once):

1. the *victim* submits ``JOBS`` jobs (key ``job-i``, some failing their first
   attempt) and, past the submit phase, drains them; it sends itself SIGKILL
   at the ``n``-th occurrence of the point's event;
2. right after the kill, the jobs ``RUNNING`` in the file are recorded: the
   jobs leased at the kill;
3. a *restart* resubmits (same keys) what the victim never saw acknowledged
   and drains everything after the dead worker's leases expire.

Then, against the file and the side-effect log the task bodies append to
(fsync per line): every job is there exactly once and ``DONE`` with its
result, every acknowledged submit is that job, nothing else was stored, and
the only jobs that ran more often than their task needs were leased at the
kill; no attempt number ran twice.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from scheduler import JobState
from scheduler.backlog import JobRecord, SQLiteBacklog

REPO = Path(__file__).resolve().parent.parent
JOBS = 8  # per point
PARALLEL = 6  # points in flight at once (most of a point is waiting out a lease)
STEP_TIMEOUT = 90.0  # seconds for one child process


@dataclass(frozen=True)
class Point:
    event: str  # see tests/procs/crash_sweep.py
    n: int  # die at the n-th occurrence
    concurrency: int = 1  # the batch lane's ceiling (submit phase: submits in flight)

    @property
    def phase(self) -> str:
        return self.event.split(".")[0]

    def __str__(self) -> str:
        return f"{self.event}#{self.n} (lane ceiling {self.concurrency})"


def sweep_plan() -> list[Point]:
    """Every point is reached for sure: ``n`` stays below the event's least count.

    Each submit is one ``backlog.submit`` call; with one submit in flight each
    is its own commit, with two at least ``JOBS / 2`` commits. With a lane
    ceiling of 1 each claim leases one job and each outcome is written on its
    own, so claim and outcome events happen once per job (per attempt); with a
    ceiling of 2 at least ``JOBS / 2`` times.
    """
    points: list[Point] = []
    for event in ("submit.before", "submit.commit", "submit.after", "submit.acked"):
        # concurrency: submits in flight (2 may share a group commit)
        points += [Point(event, n, 2 if n <= 3 else 1) for n in range(1, 7)]
    for event in ("claim.before", "claim.commit", "claim.after"):
        points += [Point(event, n, 2 if n <= 3 else 1) for n in range(1, 8)]
    for event in ("run.start", "run.logged", "run.end"):
        points += [Point(event, n, 1 + n % 3) for n in range(1, 8)]
    for event in ("complete.before", "complete.commit", "complete.after"):
        points += [Point(event, n, 2 if n <= 3 else 1) for n in range(1, 8)]
    for event in (
        "requeue.raise",
        "requeue.before",
        "requeue.commit",
        "requeue.after",
        "requeue.reclaim",
    ):
        points += [Point(event, n, 2 if n <= 2 else 1) for n in range(1, 6)]
    return points


class ForkServer:
    """``python -m tests.procs.crash_sweep``: runs a child per spec, reports its exit code."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.live: dict[str, int] = {}  # tag -> pid of children not ended yet
        self._ended: dict[str, asyncio.Future[int]] = {}
        assert proc.stdout is not None
        self._reader = asyncio.create_task(self._read(proc.stdout))

    @classmethod
    async def start(cls, stderr: Path) -> ForkServer:
        with stderr.open("wb") as err:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "tests.procs.crash_sweep",
                cwd=REPO,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=err,
            )
        return cls(proc)

    async def _read(self, stream: asyncio.StreamReader) -> None:
        while line := await stream.readline():
            what, tag, pid, *rest = line.decode().split()
            if what == "started":
                self.live[tag] = int(pid)
            elif what == "ended":
                self.live.pop(tag, None)
                self._ended[tag].set_result(int(rest[0]))
        for future in self._ended.values():
            if not future.done():
                future.set_exception(AssertionError("the fork server ended early"))

    async def run(self, spec: dict[str, Any]) -> int:
        """Run one child to its end; its exit code (``-9``: SIGKILL)."""
        future = self._ended[spec["tag"]] = asyncio.get_running_loop().create_future()
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(spec) + "\n").encode())
        await self.proc.stdin.drain()
        return await asyncio.wait_for(future, STEP_TIMEOUT)

    async def close(self) -> None:
        """End the server; SIGKILL (by pid) any child still running, then the server."""
        for pid in list(self.live.values()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), 10)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)


def read_lines(path: Path) -> list[list[str]]:
    if not path.exists():
        return []
    return [line.split() for line in path.read_text().splitlines() if line.strip()]


@dataclass
class PointResult:
    point: Point
    leased: int  # jobs RUNNING at the kill
    reruns: int  # jobs that ran more often than their task needs
    errors: list[str]


async def sweep_point(server: ForkServer, k: int, point: Point, root: Path) -> PointResult:
    where = root / f"p{k:03d}"
    where.mkdir()
    db, log, acks = where / "jobs.db", where / "runs.log", where / "acks"
    flaky = set(range(JOBS)) if point.phase == "requeue" else set(range(0, JOBS, 3))
    base = {"db": str(db), "log": str(log), "acks": str(acks), "flaky": sorted(flaky)}
    victim = {
        **base,
        "tag": f"{k}-victim",
        "submit": list(range(JOBS)),
        "submit_concurrency": point.concurrency if point.phase == "submit" else 1,
        "work": point.phase != "submit",
        "concurrency": point.concurrency,
        "kill": [point.event, point.n],
    }
    code = await server.run(victim)
    if code != -signal.SIGKILL:
        return PointResult(point, 0, 0, [f"{point}: the victim ended with {code}, not SIGKILL"])

    async with SQLiteBacklog(db) as backlog:  # before the restart: what the kill left
        at_kill = await backlog.list_jobs(limit=2 * JOBS)
    leased = {r.id for r in at_kill if r.state is JobState.RUNNING}
    acked_first = {int(i) for i, _ in read_lines(acks)}
    landed = kill_landed(
        point, stored=len(at_kill), acked=len(acked_first), ran=len(read_lines(log))
    )
    if landed is not None:
        return PointResult(point, len(leased), 0, [f"{point}: {landed}"])
    restart = {
        **base,
        "tag": f"{k}-restart",
        "submit": [i for i in range(JOBS) if i not in acked_first],
        "work": True,
        "concurrency": 2,
        "kill": None,
    }
    code = await server.run(restart)
    if code != 0:
        return PointResult(point, len(leased), 0, [f"{point}: the restart ended with {code}"])

    async with SQLiteBacklog(db) as backlog:
        records = await backlog.list_jobs(limit=2 * JOBS)
    errors, reruns = check_point(records, read_lines(acks), read_lines(log), flaky, leased)
    return PointResult(point, len(leased), reruns, [f"{point}: {e}" for e in errors])


def kill_landed(point: Point, *, stored: int, acked: int, ran: int) -> str | None:
    """Where one process does one thing at a time, the kill's point shows in the
    file: ``None`` if it is where it should be, else what is off."""
    if point.concurrency != 1:
        return None
    n, step = point.n, point.event.split(".")[1]
    if point.phase == "submit":  # n-1 submits returned before; the n-th is committed after
        want = (n - (step in ("before", "commit")), n - (step != "acked"))
        if (stored, acked) != want:
            return f"killed with {stored} jobs stored, {acked} acked; expected {want}"
    # bodies that logged; run.end misses a flaky job's first attempt, which raises
    if point.phase == "run" and step != "end" and ran != n - (step == "start"):
        return f"killed after {ran} side effects; expected {n - (step == 'start')}"
    return None


def check_point(
    records: list[JobRecord],
    acks: list[list[str]],
    log: list[list[str]],
    flaky: set[int],
    leased: set[str],
) -> tuple[list[str], int]:
    """What is wrong with one point's end state, and how many jobs ran again."""
    errors: list[str] = []
    keys = sorted(str(r.key) for r in records)
    if keys != sorted(f"job-{i}" for i in range(JOBS)):
        errors.append(f"lost, invented or duplicated jobs: keys {keys}")
    errors += [
        f"job {r.key} ended {r.state.value} with {r.result!r} ({r.error})"
        for r in records
        if r.state is not JobState.DONE or r.result != r.args[0]
    ]
    by_id = {r.id: r for r in records}
    for i, job_id in acks:
        if job_id not in by_id or by_id[job_id].key != f"job-{i}":
            errors.append(f"acknowledged submit of job-{i} ({job_id}) is not that job")
    ran: dict[str, list[int]] = collections.defaultdict(list)  # job id -> attempts whose body ran
    for _, job_id, attempt, _ in log:
        ran[job_id].append(int(attempt))
    if set(ran) - set(by_id):
        errors.append(f"bodies ran for jobs not in the backlog: {set(ran) - set(by_id)}")
    reruns = 0
    for r in records:
        attempts = ran.get(r.id, [])
        # a flaky job's first attempt fails by design, if its body got to run
        needed = 2 if r.args[0] in flaky and 1 in attempts else 1
        if r.attempts not in attempts:
            errors.append(f"job {r.key} is DONE by attempt {r.attempts}, whose body never ran")
        if len(set(attempts)) != len(attempts):
            errors.append(f"job {r.key} ran attempts {attempts}: one attempt ran twice")
        if len(attempts) > needed:
            reruns += 1
            if r.id not in leased:
                errors.append(f"job {r.key} ran attempts {attempts}, not leased at the kill")
    return errors, reruns


@pytest.mark.slow
@pytest.mark.timeout(180)  # ~20 s on a busy 2-core machine
async def test_kill_9_at_every_point_loses_nothing_and_reruns_only_leased_jobs(
    tmp_path: Path,
) -> None:
    plan = sweep_plan()
    stderr = tmp_path / "children.stderr"
    server = await ForkServer.start(stderr)
    seats = asyncio.Semaphore(PARALLEL)
    started = time.monotonic()

    async def one(k: int, point: Point) -> PointResult:
        async with seats:
            return await sweep_point(server, k, point, tmp_path)

    try:
        results = await asyncio.gather(*(one(k, p) for k, p in enumerate(plan)))
    finally:
        await server.close()
    elapsed = time.monotonic() - started

    errors = [e for r in results for e in r.errors]
    children = stderr.read_text()[-4000:]
    assert not errors, "\n".join(errors[:40]) + "\n--- children's stderr ---\n" + children
    per_phase: collections.Counter[str] = collections.Counter()
    leased: collections.Counter[str] = collections.Counter()
    reruns: collections.Counter[str] = collections.Counter()
    for r in results:
        per_phase[r.point.phase] += 1
        leased[r.point.phase] += r.leased
        reruns[r.point.phase] += r.reruns
    summary = ", ".join(
        f"{p} {n} (leased {leased[p]}, reran {reruns[p]})" for p, n in per_phase.items()
    )
    print(f"\ncrash sweep: {len(results)} kill -9 points in {elapsed:.1f} s: {summary}")
    assert len(results) >= 100
    assert sorted(per_phase) == ["claim", "complete", "requeue", "run", "submit"]
    assert min(per_phase.values()) >= 20
    # the kills really landed while work was leased, and some leased jobs ran again
    assert all(leased[p] > 0 for p in ("claim", "run", "complete", "requeue"))
    assert sum(reruns.values()) > 0


def test_the_sweep_check_flags_lost_jobs_stray_reruns_and_false_acks() -> None:
    """The sweep's check on a made-up end state: it passes a good one and
    names each kind of damage, so a sweep that passes has really checked."""

    def job(i: int, attempts: int = 1, state: JobState = JobState.DONE) -> JobRecord:
        return JobRecord(
            id=f"id{i}", task="sweep.work", lane="batch", args=[i], priority=0.0,
            state=state, attempts=attempts, max_attempts=5, run_at=0.0, created_at=0.0,
            updated_at=0.0, key=f"job-{i}", result=i if state is JobState.DONE else None,
        )  # fmt: skip

    good = [job(i) for i in range(JOBS)]
    log = [["0", f"id{i}", "1", "1"] for i in range(JOBS)]
    acks = [[str(i), f"id{i}"] for i in range(JOBS)]
    assert check_point(good, acks, log, set(), set()) == ([], 0)

    def problems(records: list[JobRecord], log: list[list[str]], acks: list[list[str]] = acks,
                 leased: frozenset[str] = frozenset()) -> str:  # fmt: skip
        return "\n".join(check_point(records, acks, log, set(), set(leased))[0])

    assert "lost" in problems(good[1:], log[1:], acks[1:])
    assert "lost" in problems([*good, job(1)], log)  # a second row for one key
    assert "ended dead" in problems([job(0, state=JobState.DEAD), *good[1:]], log)
    assert "is not that job" in problems(good, log, [*acks, ["3", "id9"]])
    rerun = [job(0, attempts=2), *good[1:]]
    twice = [*log, ["0", "id0", "2", "1"]]
    assert "not leased at the kill" in problems(rerun, twice)
    assert problems(rerun, twice, leased=frozenset({"id0"})) == ""
    assert "ran twice" in problems(good, [*log, log[0]], leased=frozenset({"id0"}))
    assert "never ran" in problems(rerun, log)
