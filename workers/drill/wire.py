"""The client side of the wire, shared by both clients: one httpx client, one request."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from .upstream import LANE_HEADER

__all__ = ["REQUEST_TIMEOUT", "new_http_client", "outcome_for_status", "post_completion"]

#: seconds one HTTP request may take (connect, read, write, pool)
REQUEST_TIMEOUT = 10.0

EventHooks = dict[str, list[Callable[[Any], Awaitable[None]]]]


def new_http_client(base_url: str, *, event_hooks: EventHooks | None = None) -> httpx.AsyncClient:
    """A pooled client to the drill's upstream; enough connections for any seat count."""
    return httpx.AsyncClient(
        base_url=base_url,
        timeout=REQUEST_TIMEOUT,
        limits=httpx.Limits(max_connections=128, max_keepalive_connections=128),
        event_hooks=event_hooks,
    )


async def post_completion(http: httpx.AsyncClient, lane: str, prompt: str) -> httpx.Response:
    """``POST /v1/complete``; the response whatever its status (transport errors raise)."""
    return await http.post("/v1/complete", json={"prompt": prompt}, headers={LANE_HEADER: lane})


def outcome_for_status(status: int) -> str:
    """The interactive outcome of an HTTP answer: ok, rate_limited, upstream_error."""
    if 200 <= status < 300:
        return "ok"
    if status == 429:
        return "rate_limited"
    return "upstream_error"
