"""The drill's Floodgate side: the scheduler as an application would set it up.

Only the public API is used. Batch work is durable and retried by Floodgate::

    @sched.task(lane="batch", upstream="llm", retry=RetryPolicy(max_attempts=50, ...))
    async def summarize(doc): (await post(...)).raise_for_status()

Interactive work goes through ``sched.call(..., lane="interactive",
deadline=, timeout=, upstream="llm")``; its shed and failed calls are counted
by type. Tasks raise httpx's own errors and let Floodgate classify them.

Three set-ups (variants) of the scheduler, see :func:`build_scheduler`:

- ``defaults``: ``Scheduler(backlog, shutdown_grace=1.0)``: the default lanes,
  no upstream settings, no shared ceiling; interactive calls may retry
  (``RetryPolicy(max_attempts=3)``, within their deadline);
- ``rpm``: the same plus ``upstreams=[Upstream("llm", rpm=<rate limit x 60>)]``;
- ``tuned``: custom lanes under a shared ceiling and the profile's compressed
  health timings (:func:`upstream_settings`); interactive calls do not retry.

If the scheduler package exports ``httpx_event_hooks(sched, upstream)``, the
httpx client is built with it, so the upstream's rate-limit headers reach
Floodgate on successful answers too; the report says whether it was.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from scheduler import (
    DEFAULT_LANES,
    BacklogOptions,
    BreakerConfig,
    JobError,
    JobTimeout,
    Lane,
    RetryPolicy,
    Scheduler,
    SchedulerError,
    SubmitError,
    Task,
    Upstream,
    httpx_event_hooks,
)

from .config import Profile
from .records import Tally
from .scenario import ClientView
from .wire import new_http_client, outcome_for_status, post_completion

__all__ = [
    "BATCH_RETRY",
    "INTERACTIVE_RETRY",
    "UPSTREAM",
    "FloodgateClient",
    "audit_backlog",
    "build_scheduler",
    "describe_variant",
    "interactive_retry",
    "open_floodgate",
    "upstream_settings",
]

UPSTREAM = "llm"
TASK_NAME = "workers.drill.summarize"
BATCH_RETRY = RetryPolicy(max_attempts=50, base=0.5, cap=10.0)
#: seconds one batch attempt may run
BATCH_TIMEOUT = 10.0
#: interactive retries of the ``defaults`` and ``rpm`` variants (only within the deadline)
INTERACTIVE_RETRY = RetryPolicy(max_attempts=3)
#: seconds running jobs get to finish when a run's scheduler stops
SHUTDOWN_GRACE = 1.0


def upstream_settings(profile: Profile, base_url: str | None = None) -> tuple[dict[str, Any], str]:
    """Floodgate's settings for ``llm`` with the profile's compressed health timings.

    Returns the extra ``Scheduler`` keyword arguments and a line for the
    report. With ``base_url`` the upstream's ``/healthz`` is probed actively.
    """
    h = profile.health
    breaker = BreakerConfig(
        window=h.window, cooldown=h.breaker_cooldown, max_cooldown=h.breaker_max_cooldown
    )
    probe = None if base_url is None else f"{base_url.rstrip('/')}/healthz"
    settings = Upstream(
        UPSTREAM,
        breaker=breaker,
        window=h.window,
        probe_url=probe,
        probe_interval=h.probe_interval,
    )
    probe_note = f", probe GET /healthz every {h.probe_interval:g}s" if probe else ""
    return {"upstreams": [settings]}, (
        f"health timings compressed like the script: breaker cooldown "
        f"{h.breaker_cooldown:g}s (max {h.breaker_max_cooldown:g}s), windows {h.window:g}s"
        f"{probe_note}"
    )


def make_scheduler(profile: Profile, backlog: Path, **extra: Any) -> Scheduler:
    """The scheduler under test: two lanes sharing the upstream's concurrency cap."""
    return Scheduler(
        str(backlog),
        lanes=[
            Lane(
                "interactive", max_concurrency=profile.interactive_seats, max_queued=64, reserved=2
            ),
            Lane(
                "batch",
                max_concurrency=profile.batch_seats,
                max_queued=max(10_000, 2 * profile.batch_jobs),
                durable=True,
                gated=True,
            ),
        ],
        max_concurrency=profile.upstream.max_in_flight,
        shutdown_grace=SHUTDOWN_GRACE,
        backlog_options=BacklogOptions(poll_interval=0.1),
        **extra,
    )


