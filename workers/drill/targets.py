"""The drill's targets, computed from what the runs recorded (pure functions).

Each Floodgate run (one per variant) is judged on its profile's target set
(``Profile.targets``); the other targets are computed and shown for
information. The naive run is measured the same way, as a baseline.

Compressed profiles (``full``, ``quick``, ``smoke``):

1. **No accepted batch job lost**: after the run the backlog is reopened, as
   a restarted worker would; every accepted job must be there and not DEAD.
2. **Interactive p99 within its deadline whenever the upstream is up**: over
   the interactive requests issued in the ``normal``, ``degraded`` and
   ``recovery`` phases together, the p99 (nearest rank) of time-to-answer is
   at most the end-to-end deadline (each phase's p99 is shown too). An answer
   is a 2xx or a 5xx the upstream itself sent; a request shed by the client,
   timed out, refused with a 429 or never answered counts as a miss, i.e. an
   infinite latency.
3. **Outage requests >= 10x fewer than the naive baseline**: requests that
   reached the upstream while it was down (phase ``outage`` at arrival).
4. **Drain after recovery**: batch jobs completed per second from the start
   of ``recovery`` until the backlog is empty (or the run ends), divided by
   the upstream's capacity ``min(cap / service_time, rate_limit)``, >= 80 %;
   and of all requests that reached the upstream from the start of
   ``recovery`` on, < 1 % answered 429 or 503.

The blip (real time): **lost** as above, and

5. **Interactive served >= 95 % of what the upstream allowed**
   (:func:`interactive_served`);
6. **First success <= 3 s after the outage ends** (:func:`first_success`);
7. **Batch goodput >= 90 % of the rate limit while a backlog waits**
   (:func:`batch_goodput`, the median over 1-s bins);
8. **Whole backlog drained before the end** when the capacity allows it
   (:func:`backlog_drained`);
9. **<= 1 % 429/503** among requests arriving from the start of ``recovery``
   (:func:`error_share`).
"""

from __future__ import annotations

import bisect
import math
import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .config import UP_PHASES, PhaseSpan, Profile, UpstreamConfig
from .records import InteractiveResult, RequestEvent, RunRecord

__all__ = [
    "FIGURES",
    "INVARIANTS",
    "JUDGED",
    "Drain",
    "Drained",
    "FirstSuccess",
    "Goodput",
    "LiveRates",
    "Measures",
    "PhaseLatency",
    "Served",
    "Verdict",
    "backlog_busy",
    "backlog_drained",
    "batch_goodput",
    "drain",
    "error_share",
    "evaluate",
    "evaluate_measures",
    "first_success",
    "interactive_latency",
    "interactive_served",
    "live_rates",
    "measure",
    "nearest_rank",
    "outage_end",
    "peak_pending",
    "requests_in_phase",
    "served_within",
]

OUTAGE_RATIO = 10.0
DRAIN_SHARE = 0.80
POST_RECOVERY_ERRORS = 0.01
BAD_AFTER_RECOVERY = frozenset({429, 503})
SERVED_SHARE = 0.95
FIRST_SUCCESS = 3.0
GOODPUT_SHARE = 0.90
#: the phases the goodput is measured in, the seconds skipped at their start, the bin width
GOODPUT_PHASES = ("normal", "recovery")
GOODPUT_RAMP = 2.0
GOODPUT_BIN = 1.0

#: the targets each profile's target set judges (in report order)
JUDGED: dict[str, tuple[str, ...]] = {
    "compressed": ("lost", "p99", "outage", "drain"),
    "blip": ("lost", "served", "first_success", "goodput", "drained", "errors"),
}
#: judged even on a smoke run (``Profile.smoke``): an invariant, not a timing
INVARIANTS = frozenset({"lost"})
_ALL_TARGETS = (
    "lost",
    "p99",
    "outage",
    "drain",
    "served",
    "first_success",
    "goodput",
    "drained",
    "errors",
)


