"""What this machine charges for handing work between threads, and a process on one CPU.

Floodgate's event loop and its SQLite thread take turns: each transaction is one
hand-over there and one back. On bare metal waking a thread costs a few µs; on some
virtual machines (nested ones especially) waking an idle vCPU costs tens of µs, and
that is paid several times per transaction. :func:`round_trip` measures it, across
CPUs and on one, so a report says which kind of machine it came from;
:func:`one_cpu` runs a block with the calling thread (and the threads it starts
meanwhile) on one CPU, as ``taskset -c N`` would run a whole worker process.
"""

from __future__ import annotations

import contextlib
import os
import queue
import statistics
import threading
import time
from collections.abc import Iterator

__all__ = ["one_cpu", "round_trip"]

TRIPS = 2_000  # round trips per batch
BATCHES = 3


@contextlib.contextmanager
def one_cpu() -> Iterator[int | None]:
    """The calling thread on the lowest of its CPUs while the block runs; threads it
    starts meanwhile inherit that. Yields the CPU, or ``None`` where there is no
    choice to make (one usable CPU) or no way to make it (no ``sched_setaffinity``)."""
    getaffinity = getattr(os, "sched_getaffinity", None)
    setaffinity = getattr(os, "sched_setaffinity", None)
    if getaffinity is None or setaffinity is None:
        yield None
        return
    cpus = getaffinity(0)
    if len(cpus) < 2:
        yield None
        return
    cpu = min(cpus)
    setaffinity(0, {cpu})  # 0: this thread (Linux), not the whole process
    try:
        yield cpu
    finally:
        setaffinity(0, cpus)


def round_trip(*, pinned: bool = False) -> float:
    """Seconds for one round trip between two threads, a ``SimpleQueue`` each way (the
    median of a few batches): across CPUs as the OS places them, or (``pinned``) with
    both on one CPU. ``nan`` when ``pinned`` cannot be arranged here."""
    with contextlib.ExitStack() as stack:
        if pinned and stack.enter_context(one_cpu()) is None:
            return float("nan")
        there: queue.SimpleQueue[int | None] = queue.SimpleQueue()
        back: queue.SimpleQueue[int] = queue.SimpleQueue()

        def echo() -> None:
            while (item := there.get()) is not None:
                back.put(item)

        worker = threading.Thread(target=echo, name="round-trip-echo", daemon=True)
        worker.start()  # started inside the block: on the same CPU when pinned
        try:
            batches = []
            for _ in range(BATCHES):
                start = time.perf_counter()
                for i in range(TRIPS):
                    there.put(i)
                    back.get()
                batches.append((time.perf_counter() - start) / TRIPS)
        finally:
            there.put(None)
            worker.join()
        return statistics.median(batches)


#: additions per timed batch of :func:`python_loop_seconds`
LOOP_BATCH = 2_000_000


def python_loop_seconds() -> float:
    """Seconds this interpreter takes for a plain loop of 10,000,000 additions (the
    median of three batches of :data:`LOOP_BATCH`, scaled): how fast one core runs
    Python right now. Shared virtual machines drift by tens of per cent within
    minutes; a report's figures are best read against this and its own floors."""
    batches = []
    for _ in range(3):
        start = time.perf_counter()
        total = 0
        for i in range(LOOP_BATCH):
            total += i
        batches.append(time.perf_counter() - start)
    return statistics.median(batches) * (10_000_000 / LOOP_BATCH)