def build_scheduler(
    variant: str, profile: Profile, backlog: Path, base_url: str | None = None
) -> Scheduler:
    """The scheduler of ``variant`` (``tuned``, ``defaults`` or ``rpm``) on ``backlog``."""
    if variant == "tuned":
        extra, _ = upstream_settings(profile, base_url)
        return make_scheduler(profile, backlog, **extra)
    if variant == "defaults":
        return Scheduler(str(backlog), shutdown_grace=SHUTDOWN_GRACE)
    if variant == "rpm":
        rpm = profile.upstream.rate_limit * 60.0
        return Scheduler(
            str(backlog), shutdown_grace=SHUTDOWN_GRACE, upstreams=[Upstream(UPSTREAM, rpm=rpm)]
        )
    raise ValueError(f"unknown Floodgate variant {variant!r}")


def interactive_retry(variant: str) -> RetryPolicy | None:
    """The retry policy of the variant's interactive calls (``tuned``: none)."""
    return None if variant == "tuned" else INTERACTIVE_RETRY


def describe_variant(variant: str, profile: Profile) -> str:
    """One line for the report: how ``variant`` sets the scheduler up."""
    if variant == "tuned":
        return (
            f"custom lanes: interactive {profile.interactive_seats} seats (2 reserved), batch "
            f"{profile.batch_seats} seats (durable, gated), shared ceiling "
            f"{profile.upstream.max_in_flight}, backlog poll 0.1s; "
            + upstream_settings(profile, base_url="http://127.0.0.1")[1]
            + "; interactive calls not retried"
        )
    lanes = ", ".join(
        f"{lane.name} {lane.max_concurrency} seats / {lane.max_queued:,} queued"
        + (" (durable, gated)" if lane.durable and lane.gated else "")
        for lane in DEFAULT_LANES
    )
    text = (
        f"Scheduler(backlog, shutdown_grace={SHUTDOWN_GRACE:g}): default lanes ({lanes}), "
        "no shared ceiling, "
    )
    if variant == "rpm":
        text += f"upstreams=[Upstream('llm', rpm={profile.upstream.rate_limit * 60:g})]"
    else:
        text += "no upstream settings (Floodgate's default health timings)"
    return text + (
        f"; interactive calls retry up to {INTERACTIVE_RETRY.max_attempts} attempts "
        "within their deadline"
    )


