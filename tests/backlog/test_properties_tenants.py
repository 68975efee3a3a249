"""Property tests of fair claims between tenants: the start-time fair queuing bound on the
memory backlog, and SQLite (and PostgreSQL, when there is one) claiming exactly as it does."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scheduler.backlog import Backlog
from tests.backlog.helpers import new_job
from tests.backlog.test_contract_tenants import Shares
from tests.backlog.test_properties import pg_property_schema as pg_property_schema
from tests.backlog.test_properties import run_with

PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


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


# A lane with churn: tenants arriving while others are served (they start at the lane's
# clock), jobs not due yet (their tenant gives its slots back), a bound on each tenant's
# live leases, leases given back (the tenant comes back). More tenants than a
# claim has slots, so a durable claim reads its tenants a page at a time.
STEPS = st.lists(
    st.one_of(
        st.tuples(
            st.just("submit"),
            st.sampled_from([None, *"abcdefghijkl"]),
            st.integers(1, 4),
            st.sampled_from([0, 0, 3]),
        ),
        st.tuples(st.just("claim"), st.just(None), st.integers(1, 4), st.just(0)),
        st.tuples(st.just("release"), st.just(None), st.just(0), st.just(0)),
    ),
    min_size=1,
    max_size=30,
)
WEIGHTS = st.dictionaries(st.sampled_from(list("abcdefghijkl")), st.sampled_from([2.0, 3.0]))


async def churn(
    backlog: Backlog,
    steps: list[tuple[str, str | None, int, int]],
    weights: dict[str, float],
    cap: int | None,
    lease: float = 1e6,
) -> list[list[str | None]]:
    shares = Shares(weights=weights, max_in_flight=cap)
    rounds: list[list[str | None]] = []
    last: list[str] = []
    for now, (op, tenant, n, delay) in enumerate([*steps, *[("claim", None, 4, 0)] * 12]):
        if op == "submit":
            jobs = [replace(new_job(i, run_at=now + delay), tenant=tenant) for i in range(n)]
            await backlog.submit(jobs, now=now)
        elif op == "claim":
            got = await backlog.claim(
                "batch", n, owner="w", lease_seconds=lease, now=now, tenants=shares
            )
            rounds.append([r.tenant for r in got])
            last = [r.id for r in got]
        else:
            await backlog.release(last, owner="w", now=now)
            last = []
    return rounds


def _claims_as_memory_does(
    kind: str,
    steps: list[tuple[str, str | None, int, int]],
    weights: dict[str, float],
    cap: int | None,
    lease: float,
) -> None:
    """The same churn on ``kind`` and on the memory backlog claims the same jobs."""

    def claimed(backend: str) -> Any:
        return run_with(backend, lambda b: churn(b, steps, weights, cap, lease))

    assert claimed(kind) == claimed("memory")


# leases that never lapse, or lapse after two steps (a claim takes them over first, and
# they count against their tenant's in-flight bound)
LEASES = st.sampled_from([1e6, 2.5])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=STEPS, weights=WEIGHTS, cap=st.sampled_from([None, 1, 2]), lease=LEASES)
def test_sqlite_claims_a_churning_lane_as_the_memory_backlog_does(
    steps: list[tuple[str, str | None, int, int]],
    weights: dict[str, float],
    cap: int | None,
    lease: float,
) -> None:
    _claims_as_memory_does("sqlite", steps, weights, cap, lease)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=STEPS, weights=WEIGHTS, cap=st.sampled_from([None, 1, 2]), lease=LEASES)
def test_postgres_claims_a_churning_lane_as_the_memory_backlog_does(
    pg_property_schema: str,
    steps: list[tuple[str, str | None, int, int]],
    weights: dict[str, float],
    cap: int | None,
    lease: float,
) -> None:
    _claims_as_memory_does(pg_property_schema, steps, weights, cap, lease)
