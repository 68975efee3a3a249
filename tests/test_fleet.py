"""One upstream budget for a fleet: shared pauses, breaker holds, rpm split and the
fleet-wide operator pause (fake clock and in-memory store; the real SQLite file
and PostgreSQL at the end)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import sqlite3
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler import BreakerConfig, FakeClock, Scheduler
from scheduler.breaker import BreakerState
from scheduler.classify import SUCCESS, Classified, FailureKind
from scheduler.errors import ConfigError
from scheduler.fleet import FleetSync, FleetView, Hold, MemoryFleetStore
from scheduler.fleet_stores import PostgresFleetStore, SQLiteFleetStore
from scheduler.gate import HealthGate
from scheduler.limits import LearnedRate
from scheduler.testing import eventually, wait_all_tasks_blocked
from scheduler.upstream import Denied, Permit, Upstream, UpstreamHealth

from .backlog import pg
from .test_pacing import THROTTLED, budget_headers

DOWN = Classified(FailureKind.SERVER_ERROR, None, 503)
PG_DSN, PG_MISSING = pg.find_dsn()


def member(
    name: str, store: object, clock: FakeClock, *upstreams: Upstream
) -> tuple[HealthGate, FleetSync]:
    gate = HealthGate(upstreams, clock=clock)
    sync = FleetSync(gate, store, clock, member=name)  # type: ignore[arg-type]
    gate.fleet = sync
    return gate, sync


async def sync_all(*syncs: FleetSync) -> None:
    for sync in syncs:
        await sync.sync_once()


async def test_a_retry_after_in_one_process_holds_every_other() -> None:
    clock, store = FakeClock(), MemoryFleetStore()
    gate_a, a = member("a", store, clock)
    gate_b, b = member("b", store, clock)
    gate_b.upstream("llm")
    gate_a.upstream("llm").pause(5.0)
    await sync_all(a, b)
    held = gate_b.upstream("llm")
    assert held.blocked() == "retry_after"
    assert clock.now() + 5.0 <= held.paused_until <= clock.now() + 5.5  # + jitter
    clock.advance(5.51)
    await sync_all(a, b)
    assert held.blocked() is None


async def test_an_open_breaker_holds_the_others_and_only_its_owner_runs_trials() -> None:
    clock, store = FakeClock(), MemoryFleetStore()
    config = Upstream("llm", breaker=BreakerConfig(min_volume=4))
    gate_a, a = member("a", store, clock, config)
    gate_b, b = member("b", store, clock, config)
    owner = gate_a.upstream("llm")
    for _ in range(4):
        got = owner.admit(gated=False)
        assert isinstance(got, Permit)
        got.finish(DOWN, 0.1)
    assert owner.breaker.state is BreakerState.OPEN
    await sync_all(a, b)
    other = gate_b.upstream("llm")
    assert other.blocked() == "breaker_open"
    live = other.admit(gated=False)
    assert isinstance(live, Denied)
    assert live.reason == "breaker_open"
    # the owner's trial succeeds: its breaker closes and the hold ends everywhere
    clock.advance(owner.breaker.next_trial_in(live=True) or 0.0)
    trial = owner.admit(gated=False)
    assert isinstance(trial, Permit)
    trial.finish(SUCCESS, 0.1)
    while owner.breaker.state is not BreakerState.CLOSED:
        got = owner.admit(gated=False)
        assert isinstance(got, Permit)
        got.finish(SUCCESS, 0.1)
    await sync_all(a, b)
    assert other.blocked() is None
    assert isinstance(other.admit(gated=False), Permit)


async def test_a_dead_owners_breaker_hold_expires_by_itself() -> None:
    clock, store = FakeClock(), MemoryFleetStore()
    gate_a, a = member("a", store, clock)
    gate_b, b = member("b", store, clock)
    owner = gate_a.upstream("llm")
    for _ in range(30):
        got = owner.admit(gated=False)
        if isinstance(got, Permit):
            got.finish(DOWN, 0.1)
    assert owner.breaker.state is BreakerState.OPEN
    await sync_all(a, b)
    other = gate_b.upstream("llm")
    assert other.blocked() == "breaker_open"
    # a is killed: nobody refreshes its hold; b waits no longer than the hold's end
    for _ in range(40):
        clock.advance(0.25)
        await b.sync_once()
        if other.blocked() is None:
            break
    assert other.blocked() is None
    assert clock.now() <= 2.0 + 1.0 + 0.25 + 0.25  # first trial + margin + one sync


async def test_rpm_is_split_between_the_processes_using_the_upstream() -> None:
    clock, store = FakeClock(), MemoryFleetStore()
    config = Upstream("llm", rpm=600)  # 10/s for the whole fleet
    gates = [member(n, store, clock, config) for n in "abc"]
    for gate, _ in gates:
        gate.upstream("llm").admit(gated=True)  # each uses it
    await sync_all(*(s for _, s in gates))
    await sync_all(*(s for _, s in gates))
    assert [g.upstream("llm").share for g, _ in gates] == pytest.approx([1 / 3] * 3)
    # a long steady run: all three together stay within the fleet's 10/s
    sent = 0
    for step in range(400):  # 40 s
        clock.advance(0.1)
        for gate, _ in gates:
            while isinstance(gate.upstream("llm").admit(gated=False), Permit):
                sent += 1
        if step % 3 == 0:
            await sync_all(*(s for _, s in gates))
    assert sent <= 10 * 40 + 3 * 10  # the limit, plus what each banked at the start
    assert sent >= 0.9 * 10 * 40
    # c stops cleanly: a and b take its share at once
    await gates[2][1].leave()
    await sync_all(gates[0][1], gates[1][1])
    assert gates[0][0].upstream("llm").share == pytest.approx(0.5)


async def test_a_crashed_process_share_returns_after_the_member_ttl() -> None:
    clock, store = FakeClock(), MemoryFleetStore()
    config = Upstream("llm", rpm=600)
    gate_a, a = member("a", store, clock, config)
    gate_b, b = member("b", store, clock, config)
    for gate in (gate_a, gate_b):
        gate.upstream("llm").admit(gated=True)
    await sync_all(a, b, a)
    assert gate_a.upstream("llm").share == pytest.approx(0.5)
    for _ in range(16):  # b was killed: it never syncs again
        clock.advance(0.25)
        gate_a.upstream("llm").admit(gated=True)
        await a.sync_once()
    assert gate_a.upstream("llm").share == pytest.approx(1.0)


async def test_the_operator_pause_reaches_every_process_with_who_and_why() -> None:
    clock, store = FakeClock(), MemoryFleetStore()
    gate_a, a = member("a", store, clock)
    gate_b, b = member("b", store, clock)
    gate_a.pause("provider maintenance", fleet=True)
    assert not gate_a.is_open
    await sync_all(a, b)
    assert not gate_b.is_open
    assert gate_b.reason == "fleet: provider maintenance (by a)"
    assert store.paused is not None
    assert store.paused.by == "a"
    gate_b.resume(fleet=True)
    await sync_all(b, a)
    assert gate_a.is_open
    assert gate_b.is_open


def test_a_fleet_pause_without_a_fleet_is_a_clear_error() -> None:
    gate = HealthGate(clock=FakeClock())
    with pytest.raises(ConfigError, match="fleet"):
        gate.pause("x", fleet=True)


async def test_an_unreachable_store_keeps_the_last_share_and_says_so_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="floodgate")
    clock, store = FakeClock(), MemoryFleetStore()
    config = Upstream("llm", rpm=600)
    gate_a, a = member("a", store, clock, config)
    gate_b, b = member("b", store, clock, config)
    for gate in (gate_a, gate_b):
        gate.upstream("llm").admit(gated=True)
    await sync_all(a, b, a)
    store.fail = True
    for _ in range(20):
        clock.advance(0.25)
        await a.sync_once()
    assert gate_a.upstream("llm").share == pytest.approx(0.5)  # never more than its share
    events = [r.msg["event"] for r in caplog.records if isinstance(r.msg, dict)]
    assert events.count("fleet.unreachable") == 1
    store.fail = False
    gate_a.upstream("llm").admit(gated=True)
    await a.sync_once()
    assert "fleet.reachable" in [r.msg["event"] for r in caplog.records if isinstance(r.msg, dict)]
    assert a.reachable


@settings(max_examples=40, deadline=None)
@given(
    pauses=st.lists(
        st.tuples(st.integers(0, 3), st.floats(0.1, 30.0), st.integers(0, 3)), max_size=12
    )
)
def test_every_process_ends_up_held_as_long_as_the_longest_pause_and_no_longer(
    pauses: list[tuple[int, float, int]],
) -> None:
    async def scenario() -> None:
        clock, store = FakeClock(), MemoryFleetStore()
        members = [member(str(i), store, clock) for i in range(4)]
        for gate, _ in members:
            gate.upstream("llm")
        longest = -1.0
        for who, seconds, syncs in pauses:
            members[who][0].upstream("llm").pause(seconds)
            longest = max(longest, clock.now() + seconds)
            for _, sync in members[:syncs]:
                await sync.sync_once()
            clock.advance(0.05)
        for _ in range(2):
            await sync_all(*(s for _, s in members))
        for gate, _ in members:
            until = gate.upstream("llm").paused_until
            # a pause only a hair (< 50 ms) beyond what the fleet knows is not news;
            # the others' resume is spread by up to 10 % of the pause (0.5 s at most)
            assert until <= longest + min(0.5, 0.1 * 30.0) + 1e-6
            if longest > clock.now():
                assert until >= longest - 0.05 - 1e-6

    asyncio.run(scenario())


def cut_here(health: UpstreamHealth, clock: FakeClock, rate: float) -> None:
    """Send 20 requests at ``rate``/s through ``health``'s pacer, then a 429: a cut."""
    clock.advance(1.0)  # past the last cut's settling
    for _ in range(20):
        clock.advance(1.0 / rate)
        health.pacer.take()
    health.pacer.on_throttle(clock.now())


