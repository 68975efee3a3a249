"""``floodgate submit``: store one durable job for a registered task; prints its id."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from scheduler import BacklogError, ConfigError, Job, Overloaded, Scheduler, SchedulerClosed
from scheduler.tasks import MAX_JSON_DEPTH

from ..app_loader import load_scheduler, set_backlog
from ..errors import EXIT_USAGE, CommandError
from ..textsafe import printable

__all__ = ["register"]


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "submit",
        help="submit a durable job for a task of your scheduler",
        description="Store a job for TASK (a name registered with @sched.task) in the backlog "
        "and print its id on stdout; a worker runs it.",
    )
    parser.add_argument("task", metavar="TASK", help="the task name, e.g. myapp.tasks.summarize")
    parser.add_argument(
        "--app", required=True, metavar="MODULE:ATTR", help="your Scheduler, e.g. myapp:sched"
    )
    parser.add_argument(
        "--args",
        default="[]",
        metavar="JSON",
        help="the positional arguments as a JSON array, e.g. '[\"doc-1\", 3]' (default [])",
    )
    parser.add_argument("--key", help="idempotency key: the same key returns the same job")
    parser.add_argument("--priority", type=float, default=0, help="lower runs first (default 0)")
    parser.add_argument("--backlog", metavar="PATH", help="instead of the scheduler's backlog")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    try:
        job_args = json.loads(args.args)
    except ValueError as exc:
        raise CommandError(f"--args is not valid JSON: {exc}", exit_code=EXIT_USAGE) from None
    except RecursionError:
        raise CommandError(
            f"--args is nested deeper than {MAX_JSON_DEPTH:,} levels, the limit for durable "
            "job arguments",
            exit_code=EXIT_USAGE,
        ) from None
    if not isinstance(job_args, list):
        raise CommandError(
            f"--args must be a JSON array of positional arguments, e.g. '[{args.args}]'",
            exit_code=EXIT_USAGE,
        )
    sched = load_scheduler(args.app)
    set_backlog(sched, args.backlog)
    job = asyncio.run(_submit(sched, args.task, job_args, args.key, args.priority))
    print(job.id)
    print(f"submitted {printable(job.task)} as job {job.id} ({job.state.value})", file=sys.stderr)
    return 0


async def _submit(
    sched: Scheduler, task: str, job_args: list[Any], key: str | None, priority: float
) -> Job:
    try:
        async with sched.open(run=()):
            return await sched.submit(task, *job_args, key=key, priority=priority)
    except (ConfigError, TypeError) as exc:
        raise CommandError(str(exc), exit_code=EXIT_USAGE) from None
    except (Overloaded, BacklogError, SchedulerClosed) as exc:
        raise CommandError(str(exc)) from None
