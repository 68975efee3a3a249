"""Play a profile's script through one client: phases, load, sampling.

Four tasks run side by side for ``profile.duration`` seconds of wall clock:

- the phase driver switches the upstream's mode at each phase boundary;
- the interactive generator issues ``interactive_rate`` calls per second,
  open loop (each call is its own task, so a slow answer never delays the next);
- the burst submits ``batch_jobs`` in ten waves over ``burst_over`` seconds,
  starting ``burst_at`` seconds in;
- the sampler records both sides every ``sample_every`` seconds;
- with ``progress_every``, a ticker reports the batch and upstream counts.

At the end, interactive calls still out get ``interactive_deadline`` + 1 s to
finish, then are cancelled and recorded as ``unfinished``. Every loop is
bounded by a count and by the clock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from .config import Profile
from .records import InteractiveResult, Sample, Tally, Timeline
from .upstream import SimulatedLLM

__all__ = ["ClientView", "DrillClient", "Scenario", "run_scenario"]

#: how many waves the batch burst arrives in
_WAVES = 10


@dataclass(frozen=True, slots=True)
class ClientView:
    """What a client reports about itself for one sample."""

    queued_interactive: int
    queued_batch: int
    running_interactive: int
    running_batch: int
    gate: str = "none"
    gate_reason: str | None = None
    breaker: str | None = None
    concurrency_limit: int | None = None
    paused_for: float | None = None


class DrillClient(Protocol):
    """A way of sending the script's work to the upstream (Floodgate or naive)."""

    async def submit(self, doc: int) -> bool:
        """Hand over batch job ``doc``; ``False`` if it was refused (not accepted)."""
        ...

    async def ask(self, n: int) -> tuple[str, int | None]:
        """One interactive request: its outcome (see ``InteractiveResult``) and status."""
        ...

    def view(self) -> ClientView: ...


@dataclass(slots=True)
class Scenario:
    """What :func:`run_scenario` hands back."""

    samples: list[Sample]
    interactive: list[InteractiveResult]
    end: float  # the script's length (s)
    finished: float  # when the run really stopped, stragglers included (s)


async def run_scenario(
    profile: Profile,
    upstream: SimulatedLLM,
    client: DrillClient,
    tally: Tally,
    timeline: Timeline,
    progress: Callable[[str], None] = lambda _: None,
) -> Scenario:
    timeline.start()
    upstream.reset_bucket()
    samples: list[Sample] = []
    results: list[InteractiveResult] = []
    calls: set[asyncio.Task[None]] = set()
    end = profile.duration

    async def sleep_until(t: float) -> None:
        delay = t - timeline.now()
        if delay > 0:
            await asyncio.sleep(delay)

    async def drive_phases() -> None:
        for span in profile.spans:
            upstream.set_phase(span.name, span.mode)
            progress(f"phase {span.name} ({span.mode}) for {span.end - span.start:g}s")
            await sleep_until(span.end)

    async def one_call(n: int) -> None:
        issued = timeline.now()
        phase = profile.phase_at(issued)
        try:
            outcome, status = await client.ask(n)
        except asyncio.CancelledError:
            results.append(InteractiveResult(issued, phase, None, "unfinished"))
            raise
        results.append(InteractiveResult(issued, phase, timeline.now() - issued, outcome, status))

    async def interactive() -> None:
        for n in range(profile.interactive_count):
            await sleep_until(n / profile.interactive_rate)
            task = asyncio.create_task(one_call(n))
            calls.add(task)
            task.add_done_callback(calls.discard)

    async def submit_one(doc: int) -> None:
        if await client.submit(doc):
            tally.batch_accepted()
        else:
            tally.rejected += 1

    async def burst() -> None:
        waves: list[asyncio.Future[list[None]]] = []
        per_wave = -(-profile.batch_jobs // _WAVES)
        for wave in range(_WAVES):
            await sleep_until(profile.burst_at + wave * profile.burst_over / _WAVES)
            docs = range(wave * per_wave, min(profile.batch_jobs, (wave + 1) * per_wave))
            waves.append(asyncio.gather(*(submit_one(d) for d in docs)))
        await asyncio.gather(*waves)

    def sample() -> None:
        view = client.view()
        lanes = upstream.in_flight_by_lane
        samples.append(
            Sample(
                t=timeline.now(),
                queued_interactive=view.queued_interactive,
                queued_batch=view.queued_batch,
                running_interactive=view.running_interactive,
                running_batch=view.running_batch,
                in_flight_interactive=lanes["interactive"],
                in_flight_batch=lanes["batch"],
                gate=view.gate,
                gate_reason=view.gate_reason,
                breaker=view.breaker,
                concurrency_limit=view.concurrency_limit,
                paused_for=view.paused_for,
            )
        )

    async def sampler() -> None:
        ticks = int(end / profile.sample_every) + 1
        for tick in range(ticks):
            await sleep_until(tick * profile.sample_every)
            sample()

    async def ticker() -> None:
        every = profile.progress_every
        if every is None or every <= 0:
            return
        for tick in range(1, int(end / every) + 1):
            await sleep_until(tick * every)
            ok = sum(n for (_, status), n in upstream.counts.items() if status == 200)
            progress(
                f"t={timeline.now():.0f}s ({profile.phase_at(timeline.now())}): batch "
                f"{len(tally.done):,} of {tally.accepted:,} done; upstream "
                f"{sum(upstream.counts.values()):,} requests, {ok:,} answered 200"
            )

    workers = [
        asyncio.create_task(fn(), name=f"drill-{fn.__name__}")
        for fn in (drive_phases, interactive, burst, sampler, ticker)
    ]
    try:
        await asyncio.wait_for(asyncio.gather(*workers), timeout=end + 30.0)
        await sleep_until(end)
        if calls:
            await asyncio.wait(set(calls), timeout=profile.interactive_deadline + 1.0)
        sample()
    finally:
        leftovers = [*workers, *calls]
        for task in leftovers:
            task.cancel()
        await asyncio.gather(*leftovers, return_exceptions=True)
    return Scenario(samples=samples, interactive=results, end=end, finished=timeline.now())
