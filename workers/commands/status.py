"""``floodgate status``: lanes and backlog counts, read straight from the backlog file,
and the gate: a fleet-wide pause from the backlog, one worker's gate from its admin API."""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Mapping
from typing import Any

from scheduler import Scheduler
from scheduler.fleet import OperatorPause
from scheduler.fleet_stores import fleet_store_for, read_sqlite_operator

from ..admin_client import TOKEN_ENV, add_admin_url_arg, add_token_args, admin_base, get_status
from ..backlog_access import add_backlog_args, display, open_backlog, resolve_backlog
from ..errors import CommandError
from ..textsafe import printable

__all__ = ["format_status", "format_worker_gate", "register", "run"]

_STATES = ("queued", "running", "done", "dead", "cancelled")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "status",
        help="lanes and backlog counts (no running worker needed)",
        description="Read the backlog (no running worker needed) and print jobs per lane "
        "and state. "
        "With --app the lanes' ceilings and flags come from your Scheduler. "
        "Then the gate: a fleet-wide pause (from the backlog) and the gate of the worker "
        "whose admin API --admin names, if one answers there.",
    )
    add_backlog_args(parser)
    add_admin_url_arg(parser, what="ask this worker's admin API for its gate")
    add_token_args(
        parser,
        file_help="its admin token, needed only on a non-loopback address (default: "
        f"$FLOODGATE_ADMIN_TOKEN_FILE, else ${TOKEN_ENV})",
        token_help="the token itself (visible in ps: prefer --admin-token-file)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    path, sched = resolve_backlog(args)
    counts = asyncio.run(_counts(path))
    print(format_status(path, counts, sched))
    pause = asyncio.run(_fleet_pause(path))
    try:
        worker: dict[str, Any] | None = get_status(args, timeout=_ADMIN_TIMEOUT)
        unanswered = ""
    except CommandError as exc:
        worker, unanswered = None, exc.message
    fleet_paused = pause is not None or bool(
        worker is not None and (worker.get("fleet") or {}).get("paused_reason")
    )
    if pause is not None:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(pause.at))
        print(
            f"fleet gate PAUSED since {when}: {printable(pause.reason)} "
            f"(by {printable(pause.by)}; floodgate resume --fleet ends it)"
        )
    elif worker is not None and (worker.get("fleet") or {}).get("paused_reason"):
        fleet = worker["fleet"]
        print(
            f"fleet gate PAUSED: {printable(str(fleet['paused_reason']))} "
            f"(by {printable(str(fleet.get('paused_by')))}; floodgate resume --fleet ends it)"
        )
    print(format_worker_gate(admin_base(args), worker, unanswered, fleet_paused=fleet_paused))
    return 0


#: how long ``status`` waits for a worker's admin API
_ADMIN_TIMEOUT = 2.0


def format_worker_gate(
    base: str, status: Mapping[str, Any] | None, unanswered: str, *, fleet_paused: bool = False
) -> str:
    """The line about one worker's gate, from its ``/api/status`` (``None``: no answer)."""
    where = printable(base)
    if status is None:
        return f"worker gate: not known ({printable(unanswered)}; --admin URL names a worker)"
    gate = status.get("gate") or {}
    if gate.get("open", True):
        return f"worker gate ({where}): open"
    reason = printable(str(gate.get("reason") or "no reason given"))
    how = "the fleet pause above" if fleet_paused else f"floodgate resume --admin {where} ends it"
    return f"worker gate ({where}): PAUSED: {reason} ({how})"


async def _fleet_pause(path: str) -> OperatorPause | None:
    """The fleet-wide operator pause, read without writing (a failure: not shown)."""
    try:
        if not path.startswith(("postgres://", "postgresql://")):
            return await asyncio.to_thread(read_sqlite_operator, path)
        async with open_backlog(path) as backlog:
            store = fleet_store_for(backlog)
            if store is None:
                return None
            try:
                return await store.operator()
            finally:
                await store.close()
    except Exception:  # the counts above are what status is for
        return None


async def _counts(path: str) -> dict[str, dict[str, int]]:
    async with open_backlog(path, read_only=True) as backlog:
        return await backlog.counts()


def format_status(
    path: str, counts: Mapping[str, Mapping[str, int]], sched: Scheduler | None = None
) -> str:
    """The table ``floodgate status`` prints (control characters in names escaped)."""
    configs = {lane.name: lane for lane in sched.lanes} if sched is not None else {}
    names = [n for n, lane in configs.items() if lane.durable or n in counts]
    names += sorted(set(counts) - set(names))
    header = f"{'lane':<14}" + "".join(f"{s:>10}" for s in _STATES) + f"{'ceiling':>9}  flags"
    rows = [f"backlog {printable(display(path))}", header, "-" * len(header)]
    for name in names:
        lane = configs.get(name)
        ceiling = str(lane.max_concurrency) if lane is not None else "-"
        flags = ""
        if lane is not None:
            flags = ", ".join(
                flag for flag, on in (("durable", lane.durable), ("gated", lane.gated)) if on
            )
        cells = "".join(f"{counts.get(name, {}).get(s, 0):>10}" for s in _STATES)
        rows.append(f"{printable(name):<14}{cells}{ceiling:>9}  {flags}".rstrip())
    if not names:
        rows.append("(no jobs)")
    totals = {s: sum(c.get(s, 0) for c in counts.values()) for s in _STATES}
    rows.append("total " + ", ".join(f"{s} {n}" for s, n in totals.items()))
    for periodic in sched.stats().periodic if sched is not None else ():
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(periodic.next_run))
        rows.append(
            f"periodic {printable(periodic.task)} ({printable(periodic.schedule)}, "
            f"lane {printable(periodic.lane)}): next {when}"
        )
    return "\n".join(rows)
