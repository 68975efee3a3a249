"""The drill's targets, computed from what the runs recorded (pure functions).

1. **No accepted batch job lost**: after the run the backlog is reopened, as
   a restarted worker would; every accepted job must be there and not DEAD.
2. **Interactive p99 within its deadline whenever the upstream is up**: over
   the interactive requests issued in the ``normal``, ``degraded`` and
   ``recovery`` phases together, the p99 (nearest rank) of time-to-answer is
   at most the end-to-end deadline (each phase's p99 is shown too; with ~50
   requests in a phase, a phase's p99 is its maximum). An answer is a 2xx or
   a 5xx the upstream itself sent; a request shed by the client, timed out,
   refused with a 429 (interactive traffic alone is far below the rate limit,
   so a 429 means batch work spent its quota) or never answered counts as a
   miss, i.e. an infinite latency.
3. **Outage requests >= 10x fewer than the naive baseline**: requests that
   reached the upstream while it was down (phase ``outage`` at arrival).
4. **Drain after recovery**: batch jobs completed per second from the start
   of ``recovery`` until the backlog is empty (or the run ends), divided by
   the upstream's capacity ``min(cap / service_time, rate_limit)``, >= 80 %;
   and of all requests that reached the upstream from the start of
   ``recovery`` on, < 1 % answered 429 or 503.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .config import UP_PHASES, Profile
from .records import InteractiveResult, RequestEvent, RunRecord

__all__ = [
    "Drain",
    "PhaseLatency",
    "Verdict",
    "drain",
    "error_share",
    "evaluate",
    "interactive_latency",
    "nearest_rank",
    "requests_in_phase",
]

OUTAGE_RATIO = 10.0
DRAIN_SHARE = 0.80
POST_RECOVERY_ERRORS = 0.01
BAD_AFTER_RECOVERY = frozenset({429, 503})


@dataclass(frozen=True, slots=True)
class Verdict:
    """One target: the figures of both clients, and whether Floodgate met it.

    ``passed`` is ``None`` when the run gave nothing to judge it on.
    """

    name: str
    goal: str
    floodgate: str
    naive: str
    passed: bool | None


def nearest_rank(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0 < q <= 100) by nearest rank; ``inf`` values allowed."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0.0 < q <= 100.0:
        raise ValueError(f"q must be within (0, 100], got {q!r}")
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100.0 * len(ordered)) - 1)]


def requests_in_phase(requests: Iterable[RequestEvent], phase: str) -> int:
    return sum(1 for r in requests if r.phase == phase)


@dataclass(frozen=True, slots=True)
class PhaseLatency:
    phase: str
    count: int
    misses: int
    p99: float  # seconds; inf when more than 1 % missed


def interactive_latency(results: Iterable[InteractiveResult], *phases: str) -> PhaseLatency | None:
    """p99 time-to-answer of the interactive requests issued in ``phases`` (misses: inf)."""
    times = [
        r.latency if r.answered and r.latency is not None else math.inf
        for r in results
        if r.phase in phases
    ]
    if not times:
        return None
    misses = sum(1 for t in times if math.isinf(t))
    return PhaseLatency("+".join(phases), len(times), misses, nearest_rank(times, 99.0))


@dataclass(frozen=True, slots=True)
class Drain:
    pending_at_start: int  # accepted jobs not done when recovery began
    completed: int  # of those, done within the window
    window: float  # seconds from recovery start to empty backlog (or run end)
    emptied: bool  # the backlog was empty before the run ended
    rate: float  # completed / window, jobs per second
    share: float  # rate / capacity


def drain(
    completions: Sequence[float], accepted: int, start: float, end: float, capacity: float
) -> Drain | None:
    """Batch drain from ``start`` until the backlog empties or ``end``; None if nothing
    was pending at ``start``."""
    done_before = sum(1 for t in completions if t < start)
    pending = accepted - done_before
    if pending <= 0 or end <= start:
        return None
    after = sorted(t for t in completions if start <= t <= end)
    emptied = len(after) >= pending
    stop = after[pending - 1] if emptied else end
    window = max(stop - start, 1e-9)
    completed = min(len(after), pending)
    rate = completed / window
    return Drain(pending, completed, window, emptied, rate, rate / capacity)


def error_share(
    requests: Iterable[RequestEvent], since: float, statuses: frozenset[int] = BAD_AFTER_RECOVERY
) -> tuple[int, int, float]:
    """``(bad, total, bad / total)`` of requests arriving at or after ``since``."""
    total = bad = 0
    for r in requests:
        if r.t >= since:
            total += 1
            bad += r.status in statuses
    return bad, total, (bad / total if total else 0.0)


def _recovery_start(run: RunRecord) -> float:
    return next((s.start for s in run.spans if s.name == "recovery"), run.end)


def _lost(run: RunRecord) -> str:
    return f"{run.batch_lost} of {run.batch_accepted:,}"


def _seconds(p99: float) -> str:
    return "miss" if math.isinf(p99) else f"{p99:.2f}s"


def _latency(run: RunRecord) -> tuple[str, float | None]:
    """Pooled p99 over every up phase (the target), then each phase's (to diagnose)."""
    pooled = interactive_latency(run.interactive, *UP_PHASES)
    if pooled is None:
        return "no requests", None
    parts = [
        f"{lat.phase} {_seconds(lat.p99)} ({lat.misses}/{lat.count})"
        for lat in (interactive_latency(run.interactive, phase) for phase in UP_PHASES)
        if lat is not None
    ]
    text = (
        f"p99 {_seconds(pooled.p99)}, {pooled.misses}/{pooled.count} missed; "
        f"by phase: {', '.join(parts)}"
    )
    return text, pooled.p99


