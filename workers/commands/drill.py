"""``floodgate drill``: replay a provider outage against a local upstream.

Runs Floodgate (each variant the profile lists: tuned, defaults, rpm) and a
naive client (semaphore + blind retries) through the same script and reports
the targets; see ``workers/drill``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["register"]


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "drill",
        help="the outage drill: Floodgate vs a naive client against a local flaky upstream",
        description="Replay an LLM-provider incident (normal, outage, degraded, recovery) "
        "against a real upstream on 127.0.0.1, through Floodgate (its defaults, and tuned or "
        "with an rpm setting) and a naive client, then print the report and write a PNG "
        "timeline. Options are those of 'python -m workers.drill' (--quick, --profile "
        "full|quick|smoke|blip|blip-short, --out, --backlog, --repeat N, --strict).",
    )
    # workers.cli.main hands "floodgate drill ..." straight to workers.drill.run_drill;
    # this parser only lists the command in "floodgate --help".
    parser.set_defaults(handler=lambda _args: 0)
