"""A worker process for the crash test: drains ``crash.work`` jobs from a SQLite file.

Usage: python -m tests.procs.crash_worker DB LOG [--until-done]

Each job appends "<job id> <attempt>" to LOG when it starts (O_APPEND, one
write), sleeps a few ms, and returns its argument. With ``--until-done`` the
process exits 0 once no job is queued or running; otherwise it runs until killed.
"""

from __future__ import annotations

import asyncio
import os
import random
import sys

from scheduler import BacklogOptions, Lane, Scheduler, current_job


async def main(db: str, log: str, until_done: bool) -> int:
    sched = Scheduler(
        db,
        lanes=[Lane("batch", max_concurrency=8, durable=True)],
        backlog_options=BacklogOptions(lease=0.5, heartbeat=0.15, poll_interval=0.05),
        shutdown_grace=0,
    )
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    @sched.task(name="crash.work")
    async def work(i: int) -> int:
        ctx = current_job()
        os.write(fd, f"{ctx.id} {ctx.attempt}\n".encode())
        await asyncio.sleep(random.uniform(0, 0.01))
        return i

    async with sched:
        while True:
            await asyncio.sleep(0.05)
            if until_done:
                counts = await sched.backlog_counts()
                busy = sum(n for states in counts.values() for s, n in states.items()
                           if s in ("queued", "running"))  # fmt: skip
                if busy == 0:
                    return 0


if __name__ == "__main__":
    db, log = sys.argv[1], sys.argv[2]
    sys.exit(asyncio.run(main(db, log, "--until-done" in sys.argv[3:])))
