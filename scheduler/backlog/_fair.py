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

A claim's cost grows with its size, not with the number of tenants: the
durable backlogs keep every queued tenant's stored time at least the lane's
clock (the clock only moves on, so raising a time to it changes no start
tag), which makes ``(virtual time, tenant)`` the fair order itself, and read
the flows a page at a time in that order (an index walk). A plan built from
the first page knows its :attr:`FairPlan.bound`, the last flow read: it hands
out no slot at a tag past it (an unread flow may come first) and says
:attr:`FairPlan.short` instead; the claim reads the next page,
:meth:`FairPlan.extend` s the plan and takes the rest. The slots of ``n`` go
to flows among the ``n`` first in that order (each one served before a later
one would be), so a page of ``n`` flows is enough unless some are full or
have nothing due.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping
from typing import Protocol

__all__ = [
    "EQUAL_SHARES",
    "FAIR_ROUNDS",
    "NO_TENANT",
    "FairPlan",
    "FairPolicy",
    "page_flows",
    "plan_claim",
]

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

    __slots__ = ("_policy", "_room", "_start", "_tag", "_weight", "bound", "clock", "short")

    def __init__(
        self,
        flows: Iterable[tuple[str, float, int]],
        clock: float,
        policy: FairPolicy,
        bound: tuple[float, str] | None = None,
    ) -> None:
        self.clock = clock
        #: ``(start tag, tenant)`` of the last flow known when more may follow (``None``:
        #: every flow is known): no slot goes to a tag after it
        self.bound = bound
        #: the last :meth:`take` stopped at :attr:`bound` with slots left: read on
        self.short = False
        self._policy = policy
        self._tag: dict[str, float] = {}
        self._start: dict[str, float] = {}
        self._room: dict[str, int] = {}
        self._weight: dict[str, float] = {}
        self._add(flows)

    def _add(self, flows: Iterable[tuple[str, float, int]]) -> None:
        for tenant, vtime, room in flows:
            start = max(vtime, self.clock)
            self._tag[tenant] = self._start[tenant] = start
            self._room[tenant] = max(0, room)
            self._weight[tenant] = self._policy.weight(tenant or None)

    def extend(
        self, flows: Iterable[tuple[str, float, int]], bound: tuple[float, str] | None
    ) -> None:
        """Add the next page of flows (all after :attr:`bound`, in fair order); ``bound``
        is now the last of them, ``None`` if no flow is left unread."""
        self._add(flows)
        self.bound = bound

    def take(self, n: int) -> dict[str, int]:
        """Hand out up to ``n`` slots in fair order: how many each flow gets (fewer, with
        :attr:`short` set, if a slot could go to a flow after :attr:`bound`)."""
        heap = [(tag, name) for name, tag in self._tag.items() if self._room[name] > 0]
        heapq.heapify(heap)
        out: dict[str, int] = {}
        bound = self.bound
        while heap and n > 0:
            if bound is not None and heap[0] > bound:
                break
            tag, name = heapq.heappop(heap)
            out[name] = out.get(name, 0) + 1
            self._room[name] -= 1
            self._tag[name] = tag + 1.0 / self._weight[name]
            n -= 1
            if self._room[name] > 0:
                heapq.heappush(heap, (self._tag[name], name))
        self.short = bound is not None and n > 0
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
    bound: tuple[float, str] | None = None,
) -> FairPlan:
    """The :class:`FairPlan` of a claim of ``n`` slots on a lane.

    ``flows``: ``(tenant, queued, virtual time)`` as the backlog stores them
    (the tenant-less flow's row, if any, carries only its time); ``anonymous``:
    whether jobs without a tenant are queued (their flow may take all ``n``);
    ``running``: live leases per tenant, when ``policy`` bounds them;
    ``bound``: see :attr:`FairPlan.bound` (``flows`` is then the first page).
    """
    rows = list(flows)
    times = {t: v for t, _, v in rows}
    out = page_flows(rows, policy, running)
    if anonymous:
        out.append((NO_TENANT, times.get(NO_TENANT, 0.0), n))
    return FairPlan(out, clock, policy, bound)


def page_flows(
    rows: Iterable[tuple[str, int, float]],
    policy: FairPolicy,
    running: Mapping[str, int] | None = None,
) -> list[tuple[str, float, int]]:
    """``(tenant, virtual time, room)`` of the named tenants among ``rows`` (``(tenant,
    queued, virtual time)``): what :meth:`FairPlan.extend` takes."""
    cap = policy.max_in_flight
    out: list[tuple[str, float, int]] = []
    for tenant, queued, vtime in rows:
        if tenant == NO_TENANT:
            continue
        room = queued if cap is None else min(queued, cap - (running or {}).get(tenant, 0))
        out.append((tenant, vtime, room))
    return out
