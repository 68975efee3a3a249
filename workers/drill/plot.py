"""The drill's timeline: one PNG, one column per run (each Floodgate variant,
then the naive baseline), four stacked panels sharing the time axis:

1. queue depth per lane (jobs waiting for a seat; symlog scale);
2. in flight at the upstream per lane, with its cap (and Floodgate's adaptive
   limit when it reports one);
3. the gate (open / closed) and the upstream's breaker, as bands;
4. the upstream's answers per second by status code.

Phases are shaded behind every panel. Uses matplotlib's Agg canvas through
``matplotlib.figure.Figure``: no pyplot, no global backend state.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from .config import Profile
from .records import RunRecord, Sample

__all__ = ["plot_timeline", "status_rates"]

_PHASE_COLORS = {"outage": "#d62728", "degraded": "#ff7f0e", "recovery": "#2ca02c"}
_STATUS_COLORS = {"2xx": "#2ca02c", "429": "#ff7f0e", "500": "#9467bd", "503": "#d62728"}
_GATE_COLORS = {"open": "#2ca02c", "closed": "#d62728", "none": "#bbbbbb"}
_BREAKER_COLORS = {"closed": "#2ca02c", "half_open": "#ff7f0e", "open": "#d62728"}


def status_rates(run: RunRecord, bin_seconds: float) -> tuple[list[float], dict[str, list[float]]]:
    """Answers per second by status class in bins of ``bin_seconds``: (bin starts, rates)."""
    bins = max(1, int(run.end / bin_seconds + 0.999))
    rates = {key: [0.0] * bins for key in _STATUS_COLORS}
    for r in run.requests:
        key = "2xx" if 200 <= r.status < 300 else str(r.status)
        i = int(r.t / bin_seconds)
        if key in rates and 0 <= i < bins:
            rates[key][i] += 1.0 / bin_seconds
    return [i * bin_seconds for i in range(bins)], rates


def _bands(samples: Sequence[Sample], state_of: Any) -> dict[str, list[tuple[float, float]]]:
    """Consecutive samples with the same state, as (start, width) runs per state."""
    runs: dict[str, list[tuple[float, float]]] = {}
    for a, b in itertools.pairwise(samples):
        state = state_of(a)
        if state is None:
            continue
        spans = runs.setdefault(state, [])
        if spans and abs(spans[-1][0] + spans[-1][1] - a.t) < 1e-9:
            spans[-1] = (spans[-1][0], spans[-1][1] + (b.t - a.t))
        else:
            spans.append((a.t, b.t - a.t))
    return runs


def _shade(ax: Any, run: RunRecord, label: bool) -> None:
    for span in run.spans:
        color = _PHASE_COLORS.get(span.name)
        if color is not None:
            ax.axvspan(span.start, span.end, color=color, alpha=0.08, lw=0)
        if label:
            ax.text(
                (span.start + span.end) / 2,
                1.02,
                span.name,
                transform=ax.get_xaxis_transform(),
                ha="center",
                va="bottom",
                fontsize=8,
            )


def _column(axes: Sequence[Any], run: RunRecord, profile: Profile, title: str) -> None:
    ts = [s.t for s in run.samples]
    q_ax, f_ax, g_ax, s_ax = axes
    for i, ax in enumerate(axes):
        _shade(ax, run, label=i == 0)
        ax.set_xlim(0, run.end)
        ax.grid(alpha=0.3, lw=0.5)
    q_ax.set_title(title, pad=16)
    q_ax.plot(ts, [s.queued_batch for s in run.samples], label="batch", color="#1f77b4")
    q_ax.plot(ts, [s.queued_interactive for s in run.samples], label="interactive", color="#e377c2")
    q_ax.set_yscale("symlog", linthresh=10)
    q_ax.set_ylabel("queued jobs")
    q_ax.legend(loc="upper right", fontsize=7)

    f_ax.stackplot(
        ts,
        [s.in_flight_interactive for s in run.samples],
        [s.in_flight_batch for s in run.samples],
        labels=["interactive", "batch"],
        colors=["#e377c2", "#1f77b4"],
        alpha=0.8,
    )
    f_ax.axhline(profile.upstream.max_in_flight, color="black", ls="--", lw=0.8, label="cap")
    limits = [(s.t, s.concurrency_limit) for s in run.samples if s.concurrency_limit is not None]
    if limits:
        f_ax.step(
            [t for t, _ in limits],
            [v for _, v in limits],
            where="post",
            color="black",
            lw=1.0,
            label="Floodgate adaptive limit",
        )
    f_ax.set_ylabel("in flight (upstream)")
    f_ax.legend(loc="upper right", fontsize=7)

    rows = ((lambda s: s.gate, _GATE_COLORS), (lambda s: s.breaker, _BREAKER_COLORS))
    for y, (state_of, colors) in enumerate(rows):
        for state, spans in _bands(run.samples, state_of).items():
            g_ax.broken_barh(spans, (y + 0.1, 0.8), facecolors=colors.get(state, "#7f7f7f"))
    reasons = _bands(run.samples, lambda s: s.gate_reason if s.gate == "closed" else None)
    for reason, spans in reasons.items():
        for start, width in spans:
            if width >= run.end / 25:  # a label that fits
                g_ax.text(start, 0.5, f" {reason}", fontsize=6, va="center", color="white")
    g_ax.set_ylim(0, 2)
    g_ax.set_yticks([0.5, 1.5], ["gate", "breaker"])
    g_ax.set_title(
        "green: gate open / breaker closed; orange: half open; red: gate closed / "
        "breaker open; grey: no gate; blank: not reported",
        fontsize=7,
    )

    width = max(0.25, run.end / 80)
    starts, rates = status_rates(run, width)
    bottom = [0.0] * len(starts)
    for key, color in _STATUS_COLORS.items():
        s_ax.bar(
            starts,
            rates[key],
            width=width,
            bottom=bottom,
            align="edge",
            color=color,
            label=key,
            lw=0,
        )
        bottom = [b + r for b, r in zip(bottom, rates[key], strict=True)]
    s_ax.set_ylabel("answers / s")
    s_ax.set_xlabel("seconds since the scenario started")
    s_ax.legend(loc="upper right", fontsize=7, ncols=4)


def plot_timeline(path: Path, profile: Profile, runs: Sequence[RunRecord]) -> Path:
    """Write the timeline PNG of ``runs`` (one column each, in order) to ``path``."""
    fig = Figure(figsize=(6.5 * len(runs), 11), layout="constrained")
    grid = fig.subplots(
        4,
        len(runs),
        sharex="col",
        sharey="row",
        squeeze=False,
        gridspec_kw={"height_ratios": [3, 3, 1, 3]},
    )
    for col, run in enumerate(runs):
        _column([grid[row][col] for row in range(4)], run, profile, _title(run))
    fig.suptitle(
        f"Floodgate outage drill ({profile.name}): the same script, {len(runs)} runs "
        "one after another"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def _title(run: RunRecord) -> str:
    name = run.label if run.client == "floodgate" else "naive: Semaphore + blind retries"
    return f"{name} ({len(run.requests):,} upstream requests)"
