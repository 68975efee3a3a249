"""What a running worker says in its logs: a summary line every 30 s (on the scheduler's
clock, so a fake clock drives it), and retries with the error that caused them."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from scheduler import BacklogOptions, FakeClock, Lane, RetryPolicy, Scheduler
from workers.logging_setup import logging_configured
from workers.run import SUMMARY_EVERY, Worker

from .test_durable import until


def events(out: io.StringIO, name: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    return [e for e in lines if e["event"] == name]


@contextlib.asynccontextmanager
async def running(worker: Worker) -> AsyncIterator[None]:
    """``worker.run()`` in a task, stopped as SIGTERM would (cancelled if that hangs)."""
    task = asyncio.create_task(worker.run())
    try:
        yield
    finally:
        worker._on_signal("SIGTERM")
        try:
            await asyncio.wait_for(task, 10)
        except TimeoutError:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            raise


def sched_on(path: Path, clock: FakeClock) -> Scheduler:
    return Scheduler(
        str(path),
        lanes=[Lane("interactive", 4), Lane("batch", 4, durable=True, gated=True)],
        clock=clock,
        shutdown_grace=0,
        backlog_options=BacklogOptions(lease=10.0, poll_interval=0.5, heartbeat=2.0),
    )


async def test_a_healthy_worker_logs_a_summary_every_30_seconds(
    tmp_path: Path, clock: FakeClock
) -> None:
    sched = sched_on(tmp_path / "w.db", clock)
    done: list[int] = []

    @sched.task(lane="batch")
    async def work(n: int) -> int:
        done.append(n)
        return n

    out = io.StringIO()
    with logging_configured("info", stream=out, json_lines=True):
        async with running(Worker(sched, ("batch",))):
            await until(lambda: events(out, "worker.ready"), clock, step=0.0)
            for n in range(6):
                await work.submit(n)
            await until(lambda: len(done) == 6, clock, step=0.1)
            await clock.advance_and_settle(SUMMARY_EVERY - clock.now() % SUMMARY_EVERY + 0.01)
            await until(lambda: events(out, "worker.summary"), clock, step=0.0)
            first = events(out, "worker.summary")[0]

            sched.gate.pause("deploy")
            await work.submit(99)  # held behind the paused gate: queued in the backlog
            await clock.advance_and_settle(SUMMARY_EVERY)
            await until(lambda: len(events(out, "worker.summary")) >= 2, clock, step=0.0)
            second = events(out, "worker.summary")[1]

    assert first["level"] == "info"
    assert first["done"] == 6
    assert first["done_per_s"] > 0
    assert first["queued"] == 0
    assert first["failed"] == 0
    assert first["gate"] == "open"
    assert second["done"] == 6
    assert second["done_per_s"] == 0
    assert second["queued"] == 1
    assert second["gate"] == "paused: deploy"
    assert len(events(out, "worker.summary")) == 2  # nothing between the 30-s marks


@pytest.mark.parametrize("every", [SUMMARY_EVERY, None])
async def test_no_summary_before_30_seconds_and_none_when_switched_off(
    tmp_path: Path, clock: FakeClock, every: float | None
) -> None:
    out = io.StringIO()
    with logging_configured("info", stream=out, json_lines=True):
        sched = sched_on(tmp_path / "w.db", clock)
        async with running(Worker(sched, ("batch",), summary_every=every)):
            await until(lambda: events(out, "worker.ready"), clock, step=0.0)
            await clock.advance_and_settle(SUMMARY_EVERY - 1.0)
            await asyncio.sleep(0.01)
            assert events(out, "worker.summary") == []
            await clock.advance_and_settle(2.0 * SUMMARY_EVERY)
            if every is not None:
                await until(lambda: events(out, "worker.summary"), clock, step=0.0)
            else:
                await asyncio.sleep(0.01)
                assert events(out, "worker.summary") == []


async def test_a_retry_is_logged_with_its_error(tmp_path: Path, clock: FakeClock) -> None:
    sched = sched_on(tmp_path / "r.db", clock)
    calls: list[int] = []

    @sched.task(lane="batch", retry=RetryPolicy(max_attempts=2, base=1.0, jitter="none"))
    async def flaky() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("upstream hiccup")
        return "ok"

    out = io.StringIO()
    with logging_configured("info", stream=out, json_lines=True):
        async with sched:
            job = await flaky.submit()
            await until(lambda: len(calls) == 2, clock)
            assert await job.result(timeout=5) == "ok"
    [retry] = events(out, "job.retry")
    assert retry["error"] == "ConnectionError: upstream hiccup"
    assert retry["task"].endswith("flaky")
    assert retry["attempt"] == 1
