"""The drill's report: the same content as aligned text (stdout) and markdown (file)."""

from __future__ import annotations

import textwrap
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from .config import Profile
from .facts import run_facts
from .records import RunRecord
from .targets import Verdict

__all__ = ["Report", "render"]

_STATUSES = (200, 429, 500, 503)
_OUTCOMES = ("ok", "upstream_error", "rate_limited", "shed", "timeout", "transport", "unfinished")

#: how each target is measured (printed under the targets)
METHOD = (
    "lost: after the run the backlog is reopened, as a restarted worker would; accepted jobs "
    "that are DEAD or missing are lost. The naive client keeps jobs only in memory: its "
    "unfinished ones are counted as lost.",
    "interactive: p99 (nearest rank) of time-to-answer over the requests issued while the "
    "upstream was up (normal, degraded, recovery), each phase shown too; a 2xx or the "
    "upstream's own 5xx is an answer; shed, timed out, answered 429 "
    "(interactive alone is far below the rate limit: batch spent the quota) or unanswered is "
    "a miss, i.e. infinite.",
    "outage requests: requests that arrived at the upstream while it was down.",
    "drain: batch jobs completed per second from the start of recovery until the backlog is "
    "empty (or the run ends), over the upstream's capacity min(cap / service time, rate "
    "limit); a token bucket left full before recovery lets a short drain pass 100 %. The "
    "429/503 share is over every request that arrived from the start of recovery on.",
)

#: what each target asks of the scheduler (printed under the targets)
EXPECTATIONS = (
    "lost: durable submit + retries that do not burn attempts while the upstream is "
    "down (breaker open / Retry-After pause delays jobs instead of failing them).",
    "interactive p99: reserved seats for interactive work, and batch kept below the rate "
    "limit (rate-limit headroom, interactive pressure) so interactive calls never get 429.",
    "outage requests: a per-upstream circuit breaker that opens within ~20 failures and "
    "probes sparingly, plus the Retry-After pause and a retry budget.",
    "drain: after the breaker closes, adaptive concurrency with slow start up to the "
    "upstream's capacity, paced by the rate-limit headers so few 429/503 come back.",
)


def verdict_word(passed: bool | None) -> str:
    return "n/a" if passed is None else ("PASS" if passed else "FAIL")


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
    ) -> None:
        self.profile = profile
        self.verdicts = verdicts
        self.runs = runs
        self.png = png
        self.wall_seconds = wall_seconds

    @property
    def passed(self) -> bool:
        return all(v.passed is True for v in self.verdicts)

    def headline(self) -> str:
        n = sum(v.passed is True for v in self.verdicts)
        return f"{n} of {len(self.verdicts)} targets PASS"

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
        rows.append([f"{run.client}: {span.name}", *cells, str(total)])
    return rows


def _interactive_rows(run: RunRecord) -> list[list[str]]:
    rows = []
    for span in run.spans:
        got = Counter(r.outcome for r in run.interactive if r.phase == span.name)
        rows.append([f"{run.client}: {span.name}", *(str(got[o]) for o in _OUTCOMES)])
    return rows


def _batch_row(run: RunRecord) -> list[str]:
    return [
        run.client,
        f"{run.batch_accepted:,}",
        str(run.batch_rejected),
        f"{run.batch_done:,}",
        str(run.batch_duplicates),
        str(run.batch_lost),
        str(run.peak_in_flight),
    ]


def _verdict_blocks(verdicts: Sequence[Verdict]) -> str:
    """Targets as text blocks (a table of long cells would not fit a terminal)."""
    return "\n".join(
        f"[{verdict_word(v.passed):>4}] {v.name} (goal: {v.goal})\n"
        f"       Floodgate: {v.floodgate}\n"
        f"       naive:     {v.naive}"
        for v in verdicts
    )


def render(report: Report, *, markdown: bool) -> str:
    def h(title: str) -> str:
        return f"## {title}" if markdown else f"== {title}"

    verdict_rows = [
        [v.name, v.goal, v.floodgate, v.naive, verdict_word(v.passed)] for v in report.verdicts
    ]
    parts = [
        ("# " if markdown else "")
        + f"Floodgate outage drill ({report.profile.name}): "
        + report.headline(),
        table(["run", "value"], run_facts(report.profile, report.wall_seconds), markdown=True)
        if markdown
        else "\n".join(
            textwrap.fill(value, 100, initial_indent=f"{key:<17} ", subsequent_indent=" " * 18)
            for key, value in run_facts(report.profile, report.wall_seconds)
        ),
        h("Targets (Floodgate judged; the naive baseline in the same run for comparison)"),
        table(["target", "goal", "Floodgate", "naive", "verdict"], verdict_rows, markdown=True)
        if markdown
        else _verdict_blocks(report.verdicts),
        h("How each target is measured"),
        "\n".join(f"- {line}" for line in METHOD),
        h("What each target needs from the scheduler"),
        "\n".join(f"- {line}" for line in EXPECTATIONS),
        h("Upstream answers by phase (phase at arrival)"),
        table(
            ["client: phase", *(str(s) for s in _STATUSES), "total"],
            [row for run in report.runs for row in _status_rows(run)],
            markdown=markdown,
        ),
        h("Interactive outcomes by phase (phase when issued)"),
        table(
            ["client: phase", *_OUTCOMES],
            [row for run in report.runs for row in _interactive_rows(run)],
            markdown=markdown,
        ),
        h("Batch work"),
        table(
            ["client", "accepted", "refused", "done", "done twice", "lost", "peak in flight"],
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