@dataclass(frozen=True, slots=True)
class Verdict:
    """One target for one Floodgate run, with the naive baseline's figure beside it.

    ``passed`` is ``None`` when the run gave nothing to judge it on;
    ``judged`` is ``False`` for a target outside the profile's target set
    (shown for information only).
    """

    key: str
    name: str
    goal: str
    run: str  # the judged run's label, e.g. "Floodgate defaults"
    figure: str
    passed: bool | None
    judged: bool = True
    baseline: str = ""  # the naive run's figure ("" without a naive run)


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
    """Interactive time-to-answer over some phases.

    ``misses``: calls that missed the deadline, i.e. ``late`` (answered after
    it) plus ``unanswered`` (shed, timed out, refused with a 429, never
    answered: an infinite latency).
    """

    phase: str
    count: int
    misses: int
    p99: float  # seconds; inf when more than 1 % got no answer
    late: int = 0
    unanswered: int = 0


def interactive_latency(
    results: Iterable[InteractiveResult], *phases: str, deadline: float = math.inf
) -> PhaseLatency | None:
    """p99 time-to-answer of the interactive requests issued in ``phases`` (unanswered: inf),
    and how many missed ``deadline`` (answered late, or not at all)."""
    times = [
        r.latency if r.answered and r.latency is not None else math.inf
        for r in results
        if r.phase in phases
    ]
    if not times:
        return None
    unanswered = sum(1 for t in times if math.isinf(t))
    late = sum(1 for t in times if deadline < t < math.inf)
    return PhaseLatency(
        "+".join(phases),
        len(times),
        unanswered + late,
        nearest_rank(times, 99.0),
        late=late,
        unanswered=unanswered,
    )


@dataclass(frozen=True, slots=True)
class LiveRates:
    """Interactive calls per second, by when they were issued: served (a 200 within
    the deadline) and missed (anything else: late, failed, shed, unanswered)."""

    starts: list[float]
    served: list[float]
    missed: list[float]


def live_rates(
    results: Iterable[InteractiveResult], deadline: float, end: float, width: float
) -> LiveRates:
    """:class:`LiveRates` in bins of ``width`` seconds over ``[0, end)``."""
    bins = max(1, math.ceil(end / width - 1e-9))
    served = [0.0] * bins
    missed = [0.0] * bins
    for r in results:
        i = int(r.issued / width)
        if not 0 <= i < bins:
            continue
        ok = r.outcome == "ok" and r.latency is not None and r.latency <= deadline
        (served if ok else missed)[i] += 1.0 / width
    return LiveRates([i * width for i in range(bins)], served, missed)


def served_within(
    results: Iterable[InteractiveResult], deadline: float, *phases: str
) -> tuple[int, int]:
    """``(served, issued)``: interactive calls issued in ``phases`` answered 200 within
    ``deadline``, and all issued in them."""
    issued = served = 0
    for r in results:
        if r.phase in phases:
            issued += 1
            served += r.outcome == "ok" and r.latency is not None and r.latency <= deadline
    return served, issued


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


def outage_end(spans: Sequence[PhaseSpan]) -> float | None:
    """When the upstream came back: the end of the last phase in mode ``down``."""
    return max((s.end for s in spans if s.mode == "down"), default=None)


@dataclass(frozen=True, slots=True)
class PhaseServed:
    phase: str
    issued: int  # interactive calls issued in the phase
    allowed: float  # issued x (1 - the phase's configured error rate)
    served: int  # of those, answered 200 within the end-to-end deadline


@dataclass(frozen=True, slots=True)
class Served:
    phases: tuple[PhaseServed, ...]
    allowed: float
    served: int
    share: float  # served / allowed


def interactive_served(
    results: Iterable[InteractiveResult],
    spans: Sequence[PhaseSpan],
    upstream: UpstreamConfig,
    deadline: float,
) -> Served | None:
    """Interactive calls served, over what the upstream allowed, in the up phases.

    For each phase the upstream is up in (mode ``normal`` or ``degraded``):
    allowed = calls issued in it x (1 - its configured error rate: 0 when
    normal, ``degraded_error_rate`` when degraded); served = calls that got
    a 200 within ``deadline`` of being issued. ``None`` if nothing was allowed.
    """
    rate = {"normal": 0.0, "degraded": upstream.degraded_error_rate}
    issued: Counter[str] = Counter()
    served: Counter[str] = Counter()
    for r in results:
        issued[r.phase] += 1
        if r.outcome == "ok" and r.latency is not None and r.latency <= deadline:
            served[r.phase] += 1
    phases = tuple(
        PhaseServed(s.name, issued[s.name], issued[s.name] * (1.0 - rate[s.mode]), served[s.name])
        for s in spans
        if s.mode in rate
    )
    allowed = sum(p.allowed for p in phases)
    if allowed <= 0:
        return None
    total = sum(p.served for p in phases)
    return Served(phases, allowed, total, total / allowed)


