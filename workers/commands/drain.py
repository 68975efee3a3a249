"""``floodgate drain --until-empty``: run the durable lanes until their backlog is empty.

Like ``floodgate worker`` (same signals, grace and lease release), but it
stops by itself once the lanes it runs have no queued or running job (a
scheduled retry counts as queued), showing progress on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from scheduler import Scheduler

from ..errors import EXIT_FAILURE, CommandError
from ..logging_setup import logging_configured
from ..progress import Progress
from ..run import Worker
from .worker import add_run_args, prepare

__all__ = ["register"]

#: seconds between looks at the backlog counts
_POLL = 0.1


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "drain",
        help="run the durable lanes until the backlog is empty, with progress",
        description="Run the durable lanes like 'floodgate worker' (same signals, grace "
        "and lease release) and stop once they have no queued or running job (a scheduled "
        "retry counts as queued). Progress (done/total, rate, ETA) goes to stderr.",
    )
    parser.add_argument(
        "--until-empty",
        action="store_true",
        required=True,
        help="stop once no job is queued or running in these lanes (the only mode so far)",
    )
    add_run_args(parser, log_default="warning")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    with logging_configured(args.log_level):
        sched, lanes = prepare(args)
        return asyncio.run(_drain(sched, lanes))


def _pending(counts: Mapping[str, Mapping[str, int]], lanes: tuple[str, ...]) -> int:
    return sum(counts.get(lane, {}).get(s, 0) for lane in lanes for s in ("queued", "running"))


def _finished(counts: Mapping[str, Mapping[str, int]], lanes: tuple[str, ...]) -> int:
    return sum(counts.get(lane, {}).get(s, 0) for lane in lanes for s in ("done", "dead"))


@dataclass
class _Tally:
    done: int = 0
    total: int = 0
    empty: bool = False


async def _drain(sched: Scheduler, lanes: tuple[str, ...]) -> int:
    progress = Progress(sys.stderr)
    tally = _Tally()

    async def until_empty() -> None:
        baseline: int | None = None
        while True:
            counts = await sched.backlog_counts()
            pending, finished = _pending(counts, lanes), _finished(counts, lanes)
            if baseline is None:
                baseline = finished
            tally.done = max(tally.done, finished - baseline)
            tally.total = max(tally.done + pending, tally.total)
            if pending == 0:
                tally.empty = True
                return
            progress.update(tally.done, tally.total)
            await asyncio.sleep(_POLL)

    await Worker(sched, lanes, watch=until_empty).run()
    progress.update(tally.done, tally.total, final=True)
    if not tally.empty:
        left = tally.total - tally.done
        message = f"stopped by a signal with about {left} jobs left"
        raise CommandError(message, exit_code=EXIT_FAILURE)
    return 0
