"""``python -m benchmarks``: run every benchmark (or those named by ``--only``)."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

from . import __doc__ as package_doc
from . import durable, fleet, head_of_line, overhead, pacing, postgres
from ._common import Options, Outcome, add_common_arguments, options_from, progress, verdict

#: every benchmark, in the order a full run goes through them
BENCHMARKS: dict[str, Callable[[Options], Outcome]] = {
    overhead.NAME: overhead.run,
    head_of_line.NAME: head_of_line.run,
    durable.NAME: durable.run,
    postgres.NAME: postgres.run,
    pacing.NAME: pacing.run,
    fleet.NAME: fleet.run,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=package_doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_common_arguments(parser)
    parser.add_argument(
        "--only",
        action="append",
        choices=tuple(BENCHMARKS),
        metavar="NAME",
        help=f"run only this benchmark (repeatable); one of: {', '.join(BENCHMARKS)}",
    )
    args = parser.parse_args(argv)
    options = options_from(args)
    names: list[str] = args.only or list(BENCHMARKS)
    outcomes = [BENCHMARKS[name](options) for name in names]
    for outcome in outcomes:
        progress(f"{verdict(outcome.passed)} {outcome.name}: {outcome.summary} -> {outcome.report}")
    return 0 if all(o.passed for o in outcomes) else 1


if __name__ == "__main__":
    raise SystemExit(main())
