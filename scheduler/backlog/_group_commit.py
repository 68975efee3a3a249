"""Group commit: many concurrent writers, one transaction.

Each caller of :meth:`GroupCommitter.put` queues its item and awaits a
future. One flusher task (started on demand, gone when the queue is empty)
takes everything queued, up to ``batch_max`` units, hands it to ``write``
(one transaction) and resolves every caller's future with its own result
(an exception instance in ``write``'s answer fails that caller alone, e.g. a
submit refused by its lane's bound), or with the error if the transaction
failed. While a transaction is in flight new items pile up, so the busier
the backlog, the bigger the batch.
A caller cancelled before its batch was taken is skipped, not written.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from ..errors import BacklogError

__all__ = ["GroupCommitter"]

I = TypeVar("I")  # noqa: E741
R = TypeVar("R")


@dataclass(slots=True)
class _Entry(Generic[I, R]):
    item: I
    size: int
    future: asyncio.Future[R]


class GroupCommitter(Generic[I, R]):
    """Coalesce concurrent ``put`` calls into batched ``write`` calls; see the module docstring."""

    def __init__(
        self, write: Callable[[list[I]], Awaitable[Sequence[R | Exception]]], *, batch_max: int
    ) -> None:
        self._write = write
        self._batch_max = batch_max
        self._queue: deque[_Entry[I, R]] = deque()
        self._task: asyncio.Task[None] | None = None
        self.flushes = 0  # batches written
        self.items = 0  # items written (refused ones left out)

    @property
    def pending(self) -> int:
        """Units queued and not yet taken by the flusher."""
        return sum(e.size for e in self._queue)

    def put(self, item: I, size: int = 1) -> asyncio.Future[R]:
        """Queue ``item`` (``size`` units toward ``batch_max``); await the returned
        future for its result once written. A plain call, not a coroutine: one frame
        less on every submit's way in and out; cancelling the awaiting caller
        cancels the future, and the flusher then skips the item if not yet taken."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append(_Entry(item, size, future))
        if self._task is None:
            self._task = asyncio.create_task(self._flush())
        return future

    async def drain(self) -> None:
        """Wait until everything queued so far is written (or failed)."""
        while self._task is not None:
            await asyncio.wait({self._task})

    def _take(self) -> list[_Entry[I, R]]:
        batch: list[_Entry[I, R]] = []
        units = 0
        while self._queue and (not batch or units + self._queue[0].size <= self._batch_max):
            entry = self._queue.popleft()
            if not entry.future.done():
                batch.append(entry)
                units += entry.size
        return batch

    async def _flush(self) -> None:
        try:
            while self._queue:
                batch = self._take()
                if not batch:
                    continue
                try:
                    results = await self._write([e.item for e in batch])
                except Exception as exc:
                    for entry in batch:
                        _fail(entry.future, exc)
                    continue
                except BaseException:
                    for entry in batch:
                        _fail(entry.future, _interrupted())
                    raise
                self.flushes += 1
                self.items += sum(not isinstance(r, Exception) for r in results)
                for entry, result in zip(batch, results, strict=True):
                    if isinstance(result, Exception):
                        _fail(entry.future, result)
                    elif not entry.future.done():
                        entry.future.set_result(result)
        finally:
            self._task = None
            while self._queue:  # only when this task itself was cancelled
                _fail(self._queue.popleft().future, _interrupted())


def _interrupted() -> BacklogError:
    return BacklogError("submit interrupted: the backlog writer was cancelled (may be stored)")


def _fail(future: asyncio.Future[R], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
