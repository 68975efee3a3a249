"""The ``floodgate`` command line.

The worker, status, jobs and drill sub-commands arrive with their issues; this
release answers ``--version`` and ``--help``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from importlib import metadata

__all__ = ["main"]


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="floodgate",
        description="Floodgate: a job scheduler with bounded lanes for fragile upstreams.",
        epilog="Try the quickstart: python examples/quickstart.py",
    )
    parser.add_argument("--version", action="version", version=_version())
    return parser


def _version() -> str:
    try:
        return f"floodgate {metadata.version('floodgate')}"
    except metadata.PackageNotFoundError:  # running from a source tree
        return "floodgate (not installed)"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``floodgate`` console script; returns the exit code."""
    parser = _build_parser()
    parser.parse_args(argv)
    parser.print_help()
    return 0
