"""One member of the fleet test (tests/test_fleet_processes.py): a worker or a web app
sharing one upstream, ``llm``, with the other processes on a backlog.

Usage: python -m tests.procs.fleet_member BACKLOG --role worker|web --url URL --rate R
                                          [--no-rpm] [--log LOG] [--stop-file PATH]
                                          [--every S] [--max-seconds S]

- ``worker``: ``open(run=("batch",))`` drains the durable ``batch`` lane; the task
  ``fleet.complete(i)`` POSTs ``/v1/complete`` (lane header ``batch``), raises on a
  non-2xx answer (Floodgate retries 429s) and, after a 200, appends
  ``ok <job id> <attempt> <pid>`` to LOG (O_APPEND, one write). It exits 0 once
  no batch job is queued or running.
- ``web``: ``open(run=("interactive",))`` makes live ``sched.call(...,
  upstream="llm")`` calls one after the other until STOP-FILE exists.

Both configure ``Upstream("llm", rpm=R*60)`` (unless ``--no-rpm``) and print one
JSON line per ``--every`` seconds on stdout (``event: stats``: wall time, this
process's ``paused_for``, ``share``, fleet members, syncs, its own 429 count),
after ``event: ready``, and ``event: exit`` at the end. Every loop is bounded
by ``--max-seconds``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from scheduler import (
    BacklogOptions,
    RetryPolicy,
    Scheduler,
    Upstream,
    current_job,
    httpx_event_hooks,
)
from workers.drill.wire import new_http_client, post_completion

UPSTREAM = "llm"
TASK = "fleet.complete"
RETRY = RetryPolicy(max_attempts=50, base=0.2, cap=2.0)


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, "t": time.time(), "pid": os.getpid(), **fields}), flush=True)


def snapshot(sched: Scheduler, role: str, extra: dict[str, Any]) -> dict[str, Any]:
    stats = sched.stats()
    up = stats.upstreams.get(UPSTREAM)
    fleet = sched.gate.fleet
    return {
        "role": role,
        "member": sched.owner,
        "paused_for": None if up is None else up.paused_for,
        "share": None if up is None else up.share,
        "rate_limited": 0 if up is None else up.failures.get("rate_limited", 0),
        "requests": 0 if up is None else up.requests,
        "learned_rate": None if up is None else up.learned_rate,
        "members": None if fleet is None else fleet.members.get(UPSTREAM),
        "syncs": None if fleet is None else fleet.syncs,
        "reachable": None if fleet is None else fleet.reachable,
        **extra,
    }


async def report(sched: Scheduler, role: str, extra: dict[str, Any], every: float) -> None:
    for _ in range(1_000_000):  # bounded; cancelled at the end
        emit("stats", **snapshot(sched, role, extra))
        await asyncio.sleep(every)


async def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("backlog")
    parser.add_argument("--role", choices=("worker", "web"), required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--no-rpm", action="store_true")
    parser.add_argument("--log", default="")
    parser.add_argument("--stop-file", default="")
    parser.add_argument("--every", type=float, default=0.2)
    parser.add_argument("--max-seconds", type=float, default=60.0)
    args = parser.parse_args(argv)

    upstreams = [] if args.no_rpm else [Upstream(UPSTREAM, rpm=args.rate * 60)]
    sched = Scheduler(
        args.backlog,
        upstreams=upstreams,
        backlog_options=BacklogOptions(lease=1.0, heartbeat=0.2, poll_interval=0.05),
        shutdown_grace=0,
    )
    give_up = time.monotonic() + args.max_seconds
    outcomes: Counter[str] = Counter()
    extra: dict[str, Any] = {"outcomes": outcomes}
    async with new_http_client(args.url, event_hooks=httpx_event_hooks(sched, UPSTREAM)) as http:
        fd = os.open(args.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644) if args.log else -1

        async def complete(i: int) -> int:
            response = await post_completion(http, "batch", f"document {i}")
            response.raise_for_status()
            ctx = current_job()
            if fd >= 0:
                os.write(fd, f"ok {ctx.id} {ctx.attempt} {os.getpid()}\n".encode())
            outcomes["ok"] += 1
            return i

        sched.task(name=TASK, lane="batch", upstream=UPSTREAM, retry=RETRY)(complete)

        async def live() -> int:
            response = await post_completion(http, "interactive", "a live question")
            response.raise_for_status()
            return response.status_code

        run = ("batch",) if args.role == "worker" else ("interactive",)
        async with sched.open(run=run):
            emit("ready", member=sched.owner, role=args.role)
            reporter = asyncio.create_task(report(sched, args.role, extra, args.every))
            try:
                if args.role == "worker":
                    await drain(sched, give_up)
                else:
                    await web(sched, live, outcomes, Path(args.stop_file), give_up)
            finally:
                reporter.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reporter
                emit("exit", **snapshot(sched, args.role, extra))
    return 0


async def drain(sched: Scheduler, give_up: float) -> None:
    """Until no batch job is queued or running (or ``give_up``)."""
    while time.monotonic() < give_up:
        await asyncio.sleep(0.1)
        counts = (await sched.backlog_counts()).get("batch", {})
        if not counts.get("queued", 0) and not counts.get("running", 0):
            return


async def web(
    sched: Scheduler, live: Any, outcomes: Counter[str], stop: Path, give_up: float
) -> None:
    """Live calls one after the other until ``stop`` exists (or ``give_up``)."""
    while time.monotonic() < give_up and not await asyncio.to_thread(stop.exists):
        try:
            await sched.call(live, lane="interactive", upstream=UPSTREAM, timeout=5.0)
            outcomes["ok"] += 1
        except httpx.HTTPStatusError as exc:
            outcomes[str(exc.response.status_code)] += 1
        except Exception as exc:  # shed, throttled, unavailable: counted, then a short rest
            outcomes[type(exc).__name__] += 1
            await asyncio.sleep(0.05)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
