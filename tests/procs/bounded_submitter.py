"""Races submits against a lane's ``max_queued`` from its own process.

Usage: python -m tests.procs.bounded_submitter TARGET MAX_QUEUED N [--tasks K]

TARGET is a SQLite path or a PostgreSQL DSN. Opens a submit-only scheduler
(lane ``batch``, ``max_queued=MAX_QUEUED``), prints "ready", waits for a line
on stdin (the start signal), then submits N ``bound.work`` jobs from K
concurrent asyncio tasks (default 16, so the group commit batches them).
Prints one line per submit: "ok <job id>", or "full" for ``Overloaded``, or
"error <type>: <message>" for anything else; then "end" and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from scheduler import Lane, Overloaded, Scheduler


async def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("target")
    parser.add_argument("max_queued", type=int)
    parser.add_argument("n", type=int)
    parser.add_argument("--tasks", type=int, default=16)
    args = parser.parse_args(argv)

    sched = Scheduler(
        args.target,
        lanes=[Lane("batch", 4, args.max_queued, durable=True)],
        shutdown_grace=0,
    )

    async def work(i: int) -> int:
        return i

    sched.task(name="bound.work")(work)
    lines: list[str] = []
    todo = iter(range(args.n))

    async def submitter() -> None:
        for i in todo:
            try:
                job = await sched.submit("bound.work", i)
            except Overloaded:
                lines.append("full")
            except Exception as exc:  # reported to the test, which fails on it
                lines.append(f"error {type(exc).__name__}: {exc}")
            else:
                lines.append(f"ok {job.id}")

    async with sched.open(run=()):
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        await asyncio.gather(*(submitter() for _ in range(args.tasks)))
    print("\n".join([*lines, "end"]), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
