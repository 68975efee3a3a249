"""A worker app with OpenTelemetry's SDK: ``--app tests.procs.traced_app:sched``.

Spans go to the SDK's in-memory exporter; when the process exits (the worker's
graceful stop on SIGTERM), the finished ones are written as JSON lines to the file
named by ``$FLOODGATE_TEST_SPANS``: name, trace id, span id, parent span id (hex).
"""

from __future__ import annotations

import atexit
import json
import os

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.procs.worker_app import make_scheduler

__all__ = ["sched"]

_EXPORTER = InMemorySpanExporter()
_provider = TracerProvider()
_provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
trace.set_tracer_provider(_provider)


def _dump() -> None:
    path = os.environ.get("FLOODGATE_TEST_SPANS")
    if not path:
        return
    with open(path, "w", encoding="utf-8") as out:
        for span in _EXPORTER.get_finished_spans():
            context = span.get_span_context()
            assert context is not None
            row = {
                "name": span.name,
                "trace_id": f"{context.trace_id:032x}",
                "span_id": f"{context.span_id:016x}",
                "parent": None if span.parent is None else f"{span.parent.span_id:016x}",
                "attributes": dict(span.attributes or {}),
            }
            out.write(json.dumps(row) + "\n")


atexit.register(_dump)

sched = make_scheduler(os.environ.get("FLOODGATE_TEST_BACKLOG", "floodgate-test.db"))
