"""Prints the name a task gets when this module runs as ``python -m tests.procs.naming``."""

from __future__ import annotations

from scheduler import Scheduler

sched = Scheduler(":memory:")


@sched.task
async def summarize(doc: str) -> str:
    return doc


if __name__ == "__main__":
    print(summarize.name)
