"""The admin token's options, one spelling for every command, and reading a worker's
admin API from the command line (``floodgate pause``/``resume``/``status``).

Every command takes ``--admin-token-file PATH`` and ``--admin-token TOKEN``
(else ``$FLOODGATE_ADMIN_TOKEN_FILE``, then ``$FLOODGATE_ADMIN_TOKEN``). The
names ``--token-file`` and ``--token`` that ``pause``/``resume`` used before
still work, hidden from ``--help``.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import httpx

from .admin_server import DEFAULT_ADMIN, read_token_file
from .errors import EXIT_USAGE, CommandError

__all__ = [
    "TOKEN_ENV",
    "TOKEN_FILE_ENV",
    "URL_ENV",
    "add_admin_url_arg",
    "add_token_args",
    "admin_base",
    "get_status",
    "given_token",
]

URL_ENV = "FLOODGATE_ADMIN_URL"
TOKEN_ENV = "FLOODGATE_ADMIN_TOKEN"
TOKEN_FILE_ENV = "FLOODGATE_ADMIN_TOKEN_FILE"


def add_token_args(parser: argparse.ArgumentParser, *, file_help: str, token_help: str) -> None:
    """``--admin-token-file`` and ``--admin-token``, with the old ``--token-file`` and
    ``--token`` as hidden aliases (same destinations)."""
    parser.add_argument("--admin-token-file", metavar="PATH", help=file_help)
    parser.add_argument("--admin-token", metavar="TOKEN", help=token_help)
    parser.add_argument("--token-file", dest="admin_token_file", help=argparse.SUPPRESS)
    parser.add_argument("--token", dest="admin_token", help=argparse.SUPPRESS)


def add_admin_url_arg(parser: argparse.ArgumentParser, *, what: str) -> None:
    """``--admin URL``: a running worker's admin API (default ``$FLOODGATE_ADMIN_URL``)."""
    parser.add_argument(
        "--admin",
        metavar="URL",
        default=os.environ.get(URL_ENV, f"http://{DEFAULT_ADMIN}"),
        help=f"{what} (default: ${URL_ENV} or http://{DEFAULT_ADMIN})",
    )


def given_token(args: argparse.Namespace) -> str | None:
    """The first given of ``--admin-token-file``, ``--admin-token``,
    ``$FLOODGATE_ADMIN_TOKEN_FILE`` and ``$FLOODGATE_ADMIN_TOKEN``; ``None`` if none is."""
    if args.admin_token_file:
        return read_token_file(args.admin_token_file, "--admin-token-file")
    if args.admin_token:
        return str(args.admin_token)
    if os.environ.get(TOKEN_FILE_ENV):
        return read_token_file(os.environ[TOKEN_FILE_ENV], f"${TOKEN_FILE_ENV}")
    return os.environ.get(TOKEN_ENV) or None


def admin_base(args: argparse.Namespace) -> str:
    """``--admin`` as a base URL (``http://`` added to a bare ``HOST:PORT``)."""
    text = str(args.admin)
    return (text if "://" in text else f"http://{text}").rstrip("/")


def get_status(args: argparse.Namespace, *, timeout: float) -> dict[str, Any]:
    """``GET /api/status`` of the worker at ``--admin`` (with the token if one is given).
    ``CommandError`` saying why when it cannot be read."""
    base = admin_base(args)
    token = given_token(args)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        response = httpx.get(f"{base}/api/status", headers=headers, timeout=timeout)
    except httpx.InvalidURL as exc:
        message = f"--admin {base} is not a usable URL: {exc}"
        raise CommandError(message, exit_code=EXIT_USAGE) from None
    except httpx.HTTPError as exc:
        raise CommandError(f"no admin API answering at {base} ({type(exc).__name__})") from None
    if response.status_code != 200:
        raise CommandError(f"{base}/api/status answered {response.status_code}")
    try:
        body = response.json()
    except ValueError:
        raise CommandError(f"{base}/api/status did not answer JSON") from None
    if not isinstance(body, dict):
        raise CommandError(f"{base}/api/status did not answer an object")
    return body
