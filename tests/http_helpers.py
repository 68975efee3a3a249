"""Serve an ASGI app with uvicorn on 127.0.0.1 (a free port) inside the test's loop."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from workers.admin_server import UvicornServer, bind_socket


@contextlib.asynccontextmanager
async def serve(app: Any, *, lifespan: bool = False) -> AsyncIterator[str]:
    """Yield the base URL (``http://127.0.0.1:PORT``) while ``app`` is served."""
    server = UvicornServer(app, bind_socket("127.0.0.1", 0), lifespan=lifespan)
    async with server:
        yield server.url
