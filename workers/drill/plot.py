"""The drill's timeline: one PNG, one column per run (each Floodgate variant,
then the naive baseline), a headline under the title saying who won what, and
five stacked panels sharing the time axis:

1. queue depth per lane (jobs waiting for a seat; symlog scale), saying where
   the batch backlog lives (Floodgate: its backlog file; naive: memory only,
   with the most it held, all of which a crash would lose);
2. live (interactive) calls per second by when they were issued: served (a
   200 within the deadline) and missed (late, failed, shed, unanswered);
3. in flight per lane as the client holds them (sending, or waiting to retry
   while holding a seat), with the cap, Floodgate's adaptive limit when it
   reports one, and what the upstream was serving at that instant;
4. the gate (open, or closed in one colour per reason) and the upstream's
   breaker, as bands (Floodgate only: the naive client has neither), with one
   legend for every column under the figure;
5. the upstream's answers per second by status code.

Phases are shaded behind every panel. Uses matplotlib's Agg canvas through
``matplotlib.figure.Figure``: no pyplot, no global backend state.
"""

from __future__ import annotations

import itertools
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from matplotlib.patches import Patch

from .config import UP_PHASES, Profile
from .records import RunRecord, Sample
from .targets import live_rates, peak_pending, served_within

__all__ = ["plot_timeline", "status_rates"]

