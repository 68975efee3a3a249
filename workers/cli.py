"""The ``floodgate`` command line (also ``python -m workers``).

::

    floodgate worker  --app myapp:sched [--backlog PATH] [--lanes batch] [--admin 127.0.0.1:8765]
    floodgate status  [--backlog PATH | --app myapp:sched]
    floodgate jobs    list [--state dead] [--tenant X] | show ID | requeue ID|--all-dead
                      | cancel ID|--task T|--tenant X
    floodgate submit  TASK --args '[...]' --app myapp:sched
    floodgate pause   [--reason R] | resume      (a running worker, through its admin API)
    floodgate drain   --until-empty --app myapp:sched

Each sub-command lives in ``workers/commands/``. Errors the user can fix are
printed as one line (exit 2: the command line or the app is wrong; exit 1:
something failed at run time), without a traceback. Everything printed for
people has control characters escaped (``workers.textsafe``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib import metadata

from .commands import COMMANDS
from .errors import CommandError
from .textsafe import printable

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="floodgate",
        description="Floodgate: a job scheduler with bounded lanes for fragile upstreams.",
        epilog="Run 'floodgate COMMAND --help' for a command's options. "
        "Try the quickstart: python examples/quickstart.py",
    )
    parser.add_argument("--version", action="version", version=_version())
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        command.register(subparsers)
    return parser


def _version() -> str:
    try:
        return f"floodgate {metadata.version('floodgate')}"
    except metadata.PackageNotFoundError:  # running from a source tree
        return "floodgate (not installed)"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``floodgate`` console script; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["drill"]:  # the drill parses its own options, --help included
        from workers.drill import run_drill

        return run_drill(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 0
    try:
        code: int = handler(args)
    except CommandError as exc:
        if exc.detail:
            sys.stderr.write(printable(exc.detail.rstrip(), multiline=True) + "\n")
        print(f"floodgate {args.command}: error: {printable(exc.message)}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    return code
