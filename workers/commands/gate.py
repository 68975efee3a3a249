"""``floodgate pause`` / ``floodgate resume``: the gate of a running worker, or of the fleet.

The gate is the manual switch in front of gated (batch) lanes. One worker's
gate lives in its memory, so without ``--fleet`` these commands talk to the
worker's admin API (``floodgate worker --admin HOST:PORT --admin-token-file PATH``;
here ``--admin URL --admin-token-file PATH``, the same option names).
With ``--fleet`` the pause is written to the backlog itself (who and why), and
every process sharing it pauses within about a second (:mod:`scheduler.fleet`).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import socket
import time
from typing import Any

import httpx

from scheduler.fleet import OperatorPause
from scheduler.fleet_stores import fleet_store_for

from ..admin_client import (
    TOKEN_ENV,
    TOKEN_FILE_ENV,
    URL_ENV,
    add_admin_url_arg,
    add_token_args,
    admin_base,
    given_token,
)
from ..backlog_access import add_backlog_args, display, open_backlog, resolve_backlog
from ..errors import CommandError
from ..textsafe import printable

__all__ = ["register"]

_HOW = (
    "Acts on a running worker through its admin API: start it with "
    "'floodgate worker --admin HOST:PORT --admin-token-file PATH' and give the same "
    f"address and token here (or set ${URL_ENV} and ${TOKEN_FILE_ENV} or ${TOKEN_ENV})."
)


def register(subparsers: Any) -> None:
    pause = subparsers.add_parser(
        "pause",
        help="pause the gated lanes of a running worker (admin API)",
        description="Close the gate: gated lanes start nothing new until resumed; running "
        "jobs finish. " + _HOW,
    )
    pause.add_argument("--reason", default="paused from the command line", help="shown in stats")
    _add_fleet_args(pause)
    _add_admin_args(pause)
    pause.set_defaults(handler=_pause)
    resume = subparsers.add_parser(
        "resume",
        help="resume the gated lanes of a running worker (admin API)",
        description="Reopen the gate: waiting gated work starts at once. " + _HOW,
    )
    _add_fleet_args(resume)
    _add_admin_args(resume)
    resume.set_defaults(handler=_resume)


def _add_fleet_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--fleet",
        action="store_true",
        help="every process sharing the backlog, not one worker: written to the backlog "
        "(--backlog / --app), no admin API needed; seen by all within about a second",
    )
    add_backlog_args(parser)


def _add_admin_args(parser: argparse.ArgumentParser) -> None:
    add_admin_url_arg(parser, what="the worker's admin API")
    add_token_args(
        parser,
        file_help=f"read its token from this file, out of ps (default: ${TOKEN_FILE_ENV}, "
        f"else ${TOKEN_ENV})",
        token_help="its token (visible in ps: prefer --admin-token-file)",
    )


def _pause(args: argparse.Namespace) -> int:
    if args.fleet:
        if not args.reason.strip():
            raise CommandError("--reason must not be empty", exit_code=2)
        by = f"{getpass.getuser()}@{socket.gethostname()} (floodgate pause)"
        return asyncio.run(_set_fleet(args, OperatorPause(args.reason, by, time.time())))
    return _post(args, "api/gate/pause", {"reason": args.reason})


def _resume(args: argparse.Namespace) -> int:
    if args.fleet:
        return asyncio.run(_set_fleet(args, None))
    return _post(args, "api/gate/resume", None)


async def _set_fleet(args: argparse.Namespace, pause: OperatorPause | None) -> int:
    target, _ = resolve_backlog(args)
    async with open_backlog(target) as backlog:
        store = fleet_store_for(backlog)
        if store is None:
            raise CommandError(f"the backlog {display(target)!r} is not shared: no fleet to pause")
        try:
            await store.set_operator(pause)
        except Exception as exc:
            message = f"cannot write the fleet pause to {display(target)!r}: {exc}"
            raise CommandError(message) from None
        finally:
            await store.close()
    if pause is None:
        print(f"fleet gate resumed ({display(target)})")
    else:
        print(f"fleet gate paused: {printable(pause.reason)} ({display(target)})")
    return 0


def _token(args: argparse.Namespace) -> str:
    token = given_token(args)
    if token is None:
        raise CommandError(
            "changing the gate needs the admin token: give --admin-token-file, "
            f"--admin-token or ${TOKEN_ENV}"
        )
    return token


def _post(args: argparse.Namespace, path: str, body: dict[str, str] | None) -> int:
    base = admin_base(args)
    url = base + "/" + path
    token = _token(args)
    headers = {"Authorization": f"Bearer {token}"}
    try:
        response = httpx.post(url, json=body, headers=headers, timeout=10.0)
    except httpx.InvalidURL as exc:
        raise CommandError(f"--admin {base} is not a usable URL: {exc}", exit_code=2) from None
    except httpx.HTTPError as exc:
        raise CommandError(
            f"no admin API answering at {base} ({exc}); is the worker running with --admin?"
        ) from None
    if response.status_code == 401:
        raise CommandError(f"{base} refused the token (check --admin-token-file / ${TOKEN_ENV})")
    if response.status_code == 403:
        raise CommandError(f"{base} is read-only: start the worker with --admin-token-file")
    if response.status_code == 421:
        raise CommandError(f"{base} does not answer that name: {response.text[:300]}")
    if response.status_code != 200:
        raise CommandError(f"{url} answered {response.status_code}: {response.text[:200]}")
    gate = response.json()["gate"]
    print("gate open" if gate["open"] else f"gate paused: {printable(str(gate['reason']))}")
    return 0
