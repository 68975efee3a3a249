"""A big ``submit_many`` run streamed into one transaction while it is encoded.

Without this a call of 10,000 jobs is two halves one after the other: the event
loop checks and encodes every item, then the connection's thread inserts them
all. Here the loop encodes a chunk (:data:`CHUNK` items), hands it over
(:meth:`RunStream.add`) and yields; the thread, inside the transaction the run
opened, inserts each chunk as it comes (:meth:`RunStream.chunks`) while the loop
encodes the next, so the two halves overlap (SQLite runs the insert without the
GIL). The loop also makes the chunk's ids, so it builds the jobs it hands back
meanwhile.

The run is still all or none. The thread inserts it under a savepoint and
releases it only at :meth:`RunStream.end` once every announced job came; an
:meth:`RunStream.abort` from the loop (a bad item, a cancelled caller), a loop
that stops handing chunks over for :data:`STALL` seconds, or a count that does
not add up rolls the savepoint back: nothing of the run is stored.

The thread waits for the loop while it holds the write lock, so a stream is
never run inline on the loop's own thread (the backlog sends it to the thread
whatever its size), and only calls of at least :data:`STREAM_MIN` jobs stream:
the write lock is held about as long as the call takes to encode.
"""

from __future__ import annotations

import asyncio
import json
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Final, cast

from ..errors import RunAborted
from ._sqlite_thread import retrieved
from .base import NewJob, new_job_ids

__all__ = ["CHUNK", "STALL", "STREAM_MIN", "RunAborted", "RunStream", "StreamWriter", "pairs_json"]

#: jobs per chunk handed to the thread: about a millisecond of encoding
CHUNK: Final = 1024
#: the smallest ``submit_many`` call (jobs) that streams; smaller ones encode first
STREAM_MIN: Final = 2 * CHUNK
#: seconds the thread waits for the loop's next chunk before it gives the run up
STALL: Final = 30.0
#: the most seconds the loop waits, after handing a chunk over, for the thread to take it
HANDOFF: Final = 0.02

#: compact JSON of the ``[id, args]`` pairs of ``INSERT_RUN`` (``_sqlite_ops`` too)
pairs_json = json.JSONEncoder(separators=(",", ":")).encode

_END: Final = object()

#: what the thread inserts per chunk: the ids, the args texts, and the
#: ``INSERT_RUN`` parameter (``None`` if some text is not ASCII: bound as it is)
Chunk = tuple[list[str], list[str], str | None]


class RunStream:
    """The jobs of one streamed run: ``template`` but for each one's args, ``count``
    of them, handed from the loop to the connection's thread a chunk at a time."""

    __slots__ = ("_caught_up", "_on_start", "_queue", "_running", "count", "stall", "template")

    def __init__(
        self,
        template: NewJob,
        count: int,
        *,
        stall: float = STALL,
        on_start: Callable[[], object] | None = None,
    ) -> None:
        self.template = template
        self.count = count
        self.stall = stall
        self._on_start = on_start
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._running = threading.Event()  # the thread is taking chunks
        self._caught_up = threading.Event()  # ... and took every chunk added so far

    def __len__(self) -> int:
        return self.count

    def shapes(self) -> list[NewJob]:
        """The template once per job: what the lane and tenant bounds look at."""
        return [self.template] * self.count

    # -- the event loop's side ------------------------------------------------------

    def add(self, texts: list[str]) -> list[str]:
        """Hand over the next chunk's args texts; their jobs' new ids, in order."""
        ids = new_job_ids(len(texts))
        param = None
        if all(text.isascii() for text in texts):
            param = pairs_json([[i, t] for i, t in zip(ids, texts, strict=True)])
        self._caught_up.clear()
        self._queue.put((ids, texts, param))
        if self._running.is_set():
            # Wait (the GIL released) until the thread took this chunk: it then
            # inserts it, without the GIL, while the loop encodes the next one. A
            # thread that wants the GIL back while the loop is busy would wait a
            # whole switch interval (5 ms) at every chunk.
            self._caught_up.wait(HANDOFF)
        return ids

    def end(self) -> None:
        """Every chunk was handed over: the run may commit."""
        self._queue.put(_END)

    def abort(self, why: str) -> None:
        """Give the run up: the thread rolls back what it inserted of it."""
        self._queue.put(RunAborted(why))

    # -- the connection thread's side ------------------------------------------------

    def chunks(self) -> Iterator[Chunk]:
        """The chunks as the loop hands them over, until :meth:`end`. Raises
        ``RunAborted`` on :meth:`abort`, after :attr:`stall` seconds without a
        chunk, or if the chunks do not add up to :attr:`count` jobs."""
        self._running.set()
        if self._on_start is not None:
            self._on_start()
        try:
            yield from self._taken()
        finally:
            self._running.clear()
            self._caught_up.set()  # the loop never waits on a run that ended

    def _taken(self) -> Iterator[Chunk]:
        got = 0
        while True:
            try:
                item = self._queue.get(timeout=self.stall)
            except queue.Empty:
                raise RunAborted(
                    f"submit_many stopped handing its jobs over for {self.stall:g} s "
                    f"({got:,} of {self.count:,} came): none of them was stored"
                ) from None
            if item is _END:
                break
            if isinstance(item, RunAborted):
                raise item
            if self._queue.empty():
                self._caught_up.set()
            chunk = cast(Chunk, item)
            got += len(chunk[0])
            if got > self.count:
                raise RunAborted(f"a run of {self.count:,} jobs was handed {got:,}")
            yield chunk
        if got != self.count:
            raise RunAborted(f"a run of {self.count:,} jobs was handed {got:,}")


class StreamWriter:
    """The loop's handle on a streamed run (:class:`~scheduler.backlog.base.RunWriter`):
    ``write`` is the backlog's write of ``stream``, already started."""

    __slots__ = ("_done", "_started", "_stream", "_write")

    def __init__(
        self, stream: RunStream, write: asyncio.Future[None], started: asyncio.Event
    ) -> None:
        self._stream = stream
        self._write = write
        self._started = started
        self._done = False
        write.add_done_callback(lambda _: started.set())

    async def started(self) -> None:
        """Wait until the backlog's thread takes the chunks (or the write ended)."""
        await self._started.wait()

    def add(self, args_json: list[str]) -> list[str]:
        """See :meth:`RunStream.add`."""
        if self._done:
            raise RuntimeError("this run was already finished or aborted")
        return self._stream.add(args_json)

    async def finish(self) -> None:
        """Every chunk was added: wait for the run to commit. Raises as the backlog's
        ``submit`` would (``Overloaded``, ``BacklogError``)."""
        if self._done:
            raise RuntimeError("this run was already finished or aborted")
        self._done = True
        self._stream.end()
        await self._write

    def abort(self, why: str) -> None:
        """Give the run up (nothing of it is stored); a no-op once finished."""
        if self._done:
            return
        self._done = True
        self._stream.abort(why)
        self._write.add_done_callback(retrieved)  # nobody waits for it