def _drain_text(run: RunRecord, capacity: float) -> tuple[str, Drain | None, float]:
    start = _recovery_start(run)
    result = drain(run.completions, run.batch_accepted, start, run.end, capacity)
    bad, total, share = error_share(run.requests, start)
    errors = f"{bad}/{total} = {share:.1%} answered 429/503"
    if result is None:
        return f"nothing pending at recovery; {errors}", None, share
    tail = "emptied" if result.emptied else f"{result.pending_at_start - result.completed} left"
    text = (
        f"{result.rate:.1f} jobs/s = {result.share:.0%} of {capacity:g}/s "
        f"({result.completed} in {result.window:.1f}s, {tail}); {errors}"
    )
    return text, result, share


def evaluate(profile: Profile, floodgate: RunRecord, naive: RunRecord) -> list[Verdict]:
    """The four targets, Floodgate judged, the naive baseline shown beside it."""
    deadline = profile.interactive_deadline
    capacity = profile.upstream.capacity

    lost_ok = None if floodgate.batch_accepted == 0 else floodgate.batch_lost == 0

    fg_lat, fg_p99 = _latency(floodgate)
    nv_lat, _ = _latency(naive)
    lat_ok = None if fg_p99 is None else fg_p99 <= deadline

    fg_out = requests_in_phase(floodgate.requests, "outage")
    nv_out = requests_in_phase(naive.requests, "outage")
    ratio = math.inf if fg_out == 0 else nv_out / fg_out
    out_ok = None if nv_out == 0 else ratio >= OUTAGE_RATIO
    ratio_text = "inf" if math.isinf(ratio) else f"{ratio:.1f}x"

    fg_drain, fg_result, fg_share = _drain_text(floodgate, capacity)
    nv_drain, _, _ = _drain_text(naive, capacity)
    drain_ok = (
        None
        if fg_result is None
        else fg_result.share >= DRAIN_SHARE and fg_share < POST_RECOVERY_ERRORS
    )
    return [
        Verdict("no accepted batch job lost", "0 lost", _lost(floodgate), _lost(naive), lost_ok),
        Verdict(
            "interactive p99 within deadline while the upstream is up",
            f"p99 <= {deadline:g}s over requests issued while up",
            fg_lat,
            nv_lat,
            lat_ok,
        ),
        Verdict(
            "upstream requests during the outage",
            f"naive / Floodgate >= {OUTAGE_RATIO:g}x",
            f"{fg_out:,} (naive/Floodgate = {ratio_text})",
            f"{nv_out:,}",
            out_ok,
        ),
        Verdict(
            "drain after recovery",
            f">= {DRAIN_SHARE:.0%} of capacity, < {POST_RECOVERY_ERRORS:.0%} 429/503",
            fg_drain,
            nv_drain,
            drain_ok,
        ),
    ]
