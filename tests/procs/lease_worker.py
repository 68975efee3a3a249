"""A worker that takes leases and holds them: the victim of the dead-owner tests.

Usage: python -m tests.procs.lease_worker TARGET LOG [--concurrency N] [--lease S]

TARGET is a SQLite path or a PostgreSQL DSN. Drains the ``batch`` lane
(``max_concurrency=N``, default 2; lease S seconds, default 600). Each
``lease.hold`` job appends "<job id> <attempt> <pid>" to LOG (O_APPEND, one
write) and then waits forever, holding its seat and its lease. Prints
"ready" once the backlog is open; runs until killed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from scheduler import BacklogOptions, Lane, Scheduler, current_job


async def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("target")
    parser.add_argument("log")
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--lease", type=float, default=600.0)
    args = parser.parse_args(argv)

    sched = Scheduler(
        args.target,
        lanes=[Lane("batch", max_concurrency=args.concurrency, durable=True)],
        backlog_options=BacklogOptions(lease=args.lease, poll_interval=0.05),
        shutdown_grace=0,
    )
    fd = os.open(args.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    @sched.task(name="lease.hold")
    async def hold(i: int) -> int:
        ctx = current_job()
        os.write(fd, f"{ctx.id} {ctx.attempt} {os.getpid()}\n".encode())
        await asyncio.Event().wait()
        return i

    async with sched:
        print("ready", flush=True)
        await asyncio.Event().wait()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
