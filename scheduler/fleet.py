"""One upstream budget for every process that shares a backlog.

A provider's limit belongs to the API key, not to the process. Processes that
share a backlog (one SQLite file on a machine, or one PostgreSQL database)
share this about each upstream, through small tables beside the backlog::

    holds       a Retry-After pause, or an open breaker, seen by one process
                holds the upstream in all of them until the same wall-clock
                time; while one process's breaker is open, only it runs the
                trials (the others refuse live calls or let them wait)
    presence    each process says which upstreams it knows, and which of them
                it used in the last ``active_for`` seconds, at every exchange;
                ``rpm`` / ``tpm`` and the learned rate are split between the
                processes using an upstream; a process that is not using it
                yet reckons with every process that knows it, so a fleet that
                wakes up at once starts at its share instead of a burst (a
                crashed process drops out ``member_ttl`` seconds after its
                last exchange)
    cuts        the learned rate's last cut (after a 429) in any process: every
                process follows the latest cut's curve, so one 429 teaches the
                whole fleet and the processes probe in step, not each for itself
    operator    a fleet-wide gate pause with who and why
                (``gate.pause(reason, fleet=True)``, ``floodgate pause --fleet``)

:class:`FleetSync` exchanges that with the store every ``interval`` seconds
(0.25 s: a pause reaches every process within about that), one round trip,
never one per request. If the store cannot be reached a process keeps the
last split it saw, so it never sends more than its share, and logs
``fleet.unreachable`` once (``fleet.reachable`` when it is back).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import random
import socket
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from .breaker import BreakerState
from .clock import Clock
from .logs import get_logger
from .metrics import FleetStats
from .task_group import cancel_and_wait

if TYPE_CHECKING:
    from .upstream import UpstreamHealth

__all__ = [
    "FleetStore",
    "FleetSync",
    "FleetView",
    "Hold",
    "MemoryFleetStore",
    "OperatorPause",
    "SharedCut",
    "new_member_id",
]

_log = get_logger()

#: hold kinds
RETRY_AFTER = "retry_after"
BREAKER_OPEN = "breaker_open"
PROBE = "probe"  # the member that runs the upstream's probe for the fleet (a lease)
PROBE_FAILED = "probe_failed"  # ... and its probe fails
#: kinds whose setter may shorten its own hold (end it early)
OWNED = (BREAKER_OPEN, PROBE, PROBE_FAILED)
#: seconds an open breaker's hold reaches past its next trial (refreshed every sync)
_BREAKER_MARGIN = 1.0
#: a local pause is published when it ends this much later than what the fleet knows
_NEWER = 0.05
#: another process's pause is held up to this share of it longer here (random) ...
_JITTER = 0.1
#: ... and at most this many seconds longer
_MAX_JITTER = 0.5


def new_member_id() -> str:
    """An id for this process in the fleet: host, pid and a random suffix."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True, slots=True)
class Hold:
    """An upstream held fleet-wide until ``until`` (wall-clock seconds)."""

    upstream: str
    kind: str  # RETRY_AFTER or BREAKER_OPEN
    until: float
    by: str  # the member that set it


@dataclass(frozen=True, slots=True)
class OperatorPause:
    """A fleet-wide pause of the gated lanes: why, who, since when (wall clock)."""

    reason: str
    by: str
    at: float


@dataclass(frozen=True, slots=True)
class SharedCut:
    """A cut of an upstream's learned rate (after a 429) made by member ``by`` at
    wall-clock time ``at``: the curve (:meth:`LearnedRate.curve`) it set."""

    upstream: str
    at: float
    peak: float
    k: float
    c: float
    by: str


@dataclass(frozen=True, slots=True)
class FleetView:
    """What the store holds now: live holds, the operator pause, per upstream the
    processes using it (``members``) and knowing it (``alive``), and the latest cuts."""

    holds: tuple[Hold, ...] = ()
    operator: OperatorPause | None = None
    members: Mapping[str, int] = field(default_factory=dict)
    alive: Mapping[str, int] = field(default_factory=dict)
    cuts: Mapping[str, SharedCut] = field(default_factory=dict)


class FleetStore(Protocol):
    """Where a fleet's shared upstream state lives (the backlog's database)."""

    async def exchange(
        self,
        member: str,
        now: float,
        holds: Sequence[Hold],
        active: Sequence[str],
        member_ttl: float,
        *,
        known: Sequence[str] = (),
        cuts: Sequence[SharedCut] = (),
    ) -> FleetView:
        """Publish ``holds`` (a later ``until`` wins; the setter of a breaker hold may
        shorten it) and ``cuts`` (a later ``at`` wins), say ``member`` knows the
        ``known`` upstreams and uses the ``active`` ones at ``now``, and read back
        the live holds, the operator pause, the members seen within ``member_ttl``
        seconds and the latest cuts, in one round trip."""
        ...

    async def set_operator(self, pause: OperatorPause | None) -> None:
        """Set (or with ``None`` clear) the fleet-wide operator pause."""
        ...

    async def operator(self) -> OperatorPause | None:
        """The fleet-wide operator pause, if any."""
        ...

    async def leave(self, member: str) -> None:
        """``member`` stops: its share goes to the others at once."""
        ...

    async def close(self) -> None: ...