@dataclass(frozen=True, slots=True)
class FirstSuccess:
    since: float  # the end of the outage (run clock)
    arrival: float  # seconds after ``since`` the first request answered 200 arrived
    answered: float | None  # seconds after ``since`` its answer was sent
    lane: str


def first_success(requests: Iterable[RequestEvent], since: float) -> FirstSuccess | None:
    """The first request answered 200 (any lane) arriving at or after ``since``."""
    first = min(
        (r for r in requests if r.status == 200 and r.t >= since),
        key=lambda r: r.t,
        default=None,
    )
    if first is None:
        return None
    answered = None if first.answered is None else first.answered - since
    return FirstSuccess(since, first.t - since, answered, first.lane)


def backlog_busy(
    accepted_at: Sequence[float], completions: Sequence[float], start: float, end: float
) -> bool:
    """Whether accepted-but-not-done batch jobs existed throughout ``[start, end)``.

    Both sequences must be sorted. The backlog only shrinks at a completion,
    so it is enough to look at ``start`` and right after each completion.
    """

    def pending(t: float) -> int:
        return bisect.bisect_right(accepted_at, t) - bisect.bisect_right(completions, t)

    if pending(start) <= 0:
        return False
    lo, hi = bisect.bisect_left(completions, start), bisect.bisect_left(completions, end)
    return all(pending(t) > 0 for t in completions[lo:hi])


@dataclass(frozen=True, slots=True)
class Goodput:
    median: float  # median over the bins of batch 200s / (rate limit - interactive)
    bins: int
    low: float
    high: float


def batch_goodput(
    requests: Sequence[RequestEvent],
    accepted_at: Sequence[float],
    completions: Sequence[float],
    spans: Sequence[PhaseSpan],
    rate_limit: float,
    *,
    phases: Sequence[str] = GOODPUT_PHASES,
    ramp: float = GOODPUT_RAMP,
    width: float = GOODPUT_BIN,
) -> Goodput | None:
    """Batch goodput over the rate limit left to it, in bins where a backlog waited.

    The phases ``phases`` are cut in ``width``-second bins from ``ramp``
    seconds after their start (whole bins only). A bin counts if the batch
    backlog (accepted jobs not done) was non-empty throughout it; its ratio is
    the batch requests arriving in it that were answered 200, per second, over
    ``rate_limit`` minus the interactive requests per second that arrived in
    it and took a token (any answer but 429). ``None`` if no bin counts.
    """
    ok = sorted(r.t for r in requests if r.lane == "batch" and r.status == 200)
    interactive = sorted(r.t for r in requests if r.lane == "interactive" and r.status != 429)
    accepted, done = sorted(accepted_at), sorted(completions)

    def count(times: Sequence[float], a: float, b: float) -> int:
        return bisect.bisect_left(times, b) - bisect.bisect_left(times, a)

    ratios: list[float] = []
    for span in spans:
        if span.name not in phases:
            continue
        for k in range(max(0, int((span.end - span.start - ramp) / width + 1e-9))):
            a = span.start + ramp + k * width
            b = a + width
            left = rate_limit - count(interactive, a, b) / width
            if left > 0 and backlog_busy(accepted, done, a, b):
                ratios.append(count(ok, a, b) / width / left)
    if not ratios:
        return None
    return Goodput(statistics.median(ratios), len(ratios), min(ratios), max(ratios))


@dataclass(frozen=True, slots=True)
class Drained:
    accepted: int
    done: int  # accepted jobs done by the end of the script
    capacity: float  # estimate: (rate limit - interactive rate) x seconds in mode normal
    last: float | None  # when the last job was done, if all were by the end

    @property
    def applicable(self) -> bool:
        """The capacity estimate allows draining every accepted job."""
        return 0 < self.accepted <= self.capacity

    @property
    def drained(self) -> bool:
        return self.done >= self.accepted


