"""Opening the backlog for the read and repair commands (status, jobs).

They need no running worker: they open the backlog directly (a SQLite file
in WAL mode can be read while workers write to it; a ``postgresql://`` DSN
works the same way). The target comes from ``--backlog``, or from the
scheduler that ``--app`` names, or defaults to ``floodgate.db``; a missing
SQLite file is an error rather than a new empty backlog. The commands that
only read (status, jobs list, jobs show) open a SQLite file read-only: no
migration, no journal-mode switch, no write, so they work on a file (and in a
directory) they may not write.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

from scheduler import BacklogError, ConfigError, Scheduler
from scheduler.backlog import Backlog, SQLiteBacklog, make_backlog

from .app_loader import load_scheduler
from .errors import EXIT_FAILURE, EXIT_USAGE, CommandError

__all__ = ["add_backlog_args", "display", "open_backlog", "resolve_backlog"]

DEFAULT_BACKLOG = "floodgate.db"
_DSN = ("postgres://", "postgresql://")


def add_backlog_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--backlog",
        metavar="PATH",
        help=f"the SQLite backlog file or a postgresql:// DSN (default: {DEFAULT_BACKLOG})",
    )
    parser.add_argument(
        "--app",
        metavar="MODULE:ATTR",
        help="take the backlog (and lane settings) from this Scheduler, e.g. myapp:sched",
    )


def display(target: str) -> str:
    """``target`` fit to print: a file's absolute path, a DSN without its password."""
    if not target.startswith(_DSN):
        return os.path.abspath(target)
    parts = urlsplit(target)
    if parts.password is None:
        return target
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def resolve_backlog(args: argparse.Namespace) -> tuple[str, Scheduler | None]:
    """The backlog target (an existing file, or a DSN) and, with ``--app``, its scheduler."""
    sched = load_scheduler(args.app) if args.app else None
    target: str = args.backlog or (sched.backlog if sched is not None else DEFAULT_BACKLOG)
    if target == ":memory:":
        raise CommandError("the backlog is ':memory:': nothing to read from outside the process")
    if not target.startswith(_DSN) and not os.path.exists(target):
        raise CommandError(
            f"no backlog at {display(target)!r} (give --backlog PATH or --app MODULE:ATTR)"
        )
    return target, sched


@contextlib.asynccontextmanager
async def open_backlog(target: str, *, read_only: bool = False) -> AsyncIterator[Backlog]:
    """The backlog at ``target``; ``CommandError`` naming it if it cannot be read.

    ``read_only``: a SQLite file is opened read-only (a DSN as usual).
    """
    try:
        if read_only and not target.startswith(_DSN):
            backlog: Backlog = SQLiteBacklog(target, read_only=True)
        else:
            backlog = make_backlog(target)
        await backlog.open()
    except ConfigError as exc:
        raise CommandError(str(exc), exit_code=EXIT_USAGE) from None
    except BacklogError as exc:
        message = f"cannot read the backlog {display(target)!r}: {exc}"
        raise CommandError(message, exit_code=EXIT_FAILURE) from None
    try:
        yield backlog
    finally:
        await backlog.close()