async def test_one_429_teaches_the_whole_fleet_the_rate() -> None:
    clock, store = FakeClock(), MemoryFleetStore()
    members = [member(name, store, clock) for name in "abc"]
    healths = [gate.upstream("llm") for gate, _ in members]
    syncs = [sync for _, sync in members]
    await sync_all(*syncs)
    assert all(h.pacer.rate() is None for h in healths)  # nothing learned anywhere
    cut_here(healths[0], clock, 30.0)
    curve = healths[0].pacer.curve()
    assert curve is not None
    await sync_all(*syncs, *syncs)
    for health in healths[1:]:
        assert health.pacer.curve() == curve  # they follow the same curve ...
        assert health.pacer.cuts == 0  # ... adopted, not learned
        assert health.pacer.rate() == pytest.approx(healths[0].pacer.rate(), rel=0.05)
    assert store.cuts["llm"].by == "a"  # nobody told it back as their own


@settings(max_examples=40, deadline=None)
@given(
    steps=st.lists(
        st.tuples(st.integers(0, 2), st.floats(5.0, 200.0), st.integers(0, 3)),
        min_size=1,
        max_size=8,
    )
)
def test_every_process_follows_the_latest_cut_in_the_fleet(
    steps: list[tuple[int, float, int]],
) -> None:
    async def scenario() -> None:
        clock, store = FakeClock(), MemoryFleetStore()
        members = [member(str(i), store, clock) for i in range(3)]
        healths = [gate.upstream("llm") for gate, _ in members]
        latest = None
        for who, rate, syncs in steps:
            cut_here(healths[who], clock, rate)
            latest = healths[who].pacer.curve()
            for _, sync in members[:syncs]:
                await sync.sync_once()
        for _ in range(2):
            await sync_all(*(sync for _, sync in members))
        assert all(h.pacer.curve() == latest for h in healths)

    asyncio.run(scenario())


