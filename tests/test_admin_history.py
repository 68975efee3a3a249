"""The admin app's history: a ring buffer sampled on the scheduler's clock, served by
``/api/history`` over real HTTP (uvicorn on 127.0.0.1). A fake clock moves time: no test
sleeps for the minutes it covers."""

from __future__ import annotations

import asyncio
import gc
import itertools
import weakref

import httpx
import pytest

from scheduler import FakeClock, Lane, Scheduler
from scheduler.asgi import History, admin_app, history_for

from .http_helpers import serve


def fake_scheduler(clock: FakeClock) -> Scheduler:
    return Scheduler(
        lanes=[Lane("interactive", max_concurrency=2, max_queued=10)],
        clock=clock,
        shutdown_grace=0,
    )


async def test_history_samples_every_second_on_the_clock_and_stays_bounded() -> None:
    clock = FakeClock()
    sched = fake_scheduler(clock)
    async with sched:
        app = admin_app(sched)  # built in a running loop: sampling starts now
        history = history_for(sched)
        assert history.sampling
        assert len(history) == 1
        done = 0
        for second in range(60):
            # three calls a second for the first 30 s, none after
            for _ in range(3 if second < 30 else 0):
                await sched.call(asyncio.sleep, 0)
                done += 1
            await clock.advance_and_settle(1.0)
        assert len(history) == 61
        async with serve(app) as url, httpx.AsyncClient(base_url=url) as client:
            answer = (await client.get("/api/history")).json()
            points = answer["points"]
            assert (answer["every"], answer["seconds"]) == (1.0, 900.0)
            assert len(points) == 61
            times = [p["t"] for p in points]
            assert all(b - a == pytest.approx(1.0) for a, b in itertools.pairwise(times))
            assert times[0] == pytest.approx(clock.wall() - 60.0)
            done_rates = [p["lanes"]["interactive"]["done"] for p in points]
            assert done_rates[0] is None  # no previous point to take a rate from
            assert done_rates[1:31] == [3.0] * 30
            assert done_rates[31:] == [0.0] * 30
            assert points[-1]["gate"] is True
            since = (await client.get("/api/history", params={"since": times[-3]})).json()
            assert [p["t"] for p in since["points"]] == times[-2:]
            bad = await client.get("/api/history", params={"since": "yesterday"})
            assert bad.status_code == 400

        await clock.advance_and_settle(2000.0)
        assert len(history) == 900  # 15 minutes at 1 s: the oldest fell out
        assert history.points()[-1]["t"] == pytest.approx(clock.wall())
        admin_app(sched)  # another app for the same scheduler shares its history
        assert history_for(sched) is history
        assert len(history) == 900
    await clock.advance_and_settle(5.0)
    assert not history.sampling  # the scheduler stopped: so did the sampling
    assert len(history) == 900


async def test_history_records_upstreams_and_refuses_a_bad_window() -> None:
    clock = FakeClock()
    sched = fake_scheduler(clock)
    with pytest.raises(ValueError, match="every"):
        History(sched, every=0.0)
    history = History(sched, seconds=5.0, every=1.0)
    async with sched:

        async def fails() -> None:
            raise httpx.HTTPStatusError(
                "503",
                request=httpx.Request("GET", "http://llm.invalid/"),
                response=httpx.Response(503, request=httpx.Request("GET", "http://llm.invalid/")),
            )

        for _ in range(3):
            with pytest.raises(httpx.HTTPStatusError):
                await sched.call(fails, upstream="llm")
        point = history.sample()
        llm = point["upstreams"]["llm"]
        stats = sched.stats().upstreams["llm"]
        assert llm == {
            "sent": stats.sent_rate,
            "limit": stats.learned_rate,
            "breaker": stats.breaker,
            "errors": stats.error_rate,
        }
        assert stats.requests == 3
        for _ in range(10):
            await clock.advance_and_settle(1.0)
            history.sample()
        assert len(history) == 5


async def test_the_registry_does_not_keep_a_scheduler_alive() -> None:
    clock = FakeClock()
    sched = fake_scheduler(clock)
    history = history_for(sched)
    ref = weakref.ref(sched)
    del sched
    gc.collect()
    assert ref() is None
    with pytest.raises(RuntimeError, match="gone"):
        history.sample()
