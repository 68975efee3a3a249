"""SQL for :mod:`scheduler.backlog.sqlite`: migrations, statements, row decoding, errors.

Every value reaches SQLite as a bound parameter. The only text formatted
into SQL is this module's own constants (column lists, placeholder runs)
and the integers of ``PRAGMA user_version`` / ``synchronous``, which PRAGMAs
cannot bind.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import replace
from functools import cache
from typing import Any

from ..errors import BacklogError
from ..jobs import JobState
from .base import (
    BacklogFull,
    BacklogLocked,
    JobRecord,
    corrupt,
    decode_args,
    decode_json,
    loads_json,
)

# Forward migrations; MIGRATIONS[i] takes user_version i to i + 1. Append only.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE jobs (
            seq          INTEGER PRIMARY KEY,
            id           TEXT    NOT NULL UNIQUE,
            task         TEXT    NOT NULL,
            lane         TEXT    NOT NULL,
            args         TEXT    NOT NULL,
            priority     REAL    NOT NULL,
            state        TEXT    NOT NULL,
            attempts     INTEGER NOT NULL DEFAULT 0,
            max_attempts INTEGER NOT NULL,
            run_at       REAL    NOT NULL,
            created_at   REAL    NOT NULL,
            updated_at   REAL    NOT NULL,
            key          TEXT,
            lease_owner  TEXT,
            lease_until  REAL,
            result       TEXT,
            error        TEXT,
            traceback    TEXT,
            deadline_at  REAL
        )""",
        "CREATE INDEX jobs_claim ON jobs (lane, state, priority, run_at, seq)",
        "CREATE UNIQUE INDEX jobs_key ON jobs (key) WHERE key IS NOT NULL",
        "CREATE INDEX jobs_state_updated ON jobs (state, updated_at)",
    ),
    # 2: a job's own cost (tokens from its upstream's rate limit); NULL = the task's default
    ("ALTER TABLE jobs ADD COLUMN cost REAL",),
    # 3: each lane's QUEUED count, kept by triggers (max_queued is checked against it in the
    # submit's transaction, in O(1)); the processes that hold leases (dead-owner detection)
    (
        "CREATE TABLE lane_queued (lane TEXT PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID",
        """CREATE TRIGGER jobs_queued_insert AFTER INSERT ON jobs WHEN NEW.state = 'queued'
        BEGIN
            INSERT OR IGNORE INTO lane_queued (lane, n) VALUES (NEW.lane, 0);
            UPDATE lane_queued SET n = n + 1 WHERE lane = NEW.lane;
        END""",
        """CREATE TRIGGER jobs_queued_delete AFTER DELETE ON jobs WHEN OLD.state = 'queued'
        BEGIN
            UPDATE lane_queued SET n = n - 1 WHERE lane = OLD.lane;
        END""",
        """CREATE TRIGGER jobs_queued_leave AFTER UPDATE OF state, lane ON jobs
        WHEN OLD.state = 'queued' AND (NEW.state IS NOT 'queued' OR NEW.lane IS NOT OLD.lane)
        BEGIN
            UPDATE lane_queued SET n = n - 1 WHERE lane = OLD.lane;
        END""",
        """CREATE TRIGGER jobs_queued_enter AFTER UPDATE OF state, lane ON jobs
        WHEN NEW.state = 'queued' AND (OLD.state IS NOT 'queued' OR NEW.lane IS NOT OLD.lane)
        BEGIN
            INSERT OR IGNORE INTO lane_queued (lane, n) VALUES (NEW.lane, 0);
            UPDATE lane_queued SET n = n + 1 WHERE lane = NEW.lane;
        END""",
        """INSERT INTO lane_queued (lane, n)
        SELECT lane, COUNT(*) FROM jobs WHERE state = 'queued' GROUP BY lane""",
        """CREATE TABLE owners (
            owner         TEXT PRIMARY KEY,
            host          TEXT NOT NULL,
            boot_id       TEXT,
            pidns         TEXT,
            pid           INTEGER NOT NULL,
            started       INTEGER,
            registered_at REAL NOT NULL
        )""",
    ),
    # 4: partial indexes, one per state a query looks for, so a job's moves (queued ->
    # running -> done) touch two small indexes instead of moving its entries in two
    # indexes over every row; queries that use them spell the state out (a bound
    # parameter cannot select a partial index)
    (
        "DROP INDEX jobs_claim",
        "DROP INDEX jobs_state_updated",
        "CREATE INDEX jobs_queued ON jobs (lane, priority, run_at, seq) WHERE state = 'queued'",
        "CREATE INDEX jobs_running ON jobs (lane, lease_until) WHERE state = 'running'",
        "CREATE INDEX jobs_done ON jobs (updated_at) WHERE state = 'done'",
        # inserts count their lanes' new QUEUED jobs once per transaction (ADD_QUEUED),
        # not with two trigger statements per row
        "DROP TRIGGER jobs_queued_insert",
    ),
    # 5: cancellation: when a cancel of a RUNNING job was requested (its lease holder
    # ends it CANCELLED); finished CANCELLED jobs are purged like DONE ones
    (
        "ALTER TABLE jobs ADD COLUMN cancel_requested_at REAL",
        "CREATE INDEX jobs_cancelled ON jobs (updated_at) WHERE state = 'cancelled'",
    ),
    # 6: aging on durable lanes: the claim order's key, fixed at submit (base.job_rank);
    # rows from before have no aging: their rank is their priority
    (
        "ALTER TABLE jobs ADD COLUMN rank REAL",
        "UPDATE jobs SET rank = priority",
        "DROP INDEX jobs_queued",
        "CREATE INDEX jobs_queued ON jobs (lane, rank, run_at, seq) WHERE state = 'queued'",
    ),
    # 7: tenants (fair claims, see _fair) and the submitter's trace context. Jobs without a
    # tenant keep the claim-order index; each tenant's jobs get their own, so a claim walks
    # one tenant's queue in order. lane_tenants holds named tenants' QUEUED counts (kept by
    # triggers; inserts count theirs once per transaction) and every flow's virtual time
    # (the tenant-less flow as ''); lane_queued.vclock is the lane's virtual clock.
    (
        "ALTER TABLE jobs ADD COLUMN tenant TEXT",
        "ALTER TABLE jobs ADD COLUMN trace TEXT",
        "DROP INDEX jobs_queued",
        "CREATE INDEX jobs_queued ON jobs (lane, rank, run_at, seq)"
        " WHERE state = 'queued' AND tenant IS NULL",
        "CREATE INDEX jobs_queued_tenant ON jobs (lane, tenant, rank, run_at, seq)"
        " WHERE state = 'queued' AND tenant IS NOT NULL",
        """CREATE TABLE lane_tenants (
            lane   TEXT NOT NULL,
            tenant TEXT NOT NULL,
            n      INTEGER NOT NULL DEFAULT 0,
            vtime  REAL NOT NULL DEFAULT 0,
            PRIMARY KEY (lane, tenant)
        ) WITHOUT ROWID""",
        "ALTER TABLE lane_queued ADD COLUMN vclock REAL NOT NULL DEFAULT 0",
        """CREATE TRIGGER jobs_tenant_delete AFTER DELETE ON jobs
        WHEN OLD.state = 'queued' AND OLD.tenant IS NOT NULL
        BEGIN
            UPDATE lane_tenants SET n = n - 1 WHERE lane = OLD.lane AND tenant = OLD.tenant;
            DELETE FROM lane_tenants WHERE lane = OLD.lane AND tenant = OLD.tenant AND n <= 0;
        END""",
        """CREATE TRIGGER jobs_tenant_leave AFTER UPDATE OF state, lane ON jobs
        WHEN OLD.state = 'queued' AND OLD.tenant IS NOT NULL
            AND (NEW.state IS NOT 'queued' OR NEW.lane IS NOT OLD.lane)
        BEGIN
            UPDATE lane_tenants SET n = n - 1 WHERE lane = OLD.lane AND tenant = OLD.tenant;
            DELETE FROM lane_tenants WHERE lane = OLD.lane AND tenant = OLD.tenant AND n <= 0;
        END""",
        """CREATE TRIGGER jobs_tenant_enter AFTER UPDATE OF state, lane ON jobs
        WHEN NEW.state = 'queued' AND NEW.tenant IS NOT NULL
            AND (OLD.state IS NOT 'queued' OR NEW.lane IS NOT OLD.lane)
        BEGIN
            INSERT OR IGNORE INTO lane_tenants (lane, tenant) VALUES (NEW.lane, NEW.tenant);
            UPDATE lane_tenants SET n = n + 1 WHERE lane = NEW.lane AND tenant = NEW.tenant;
        END""",
    ),
    # 8: a fair claim reads its lane's queued tenants in fair order, a page at a time
    # (see _fair): (virtual time, tenant), every queued tenant's time kept at least the
    # lane's clock (LIFT_VTIMES)
    ("CREATE INDEX lane_tenants_fair ON lane_tenants (lane, vtime, tenant) WHERE n > 0",),
)
if (
    JobState.QUEUED.value,
    JobState.RUNNING.value,
    JobState.DONE.value,
    JobState.CANCELLED.value,
) != ("queued", "running", "done", "cancelled"):
    raise RuntimeError("migrations 3-5 and the queries spell states out; update them")
