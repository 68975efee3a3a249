"""Is a lease owner's process still alive? (SQLite's dead-owner detection, same host only.)

A process that takes leases from a SQLite backlog registers who it is: host
name, the kernel's boot id, its pid namespace, pid and start time (clock
ticks after boot, from ``/proc/<pid>/stat``). Another process on the same
host, boot and pid namespace can then tell that the owner is gone: no such
pid, a zombie, or a pid reused by a process that started at another time.

Everything it cannot judge counts as alive (another host or container, no
``/proc``, a process it may not inspect): such leases simply run out.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["ProcessId", "is_dead", "this_process"]


@dataclass(frozen=True, slots=True)
class ProcessId:
    """Who a process is: enough for another process on the host to recognise it."""

    host: str
    boot_id: str | None
    pidns: str | None
    pid: int
    started: int | None

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> ProcessId:
        """From ``(host, boot_id, pidns, pid, started)`` as stored."""
        host, boot_id, pidns, pid, started = row
        return cls(
            str(host),
            None if boot_id is None else str(boot_id),
            None if pidns is None else str(pidns),
            int(pid),
            None if started is None else int(started),
        )


_this: ProcessId | None = None


def this_process() -> ProcessId:
    """This process's identity (worked out again after a fork)."""
    global _this
    pid = os.getpid()
    if _this is None or _this.pid != pid:
        stat = _stat(pid)
        _this = ProcessId(
            host=socket.gethostname(),
            boot_id=_read("/proc/sys/kernel/random/boot_id"),
            pidns=_readlink("/proc/self/ns/pid"),
            pid=pid,
            started=None if stat is None else stat[1],
        )
    return _this


def is_dead(other: ProcessId) -> bool:
    """True only when ``other`` is surely gone; anything unknown counts as alive."""
    me = this_process()
    if None in (me.boot_id, me.pidns, other.boot_id, other.pidns, other.started):
        return False
    if (other.host, other.boot_id, other.pidns) != (me.host, me.boot_id, me.pidns):
        return False  # another host, boot or container: its leases run out instead
    stat = _stat(other.pid)
    if stat is None:
        try:
            os.kill(other.pid, 0)
        except ProcessLookupError:
            return True
        except OSError:
            return False  # it exists, we may not look at it
        return False
    state, started = stat
    return started != other.started or state in ("Z", "X")


def _stat(pid: int) -> tuple[str, int] | None:
    """``(state, start time in ticks)`` from ``/proc/<pid>/stat``, or ``None``."""
    text = _read(f"/proc/{pid}/stat")
    if text is None:
        return None
    try:
        fields = text.rsplit(")", 1)[1].split()  # the command name may hold spaces and ")"
        return fields[0], int(fields[19])  # fields 3 (state) and 22 (starttime)
    except (IndexError, ValueError):
        return None


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip() or None
    except OSError:
        return None


def _readlink(path: str) -> str | None:
    try:
        return os.readlink(path)
    except OSError:
        return None
