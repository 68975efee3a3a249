"""The ``--repeat`` summary: each run's figures across the drills, as markdown.

Only what the drills measured goes in: per run (``Floodgate defaults``,
``naive``, ...) and per figure of :data:`~workers.drill.targets.FIGURES`, the
median, min and max over the drills that gave a value; then, per Floodgate
run and target, in how many drills it passed.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from .report import Report, table, verdict_word
from .targets import FIGURES

__all__ = ["format_figure", "summarize"]


def format_figure(value: float, kind: str) -> str:
    """A figure as the report writes it: ``12``, ``0.41s``, ``93.5%``."""
    if math.isinf(value):
        return "miss" if kind == "seconds" else "inf"
    if kind == "seconds":
        return f"{value:.2f}s"
    if kind == "share":
        return f"{value:.1%}"
    return f"{value:,.0f}" if value == int(value) else f"{value:,.1f}"


def summarize(reports: Sequence[Report]) -> str:
    """Markdown: the figures' median/min/max per run, and the verdicts' pass counts."""
    if not reports:
        return "no drill ran\n"
    profile = reports[0].profile
    n = len(reports)
    labels = list(dict.fromkeys(m.label for r in reports for m in r.measures))
    rows: list[list[str]] = []
    for label in labels:
        figures = [m.figures() for r in reports for m in r.measures if m.label == label]
        for key, title, kind in FIGURES:
            values = [x for f in figures if (x := f.get(key)) is not None]
            if not values:
                rows.append([label, title, "n/a", "n/a", "n/a", f"0 of {n}"])
                continue
            rows.append(
                [
                    label,
                    title,
                    format_figure(statistics.median(values), kind),
                    format_figure(min(values), kind),
                    format_figure(max(values), kind),
                    f"{len(values)} of {n}",
                ]
            )
    verdict_rows: list[list[str]] = []
    first = reports[0].verdicts
    for v in first:
        same = [w for r in reports for w in r.verdicts if w.key == v.key and w.run == v.run]
        words = [verdict_word(w.passed) for w in same]
        verdict_rows.append(
            [
                v.run,
                v.name,
                "yes" if v.judged else "no (information)",
                f"{words.count('PASS')} of {len(same)}",
                f"{words.count('n/a')}",
            ]
        )
    parts = [
        f"# Floodgate outage drill ({profile.name}) x {n}: summary",
        f"{n} drills, one after another, each playing every run below against a fresh "
        "upstream and a fresh backlog; each drill's report is in run-N/report.md.",
        "## Figures (median, min and max over the drills that gave a value)",
        table(["run", "figure", "median", "min", "max", "drills"], rows, markdown=True),
        "## Targets (how many drills each Floodgate run passed)",
        table(
            ["run", "target", "judged in this profile", "PASS", "n/a"],
            verdict_rows,
            markdown=True,
        ),
    ]
    return "\n\n".join(parts) + "\n"
