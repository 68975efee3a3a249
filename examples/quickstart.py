"""Floodgate in one screen: two lanes, a shed request, and the stats table.

Run it: ``python examples/quickstart.py``. It needs no network: the
"upstream" is a simulated LLM API with 6 seats and 40 ms answers.

What you will see:
1. A burst of batch jobs fills the batch lane (4 seats, the rest queued).
2. Interactive calls keep starting at once: they have their own seats.
3. A flood of interactive calls beyond the lane's queue bound is shed at once
   with ``Overloaded`` and a ``retry_after``, instead of waiting forever.
4. A call whose deadline the lane's measured wait already exceeds is shed.
5. The stats table: per lane queued, running, admitted, done, shed, and
   wait/run latency quantiles.
"""

from __future__ import annotations

import asyncio
import time

from scheduler import DeadlineExceeded, Lane, Overloaded, Scheduler, current_job


class SimulatedUpstream:
    """An upstream with a fixed number of seats and a fixed answer time."""

    def __init__(self, seats: int, service_time: float) -> None:
        self._seats = asyncio.Semaphore(seats)
        self.service_time = service_time
        self.in_flight = 0
        self.peak = 0

    async def complete(self, prompt: str) -> str:
        async with self._seats:
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
            try:
                await asyncio.sleep(self.service_time)
            finally:
                self.in_flight -= 1
        return f"answer to {prompt!r}"


async def main() -> None:
    upstream = SimulatedUpstream(seats=6, service_time=0.04)
    sched = Scheduler(
        ":memory:",
        lanes=[
            Lane("interactive", max_concurrency=2, max_queued=8),
            Lane("batch", max_concurrency=4, max_queued=1_000, aging=5.0),
        ],
        max_concurrency=6,  # the upstream's capacity, shared by both lanes
    )

    async def ask(prompt: str) -> str:
        ctx = current_job()  # the job's id, lane and remaining time budget
        return f"[{ctx.lane} {ctx.id}] " + await upstream.complete(prompt)

    async with sched:
        print("1. queueing 200 batch jobs ...")
        batch = [
            asyncio.create_task(sched.call(ask, f"doc-{i}", lane="batch", priority=5))
            for i in range(200)
        ]
        await asyncio.sleep(0.1)

        print("2. interactive calls while batch is busy:")
        for i in range(3):
            started = time.perf_counter()
            answer = await sched.call(ask, f"user question {i}", deadline=1.0, timeout=2.0)
            print(f"   {answer}  ({(time.perf_counter() - started) * 1000:.0f} ms)")

        print("3. a flood of 40 interactive calls against 2 seats + 8 queue slots:")
        flood = await asyncio.gather(
            *(sched.call(ask, f"flood {i}") for i in range(40)), return_exceptions=True
        )
        shed = [r for r in flood if isinstance(r, Overloaded)]
        print(f"   {len(flood) - len(shed)} served, {len(shed)} shed at once with Overloaded")
        if shed:
            print(f"   e.g. {shed[0]}")

        print("4. a batch call that must start within 10 ms, behind the backlog:")
        try:
            await sched.call(ask, "urgent?", lane="batch", deadline=0.01)
        except DeadlineExceeded as exc:
            print(f"   shed: {exc}")

        await asyncio.gather(*batch)
        print("\n5. stats:")
        print(sched.stats().format_table())
        print(f"\nupstream peak in-flight: {upstream.peak} (its capacity: 6)")


if __name__ == "__main__":
    asyncio.run(main())
