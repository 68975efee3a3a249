"""A simulated LLM API: a plain ASGI app with the failure modes real ones have.

``POST /v1/complete`` answers, in this order of checks:

1. mode ``down``: ``503`` at once (with ``Retry-After`` if configured);
2. more than ``max_in_flight`` requests being served: ``429`` + ``Retry-After: 1``;
3. the token bucket (``rate_limit`` per second, ``burst`` deep) is empty:
   ``429`` + ``Retry-After`` (whole seconds until a token is back, at least 1).
   With a small ``burst`` this is the per-second leaky bucket (GCRA) real
   gateways enforce: a request-per-minute quota is not banked for a minute;
4. otherwise it serves: ``service_time`` (+-20 %) in mode ``normal``;
   ``degraded_service_time`` in mode ``degraded``, where a share
   ``degraded_error_rate`` of answers are ``500`` or ``503`` after the wait.

Every response carries ``x-ratelimit-limit-requests`` (the bucket size),
``x-ratelimit-remaining-requests`` (whole tokens left) and
``x-ratelimit-reset-requests`` (time until the bucket is full, as OpenAI
writes it: ``"350ms"``, ``"1.2s"``). The client's lane, sent in the
``x-drill-lane`` header, is only used for the counters. Only answers given
count: each is one :class:`RequestEvent` (arrival, phase at arrival, lane,
status, answer time) and one ``counts[(phase, status)]``; a 429 or an
outage 503 takes no token and no seat.

``POST /control`` with ``{"mode": ..., "phase": ...}`` switches the mode; the
drill itself calls :meth:`SimulatedLLM.set_phase` on the shared object.
``GET /stats`` returns the counters as JSON; ``GET /healthz`` answers 503
while the upstream is down and 200 otherwise (not counted as a request).
"""

from __future__ import annotations

import asyncio
import json
import math
import random
from collections import Counter
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from .config import MODES, UpstreamConfig
from .records import RequestEvent, Timeline

__all__ = ["LANE_HEADER", "SimulatedLLM"]

LANE_HEADER = "x-drill-lane"
#: most request events kept for the timeline (the counters keep counting beyond it)
MAX_EVENTS = 1_000_000
#: largest request body read (bytes)
MAX_BODY = 64 * 1024

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def format_duration(seconds: float) -> str:
    """``0.35`` -> ``"350ms"``, ``1.25`` -> ``"1.25s"`` (the OpenAI header style)."""
    if seconds < 1.0:
        return f"{max(0, math.ceil(seconds * 1000))}ms"
    return f"{seconds:.3g}s"


