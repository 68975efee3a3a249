"""``floodgate pause`` / ``floodgate resume``: the gate of a running worker, via its admin API.

The gate is the manual switch in front of gated (batch) lanes. It lives in
the worker's memory, not in the backlog file, so these commands talk to the
worker's admin API (``floodgate worker --admin HOST:PORT --admin-token T``).
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import httpx

from ..admin_server import DEFAULT_ADMIN
from ..errors import CommandError

__all__ = ["register"]

URL_ENV = "FLOODGATE_ADMIN_URL"
TOKEN_ENV = "FLOODGATE_ADMIN_TOKEN"
_HOW = (
    "Acts on a running worker through its admin API: start it with "
    "'floodgate worker --admin HOST:PORT --admin-token TOKEN' and give the same "
    f"address and token here (or set ${URL_ENV} and ${TOKEN_ENV})."
)


def register(subparsers: Any) -> None:
    pause = subparsers.add_parser(
        "pause",
        help="pause the gated lanes of a running worker (admin API)",
        description="Close the gate: gated lanes start nothing new until resumed; running "
        "jobs finish. " + _HOW,
    )
    pause.add_argument("--reason", default="paused from the command line", help="shown in stats")
    _add_admin_args(pause)
    pause.set_defaults(handler=_pause)
    resume = subparsers.add_parser(
        "resume",
        help="resume the gated lanes of a running worker (admin API)",
        description="Reopen the gate: waiting gated work starts at once. " + _HOW,
    )
    _add_admin_args(resume)
    resume.set_defaults(handler=_resume)


def _add_admin_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--admin",
        metavar="URL",
        default=os.environ.get(URL_ENV, f"http://{DEFAULT_ADMIN}"),
        help=f"the worker's admin API (default: ${URL_ENV} or http://{DEFAULT_ADMIN})",
    )
    parser.add_argument(
        "--token", default=os.environ.get(TOKEN_ENV), help=f"its token (default: ${TOKEN_ENV})"
    )


def _pause(args: argparse.Namespace) -> int:
    return _post(args, "api/gate/pause", {"reason": args.reason})


def _resume(args: argparse.Namespace) -> int:
    return _post(args, "api/gate/resume", None)


def _post(args: argparse.Namespace, path: str, body: dict[str, str] | None) -> int:
    base = args.admin if "://" in args.admin else f"http://{args.admin}"
    url = base.rstrip("/") + "/" + path
    if not args.token:
        raise CommandError(f"changing the gate needs the admin token: give --token or ${TOKEN_ENV}")
    headers = {"Authorization": f"Bearer {args.token}"}
    try:
        response = httpx.post(url, json=body, headers=headers, timeout=10.0)
    except httpx.HTTPError as exc:
        raise CommandError(
            f"no admin API answering at {base} ({exc}); is the worker running with --admin?"
        ) from None
    if response.status_code == 401:
        raise CommandError(f"{base} refused the token (check --token / ${TOKEN_ENV})")
    if response.status_code == 403:
        raise CommandError(f"{base} is read-only: start the worker with --admin-token")
    if response.status_code != 200:
        raise CommandError(f"{url} answered {response.status_code}: {response.text[:200]}")
    gate = response.json()["gate"]
    print("gate open" if gate["open"] else f"gate paused: {gate['reason']}")
    return 0