def backlog_drained(
    completions: Sequence[float],
    accepted: int,
    end: float,
    spans: Sequence[PhaseSpan],
    rate_limit: float,
    interactive_rate: float,
) -> Drained:
    """Whether every accepted job was done by ``end``, and the capacity estimate.

    Capacity = the rate limit x the seconds the upstream is fully up (mode
    ``normal``: the normal and recovery phases), minus the interactive load
    over those seconds; the degraded phase is not counted.
    """
    seconds = sum(s.end - s.start for s in spans if s.mode == "normal")
    capacity = max(0.0, (rate_limit - interactive_rate) * seconds)
    within = sorted(t for t in completions if t <= end)
    last = within[accepted - 1] if 0 < accepted <= len(within) else None
    return Drained(accepted, min(len(within), accepted), capacity, last)


# -------------------------------------------------------------- per run, then verdicts


def _recovery_start(spans: Sequence[PhaseSpan], end: float) -> float:
    return next((s.start for s in spans if s.name == "recovery"), end)


@dataclass(frozen=True, slots=True)
class Measures:
    """Everything the targets need from one run, computed once."""

    label: str
    client: str
    lost: int
    accepted: int
    latency: PhaseLatency | None  # pooled over the up phases
    latency_text: str
    outage_requests: int
    capacity: float
    drain: Drain | None
    errors: tuple[int, int, float]  # 429/503 since recovery started
    served: Served | None
    first: FirstSuccess | None
    goodput: Goodput | None
    drained: Drained
    #: (served, issued): live calls issued while up that got a 200 within the deadline
    live: tuple[int, int] = (0, 0)
    #: most accepted batch jobs held only in memory at one time (all lost on a crash);
    #: 0 for a durable client
    in_memory_peak: int = 0

    def figures(self) -> dict[str, float | None]:
        """The run's numeric figures (for the ``--repeat`` summary); see :data:`FIGURES`."""
        return {
            "lost": float(self.lost),
            "p99": None if self.latency is None else self.latency.p99,
            "served": None if self.served is None else self.served.share,
            "first_success": None if self.first is None else self.first.arrival,
            "goodput": None if self.goodput is None else self.goodput.median,
            "goodput_bins": None if self.goodput is None else float(self.goodput.bins),
            "done_by_end": float(self.drained.done),
            "drained_at": self.drained.last,
            "errors": self.errors[2],
            "outage": float(self.outage_requests),
            "drain": None if self.drain is None else self.drain.share,
        }


#: the figures of :meth:`Measures.figures`: key, title, kind (count, seconds, share)
FIGURES: tuple[tuple[str, str, str], ...] = (
    ("lost", "accepted batch jobs lost", "count"),
    ("p99", "interactive p99 while up", "seconds"),
    ("served", "interactive served / allowed", "share"),
    ("first_success", "first 200 after the outage (arrival)", "seconds"),
    ("goodput", "batch goodput, median over 1-s bins", "share"),
    ("goodput_bins", "goodput bins (backlog waiting)", "count"),
    ("done_by_end", "batch jobs done by the end", "count"),
    ("drained_at", "backlog drained at (run clock)", "seconds"),
    ("errors", "429/503 share from recovery start", "share"),
    ("outage", "upstream requests during the outage", "count"),
    ("drain", "drain after recovery / capacity", "share"),
)


def measure(profile: Profile, run: RunRecord) -> Measures:
    """Compute every target's figure for one run."""
    up = profile.upstream
    recovery = _recovery_start(run.spans, run.end)
    accepted_at = run.accepted_at or [0.0] * run.batch_accepted
    latency_text, pooled = _latency(run, profile.interactive_deadline)
    back = outage_end(run.spans)
    return Measures(
        label=run.label,
        client=run.client,
        lost=run.batch_lost,
        accepted=run.batch_accepted,
        latency=pooled,
        latency_text=latency_text,
        outage_requests=requests_in_phase(run.requests, "outage"),
        capacity=up.capacity,
        drain=drain(run.completions, run.batch_accepted, recovery, run.end, up.capacity),
        errors=error_share(run.requests, recovery),
        served=interactive_served(run.interactive, run.spans, up, profile.interactive_deadline),
        first=None if back is None else first_success(run.requests, back),
        goodput=batch_goodput(run.requests, accepted_at, run.completions, run.spans, up.rate_limit),
        drained=backlog_drained(
            run.completions,
            run.batch_accepted,
            run.end,
            run.spans,
            up.rate_limit,
            profile.interactive_rate,
        ),
        live=served_within(run.interactive, profile.interactive_deadline, *UP_PHASES),
        in_memory_peak=0 if run.durable else peak_pending(accepted_at, run.completions),
    )


