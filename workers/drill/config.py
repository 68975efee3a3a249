"""The drill's script: the upstream's shape, the phases, the load, the budgets.

One :class:`Profile` is one incident. It is played once per Floodgate variant
it lists (:data:`VARIANTS`) and once through the naive baseline, one after
the other, each against a fresh simulated upstream, so all see the same script::

    normal ──> outage (503) ──> degraded (slow + some 5xx) ──> recovery
      ^ a burst of batch jobs arrives here; interactive traffic is steady throughout

Compressed profiles (variants ``tuned`` and ``defaults``): ``full`` takes
about 36 s per client (~2 min for the drill), ``quick`` about 9 s, ``smoke``
(for tests) about 4 s; ``quick`` and ``smoke`` are smoke runs (targets shown,
not judged, but for no accepted job lost). ``blip`` plays a short real-time incident (4 min per
client, variants ``defaults`` and ``rpm``: Floodgate's own health timings);
``blip-short`` is the same shape in 24 s, for an integration test.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

__all__ = [
    "PROFILES",
    "TARGET_SETS",
    "VARIANTS",
    "HealthTiming",
    "Phase",
    "PhaseSpan",
    "Profile",
    "UpstreamConfig",
]

#: the upstream modes a phase can put the simulated API in
MODES = ("normal", "down", "degraded")
#: phases in which the upstream is up (answers, possibly slowly or with some errors)
UP_PHASES = ("normal", "degraded", "recovery")
#: how Floodgate can be set up for a run (see ``floodgate_client.VARIANT_SETUPS``)
VARIANTS = ("tuned", "defaults", "rpm")
#: which targets a profile is judged on (the others are shown for information)
TARGET_SETS = ("compressed", "blip")


@dataclass(frozen=True, slots=True, kw_only=True)
class UpstreamConfig:
    """The simulated LLM API.

    Args:
        max_in_flight: hard concurrency cap; beyond it: 429 + ``Retry-After``.
        service_time: seconds per answer in normal mode (+-20 % jitter).
        rate_limit: token-bucket refill, requests per second.
        burst: token-bucket size (requests); ``x-ratelimit-limit-requests``.
        degraded_service_time: seconds per answer in degraded mode.
        degraded_error_rate: share of degraded answers that are 500 or 503.
        down_retry_after: ``Retry-After`` (seconds) on the 503s of an outage, or None.
        seed: the random generator's seed (jitter, which degraded answers fail).
    """

    max_in_flight: int = 12
    service_time: float = 0.05
    rate_limit: float = 100.0
    burst: float = 50.0
    degraded_service_time: float = 0.2
    degraded_error_rate: float = 0.15
    down_retry_after: int | None = 2
    seed: int = 7

    @property
    def capacity(self) -> float:
        """Requests per second the upstream can really serve: min(cap / service, rate)."""
        return min(self.max_in_flight / self.service_time, self.rate_limit)


@dataclass(frozen=True, slots=True, kw_only=True)
class HealthTiming:
    """Floodgate's health time constants, compressed like the script is.

    A real outage lasts minutes to hours; the drill plays it in seconds, so a
    breaker cooldown or an error-rate window meant for real time would outlast
    the whole drill. These values are handed to Floodgate's per-upstream
    settings (when the scheduler offers them) and shown in the report.
    """

    breaker_cooldown: float = 1.0
    breaker_max_cooldown: float = 4.0
    window: float = 3.0
    #: seconds between active health probes (GET /healthz): ends an open
    #: breaker's cool-down as soon as the upstream answers again
    probe_interval: float = 0.1


@dataclass(frozen=True, slots=True)
class Phase:
    """A stretch of the incident: its name, the upstream's mode, its length (s)."""

    name: str
    mode: str
    seconds: float


