"""Submits N ``crash.work`` jobs to a SQLite backlog from its own process.

Usage: python -m tests.procs.submitter DB N
Prints each job id on its own line once it is committed.
"""

from __future__ import annotations

import asyncio
import sys

from scheduler import Lane, Scheduler


async def main(db: str, n: int) -> int:
    sched = Scheduler(db, lanes=[Lane("batch", 8, durable=True)], shutdown_grace=0)

    async def work(i: int) -> int:
        return i

    sched.task(name="crash.work")(work)
    async with sched.open(run=()):
        for i in range(n):
            job = await sched.submit("crash.work", i)
            print(job.id, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1], int(sys.argv[2]))))