async def test_a_fleet_that_wakes_at_once_starts_at_its_share() -> None:
    clock, store = FakeClock(), MemoryFleetStore()
    members = [member(name, store, clock, Upstream("llm", rpm=600)) for name in "abc"]
    (gate_a, a), (gate_b, b), (gate_c, c) = members
    for gate, _ in members:
        gate.upstream("llm")  # known, not used yet
    await sync_all(a, b, c, a, b)  # each has seen the others
    # none uses it: any may start next, and so may all three
    assert [g.upstream("llm").share for g, _ in members] == [pytest.approx(1 / 3)] * 3
    gate_a.upstream("llm").admit(gated=True)
    await sync_all(a, b, c)
    assert gate_a.upstream("llm").share == 1.0  # the only one using it
    assert gate_b.upstream("llm").share == pytest.approx(1 / 3)  # idle: ready to join
    gate_b.upstream("llm").admit(gated=True)
    await sync_all(b, a, c)
    assert gate_a.upstream("llm").share == pytest.approx(0.5)
    assert gate_b.upstream("llm").share == pytest.approx(0.5)
    assert gate_c.upstream("llm").share == pytest.approx(1 / 3)
    for _ in range(int(a.active_for / a.interval) + 2):  # a and b stop using it
        clock.advance(a.interval)
        await sync_all(a, b, c)
    assert [g.upstream("llm").share for g, _ in members] == [pytest.approx(1 / 3)] * 3


