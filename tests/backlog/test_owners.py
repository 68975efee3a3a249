"""SQLite's dead-owner detection: who counts as dead, and what a claim does about it.

Only a process this host can inspect (same boot, same pid namespace) is ever
judged: gone, a zombie, or its pid reused by a later process. Anything else
keeps its leases until they run out.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scheduler import JobState
from scheduler.backlog import SQLiteBacklog
from scheduler.backlog._owners import ProcessId, is_dead, this_process
from tests.backlog.helpers import new_job

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/stat").exists(), reason="dead-owner detection reads /proc (Linux)"
)


def identity_of(pid: int) -> ProcessId:
    """``pid``'s identity as that process would register it (same host and namespace)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return dataclasses.replace(this_process(), pid=pid, started=int(fields[19]))


def test_a_live_process_is_alive_and_an_exited_one_is_dead() -> None:
    assert not is_dead(this_process())
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        ident = identity_of(child.pid)
        assert not is_dead(ident)
    finally:
        child.kill()
        child.wait()
    assert is_dead(ident)


def test_a_reused_pid_or_a_zombie_is_dead() -> None:
    me = this_process()
    assert me.started is not None
    assert is_dead(dataclasses.replace(me, started=me.started - 1))  # same pid, another process
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    ident = identity_of(child.pid)
    for _ in range(2000):  # bounded (~10 s): until it has exited, unreaped (a zombie)
        if Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            break
        time.sleep(0.005)
    assert is_dead(ident)
    child.wait()


@pytest.mark.parametrize(
    "change",
    [{"host": "elsewhere"}, {"boot_id": "another-boot"}, {"pidns": "pid:[1]"}, {"started": None}],
)
def test_what_cannot_be_judged_counts_as_alive(change: dict[str, object]) -> None:
    gone = dataclasses.replace(this_process(), pid=2**22 + 12345, started=1)  # no such pid
    assert is_dead(gone)
    assert not is_dead(dataclasses.replace(gone, **change))  # type: ignore[arg-type]


async def test_a_claim_ends_only_the_leases_of_owners_surely_dead(tmp_path: Path) -> None:
    db = tmp_path / "b.db"
    async with SQLiteBacklog(db) as backlog:
        await backlog.submit([new_job(i) for i in range(4)], now=0)
        for owner in ("dead", "elsewhere"):
            await backlog.claim("batch", 2, owner=owner, lease_seconds=600, now=0)
    me = this_process()
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        rows = [("dead", me.host, me.boot_id, me.pidns, 2**22 + 12345, 1, 0.0),
                ("elsewhere", "other-host", "b", "p", 2**22 + 12345, 1, 0.0)]  # fmt: skip
        conn.executemany("INSERT OR REPLACE INTO owners VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
    async with SQLiteBacklog(db) as backlog:
        got = await backlog.claim("batch", 4, owner="new", lease_seconds=600, now=1, max_running=4)
        assert len(got) == 2, "only the dead owner's two jobs came free"
        assert {r.attempts for r in got} == {2}
        running = await backlog.list_jobs(JobState.RUNNING)
        assert sorted(r.lease_owner or "" for r in running) == ["elsewhere"] * 2 + ["new"] * 2
    with contextlib.closing(sqlite3.connect(db)) as conn:
        owners = {r[0] for r in conn.execute("SELECT owner FROM owners")}
    assert owners == {"elsewhere"}, "the dead owner is forgotten; a closed backlog unregisters"
