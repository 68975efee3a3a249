"""A worker process for the PostgreSQL fleet tests: drains the ``batch`` lane of a backlog.

Usage: python -m tests.procs.pg_worker DSN [--concurrency N] [--upstream URL] [--log LOG]
                                           [--work-ms MS] [--until-done]

Two tasks:
- ``fleet.call(i)``: GET the upstream URL with httpx, return ``i``;
- ``fleet.work(i)``: append "<job id> <attempt> <pid>" to LOG (O_APPEND, one write),
  sleep 0.5 to 1.5 times MS milliseconds (default 5), return ``i``.

With ``--until-done`` the process exits 0 once no job is queued or running;
otherwise it runs until killed. Prints "ready" once the backlog is open.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys

import httpx

from scheduler import BacklogOptions, Lane, Scheduler, current_job


async def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("dsn")
    parser.add_argument("--concurrency", type=int, default=3)
    parser.add_argument("--upstream", default="")
    parser.add_argument("--log", default="")
    parser.add_argument("--work-ms", type=float, default=5.0)
    parser.add_argument("--until-done", action="store_true")
    args = parser.parse_args(argv)

    sched = Scheduler(
        args.dsn,
        lanes=[Lane("batch", max_concurrency=args.concurrency, durable=True)],
        backlog_options=BacklogOptions(lease=1.0, heartbeat=0.2, poll_interval=0.05),
        shutdown_grace=0,
    )
    client = httpx.AsyncClient(timeout=10)
    fd = os.open(args.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644) if args.log else -1

    @sched.task(name="fleet.call")
    async def call(i: int) -> int:
        response = await client.get(args.upstream)
        response.raise_for_status()
        return i

    @sched.task(name="fleet.work")
    async def work(i: int) -> int:
        ctx = current_job()
        os.write(fd, f"{ctx.id} {ctx.attempt} {os.getpid()}\n".encode())
        await asyncio.sleep(random.uniform(0.5, 1.5) * args.work_ms / 1000)
        return i

    try:
        async with sched:
            print("ready", flush=True)
            while True:
                await asyncio.sleep(0.05)
                if args.until_done:
                    counts = await sched.backlog_counts()
                    busy = sum(n for states in counts.values() for s, n in states.items()
                               if s in ("queued", "running"))  # fmt: skip
                    if busy == 0:
                        return 0
    finally:
        await client.aclose()


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