@dataclass(frozen=True, slots=True)
class PhaseSpan:
    """A phase placed on the run's clock (seconds since the scenario started)."""

    name: str
    mode: str
    start: float
    end: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Profile:
    """One compressed incident and the load played against it.

    Interactive calls get an end-to-end budget ``interactive_deadline``:
    Floodgate is told to *start* them within half of it (``deadline=``) and to
    *run* them within the other half (``timeout=``). ``interactive_seats``,
    ``batch_seats`` and ``health`` only shape the ``tuned`` variant.
    ``variants``: the Floodgate set-ups played (the naive client always is);
    ``targets``: the target set the verdict is on (see :data:`TARGET_SETS`);
    ``smoke``: a smoke run, too compressed to judge: its targets are measured and
    shown but not judged, except the invariant that no accepted job is lost.
    """

    name: str
    phases: tuple[Phase, ...]
    batch_jobs: int
    burst_at: float = 0.3
    burst_over: float = 1.0
    interactive_rate: float = 8.0
    interactive_deadline: float = 2.0
    interactive_seats: int = 4
    #: the upstream's cap (12) minus the 2 seats the interactive lane reserves
    batch_seats: int = 10
    sample_every: float = 0.1
    upstream: UpstreamConfig = field(default_factory=UpstreamConfig)
    health: HealthTiming = field(default_factory=HealthTiming)
    variants: tuple[str, ...] = ("tuned", "defaults")
    targets: str = "compressed"
    #: seconds between progress lines inside a phase (None: only at phase changes)
    progress_every: float | None = None
    smoke: bool = False

    def __post_init__(self) -> None:
        unknown = [v for v in self.variants if v not in VARIANTS]
        if unknown or not self.variants:
            raise ValueError(f"variants must be some of {VARIANTS}, got {self.variants!r}")
        if self.targets not in TARGET_SETS:
            raise ValueError(f"targets must be one of {TARGET_SETS}, got {self.targets!r}")

    @property
    def duration(self) -> float:
        return sum(p.seconds for p in self.phases)

    @property
    def spans(self) -> tuple[PhaseSpan, ...]:
        spans: list[PhaseSpan] = []
        start = 0.0
        for phase in self.phases:
            spans.append(PhaseSpan(phase.name, phase.mode, start, start + phase.seconds))
            start += phase.seconds
        return tuple(spans)

    def phase_at(self, t: float) -> str:
        """The phase in effect at ``t`` seconds (the last one after the end)."""
        for span in self.spans:
            if t < span.end:
                return span.name
        return self.phases[-1].name

    @property
    def interactive_count(self) -> int:
        return math.floor(self.duration * self.interactive_rate)


def _phases(normal: float, outage: float, degraded: float, recovery: float) -> tuple[Phase, ...]:
    return (
        Phase("normal", "normal", normal),
        Phase("outage", "down", outage),
        Phase("degraded", "degraded", degraded),
        Phase("recovery", "normal", recovery),
    )


PROFILES: dict[str, Profile] = {
    "full": Profile(name="full", phases=_phases(6.0, 10.0, 6.0, 14.0), batch_jobs=2_000),
    "quick": Profile(
        name="quick",
        phases=_phases(1.5, 2.5, 1.5, 3.5),
        batch_jobs=400,
        health=HealthTiming(breaker_cooldown=0.5, breaker_max_cooldown=1.5, window=1.5),
        smoke=True,
    ),
    "smoke": Profile(
        name="smoke",
        phases=_phases(0.8, 1.2, 0.8, 1.6),
        batch_jobs=120,
        burst_over=0.3,
        interactive_rate=10.0,
        health=HealthTiming(breaker_cooldown=0.3, breaker_max_cooldown=0.8, window=1.0),
        smoke=True,
    ),
}

#: the blip's upstream: a small per-second bucket, 10x slower and 30 % 5xx when degraded
BLIP_UPSTREAM = UpstreamConfig(
    max_in_flight=12,
    service_time=0.05,
    rate_limit=40.0,
    burst=5.0,
    degraded_service_time=0.5,
    degraded_error_rate=0.3,
    down_retry_after=2,
)

PROFILES["blip"] = Profile(
    name="blip",
    phases=_phases(60.0, 60.0, 30.0, 90.0),
    batch_jobs=3_000,
    burst_at=1.0,
    burst_over=5.0,
    interactive_rate=4.0,
    interactive_deadline=2.0,
    sample_every=0.2,
    upstream=BLIP_UPSTREAM,
    variants=("defaults", "rpm"),
    targets="blip",
    progress_every=15.0,
)
#: the blip's shape compressed as far as CI time needs (the real-loopback test)
PROFILES["blip-short"] = replace(
    PROFILES["blip"],
    name="blip-short",
    phases=_phases(6.0, 6.0, 3.0, 9.0),
    batch_jobs=300,
    burst_at=0.5,
    burst_over=1.0,
    sample_every=0.1,
    progress_every=None,
)