async def test_one_process_probes_for_the_fleet_and_the_others_heed_it() -> None:
    clock, store = FakeClock(), MemoryFleetStore()
    config = Upstream("llm", probe_url="http://127.0.0.1:9/health", probe_interval=1.0)
    (gate_a, a), (gate_b, b) = (member(name, store, clock, config) for name in "ab")
    prober, other = gate_a.upstream("llm"), gate_b.upstream("llm")
    await sync_all(a, b, a, b)
    assert not prober.probe_elsewhere()
    assert other.probe_elsewhere()
    prober.probe_ok = False  # a's probe fails: b's batch waits too
    await sync_all(a, b)
    assert other.blocked() == "probe"
    prober.probe_ok = True
    await sync_all(a, b)
    assert other.blocked() is None
    for _ in range(6):  # b keeps out while a renews its lease
        clock.advance(0.5)
        await sync_all(b, a)
        assert other.probe_elsewhere()
        assert not prober.probe_elsewhere()
    for _ in range(20):  # a is gone (no more exchanges): its lease lapses, b takes over
        clock.advance(0.25)
        await b.sync_once()
    assert not other.probe_elsewhere()
    assert store.holds[("llm", "probe")].by == "b"


@settings(max_examples=30, deadline=None)
@given(order=st.lists(st.sampled_from([0, 1, 2]), min_size=1, max_size=12))
def test_the_probe_lease_has_one_holder_whatever_the_order_of_exchanges(
    order: list[int],
) -> None:
    async def scenario() -> None:
        clock, store = FakeClock(), MemoryFleetStore()
        config = Upstream("llm", probe_url="http://127.0.0.1:9/health", probe_interval=1.0)
        members = [member(str(i), store, clock, config) for i in range(3)]
        for gate, _ in members:
            gate.upstream("llm")  # as its probe loop does when it starts
        for who in order:
            await members[who][1].sync_once()
            clock.advance(0.05)
        await sync_all(*(sync for _, sync in members))
        await sync_all(*(sync for _, sync in members))
        probing = [gate for gate, _ in members if not gate.upstream("llm").probe_elsewhere()]
        assert len(probing) == 1
        assert probing[0].fleet is not None
        assert store.holds[("llm", "probe")].by == probing[0].fleet.member

    asyncio.run(scenario())


# -- the real stores --------------------------------------------------------------


async def _shared_pause_through(store_a: object, store_b: object) -> None:
    clock = FakeClock()
    gate_a, a = member("a", store_a, clock, Upstream("llm", rpm=600))
    gate_b, b = member("b", store_b, clock, Upstream("llm", rpm=600))
    try:
        for gate in (gate_a, gate_b):
            gate.upstream("llm").admit(gated=True)
        gate_a.upstream("llm").pause(7.0)
        gate_a.pause("maintenance", fleet=True)
        await sync_all(a, b, a)
        assert gate_b.upstream("llm").blocked() == "retry_after"
        assert 7.0 - 0.01 <= gate_b.upstream("llm").paused_until <= 7.5
        assert gate_b.reason == "fleet: maintenance (by a)"
        assert gate_a.upstream("llm").share == pytest.approx(0.5)
        assert gate_b.upstream("llm").share == pytest.approx(0.5)
        cut_here(gate_b.upstream("llm"), clock, 40.0)  # b learns; a follows
        await sync_all(b, a)
        assert gate_a.upstream("llm").pacer.curve() == gate_b.upstream("llm").pacer.curve()
        assert gate_a.upstream("llm").pacer.cuts == 0
        gate_a.resume(fleet=True)
        await b.leave()
        await sync_all(a, b)
        assert gate_b.is_open
    finally:
        await a.store.close()
        await b.store.close()


