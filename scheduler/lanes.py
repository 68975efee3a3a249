"""Lane configuration and the per-lane priority queue.

A lane is a sack of ``max_concurrency`` seats and a waiting room of at most
``max_queued`` jobs. A job holds a seat from the moment the lane hands it one
until it ends, whatever way it ends, so the count of seats in use never passes
the ceiling. Waiting jobs leave the room lowest ``priority`` first, FIFO among
equals.

Aging (``aging=seconds``) improves a waiting job's effective priority by one
level per ``aging`` seconds waited. Because every waiting job ages at the same
rate, the order between two jobs never changes with time: the effective
priority at time t, ``priority - (t - enqueued_at) / aging``, differs from the
fixed heap key ``priority + enqueued_at / aging`` by the same ``t / aging`` for
every job. That keeps every
operation O(log n) with no periodic re-sorting.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import KW_ONLY, dataclass
from typing import Generic, TypeVar

from ._validate import check_int
from .errors import ConfigError

__all__ = ["Lane", "PriorityQueue"]


@dataclass(frozen=True, slots=True)
class Lane:
    """One lane: a hard concurrency ceiling and a bounded queue.

    Args:
        name: the lane's name, used by ``call(..., lane=)`` and tasks.
        max_concurrency: hard ceiling on jobs running at once in this lane.
        max_queued: how many jobs may wait; beyond it ``Overloaded`` is raised.
            Default 256, or 1,000,000 for a durable lane (its queue is on disk).
        durable: ``submit()`` of tasks on this lane is kept in the persistent backlog.
        gated: jobs start only while the scheduler's ``HealthGate`` is open.
        aging: seconds of waiting that improve a job's priority by one level
            (``None``: no aging). Keeps low-priority work from starving.
        reserved: with a scheduler-wide ``max_concurrency``, seats of the shared
            ceiling that only this lane may use, so no lane is starved to zero.

    Lanes listed first are the more urgent: when a shared seat frees, the first
    lane with waiting work gets it.
    """

    name: str
    max_concurrency: int = 16
    max_queued: int = None  # type: ignore[assignment]  # resolved in __post_init__
    _: KW_ONLY
    durable: bool = False
    gated: bool = False
    aging: float | None = None
    reserved: int = 1

    def __post_init__(self) -> None:
        name = self.name
        if not isinstance(name, str) or not name:
            raise ConfigError(f"a lane needs a non-empty str name, got {name!r}")
        check_int(f"lane {name!r}: max_concurrency", self.max_concurrency, minimum=1)
        if self.max_queued is None:
            object.__setattr__(self, "max_queued", 1_000_000 if self.durable else 256)
        check_int(f"lane {name!r}: max_queued", self.max_queued, minimum=0)
        check_int(f"lane {name!r}: reserved", self.reserved, minimum=0)
        if self.reserved > self.max_concurrency:
            raise ConfigError(
                f"lane {name!r}: reserved={self.reserved} exceeds "
                f"max_concurrency={self.max_concurrency}"
            )
        aging = self.aging
        if aging is not None:
            if isinstance(aging, bool) or not isinstance(aging, int | float) or not aging > 0:
                raise ConfigError(
                    f"lane {name!r}: aging must be a positive number of seconds or None, "
                    f"got {aging!r}"
                )
            object.__setattr__(self, "aging", float(aging))


T = TypeVar("T")


class PriorityQueue(Generic[T]):
    """A heap of waiting items with O(log n) push/pop and O(1) removal.

    Removal marks an entry dead; dead entries are skipped on pop and the heap
    is compacted when they outnumber live ones, so memory stays O(live).
    """

    __slots__ = ("_aging", "_dead", "_heap", "_seq")

    def __init__(self, aging: float | None = None) -> None:
        self._heap: list[list[object]] = []
        self._seq = 0
        self._dead = 0
        self._aging = aging

    def push(self, item: T, priority: float, now: float) -> list[object]:
        """Add ``item``; returns the entry token to pass to :meth:`remove`."""
        key = priority + now / self._aging if self._aging else priority
        self._seq += 1
        entry: list[object] = [key, self._seq, item, True]
        heapq.heappush(self._heap, entry)
        return entry

    def remove(self, entry: list[object]) -> bool:
        """Take an entry out; False if it had already left."""
        if not entry[3]:
            return False
        entry[3] = False
        self._dead += 1
        if self._dead > 64 and self._dead > len(self._heap) // 2:
            self._heap = [e for e in self._heap if e[3]]
            heapq.heapify(self._heap)
            self._dead = 0
        return True

    def peek(self) -> T | None:
        heap = self._heap
        while heap and not heap[0][3]:
            heapq.heappop(heap)
            self._dead -= 1
        return heap[0][2] if heap else None  # type: ignore[return-value]  # slot 2 holds T

    def pop(self) -> T | None:
        heap = self._heap
        while heap:
            entry = heapq.heappop(heap)
            if entry[3]:
                entry[3] = False
                return entry[2]  # type: ignore[return-value]  # slot 2 holds T
            self._dead -= 1
        return None

    def __len__(self) -> int:
        return len(self._heap) - self._dead

    def __bool__(self) -> bool:
        return len(self._heap) > self._dead

    def __iter__(self) -> Iterator[T]:
        """Live items, in no particular order."""
        return (e[2] for e in self._heap if e[3])  # type: ignore[misc]  # slot 2 holds T
