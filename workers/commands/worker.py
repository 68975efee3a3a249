"""``floodgate worker``: drain the backlog until SIGTERM, optionally serving the admin API."""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
from typing import Any

from scheduler import Scheduler

from ..admin_server import DEFAULT_ADMIN, UvicornServer, bind_socket, is_loopback, parse_bind
from ..app_loader import load_scheduler, set_backlog
from ..errors import EXIT_USAGE, CommandError
from ..logging_setup import LEVELS, logging_configured
from ..run import Worker

__all__ = ["add_run_args", "pick_lanes", "register", "run"]

TOKEN_ENV = "FLOODGATE_ADMIN_TOKEN"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "worker",
        help="run the durable lanes of your scheduler until SIGTERM",
        description=(
            "Import your Scheduler (with its @sched.task functions) and drain its backlog. "
            "SIGTERM/SIGINT: stop claiming, let running jobs finish within --grace, release "
            "the leases of the rest, exit 0; a second signal cancels running jobs at once "
            "(their leases are still released)."
        ),
    )
    add_run_args(parser, log_default="info")
    parser.add_argument(
        "--admin",
        metavar="HOST:PORT",
        help=f"serve the admin API, /metrics and the dashboard there (e.g. {DEFAULT_ADMIN}); "
        "off unless given",
    )
    parser.add_argument(
        "--admin-token",
        metavar="TOKEN",
        default=os.environ.get(TOKEN_ENV),
        help=f"bearer token the admin API requires for changes (default: ${TOKEN_ENV}); "
        "without one the admin API is read-only and may bind only a loopback address",
    )
    parser.set_defaults(handler=run)


def add_run_args(parser: argparse.ArgumentParser, *, log_default: str) -> None:
    """The options of every command that runs lanes (worker, drain)."""
    parser.add_argument(
        "--app", required=True, metavar="MODULE:ATTR", help="your Scheduler, e.g. myapp.tasks:sched"
    )
    parser.add_argument(
        "--backlog",
        metavar="PATH",
        help="the backlog to drain instead of the scheduler's own (sets sched.backlog)",
    )
    parser.add_argument(
        "--lanes", metavar="LANE,...", help="lanes to run here (default: every durable lane)"
    )
    parser.add_argument(
        "--grace",
        type=float,
        metavar="SECONDS",
        help="how long running jobs may finish after a stop signal (default: the "
        "scheduler's shutdown_grace)",
    )
    parser.add_argument(
        "--log-level", choices=LEVELS, default=log_default, help=f"default: {log_default}"
    )


def pick_lanes(sched: Scheduler, text: str | None) -> tuple[str, ...]:
    """``--lanes a,b`` checked against the scheduler, or every durable lane."""
    known = [lane.name for lane in sched.lanes]
    if text is None:
        lanes = tuple(lane.name for lane in sched.lanes if lane.durable)
        if not lanes:
            raise CommandError(
                f"the scheduler has no durable lane to drain (lanes: {', '.join(known)}); "
                "give --lanes or add Lane(..., durable=True)",
                exit_code=EXIT_USAGE,
            )
        return lanes
    lanes = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in lanes if name not in known]
    if unknown or not lanes:
        raise CommandError(
            f"--lanes {text!r}: unknown lane {', '.join(unknown) or '(none given)'}; "
            f"this scheduler has {', '.join(known)}",
            exit_code=EXIT_USAGE,
        )
    return lanes


def prepare(args: argparse.Namespace) -> tuple[Scheduler, tuple[str, ...]]:
    """Load the app, apply ``--backlog`` and ``--grace``, pick the lanes."""
    sched = load_scheduler(args.app)
    set_backlog(sched, args.backlog)
    lanes = pick_lanes(sched, args.lanes)
    if args.grace is not None:
        if not args.grace >= 0:
            raise CommandError(
                f"--grace must be >= 0 seconds, got {args.grace}", exit_code=EXIT_USAGE
            )
        sched.shutdown_grace = args.grace
    return sched, lanes


def run(args: argparse.Namespace) -> int:
    with logging_configured(args.log_level):
        sched, lanes = prepare(args)
        sock = None
        if args.admin is not None:
            host, port = parse_bind(args.admin)
            if not is_loopback(host) and not args.admin_token:
                raise CommandError(
                    f"--admin {args.admin}: a non-loopback address needs --admin-token "
                    f"(or ${TOKEN_ENV}); without a token the admin API binds 127.0.0.1 only",
                    exit_code=EXIT_USAGE,
                )
            sock = bind_socket(host, port)
        return asyncio.run(_work(sched, lanes, sock, args.admin_token))


async def _work(
    sched: Scheduler, lanes: tuple[str, ...], sock: socket.socket | None, token: str | None
) -> int:
    admin = None
    if sock is not None:
        from scheduler.asgi import admin_app  # starlette and prometheus only when serving

        admin = UvicornServer(admin_app(sched, token=token), sock)
    try:
        await Worker(sched, lanes, admin=admin).run()
    finally:
        if admin is not None:
            await admin.stop()
    return 0