class FloodgateClient:
    """Sends the script's work through a running :class:`Scheduler`."""

    def __init__(
        self,
        sched: Scheduler,
        summarize: Task[[int], int],
        http: httpx.AsyncClient,
        profile: Profile,
        tally: Tally,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.sched = sched
        self._summarize = summarize
        self._http = http
        self._profile = profile
        self._tally = tally
        self._retry = retry
        self.notes: list[str] = []

    async def submit(self, doc: int) -> bool:
        try:
            await self._summarize.submit(doc, key=f"doc-{doc}", priority=5)
        except SchedulerError:  # Overloaded, SchedulerClosed, BacklogError: not accepted
            return False
        return True

    async def _ask(self, prompt: str) -> str:
        response = await post_completion(self._http, "interactive", prompt)
        response.raise_for_status()
        return response.text

    async def ask(self, n: int) -> tuple[str, int | None]:
        budget = self._profile.interactive_deadline
        try:
            await self.sched.call(
                self._ask,
                f"question {n}",
                lane="interactive",
                deadline=budget / 2,
                timeout=budget / 2,
                upstream=UPSTREAM,
                retry=self._retry,
            )
        except SubmitError:  # Overloaded, DeadlineExceeded, UpstreamUnavailable
            return "shed", None
        except JobTimeout:
            return "timeout", None
        except httpx.HTTPStatusError as exc:
            status = exc.response.status_code
            return outcome_for_status(status), status
        except httpx.TimeoutException:
            return "timeout", None
        except httpx.TransportError:
            return "transport", None
        except (JobError, SchedulerError):
            return "shed", None
        return "ok", 200

    def view(self) -> ClientView:
        stats = self.sched.stats()
        interactive, batch = stats["interactive"], stats["batch"]
        upstream = stats.upstreams.get(UPSTREAM)
        return ClientView(
            queued_interactive=interactive.queued,
            # the backlog's own count is cached; the harness knows exactly what is left
            queued_batch=max(0, self._tally.pending - batch.running),
            running_interactive=interactive.running,
            running_batch=batch.running,
            gate="open" if stats.gate_open else "closed",
            gate_reason=stats.gate_reason,
            breaker=None if upstream is None else upstream.breaker,
            concurrency_limit=None if upstream is None else upstream.concurrency_limit,
            paused_for=None if upstream is None else upstream.paused_for,
        )


def _event_hooks(sched: Scheduler) -> Any:
    """Feed every answer's rate-limit headers to the scheduler."""
    return httpx_event_hooks(sched, UPSTREAM)


@contextlib.asynccontextmanager
async def open_floodgate(
    profile: Profile, base_url: str, tally: Tally, backlog: Path, variant: str = "tuned"
) -> AsyncIterator[FloodgateClient]:
    """A started scheduler of ``variant`` with the drill's task registered, and its client."""
    sched = build_scheduler(variant, profile, backlog, base_url)
    hooks = _event_hooks(sched)
    async with new_http_client(base_url, event_hooks=hooks) as http:

        async def summarize_doc(doc: int) -> int:
            response = await post_completion(http, "batch", f"document {doc}")
            response.raise_for_status()  # Floodgate classifies 429/5xx and retries
            tally.batch_done(doc)
            return doc

        summarize: Task[[int], int] = sched.task(
            name=TASK_NAME,
            lane="batch",
            upstream=UPSTREAM,
            retry=BATCH_RETRY,
            timeout=BATCH_TIMEOUT,
        )(summarize_doc)
        client = FloodgateClient(
            sched, summarize, http, profile, tally, retry=interactive_retry(variant)
        )
        client.notes.append(
            f"Floodgate {variant}: rate-limit headers fed to Floodgate on every answer: "
            + ("yes (scheduler.httpx_event_hooks)" if hooks is not None else "no (only on errors)")
        )
        async with sched:
            yield client
            client.notes.append(f"Floodgate {variant} stats at the end:\n" + stats_text(sched))


def stats_text(sched: Scheduler) -> str:
    stats = sched.stats()
    lines = [stats.format_table()]
    for up in stats.upstreams.values():
        failures = ", ".join(f"{k} {v}" for k, v in sorted(up.failures.items())) or "none"
        lines.append(
            f"upstream {up.name}: breaker {up.breaker}, {up.requests} requests, "
            f"{up.successes} ok, failures: {failures}"
        )
    return "\n".join(lines)


async def audit_backlog(profile: Profile, backlog: Path, accepted: int) -> tuple[int, int, str]:
    """Reopen the backlog after the run, as a restarted process would, and count.

    Returns ``(lost, pending, detail)``: lost = DEAD jobs + accepted jobs with
    no row; pending = rows neither done nor dead (kept for the next worker).
    """
    sched = make_scheduler(profile, backlog)
    async with sched.open(run=()):
        counts = (await sched.backlog_counts()).get("batch", {})
    total = sum(counts.values())
    dead, done = counts.get("dead", 0), counts.get("done", 0)
    missing = max(0, accepted - total)
    shown = ", ".join(f"{state} {n}" for state, n in sorted(counts.items())) or "empty"
    detail = (
        f"backlog reopened after the run: {shown}; accepted {accepted}, "
        f"dead {dead}, missing {missing}"
    )
    return dead + missing, total - done - dead, detail