async def test_two_connections_to_one_sqlite_file_share_pauses_and_splits(tmp_path: Path) -> None:
    path = str(tmp_path / "fleet.db")
    await _shared_pause_through(SQLiteFleetStore(path), SQLiteFleetStore(path))


@pytest.mark.skipif(PG_DSN is None, reason=PG_MISSING)
async def test_two_connections_to_postgresql_share_pauses_and_splits() -> None:
    assert PG_DSN is not None
    schema = f"fleet_{os.getpid()}"
    import asyncpg  # type: ignore[import-untyped]

    admin = await asyncpg.connect(PG_DSN)
    try:
        await admin.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        settings_ = {"search_path": f'"{schema}"'}
        first, second = PostgresFleetStore(PG_DSN, settings_), PostgresFleetStore(PG_DSN, settings_)
        woken = asyncio.Event()
        second.on_notify = woken.set
        await second.operator()  # connected and listening
        await _shared_pause_through(first, second)
    finally:
        await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await admin.close()


PAUSER = """
import asyncio, sys
from scheduler import Scheduler
from scheduler.classify import Classified, FailureKind

async def main():
    async with Scheduler(sys.argv[1]) as sched:
        health = sched.gate.upstream("llm")
        got = health.admit(gated=False)
        got.finish(Classified(FailureKind.RATE_LIMITED, 30.0, 429), 0.05)
        print("paused", flush=True)
        await asyncio.sleep(20)

asyncio.run(main())
"""


async def test_a_429_in_another_process_pauses_this_one_through_the_sqlite_file(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "b.db")
    async with Scheduler(path) as sched:
        health = sched.gate.upstream("llm")
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", PAUSER, path, stdout=asyncio.subprocess.PIPE
        )
        try:
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), 30)
            assert line.strip() == b"paused"
            for _ in range(100):  # bounded: 100 x 0.05 s
                if health.blocked() == "retry_after":
                    break
                await asyncio.sleep(0.05)
            assert health.blocked() == "retry_after"
            stats = sched.stats().upstreams["llm"]
            assert stats.paused_for is not None
            assert 20 < stats.paused_for <= 30.5  # its Retry-After, + up to 0.5 s of jitter
        finally:
            proc.kill()
            await proc.wait()


# -- the learned rate, split -------------------------------------------------------


def test_a_learned_rate_is_the_fleets_and_each_process_sends_its_share() -> None:
    clock = FakeClock()
    pacer = LearnedRate(clock)
    pacer.set_share(0.5)
    for _ in range(40):  # this process sent 20/s for 2 s, then a 429
        clock.advance(0.05)
        assert pacer.take()
        pacer.on_success()
    pacer.on_throttle(clock.now())
    rate = pacer.rate()
    assert rate is not None
    assert 0.85 * 40 <= rate <= 40  # the fleet's rate, cut from 2 x what we sent
    sent, allowed = 0, 0.0
    for _ in range(1000):  # 10 s: half of the fleet's rate is ours
        clock.advance(0.01)
        now_rate = pacer.rate()
        assert now_rate is not None
        allowed += 0.5 * now_rate * 0.01
        while pacer.take():
            sent += 1
    assert 0.85 * allowed <= sent <= allowed + 1  # (a bucket of one turn, 10 ms steps)