def peak_pending(accepted_at: Sequence[float], completions: Sequence[float]) -> int:
    """The most accepted-but-not-done jobs at any one time."""
    events = sorted([(t, 1) for t in accepted_at] + [(t, -1) for t in completions])
    pending = peak = 0
    for _, step in events:
        pending += step
        peak = max(peak, pending)
    return peak


def _seconds(p99: float) -> str:
    return "miss" if math.isinf(p99) else f"{p99:.2f}s"


def _latency(run: RunRecord, deadline: float) -> tuple[str, PhaseLatency | None]:
    """Pooled p99 over every up phase (the target), then each phase's (to diagnose);
    "missed" counts the calls that missed ``deadline`` (late or unanswered)."""
    pooled = interactive_latency(run.interactive, *UP_PHASES, deadline=deadline)
    if pooled is None:
        return "no requests", None
    parts = [
        f"{lat.phase} {_seconds(lat.p99)} ({lat.misses}/{lat.count} missed)"
        for lat in (
            interactive_latency(run.interactive, phase, deadline=deadline) for phase in UP_PHASES
        )
        if lat is not None
    ]
    text = (
        f"p99 {_seconds(pooled.p99)}; {pooled.misses}/{pooled.count} missed the "
        f"{deadline:g}s deadline ({pooled.late} answered late, {pooled.unanswered} not "
        f"answered); by phase: {', '.join(parts)}"
    )
    return text, pooled


def _errors_text(m: Measures) -> str:
    bad, total, share = m.errors
    return f"{bad:,}/{total:,} = {share:.1%} answered 429/503"


def _drain_text(m: Measures) -> str:
    d = m.drain
    if d is None:
        return f"nothing pending at recovery; {_errors_text(m)}"
    tail = "emptied" if d.emptied else f"{d.pending_at_start - d.completed:,} left"
    return (
        f"{d.rate:.1f} jobs/s = {d.share:.0%} of {m.capacity:g}/s "
        f"({d.completed:,} in {d.window:.1f}s, {tail}); {_errors_text(m)}"
    )


def _served_text(m: Measures) -> str:
    s = m.served
    if s is None:
        return "no interactive call while up"
    parts = ", ".join(f"{p.phase} {p.served}/{p.allowed:.4g}" for p in s.phases)
    return f"{s.share:.1%} ({s.served} served / {s.allowed:.4g} allowed; {parts})"


def _first_text(m: Measures) -> str:
    f = m.first
    if f is None:
        return "no 200 after the outage"
    answered = "" if f.answered is None else f", answered at +{f.answered:.2f}s"
    return f"{f.arrival:.2f}s after the outage ended ({f.lane}{answered})"


def _goodput_text(m: Measures) -> str:
    g = m.goodput
    if g is None:
        return "no 1-s bin with a waiting backlog"
    return f"median {g.median:.0%} over {g.bins} bins (min {g.low:.0%}, max {g.high:.0%})"


def _drained_text(m: Measures) -> str:
    d = m.drained
    if d.accepted == 0:
        return "no job accepted"
    head = (
        f"all {d.accepted:,} done by {d.last:.1f}s"
        if d.drained and d.last is not None
        else f"{d.done:,} of {d.accepted:,} done by the end"
    )
    if not d.applicable:
        return f"{head}; capacity estimate {d.capacity:,.0f} < {d.accepted:,} accepted: n/a"
    return f"{head} (capacity estimate {d.capacity:,.0f})"


def _judge(key: str, m: Measures, naive: Measures | None, profile: Profile) -> bool | None:
    if key == "lost":
        return None if m.accepted == 0 else m.lost == 0
    if key == "p99":
        return None if m.latency is None else m.latency.p99 <= profile.interactive_deadline
    if key == "outage":
        if naive is None or naive.outage_requests == 0:
            return None
        return m.outage_requests == 0 or naive.outage_requests / m.outage_requests >= OUTAGE_RATIO
    if key == "drain":
        if m.drain is None:
            return None
        return m.drain.share >= DRAIN_SHARE and m.errors[2] < POST_RECOVERY_ERRORS
    if key == "served":
        return None if m.served is None else m.served.share >= SERVED_SHARE
    if key == "first_success":
        return None if m.first is None else m.first.arrival <= FIRST_SUCCESS
    if key == "goodput":
        return None if m.goodput is None else m.goodput.median >= GOODPUT_SHARE
    if key == "drained":
        return m.drained.drained if m.drained.applicable else None
    if key == "errors":
        return None if m.errors[1] == 0 else m.errors[2] <= POST_RECOVERY_ERRORS
    raise ValueError(f"unknown target {key!r}")


