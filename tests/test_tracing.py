"""OpenTelemetry spans per attempt, collected with the SDK's in-memory exporter."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from scheduler import Lane, RetryableError, RetryPolicy, Scheduler

_EXPORTER = InMemorySpanExporter()


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    # the global provider can be set once per process: this module's, for all its tests
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
        trace.set_tracer_provider(provider)
    _EXPORTER.clear()
    yield _EXPORTER
    _EXPORTER.clear()


def floodgate_spans(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name.startswith("floodgate ")]


async def test_a_live_call_is_a_child_span_of_the_request_with_its_attributes(
    spans: InMemorySpanExporter,
) -> None:
    sched = Scheduler(lanes=[Lane("interactive", 2)])
    tracer = trace.get_tracer("test")

    async def answer() -> str:
        return "ok"

    async with sched:
        with tracer.start_as_current_span("POST /chat") as request:
            assert await sched.call(answer, tenant="acme", upstream="llm") == "ok"
    (span,) = floodgate_spans(spans)
    assert span.name == "floodgate interactive"
    assert span.parent is not None
    assert span.parent.span_id == request.get_span_context().span_id
    attributes = dict(span.attributes or {})
    assert attributes["floodgate.lane"] == "interactive"
    assert attributes["floodgate.tenant"] == "acme"
    assert attributes["floodgate.upstream"] == "llm"
    assert attributes["floodgate.attempt"] == 1
    wait = attributes["floodgate.wait_s"]
    assert isinstance(wait, float)
    assert wait >= 0


async def test_every_attempt_is_a_span_and_a_failure_is_an_error(
    spans: InMemorySpanExporter,
) -> None:
    sched = Scheduler(lanes=[Lane("interactive", 2)])
    tries = 0

    async def flaky() -> str:
        nonlocal tries
        tries += 1
        if tries < 3:
            raise RetryableError("busy")
        return "ok"

    async with sched:
        result = await sched.call(flaky, retry=RetryPolicy(max_attempts=3, base=0.001, cap=0.001))
    assert result == "ok"
    got = floodgate_spans(spans)
    assert [dict(s.attributes or {})["floodgate.attempt"] for s in got] == [1, 2, 3]
    assert [s.status.status_code for s in got] == [
        StatusCode.ERROR,
        StatusCode.ERROR,
        StatusCode.UNSET,
    ]
    assert got[0].events[0].name == "exception"


async def test_a_durable_job_is_a_span_in_the_worker(
    spans: InMemorySpanExporter, tmp_path: Path
) -> None:
    sched = Scheduler(str(tmp_path / "t.db"), shutdown_grace=0)

    @sched.task(name="app.work")
    async def work(n: int) -> int:
        return n

    async with sched:
        job = await work.submit(7)
        assert await job.result(timeout=10) == 7
    (span,) = floodgate_spans(spans)
    attributes = dict(span.attributes or {})
    assert attributes["floodgate.lane"] == "batch"
    assert attributes["floodgate.job_id"] == job.id
    assert span.parent is None  # submitted outside any span: no context stored


async def test_a_durable_job_continues_the_trace_it_was_submitted_in(
    spans: InMemorySpanExporter, tmp_path: Path
) -> None:
    sched = Scheduler(str(tmp_path / "t.db"), shutdown_grace=0)
    tracer = trace.get_tracer("test")

    @sched.task(name="app.work")
    async def work(n: int) -> int:
        return n

    async with sched:
        with tracer.start_as_current_span("POST /reports") as request:
            job = await work.submit(7, tenant="acme")
        stored = await sched._require_store().backlog.get(job.id)
        assert stored is not None
        assert stored.trace is not None
        assert "traceparent" in json.loads(stored.trace)
        assert await job.result(timeout=10) == 7
    (span,) = floodgate_spans(spans)
    context = request.get_span_context()
    assert span.get_span_context().trace_id == context.trace_id
    assert span.parent is not None
    assert span.parent.span_id == context.span_id
    assert dict(span.attributes or {})["floodgate.tenant"] == "acme"


async def test_a_broken_stored_trace_context_is_ignored_and_the_job_runs(
    spans: InMemorySpanExporter, tmp_path: Path
) -> None:
    path = tmp_path / "t.db"
    sched = Scheduler(str(path), shutdown_grace=0)

    @sched.task(name="app.work")
    async def work(n: int) -> int:
        return n

    async with sched.open(run=()):
        job = await work.submit(3)
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("UPDATE jobs SET trace = ? WHERE id = ?", ("[not json", job.id))
    async with sched:
        assert await (await sched.job(job.id)).result(timeout=10) == 3
    (span,) = floodgate_spans(spans)
    assert span.parent is None


@pytest.mark.slow
async def test_one_trace_runs_from_the_request_through_the_backlog_to_another_process(
    spans: InMemorySpanExporter, tmp_path: Path
) -> None:
    """The submitter (this process) and a real worker subprocess, each with the SDK's
    in-memory exporter: the worker's attempt span is a child of the request span."""
    from tests.procs.worker_app import make_scheduler
    from tests.worker_helpers import WorkerProcess

    target = str(tmp_path / "jobs.db")
    dump = tmp_path / "worker-spans.jsonl"
    tracer = trace.get_tracer("test")
    sched = make_scheduler(target)
    async with sched.open(run=()):
        with tracer.start_as_current_span("POST /summaries") as request:
            job = await sched.submit("test.work", 5, tenant="acme")
        worker = await WorkerProcess.start(
            "worker", "--app", "tests.procs.traced_app:sched", "--backlog", target,
            env={"FLOODGATE_TEST_SPANS": str(dump)},
        )  # fmt: skip
        try:
            assert await job.result(timeout=20) == 5
        finally:
            worker.proc.terminate()
            await worker.wait()
            worker.kill()
    rows = [json.loads(line) for line in dump.read_text().splitlines()]
    (attempt,) = [r for r in rows if r["name"] == "floodgate batch"]
    context = request.get_span_context()
    assert attempt["trace_id"] == f"{context.trace_id:032x}"
    assert attempt["parent"] == f"{context.span_id:016x}"
    assert attempt["attributes"]["floodgate.job_id"] == job.id
    assert attempt["attributes"]["floodgate.tenant"] == "acme"


async def test_tracing_off_makes_no_spans(spans: InMemorySpanExporter) -> None:
    sched = Scheduler(lanes=[Lane("interactive", 2)], tracing=False)

    async def answer() -> None:
        return None

    async with sched:
        await sched.call(answer)
    assert floodgate_spans(spans) == []


def test_without_a_tracer_provider_the_default_makes_no_spans_and_costs_nothing() -> None:
    # the global provider is set once per process (this module sets one): a fresh one
    import subprocess
    import sys

    code = (
        "import asyncio\n"
        "from scheduler import Scheduler\n"
        "async def main():\n"
        "    for tracing in (None, True):\n"
        "        sched = Scheduler(tracing=tracing)\n"
        "        async with sched:\n"
        "            print(tracing, sched._tracing.tracer is None)\n"
        "asyncio.run(main())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert out.split("\n")[:2] == ["None True", "True False"]
