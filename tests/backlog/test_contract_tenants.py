"""Tenants in the Backlog contract: fair claims, per-tenant bounds, cancel by tenant, and
the stored trace context, against every backend (see conftest.BACKENDS)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import pytest

from scheduler import JobState, Overloaded
from scheduler.backlog import Backlog, NewJob, Outcome
from tests.backlog.helpers import new_job

OWNER = "worker-a"


def of(tenant: str | None, *args: object, **kw: object) -> NewJob:
    return replace(new_job(*args, **kw), tenant=tenant)  # type: ignore[arg-type]


@dataclass
class Shares:
    """A FairPolicy for tests: weights per tenant, an optional in-flight bound."""

    weights: dict[str, float] = field(default_factory=dict)
    max_in_flight: int | None = None

    def weight(self, tenant: str | None) -> float:
        return 1.0 if tenant is None else self.weights.get(tenant, 1.0)


async def claim(
    backlog: Backlog,
    n: int,
    *,
    now: float = 1.0,
    owner: str = OWNER,
    tenants: Shares | None = None,
    lease: float = 100.0,
) -> list[str | None]:
    got = await backlog.claim(
        "batch", n, owner=owner, lease_seconds=lease, now=now, tenants=tenants
    )
    return [r.tenant for r in got]


async def test_a_flood_of_one_tenant_does_not_hold_back_the_others(backlog: Backlog) -> None:
    await backlog.submit([of("big", i) for i in range(200)], now=0)
    await backlog.submit([of(f"small{k}", k) for k in range(3) for _ in range(2)], now=0)
    first = await claim(backlog, 4)
    assert Counter(first) == {"big": 1, "small0": 1, "small1": 1, "small2": 1}
    second = await claim(backlog, 4)
    assert Counter(second) == {"big": 1, "small0": 1, "small1": 1, "small2": 1}
    assert await claim(backlog, 4) == ["big"] * 4  # the small ones are done
    assert await backlog.queued_count("batch") == 200 - 6


async def test_jobs_without_a_tenant_are_one_flow_and_order_holds_within_a_tenant(
    backlog: Backlog,
) -> None:
    await backlog.submit([of(None, f"n{i}") for i in range(4)], now=0)
    await backlog.submit([of("a", "a-low", priority=5), of("a", "a-high", priority=1)], now=0)
    got = await backlog.claim("batch", 2, owner=OWNER, lease_seconds=10, now=1)
    assert sorted(r.tenant or "-" for r in got) == ["-", "a"]
    by_tenant = {r.tenant: r.args[0] for r in got}
    assert by_tenant == {None: "n0", "a": "a-high"}  # priority within a tenant, FIFO in none


async def test_weights_give_shares_in_proportion(backlog: Backlog) -> None:
    await backlog.submit([of("heavy", i) for i in range(50)], now=0)
    await backlog.submit([of("light", i) for i in range(50)], now=0)
    shares = Shares(weights={"heavy": 3.0})
    served = Counter(await claim(backlog, 40, tenants=shares))
    assert served == {"heavy": 30, "light": 10}


async def test_a_tenant_coming_back_starts_at_the_lanes_clock(backlog: Backlog) -> None:
    await backlog.submit([of("a", i) for i in range(100)], now=0)
    assert await claim(backlog, 30) == ["a"] * 30
    # b arrives late: it takes turns with a from now on, no catch-up burst for a's 30
    await backlog.submit([of("b", i) for i in range(20)], now=2)
    served = Counter(await claim(backlog, 10, now=3))
    assert served == {"a": 5, "b": 5}


async def test_slots_of_a_tenant_with_nothing_due_go_to_the_others(backlog: Backlog) -> None:
    await backlog.submit([of("later", i, run_at=1000) for i in range(10)], now=0)
    await backlog.submit([of("now", i) for i in range(10)], now=0)
    assert await claim(backlog, 6, lease=1e6) == ["now"] * 6
    # later starts at the lane's clock (the last start served, 5), now at its own 6
    served = Counter(await claim(backlog, 7, now=1001))
    assert served == {"later": 4, "now": 3}


async def test_expired_leases_are_taken_over_first(backlog: Backlog) -> None:
    [lost] = await backlog.submit([of("a", "lost")], now=0)
    await backlog.claim("batch", 1, owner="gone", lease_seconds=5, now=0)
    await backlog.submit([of("b", i) for i in range(5)], now=1)
    got = await backlog.claim("batch", 2, owner=OWNER, lease_seconds=10, now=10)
    assert lost.id in [r.id for r in got]
    assert sorted(r.tenant or "-" for r in got) == ["a", "b"]


async def test_max_in_flight_counts_every_owners_live_leases(backlog: Backlog) -> None:
    await backlog.submit([of("a", i) for i in range(10)], now=0)
    await backlog.submit([of("b", i) for i in range(10)], now=0)
    shares = Shares(max_in_flight=2)
    first = Counter(await claim(backlog, 3, owner="w1", tenants=shares))
    assert first == {"a": 2, "b": 1}
    # another owner: a holds its two seats fleet-wide; b has one left
    assert await claim(backlog, 5, owner="w2", tenants=shares) == ["b"]
    # once w1's leases have lapsed they no longer count (the claim takes them over first)
    later = Counter(await claim(backlog, 10, owner="w2", tenants=shares, now=500))
    assert later["a"] >= 2


async def test_a_tenants_queue_bound_refuses_the_whole_call_and_names_the_tenant(
    backlog: Backlog,
) -> None:
    def bounded(tenant: str, *args: object, key: str | None = None) -> NewJob:
        return replace(of(tenant, *args, key=key), tenant_max_queued=2)

    await backlog.submit([bounded("a", 1, key="k1"), bounded("a", 2)], now=0)
    with pytest.raises(Overloaded) as caught:
        await backlog.submit([bounded("b", 0), bounded("a", 3)], now=0)
    assert caught.value.tenant == "a"
    assert "tenant 'a'" in str(caught.value)
    assert await backlog.queued_count("batch") == 2  # b's job was not stored either
    # a stored key needs no room; another tenant has its own bound
    [again] = await backlog.submit([bounded("a", 9, key="k1")], now=0)
    assert again.args == [1]
    await backlog.submit([bounded("b", 1), bounded("b", 2)], now=0)
    # a claimed job frees its tenant's room
    await claim(backlog, 1)
    assert await backlog.queued_by_tenant("batch") in ([("a", 2), ("b", 1)], [("b", 2), ("a", 1)])


async def test_cancel_by_tenant_and_by_task_and_tenant(backlog: Backlog) -> None:
    await backlog.submit([of("a", i, task="t1") for i in range(3)], now=0)
    await backlog.submit([of("a", i, task="t2") for i in range(2)], now=0)
    await backlog.submit([of("b", i, task="t1") for i in range(2)], now=0)
    await backlog.submit([of(None, 0, task="t1")], now=0)
    assert await backlog.cancel_task("t2", tenant="a", now=1) == 2
    assert await backlog.cancel_task(None, tenant="a", now=1) == 3
    left = await backlog.list_jobs(JobState.QUEUED)
    assert sorted(r.tenant or "-" for r in left) == ["-", "b", "b"]
    assert await backlog.queued_by_tenant("batch") == [("b", 2)]
    with pytest.raises(ValueError, match="task= or tenant="):
        await backlog.cancel_task(None, now=1)


async def test_tenant_and_trace_context_are_stored_with_the_job(backlog: Backlog) -> None:
    trace = '{"traceparent":"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}'
    [job] = await backlog.submit([replace(of("acme", 1), trace=trace)], now=0)
    assert (job.tenant, job.trace) == ("acme", trace)
    stored = await backlog.get(job.id)
    assert stored is not None
    assert (stored.tenant, stored.trace) == ("acme", trace)
    [claimed] = await backlog.claim("batch", 1, owner=OWNER, lease_seconds=10, now=1)
    assert (claimed.tenant, claimed.trace) == ("acme", trace)
    await backlog.complete([Outcome.retry(job.id, OWNER, run_at=2, error="again")], now=1)
    [retried] = await backlog.claim("batch", 1, owner=OWNER, lease_seconds=10, now=3)
    assert (retried.tenant, retried.trace) == ("acme", trace)


@pytest.mark.parametrize(
    ("field_name", "value"),
    [("tenant", ""), ("tenant", 5), ("trace", 7), ("tenant_max_queued", -1)],
)
async def test_bad_tenant_fields_are_refused_and_nothing_is_stored(
    backlog: Backlog, field_name: str, value: object
) -> None:
    with pytest.raises(ValueError, match=field_name):
        await backlog.submit([new_job(0), replace(new_job(1), **{field_name: value})], now=0)
    assert await backlog.queued_count("batch") == 0


async def test_a_released_or_retried_job_keeps_its_tenant_and_turn(backlog: Backlog) -> None:
    await backlog.submit([of("a", i, max_attempts=3) for i in range(3)], now=0)
    await backlog.submit([of("b", i) for i in range(3)], now=0)
    got = await backlog.claim("batch", 2, owner=OWNER, lease_seconds=10, now=1)
    a_job = next(r for r in got if r.tenant == "a")
    await backlog.release([a_job.id], owner=OWNER, now=2)
    assert await backlog.queued_by_tenant("batch") == [("a", 3), ("b", 2)]
    served = Counter(await claim(backlog, 4, now=3))
    assert served == {"a": 2, "b": 2}


async def test_fairness_holds_between_two_claimers_of_one_backlog(
    make_backlog: Callable[[], Backlog], backend: str
) -> None:
    if backend == "memory":
        pytest.skip("a memory backlog is not shared between processes")
    first, second = make_backlog(), make_backlog()
    async with first, second:
        await first.submit([of("big", i) for i in range(100)], now=0)
        await first.submit([of(f"s{k}", k) for k in range(4) for _ in range(3)], now=0)
        order: list[str | None] = []
        for i in range(4):  # the two take turns claiming: the shares are the backlog's
            order += await claim(first if i % 2 == 0 else second, 4, owner=f"w{i % 2}")
        # five flows take turns whichever process claims: 16 slots, the four small
        # tenants' 12 jobs and big's 4 (one per round of five)
        assert Counter(order) == {"big": 4, "s0": 3, "s1": 3, "s2": 3, "s3": 3}


async def test_the_postgres_fair_claim_walks_a_tenants_queue_by_index() -> None:
    """One tenant's next due jobs on a lane of 20,000 queued jobs of 20 tenants (after
    ANALYZE): an index scan of ``floodgate_jobs_queued_tenant`` in claim order."""
    from scheduler.backlog import _postgres_schema as sql
    from scheduler.backlog.postgres import PostgresBacklog
    from tests.backlog import pg

    dsn = pg.dsn_or_skip()
    schema = pg.new_schema()
    try:
        async with PostgresBacklog(dsn, schema=schema, listen=False) as backlog:
            for chunk in range(4):
                jobs = [of(f"t{i % 20}", i, priority=i % 7, run_at=chunk) for i in range(5000)]
                await backlog.submit(jobs, now=0)
        raw = pg.with_settings(dsn, search_path=schema)
        await pg.execute(raw, "ANALYZE floodgate_jobs")
        pick = sql.FAIR_TENANT[sql.FAIR_TENANT.index("(SELECT") + 1 : sql.FAIR_TENANT.index(") c")]
        rows = await pg.execute(
            raw, "EXPLAIN (COSTS OFF) " + pick.replace("$6", "$2").replace("$5", "$3"),
            "batch", "t3", 8, 10.0,
        )  # fmt: skip
        plan = "\n".join(str(r[0]) for r in rows)
        assert "floodgate_jobs_queued_tenant" in plan, plan
        assert "Sort" not in plan, plan
        assert "Seq Scan" not in plan, plan
    finally:
        await pg.drop_schema(dsn, schema)
