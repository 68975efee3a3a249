"""The admin app's history: the scheduler's last 15 minutes at 1-s resolution.

A :class:`History` samples ``sched.stats()`` every ``every`` seconds on the
scheduler's clock (the injectable one: a ``FakeClock`` drives it in tests)
into a ring buffer of ``seconds / every`` points, so its memory is bounded
whatever runs: at most :data:`MAX_SERIES` lanes and upstreams per point.
``GET /api/history`` serves it and the dashboard draws it on load, so a fresh
page shows the last minutes at once.

Sampling starts when the admin app is built inside a running event loop, or
else on its first request (a mounted app gets no lifespan events), and stops
once the scheduler has stopped. One scheduler has one history, however many
admin apps serve it.
"""

from __future__ import annotations

import math
import weakref
from collections import deque
from typing import TYPE_CHECKING, Any

from ..clock import Clock, TimerHandle
from ..metrics import SchedulerStats

if TYPE_CHECKING:
    from ..scheduler import Scheduler

__all__ = ["MAX_SERIES", "History", "history_for"]

#: most lanes, and most upstreams, one point keeps (the first by name)
MAX_SERIES = 32
#: the default window (seconds) and resolution (seconds)
SECONDS = 900.0
EVERY = 1.0

Point = dict[str, Any]

_HISTORIES: weakref.WeakKeyDictionary[Scheduler, History] = weakref.WeakKeyDictionary()


def _r(value: float | None, digits: int = 3) -> float | None:
    """Rounded (a smaller answer), and ``None`` for NaN or an infinity (not JSON)."""
    return None if value is None or not math.isfinite(value) else round(value, digits)


class History:
    """A ring buffer of the scheduler's state, one point every ``every`` seconds.

    Each point: ``t`` (the clock's wall time, epoch seconds), ``gate`` (open or
    not), ``lanes`` ``{name: {queued, running, done, shed, failed, wait}}``
    (``done``/``shed``/``failed`` per second since the previous point; ``wait``
    the p95 wait in seconds or ``None``) and ``upstreams`` ``{name: {sent,
    limit, breaker, errors}}`` (requests per second sent, the learned rate
    limit or ``None``, the breaker's state, the recent error rate).
    """

    def __init__(
        self,
        sched: Scheduler,
        *,
        seconds: float = SECONDS,
        every: float = EVERY,
        clock: Clock | None = None,
    ) -> None:
        if not every > 0 or not seconds >= every:
            raise ValueError(f"need 0 < every <= seconds, got every={every!r}, seconds={seconds!r}")
        # weakly: the registry maps a scheduler to its history, and must not keep it alive
        self._sched = weakref.ref(sched)
        self.clock: Clock = clock if clock is not None else sched.clock
        self.every = float(every)
        self.seconds = float(seconds)
        self._points: deque[Point] = deque(maxlen=int(seconds / every))
        self._counters: dict[str, tuple[int, int, int]] = {}
        self._last: float | None = None
        self._timer: TimerHandle | None = None

    def __len__(self) -> int:
        return len(self._points)

    def points(self, since: float | None = None) -> list[Point]:
        """The points, oldest first; only those after ``since`` (wall time) if given."""
        if since is None:
            return list(self._points)
        return [p for p in self._points if p["t"] > since]

    def sample(self, stats: SchedulerStats | None = None) -> Point:
        """Take one point now (from ``stats``, or a fresh ``sched.stats()``)."""
        if stats is None:
            sched = self._sched()
            if sched is None:
                raise RuntimeError("the scheduler of this history is gone")
            stats = sched.stats()
        now = self.clock.now()
        dt = None if self._last is None else now - self._last
        self._last = now
        lanes: dict[str, dict[str, Any]] = {}
        counters: dict[str, tuple[int, int, int]] = {}
        for name in sorted(stats.lanes)[:MAX_SERIES]:
            lane = stats.lanes[name]
            now_counts = (lane.completed, lane.shed_total, lane.failed)
            before = self._counters.get(name)
            rates = [
                None if before is None or not dt else max(0, a - b) / dt
                for a, b in zip(now_counts, before or now_counts, strict=True)
            ]
            counters[name] = now_counts
            lanes[name] = {
                "queued": lane.queued,
                "running": lane.running,
                "done": _r(rates[0]),
                "shed": _r(rates[1]),
                "failed": _r(rates[2]),
                "wait": _r(lane.wait.p95, 6),
            }
        self._counters = counters
        upstreams = {
            name: {
                "sent": _r(u.sent_rate),
                "limit": _r(u.learned_rate),
                "breaker": u.breaker,
                "errors": _r(u.error_rate, 4),
            }
            for name, u in sorted(stats.upstreams.items())[:MAX_SERIES]
        }
        point: Point = {
            "t": round(self.clock.wall(), 3),
            "gate": stats.gate_open,
            "lanes": lanes,
            "upstreams": upstreams,
        }
        self._points.append(point)
        return point

    def json(self, since: float | None = None) -> dict[str, Any]:
        """What ``/api/history`` answers."""
        return {"every": self.every, "seconds": self.seconds, "points": self.points(since)}

    @property
    def sampling(self) -> bool:
        return self._timer is not None

    def start(self) -> None:
        """Sample now and every ``every`` seconds until the scheduler stops (idempotent).

        A :class:`~scheduler.clock.SystemClock` needs a running event loop."""
        if self._timer is None:
            self._tick()

    def stop(self) -> None:
        """Stop sampling (the points stay)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _tick(self) -> None:
        self._timer = None
        sched = self._sched()
        stats = None if sched is None else sched.stats()
        if stats is None or stats.state == "stopped":
            return
        if stats.state != "new":
            self.sample(stats)
        self._timer = self.clock.call_at(self.clock.now() + self.every, self._tick)


def history_for(sched: Scheduler) -> History:
    """The scheduler's one :class:`History` (made on first use, on its clock)."""
    history = _HISTORIES.get(sched)
    if history is None:
        history = _HISTORIES[sched] = History(sched)
    return history
