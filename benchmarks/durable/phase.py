"""What one timed phase measured, and median (min..max) over repetitions."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .._common import Stopwatch, fmt_rate, median, percentile

TIME_LIMIT_S = 120.0  # any one timed phase


@dataclass(frozen=True, slots=True)
class Phase:
    """One timed phase: jobs, wall seconds, CPU, and (Floodgate) SQLite transactions."""

    jobs: int
    seconds: float
    thread_cpu: float  # the timing thread (Floodgate: the event loop's)
    process_cpu: float  # every thread of the process
    transactions: int = 0
    #: of ``transactions``, those run inline on the event loop's thread
    inline: int = 0
    #: wall seconds of each named part of the phase (the SQL floors: each statement)
    parts: tuple[tuple[str, float], ...] = ()

    @classmethod
    def of(
        cls,
        watch: Stopwatch,
        jobs: int,
        transactions: int = 0,
        parts: dict[str, float] | None = None,
        *,
        inline: int = 0,
    ) -> Phase:
        return cls(
            jobs, watch.seconds, watch.thread_cpu, watch.process_cpu, transactions, inline,
            tuple((parts or {}).items()),
        )  # fmt: skip

    def part_us(self, name: str) -> float:
        """Microseconds per transaction spent in part ``name``."""
        return dict(self.parts)[name] / max(1, self.transactions) * 1e6

    @property
    def rate(self) -> float:
        return self.jobs / self.seconds

    @property
    def loop_us(self) -> float:
        """Event-loop (timing thread) CPU per job, in microseconds."""
        return self.thread_cpu / self.jobs * 1e6


@dataclass(frozen=True, slots=True)
class Latencies:
    """Latency samples of one phase (seconds) and what else it measured."""

    samples: tuple[float, ...]
    jobs_per_s: float = 0.0  # e.g. the drain rate while the samples were taken

    def p(self, q: float) -> float:
        return percentile(self.samples, q)


def spread(values: Sequence[float], fmt: str = "rate") -> str:
    """``median (min..max)`` of one figure over the repetitions."""
    if not values:
        return "-"
    show: Callable[[float], str]
    if fmt == "rate":
        show = fmt_rate
    elif fmt == "ms":
        show = _ms
    elif fmt == "ratio":
        show = _ratio
    else:
        show = _one

    if len(values) == 1:
        return show(values[0])
    return f"{show(median(values))} ({show(min(values))}..{show(max(values))})"


def _ms(seconds: float) -> str:
    ms = seconds * 1000.0
    return f"{ms:.2f} ms" if ms < 10 else f"{ms:,.1f} ms"


def _ratio(value: float) -> str:
    return f"{value:.2f}x"


def _one(value: float) -> str:
    return f"{value:,.1f}"
