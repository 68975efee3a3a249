"""``python -m benchmarks``: run every benchmark (or those named by ``--only``)."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from collections.abc import Callable, Sequence

from . import __doc__ as package_doc
from ._common import (
    FULL_RUN_PARTS,
    FULL_RUN_TIME,
    QUICK_RUN_TIME,
    Options,
    Outcome,
    add_common_arguments,
    options_from,
    run_benchmarks,
)

#: every benchmark (its module in this package), in the order a full run goes through them
BENCHMARKS = (
    "overhead",
    "head_of_line",
    "durable",
    "postgres",
    "pacing",
    "fleet",
    "tenants",
    "tenants_durable",
    "tenants_postgres",
)

#: what each benchmark imports from the ``bench`` extra (module -> distribution)
BENCH_MODULES = {
    "durable": {"huey": "huey", "persistqueue": "persist-queue", "psutil": "psutil"},
    "postgres": {"procrastinate": "procrastinate", "pgqueuer": "pgqueuer", "asyncpg": "asyncpg"},
}
INSTALL_HINT = ".venv/bin/pip install -e '.[bench]'"


def missing_bench_modules(names: Sequence[str]) -> list[str]:
    """Distributions of the ``bench`` extra that the named benchmarks need and that are
    not installed."""
    return [
        dist
        for name in names
        for module, dist in BENCH_MODULES.get(name, {}).items()
        if importlib.util.find_spec(module) is None
    ]


def load(names: Sequence[str]) -> dict[str, Callable[[Options], Outcome]]:
    """Each named benchmark's ``run``, imported only now (the peers it measures against
    come from the ``bench`` extra)."""
    return {name: importlib.import_module(f"{__package__}.{name}").run for name in names}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=package_doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"How long, on two cores: a full run {FULL_RUN_TIME} ({FULL_RUN_PARTS} min); "
        f"--quick {QUICK_RUN_TIME}.",
    )
    add_common_arguments(parser)
    parser.add_argument(
        "--only",
        action="append",
        choices=BENCHMARKS,
        metavar="NAME",
        help=f"run only this benchmark (repeatable); one of: {', '.join(BENCHMARKS)}",
    )
    args = parser.parse_args(argv)
    options = options_from(args, parser)
    names: list[str] = args.only or list(BENCHMARKS)
    missing = missing_bench_modules(names)
    if missing:
        print(
            f"python -m benchmarks: the benchmarks need the 'bench' extra "
            f"(missing: {', '.join(missing)}); install it with: {INSTALL_HINT}",
            file=sys.stderr,
        )
        return 2
    return run_benchmarks(load(names), options)


if __name__ == "__main__":
    raise SystemExit(main())
