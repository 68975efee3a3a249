"""The facts a drill report starts with: the machine, the script, the code under test."""

from __future__ import annotations

import datetime
import os
import platform
from importlib import metadata
from pathlib import Path

from ..provenance import source_commit
from .config import Profile
from .floodgate_client import BATCH_RETRY, BATCH_TIMEOUT, describe_variant

__all__ = ["run_facts"]


def run_facts(p: Profile, wall_seconds: float) -> list[list[str]]:
    """The run's setting, one ``[key, value]`` per row."""
    up = p.upstream
    phases = ", ".join(f"{ph.name} {ph.seconds:g}s ({ph.mode})" for ph in p.phases)
    affinity = getattr(os, "sched_getaffinity", None)
    cpus = len(affinity(0)) if affinity is not None else os.cpu_count()
    return [
        ["reproduce", f"`python -m workers.drill --profile {p.name}`"],
        ["target set", p.targets],
        ["date (UTC)", datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")],
        [
            "machine",
            f"{platform.python_implementation()} {platform.python_version()}, "
            f"{cpus} CPUs, {platform.platform()}",
        ],
        ["phases", phases],
        [
            "upstream",
            f"127.0.0.1, cap {up.max_in_flight} in flight, {up.service_time * 1000:g} ms "
            f"answers, {up.rate_limit:g} req/s (bucket {up.burst:g}); degraded "
            f"{up.degraded_service_time * 1000:g} ms + {up.degraded_error_rate:.0%} 500/503; "
            f"capacity {up.capacity:g} req/s; outage: 503"
            + ("" if up.down_retry_after is None else f" + Retry-After: {up.down_retry_after}"),
        ],
        [
            "load",
            f"{p.batch_jobs:,} batch jobs from {p.burst_at:g}s over {p.burst_over:g}s; "
            f"interactive {p.interactive_rate:g}/s, deadline {p.interactive_deadline:g}s "
            "end to end "
            f"(start within {p.interactive_deadline / 2:g}s, run within "
            f"{p.interactive_deadline / 2:g}s)",
        ],
        [
            "batch task",
            f"@sched.task(lane='batch', upstream='llm'), durable, up to "
            f"{BATCH_RETRY.max_attempts} attempts (backoff {BATCH_RETRY.base:g}-"
            f"{BATCH_RETRY.cap:g}s), {BATCH_TIMEOUT:g}s per attempt; httpx event hooks feed "
            "the rate-limit headers to Floodgate",
        ],
        *([f"Floodgate {v}", describe_variant(v, p)] for v in p.variants),
        ["naive", "one semaphore for both lanes, blind retries (see the notes)"],
        ["floodgate version", _version()],
        ["wall clock", f"{wall_seconds:.1f}s for {len(p.variants) + 1} runs, one after another"],
    ]


def _version() -> str:
    """The installed version, and the git commit (flagged if scheduler/ has local changes)."""
    try:
        version = metadata.version("floodgate")
    except metadata.PackageNotFoundError:
        version = "not installed"
    found = source_commit(Path(__file__).resolve().parents[2])
    if found is None:
        return version
    commit, dirty = found
    local = " + uncommitted changes in scheduler/" if dirty else ""
    return f"{version}, commit {commit}{local}"
