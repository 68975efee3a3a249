"""Child processes of the ``fleet`` benchmark (:mod:`benchmarks.fleet`).

Each prints one JSON line ``{"event": "ready", ...}`` once its scheduler runs and
one ``{"event": "result", ...}`` at the end::

    python -m benchmarks._fleet_member drain BACKLOG URL N [--rpm RPM]
    python -m benchmarks._fleet_member watch BACKLOG COUNT SECONDS
    python -m benchmarks._fleet_member pause BACKLOG COUNT HOLD GAP

``drain``: a worker (``open(run=("batch",))``, default lanes) whose task
``benchmarks.fleet.complete`` POSTs the upstream's ``/v1/complete`` and raises on
a non-2xx answer, exactly as the ``pacing`` benchmark's; with ``--rpm`` it sets
``Upstream("llm", rpm=RPM)``. It exits once the backlog holds N jobs ``done``;
every 0.5 s it prints ``{"event": "sample", ...}`` (its learned rate and share).

``watch``: asks ``gate.upstream("llm").blocked()`` every millisecond and prints
the wall-clock time of each change to ``retry_after`` (``{"event": "seen"}``),
until COUNT changes or SECONDS have passed.

``pause``: waits a second (a few fleet exchanges), then COUNT times: records the
wall-clock time, calls ``gate.upstream("llm").pause(HOLD)`` and sleeps HOLD + GAP
+ up to 0.25 s more (a random phase against the others' exchange loops).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
import sys
import time
from typing import Any

from scheduler import RetryPolicy, Scheduler, Upstream, httpx_event_hooks
from workers.drill.wire import new_http_client, post_completion

UPSTREAM = "llm"
TASK = "benchmarks.fleet.complete"
#: the pacing benchmark's retry policy
RETRY = RetryPolicy(max_attempts=50, base=0.5, cap=10.0)
#: a drain gives up after this long (the parent gives up sooner)
DRAIN_LIMIT_S = 600.0


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, "pid": os.getpid(), **fields}), flush=True)


async def drain(backlog: str, url: str, n: int, rpm: float | None) -> None:
    upstreams = [] if rpm is None else [Upstream(UPSTREAM, rpm=rpm)]
    sched = Scheduler(backlog, upstreams=upstreams, shutdown_grace=5.0)
    ok = 0
    async with new_http_client(url, event_hooks=httpx_event_hooks(sched, UPSTREAM)) as http:

        async def complete(doc: int) -> int:
            nonlocal ok
            response = await post_completion(http, "batch", f"document {doc}")
            response.raise_for_status()
            ok += 1
            return doc

        sched.task(name=TASK, lane="batch", upstream=UPSTREAM, retry=RETRY)(complete)

        async with sched.open(run=("batch",)):
            emit("ready")
            give_up = time.monotonic() + DRAIN_LIMIT_S
            for tick in range(math.ceil(DRAIN_LIMIT_S / 0.1)):
                await asyncio.sleep(0.1)
                if tick % 5 == 4:  # every 0.5 s: the pacing state, for the report's notes
                    health = sched.gate.upstreams.get(UPSTREAM)
                    if health is not None:
                        emit("sample", t=time.time(), learned=health.pacer.rate(),
                             share=health.share, ok=ok)  # fmt: skip
                if (await sched.backlog_counts()).get("batch", {}).get("done", 0) >= n:
                    break
                if time.monotonic() >= give_up:
                    break
            stats = sched.stats()
            up = stats.upstreams.get(UPSTREAM)
            fleet = sched.gate.fleet
            emit(
                "result",
                ok=ok,
                requests=0 if up is None else up.requests,
                rate_limited=0 if up is None else up.failures.get("rate_limited", 0),
                share=None if up is None else up.share,
                learned_rate=None if up is None else up.learned_rate,
                members=None if fleet is None else fleet.members.get(UPSTREAM),
                syncs=None if fleet is None else fleet.syncs,
                limit=stats.lanes["batch"].limit,
                gate_closed_by=dict(sched.gate.stats().closed_by),
            )


async def watch(backlog: str, count: int, seconds: float) -> None:
    sched = Scheduler(backlog)
    seen: list[float] = []
    async with sched.open(run=()):
        health = sched.gate.upstream(UPSTREAM)
        emit("ready")
        was = health.blocked()
        give_up = time.monotonic() + seconds
        while len(seen) < count and time.monotonic() < give_up:
            await asyncio.sleep(0.001)
            now = health.blocked()
            if now == "retry_after" and was != "retry_after":
                seen.append(time.time())
                emit("seen", t=seen[-1])
            was = now
        fleet = sched.gate.fleet
        emit("result", seen=seen, syncs=None if fleet is None else fleet.syncs)


async def pause(backlog: str, count: int, hold: float, gap: float) -> None:
    sched = Scheduler(backlog)
    paused: list[float] = []
    rng = random.Random(os.getpid())
    async with sched.open(run=()):
        health = sched.gate.upstream(UPSTREAM)
        emit("ready")
        await asyncio.sleep(1.0)
        for _ in range(count):
            paused.append(time.time())
            health.pause(hold)
            await asyncio.sleep(hold + gap + rng.uniform(0.0, 0.25))
        emit("result", paused=paused)


def main(argv: list[str]) -> int:
    mode, backlog, *rest = argv
    if mode == "drain":
        rpm = float(rest[3]) if len(rest) >= 4 and rest[2] == "--rpm" else None
        asyncio.run(drain(backlog, rest[0], int(rest[1]), rpm))
    elif mode == "watch":
        asyncio.run(watch(backlog, int(rest[0]), float(rest[1])))
    elif mode == "pause":
        asyncio.run(pause(backlog, int(rest[0]), float(rest[1]), float(rest[2])))
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
