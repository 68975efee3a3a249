"""The drill's report: the same content as aligned text (stdout) and markdown (file)."""

from __future__ import annotations

import math
import textwrap
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from .config import Profile
from .facts import run_facts
from .records import RunRecord
from .targets import Measures, Verdict, peak_pending

__all__ = ["METHOD", "Report", "render", "verdict_word", "who_won"]

_STATUSES = (200, 429, 500, 503)
_OUTCOMES = ("ok", "upstream_error", "rate_limited", "shed", "timeout", "transport", "unfinished")

#: how each target is measured (printed under the targets)
METHOD = (
    "lost: after the run the backlog is reopened, as a restarted worker would; accepted jobs "
    "that are DEAD or missing are lost. The naive client keeps jobs only in memory: its "
    "unfinished ones are counted as lost.",
    "interactive p99: p99 (nearest rank) of time-to-answer over the requests issued while the "
    "upstream was up (normal, degraded, recovery), each phase shown too; a 2xx or the "
    "upstream's own 5xx is an answer; shed, timed out, answered 429 "
    "(interactive alone is far below the rate limit: batch spent the quota) or never answered "
    'is unanswered, i.e. infinite. "missed" counts the calls that missed the end-to-end '
    "deadline: answered after it, or not answered at all.",
    "held in memory only: the most accepted batch jobs the naive client held at one time "
    "(accepted, not yet done); it keeps them only in memory, so a crash then loses them all. "
    "Floodgate's accepted jobs are in its backlog file.",
    "outage requests: requests that arrived at the upstream while it was down.",
    "drain: batch jobs completed per second from the start of recovery until the backlog is "
    "empty (or the run ends), over the upstream's capacity min(cap / service time, rate "
    "limit); a token bucket left full before recovery lets a short drain pass 100 %. The "
    "429/503 share is over every request that arrived from the start of recovery on.",
    "interactive served: for each phase the upstream is up in (normal, degraded, recovery), "
    "allowed = interactive calls issued in that phase x (1 - the upstream's configured error "
    "rate in it: 0 when normal, the degraded error rate when degraded); served = calls of that "
    "phase that got a 200 within the end-to-end deadline of being issued (retries included). "
    "The figure is sum(served) / sum(allowed) over the up phases (it may exceed 100 % when "
    "retries get past the degraded phase's errors).",
    "first success: the arrival time of the first request (any lane) that the upstream "
    "answered 200 among those arriving at or after the end of the outage phase, minus the end "
    "of the outage phase (its answer time is shown too).",
    "batch goodput: the normal and recovery phases are cut in 1-s bins, skipping each phase's "
    "first 2 s (ramp); a bin counts if the batch backlog (accepted jobs not yet done) was "
    "non-empty throughout it. Its ratio = batch requests arriving in the bin answered 200, per "
    "second / (the rate limit - interactive requests per second arriving in the bin that took "
    "a token, i.e. were not answered 429). The figure is the median over the counted bins "
    "(their count, min and max shown).",
    "backlog drained: every accepted batch job done by the end of the script. Judged only when "
    "the capacity allows it: capacity estimate = (rate limit - interactive rate) x seconds in "
    "the normal and recovery phases; with more accepted jobs than that, n/a.",
    "429/503 after recovery: of all requests arriving at the upstream from the start of the "
    "recovery phase on, the share answered 429 or 503.",
)

#: what each target asks of the scheduler (printed under the targets)
EXPECTATIONS = (
    "lost: durable submit + retries that do not burn attempts while the upstream is "
    "down (breaker open / Retry-After pause delays jobs instead of failing them).",
    "interactive p99 / served: interactive calls get seats before batch work, and batch kept "
    "below the rate limit (rate-limit headroom, interactive pressure) so interactive calls "
    "never get 429.",
    "outage requests: a per-upstream circuit breaker that opens within ~20 failures and "
    "probes sparingly, plus the Retry-After pause and a retry budget.",
    "first success: the breaker lets a trial through soon after the upstream is back "
    "(live trials, probes, a cool-down short enough for the outage it saw).",
    "drain / goodput / drained: after the breaker closes, send at the upstream's rate (paced "
    "by the rate-limit headers or the configured rpm, learned from 429s otherwise) with "
    "enough concurrency, so few 429/503 come back.",
)