def test_a_fleet_share_starts_paced_by_the_headers_a_lone_process_does_not() -> None:
    clock = FakeClock()
    alone, shared = (UpstreamHealth(Upstream("llm"), clock) for _ in range(2))
    shared.set_share(0.25)
    assert shared.pacer.rate() is None  # nothing known yet: nothing to pace by
    for tokens in (4.0, 3.0, 2.0):  # a bucket of 10 refilling at 40/s, being spent
        for health in (alone, shared):
            health.observe_headers(budget_headers(10, tokens, (10 - tokens) / 40))
    bounds = shared.pacer.bounds()
    assert bounds is not None
    assert bounds[0] <= 40 <= bounds[1]
    assert alone.pacer.rate() is None  # alone, it sends unpaced until a 429 says more
    assert shared.pacer.rate() == pytest.approx(bounds[1])  # the fleet's most, of which ...
    assert shared.pacer.turns_within(1.0) == pytest.approx(1 + bounds[1] * 0.25, rel=0.05)
    got = shared.admit(gated=True)
    assert isinstance(got, Permit)
    got.finish(THROTTLED, 0.01)  # the first 429 cuts as usual
    rate = shared.pacer.rate()
    assert rate is not None
    assert rate <= bounds[1]
    assert shared.pacer.cuts == 1


def test_processes_sharing_a_hidden_limit_stay_within_it_together() -> None:
    """Three processes, each with its own health and a third of the rate, against
    one hidden bucket of 40/s and a burst of 5 with OpenAI-style headers."""
    clock = FakeClock()
    healths = [UpstreamHealth(Upstream("llm"), clock) for _ in range(3)]
    for health in healths:
        health.set_share(1 / 3)
    limit, burst, latency = 40.0, 5.0, 0.05
    tokens, at = burst, 0.0
    in_flight: list[tuple[float, bool, UpstreamHealth, Permit]] = []
    ok = throttled = 0
    while clock.now() < 120:
        now = clock.now()
        for health in healths:
            while sum(1 for _, _, h, _ in in_flight if h is health) < 4:
                got = health.admit(gated=True)
                if isinstance(got, Denied):
                    break
                tokens, at = min(burst, tokens + (now - at) * limit), now
                accepted = tokens >= 1
                tokens -= accepted
                in_flight.append((now + latency, accepted, health, got))
        clock.advance(0.005)
        done = [f for f in in_flight if f[0] <= clock.now()]
        in_flight = [f for f in in_flight if f[0] > clock.now()]
        for _, accepted, health, permit in done:
            tokens, at = min(burst, tokens + (clock.now() - at) * limit), clock.now()
            health.observe_headers(budget_headers(burst, tokens, (burst - tokens) / limit))
            permit.finish(SUCCESS if accepted else THROTTLED, latency)
            if clock.now() >= 20:
                ok += accepted
                throttled += not accepted
    assert ok / 100 >= 0.9 * limit
    assert ok / 100 <= limit + 1
    assert throttled / (ok + throttled) <= 0.01


# -- the loop ------------------------------------------------------------------------


class GatedStore(MemoryFleetStore):
    """Each exchange waits until the test lets it through (a database round trip)."""

    def __init__(self) -> None:
        super().__init__()
        self.go = asyncio.Event()
        self.exchanges = 0

    async def exchange(self, *args: Any, **kwargs: Any) -> FleetView:
        self.exchanges += 1
        await self.go.wait()
        self.go.clear()
        return await super().exchange(*args, **kwargs)


async def test_a_pause_during_an_exchange_is_published_at_once_not_a_sync_later() -> None:
    clock, store = FakeClock(), GatedStore()
    gate = HealthGate((), clock=clock)
    sync = FleetSync(gate, store, clock, member="a")
    gate.fleet = sync
    gate.upstream("llm")
    loop = asyncio.create_task(sync.run())
    try:
        await wait_all_tasks_blocked()  # the first exchange is in flight
        assert store.exchanges == 1
        gate.upstream("llm").pause(5.0)  # news while it is in flight
        store.go.set()
        await wait_all_tasks_blocked()  # no time passes: only a wake may start the next one
        assert store.exchanges == 2, "the pause waits for the next periodic exchange"
        store.go.set()
        await wait_all_tasks_blocked()
        assert ("llm", "retry_after") in store.holds
    finally:
        loop.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loop