SCHEMA_VERSION = len(MIGRATIONS)

COLUMNS = (
    "seq, id, task, lane, args, priority, state, attempts, max_attempts, run_at, created_at,"
    " updated_at, key, lease_owner, lease_until, result, error, traceback, deadline_at, cost,"
    " cancel_requested_at, rank, tenant, trace"
)

INSERT = (
    "INSERT INTO jobs (id, task, lane, args, priority, state, attempts, max_attempts, run_at,"
    " created_at, updated_at, key, deadline_at, cost, rank, tenant, trace)"
    " VALUES (?, ?, ?, ?, ?, ?, 0, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


# Rows of new jobs that share task, lane, priority, state, max_attempts, cost, tenant and
# trace (concurrent submits, each with its own times, key, deadline and rank), inserted by
# one statement of ``n`` rows: one program run instead of one per row, as ``executemany``
# of INSERT would. The shared values are bound once, as ?1..?8, each row's own as 8 more.
# Params: task, lane, priority, state, max_attempts, cost, tenant, trace, then per row
# id, args, run_at, created_at, updated_at, key, deadline_at, rank.
INSERT_ROWS_MAX = 64  # rows per statement: 520 parameters, under SQLite's oldest limit (999)


def insert_rows(n: int) -> str:
    """``INSERT`` of ``n`` rows alike in the shared columns (see above)."""
    return _insert_rows_text(_statement_size(n, INSERT_ROWS_MAX, "insert_rows", "rows"))


@cache
def _insert_rows_text(n: int) -> str:
    values = []
    for k in range(n):
        b = 9 + 8 * k
        values.append(
            f"(?{b}, ?1, ?2, ?{b + 1}, ?3, ?4, 0, ?5, ?{b + 2}, ?{b + 3}, ?{b + 4}, ?{b + 5},"
            f" ?{b + 6}, ?6, ?{b + 7}, ?7, ?8)"
        )
    return (
        "INSERT INTO jobs (id, task, lane, args, priority, state, attempts, max_attempts,"
        " run_at, created_at, updated_at, key, deadline_at, cost, rank, tenant, trace)"
        " VALUES " + ", ".join(values)
    )


def statement_rows(waiting: int, most: int) -> int:
    """How many of ``waiting`` rows (or outcomes) the next multi-row statement takes:
    the largest power of two up to ``most``, so a connection's statement cache holds
    a few texts rather than one per batch size."""
    return 1 << (min(waiting, most).bit_length() - 1)


def _statement_size(n: int, most: int, name: str, unit: str) -> int:
    if not 1 <= n <= most:
        raise ValueError(f"{name} takes 1..{most} {unit}, got {n}")
    return n


# A run of new jobs that share every column but ``id`` and ``args`` (one submit_many call,
# or like submits), inserted from one JSON array of ``[id, args text]`` pairs: SQLite
# splits it in C (json_each, in array order, so ``seq`` keeps the run's order) instead
# of binding 16 parameters per row. ``args`` goes in as a JSON string, so the text
# stored is the submitter's own, byte for byte. Params: task, lane, priority, state,
# max_attempts, run_at, created_at, updated_at, deadline_at, cost, rank, tenant, trace,
# the JSON array.
INSERT_RUN = (
    "INSERT INTO jobs (id, task, lane, args, priority, state, attempts, max_attempts, run_at,"
    " created_at, updated_at, key, deadline_at, cost, rank, tenant, trace)"
    " SELECT json_extract(value, '$[0]'), ?, ?, json_extract(value, '$[1]'), ?, ?, 0, ?, ?,"
    " ?, ?, NULL, ?, ?, ?, ?, ? FROM json_each(?)"
)


def select_by_keys(n: int) -> str:
    return f"SELECT {COLUMNS} FROM jobs WHERE key IN ({', '.join('?' * n)})"


# The lane's next jobs in claim order: due QUEUED ones (jobs_queued, walked in
# order up to the LIMIT) and RUNNING ones whose lease passed (jobs_running).
# Params: lane, now, n, lane, now, n, n.
_CANDIDATES = """
    SELECT seq FROM (
        SELECT seq, rank, run_at FROM (
            SELECT seq, rank, run_at FROM jobs
            WHERE lane = ? AND state = 'queued' AND tenant IS NULL AND run_at <= ?
            ORDER BY rank, run_at, seq LIMIT ?)
        UNION ALL
        SELECT seq, rank, run_at FROM (
            SELECT seq, rank, run_at FROM jobs
            WHERE lane = ? AND state = 'running' AND lease_until <= ?
            ORDER BY rank, run_at, seq LIMIT ?)
    ) ORDER BY rank, run_at, seq LIMIT ?"""

# Params: running, owner, lease_until, now, *candidate params.
CLAIM_RETURNING = f"""
    UPDATE jobs SET state = ?, attempts = attempts + 1, lease_owner = ?, lease_until = ?,
        updated_at = ?
    WHERE seq IN ({_CANDIDATES})
    RETURNING {COLUMNS}"""

# Fair claims (see _fair). Params: lane. Whether any QUEUED job of the lane names a
# tenant (a fair claim, then).
LANE_FAIR = "SELECT EXISTS (SELECT 1 FROM lane_tenants WHERE lane = ? AND n > 0 AND tenant <> '')"
# Params: lane, lane. The lane's virtual clock, whether it has queued jobs without a
# tenant, and the tenant-less flow's virtual time (NULL if it has no row).
LANE_CLOCK = """
    SELECT vclock, EXISTS (
        SELECT 1 FROM jobs WHERE lane = ? AND state = 'queued' AND tenant IS NULL),
        (SELECT vtime FROM lane_tenants WHERE lane = lane_queued.lane AND tenant = '')
    FROM lane_queued WHERE lane = ?"""
# Params: clock, lane, clock. Raise the times of the lane's queued tenants behind its
# clock to it (tenants new to the lane, or passed over): the clock only moves on, so
# their start tags stay the same, and (vtime, tenant) becomes the fair order.
LIFT_VTIMES = "UPDATE lane_tenants SET vtime = ? WHERE lane = ? AND n > 0 AND vtime < ?"
# Params: lane, vtime, tenant, n: the next ``n`` queued tenants after (vtime, tenant) in
# fair order (lane_tenants_fair): (tenant, QUEUED count, virtual time).
FAIR_PAGE = """
    SELECT tenant, n, vtime FROM lane_tenants INDEXED BY lane_tenants_fair
    WHERE lane = ? AND n > 0 AND (vtime, tenant) > (?, ?) AND tenant <> ''
    ORDER BY vtime, tenant LIMIT ?"""
# Params: lane, now, n: the next due jobs of the tenant-less flow / of one tenant
# (params: lane, tenant, now, n); expired leases of any tenant (params: lane, now, n).
FLOW_NONE = """
    SELECT seq FROM jobs WHERE lane = ? AND state = 'queued' AND tenant IS NULL AND run_at <= ?
    ORDER BY rank, run_at, seq LIMIT ?"""
FLOW_TENANT = """
    SELECT seq FROM jobs
    WHERE lane = ? AND tenant = ? AND state = 'queued' AND tenant IS NOT NULL AND run_at <= ?
    ORDER BY rank, run_at, seq LIMIT ?"""


def flow_seqs(named: Sequence[bool]) -> str:
    """The next due jobs of several flows in one statement: one FLOW_TENANT (``True``;
    params: lane, tenant, now, n) or FLOW_NONE (``False``; params: lane, now, n) per
    flow, in order. Rows: (seq, tenant or '')."""
    return " UNION ALL ".join(
        f"SELECT seq, ? FROM ({FLOW_TENANT})" if t else f"SELECT seq, '' FROM ({FLOW_NONE})"
        for t in named
    )


FLOW_LOST = """
    SELECT seq FROM jobs WHERE lane = ? AND state = 'running' AND lease_until <= ?
    ORDER BY rank, run_at, seq LIMIT ?"""
# Params: lane, now: live leases per named tenant (for Tenants.max_in_flight).
TENANTS_RUNNING = """
    SELECT tenant, COUNT(*) FROM jobs
    WHERE lane = ? AND state = 'running' AND lease_until > ? AND tenant IS NOT NULL
    GROUP BY tenant"""
# Params: lane, tenant, vtime (one row per served flow); then vclock, lane.
SET_VTIME = (
    "INSERT INTO lane_tenants (lane, tenant, vtime) VALUES (?, ?, ?)"
    " ON CONFLICT (lane, tenant) DO UPDATE SET vtime = excluded.vtime"
)
SET_VCLOCK = "UPDATE lane_queued SET vclock = ? WHERE lane = ?"
# Params: lane, tenant: forget a served tenant that has no QUEUED job left (it comes back
# at the lane's clock).
PRUNE_TENANT = "DELETE FROM lane_tenants WHERE lane = ? AND tenant = ? AND n <= 0 AND tenant <> ''"
# Params: lane, tenant, then n, lane, tenant: count ``n`` jobs inserted QUEUED for a tenant.
ADD_TENANT_QUEUED = (
    "INSERT OR IGNORE INTO lane_tenants (lane, tenant) VALUES (?, ?)",
    "UPDATE lane_tenants SET n = n + ? WHERE lane = ? AND tenant = ?",
)
# Params: lane, limit: the tenants with most QUEUED jobs.
TOP_TENANTS = (
    "SELECT tenant, n FROM lane_tenants WHERE lane = ? AND n > 0 AND tenant <> ''"
    " ORDER BY n DESC, tenant LIMIT ?"
)


def tenant_counts(n: int) -> str:
    """The QUEUED counts of ``n`` (lane, tenant) pairs (params: lane, tenant, lane, ...)."""
    pairs = " OR ".join(["(lane = ? AND tenant = ?)"] * n)
    return f"SELECT lane, tenant, n FROM lane_tenants WHERE {pairs}"


def claim_seqs(n: int, returning: bool) -> str:
    """Lease the ``n`` jobs of the given seqs (params: running, owner, lease_until, now,
    then the seqs); with ``returning``, answer their rows."""
    marks = ", ".join("?" * n)
    update = (
        "UPDATE jobs SET state = ?, attempts = attempts + 1, lease_owner = ?, lease_until = ?,"
        f" updated_at = ? WHERE seq IN ({marks})"
    )
    return f"{update} RETURNING {COLUMNS}" if returning else update


def select_seqs(n: int) -> str:
    return f"SELECT {COLUMNS} FROM jobs WHERE seq IN ({', '.join('?' * n)})"


# For SQLite < 3.35 (no RETURNING): select, then update by seq, in one transaction.
CLAIM_SELECT = f"SELECT {COLUMNS} FROM jobs WHERE seq IN ({_CANDIDATES})"
CLAIM_UPDATE = (
    "UPDATE jobs SET state = ?, attempts = attempts + 1, lease_owner = ?, lease_until = ?,"
    " updated_at = ? WHERE seq = ?"
)

# Params: dead, LEASE_LOST_FMT, now, lane, now.
KILL_LOST = """
    UPDATE jobs SET state = ?, error = printf(?, attempts, max_attempts), lease_owner = NULL,
        lease_until = NULL, updated_at = ?
    WHERE lane = ? AND state = 'running' AND lease_until <= ? AND attempts >= max_attempts"""

# Params: error, now, lane, now. Expired leases of jobs whose cancel was requested end
# CANCELLED (they are not taken over).
CANCEL_EXPIRED = """
    UPDATE jobs SET state = 'cancelled', error = ?, lease_owner = NULL, lease_until = NULL,
        updated_at = ?
    WHERE lane = ? AND state = 'running' AND lease_until <= ?
        AND cancel_requested_at IS NOT NULL"""

# Params: dead, error, now, seq.
KILL_CORRUPT = (
    "UPDATE jobs SET state = ?, error = ?, lease_owner = NULL, lease_until = NULL,"
    " updated_at = ? WHERE seq = ?"
)

# A lease is held while the job is RUNNING under the same owner.
_HELD = "id = ? AND state = ? AND lease_owner = ?"
HEARTBEAT = f"UPDATE jobs SET lease_until = ? WHERE {_HELD}"
# Params: state, state, result, error, traceback, run_at (None keeps it), now, id, running,
# owner, attempt, attempt (None: any attempt). A retry of a job whose cancel was requested
# ends it CANCELLED instead.
COMPLETE = f"""
    UPDATE jobs SET
        state = CASE WHEN ? = 'queued' AND cancel_requested_at IS NOT NULL
                     THEN 'cancelled' ELSE ? END,
        result = ?, error = ?, traceback = ?,
        run_at = COALESCE(?, run_at), lease_owner = NULL, lease_until = NULL, updated_at = ?
    WHERE {_HELD} AND (? IS NULL OR attempts = ?)"""
# COMPLETE of ``n`` outcomes as one statement (one program run instead of one per
# outcome): the outcomes, a VALUES table, are joined to their rows by id (the id index)
# and each row is changed only while still leased as COMPLETE's WHERE says. Only for
# outcomes of distinct jobs: a row that two outcomes match would take either one.
# UPDATE ... FROM needs SQLite 3.33. Params: now, then per outcome state, result, error,
# traceback, run_at (None keeps it), id, owner, attempt (None: any attempt).
COMPLETE_ROWS_MAX = 64  # outcomes per statement: 513 parameters, under SQLite's oldest limit
UPDATE_FROM = sqlite3.sqlite_version_info >= (3, 33, 0)


def complete_rows(n: int) -> str:
    """COMPLETE of ``n`` outcomes of distinct jobs in one statement (see above)."""
    return _complete_rows_text(_statement_size(n, COMPLETE_ROWS_MAX, "complete_rows", "outcomes"))


@cache
def _complete_rows_text(n: int) -> str:
    values = ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?)"] * n)
    return f"""
    UPDATE jobs SET
        state = CASE WHEN v.column1 = 'queued' AND jobs.cancel_requested_at IS NOT NULL
                     THEN 'cancelled' ELSE v.column1 END,
        result = v.column2, error = v.column3, traceback = v.column4,
        run_at = COALESCE(v.column5, jobs.run_at), lease_owner = NULL, lease_until = NULL,
        updated_at = ?
    FROM (VALUES {values}) AS v
    WHERE jobs.id = v.column6 AND jobs.state = 'running' AND jobs.lease_owner = v.column7
        AND (v.column8 IS NULL OR jobs.attempts = v.column8)"""


