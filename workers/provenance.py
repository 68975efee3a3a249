"""Which code a report was produced by: the git commit of a source checkout."""

from __future__ import annotations

import subprocess
from pathlib import Path

__all__ = ["source_commit"]


def source_commit(root: Path) -> tuple[str, bool] | None:
    """``(short commit, scheduler/ has uncommitted changes)`` of the checkout at
    ``root``, or ``None`` when it is not a git checkout (or git is missing)."""

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, timeout=5, check=True
        )
        return done.stdout.strip()

    try:
        commit = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--", "scheduler")
    except (OSError, subprocess.SubprocessError):
        return None
    return commit, bool(dirty)