async def test_a_fleet_share_claims_no_more_than_its_paced_slice_can_start() -> None:
    clock = FakeClock()
    health = UpstreamHealth(Upstream("llm"), clock)
    assert health.pacing_room() is None  # alone: the lane's seats are all ours
    health.set_share(0.25)
    assert health.pacing_room() is None  # nothing learned: nothing paced
    for _ in range(20):
        clock.advance(0.0125)  # 80/s of ours = 320/s of the fleet's
        got = health.admit(gated=True)
        assert isinstance(got, Permit)
        got.finish(SUCCESS, 0.01)
    got = health.admit(gated=True)
    assert isinstance(got, Permit)
    got.finish(THROTTLED, 0.01)
    rate = health.pacer.rate()
    assert rate is not None
    room = health.pacing_room()
    turns = health.pacer.turns_within(0.1)
    assert turns is not None
    assert room == math.floor(turns) >= 1
    waiters = [asyncio.create_task(health.paced_permit()) for _ in range(room + 3)]
    await asyncio.sleep(0)
    assert health.pacing_room() == 0
    for waiter in waiters:
        waiter.cancel()
    await asyncio.gather(*waiters, return_exceptions=True)
    assert health.pacing_waiters == 0


async def test_a_fleet_share_of_rpm_claims_only_what_its_next_turns_start() -> None:
    clock = FakeClock()
    health = UpstreamHealth(Upstream("llm", rpm=600, burst=0.1), clock)  # 10/s, 1 banked
    assert health.pacing_room() is None  # alone: no cap
    health.set_share(0.25)  # ours: 2.5/s, one turn banked
    assert health.pacing_room() == 1
    assert health.next_turn_in() == 0.0
    got = health.admit(gated=True)
    assert isinstance(got, Permit)
    got.finish(SUCCESS, 0.01)
    assert health.pacing_room() == 0  # the next turn is 0.4 s away
    assert health.next_turn_in() == pytest.approx(0.4)
    clock.advance(0.25)
    assert health.pacing_room() == 0  # still 0.15 s away
    clock.advance(0.06)
    assert health.pacing_room() == 1  # within 0.1 s: worth a seat now


async def test_a_cancelled_exchange_never_shares_the_connection_with_close(
    tmp_path: Path,
) -> None:
    """A cancelled caller leaves its thread running: close waits for it (this
    crashed the interpreter when close ran beside a running exchange)."""
    path = str(tmp_path / "fleet.db")
    for round_ in range(30):
        store = SQLiteFleetStore(path)
        holds = [Hold("llm", "retry_after", 1e12, f"m{round_}")]
        tasks = [
            asyncio.create_task(store.exchange(f"m{i}", 1.0, holds, ["llm"], 3.0)) for i in range(3)
        ]
        await asyncio.sleep(0)
        for task in tasks:
            task.cancel()
        await store.close()
        await asyncio.gather(*tasks, return_exceptions=True)
        with pytest.raises(sqlite3.ProgrammingError, match="closed"):
            await store.exchange("late", 1.0, (), (), 3.0)


