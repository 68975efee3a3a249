"""Fair shares between tenants in a lane: the fair queue on its own (examples and a
hypothesis property), then through the scheduler on a fake clock."""

from __future__ import annotations

import asyncio
import collections
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler import ConfigError, FakeClock, Lane, Overloaded, Scheduler, Tenants
from scheduler.lanes import FairQueue

from .helpers import settle


def test_a_flood_cannot_starve_a_tenant_with_few_items() -> None:
    queue: FairQueue[str] = FairQueue()
    for i in range(1000):
        queue.push(f"big-{i}", 0, 0.0, "big")
    for t in range(9):
        for i in range(10):
            queue.push(f"t{t}-{i}", 0, 0.0, f"t{t}")
    first = [queue.pop() for _ in range(100)]
    small = [item for item in first if item and not item.startswith("big")]
    assert len(small) == 90  # ten rounds of ten tenants: every small item is served
    assert len(queue) == 1000 - 10


def test_priority_orders_a_tenants_items_and_weights_split_the_turns() -> None:
    queue: FairQueue[str] = FairQueue(tenants=Tenants(weights={"gold": 2.0}))
    for i, priority in enumerate([5, 1, 3]):
        queue.push(f"gold-p{priority}", priority, float(i), "gold")
    for i in range(6):
        queue.push(f"free-{i}", 0, float(i), "free")
    order = [queue.pop() for _ in range(6)]
    assert [o for o in order if o and o.startswith("gold")] == ["gold-p1", "gold-p3", "gold-p5"]
    assert order.count("gold-p1") == 1
    assert sum(1 for o in order[:3] if o and o.startswith("gold")) == 2  # two turns per round


def test_a_tenant_not_eligible_is_skipped_and_keeps_its_place() -> None:
    queue: FairQueue[str] = FairQueue()
    queue.push("a1", 0, 0.0, "a")
    queue.push("b1", 0, 0.0, "b")
    queue.push("a2", 0, 0.0, "a")
    assert queue.pop(lambda t: t != "a") == "b1"
    assert queue.pop(lambda t: t != "a") is None
    assert queue.pop() == "a1"
    assert len(queue) == 1


@settings(max_examples=300, deadline=None)
@given(
    ops=st.lists(
        st.one_of(
            st.tuples(st.just("push"), st.sampled_from("abcd"), st.integers(1, 8)),
            st.tuples(st.just("pop"), st.just(""), st.integers(1, 8)),
            st.tuples(st.just("remove"), st.just(""), st.integers(0, 50)),
        ),
        max_size=60,
    ),
    weights=st.fixed_dictionaries({"a": st.sampled_from([1.0, 2.0, 3.0])}),
)
def test_the_fair_queue_keeps_order_within_tenants_and_shares_between_them(
    ops: list[tuple[str, str, int]], weights: dict[str, float]
) -> None:
    queue: FairQueue[tuple[str, int, int]] = FairQueue(tenants=Tenants(weights=weights))
    seq = itertools.count()
    live: dict[tuple[str, int, int], tuple[str | None, list[object]]] = {}
    pops: list[str] = []  # the tenant of every item popped, in order
    since: dict[str, int] = {}  # a tenant waiting without a break: since which pop

    def waiting(tenant: str) -> int:
        return sum(1 for item in live if item[0] == tenant)

    steps = [
        (op, tenant, i % 4 if op == "push" else n)
        for op, tenant, n in ops
        for i in range(n if op != "remove" else 1)  # a burst of pushes or pops
    ]
    for op, tenant, n in steps:
        if op == "push":
            item = (tenant, n, next(seq))
            live[item] = queue.push(item, n, 0.0, tenant)
            since.setdefault(tenant, len(pops))
        elif op == "remove" and live:
            item = sorted(live)[n % len(live)]
            assert queue.remove(live.pop(item))
            if not waiting(item[0]):
                del since[item[0]]
        elif op == "pop":
            item = queue.pop()
            if not live:
                assert item is None
                continue
            assert item is not None
            assert item in live
            # within the tenant: the lowest priority, FIFO among equals
            assert item == min((i for i in live if i[0] == item[0]), key=lambda i: (i[1], i[2]))
            del live[item]
            pops.append(item[0])
            # between tenants waiting without a break: service in proportion to the
            # weights, within one turn of each (start-time fair queuing's bound)
            for x, y in itertools.combinations(sorted(since), 2):
                window = pops[max(since[x], since[y]) :]
                wx, wy = weights.get(x, 1.0), weights.get(y, 1.0)
                gap = abs(window.count(x) / wx - window.count(y) / wy)
                assert gap <= 1 / wx + 1 / wy + 1e-9, (x, y, window)
            if not waiting(item[0]):
                del since[item[0]]
        assert len(queue) == len(live)
    rest = []
    while (got := queue.pop()) is not None:
        rest.append(got)
    assert sorted(rest) == sorted(live)


def make(clock: FakeClock, tenants: Tenants | None = None, seats: int = 1) -> Scheduler:
    lane = Lane("work", seats, 200_000, tenants=tenants or Tenants())
    return Scheduler(lanes=[lane], clock=clock, shutdown_grace=0)


