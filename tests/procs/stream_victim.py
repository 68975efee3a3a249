"""A process that stores two streamed ``submit_many`` calls and sends itself
SIGKILL (``kill -9``: no cleanup, no ``finally``) at a chosen point of the second.

Usage: ``python -m tests.procs.stream_victim DB ACKS EVENT N COUNT``

Both calls store COUNT jobs (enough to stream). After each call returns, a line
``first COUNT`` / ``second COUNT`` is appended to ACKS and fsynced. EVENT is where
the second call dies:

- ``add``: as it hands its N-th chunk to the backlog's thread;
- ``commit``: on the backlog's thread, its statements run, just before COMMIT;
- ``returned``: once the call returned, before its ack.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys

from scheduler import Lane, Scheduler
from scheduler.backlog import _run_stream
from scheduler.backlog import sqlite as sqlite_backlog
from tests.procs.crash_sweep import append_synced


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


async def noop(i: int) -> None:
    return None


def main() -> None:
    db, acks, event, n, count = (
        sys.argv[1],
        sys.argv[2],
        sys.argv[3],
        int(sys.argv[4]),
        int(sys.argv[5]),
    )
    armed = False
    adds = 0
    add = _run_stream.RunStream.add
    commit_point = sqlite_backlog.commit_point

    def hooked_add(self: _run_stream.RunStream, texts: list[str]) -> list[str]:
        nonlocal adds
        if armed:
            adds += 1
            if event == "add" and adds == n:
                die()
        return add(self, texts)

    def hooked_commit_point() -> None:
        if armed and event == "commit":
            die()
        commit_point()

    _run_stream.RunStream.add = hooked_add  # type: ignore[method-assign]
    sqlite_backlog.commit_point = hooked_commit_point

    async def run() -> None:
        nonlocal armed
        sched = Scheduler(db, lanes=[Lane("batch", 4, durable=True)], fleet=False)
        sched.task(noop, name="victim.noop")
        async with sched.open(run=()):
            first = await sched.submit_many("victim.noop", [[i] for i in range(count)])
            append_synced(acks, f"first {len(first)}")
            armed = True
            second = await sched.submit_many("victim.noop", [[i] for i in range(count, 2 * count)])
            if event == "returned":
                die()
            append_synced(acks, f"second {len(second)}")

    asyncio.run(run())


if __name__ == "__main__":
    main()
