"""The naive baseline: what many clients of an LLM API look like.

One ``asyncio.Semaphore(cap)`` for everything, interactive and batch alike
(so they share one FIFO queue), and blind retries: whatever the answer (429,
5xx, a transport error), sleep a fixed ``RETRY_SLEEP`` while holding the
seat and try again, ignoring ``Retry-After``, up to ``MAX_ATTEMPTS``.
Interactive calls have no deadline. Batch work lives only in memory: what is
unfinished when the run stops is cancelled and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator

import httpx

from .config import Profile
from .records import Tally
from .scenario import ClientView
from .wire import new_http_client, outcome_for_status, post_completion

__all__ = ["MAX_ATTEMPTS", "RETRY_SLEEP", "NaiveClient", "open_naive"]

#: seconds between blind retries
RETRY_SLEEP = 0.05
#: attempts per request before giving up (high: the naive client rarely gives up)
MAX_ATTEMPTS = 10_000


class NaiveClient:
    """A semaphore and a retry loop."""

    def __init__(self, http: httpx.AsyncClient, profile: Profile, tally: Tally) -> None:
        self._http = http
        self._tally = tally
        self._seats = asyncio.Semaphore(profile.upstream.max_in_flight)
        self._waiting: Counter[str] = Counter()
        self._running: Counter[str] = Counter()
        self._tasks: set[asyncio.Task[None]] = set()
        self.notes = [
            f"naive client: one asyncio.Semaphore({profile.upstream.max_in_flight}) for both "
            f"lanes, blind retries every {RETRY_SLEEP * 1000:.0f} ms holding the seat, "
            f"up to {MAX_ATTEMPTS:,} attempts, Retry-After ignored, no deadline"
        ]

    async def _request(self, lane: str, prompt: str) -> tuple[str, int | None]:
        """Retry until a 2xx; the outcome of the last attempt if it gives up."""
        self._waiting[lane] += 1
        seated = False
        try:
            async with self._seats:
                self._waiting[lane] -= 1
                seated = True
                self._running[lane] += 1
                try:
                    return await self._attempts(lane, prompt)
                finally:
                    self._running[lane] -= 1
        finally:
            if not seated:
                self._waiting[lane] -= 1

    async def _attempts(self, lane: str, prompt: str) -> tuple[str, int | None]:
        outcome: tuple[str, int | None] = ("transport", None)
        for _ in range(MAX_ATTEMPTS):
            try:
                response = await post_completion(self._http, lane, prompt)
            except httpx.TimeoutException:
                outcome = ("timeout", None)
            except httpx.TransportError:
                outcome = ("transport", None)
            else:
                status = response.status_code
                outcome = (outcome_for_status(status), status)
                if outcome[0] == "ok":
                    return outcome
            await asyncio.sleep(RETRY_SLEEP)
        return outcome

    async def _batch(self, doc: int) -> None:
        outcome, _ = await self._request("batch", f"document {doc}")
        if outcome == "ok":
            self._tally.batch_done(doc)

    async def submit(self, doc: int) -> bool:
        task = asyncio.create_task(self._batch(doc))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def ask(self, n: int) -> tuple[str, int | None]:
        return await self._request("interactive", f"question {n}")

    def view(self) -> ClientView:
        return ClientView(
            queued_interactive=self._waiting["interactive"],
            queued_batch=self._waiting["batch"],
            running_interactive=self._running["interactive"],
            running_batch=self._running["batch"],
        )

    async def aclose(self) -> None:
        """Cancel the batch work still in memory (the run is over)."""
        left = list(self._tasks)
        for task in left:
            task.cancel()
        await asyncio.gather(*left, return_exceptions=True)


@contextlib.asynccontextmanager
async def open_naive(profile: Profile, base_url: str, tally: Tally) -> AsyncIterator[NaiveClient]:
    async with new_http_client(base_url) as http:
        client = NaiveClient(http, profile, tally)
        try:
            yield client
        finally:
            await client.aclose()
