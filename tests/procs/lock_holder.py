"""Holds an exclusive write lock on a SQLite file until told to stop.

Usage: python -m tests.procs.lock_holder DB
Prints "locked" once it holds the lock; releases it and exits when a line
arrives on stdin.
"""

from __future__ import annotations

import sqlite3
import sys

if __name__ == "__main__":
    conn = sqlite3.connect(sys.argv[1], isolation_level=None)
    conn.execute("BEGIN EXCLUSIVE")
    print("locked", flush=True)
    sys.stdin.readline()
    conn.execute("ROLLBACK")
    conn.close()
