"""OpenTelemetry spans for Floodgate's attempts (optional: the ``otel`` extra).

With ``opentelemetry-api`` installed (``.venv/bin/pip install -e '.[otel]'``),
every attempt a scheduler runs, in-memory call or durable job, is a span named
``floodgate <lane>`` on the tracer ``floodgate``, a child of the context the
attempt runs in (a web request's span, for a live call), with attributes:

    floodgate.lane      the lane
    floodgate.job_id    the job's id (durable) or the call's (``m...``)
    floodgate.attempt   1 for the first attempt
    floodgate.wait_s    seconds from admission to the start of this attempt
    floodgate.tenant    the tenant, when the call named one
    floodgate.upstream  the upstream, when the job names one

A durable job carries its submitter's trace context: ``submit`` stores the
W3C ``traceparent``/``tracestate`` of the span it runs in (the web request
that submitted it, say) with the job, and the worker that runs it, in this
process or another, makes each attempt's span a child of that context. So
one trace runs from the request through the backlog to the upstream call.
Context is stored only while tracing is on in the submitting process.

An attempt that raises records the exception and sets the span's status to
error. Spans go wherever the application's tracer provider sends them. By
default (``Scheduler(tracing=None)``) they are made when a tracer provider is
configured (``opentelemetry.trace.set_tracer_provider``) by the time the
scheduler starts: without one, even a no-op span would cost about as much as
the rest of a call. ``tracing=False`` turns them off; ``tracing=True`` makes
them whatever the provider (and raises ``ConfigError`` without the extra).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .errors import ConfigError

if TYPE_CHECKING:
    from .lanes import Ticket

__all__ = ["Tracing"]

try:
    from opentelemetry import propagate as _propagate
    from opentelemetry import trace as _trace
except ImportError:  # the otel extra is not installed: no spans
    _trace = None  # type: ignore[assignment]
    _propagate = None  # type: ignore[assignment]

#: the longest stored trace context (W3C traceparent is 55 characters; tracestate
#: at most 512 by the spec): anything longer is not stored
MAX_TRACE_CONTEXT = 2048


class Tracing:
    """A scheduler's spans: one per attempt (see the module docstring)."""

    def __init__(self, enabled: bool | None = None) -> None:
        if enabled is True and _trace is None:
            raise ConfigError(
                "tracing=True needs OpenTelemetry: .venv/bin/pip install -e '.[otel]'"
            )
        self.enabled = enabled
        self.tracer: Any = None

    def start(self) -> None:
        """Pick the tracer when the scheduler starts (see the module docstring)."""
        self.tracer = None
        if self.enabled is False or _trace is None:
            return
        provider = _trace.get_tracer_provider()
        unset = isinstance(provider, _trace.ProxyTracerProvider | _trace.NoOpTracerProvider)
        if self.enabled or not unset:
            self.tracer = provider.get_tracer("floodgate")

    def carrier(self) -> str | None:
        """The current trace context as JSON W3C headers, to store with a durable job
        (``None`` when tracing is off or there is no current span)."""
        if self.tracer is None or _propagate is None:
            return None
        headers: dict[str, str] = {}
        _propagate.inject(headers)
        if not headers:
            return None
        text = json.dumps(headers, separators=(",", ":"))
        return text if len(text) <= MAX_TRACE_CONTEXT else None

    @staticmethod
    def _parent(trace: str | None) -> Any:
        """The context stored with a durable job, or ``None`` (a broken one is ignored:
        the span then starts where the attempt runs)."""
        if trace is None or _propagate is None:
            return None
        try:
            headers = json.loads(trace)
        except ValueError:
            return None
        if not isinstance(headers, dict):
            return None
        return _propagate.extract({str(k): str(v) for k, v in headers.items()})

    @contextlib.contextmanager
    def attempt(self, ticket: Ticket, wait: float) -> Iterator[None]:
        """A span around one attempt of ``ticket`` that waited ``wait`` seconds."""
        tracer = self.tracer
        if tracer is None:
            yield
            return
        attributes: dict[str, Any] = {
            "floodgate.lane": ticket.lane.name,
            "floodgate.job_id": ticket.id,
            "floodgate.attempt": ticket.attempt,
            "floodgate.wait_s": wait,
        }
        if ticket.tenant is not None:
            attributes["floodgate.tenant"] = ticket.tenant
        if ticket.upstream is not None:
            attributes["floodgate.upstream"] = ticket.upstream
        with tracer.start_as_current_span(
            f"floodgate {ticket.lane.name}",
            context=self._parent(ticket.trace),
            attributes=attributes,
            record_exception=True,
            set_status_on_exception=True,
        ):
            yield