# Params: queued, error of a cancelled job, now, id, running, owner. A job whose cancel was
# requested ends CANCELLED instead of going back to the queue.
RELEASE = f"""
    UPDATE jobs SET
        state = CASE WHEN cancel_requested_at IS NULL THEN ? ELSE 'cancelled' END,
        error = CASE WHEN cancel_requested_at IS NULL THEN error ELSE ? END,
        attempts = MAX(attempts - 1, 0), lease_owner = NULL,
        lease_until = NULL, updated_at = ?
    WHERE {_HELD}"""
REQUEUE = """
    UPDATE jobs SET state = ?, attempts = 0, run_at = ?, lease_owner = NULL, lease_until = NULL,
        updated_at = ?, cancel_requested_at = NULL
    WHERE """
# Params: finished_before, limit (each; one per finished state that is purged).
PURGE = (
    """DELETE FROM jobs WHERE seq IN (
        SELECT seq FROM jobs WHERE state = 'done' AND updated_at < ? LIMIT ?)""",
    """DELETE FROM jobs WHERE seq IN (
        SELECT seq FROM jobs WHERE state = 'cancelled' AND updated_at < ? LIMIT ?)""",
)
# Cancellation. Params: id.
CANCEL_STATE = "SELECT state FROM jobs WHERE id = ?"
# Params: error, now, id.
CANCEL_QUEUED = (
    "UPDATE jobs SET state = 'cancelled', error = ?, updated_at = ? WHERE id = ?"
    " AND state = 'queued'"
)
# Params: now, id.
CANCEL_RUNNING = (
    "UPDATE jobs SET cancel_requested_at = ? WHERE id = ? AND state = 'running'"
    " AND cancel_requested_at IS NULL"
)
# Params: error, now, task, task, tenant, tenant (a NULL task or tenant matches any).
CANCEL_TASK_QUEUED = (
    "UPDATE jobs SET state = 'cancelled', error = ?, updated_at = ?"
    " WHERE (? IS NULL OR task = ?) AND (? IS NULL OR tenant = ?) AND state = 'queued'"
)
# Params: now, task, task, tenant, tenant.
CANCEL_TASK_RUNNING = (
    "UPDATE jobs SET cancel_requested_at = ? WHERE (? IS NULL OR task = ?)"
    " AND (? IS NULL OR tenant = ?) AND state = 'running' AND cancel_requested_at IS NULL"
)


