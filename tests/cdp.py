"""A small Chrome DevTools Protocol client over ``--remote-debugging-pipe``.

Chromium reads commands on fd 3 and writes answers and events on fd 4, each a
JSON message ending in NUL: no websocket library needed. Enough to open a
page, evaluate JavaScript in it and collect console calls and exceptions.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
from pathlib import Path
from typing import Any

FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-extensions", "--window-size=1280,1000",
)  # fmt: skip


class Browser:
    """One headless Chromium process driven over CDP."""

    def __init__(self, proc: asyncio.subprocess.Process, commands: int, reader: Any) -> None:
        self._proc = proc
        self._commands = commands
        self._reader, self._transport = reader
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.events: list[dict[str, Any]] = []
        self._pump = asyncio.create_task(self._read())

    @classmethod
    async def launch(cls, chromium: str, profile: Path) -> Browser:
        cmd_r, cmd_w = os.pipe()
        res_r, res_w = os.pipe()
        proc = await asyncio.create_subprocess_exec(
            # bash (unlike dash) redirects fds above 9; cmd_r < res_w, so the order is safe
            "bash", "-c", f'exec "$0" "$@" 3<&{cmd_r} 4>&{res_w}',
            chromium, *FLAGS, f"--user-data-dir={profile}", "--remote-debugging-pipe",
            "about:blank",
            pass_fds=(cmd_r, res_w),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        os.close(cmd_r)
        os.close(res_w)
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=2**24)
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(res_r, "rb", buffering=0)
        )
        return cls(proc, cmd_w, (reader, transport))

    async def _read(self) -> None:
        while True:
            try:
                raw = await self._reader.readuntil(b"\0")
            except asyncio.IncompleteReadError:
                break
            message = json.loads(raw[:-1])
            waiter = self._waiting.pop(message.get("id", -1), None)
            if waiter is not None and not waiter.done():
                waiter.set_result(message)
            elif "method" in message:
                self.events.append(message)
        for waiter in self._waiting.values():
            if not waiter.done():
                waiter.set_exception(ConnectionError("chromium closed the pipe"))

    async def send(self, method: str, params: dict[str, Any] | None = None,
                   session: str | None = None) -> dict[str, Any]:  # fmt: skip
        """Send one command and return its ``result`` (raises on a CDP error)."""
        ident = next(self._ids)
        message: dict[str, Any] = {"id": ident, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        waiter: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[ident] = waiter
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        async with asyncio.timeout(20):
            answer = await waiter
        if "error" in answer:
            raise RuntimeError(f"{method}: {answer['error']}")
        result: dict[str, Any] = answer.get("result", {})
        return result

    async def open(self, url: str) -> str:
        """A new tab at ``url`` with console and exception events on; its session id."""
        target = (await self.send("Target.createTarget", {"url": "about:blank"}))["targetId"]
        attached = await self.send("Target.attachToTarget", {"targetId": target, "flatten": True})
        session: str = attached["sessionId"]
        await self.send("Runtime.enable", session=session)
        await self.send("Log.enable", session=session)
        await self.send("Page.enable", session=session)
        await self.send("Page.navigate", {"url": url}, session=session)
        return session

    async def evaluate(self, session: str, expression: str) -> Any:
        """The value of ``expression`` in the page (promises awaited)."""
        params = {"expression": expression, "returnByValue": True, "awaitPromise": True}
        result = await self.send("Runtime.evaluate", params, session=session)
        if "exceptionDetails" in result:
            raise RuntimeError(f"page raised: {result['exceptionDetails']}")
        return result["result"].get("value")

    def console_problems(self) -> list[dict[str, Any]]:
        """Console calls and uncaught exceptions the pages reported."""
        kinds = ("Runtime.consoleAPICalled", "Runtime.exceptionThrown", "Log.entryAdded")
        return [e for e in self.events if e["method"] in kinds]

    async def close(self) -> None:
        try:
            if self._proc.returncode is None:
                with contextlib.suppress(RuntimeError, ConnectionError, TimeoutError):
                    await self.send("Browser.close")
            async with asyncio.timeout(20):
                await self._proc.wait()
        finally:
            if self._proc.returncode is None:
                self._proc.kill()
                await self._proc.wait()
            self._pump.cancel()
            await asyncio.gather(self._pump, return_exceptions=True)
            self._transport.close()
            os.close(self._commands)
