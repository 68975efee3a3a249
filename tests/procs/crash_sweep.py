"""A fork server for the crash-point sweep: one child process per submitter or worker run.

Usage: python -m tests.procs.crash_sweep

Importing Python and Floodgate costs ~0.25 s per process, too much for a
hundred kill points, so this server imports once and forks a child per run.
Each child is a real process that does real backlog I/O on a real SQLite
file; a kill point makes it send itself SIGKILL (``kill -9``, no cleanup, no
``finally``) right at the chosen event.

Protocol (one line each way per step):

- stdin: a JSON spec per child (below); EOF: wait for the children, exit 0.
- stdout: ``started TAG PID`` once forked; ``ended TAG PID CODE`` when it ends,
  CODE as ``Popen.returncode`` (``-9``: killed by SIGKILL).

A spec: ``{"tag", "db", "log", "acks", "jobs": N, "flaky": [i...],
"submit": [i...], "submit_concurrency", "work": bool, "concurrency",
"kill": [EVENT, n] | null}``. The child submits job ``i`` for each ``i`` in
``submit`` (key ``job-i``; task ``sweep.flaky`` for ``i`` in ``flaky``,
``sweep.work`` otherwise), appending ``"i job_id"`` to ACKS (fsynced) once
each submit returned; then, with ``work``, drains the ``batch`` lane until no
job is queued or running (exit 0). With ``kill``, it dies at the ``n``-th
EVENT, one of:

- ``submit.before`` / ``submit.commit`` / ``submit.after`` / ``submit.acked``:
  entering ``backlog.submit``, at its transaction's COMMIT (statements run, not
  committed), once it returned, once the ack is fsynced;
- ``claim.before`` / ``claim.commit`` / ``claim.after``: the same around a claim
  (``after``: counted only for claims that leased jobs, which have not started);
- ``run.start`` / ``run.logged`` / ``run.end``: in a job's body, before its
  side-effect line, after it (fsynced), before it returns;
- ``complete.before`` / ``complete.commit`` / ``complete.after``: around writing
  outcomes that include a success;
- ``requeue.raise`` / ``requeue.before`` / ``requeue.commit`` / ``requeue.after`` /
  ``requeue.reclaim``: a flaky job about to raise on its first attempt, around
  writing its retry outcome, and once a claim leased a retried job again.

Tasks append ``"i job_id attempt pid"`` to LOG (O_APPEND, fsync per line)
when their body starts; ``sweep.flaky`` raises on attempt 1.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import json
import os
import random
import select
import signal
import sys
import time
import traceback
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from scheduler import BacklogOptions, Lane, RetryPolicy, Scheduler, current_job
from scheduler.backlog import JobRecord, Outcome, SQLiteBacklog
from scheduler.backlog import sqlite as sqlite_backlog

LEASE = 1.0  # seconds: a dead worker's jobs are taken over this long after the kill
SERVER_LIFETIME = 600.0  # seconds: the server gives up waiting for input after this

_kill: tuple[str, int] | None = None
_seen: collections.Counter[str] = collections.Counter()
# the backlog call this task is inside: its COMMIT is that call's commit point
_inside: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar("_inside", default=())


def event(*names: str) -> None:
    """Count ``names``; SIGKILL this process if one of them is the chosen kill point."""
    for name in names:
        _seen[name] += 1
        if _kill is not None and (name, _seen[name]) == _kill:
            os.kill(os.getpid(), signal.SIGKILL)


def _outcome_phases(outcomes: Sequence[Outcome]) -> tuple[str, ...]:
    kinds = {o.kind for o in outcomes}
    return (("complete",) if "done" in kinds else ()) + (("requeue",) if "retry" in kinds else ())


def _claim_events(records: Sequence[JobRecord]) -> tuple[str, ...]:
    if not records:
        return ()
    return ("claim.after",) + (("requeue.reclaim",) if any(r.attempts > 1 for r in records) else ())


async def _around(phases: tuple[str, ...], call: Callable[[], Awaitable[Any]]) -> Any:
    if _inside.get():  # an inner call of a hooked one (complete_and_claim -> claim)
        return await call()
    event(*(f"{p}.before" for p in phases))
    token = _inside.set(phases)
    try:
        return await call()
    finally:
        _inside.reset(token)


def install_hooks() -> None:
    """Wrap the SQLite backlog's write calls (and COMMIT) so they count events."""
    submit, claim = SQLiteBacklog.submit, SQLiteBacklog.claim
    complete, complete_and_claim = SQLiteBacklog.complete, SQLiteBacklog.complete_and_claim

    async def hooked_submit(self: SQLiteBacklog, jobs: Any, **kw: Any) -> Any:
        records = await _around(("submit",), lambda: submit(self, jobs, **kw))
        event("submit.after")
        return records

    async def hooked_claim(self: SQLiteBacklog, *args: Any, **kw: Any) -> Any:
        nested = bool(_inside.get())
        records = await _around(("claim",), lambda: claim(self, *args, **kw))
        if not nested:
            event(*_claim_events(records))
        return records

    async def hooked_complete(self: SQLiteBacklog, outcomes: Any, **kw: Any) -> Any:
        phases = _outcome_phases(outcomes)
        nested = bool(_inside.get())
        applied = await _around(phases, lambda: complete(self, outcomes, **kw))
        if not nested:
            event(*(f"{p}.after" for p in phases))
        return applied

    async def hooked_complete_and_claim(
        self: SQLiteBacklog, outcomes: Any, *args: Any, **kw: Any
    ) -> Any:
        phases = (*_outcome_phases(outcomes), "claim")
        applied, records = await _around(
            phases, lambda: complete_and_claim(self, outcomes, *args, **kw)
        )
        event(*(f"{p}.after" for p in phases if p != "claim"), *_claim_events(records))
        return applied, records

    def hooked_commit_point() -> None:
        # on the connection's thread, in the context of the call that began the
        # transaction, just before its COMMIT
        event(*(f"{p}.commit" for p in _inside.get()))

    SQLiteBacklog.submit = hooked_submit  # type: ignore[method-assign]
    SQLiteBacklog.claim = hooked_claim  # type: ignore[method-assign]
    SQLiteBacklog.complete = hooked_complete  # type: ignore[method-assign]
    SQLiteBacklog.complete_and_claim = hooked_complete_and_claim  # type: ignore[method-assign]
    sqlite_backlog.commit_point = hooked_commit_point


