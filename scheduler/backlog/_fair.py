"""Fair claims between tenants on durable lanes: start-time fair queuing, in storage.

Every backend keeps, per lane, a *virtual clock* and each tenant's *virtual
time* (how much of the lane it has had, in units of ``1 / weight`` per job).
A claim on a lane whose ``QUEUED`` jobs name tenants hands each free slot to
the flow with the smallest start tag, ``max(its virtual time, the lane's
clock)``, then moves that flow's tag on by ``1 / weight``: the same order as
:class:`scheduler.lanes.FairQueue` gives in memory, so a tenant with 100,000
jobs queued and a tenant with ten take turns. Jobs without a tenant are one
flow (stored under the name ``""``). A tenant that comes back after idling
starts at the lane's clock, not at its old, low time: no burst of catch-up.
Within a flow, jobs leave in the lane's claim order (rank, ``run_at``, seq).

The clock and times live in the backlog (every process claiming the lane
reads and writes them in the claim's transaction), so the shares hold
across a fleet, not only within one process.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping
from typing import Protocol

__all__ = ["EQUAL_SHARES", "FAIR_ROUNDS", "NO_TENANT", "FairPlan", "FairPolicy", "plan_claim"]

#: the stored name of the flow of jobs without a tenant (a tenant name is never empty)
NO_TENANT = ""


class FairPolicy(Protocol):
    """How a lane's tenants share it (:class:`scheduler.lanes.Tenants` is one)."""

    @property
    def max_in_flight(self) -> int | None: ...

    def weight(self, tenant: str | None) -> float: ...


class _EqualShares:
    """Tenants of weight 1 and no in-flight bound: what a claim without a policy uses."""

    max_in_flight: int | None = None

    def weight(self, tenant: str | None) -> float:
        return 1.0


EQUAL_SHARES: FairPolicy = _EqualShares()

#: rounds of a fair claim: a tenant whose jobs are not due yet gives its slots back to others
FAIR_ROUNDS = 3


class FairPlan:
    """The slots of one claim, flow by flow, in fair order (see the module docstring).

    ``flows``: ``(tenant, virtual time, room)``, where ``room`` is the most
    jobs the flow may take now (its queued count, less than that under a
    ``max_in_flight``); ``tenant`` is :data:`NO_TENANT` for jobs without one.
    Call :meth:`take` for a round of slots, :meth:`got` with what each flow
    really had (a flow whose jobs are not due yet has fewer), and again
    :meth:`take` for the slots left over. :meth:`times` and :attr:`clock` are
    then what to store.
    """

    __slots__ = ("_room", "_start", "_tag", "_weight", "clock")

    def __init__(
        self, flows: Iterable[tuple[str, float, int]], clock: float, policy: FairPolicy
    ) -> None:
        self.clock = clock
        self._tag: dict[str, float] = {}
        self._start: dict[str, float] = {}
        self._room: dict[str, int] = {}
        self._weight: dict[str, float] = {}
        for tenant, vtime, room in flows:
            start = max(vtime, clock)
            self._tag[tenant] = self._start[tenant] = start
            self._room[tenant] = max(0, room)
            self._weight[tenant] = policy.weight(tenant or None)

    def take(self, n: int) -> dict[str, int]:
        """Hand out up to ``n`` slots in fair order: how many each flow gets."""
        heap = [(tag, name) for name, tag in self._tag.items() if self._room[name] > 0]
        heapq.heapify(heap)
        out: dict[str, int] = {}
        while heap and n > 0:
            tag, name = heapq.heappop(heap)
            out[name] = out.get(name, 0) + 1
            self._room[name] -= 1
            self._tag[name] = tag + 1.0 / self._weight[name]
            n -= 1
            if self._room[name] > 0:
                heapq.heappush(heap, (self._tag[name], name))
        return out

    def got(self, tenant: str, asked: int, got: int) -> None:
        """``tenant`` was given ``asked`` slots and filled ``got``: it has no more due
        jobs, and its unfilled slots go back (to others, on the next :meth:`take`)."""
        if got < asked:
            self._tag[tenant] -= (asked - got) / self._weight[tenant]
            self._room[tenant] = 0

    def times(self) -> dict[str, float]:
        """The new virtual time of every flow that was served; moves :attr:`clock` on to
        the start tag of the last job served."""
        out: dict[str, float] = {}
        for name, tag in self._tag.items():
            if tag > self._start[name]:
                out[name] = tag
                self.clock = max(self.clock, tag - 1.0 / self._weight[name])
        return out


def plan_claim(
    flows: Iterable[tuple[str, int, float]],
    clock: float,
    anonymous: bool,
    n: int,
    policy: FairPolicy,
    running: Mapping[str, int] | None = None,
) -> FairPlan:
    """The :class:`FairPlan` of a claim of ``n`` slots on a lane.

    ``flows``: ``(tenant, queued, virtual time)`` as the backlog stores them
    (the tenant-less flow's row, if any, carries only its time); ``anonymous``:
    whether jobs without a tenant are queued (their flow may take all ``n``);
    ``running``: live leases per tenant, when ``policy`` bounds them.
    """
    rows = list(flows)
    room = {t: k for t, k, _ in rows if t != NO_TENANT}
    if anonymous:
        room[NO_TENANT] = n
    cap = policy.max_in_flight
    if cap is not None:
        for tenant in room:
            if tenant != NO_TENANT:
                room[tenant] = min(room[tenant], cap - (running or {}).get(tenant, 0))
    times = {t: v for t, _, v in rows}
    return FairPlan(((t, times.get(t, 0.0), k) for t, k in room.items()), clock, policy)