def _text(key: str, m: Measures, naive: Measures | None) -> str:
    if key == "lost":
        if m.in_memory_peak:
            return (
                f"{m.lost} of {m.accepted:,} (memory only: up to {m.in_memory_peak:,} held at "
                "once, all lost on a crash)"
            )
        return f"{m.lost} of {m.accepted:,}"
    if key == "p99":
        return m.latency_text
    if key == "outage":
        if m.client == "naive" or naive is None:
            return f"{m.outage_requests:,}"
        ratio = (
            "inf" if m.outage_requests == 0 else f"{naive.outage_requests / m.outage_requests:.1f}x"
        )
        return f"{m.outage_requests:,} (naive/Floodgate = {ratio})"
    texts = {
        "drain": _drain_text,
        "served": _served_text,
        "first_success": _first_text,
        "goodput": _goodput_text,
        "drained": _drained_text,
        "errors": _errors_text,
    }
    return texts[key](m)


def _name_goal(key: str, profile: Profile) -> tuple[str, str]:
    deadline = profile.interactive_deadline
    return {
        "lost": ("no accepted batch job lost", "0 lost"),
        "p99": (
            "interactive p99 within deadline while the upstream is up",
            f"p99 <= {deadline:g}s over requests issued while up",
        ),
        "outage": (
            "upstream requests during the outage",
            f"naive / Floodgate >= {OUTAGE_RATIO:g}x",
        ),
        "drain": (
            "drain after recovery",
            f">= {DRAIN_SHARE:.0%} of capacity, < {POST_RECOVERY_ERRORS:.0%} 429/503",
        ),
        "served": (
            "interactive served while the upstream is up",
            f">= {SERVED_SHARE:.0%} of what the upstream allowed, 200 within {deadline:g}s",
        ),
        "first_success": (
            "first success after the outage",
            f"first 200 arrives <= {FIRST_SUCCESS:g}s after the outage ends",
        ),
        "goodput": (
            "batch goodput while a backlog waits",
            f"median >= {GOODPUT_SHARE:.0%} of (rate limit - interactive) in normal and recovery",
        ),
        "drained": (
            "whole backlog drained before the end",
            "every accepted job done (n/a when the capacity estimate is short)",
        ),
        "errors": (
            "429/503 after recovery starts",
            f"<= {POST_RECOVERY_ERRORS:.0%} of requests arriving from recovery on",
        ),
    }[key]


def evaluate(profile: Profile, runs: Sequence[RunRecord]) -> list[Verdict]:
    """Every target for every Floodgate run (the naive run beside each as a baseline).

    Targets in the profile's set come first (judged), then the others
    (``judged=False``, for information). A smoke profile judges only the
    :data:`INVARIANTS`.
    """
    return evaluate_measures(profile, [measure(profile, run) for run in runs])


def evaluate_measures(profile: Profile, measures: Sequence[Measures]) -> list[Verdict]:
    """:func:`evaluate` from already computed :class:`Measures`."""
    naive = next((m for m in measures if m.client == "naive"), None)
    judged = tuple(k for k in JUDGED[profile.targets] if not profile.smoke or k in INVARIANTS)
    order = list(dict.fromkeys([*judged, *JUDGED[profile.targets], *_ALL_TARGETS]))
    verdicts: list[Verdict] = []
    for key in order:
        name, goal = _name_goal(key, profile)
        baseline = "" if naive is None else _text(key, naive, naive)
        verdicts.extend(
            Verdict(
                key=key,
                name=name,
                goal=goal,
                run=m.label,
                figure=_text(key, m, naive),
                passed=_judge(key, m, naive, profile),
                judged=key in judged,
                baseline=baseline,
            )
            for m in measures
            if m.client != "naive"
        )
    return verdicts