def append_synced(path: str, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def make_scheduler(spec: dict[str, Any]) -> Scheduler:
    sched = Scheduler(
        spec["db"],
        lanes=[Lane("batch", max_concurrency=spec.get("concurrency", 1), durable=True)],
        backlog_options=BacklogOptions(lease=LEASE, heartbeat=0.1, poll_interval=0.02),
        shutdown_grace=0,
    )
    log = spec["log"]

    async def body(i: int, fail_first: bool) -> int:
        ctx = current_job()
        event("run.start")
        append_synced(log, f"{i} {ctx.id} {ctx.attempt} {os.getpid()}")
        event("run.logged")
        await asyncio.sleep(random.uniform(0, 0.003))
        if fail_first and ctx.attempt == 1:
            event("requeue.raise")
            raise RuntimeError(f"job {i} fails its first attempt")
        event("run.end")
        return i

    async def work(i: int) -> int:
        return await body(i, False)

    async def flaky(i: int) -> int:
        return await body(i, True)

    sched.task(name="sweep.work")(work)
    sched.task(name="sweep.flaky", retry=RetryPolicy(max_attempts=5, base=0.02, cap=0.05))(flaky)
    return sched


async def child(spec: dict[str, Any]) -> int:
    flaky = set(spec.get("flaky", ()))
    if spec.get("submit"):
        sched = make_scheduler(spec)
        seats = asyncio.Semaphore(spec.get("submit_concurrency", 1))

        async def submit_one(i: int) -> None:
            async with seats:
                task = "sweep.flaky" if i in flaky else "sweep.work"
                job = await sched.submit(task, i, key=f"job-{i}")
                append_synced(spec["acks"], f"{i} {job.id}")
                event("submit.acked")

        async with sched.open(run=()):
            await asyncio.gather(*(submit_one(i) for i in spec["submit"]))
    if spec.get("work"):
        sched = make_scheduler(spec)
        async with sched:
            for _ in range(3000):  # bounded: ~60 s
                await asyncio.sleep(0.02)
                counts = await sched.backlog_counts()
                busy = sum(n for states in counts.values() for s, n in states.items()
                           if s in ("queued", "running"))  # fmt: skip
                if busy == 0:
                    return 0
            return 3
    return 0


def run_child(spec: dict[str, Any]) -> None:
    """In the forked child: never returns to the server loop."""
    global _kill
    code = 1
    try:
        os.dup2(2, 1)  # stdout is the server's protocol channel
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        random.seed()
        kill = spec.get("kill")
        _kill = (kill[0], int(kill[1])) if kill else None
        code = asyncio.run(child(spec))
    except BaseException:
        traceback.print_exc()
        sys.stderr.write(f"child {spec.get('tag')} failed\n")
    finally:
        sys.stderr.flush()
        os._exit(code)


def serve() -> int:
    install_hooks()
    children: dict[int, str] = {}
    buffer = b""
    stdin_open = True
    deadline = time.monotonic() + SERVER_LIFETIME

    def say(line: str) -> None:
        os.write(1, (line + "\n").encode())

    while (stdin_open or children) and time.monotonic() < deadline:
        readable: list[Any] = []
        if stdin_open:
            readable, _, _ = select.select([0], [], [], 0.005 if children else 1.0)
        else:
            time.sleep(0.005)
        if readable:
            chunk = os.read(0, 65536)
            if not chunk:
                stdin_open = False
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                spec = json.loads(line)
                pid = os.fork()
                if pid == 0:
                    run_child(spec)
                children[pid] = spec["tag"]
                say(f"started {spec['tag']} {pid}")
        while children:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            say(f"ended {children.pop(pid)} {pid} {os.waitstatus_to_exitcode(status)}")
    return 0 if not children else 2


if __name__ == "__main__":
    sys.exit(serve())
