"""What one run of the drill recorded: plain data the report and the plot read.

Every time is in seconds since the scenario started (``Timeline.now()``), for
the upstream's log and the clients' records alike, so the two line up.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from .config import PhaseSpan

__all__ = [
    "InteractiveResult",
    "RequestEvent",
    "RunRecord",
    "Sample",
    "Tally",
    "Timeline",
]

#: interactive outcomes that count as answered (the caller got the upstream's answer)
ANSWERED = ("ok", "upstream_error")


class Timeline:
    """The run's clock: monotonic seconds since :meth:`start`."""

    def __init__(self) -> None:
        self._t0 = time.monotonic()

    def start(self) -> None:
        self._t0 = time.monotonic()

    def now(self) -> float:
        return time.monotonic() - self._t0


@dataclass(frozen=True, slots=True)
class RequestEvent:
    """One request as the upstream saw it: arrival, phase at arrival, lane, answer.

    ``answered``: when the answer was sent (``None`` if not recorded).
    """

    t: float
    phase: str
    lane: str
    status: int
    answered: float | None = None


@dataclass(frozen=True, slots=True)
class InteractiveResult:
    """One interactive request from the caller's side.

    ``outcome``: ``ok``; ``upstream_error`` (a 5xx answer); ``rate_limited``
    (a 429: the shared quota was spent); ``shed`` (refused by the client-side
    scheduler); ``timeout``; ``transport``; ``unfinished`` (no answer by the
    end of the run). ``latency`` is ``None`` for ``unfinished``.
    """

    issued: float
    phase: str
    latency: float | None
    outcome: str
    status: int | None = None

    @property
    def answered(self) -> bool:
        return self.outcome in ANSWERED


@dataclass(frozen=True, slots=True)
class Sample:
    """The state of both sides at one instant (every ~100 ms).

    ``queued_*`` and ``running_*`` are the client's own view (jobs waiting for
    and holding a seat); ``in_flight_*`` the upstream's (requests being served).
    ``gate`` is ``open``, ``closed`` or ``none`` (a client without a gate);
    ``breaker`` and ``concurrency_limit`` come from Floodgate's upstream
    statistics when it reports them.
    """

    t: float
    queued_interactive: int
    queued_batch: int
    running_interactive: int
    running_batch: int
    in_flight_interactive: int
    in_flight_batch: int
    gate: str
    gate_reason: str | None = None
    breaker: str | None = None
    concurrency_limit: int | None = None
    paused_for: float | None = None


class Tally:
    """Batch bookkeeping on the harness side: accepted jobs and first successes."""

    def __init__(self, timeline: Timeline) -> None:
        self._timeline = timeline
        self.accepted = 0
        self.rejected = 0
        self.accepted_at: list[float] = []  # when each accepted job was accepted
        self.done: set[int] = set()
        self.completions: list[float] = []  # time of each job's first success
        self.duplicates = 0  # a job that succeeded again (at-least-once delivery)

    def batch_done(self, doc: int) -> None:
        if doc in self.done:
            self.duplicates += 1
            return
        self.done.add(doc)
        self.completions.append(self._timeline.now())

    def batch_accepted(self) -> None:
        self.accepted += 1
        self.accepted_at.append(self._timeline.now())

    @property
    def pending(self) -> int:
        return self.accepted - len(self.done)


@dataclass(slots=True, kw_only=True)
class RunRecord:
    """Everything one client's run produced."""

    client: str  # "floodgate" | "naive"
    spans: tuple[PhaseSpan, ...]
    end: float
    requests: list[RequestEvent]
    interactive: list[InteractiveResult]
    completions: list[float]
    samples: list[Sample]
    batch_accepted: int
    batch_rejected: int
    batch_done: int
    batch_duplicates: int
    #: accepted jobs that are gone: DEAD, missing from the backlog, or (naive)
    #: unfinished and held only in memory when the run stopped
    batch_lost: int
    lost_detail: str
    peak_in_flight: int
    status_by_phase: Mapping[str, Mapping[int, int]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    #: the Floodgate set-up ("tuned", "defaults", "rpm"); "" for the naive client
    variant: str = ""
    #: when each accepted batch job was accepted (empty if not recorded)
    accepted_at: list[float] = field(default_factory=list)

    @property
    def durable(self) -> bool:
        """Accepted batch jobs survive a crash (Floodgate's backlog); the naive client
        holds them only in memory."""
        return self.client == "floodgate"

    @property
    def label(self) -> str:
        """How reports name the run: ``Floodgate defaults``, ``naive``."""
        if self.client == "floodgate":
            return f"Floodgate {self.variant}" if self.variant else "Floodgate"
        return self.client
