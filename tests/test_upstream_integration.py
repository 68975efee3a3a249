"""Against a real local upstream (uvicorn on 127.0.0.1) switching modes.

The simulated LLM API of the drill answers 503 (+ Retry-After) while down and
200 when normal. Floodgate drains a durable, gated batch lane into it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from scheduler import (
    BacklogOptions,
    BreakerConfig,
    Lane,
    RetryPolicy,
    Scheduler,
    Task,
    Upstream,
    httpx_event_hooks,
)
from scheduler.testing import eventually
from workers.drill.config import UpstreamConfig
from workers.drill.server import serve
from workers.drill.upstream import SimulatedLLM


@pytest.fixture
async def llm(request: pytest.FixtureRequest) -> AsyncIterator[tuple[SimulatedLLM, str]]:
    config = getattr(request, "param", UpstreamConfig(down_retry_after=None))
    app = SimulatedLLM(config)
    async with serve(app) as url:
        yield app, url


def drainer(db: Path, breaker: BreakerConfig) -> Scheduler:
    return Scheduler(
        str(db),
        lanes=[Lane("interactive", 2), Lane("batch", 8, durable=True, gated=True)],
        upstreams=[Upstream("llm", breaker=breaker)],
        backlog_options=BacklogOptions(poll_interval=0.02),
        shutdown_grace=0,
    )


@contextlib.asynccontextmanager
async def hooked_drain(url: str, db: Path) -> AsyncIterator[Task[[int], int]]:
    """A running :func:`drainer` (breaker kept closed) whose task ``complete(i)``
    posts to the upstream through a client with the rate-limit header hooks."""
    sched = drainer(db, BreakerConfig(consecutive_failures=1000))
    async with httpx.AsyncClient(base_url=url, event_hooks=httpx_event_hooks(sched, "llm")) as http:

        @sched.task(upstream="llm", retry=RetryPolicy(max_attempts=20, base=0.01, cap=0.05))
        async def complete(i: int) -> int:
            (await http.post("/v1/complete")).raise_for_status()
            return i

        async with sched:
            yield complete


@pytest.mark.parametrize("llm", [UpstreamConfig(down_retry_after=1)], indirect=True)
async def test_retry_after_holds_the_whole_upstream_to_the_second(
    llm: tuple[SimulatedLLM, str], tmp_path: Path
) -> None:
    app, url = llm
    app.set_phase("outage", "down")
    async with hooked_drain(url, tmp_path / "ra.db") as complete:
        jobs = [await complete.submit(i) for i in range(20)]
        await eventually(lambda: app.events, timeout=5)
        first = app.events[0]
        # the first one after the pause
        await eventually(lambda: len(app.events) >= 2, timeout=5)
        app.set_phase("recovery", "normal")
        results = [await job.result(timeout=20) for job in jobs]
    assert results == list(range(20))
    after = app.events[1]
    # nothing reached the upstream during the second it asked for
    assert after.t - first.t >= 1.0
    assert after.t - first.t < 1.5


async def test_an_outage_stops_the_hammering_and_recovery_drains_everything(
    llm: tuple[SimulatedLLM, str], tmp_path: Path
) -> None:
    app, url = llm
    app.set_phase("outage", "down")
    breaker = BreakerConfig(consecutive_failures=5, cooldown=0.3, max_cooldown=0.6)
    sched = drainer(tmp_path / "outage.db", breaker)
    async with httpx.AsyncClient(base_url=url) as http:

        @sched.task(upstream="llm", retry=RetryPolicy(max_attempts=20, base=0.05, cap=0.2))
        async def complete(i: int) -> int:
            (await http.post("/v1/complete")).raise_for_status()
            return i

        async with sched:
            jobs = [await complete.submit(i) for i in range(100)]
            await asyncio.sleep(0.05)  # let the first calls fail and trip the breaker
            await eventually(lambda: sched.stats().upstreams["llm"].breaker != "closed", timeout=5)
            down_before = len(app.events)
            for _ in range(150):  # 1.5 s of outage
                await asyncio.sleep(0.01)
            during_outage = len(app.events) - down_before
            app.set_phase("recovery", "normal")
            results = [await job.result(timeout=30) for job in jobs]
    assert results == list(range(100))
    # a blind client with 100 jobs and 20 attempts each would send up to 2,000
    # requests; behind the open breaker only a trial now and then goes out
    assert during_outage <= 15
    assert app.counts[("outage", 503)] <= 30
    assert app.counts[("recovery", 200)] == 100


@pytest.mark.parametrize(
    "llm", [UpstreamConfig(rate_limit=40.0, burst=2.0, service_time=0.01)], indirect=True
)
async def test_a_429_holds_work_until_its_budget_refills_not_a_whole_second(
    llm: tuple[SimulatedLLM, str], tmp_path: Path
) -> None:
    """The upstream answers ``Retry-After: 1`` with ``x-ratelimit-remaining-requests:
    0`` and a reset of at most 50 ms: the batch lane waits for the reset, so no gap
    between two requests comes near the second a Retry-After pause would take."""
    app, url = llm
    async with hooked_drain(url, tmp_path / "refill.db") as complete:
        jobs = await complete.submit_many([[i] for i in range(30)])
        results = [await job.result(timeout=20) for job in jobs]
    assert results == list(range(30))
    throttled = [e for e in app.events if e.status == 429]
    assert throttled, "the burst of 2 should have been exceeded at least once"
    arrivals = sorted(e.t for e in app.events)
    longest = max(b - a for a, b in itertools.pairwise(arrivals))
    assert longest < 0.9, f"{len(throttled)} 429s, longest gap {longest:.3f} s"