def cancel_requested(n: int) -> str:
    """Which of ``n`` job ids (the params) run with a cancel requested."""
    return (
        f"SELECT id FROM jobs WHERE id IN ({', '.join('?' * n)}) AND state = 'running'"
        " AND cancel_requested_at IS NOT NULL"
    )


# Params: now, owner, now, lane. A claim's first look at the lane's leases, one walk of
# jobs_running: the jobs running under a live lease of another owner (a fleet-wide
# ceiling's count), and how many leases have expired (none, the common case:
# CANCEL_EXPIRED and KILL_LOST would change nothing, so they are not run).
LEASES = (
    "SELECT COALESCE(SUM(lease_until > ? AND lease_owner <> ?), 0),"
    " COALESCE(SUM(lease_until <= ?), 0) FROM jobs WHERE lane = ? AND state = 'running'"
)
# Params: lane. The lane's QUEUED count (kept by migration 3's triggers, and by
# ADD_QUEUED for inserts); no row: 0.
QUEUED_COUNT = "SELECT n FROM lane_queued WHERE lane = ?"
# Params: lane, then n, lane: count ``n`` jobs inserted QUEUED into ``lane``.
ADD_QUEUED = (
    "INSERT OR IGNORE INTO lane_queued (lane, n) VALUES (?, 0)",
    "UPDATE lane_queued SET n = n + ? WHERE lane = ?",
)


