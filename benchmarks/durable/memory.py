"""Memory with many queued jobs: a child fills a backlog, a second child holds it as a
worker behind a paused gate, then drains a little (see :mod:`benchmarks._durable_rss`)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._common import Table, fmt_rate, progress, verdict

TARGET_RSS_MB = 200.0
CHILD_TIME_LIMIT_S = 300.0  # any one child process
REPO_ROOT = Path(__file__).resolve().parent.parent.parent


def _child(*args: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks._durable_rss", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=CHILD_TIME_LIMIT_S,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"memory child {args[0]} failed ({done.returncode}):\n{done.stderr[-4000:]}"
        )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@dataclass(frozen=True, slots=True)
class Memory:
    fill: dict[str, Any]
    hold: dict[str, Any]
    jobs: int
    paused_s: float
    drain: int
    drain_s: float

    @property
    def peak_mb(self) -> float:
        return float(self.hold["peak_rss_mb"])

    @property
    def passed(self) -> bool:
        return self.peak_mb < TARGET_RSS_MB


def measure(root: Path, jobs: int, paused_s: float, drain: int, drain_s: float) -> Memory:
    path = str(root / "rss.db")
    progress(f"durable: memory: filling a backlog with {jobs:,} queued jobs (child 1)")
    fill = _child("fill", path, str(jobs))
    progress(
        f"durable: memory: filled in {fill['seconds']:.1f} s "
        f"({fmt_rate(jobs / fill['seconds'])} jobs/s); opening it paused (child 2)"
    )
    hold = _child("hold", path, str(jobs), str(paused_s), str(drain), str(drain_s))
    progress(
        f"durable: memory: peak RSS {hold['peak_rss_mb']:.1f} MB with {jobs:,} queued, "
        f"drained {hold['drained']:,} in {hold['drain_seconds']:.2f} s"
    )
    return Memory(fill, hold, jobs, paused_s, drain, drain_s)


def table(memory: Memory) -> Table:
    fill, hold = memory.fill, memory.hold
    files = hold["files_mb"]
    peaks = hold["phase_peaks_mb"]
    rows = [
        ["fill child: RSS before filling", f"{fill['rss_before_mb']:.1f} MB"],
        [
            "fill child: time to store the jobs",
            f"{fill['seconds']:.1f} s ({fmt_rate(fill['jobs'] / fill['seconds'])} jobs/s, "
            f"backlog `submit()` of 2,000-job batches, 4 callers)",
        ],
        ["fill child: peak RSS", f"{fill['peak_rss_mb']:.1f} MB"],
        [
            "backlog file size (db + wal + shm)",
            f"{files['db']:.1f} + {files['-wal']:.1f} + {files['-shm']:.1f} MB",
        ],
        ["worker child: RSS at start (interpreter + imports)", f"{hold['rss_start_mb']:.1f} MB"],
        ["worker child: open (connect, migrate, count)", f"{hold['open_seconds'] * 1000:.0f} ms"],
        [
            f"worker child: peak RSS, paused gate, {memory.paused_s:g} s",
            f"{peaks.get('paused', math.nan):.1f} MB",
        ],
        ["worker child: lane `queued` in `stats()` while paused", f"{hold['lane_queued_stat']:,}"],
        [
            f"worker child: after resume, drained (at most {memory.drain:,} or "
            f"{memory.drain_s:g} s)",
            f"{hold['drained']:,} jobs in {hold['drain_seconds']:.2f} s "
            f"({fmt_rate(hold['drained'] / hold['drain_seconds'])} jobs/s)",
        ],
        [
            "worker child: SQLite transactions while draining (claims + completes)",
            f"{hold['drain_transactions']:,}",
        ],
        ["worker child: peak RSS while draining", f"{peaks.get('drain', math.nan):.1f} MB"],
        [
            "**worker child: peak RSS over its life (`VmHWM`)**",
            f"**{memory.peak_mb:.1f} MB** (target < {TARGET_RSS_MB:.0f} MB: "
            f"{verdict(memory.passed)})",
        ],
    ]
    return Table(["memory run", "value"], rows)