async def test_nine_small_tenants_finish_long_before_a_flood_of_a_thousand(
    clock: FakeClock,
) -> None:
    sched = make(clock)
    finished: list[str] = []

    async def job(tenant: str) -> None:
        await clock.sleep(0.01)
        finished.append(tenant)

    async with sched:
        calls = [
            asyncio.create_task(sched.call(job, "big", lane="work", tenant="big"))
            for _ in range(1000)
        ]
        await settle()
        calls += [
            asyncio.create_task(sched.call(job, f"t{t}", lane="work", tenant=f"t{t}"))
            for t in range(9)
            for _ in range(10)
        ]
        await settle()
        for _ in range(110):
            await clock.advance_and_settle(0.01)
        small_done = sum(1 for t in finished if t != "big")
        assert small_done == 90, f"only {small_done} of 90 small jobs ran in the first 110"
        for call in calls:
            call.cancel()
        await asyncio.gather(*calls, return_exceptions=True)


async def test_a_tenants_seats_and_queue_are_bounded_and_the_error_names_it(
    clock: FakeClock,
) -> None:
    sched = make(clock, Tenants(max_in_flight=1, max_queued=2), seats=4)
    running: collections.Counter[str] = collections.Counter()
    peak: collections.Counter[str] = collections.Counter()
    gate = asyncio.Event()

    async def job(tenant: str) -> None:
        running[tenant] += 1
        peak[tenant] = max(peak[tenant], running[tenant])
        await gate.wait()
        running[tenant] -= 1

    async with sched:
        calls = [
            asyncio.create_task(sched.call(job, "a", lane="work", tenant="a")) for _ in range(3)
        ]
        await settle()
        with pytest.raises(Overloaded, match="tenant 'a' in lane 'work' is full") as err:
            await sched.call(job, "a", lane="work", tenant="a")
        assert err.value.tenant == "a"
        calls += [asyncio.create_task(sched.call(job, "b", lane="work", tenant="b"))]
        await settle()
        assert running == {"a": 1, "b": 1}  # a waits for its one seat; b is not held up
        stats = sched.stats()["work"]
        assert stats.shed == {"tenant_queue_full": 1}
        by_name = {t.tenant: t for t in stats.tenants}
        assert (by_name["a"].queued, by_name["a"].running, by_name["a"].shed) == (2, 1, 1)
        gate.set()
        await asyncio.gather(*calls)
    assert peak["a"] == 1


def held_calls(
    sched: Scheduler, gate: asyncio.Event, tenants: dict[str, int]
) -> list[asyncio.Task[None]]:
    """``tenants[t]`` calls per tenant that wait for ``gate`` (the lane stays full)."""

    async def job() -> None:
        await gate.wait()

    return [
        asyncio.create_task(sched.call(job, lane="work", tenant=tenant))
        for tenant, n in tenants.items()
        for _ in range(n)
    ]


async def test_stats_show_the_busiest_tenants_and_sum_up_the_rest(clock: FakeClock) -> None:
    sched = make(clock)
    gate = asyncio.Event()
    async with sched:
        calls = held_calls(sched, gate, {f"t{t:02d}": t + 1 for t in range(25)})
        await settle()
        tenants = sched.stats()["work"].tenants
        assert len(tenants) == 10
        assert tenants[0].tenant == "t24"
        assert tenants[-1].tenant == "(other)"
        assert sum(t.queued + t.running for t in tenants) == len(calls)
        gate.set()
        await asyncio.gather(*calls)


def test_bad_tenants_and_policies_are_refused_clearly() -> None:
    with pytest.raises(ConfigError, match="max_in_flight"):
        Tenants(max_in_flight=0)
    with pytest.raises(ConfigError, match="the weight of 'x' must be a positive number"):
        Tenants(weights={"x": 0})
    with pytest.raises(ConfigError, match="tenants must be a Tenants"):
        Lane("l", tenants={"max_in_flight": 1})  # type: ignore[arg-type]


async def test_a_tenant_must_be_a_short_str(clock: FakeClock) -> None:
    sched = make(clock)

    async def job() -> None:
        return None

    async with sched:
        with pytest.raises(TypeError, match="tenant must be a str or None, got int"):
            await sched.call(job, lane="work", tenant=5)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="1 to 200 characters"):
            await sched.call(job, lane="work", tenant="x" * 201)
        await sched.call(job, lane="work", tenant="ok")


async def test_metrics_carry_the_busiest_tenants_with_bounded_labels(clock: FakeClock) -> None:
    from prometheus_client.exposition import generate_latest
    from prometheus_client.registry import CollectorRegistry

    from scheduler.asgi.prometheus import metric_families

    sched = make(clock)
    gate = asyncio.Event()
    async with sched:
        calls = held_calls(sched, gate, {f"key-{t}": t % 3 + 1 for t in range(40)})
        await settle()
        families = metric_families(sched.stats(), None)

        class Snapshot:
            def collect(self) -> list[object]:
                return families  # type: ignore[return-value]

        registry = CollectorRegistry(auto_describe=False)
        registry.register(Snapshot())  # type: ignore[arg-type]
        text = generate_latest(registry).decode()
        gate.set()
        await asyncio.gather(*calls)
    queued = [
        line for line in text.splitlines() if line.startswith("floodgate_lane_tenant_queued{")
    ]
    assert len(queued) == 10  # nine tenants and "(other)", however many there are
    assert any('tenant="(other)"' in line for line in queued)
    total = sum(float(line.rsplit(" ", 1)[1]) for line in queued)
    running = [
        line for line in text.splitlines() if line.startswith("floodgate_lane_tenant_running{")
    ]
    assert total + sum(float(line.rsplit(" ", 1)[1]) for line in running) == len(calls)
