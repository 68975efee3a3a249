"""``floodgate worker``: drain the backlog until SIGTERM, optionally serving the admin API."""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
from typing import Any, NamedTuple

from scheduler import ConfigError, Scheduler

from ..admin_client import TOKEN_ENV, TOKEN_FILE_ENV, add_token_args
from ..admin_server import DEFAULT_ADMIN, UvicornServer, bind_socket, parse_bind, read_token_file
from ..app_loader import load_scheduler, set_backlog
from ..errors import EXIT_USAGE, CommandError
from ..logging_setup import LEVELS, get_logger, logging_configured
from ..run import Worker

__all__ = ["add_run_args", "admin_token", "pick_lanes", "register", "run"]


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
    add_token_args(
        parser,
        file_help="read the admin API's bearer token (16+ characters) from this file, so it "
        f"does not show in ps (default: ${TOKEN_FILE_ENV}, else ${TOKEN_ENV}); changes "
        "need it, and on a non-loopback address every endpoint but /healthz and /readyz "
        "does; without a token the admin API is read-only and binds loopback only",
        token_help=f"the token itself (visible in ps: prefer --admin-token-file or ${TOKEN_ENV})",
    )
    parser.add_argument(
        "--admin-allowed-host",
        metavar="HOST[:PORT]",
        action="append",
        default=[],
        help="a Host header the admin API answers besides its bind address (repeatable; "
        "no port: any port), e.g. the name a proxy or tunnel uses; a non-loopback name "
        "needs a token. Other Hosts get 421 (this defeats DNS rebinding)",
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
        if not 0 <= args.grace < float("inf"):  # NaN fails both
            raise CommandError(
                f"--grace must be a finite number >= 0 (seconds), got {args.grace}",
                exit_code=EXIT_USAGE,
            )
        sched.shutdown_grace = args.grace
    return sched, lanes


def admin_token(args: argparse.Namespace) -> str | None:
    """The admin token from ``--admin-token-file``, ``--admin-token``,
    ``$FLOODGATE_ADMIN_TOKEN_FILE`` or ``$FLOODGATE_ADMIN_TOKEN`` (the first given), checked:
    ``CommandError`` (exit 2) if it is weak, unreadable or given twice."""
    from scheduler.asgi.access import check_token

    if args.admin_token and args.admin_token_file:
        raise CommandError(
            "give --admin-token or --admin-token-file, not both", exit_code=EXIT_USAGE
        )
    env_file, env_token = os.environ.get(TOKEN_FILE_ENV), os.environ.get(TOKEN_ENV)
    if args.admin_token_file:
        source = f"--admin-token-file {args.admin_token_file}"
        token = read_token_file(args.admin_token_file, "--admin-token-file")
    elif args.admin_token:
        source, token = "--admin-token", args.admin_token
        get_logger().warning(
            "worker.admin_token_visible",
            hint=f"--admin-token shows in ps; use --admin-token-file or ${TOKEN_ENV}",
        )
    elif env_file and env_token:
        raise CommandError(f"set ${TOKEN_FILE_ENV} or ${TOKEN_ENV}, not both", exit_code=EXIT_USAGE)
    elif env_file:
        source, token = (
            f"${TOKEN_FILE_ENV} ({env_file})",
            read_token_file(env_file, f"${TOKEN_FILE_ENV}"),
        )
    elif env_token:
        source, token = f"${TOKEN_ENV}", env_token
    else:
        return None
    try:
        return check_token(token, source=f"the admin token from {source}")
    except ConfigError as exc:
        raise CommandError(str(exc), exit_code=EXIT_USAGE) from None


def run(args: argparse.Namespace) -> int:
    with logging_configured(args.log_level):
        sched, lanes = prepare(args)
        sock, admin = None, None
        if args.admin is not None:
            from scheduler.asgi.access import HostPolicy

            host, port = parse_bind(args.admin)
            token = admin_token(args)
            try:
                policy = HostPolicy.build((host, port), args.admin_allowed_host)
            except ConfigError as exc:
                raise CommandError(f"--admin-allowed-host: {exc}", exit_code=EXIT_USAGE) from None
            if policy.public and token is None:
                raise CommandError(
                    f"--admin {args.admin}: {policy.reason}, so it needs --admin-token-file PATH "
                    f"(or ${TOKEN_ENV}, or --admin-token); without a token the admin API "
                    "serves loopback only",
                    exit_code=EXIT_USAGE,
                )
            sock = bind_socket(host, port)
            admin = _AdminConfig(
                token, (host, sock.getsockname()[1]), tuple(args.admin_allowed_host)
            )
        return asyncio.run(_work(sched, lanes, sock, admin))


class _AdminConfig(NamedTuple):
    token: str | None
    bind: tuple[str, int]
    allowed_hosts: tuple[str, ...]


async def _work(
    sched: Scheduler,
    lanes: tuple[str, ...],
    sock: socket.socket | None,
    config: _AdminConfig | None,
) -> int:
    admin = None
    if sock is not None and config is not None:
        from scheduler.asgi import admin_app  # starlette and prometheus only when serving

        app = admin_app(
            sched, token=config.token, bind=config.bind, allowed_hosts=config.allowed_hosts
        )
        admin = UvicornServer(app, sock)
    try:
        await Worker(sched, lanes, admin=admin).run()
    finally:
        if admin is not None:
            await admin.stop()
    return 0
