"""Property tests of fair claims between tenants: the start-time fair queuing bound on the
memory backlog, and SQLite (and PostgreSQL, when there is one) claiming exactly as it does."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scheduler.backlog import Backlog
from tests.backlog.helpers import new_job
from tests.backlog.test_properties import pg_property_schema as pg_property_schema
from tests.backlog.test_properties import run_with

PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@dataclass
class Shares:
    weights: dict[str, float] = field(default_factory=dict)
    max_in_flight: int | None = None

    def weight(self, tenant: str | None) -> float:
        return 1.0 if tenant is None else self.weights.get(tenant, 1.0)


# per tenant: (jobs queued, weight); None is the flow of jobs without a tenant (weight 1)
FLOWS = st.dictionaries(
    st.sampled_from([None, "a", "b", "c", "d", "e"]),
    st.tuples(st.integers(1, 25), st.sampled_from([1.0, 2.0, 3.0])),
    min_size=1,
    max_size=6,
)
CLAIMS = st.lists(st.integers(1, 9), min_size=1, max_size=40)


async def drain(
    backlog: Backlog, flows: dict[str | None, tuple[int, float]], claims: list[int]
) -> list[list[str | None]]:
    """Submit the flows (interleaved, one job each in turn), then claim in the given
    sizes (again from the start when the list runs out) until the lane is empty."""
    longest = max(n for n, _ in flows.values())
    for i in range(longest):
        jobs = [replace(new_job(i), tenant=t) for t, (n, _) in flows.items() if i < n]
        await backlog.submit(jobs, now=0)
    shares = Shares(weights={t: w for t, (_, w) in flows.items() if t is not None})
    rounds: list[list[str | None]] = []
    total = sum(n for n, _ in flows.values())
    for k in range(total):  # bounded: each claim takes at least one job
        got = await backlog.claim(
            "batch", claims[k % len(claims)], owner="w", lease_seconds=1e6, now=1, tenants=shares
        )
        if not got:
            break
        rounds.append([r.tenant for r in got])
    return rounds


@PROPERTY
@given(flows=FLOWS, claims=CLAIMS)
def test_backlogged_tenants_stay_within_one_job_of_their_weighted_share(
    flows: dict[str | None, tuple[int, float]], claims: list[int]
) -> None:
    rounds = run_with("memory", lambda b: drain(b, flows, claims))
    served: Counter[str | None] = Counter()
    for got in rounds:
        served.update(got)
        left = {t for t, (n, _) in flows.items() if served[t] < n}
        for i in left:  # both still have work: their weighted service differs by at most
            for j in left:  # one job of each (the start-time fair queuing bound)
                wi, wj = (1.0 if t is None else flows[t][1] for t in (i, j))  # None: 1
                assert served[i] / wi - served[j] / wj <= 1 / wi + 1 / wj + 1e-9, (served, i, j)
    assert served == Counter({t: n for t, (n, _) in flows.items()})  # each job once


def _claimed(kind: str, flows: dict[str | None, tuple[int, float]], claims: list[int]) -> Any:
    return run_with(kind, lambda b: drain(b, flows, claims))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(flows=FLOWS, claims=CLAIMS)
def test_sqlite_claims_tenants_as_the_memory_backlog_does(
    flows: dict[str | None, tuple[int, float]], claims: list[int]
) -> None:
    assert _claimed("sqlite", flows, claims) == _claimed("memory", flows, claims)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(flows=FLOWS, claims=CLAIMS)
def test_postgres_claims_tenants_as_the_memory_backlog_does(
    pg_property_schema: str, flows: dict[str | None, tuple[int, float]], claims: list[int]
) -> None:
    assert _claimed(pg_property_schema, flows, claims) == _claimed("memory", flows, claims)