class MemoryFleetStore:
    """A :class:`FleetStore` in memory, shared by schedulers in one process (tests)."""

    def __init__(self) -> None:
        self.holds: dict[tuple[str, str], Hold] = {}
        self.members: dict[tuple[str, str], tuple[float, bool]] = {}  # -> (seen, active)
        self.cuts: dict[str, SharedCut] = {}
        self.paused: OperatorPause | None = None
        self.fail = False  # tests: make it unreachable

    def _check(self) -> None:
        if self.fail:
            raise ConnectionError("the fleet store is unreachable (test)")

    async def exchange(
        self,
        member: str,
        now: float,
        holds: Sequence[Hold],
        active: Sequence[str],
        member_ttl: float,
        *,
        known: Sequence[str] = (),
        cuts: Sequence[SharedCut] = (),
    ) -> FleetView:
        self._check()
        for hold in holds:
            key = (hold.upstream, hold.kind)
            old = self.holds.get(key)
            if hold.kind == PROBE:  # a lease: its holder's until it lapses
                wins = old is None or old.by == hold.by or old.until <= now
            else:  # a later hold wins; the setter of an owned one may end it early
                wins = old is None or hold.until > old.until
                wins = wins or (hold.kind in OWNED and old is not None and old.by == hold.by)
            if wins:
                self.holds[key] = hold
        for cut in cuts:
            old_cut = self.cuts.get(cut.upstream)
            if old_cut is None or cut.at > old_cut.at:
                self.cuts[cut.upstream] = cut
        using = set(active)
        for name in using.union(known):
            self.members[(name, member)] = (now, name in using)
        counts: dict[str, int] = {}
        alive: dict[str, int] = {}
        for (name, _), (seen, is_active) in self.members.items():
            if seen > now - member_ttl:
                alive[name] = alive.get(name, 0) + 1
                if is_active:
                    counts[name] = counts.get(name, 0) + 1
        live = tuple(h for h in self.holds.values() if h.until > now)
        return FleetView(live, self.paused, counts, alive, dict(self.cuts))

    async def set_operator(self, pause: OperatorPause | None) -> None:
        self._check()
        self.paused = pause

    async def operator(self) -> OperatorPause | None:
        self._check()
        return self.paused

    async def leave(self, member: str) -> None:
        self._check()
        for key in [k for k in self.members if k[1] == member]:
            del self.members[key]

    async def close(self) -> None:
        return None


@dataclass(slots=True)
class _Published:
    """What this process last told the fleet about one upstream (wall clock)."""

    retry_after: float = -math.inf
    breaker: float = -math.inf
    probe_failed: float = -math.inf


class FleetGate(Protocol):
    """What the fleet exchange asks of a process's gate (a
    :class:`~scheduler.gate.HealthGate`)."""

    @property
    def is_open(self) -> bool: ...

    @property
    def reason(self) -> str | None: ...

    @property
    def upstreams(self) -> Mapping[str, UpstreamHealth]: ...

    def upstream(self, name: str) -> UpstreamHealth: ...

    def pause(self, reason: str = ..., *, fleet: bool = ...) -> None: ...

    def resume(self, *, fleet: bool = ...) -> None: ...

    def notify(self) -> None: ...


