"""Serving an ASGI app (the admin API) with uvicorn on a socket bound up front.

The socket is bound before anything else starts, so a taken port fails fast
with a message naming it (uvicorn alone would log the error and call
``sys.exit``), and port 0 works: :attr:`UvicornServer.url` tells the port.
uvicorn's own signal capture is switched off: the worker owns the signals.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import uvicorn

from .errors import EXIT_FAILURE, EXIT_USAGE, CommandError

__all__ = [
    "DEFAULT_ADMIN",
    "UvicornServer",
    "bind_socket",
    "is_loopback",
    "parse_bind",
    "read_token_file",
]

DEFAULT_ADMIN = "127.0.0.1:8765"


def parse_bind(text: str) -> tuple[str, int]:
    """``"HOST:PORT"``, ``"[::1]:PORT"`` or ``"PORT"`` (host 127.0.0.1) to ``(host, port)``."""
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host, port_text = "127.0.0.1", text
    host = host.strip("[]") or "127.0.0.1"
    try:
        port = int(port_text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise CommandError(
            f"--admin {text!r}: expected HOST:PORT, e.g. {DEFAULT_ADMIN}", exit_code=EXIT_USAGE
        )
    return host, port


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def read_token_file(path: str, what: str) -> str:
    """The token in the file at ``path`` (surrounding whitespace, e.g. the final newline,
    stripped); ``CommandError`` (exit 2) naming ``what`` and the file otherwise."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise CommandError(
            f"{what}: cannot read {path}: {exc.strerror or exc}", exit_code=EXIT_USAGE
        ) from None
    except UnicodeDecodeError:
        raise CommandError(f"{what}: {path} is not UTF-8 text", exit_code=EXIT_USAGE) from None
    token = text.strip()
    if not token:
        raise CommandError(f"{what}: {path} is empty", exit_code=EXIT_USAGE)
    return token


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port``; ``CommandError`` naming the port if taken."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        message = f"admin address {host!r}: {exc.strerror}"
        raise CommandError(message, exit_code=EXIT_USAGE) from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise CommandError(
            f"cannot serve the admin API on {host}:{port}: {exc.strerror or exc} "
            f"(port {port} is taken? pick another with --admin HOST:PORT)",
            exit_code=EXIT_FAILURE,
        ) from None
    sock.setblocking(False)
    return sock


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the process that embeds this server handles signals itself


class UvicornServer:
    """One ASGI app served on an already bound socket, started and stopped in-loop."""

    def __init__(self, app: Any, sock: socket.socket, *, lifespan: bool = False) -> None:
        self._sock = sock
        self.host, self.port = sock.getsockname()[:2]
        config = uvicorn.Config(
            app,
            lifespan="on" if lifespan else "off",
            log_config=None,
            access_log=False,
            ws="none",
            http="h11",
            timeout_graceful_shutdown=2,
        )
        self._server = _Server(config)
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self, timeout: float = 10.0) -> None:
        """Serve in a background task; return once it accepts connections."""
        self._task = asyncio.create_task(self._server.serve(sockets=[self._sock]))
        loop = asyncio.get_running_loop()
        until = loop.time() + timeout
        while not self._server.started:
            if self._task.done():
                self._task.result()  # startup failed: raise its error
                raise RuntimeError("the admin server stopped during startup")
            if loop.time() > until:
                raise RuntimeError(f"the admin server did not start within {timeout}s")
            await asyncio.sleep(0.005)

    async def stop(self) -> None:
        """Stop accepting, let open requests finish (2 s at most), close the socket."""
        task, self._task = self._task, None
        if task is None:
            self._sock.close()  # never started: just give the port back
            return
        self._server.should_exit = True
        await task

    async def __aenter__(self) -> UvicornServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