async def test_a_fleet_exchange_beside_a_busy_backlog_waits_its_turn_instead_of_failing(
    tmp_path: Path,
) -> None:
    """Beside this process's backlog, an exchange runs on the backlog's connection, in
    turn with its writes: held behind a backlog transaction that keeps the write lock
    far past the store's busy timeout, it waits and succeeds (a second connection
    failed "database is locked", as under back-to-back group commits)."""
    import threading

    from scheduler.backlog import SQLiteBacklog
    from scheduler.fleet_stores import fleet_store_for

    backlog = SQLiteBacklog(str(tmp_path / "b.db"))
    await backlog.open()
    try:
        store = fleet_store_for(backlog)
        assert isinstance(store, SQLiteFleetStore)
        store.busy_timeout = 0.01  # what a second connection would wait for the lock
        held, release = threading.Event(), threading.Event()
        commits = backlog.stats().commits

        def long_write(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO lane_queued (lane, n) VALUES ('x', 0)")
            held.set()
            assert release.wait(10), "the test never released the write lock"

        writing = asyncio.create_task(backlog._transaction(long_write))
        await asyncio.to_thread(held.wait, 10)
        holds = [Hold("llm", "retry_after", 1e12, "a")]
        exchange = asyncio.create_task(store.exchange("a", 1.0, holds, ["llm"], 3.0))
        await asyncio.sleep(0.05)  # 5x the busy timeout, with the lock held
        assert not exchange.done()  # waiting its turn, not failed
        release.set()
        view = await exchange
        await writing
        assert [h.by for h in view.holds] == ["a"]
        assert backlog.stats().commits == commits + 1  # the exchange is not the backlog's
        assert await backlog.queued_count("x") == 0  # the backlog's own write committed
        await store.close()
        with pytest.raises(sqlite3.ProgrammingError, match="closed"):
            await store.exchange("late", 1.0, (), (), 3.0)
    finally:
        await backlog.close()


async def test_a_read_only_backlog_gets_a_fleet_store_of_its_own_connection(
    tmp_path: Path,
) -> None:
    from scheduler.backlog import SQLiteBacklog
    from scheduler.fleet_stores import fleet_store_for

    path = str(tmp_path / "b.db")
    writable = SQLiteBacklog(path)
    await writable.open()
    await writable.close()
    backlog = SQLiteBacklog(path, read_only=True)
    await backlog.open()
    try:
        store = fleet_store_for(backlog)
        assert isinstance(store, SQLiteFleetStore)
        assert await store.operator() is None  # read through its own connection
        await store.close()
    finally:
        await backlog.close()


class _Health:
    """An ASGI app answering ``GET /health?who=X`` with ``status``, counting who asked."""

    def __init__(self) -> None:
        self.status = 200
        self.asked: list[str] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        self.asked.append(scope["query_string"].decode().removeprefix("who="))
        await send({"type": "http.response.start", "status": self.status, "headers": []})
        await send({"type": "http.response.body", "body": b""})


async def test_two_schedulers_on_one_sqlite_file_probe_a_real_upstream_once(
    tmp_path: Path,
) -> None:
    from .http_helpers import serve

    app = _Health()
    db = str(tmp_path / "fleet.db")
    async with serve(app) as url:

        def sched(who: str) -> Scheduler:
            probe = Upstream("llm", probe_url=f"{url}/health?who={who}", probe_interval=0.05)
            return Scheduler(db, upstreams=[probe], shutdown_grace=0)

        a, b = sched("a"), sched("b")
        async with a.open(run=()):
            await eventually(lambda: "a" in app.asked, timeout=10, what="a probes")
            async with b.open(run=()):
                before = len(app.asked)
                await eventually(
                    lambda: len(app.asked) >= before + 10, timeout=10, what="ten more probes"
                )
                assert set(app.asked[before:]) == {"a"}, "b probed although a does"
                app.status = 503  # a's probe fails: b's batch waits as well
                for s in (a, b):
                    health = s.gate.upstream("llm")
                    await eventually(
                        lambda h=health: h.blocked() == "probe", timeout=10, what="both wait"
                    )
                app.status = 200
                for s in (a, b):
                    health = s.gate.upstream("llm")
                    await eventually(
                        lambda h=health: h.blocked() is None, timeout=10, what="both go again"
                    )
            assert "b" not in app.asked


class _SlowToStopClock(FakeClock):
    """A fake clock whose sleep, once cancelled, takes a while to end (until ``release``)."""

    def __init__(self) -> None:
        super().__init__()
        self.stopping = asyncio.Event()
        self.release = asyncio.Event()

    async def sleep(self, seconds: float) -> None:
        try:
            await super().sleep(seconds)
        except asyncio.CancelledError:
            self.stopping.set()
            await self.release.wait()
            raise


async def test_a_stop_while_the_exchange_loop_tidies_up_its_timers_ends_it() -> None:
    """The loop's cancel must not be swallowed when it arrives while the loop waits
    for its own timer task to end (it used to loop on, and the scheduler's stop
    waited for it for ever)."""
    clock = _SlowToStopClock()
    gate = HealthGate((), clock=clock)
    sync = FleetSync(gate, MemoryFleetStore(), clock, member="a")
    loop = asyncio.create_task(sync.run())
    await wait_all_tasks_blocked()  # exchanged once, waiting for the timer or news
    sync.wake()  # news: the loop cancels its timer and waits for it to end ...
    await asyncio.wait_for(clock.stopping.wait(), 5)
    loop.cancel()  # ... and is stopped just then
    clock.release.set()
    await asyncio.wait({loop}, timeout=5)
    assert loop.done(), "the exchange loop swallowed its own cancel and ran on"
    assert loop.cancelled()