class FleetSync:
    """Keeps one process's :class:`~scheduler.gate.HealthGate` in step with the
    fleet's shared upstream state (see the module docstring)."""

    def __init__(
        self,
        gate: FleetGate,
        store: FleetStore,
        clock: Clock,
        *,
        member: str | None = None,
        interval: float = 0.25,
        member_ttl: float = 3.0,
        active_for: float = 5.0,
    ) -> None:
        self.gate = gate
        self.store = store
        self.clock = clock
        self.member = member or new_member_id()
        self.interval = interval
        self.member_ttl = member_ttl
        self.active_for = active_for
        self.reachable = True
        self.syncs = 0
        self.members: dict[str, int] = {}  # upstream -> processes sharing it (last seen)
        self.operator: OperatorPause | None = None
        self._published: dict[str, _Published] = {}
        self._fleet_known: dict[str, float] = {}  # upstream -> latest fleet retry_after
        self._cuts_sent: dict[str, int] = {}  # upstream -> the pacer's cut count published
        self._cut_known: dict[str, float] = {}  # upstream -> wall time of the newest cut here
        self._active: set[str] = set()  # what the last exchange said this process uses
        self._operator_ops: list[OperatorPause | None] = []
        self.paused_by_fleet = False  # the gate is paused because the fleet is
        self._wake = asyncio.Event()
        self._rng = random.Random()

    def stats(self) -> FleetStats:
        """What ``stats().fleet`` shows."""
        pause = self.operator
        return FleetStats(
            member=self.member,
            reachable=self.reachable,
            paused_reason=None if pause is None else pause.reason,
            paused_by=None if pause is None else pause.by,
            members=dict(self.members),
        )

    # -- the operator pause ----------------------------------------------------------

    def request_operator(self, pause: OperatorPause | None) -> None:
        """Queue a fleet-wide operator pause (or its end) for the next exchange."""
        self._operator_ops.append(pause)
        self._wake.set()

    # -- one exchange ----------------------------------------------------------------

    def _outgoing(self) -> tuple[list[Hold], list[str], list[SharedCut]]:
        now, wall = self.clock.now(), self.clock.wall()
        holds: list[Hold] = []
        active: list[str] = []
        cuts: list[SharedCut] = []
        for name, health in self.gate.upstreams.items():
            if now - health.wanted_at <= self.active_for:
                active.append(name)
            pacer, curve = health.pacer, health.pacer.curve()
            if curve is not None and pacer.cuts != self._cuts_sent.get(name, 0):
                self._cuts_sent[name] = pacer.cuts  # a cut of our own: news for the others
                at = wall + (pacer.cut_at - now)
                self._cut_known[name] = max(self._cut_known.get(name, -math.inf), at)
                cuts.append(SharedCut(name, at, *curve, self.member))
            sent = self._published.setdefault(name, _Published())
            paused = wall + (health.own_paused_until - now)  # not the fleet's, held here
            known = max(sent.retry_after, self._fleet_known.get(name, -math.inf))
            if paused > wall and paused > known + _NEWER:
                holds.append(Hold(name, RETRY_AFTER, paused, self.member))
                sent.retry_after = paused
            breaker = health.breaker
            if breaker.state is not BreakerState.CLOSED:
                wait = breaker.next_trial_in() or 0.0
                until = wall + wait + _BREAKER_MARGIN + self.interval
                holds.append(Hold(name, BREAKER_OPEN, until, self.member))
                sent.breaker = until
            elif sent.breaker > wall:  # ours closed: end the hold now
                holds.append(Hold(name, BREAKER_OPEN, wall, self.member))
                sent.breaker = -math.inf
            holds.extend(self._probe_holds(health, sent, wall))
        self._active = set(active)
        return holds, active, cuts

    def _probe_holds(self, health: UpstreamHealth, sent: _Published, wall: float) -> list[Hold]:
        """The probe's lease (one process probes for the fleet) and, while the probe
        fails here, the hold that says so."""
        config, name = health.config, health.config.name
        if config.probe_url is None or health.probe_elsewhere():
            return []
        lease = wall + 2 * config.probe_interval + _BREAKER_MARGIN
        holds = [Hold(name, PROBE, lease, self.member)]
        if not health.probe_ok:
            sent.probe_failed = wall + config.probe_interval + _BREAKER_MARGIN + self.interval
            holds.append(Hold(name, PROBE_FAILED, sent.probe_failed, self.member))
        elif sent.probe_failed > wall:  # it answers again: end the hold now
            holds.append(Hold(name, PROBE_FAILED, wall, self.member))
            sent.probe_failed = -math.inf
        return holds

    def _apply(self, view: FleetView) -> None:
        # (a hold applied here is not news to tell back: pause(from_fleet=True) and
        # the breaker hold do not wake the exchange)
        changed = self._apply_holds(view)
        self.members = dict(view.members)
        for name, health in self.gate.upstreams.items():
            using = self.members.get(name, 0)
            if name in self._active:  # counted among them
                health.set_share(1.0 / max(1, using))
            else:  # when it starts, so may every process that knows the upstream
                health.set_share(1.0 / max(1, using + 1, view.alive.get(name, 1)))
        self._adopt_cuts(view)
        if changed:
            self.gate.notify()
        self._apply_operator(view.operator)

    def _apply_holds(self, view: FleetView) -> bool:
        """Hold this process's upstreams as the fleet's holds say; True if any changed."""
        now, wall = self.clock.now(), self.clock.wall()
        changed = False
        for hold in view.holds:
            if hold.by == self.member:
                continue
            health = self.gate.upstream(hold.upstream)
            left = hold.until - wall
            if hold.kind == RETRY_AFTER:
                self._fleet_known[hold.upstream] = max(
                    self._fleet_known.get(hold.upstream, -math.inf), hold.until
                )
                if now + left > health.paused_until + 1e-3:
                    # processes resume a little apart: together they would spend the
                    # upstream's whole burst at once and meet the next 429
                    jitter = self._rng.uniform(0.0, min(_MAX_JITTER, _JITTER * left))
                    health.pause(left + jitter, from_fleet=True)
                    _log.info("fleet.paused", upstream=hold.upstream, seconds=left, by=hold.by)
                    changed = True
            elif hold.kind == BREAKER_OPEN and health.breaker.state is BreakerState.CLOSED:
                if health.fleet_breaker_until <= now:
                    _log.info("fleet.breaker_held", upstream=hold.upstream, by=hold.by)
                health.hold_for_fleet_breaker(left)
                changed = True
            elif hold.kind == PROBE:
                health.fleet_probe_until = now + left
            elif hold.kind == PROBE_FAILED:
                if health.fleet_probe_failed_until <= now:
                    _log.info("fleet.probe_failed", upstream=hold.upstream, by=hold.by)
                    changed = True
                health.fleet_probe_failed_until = now + left
        theirs: dict[str, set[str]] = {}
        for hold in view.holds:
            if hold.by != self.member:
                theirs.setdefault(hold.kind, set()).add(hold.upstream)
        for name, health in self.gate.upstreams.items():
            if name not in theirs.get(BREAKER_OPEN, ()) and health.fleet_breaker_until > now:
                health.hold_for_fleet_breaker(0.0)  # its owner closed it (or died)
                changed = True
            if name not in theirs.get(PROBE, ()):
                health.fleet_probe_until = -math.inf  # nobody else probes: we may
            if name not in theirs.get(PROBE_FAILED, ()) and health.fleet_probe_failed_until > now:
                health.fleet_probe_failed_until = -math.inf  # it answers again
                changed = True
        return changed

    def _adopt_cuts(self, view: FleetView) -> None:
        """Follow a cut of the learned rate made in another process since ours."""
        wall = self.clock.wall()
        for name, cut in view.cuts.items():
            if cut.by == self.member or cut.at <= self._cut_known.get(name, -math.inf):
                continue
            health = self.gate.upstreams.get(name)
            if health is None:
                continue
            self._cut_known[name] = cut.at
            health.pacer.adopt(cut.peak, cut.k, cut.c, age=wall - cut.at)
            self._cuts_sent[name] = health.pacer.cuts  # adopted, not news
            _log.debug("fleet.rate_adopted", upstream=name, peak=cut.peak, by=cut.by)

    def _apply_operator(self, pause: OperatorPause | None) -> None:
        self.operator = pause
        gate = self.gate
        if pause is not None:
            reason = f"fleet: {pause.reason} (by {pause.by})"
            if gate.reason != reason and (gate.is_open or self.paused_by_fleet):
                gate.pause(reason)
                self.paused_by_fleet = True
        elif self.paused_by_fleet:
            self.paused_by_fleet = False
            gate.resume()

    async def sync_once(self) -> None:
        """One exchange with the store (what the loop does every ``interval``)."""
        try:
            while self._operator_ops:
                await self.store.set_operator(self._operator_ops[0])
                self._operator_ops.pop(0)
            holds, active, cuts = self._outgoing()
            view = await self.store.exchange(
                self.member,
                self.clock.wall(),
                holds,
                active,
                self.member_ttl,
                known=list(self.gate.upstreams),
                cuts=cuts,
            )
        except Exception as exc:  # any store failure: keep the last split, say so once
            if self.reachable:
                self.reachable = False
                _log.warning(
                    "fleet.unreachable",
                    error=f"{type(exc).__name__}: {exc}",
                    members=dict(self.members),
                )
            for sent in self._published.values():
                sent.retry_after = -math.inf  # publish again once it is back
            self._cuts_sent.clear()  # ... and the cuts
            return
        if not self.reachable:
            self.reachable = True
            _log.info("fleet.reachable")
        self.syncs += 1
        self._apply(view)

    # -- the loop --------------------------------------------------------------------

    async def run(self) -> None:
        """Exchange every ``interval`` seconds (sooner when there is news) until cancelled."""
        while True:
            self._wake.clear()  # news during the exchange wakes the next one at once
            await self.sync_once()
            sleeper = asyncio.ensure_future(self.clock.sleep(self.interval))
            waker = asyncio.ensure_future(self._wake.wait())
            try:
                await asyncio.wait((sleeper, waker), return_when=asyncio.FIRST_COMPLETED)
            finally:
                await cancel_and_wait(sleeper, waker)  # a cancel of run() itself propagates

    def wake(self) -> None:
        """Exchange now (a local pause or breaker change is news for the others)."""
        self._wake.set()

    async def leave(self) -> None:
        """Give this process's shares back (on a clean stop)."""
        with contextlib.suppress(Exception):
            await self.store.leave(self.member)
