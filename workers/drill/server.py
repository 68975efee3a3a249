"""Serve an ASGI app with uvicorn on 127.0.0.1, inside the running event loop.

The server runs as a task of the caller's loop, so the app's counters are
plain attributes the drill reads directly. It listens on a free port picked
by the OS and never installs signal handlers (Ctrl-C stays the drill's).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Generator
from typing import Any

import uvicorn

__all__ = ["listening_socket", "serve"]

_log = logging.getLogger("floodgate.drill")

#: seconds the server may take to start listening, and to stop
_START_TIMEOUT = 10.0
_STOP_TIMEOUT = 10.0


class _EmbeddedServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def listening_socket(host: str) -> socket.socket:
    """A TCP socket bound to a free port of ``host``.

    ``IPPROTO_TCP`` is named: asyncio sets ``TCP_NODELAY`` only on sockets whose
    ``proto`` says TCP, and accepted connections inherit it. With ``proto`` 0 Nagle
    held each answer's second write until the client's delayed ACK: ~40 ms added to
    every request, which made the simulated upstream twice as slow as configured."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    return sock


@contextlib.asynccontextmanager
async def serve(app: Any, *, host: str = "127.0.0.1") -> AsyncIterator[str]:
    """Run ``app`` until the block ends; yields its base URL (``http://127.0.0.1:PORT``)."""
    sock = listening_socket(host)
    port = int(sock.getsockname()[1])
    config = uvicorn.Config(
        app,
        lifespan="off",
        log_config=None,  # leave the process's logging configuration alone
        ws="none",
        log_level="warning",
        access_log=False,
        backlog=2048,
        timeout_graceful_shutdown=2,
    )
    server = _EmbeddedServer(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name="drill-upstream")
    try:
        async with asyncio.timeout(_START_TIMEOUT):
            while not server.started:
                if task.done():
                    task.result()  # raises why it stopped
                    raise RuntimeError("the upstream server stopped before it started")
                await asyncio.sleep(0.01)
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        done, _ = await asyncio.wait({task}, timeout=_STOP_TIMEOUT)
        if not done:
            server.force_exit = True
            task.cancel()
            await asyncio.wait({task}, timeout=_STOP_TIMEOUT)
        if task.done() and not task.cancelled() and task.exception() is not None:
            _log.warning("drill upstream server stopped with %r", task.exception())
        sock.close()