class SimulatedLLM:
    """The upstream's state and its ASGI entry point (an instance is the app)."""

    def __init__(self, config: UpstreamConfig, timeline: Timeline | None = None) -> None:
        self.config = config
        self.timeline = timeline if timeline is not None else Timeline()
        self.mode = "normal"
        self.phase = "normal"
        self.in_flight = 0
        self.in_flight_by_lane: Counter[str] = Counter()
        self.peak_in_flight = 0
        self.counts: Counter[tuple[str, int]] = Counter()  # (phase, status)
        self.events: list[RequestEvent] = []
        self._rng = random.Random(config.seed)
        self._tokens = config.burst
        self._refilled = self.timeline.now()

    # -- control ---------------------------------------------------------------------

    def set_phase(self, phase: str, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; one of {', '.join(MODES)}")
        self.phase, self.mode = phase, mode

    def reset_bucket(self) -> None:
        """Fill the token bucket (the scenario does it when its clock starts)."""
        self._tokens = self.config.burst
        self._refilled = self.timeline.now()

    def stats(self) -> dict[str, Any]:
        by_phase: dict[str, dict[str, int]] = {}
        for (phase, status), n in sorted(self.counts.items()):
            by_phase.setdefault(phase, {})[str(status)] = n
        return {
            "mode": self.mode,
            "phase": self.phase,
            "in_flight": self.in_flight,
            "peak_in_flight": self.peak_in_flight,
            "requests": by_phase,
        }

    # -- the rate limit --------------------------------------------------------------

    def _refill(self, now: float) -> None:
        cfg = self.config
        self._tokens = min(cfg.burst, self._tokens + (now - self._refilled) * cfg.rate_limit)
        self._refilled = now

    def _rate_headers(self) -> list[tuple[bytes, bytes]]:
        cfg = self.config
        reset = (cfg.burst - self._tokens) / cfg.rate_limit
        return [
            (b"x-ratelimit-limit-requests", str(int(cfg.burst)).encode()),
            (b"x-ratelimit-remaining-requests", str(int(self._tokens)).encode()),
            (b"x-ratelimit-reset-requests", format_duration(reset).encode()),
        ]

    # -- serving ---------------------------------------------------------------------

    async def complete(self, lane: str) -> tuple[int, list[tuple[bytes, bytes]]]:
        """Decide and serve one completion; returns the status and extra headers."""
        cfg = self.config
        now = self.timeline.now()
        phase = self.phase
        self._refill(now)
        status, headers = await self._answer(lane, cfg)
        answered = self.timeline.now()
        self.counts[(phase, status)] += 1
        if len(self.events) < MAX_EVENTS:
            self.events.append(RequestEvent(now, phase, lane, status, answered))
        self._refill(answered)
        return status, headers + self._rate_headers()

    async def _answer(
        self, lane: str, cfg: UpstreamConfig
    ) -> tuple[int, list[tuple[bytes, bytes]]]:
        if self.mode == "down":
            if cfg.down_retry_after is None:
                return 503, []
            return 503, [(b"retry-after", str(cfg.down_retry_after).encode())]
        if self.in_flight >= cfg.max_in_flight:
            return 429, [(b"retry-after", b"1")]
        if self._tokens < 1.0:
            wait = max(1, math.ceil((1.0 - self._tokens) / cfg.rate_limit))
            return 429, [(b"retry-after", str(wait).encode())]
        self._tokens -= 1.0
        degraded = self.mode == "degraded"
        base = cfg.degraded_service_time if degraded else cfg.service_time
        fails = degraded and self._rng.random() < cfg.degraded_error_rate
        self.in_flight += 1
        self.in_flight_by_lane[lane] += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            await asyncio.sleep(base * self._rng.uniform(0.8, 1.2))
        finally:
            self.in_flight -= 1
            self.in_flight_by_lane[lane] -= 1
        if fails:
            return self._rng.choice((500, 503)), []
        return 200, []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = await _read_body(receive)
        method, path = scope["method"], scope["path"]
        if method == "POST" and path == "/v1/complete":
            lane = _header(scope, LANE_HEADER.encode()) or "unknown"
            status, headers = await self.complete(lane)
            payload: dict[str, Any] = (
                {"text": "a completion"} if status == 200 else {"error": _REASONS[status]}
            )
            await _respond(send, status, payload, headers)
        elif method == "POST" and path == "/control":
            try:
                order = json.loads(body or b"{}")
                self.set_phase(str(order.get("phase", self.phase)), str(order["mode"]))
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                await _respond(send, 400, {"error": f"bad control request: {exc}"}, [])
                return
            await _respond(send, 200, self.stats(), [])
        elif method == "GET" and path == "/stats":
            await _respond(send, 200, self.stats(), [])
        elif method == "GET" and path == "/healthz":
            down = self.mode == "down"
            await _respond(send, 503 if down else 200, {"up": not down}, [])
        else:
            await _respond(send, 404, {"error": "not found"}, [])


_REASONS = {429: "rate limited", 500: "internal error", 503: "unavailable"}


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value).decode("latin-1")
    return None


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    size = 0
    for _ in range(10_000):  # bounded: a body arrives in a few messages
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = bytes(message.get("body", b""))
        size += len(chunk)
        if size <= MAX_BODY:
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def _respond(
    send: Send, status: int, payload: dict[str, Any], headers: list[tuple[bytes, bytes]]
) -> None:
    body = json.dumps(payload).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
