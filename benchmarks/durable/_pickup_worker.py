"""The cross-process pickup worker of the ``durable`` benchmark.

``python -m benchmarks.durable._pickup_worker PATH OUT K``: opens ``Scheduler(PATH)``
with the defaults, runs its ``batch`` lane, prints ``ready``, and records when each
of the K no-op jobs started (``time.time()``); once all K ran it writes them to OUT
as JSON and exits 0 (exit 1 after two minutes without them).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

from scheduler import Scheduler

TIME_LIMIT_S = 120.0


async def work(path: str, k: int) -> dict[int, float] | None:
    started: dict[int, float] = {}
    every = asyncio.Event()

    async def noop(i: int) -> None:
        started[i] = time.time()
        if len(started) >= k:
            every.set()

    sched = Scheduler(path, shutdown_grace=5.0)
    sched.task(noop, name="bench.noop")
    async with sched.open(run=("batch",)):
        print("ready", flush=True)
        try:
            async with asyncio.timeout(TIME_LIMIT_S):
                await every.wait()
                for _ in range(int(TIME_LIMIT_S / 0.01)):  # until the outcomes are stored
                    counts = await sched.backlog_counts()
                    if counts.get("batch", {}).get("done", 0) >= k:
                        break
                    await asyncio.sleep(0.01)
        except TimeoutError:
            return None
    return started


def main(path: str, out: str, k: int) -> int:
    started = asyncio.run(work(path, k))
    if started is None:
        return 1
    with open(out, "w", encoding="utf-8") as f:
        json.dump(started, f)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
