"""WAL checkpoints off the commit path.

In WAL mode SQLite copies the log back into the database file (a checkpoint)
inside whichever ``COMMIT`` pushes the log past ``wal_autocheckpoint`` pages,
with an ``fsync`` before and after. That commit, and every caller waiting on
it, pays for all of it: on the drain of no-op jobs it was about 60 % of the
cost of a ``COMMIT`` on average. Here a thread with its own connection runs
``PRAGMA wal_checkpoint(PASSIVE)`` a moment after writes were made (a passive
checkpoint never blocks the writer or readers), and the writer's own
auto-checkpoint is raised to :data:`FALLBACK_PAGES`: a safety net for a
checkpointer that cannot keep up, so the log stays bounded whatever happens.
"""

from __future__ import annotations

import sqlite3
import threading

from ..logs import get_logger

__all__ = ["FALLBACK_PAGES", "Checkpointer"]

_log = get_logger()

#: the writer connection's ``wal_autocheckpoint`` (pages; 64 MiB of 4 KiB pages)
FALLBACK_PAGES = 16384
#: seconds writes may gather in the log before a checkpoint copies them
DELAY = 0.2
#: a log this long (frames, i.e. pages) once copied is started afresh (``RESTART``):
#: under steady writes a passive checkpoint never finds the log all copied, which a
#: restart needs, so without this the log would grow to ``FALLBACK_PAGES``
RESTART_FRAMES = 4096


class Checkpointer:
    """Checkpoints the WAL of ``path`` from its own thread; :meth:`poke` after writes."""

    def __init__(self, path: str, busy_timeout: float, *, delay: float = DELAY) -> None:
        self.path = path
        self.busy_timeout = busy_timeout
        self.delay = delay
        self.checkpoints = 0  # passive checkpoints run
        self.restarts = 0  # of them, those that started the log afresh
        self.failures = 0
        self._wanted = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stopping.clear()
        self._thread = threading.Thread(
            target=self._run, name=f"floodgate-checkpoint {self.path}", daemon=True
        )
        self._thread.start()

    def poke(self) -> None:
        """Writes were committed: checkpoint them within :attr:`delay` seconds."""
        if not self._wanted.is_set():
            self._wanted.set()

    def stop(self) -> None:
        """End the thread (blocking: a checkpoint in progress finishes first)."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stopping.set()
        self._wanted.set()
        thread.join()

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        try:
            conn = sqlite3.connect(
                self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False
            )
            # looked at before each wait: a stop that set the poke just before this
            # thread cleared it (below) is not lost, nor its join left hanging
            while not self._stopping.is_set():
                self._wanted.wait()
                if self._stopping.wait(self.delay):
                    return
                self._wanted.clear()
                self._checkpoint(conn)
        except sqlite3.Error as exc:
            self.failures += 1
            _log.warning("backlog.checkpointer_stopped", path=self.path, error=str(exc))
        finally:
            if conn is not None:
                conn.close()

    def _checkpoint(self, conn: sqlite3.Connection) -> None:
        try:
            _, log, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            if log >= RESTART_FRAMES and copied >= log - RESTART_FRAMES // 4:
                # the writer waits only for the few frames written since
                conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchall()
                self.restarts += 1
        except sqlite3.Error as exc:  # busy or full: the next poke (or the writer) retries
            self.failures += 1
            _log.warning("backlog.checkpoint_failed", path=self.path, error=str(exc))
            return
        self.checkpoints += 1