_PHASE_COLORS = {"outage": "#d62728", "degraded": "#ff7f0e", "recovery": "#2ca02c"}
_STATUS_COLORS = {"2xx": "#2ca02c", "429": "#ff7f0e", "500": "#9467bd", "503": "#d62728"}
_BREAKER_COLORS = {"closed": "#2ca02c", "half_open": "#ff7f0e", "open": "#d62728"}
_GATE_OPEN = "#2ca02c"
#: one colour per reason the gate gave for closing (none of them green, orange or red)
_REASON_COLORS = ("#1f77b4", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f")
_SERVED, _MISSED = "#2ca02c", "#d62728"
_LANE_COLORS = {"interactive": "#e377c2", "batch": "#1f77b4"}
_ROWS = 5


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


def _reason_colors(runs: Sequence[RunRecord]) -> dict[str, str]:
    """The same colour for the same gate reason in every column."""
    reasons = sorted(
        {s.gate_reason or "closed" for r in runs for s in r.samples if s.gate == "closed"}
    )
    return {reason: _REASON_COLORS[i % len(_REASON_COLORS)] for i, reason in enumerate(reasons)}


def _queue_panel(ax: Any, run: RunRecord, ts: Sequence[float]) -> None:
    where = "backlog file: survives a crash" if run.durable else "memory only: lost on a crash"
    ax.plot(ts, [s.queued_batch for s in run.samples], label=f"batch ({where})", color="#1f77b4")
    ax.plot(
        ts,
        [s.queued_interactive for s in run.samples],
        label="interactive",
        color=_LANE_COLORS["interactive"],
    )
    ax.set_yscale("symlog", linthresh=10)
    ax.set_ylabel("queued jobs")
    ax.legend(loc="upper right", fontsize=7)
    if not run.durable:
        held = peak_pending(run.accepted_at, run.completions)
        ax.text(
            0.02,
            0.04,
            f"held up to {held:,} batch jobs in memory only: a crash loses them all",
            transform=ax.transAxes,
            fontsize=8,
            color="#b42318",
            fontweight="bold",
        )


def _live_panel(ax: Any, run: RunRecord, deadline: float) -> None:
    width = max(0.25, run.end / 60)
    rates = live_rates(run.interactive, deadline, run.end, width)
    ax.bar(
        rates.starts,
        rates.served,
        width=width,
        align="edge",
        color=_SERVED,
        lw=0,
        label=f"served (200 within {deadline:g}s)",
    )
    ax.bar(
        rates.starts,
        rates.missed,
        width=width,
        bottom=rates.served,
        align="edge",
        color=_MISSED,
        lw=0,
        label="missed (late, failed, shed)",
    )
    served, issued = served_within(run.interactive, deadline, *UP_PHASES)
    ax.set_ylabel("live calls / s")
    ax.legend(loc="upper right", fontsize=7, ncols=2)
    ax.text(
        0.02,
        0.9,
        f"{served}/{issued} issued while up served in time",
        transform=ax.transAxes,
        fontsize=8,
        va="top",
    )


def _flight_panel(ax: Any, run: RunRecord, profile: Profile, ts: Sequence[float]) -> None:
    ax.stackplot(
        ts,
        [s.running_interactive for s in run.samples],
        [s.running_batch for s in run.samples],
        labels=["interactive", "batch"],
        colors=[_LANE_COLORS["interactive"], _LANE_COLORS["batch"]],
        alpha=0.8,
    )
    ax.plot(
        ts,
        [s.in_flight_interactive + s.in_flight_batch for s in run.samples],
        color="#444444",
        lw=0.6,
        label="at the upstream",
    )
    ax.axhline(profile.upstream.max_in_flight, color="black", ls="--", lw=0.8, label="cap")
    limits = [(s.t, s.concurrency_limit) for s in run.samples if s.concurrency_limit is not None]
    if limits:
        ax.step(
            [t for t, _ in limits],
            [v for _, v in limits],
            where="post",
            color="black",
            lw=1.0,
            label="adaptive limit",
        )
    ax.set_ylabel("in flight (client)")
    ax.legend(loc="upper right", fontsize=7, ncols=3)


def _gate_panel(ax: Any, run: RunRecord, reasons: dict[str, str]) -> None:
    if run.client == "naive":
        ax.axis("off")
        ax.text(
            0.5,
            0.5,
            "no gate, no breaker: it sends whatever it holds",
            transform=ax.transAxes,
            ha="center",
            va="center",
            fontsize=9,
            color="#555555",
        )
        return
    for state, spans in _bands(run.samples, lambda s: s.breaker).items():
        ax.broken_barh(spans, (1.1, 0.8), facecolors=_BREAKER_COLORS.get(state, "#7f7f7f"))

    def gate(s: Sample) -> str | None:
        return (
            None if s.gate == "none" else "open" if s.gate == "open" else s.gate_reason or "closed"
        )

    for state, spans in _bands(run.samples, gate).items():
        color = _GATE_OPEN if state == "open" else reasons.get(state, "#7f7f7f")
        ax.broken_barh(spans, (0.1, 0.8), facecolors=color)
    ax.set_ylim(0, 2)
    ax.set_yticks([0.5, 1.5], ["gate", "breaker"])


def _strip_legend(fig: Figure, reasons: dict[str, str]) -> None:
    """One legend for every column's gate and breaker strips, under the figure."""
    handles = [
        Patch(color=_GATE_OPEN, label="gate open / breaker closed"),
        Patch(color=_BREAKER_COLORS["half_open"], label="breaker half open"),
        Patch(color=_BREAKER_COLORS["open"], label="breaker open"),
        *(Patch(color=c, label=f"gate closed: {r}") for r, c in reasons.items()),
    ]
    fig.legend(
        handles=handles,
        loc="outside lower center",
        ncols=len(handles),
        fontsize=8,
        frameon=False,
        title="gate and breaker strips",
        title_fontsize=8,
    )


def _status_panel(ax: Any, run: RunRecord) -> None:
    width = max(0.25, run.end / 80)
    starts, rates = status_rates(run, width)
    bottom = [0.0] * len(starts)
    for key, color in _STATUS_COLORS.items():
        ax.bar(
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
    ax.set_ylabel("answers / s")
    ax.set_xlabel("seconds since the scenario started")
    ax.legend(loc="upper right", fontsize=7, ncols=4)


def _column(
    axes: Sequence[Any], run: RunRecord, profile: Profile, title: str, reasons: dict[str, str]
) -> None:
    ts = [s.t for s in run.samples]
    q_ax, l_ax, f_ax, g_ax, s_ax = axes
    for i, ax in enumerate(axes):
        if ax is not g_ax or run.durable:
            _shade(ax, run, label=i == 0)
        ax.set_xlim(0, run.end)
        ax.grid(alpha=0.3, lw=0.5)
    q_ax.set_title(title, pad=16)
    _queue_panel(q_ax, run, ts)
    _live_panel(l_ax, run, profile.interactive_deadline)
    _flight_panel(f_ax, run, profile, ts)
    _gate_panel(g_ax, run, reasons)
    _status_panel(s_ax, run)


def plot_timeline(
    path: Path, profile: Profile, runs: Sequence[RunRecord], headline: str = ""
) -> Path:
    """Write the timeline PNG of ``runs`` (one column each, in order) to ``path``;
    ``headline`` (who won what) goes under the title."""
    fig = Figure(figsize=(6.5 * len(runs), 14), layout="constrained")
    grid = fig.subplots(
        _ROWS,
        len(runs),
        sharex="col",
        squeeze=False,
        gridspec_kw={"height_ratios": [3, 2.2, 3, 1, 3]},
    )
    for row in (0, 1, 2, 4):  # the gate strip has no shared scale
        first = grid[row][0]
        for ax in grid[row][1:]:
            ax.sharey(first)
    reasons = _reason_colors(runs)
    for col, run in enumerate(runs):
        _column([grid[row][col] for row in range(_ROWS)], run, profile, _title(run), reasons)
    if any(run.durable for run in runs):
        _strip_legend(fig, reasons)
    smoke = " (a smoke run: timings too compressed to judge)" if profile.smoke else ""
    title = (
        f"Floodgate outage drill ({profile.name}): the same script, {len(runs)} runs one after "
        f"another{smoke}"
    )
    if headline:
        title += "\n" + "\n".join(textwrap.wrap(headline, 70 * len(runs)))
    fig.suptitle(title, fontsize=12)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def _title(run: RunRecord) -> str:
    name = run.label if run.client == "floodgate" else "naive: Semaphore + blind retries"
    return f"{name} ({len(run.requests):,} upstream requests)"