def queued_counts(n: int) -> str:
    """The QUEUED counts of ``n`` lanes (params: the lanes); lanes without a row are left out."""
    return f"SELECT lane, n FROM lane_queued WHERE lane IN ({', '.join('?' * n)})"


# Lease owners (this host's processes), for dead-owner detection.
# Params: owner, host, boot_id, pidns, pid, started, now.
REGISTER_OWNER = (
    "INSERT OR REPLACE INTO owners (owner, host, boot_id, pidns, pid, started, registered_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_OWNER_COLUMNS = "owner, host, boot_id, pidns, pid, started"
# Params: lane, now, owner: the owners of the lane's other live leases.
LEASING_OWNERS = f"""
    SELECT {_OWNER_COLUMNS} FROM owners WHERE owner IN (
        SELECT DISTINCT lease_owner FROM jobs
        WHERE lane = ? AND state = 'running' AND lease_until > ? AND lease_owner <> ?)"""
# Params: host, boot_id, pidns, owner, limit: other owners registered from this host and boot.
LOCAL_OWNERS = f"""
    SELECT {_OWNER_COLUMNS} FROM owners
    WHERE host = ? AND boot_id = ? AND pidns = ? AND owner <> ? LIMIT ?"""
# Params: now, owner, now. A dead owner's leases end now (as if they had expired).
EXPIRE_OWNER = (
    "UPDATE jobs SET lease_until = ? WHERE state = 'running' AND lease_owner = ?"
    " AND lease_until > ?"
)
DELETE_OWNER = "DELETE FROM owners WHERE owner = ?"
COUNTS = "SELECT lane, state, COUNT(*) FROM jobs GROUP BY lane, state"


def _number(value: object) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    raise ValueError(f"not a number: {value!r}")


_STATES = {state.value: state for state in JobState}
_NUMBER = (int, float)
_OPT_NUMBER = (int, float, type(None))
_OPT_TEXT = (str, type(None))


def decode_row(row: Sequence[Any]) -> tuple[int, JobRecord, str | None]:
    """``(seq, record, problem)``; a corrupt field gets a default and is named in ``problem``.

    A corrupt record carries ``error="corrupt row: ..."``; an unknown state reads as DEAD.
    """
    (seq, id_, task, lane, args, priority, state, attempts, max_attempts, run_at) = row[:10]
    (created_at, updated_at, key, owner, lease_until, result, error, tb, deadline_at) = row[10:19]
    cost, cancel_at, rank, tenant, trace = row[19], row[20], row[21], row[22], row[23]
    # the common case, every column of its type, in one go; anything else is looked
    # at field by field below
    if (
        type(args) is str
        and state in _STATES
        and type(id_) is str
        and type(task) is str
        and type(lane) is str
        and type(priority) in _NUMBER
        and type(attempts) in _NUMBER
        and type(max_attempts) in _NUMBER
        and type(run_at) in _NUMBER
        and type(created_at) in _NUMBER
        and type(updated_at) in _NUMBER
        and type(lease_until) in _OPT_NUMBER
        and type(deadline_at) in _OPT_NUMBER
        and type(cost) in _OPT_NUMBER
        and type(cancel_at) in _OPT_NUMBER
        and type(rank) in _OPT_NUMBER
        and type(key) in _OPT_TEXT
        and type(owner) in _OPT_TEXT
        and type(error) in _OPT_TEXT
        and type(tb) in _OPT_TEXT
        and type(result) in _OPT_TEXT
        and type(tenant) in _OPT_TEXT
        and type(trace) in _OPT_TEXT
    ):
        try:
            decoded = loads_json(args)
            value = None if result is None else loads_json(result)
        except ValueError:
            pass
        else:
            if type(decoded) is list:
                record = JobRecord(
                    id_, task, lane, decoded, float(priority), _STATES[state], int(attempts),
                    int(max_attempts), float(run_at), float(created_at), float(updated_at), key,
                    owner, None if lease_until is None else float(lease_until), value, error, tb,
                    None if deadline_at is None else float(deadline_at),
                    None if cost is None else float(cost),
                    None if cancel_at is None else float(cancel_at),
                    float(priority) if rank is None else float(rank), tenant, trace,
                )  # fmt: skip
                return int(seq), record, None
    return _decode_fields(row)


def _decode_fields(row: Sequence[Any]) -> tuple[int, JobRecord, str | None]:
    """:func:`decode_row` field by field, each corrupt field named."""
    problems: list[str] = []

    def field(name: str, value: Any, decode: Any, default: Any) -> Any:
        try:
            return decode(value)
        except (TypeError, ValueError) as exc:
            problems.append(f"{name}: {exc}")
            return default

    def opt_number(name: str, value: Any) -> float | None:
        return None if value is None else field(name, value, _number, None)

    (seq, id_, task, lane, args, priority, state, attempts, max_attempts, run_at) = row[:10]
    (created_at, updated_at, key, owner, lease_until, result, error, tb, deadline_at) = row[10:19]
    cost, cancel_at, rank, tenant, trace = row[19], row[20], row[21], row[22], row[23]
    record = JobRecord(
        id=str(id_),
        task=str(task),
        lane=str(lane),
        args=field("args", args, decode_args, []),
        priority=field("priority", priority, _number, 0.0),
        state=field("state", state, JobState, JobState.DEAD),
        attempts=int(field("attempts", attempts, _number, 0)),
        max_attempts=int(field("max_attempts", max_attempts, _number, 1)),
        run_at=field("run_at", run_at, _number, 0.0),
        created_at=field("created_at", created_at, _number, 0.0),
        updated_at=field("updated_at", updated_at, _number, 0.0),
        key=None if key is None else str(key),
        lease_owner=None if owner is None else str(owner),
        lease_until=opt_number("lease_until", lease_until),
        result=None if result is None else field("result", result, _json_result, None),
        error=None if error is None else str(error),
        traceback=None if tb is None else str(tb),
        deadline_at=opt_number("deadline_at", deadline_at),
        cost=opt_number("cost", cost),
        cancel_requested_at=opt_number("cancel_requested_at", cancel_at),
        rank=opt_number("rank", rank),
        tenant=None if tenant is None else str(tenant),
        trace=None if trace is None else str(trace),
    )
    if not problems:
        return int(seq), record, None
    problem = "; ".join(problems)
    return int(seq), replace(record, error=corrupt(problem)), problem


def _json_result(text: Any) -> Any:
    return decode_json(text, "result")


# Primary result codes (the low byte of an extended code).
_BUSY, _LOCKED, _CORRUPT, _FULL, _CANTOPEN, _NOTADB = 5, 6, 11, 13, 14, 26


def translate_error(exc: sqlite3.Error, path: str, busy_timeout: float) -> BacklogError:
    """The Floodgate error for a ``sqlite3`` one, with the backlog's path in the message."""
    code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF
    text = str(exc)
    if code in (_BUSY, _LOCKED) or "locked" in text:
        return BacklogLocked(
            f"backlog {path!r} is locked by another connection and stayed locked past "
            f"busy_timeout={busy_timeout:g}s ({text}); this call stored nothing, "
            "earlier writes are safe"
        )
    if code == _FULL or "full" in text:
        return BacklogFull(f"backlog {path!r}: disk or database full ({text}); nothing stored")
    if code in (_NOTADB, _CORRUPT) or "not a database" in text:
        return BacklogError(f"{path!r} is not a usable Floodgate backlog database: {text}")
    if code == _CANTOPEN:
        return BacklogError(f"cannot open backlog {path!r}: {text}")
    return BacklogError(f"backlog {path!r}: {text}")