#: the verdict of the naive run's row: it is a baseline, not judged
BASELINE = "baseline"

SMOKE_HEADLINE = "smoke run, targets not judged"
#: what a smoke run's report says under its title
SMOKE_NOTE = (
    "Smoke run: this profile squeezes the incident into seconds to check that the drill runs "
    "end to end; its timings are too short to judge, so the targets are measured and shown "
    "for information only. Only the invariant (no accepted batch job lost) is judged, and "
    "only it sets the exit status of --strict. The judged figures come from the full and "
    "blip profiles."
)


def _share(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


def _backlog_key(m: Measures) -> tuple[float, float]:
    """Lower is better: when the backlog emptied (inf if it did not), then jobs left."""
    d = m.drained
    emptied = d.last if d.drained and d.last is not None else math.inf
    return emptied, float(d.accepted - d.done)


def _backlog_figure(m: Measures, name: str = "") -> str:
    """``at 7.5s`` (``naive at 7.5s``), or ``221 left at the end`` (``naive had ...``)."""
    d = m.drained
    if d.drained and d.last is not None:
        return f"{name} at {d.last:.1f}s".strip()
    return f"{name} had {d.accepted - d.done:,} left at the end".strip()


def who_won(measures: Sequence[Measures], deadline: float) -> str:
    """One line: what the first Floodgate run and the naive client each won, with the
    figures (Floodgate's first); the naive client's backlog is called what it is (held
    in memory only). ``""`` without both runs."""
    ours = next((m for m in measures if m.client != "naive"), None)
    naive = next((m for m in measures if m.client == "naive"), None)
    if ours is None or naive is None:
        return ""
    # (lower is better for the keys below): what, our key, naive's key, figures
    live_f, live_n = _share(*ours.live), _share(*naive.live)
    contests = [
        (
            "live calls",
            -round(live_f, 3),
            -round(live_n, 3),
            f"{live_f:.0%} vs {live_n:.0%} served within {deadline:g}s",
        ),
        (
            "the outage",
            ours.outage_requests,
            naive.outage_requests,
            f"{ours.outage_requests:,} vs {naive.outage_requests:,} requests sent into it",
        ),
        (
            "recovery",
            round(ours.errors[2], 3),
            round(naive.errors[2], 3),
            f"{ours.errors[2]:.1%} vs {naive.errors[2]:.1%} answered 429/503",
        ),
    ]
    won: dict[str, list[str]] = {"ours": [], "naive": [], "tie": []}
    for what, a, b, figures in contests:
        side = "ours" if a < b else "naive" if b < a else "tie"
        won[side].append(f"{what} ({figures})")
    parts = []
    if won["ours"]:
        parts.append("Floodgate won " + _and(won["ours"]))
    if won["tie"]:
        parts.append("tied on " + _and(won["tie"]))
    if won["naive"]:
        parts.append("naive won " + _and(won["naive"]))
    if _backlog_key(naive) == _backlog_key(ours):
        parts.append(f"tied on the backlog ({_backlog_figure(ours, 'both')})")
    elif _backlog_key(naive) < _backlog_key(ours):
        held = (
            f" only by holding up to {naive.in_memory_peak:,} jobs in memory, all lost on a crash"
            if naive.in_memory_peak
            else ""
        )
        parts.append(
            f"naive emptied its backlog first ({_backlog_figure(naive)}; "
            f"{_backlog_figure(ours, 'Floodgate')}){held}"
        )
    else:
        parts.append(
            f"Floodgate emptied its backlog first ({_backlog_figure(ours)}; "
            f"{_backlog_figure(naive, 'naive')})"
        )
    if ours.lost:
        parts.append(f"Floodgate lost {ours.lost:,} accepted jobs")
    return f"{ours.label} vs naive: " + "; ".join(parts)


def _and(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def verdict_word(passed: bool | None, judged: bool = True) -> str:
    """``PASS``/``FAIL``/``n/a``; in parentheses when only shown for information."""
    word = "n/a" if passed is None else ("PASS" if passed else "FAIL")
    return word if judged else f"({word})"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, markdown: bool) -> str:
    if markdown:
        lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join(
        [fmt.format(*headers), fmt.format(*("-" * w for w in widths))]
        + [fmt.format(*row) for row in rows]
    )


class Report:
    """Everything the drill found, ready to print or write."""

    def __init__(
        self,
        profile: Profile,
        verdicts: list[Verdict],
        runs: Sequence[RunRecord],
        png: Path | None,
        wall_seconds: float,
        measures: Sequence[Measures] = (),
    ) -> None:
        self.profile = profile
        self.verdicts = verdicts
        self.runs = runs
        self.png = png
        self.wall_seconds = wall_seconds
        self.measures = list(measures)

    @property
    def passed(self) -> bool:
        """Every judged target passed, for every Floodgate run."""
        return all(v.passed is True for v in self.verdicts if v.judged)

    def headline(self) -> str:
        """The verdicts in one line (a smoke run: the invariant only)."""
        parts = []
        for run in dict.fromkeys(v.run for v in self.verdicts):
            judged = [v for v in self.verdicts if v.judged and v.run == run]
            n = sum(v.passed is True for v in judged)
            if self.profile.smoke:
                parts.append(f"{run} {'lost no job' if n == len(judged) else 'LOST JOBS'}")
            else:
                parts.append(f"{run} {n} of {len(judged)} targets PASS")
        verdicts = "; ".join(parts) or "no Floodgate run"
        return f"{SMOKE_HEADLINE}; {verdicts}" if self.profile.smoke else verdicts

    def who_won(self) -> str:
        """Who won what, in one line (see :func:`who_won`)."""
        return who_won(self.measures, self.profile.interactive_deadline)

    def text(self) -> str:
        return render(self, markdown=False)

    def markdown(self) -> str:
        return render(self, markdown=True)


def _status_rows(run: RunRecord) -> list[list[str]]:
    tally: Counter[tuple[str, int]] = Counter((r.phase, r.status) for r in run.requests)
    rows = []
    for span in run.spans:
        cells = [str(tally[(span.name, s)]) for s in _STATUSES]
        total = sum(n for (ph, _), n in tally.items() if ph == span.name)
        rows.append([f"{run.label}: {span.name}", *cells, str(total)])
    return rows


def _interactive_rows(run: RunRecord) -> list[list[str]]:
    rows = []
    for span in run.spans:
        got = Counter(r.outcome for r in run.interactive if r.phase == span.name)
        rows.append([f"{run.label}: {span.name}", *(str(got[o]) for o in _OUTCOMES)])
    return rows


def _batch_row(run: RunRecord) -> list[str]:
    return [
        run.label,
        f"{run.batch_accepted:,}",
        str(run.batch_rejected),
        f"{run.batch_done:,}",
        str(run.batch_duplicates),
        str(run.batch_lost),
        "0 (on disk)" if run.durable else f"{peak_pending(run.accepted_at, run.completions):,}",
        str(run.peak_in_flight),
    ]


def _by_target(verdicts: Sequence[Verdict]) -> list[list[Verdict]]:
    groups: dict[str, list[Verdict]] = {}
    for v in verdicts:
        groups.setdefault(v.key, []).append(v)
    return list(groups.values())


def _verdict_rows(verdicts: Sequence[Verdict]) -> list[list[str]]:
    """One row per Floodgate run and target, then the naive baseline's row."""
    rows: list[list[str]] = []
    for group in _by_target(verdicts):
        first = group[0]
        for i, v in enumerate(group):
            head = [v.name, v.goal] if i == 0 else ["", ""]
            rows.append([*head, v.run, v.figure, verdict_word(v.passed, v.judged)])
        if first.baseline:
            rows.append(["", "", "naive", first.baseline, BASELINE])
    return rows


def _verdict_blocks(verdicts: Sequence[Verdict]) -> str:
    """Targets as text blocks (a table of long cells would not fit a terminal)."""
    blocks = []
    for group in _by_target(verdicts):
        first = group[0]
        width = max(len("naive"), *(len(v.run) for v in group)) + 1
        lines = [f"{first.name} (goal: {first.goal})"]
        lines += [
            f"  [{verdict_word(v.passed, v.judged):^8}] {v.run + ':':<{width}} {v.figure}"
            for v in group
        ]
        if first.baseline:
            lines.append(f"  [{BASELINE:^8}] {'naive:':<{width}} {first.baseline}")
        blocks.append("\n".join(lines))
    return "\n".join(blocks)


def render(report: Report, *, markdown: bool) -> str:
    def h(title: str) -> str:
        return f"## {title}" if markdown else f"== {title}"

    def targets(verdicts: Sequence[Verdict]) -> str:
        if not verdicts:
            return "none"
        if markdown:
            headers = ["target", "goal", "run", "figure", "verdict"]
            return table(headers, _verdict_rows(verdicts), markdown=True)
        return _verdict_blocks(verdicts)

    facts = run_facts(report.profile, report.wall_seconds)
    title = (
        ("# " if markdown else "")
        + f"Floodgate outage drill ({report.profile.name}): "
        + report.headline()
    )
    won = report.who_won()
    lead = [title]
    if won:
        lead.append(f"**{won}**" if markdown else textwrap.fill(won, 100))
    if report.profile.smoke:
        lead.append(SMOKE_NOTE if markdown else textwrap.fill(SMOKE_NOTE, 100))
    judged_title = (
        "Judged on a smoke run: the invariant"
        if report.profile.smoke
        else f"Targets of the {report.profile.targets} set (each Floodgate run judged; the "
        "naive client in the same drill as a baseline)"
    )
    parts = [
        *lead,
        table(["run", "value"], facts, markdown=True)
        if markdown
        else "\n".join(
            textwrap.fill(value, 100, initial_indent=f"{key:<19} ", subsequent_indent=" " * 20)
            for key, value in facts
        ),
        h(judged_title),
        targets([v for v in report.verdicts if v.judged]),
        h(
            "Also measured (a smoke run judges no timing; verdicts in parentheses, for information)"
            if report.profile.smoke
            else "Also measured (not this profile's targets; verdicts in parentheses, for "
            "information)"
        ),
        targets([v for v in report.verdicts if not v.judged]),
        h("How each target is measured"),
        "\n".join(f"- {line}" for line in METHOD),
        h("What each target needs from the scheduler"),
        "\n".join(f"- {line}" for line in EXPECTATIONS),
        h("Upstream answers by phase (phase at arrival)"),
        table(
            ["run: phase", *(str(s) for s in _STATUSES), "total"],
            [row for run in report.runs for row in _status_rows(run)],
            markdown=markdown,
        ),
        h("Interactive outcomes by phase (phase when issued)"),
        table(
            ["run: phase", *_OUTCOMES],
            [row for run in report.runs for row in _interactive_rows(run)],
            markdown=markdown,
        ),
        h("Batch work"),
        table(
            [
                "run",
                "accepted",
                "refused",
                "done",
                "done twice",
                "lost",
                "held in memory only (peak; lost on a crash)",
                "peak in flight",
            ],
            [_batch_row(run) for run in report.runs],
            markdown=markdown,
        ),
        h("Notes"),
    ]
    parts.extend(
        f"```\n{note}\n```" if markdown and "\n" in note else f"- {note}"
        for run in report.runs
        for note in run.notes
    )
    if report.png is not None:
        parts.append(
            f"Timeline: ![timeline]({report.png.name})" if markdown else f"Timeline: {report.png}"
        )
    return "\n\n".join(parts) + "\n"
