"""SQL for :mod:`scheduler.backlog.postgres`: migrations, statements, row decoding, errors.

Every value reaches PostgreSQL as a bound parameter (``$n``). Tables and the
claim function are named without a schema: they live in the first schema of
the connection's ``search_path`` (``PostgresBacklog(schema=...)`` sets it; a
DSN's ``?search_path=`` works too). The only text formatted into SQL is this
module's own constants and a schema name that :func:`check_schema` accepted.

The job states are stored as their :class:`~scheduler.jobs.JobState` values
(``'queued'``, ``'running'``, ``'done'``, ``'dead'``), written literally below.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Sequence
from typing import Any

from ..errors import BacklogError, ConfigError
from ..jobs import JobState
from ._sqlite_schema import decode_row as _decode_row
from .base import LEASE_LOST_FMT, BacklogFull, BacklogUnavailable, JobRecord

_STATES = (JobState.QUEUED, JobState.RUNNING, JobState.DONE, JobState.DEAD, JobState.CANCELLED)
if [s.value for s in _STATES] != ["queued", "running", "done", "dead", "cancelled"]:
    raise RuntimeError("the SQL below spells the job states out; update it with JobState")

#: a schema name we are willing to put into SQL text (and a search_path)
SCHEMA_RE = re.compile(r"[a-z_][a-z0-9_]{0,62}")

#: the claim function's printf format for a lost lease (PostgreSQL ``format()`` spells %d as %s)
LOST_FORMAT = LEASE_LOST_FMT.replace("%d", "%s")

# The version table, created (if missing) before the migrations run.
META = """
    CREATE TABLE IF NOT EXISTS floodgate_meta (
        id      integer PRIMARY KEY CHECK (id = 1),
        version integer NOT NULL
    )"""
META_VERSION = "SELECT version FROM floodgate_meta WHERE id = 1"
META_SET = """
    INSERT INTO floodgate_meta (id, version) VALUES (1, $1)
    ON CONFLICT (id) DO UPDATE SET version = EXCLUDED.version"""

# Serializes migrations of one schema across processes (released at commit).
MIGRATE_LOCK = "SELECT pg_advisory_xact_lock(hashtext('floodgate.migrate:' || $1::text))"

# The claim, as one server-side function so that it is one round trip.
# 1. with a ceiling: take the lane's advisory lock (claims of the lane queue up
#    here, so the count below cannot be raced by another claimer);
# 2. expired leases with no attempts left go DEAD ("lease expired ...");
# 3. with a ceiling: count the lane's live leases of other owners (a fresh
#    snapshot: PL/pgSQL takes one per statement in READ COMMITTED, after the
#    lock was granted; the caller subtracted its own running jobs already);
# 4. lease the next jobs in claim order, skipping rows other claimers hold.
_CLAIM_FUNCTION = """
CREATE OR REPLACE FUNCTION floodgate_claim(
    p_lane text, p_limit integer, p_owner text, p_lease_until double precision,
    p_now double precision, p_max_running integer, p_lost_format text)
RETURNS SETOF floodgate_jobs
LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    n integer := p_limit;
    live integer;
BEGIN
    IF p_max_running IS NOT NULL THEN
        PERFORM pg_advisory_xact_lock(
            hashtext('floodgate.lane:' || current_schema()), hashtext(p_lane));
    END IF;
    UPDATE floodgate_jobs
       SET state = 'dead', error = format(p_lost_format, attempts, max_attempts),
           lease_owner = NULL, lease_until = NULL, updated_at = p_now
     WHERE seq IN (SELECT seq FROM floodgate_jobs
                    WHERE lane = p_lane AND state = 'running' AND lease_until <= p_now
                      AND attempts >= max_attempts
                      FOR UPDATE SKIP LOCKED);
    IF p_max_running IS NOT NULL THEN
        SELECT count(*) INTO live FROM floodgate_jobs
         WHERE lane = p_lane AND state = 'running' AND lease_until > p_now
           AND lease_owner <> p_owner;
        n := least(n, p_max_running - live);
    END IF;
    IF n <= 0 THEN
        RETURN;
    END IF;
    RETURN QUERY
    WITH due AS (
        SELECT seq, priority, run_at FROM floodgate_jobs
         WHERE lane = p_lane AND state = 'queued' AND run_at <= p_now
         ORDER BY priority, run_at, seq LIMIT n
           FOR UPDATE SKIP LOCKED
    ), lost AS (
        SELECT seq, priority, run_at FROM floodgate_jobs
         WHERE lane = p_lane AND state = 'running' AND lease_until <= p_now
           AND attempts < max_attempts
         ORDER BY priority, run_at, seq LIMIT n
           FOR UPDATE SKIP LOCKED
    ), chosen AS (
        SELECT seq FROM (SELECT * FROM due UNION ALL SELECT * FROM lost) c
         ORDER BY priority, run_at, seq LIMIT n
    )
    UPDATE floodgate_jobs j
       SET state = 'running', attempts = j.attempts + 1, lease_owner = p_owner,
           lease_until = p_lease_until, updated_at = p_now
      FROM chosen WHERE j.seq = chosen.seq
    RETURNING j.*;
END
$fn$"""

# v4: expired leases of jobs whose cancel was requested end CANCELLED first (never taken over).
_CLAIM_FUNCTION_V4 = _CLAIM_FUNCTION.replace(
    """    UPDATE floodgate_jobs
       SET state = 'dead',""",
    """    UPDATE floodgate_jobs
       SET state = 'cancelled', error = p_cancelled_error, lease_owner = NULL,
           lease_until = NULL, updated_at = p_now
     WHERE seq IN (SELECT seq FROM floodgate_jobs
                    WHERE lane = p_lane AND state = 'running' AND lease_until <= p_now
                      AND cancel_requested_at IS NOT NULL
                      FOR UPDATE SKIP LOCKED);
    UPDATE floodgate_jobs
       SET state = 'dead',""",
).replace(
    "p_max_running integer, p_lost_format text)",
    "p_max_running integer, p_lost_format text, p_cancelled_error text)",
)

# v5: claim order by rank (base.job_rank), walking floodgate_jobs_queued (see migration 5).
_CLAIM_FUNCTION_V5 = _CLAIM_FUNCTION_V4.replace(
    "SELECT seq, priority, run_at FROM floodgate_jobs",
    "SELECT seq, rank, run_at FROM floodgate_jobs",
).replace("ORDER BY priority, run_at, seq", "ORDER BY rank, run_at, seq")
if _CLAIM_FUNCTION_V5.count("rank, run_at, seq") != 3:
    raise RuntimeError("the v5 claim function did not pick up the rank order")

# v6: the claim function leases only jobs without a tenant from the queue (a lane whose
# queued jobs name tenants is claimed fairly, by FAIR_* below, see _fair).
_CLAIM_FUNCTION_V6 = _CLAIM_FUNCTION_V5.replace(
    "WHERE lane = p_lane AND state = 'queued' AND run_at <= p_now",
    "WHERE lane = p_lane AND state = 'queued' AND tenant IS NULL AND run_at <= p_now",
)
if _CLAIM_FUNCTION_V6.count("tenant IS NULL") != 1:
    raise RuntimeError("the v6 claim function did not pick up the tenant filter")

# Keeps floodgate_lane_queued (each lane's QUEUED count) true, once per statement over its
# transition tables. Counter rows are taken in lane order, the order a submit locks them in
# (see LOCK_LANES), and only for lanes whose count changed: a heartbeat or a claim's KILL_LOST
# locks none.
_COUNT_QUEUED_FUNCTION = """
CREATE OR REPLACE FUNCTION floodgate_count_queued() RETURNS trigger
LANGUAGE plpgsql AS $fn$
DECLARE
    r record;
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        UPDATE floodgate_lane_queued SET n = 0 WHERE n <> 0;
        RETURN NULL;
    END IF;
    IF TG_OP = 'INSERT' THEN
        FOR r IN SELECT lane, count(*) AS k FROM floodgate_new_rows WHERE state = 'queued'
                  GROUP BY lane ORDER BY lane LOOP
            INSERT INTO floodgate_lane_queued AS c (lane, n) VALUES (r.lane, r.k)
            ON CONFLICT (lane) DO UPDATE SET n = c.n + EXCLUDED.n;
        END LOOP;
    ELSIF TG_OP = 'DELETE' THEN
        FOR r IN SELECT lane, -count(*) AS k FROM floodgate_old_rows WHERE state = 'queued'
                  GROUP BY lane ORDER BY lane LOOP
            INSERT INTO floodgate_lane_queued AS c (lane, n) VALUES (r.lane, r.k)
            ON CONFLICT (lane) DO UPDATE SET n = c.n + EXCLUDED.n;
        END LOOP;
    ELSE
        FOR r IN SELECT d.lane, sum(d.k) AS k FROM (
                     SELECT lane, 1 AS k FROM floodgate_new_rows WHERE state = 'queued'
                     UNION ALL
                     SELECT lane, -1 AS k FROM floodgate_old_rows WHERE state = 'queued') d
                  GROUP BY d.lane HAVING sum(d.k) <> 0 ORDER BY d.lane LOOP
            INSERT INTO floodgate_lane_queued AS c (lane, n) VALUES (r.lane, r.k)
            ON CONFLICT (lane) DO UPDATE SET n = c.n + EXCLUDED.n;
        END LOOP;
    END IF;
    RETURN NULL;
END
$fn$"""

# v6: also the QUEUED counts of named tenants per lane (floodgate_lane_tenants); a tenant
# whose count reaches 0 loses its row (it comes back at the lane's virtual clock).
_COUNT_QUEUED_FUNCTION_V6 = _COUNT_QUEUED_FUNCTION.replace(
    """    RETURN NULL;
END
$fn$""",
    """    IF TG_OP = 'INSERT' THEN
        FOR r IN SELECT lane, tenant, count(*) AS k FROM floodgate_new_rows
                  WHERE state = 'queued' AND tenant IS NOT NULL
                  GROUP BY lane, tenant ORDER BY lane, tenant LOOP
            INSERT INTO floodgate_lane_tenants AS c (lane, tenant, n)
            VALUES (r.lane, r.tenant, r.k)
            ON CONFLICT (lane, tenant) DO UPDATE SET n = c.n + EXCLUDED.n;
        END LOOP;
    ELSIF TG_OP = 'DELETE' THEN
        FOR r IN SELECT lane, tenant, -count(*) AS k FROM floodgate_old_rows
                  WHERE state = 'queued' AND tenant IS NOT NULL
                  GROUP BY lane, tenant ORDER BY lane, tenant LOOP
            UPDATE floodgate_lane_tenants SET n = n + r.k
             WHERE lane = r.lane AND tenant = r.tenant;
            DELETE FROM floodgate_lane_tenants
             WHERE lane = r.lane AND tenant = r.tenant AND n <= 0;
        END LOOP;
    ELSE
        FOR r IN SELECT d.lane, d.tenant, sum(d.k) AS k FROM (
                     SELECT lane, tenant, 1 AS k FROM floodgate_new_rows
                      WHERE state = 'queued' AND tenant IS NOT NULL
                     UNION ALL
                     SELECT lane, tenant, -1 AS k FROM floodgate_old_rows
                      WHERE state = 'queued' AND tenant IS NOT NULL) d
                  GROUP BY d.lane, d.tenant HAVING sum(d.k) <> 0
                  ORDER BY d.lane, d.tenant LOOP
            INSERT INTO floodgate_lane_tenants AS c (lane, tenant, n)
            VALUES (r.lane, r.tenant, r.k)
            ON CONFLICT (lane, tenant) DO UPDATE SET n = c.n + EXCLUDED.n;
            DELETE FROM floodgate_lane_tenants
             WHERE lane = r.lane AND tenant = r.tenant AND n <= 0;
        END LOOP;
    END IF;
    RETURN NULL;
END
$fn$""",
).replace(
    """        UPDATE floodgate_lane_queued SET n = 0 WHERE n <> 0;
        RETURN NULL;""",
    """        UPDATE floodgate_lane_queued SET n = 0 WHERE n <> 0;
        DELETE FROM floodgate_lane_tenants WHERE tenant <> '';
        RETURN NULL;""",
)
if _COUNT_QUEUED_FUNCTION_V6.count("floodgate_lane_tenants") != 6:
    raise RuntimeError("the v6 count function did not pick up the tenant counts")

# Ends at once the leases of lease owners whose session is gone. Every owner holds a session
# advisory lock on (floodgate.owner:<schema>, owner) for as long as it lives (taken before its
# floodgate_owners row is written): a claimer that can take that lock knows the owner's
# connection, and so the owner, is gone. With p_lane: the owners of the lane's other live
# leases; without: every other registered owner. Their leases end now, as if they had
# expired (the next claim retries or buries the jobs, as for a lost lease); their rows go.
_RECLAIM_DEAD_FUNCTION = """
CREATE OR REPLACE FUNCTION floodgate_reclaim_dead(
    p_lane text, p_owner text, p_now double precision)
RETURNS TABLE (dead_owner text, ended bigint)
LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    o text;
BEGIN
    FOR o IN SELECT w.owner FROM floodgate_owners w
              WHERE w.owner <> p_owner
                AND (p_lane IS NULL OR w.owner IN (
                     SELECT j.lease_owner FROM floodgate_jobs j
                      WHERE j.lane = p_lane AND j.state = 'running' AND j.lease_until > p_now))
              ORDER BY w.owner LOOP
        IF pg_try_advisory_xact_lock(
               hashtext('floodgate.owner:' || current_schema()), hashtext(o)) THEN
            UPDATE floodgate_jobs SET lease_until = p_now
             WHERE state = 'running' AND lease_owner = o AND lease_until > p_now;
            GET DIAGNOSTICS ended = ROW_COUNT;
            DELETE FROM floodgate_owners w WHERE w.owner = o;
            dead_owner := o;
            RETURN NEXT;
        END IF;
    END LOOP;
END
$fn$"""

# Forward migrations; MIGRATIONS[i] takes floodgate_meta.version i to i + 1. Append only.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE floodgate_jobs (
            seq          bigint GENERATED ALWAYS AS IDENTITY (SEQUENCE NAME floodgate_jobs_seq)
                                PRIMARY KEY,
            id           text             NOT NULL UNIQUE,
            task         text             NOT NULL,
            lane         text             NOT NULL,
            args         text             NOT NULL,
            priority     double precision NOT NULL,
            state        text             NOT NULL,
            attempts     integer          NOT NULL DEFAULT 0,
            max_attempts integer          NOT NULL,
            run_at       double precision NOT NULL,
            created_at   double precision NOT NULL,
            updated_at   double precision NOT NULL,
            key          text,
            lease_owner  text,
            lease_until  double precision,
            result       text,
            error        text,
            traceback    text,
            deadline_at  double precision
        )""",
        "CREATE INDEX floodgate_jobs_claim ON floodgate_jobs (lane, state, priority, run_at, seq)",
        "CREATE UNIQUE INDEX floodgate_jobs_key ON floodgate_jobs (key) WHERE key IS NOT NULL",
        "CREATE INDEX floodgate_jobs_state_updated ON floodgate_jobs (state, updated_at)",
        _CLAIM_FUNCTION,
    ),
    # 2: a job's own cost (tokens from its upstream's rate limit); NULL = the task's default.
    # The claim function returns the table's row type: create it again with the new column.
    (
        "ALTER TABLE floodgate_jobs ADD COLUMN cost double precision",
        _CLAIM_FUNCTION,
    ),
    # 3: each lane's QUEUED count, kept by statement triggers (max_queued is checked against
    # it in the submit's transaction, in O(1)); lease owners (dead-owner detection). The
    # triggers come before the count is taken, so no write can slip between the two.
    (
        "CREATE TABLE floodgate_lane_queued (lane text PRIMARY KEY, n bigint NOT NULL)",
        _COUNT_QUEUED_FUNCTION,
        """CREATE TRIGGER floodgate_jobs_queued_insert AFTER INSERT ON floodgate_jobs
           REFERENCING NEW TABLE AS floodgate_new_rows
           FOR EACH STATEMENT EXECUTE FUNCTION floodgate_count_queued()""",
        """CREATE TRIGGER floodgate_jobs_queued_update AFTER UPDATE ON floodgate_jobs
           REFERENCING OLD TABLE AS floodgate_old_rows NEW TABLE AS floodgate_new_rows
           FOR EACH STATEMENT EXECUTE FUNCTION floodgate_count_queued()""",
        """CREATE TRIGGER floodgate_jobs_queued_delete AFTER DELETE ON floodgate_jobs
           REFERENCING OLD TABLE AS floodgate_old_rows
           FOR EACH STATEMENT EXECUTE FUNCTION floodgate_count_queued()""",
        """CREATE TRIGGER floodgate_jobs_queued_truncate AFTER TRUNCATE ON floodgate_jobs
           FOR EACH STATEMENT EXECUTE FUNCTION floodgate_count_queued()""",
        """INSERT INTO floodgate_lane_queued (lane, n)
           SELECT lane, count(*) FROM floodgate_jobs WHERE state = 'queued' GROUP BY lane""",
        """CREATE TABLE floodgate_owners (
            owner         text PRIMARY KEY,
            registered_at double precision NOT NULL
        )""",
        _RECLAIM_DEAD_FUNCTION,
    ),
    # 4: cancellation: when a cancel of a RUNNING job was requested (its lease holder ends
    # it CANCELLED); the claim function, on the new row type, ends such jobs' expired
    # leases CANCELLED (a new signature: the old function goes)
    (
        "ALTER TABLE floodgate_jobs ADD COLUMN cancel_requested_at double precision",
        "DROP FUNCTION floodgate_claim(text, integer, text, double precision, double precision,"
        " integer, text)",
        _CLAIM_FUNCTION_V4,
    ),
    # 5: aging on durable lanes: the claim order's key, fixed at submit (base.job_rank);
    # rows from before have no aging: their rank is their priority. A partial index walks
    # a lane's queued jobs in claim order.
    (
        "ALTER TABLE floodgate_jobs ADD COLUMN rank double precision",
        "UPDATE floodgate_jobs SET rank = priority",
        "CREATE INDEX floodgate_jobs_queued ON floodgate_jobs (lane, rank, run_at, seq)"
        " WHERE state = 'queued'",
        _CLAIM_FUNCTION_V5,
    ),
    # 6: tenants (fair claims, see _fair) and the submitter's trace context. Jobs without a
    # tenant keep the claim-order index; each tenant's jobs get their own. lane_tenants holds
    # named tenants' QUEUED counts (the count trigger keeps them) and every flow's virtual
    # time (the tenant-less flow as ''); lane_queued.vclock is the lane's virtual clock.
    (
        "ALTER TABLE floodgate_jobs ADD COLUMN tenant text, ADD COLUMN trace text",
        "DROP INDEX floodgate_jobs_queued",
        "CREATE INDEX floodgate_jobs_queued ON floodgate_jobs (lane, rank, run_at, seq)"
        " WHERE state = 'queued' AND tenant IS NULL",
        "CREATE INDEX floodgate_jobs_queued_tenant ON floodgate_jobs"
        " (lane, tenant, rank, run_at, seq) WHERE state = 'queued' AND tenant IS NOT NULL",
        """CREATE TABLE floodgate_lane_tenants (
            lane   text NOT NULL,
            tenant text NOT NULL,
            n      bigint NOT NULL DEFAULT 0,
            vtime  double precision NOT NULL DEFAULT 0,
            PRIMARY KEY (lane, tenant)
        )""",
        "ALTER TABLE floodgate_lane_queued ADD COLUMN vclock double precision NOT NULL DEFAULT 0",
        _COUNT_QUEUED_FUNCTION_V6,
        _CLAIM_FUNCTION_V6,
    ),
    # 7: a fair claim reads its lane's queued tenants in fair order, a page at a time
    # (see _fair): (virtual time, tenant in code point order, as Python compares them),
    # every queued tenant's time kept at least the lane's clock (FAIR_CLOCK lifts them)
    (
        "CREATE INDEX floodgate_lane_tenants_fair ON floodgate_lane_tenants"
        ' (lane, vtime, tenant COLLATE "C") WHERE n > 0',
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)

#: the columns of a job, in the order :func:`decode` reads them (the SQLite order)
COLUMNS = (
    "seq, id, task, lane, args, priority, state, attempts, max_attempts, run_at, created_at,"
    " updated_at, key, lease_owner, lease_until, result, error, traceback, deadline_at, cost,"
    " cancel_requested_at, rank, tenant, trace"
)

# Sends one NOTIFY per lane of ``rows`` (a CTE with ``lane`` and ``run_at``) that has a job
# due by ``now``; the count consumes the volatile pg_notify() calls so none is planned away.
# NOTIFY is transactional: listeners hear it once the statement has committed.
_NOTIFY = """(SELECT count(pg_notify({channel}, l.lane)::text) FROM
    (SELECT DISTINCT lane FROM {rows} WHERE run_at <= {now}) l)"""

# Params: ids, tasks, lanes, args, priorities, max_attempts, run_ats, keys, deadlines, nows,
# costs (arrays, one element per job, in order), channel, ranks, tenants, traces (arrays).
# Returns the ids actually inserted: a job whose key is already stored is skipped (ON CONFLICT
# DO NOTHING) and looked up by key after.
# ``seq`` is drawn in submission order (the FIFO tie-break), then rows go in by key, so two
# batches sharing keys wait for each other's keys in one global order and cannot deadlock.
SUBMIT = f"""
    WITH input AS (
        SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::float8[],
                             $6::int4[], $7::float8[], $8::text[], $9::float8[], $10::float8[],
                             $11::float8[], $13::float8[], $14::text[], $15::text[])
            WITH ORDINALITY AS t(id, task, lane, args, priority, max_attempts, run_at, key,
                                 deadline_at, now, cost, rank, tenant, trace, ord)
    ), numbered AS (
        SELECT input.*, nextval('floodgate_jobs_seq') AS seq FROM input ORDER BY ord
    ), ins AS (
        INSERT INTO floodgate_jobs (seq, id, task, lane, args, priority, state, attempts,
                                    max_attempts, run_at, created_at, updated_at, key,
                                    deadline_at, cost, rank, tenant, trace)
        OVERRIDING SYSTEM VALUE
        SELECT seq, id, task, lane, args, priority, 'queued', 0, max_attempts, run_at, now,
               now, key, deadline_at, cost, rank, tenant, trace
          FROM numbered ORDER BY key COLLATE "C" NULLS LAST, seq
        ON CONFLICT (key) WHERE key IS NOT NULL DO NOTHING
        RETURNING id, lane, run_at, created_at
    )
    SELECT ins.id, n.sent
      FROM ins, {_NOTIFY.format(channel="$12", rows="ins", now="created_at")} AS n(sent)"""

#: SQLSTATEs after which a statement that changed nothing may simply run again
RETRY_CODES = frozenset({"40P01", "40001"})  # deadlock_detected, serialization_failure

SELECT_BY_KEYS = f"SELECT {COLUMNS} FROM floodgate_jobs WHERE key = ANY($1::text[])"

# Params: lane, limit, owner, lease_until, now, max_running (or NULL), LOST_FORMAT,
# CANCELLED_ERROR.
CLAIM = f"SELECT {COLUMNS} FROM floodgate_claim($1, $2, $3, $4, $5, $6, $7, $8)"

# Params: lane, owner, the lost claim's now and lease_until, channel, now. A claim whose answer
# was lost with the connection may have committed: give back exactly the jobs it took (the
# owner never heard of them, so never heartbeated them) and the attempt it spent.
RELEASE_UNHEARD = f"""
    WITH upd AS (
        UPDATE floodgate_jobs
           SET state = CASE WHEN cancel_requested_at IS NULL THEN 'queued' ELSE 'cancelled' END,
               attempts = greatest(attempts - 1, 0), lease_owner = NULL,
               lease_until = NULL, updated_at = $6
         WHERE lane = $1 AND state = 'running' AND lease_owner = $2 AND updated_at = $3
           AND lease_until = $4
        RETURNING lane, run_at
    )
    SELECT (SELECT count(*) FROM upd), {_NOTIFY.format(channel="$5", rows="upd", now="$6")}"""

# Params: seqs, errors (arrays), now. A corrupt row the claim took goes DEAD.
KILL_CORRUPT = """
    UPDATE floodgate_jobs j SET state = 'dead', error = c.error, lease_owner = NULL,
        lease_until = NULL, updated_at = $3
      FROM unnest($1::int8[], $2::text[]) AS c(seq, error)
     WHERE j.seq = c.seq"""

# Params: lease_until, ids, owner.
HEARTBEAT = """
    UPDATE floodgate_jobs SET lease_until = $1
     WHERE id = ANY($2::text[]) AND state = 'running' AND lease_owner = $3"""

# Params: ids, owners, states, results, errors, tracebacks, run_ats (NULL keeps run_at),
# attempts (NULL: any attempt) as arrays; now; channel. Of several outcomes for one job, the
# first whose lease is still held applies (as if applied one by one, in order).
COMPLETE = f"""
    WITH o AS (
        SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                             $6::text[], $7::float8[], $8::int4[])
            WITH ORDINALITY AS t(id, owner, state, result, error, traceback, run_at, attempt,
                                 ord)
    ), pick AS (
        SELECT DISTINCT ON (j.seq) j.seq, o.owner, o.state, o.result, o.error, o.traceback,
               o.run_at, o.attempt
          FROM o JOIN floodgate_jobs j ON j.id = o.id
         WHERE j.state = 'running' AND j.lease_owner = o.owner
           AND (o.attempt IS NULL OR j.attempts = o.attempt)
         ORDER BY j.seq, o.ord
    ), upd AS (
        UPDATE floodgate_jobs j
           SET state = CASE WHEN p.state = 'queued' AND j.cancel_requested_at IS NOT NULL
                            THEN 'cancelled' ELSE p.state END,
               result = p.result, error = p.error, traceback = p.traceback,
               run_at = COALESCE(p.run_at, j.run_at), lease_owner = NULL, lease_until = NULL,
               updated_at = $9
          FROM pick p
         WHERE j.seq = p.seq AND j.state = 'running' AND j.lease_owner = p.owner
           AND (p.attempt IS NULL OR j.attempts = p.attempt)
        RETURNING j.lane, j.state, j.run_at
    ), due AS (
        SELECT lane, run_at FROM upd WHERE state = 'queued'
    )
    SELECT (SELECT count(*) FROM upd), {_NOTIFY.format(channel="$10", rows="due", now="$9")}"""

# Params: now, ids, owner, channel, error of a cancelled job. A job whose cancel was
# requested ends CANCELLED instead of going back to the queue.
RELEASE = f"""
    WITH upd AS (
        UPDATE floodgate_jobs
           SET state = CASE WHEN cancel_requested_at IS NULL THEN 'queued' ELSE 'cancelled' END,
               error = CASE WHEN cancel_requested_at IS NULL THEN error ELSE $5 END,
               attempts = greatest(attempts - 1, 0), lease_owner = NULL,
               lease_until = NULL, updated_at = $1
         WHERE id = ANY($2::text[]) AND state = 'running' AND lease_owner = $3
        RETURNING lane, run_at
    )
    SELECT (SELECT count(*) FROM upd), {_NOTIFY.format(channel="$4", rows="upd", now="$1")}"""

_REQUEUE = """
    WITH upd AS (
        UPDATE floodgate_jobs
           SET state = 'queued', attempts = 0, run_at = $1, lease_owner = NULL,
               lease_until = NULL, updated_at = $1, cancel_requested_at = NULL
         WHERE {where} AND (${lane}::text IS NULL OR lane = ${lane})
        RETURNING lane, run_at
    )
    SELECT (SELECT count(*) FROM upd), {notify}"""
# Params: now, job id, lane (or NULL), channel. Also revives a row whose state is unreadable.
REQUEUE_ONE = _REQUEUE.format(
    where="id = $2 AND state NOT IN ('queued', 'running', 'done', 'cancelled')",
    lane=3,
    notify=_NOTIFY.format(channel="$4", rows="upd", now="$1"),
)
# Params: now, lane (or NULL), channel.
REQUEUE_DEAD = _REQUEUE.format(
    where="state = 'dead'", lane=2, notify=_NOTIFY.format(channel="$3", rows="upd", now="$1")
)

# Params: finished_before, chunk.
PURGE = """
    DELETE FROM floodgate_jobs WHERE seq IN (
        SELECT seq FROM floodgate_jobs WHERE state IN ('done', 'cancelled') AND updated_at < $1
         LIMIT $2 FOR UPDATE SKIP LOCKED)"""

# Cancellation. Params: id. Locks the row: a claim holding it is waited for (then the job is
# RUNNING); a claim after it skips it (SKIP LOCKED) and finds it CANCELLED once we commit.
CANCEL_LOCK = "SELECT state FROM floodgate_jobs WHERE id = $1 FOR UPDATE"
# Params: id, now, error, cancel channel. Sends the id on the cancel channel for a running job.
CANCEL = """
    WITH upd AS (
        UPDATE floodgate_jobs
           SET state = CASE state WHEN 'queued' THEN 'cancelled' ELSE state END,
               error = CASE state WHEN 'queued' THEN $3 ELSE error END,
               updated_at = CASE state WHEN 'queued' THEN $2 ELSE updated_at END,
               cancel_requested_at = CASE state WHEN 'running'
                                     THEN coalesce(cancel_requested_at, $2) END
         WHERE id = $1 AND state IN ('queued', 'running')
        RETURNING id, state
    )
    SELECT count(pg_notify($4, id)) FROM upd WHERE state = 'running'"""
# Params: task, now, error, cancel channel, tenant (a NULL task or tenant matches any). Jobs
# claimed at this very moment may be missed (the claim holds their rows): run it again to
# catch them.
CANCEL_TASK = """
    WITH q AS (
        UPDATE floodgate_jobs SET state = 'cancelled', error = $3, updated_at = $2
         WHERE ($1::text IS NULL OR task = $1) AND ($5::text IS NULL OR tenant = $5)
           AND state = 'queued'
        RETURNING id
    ), r AS (
        UPDATE floodgate_jobs SET cancel_requested_at = $2
         WHERE ($1::text IS NULL OR task = $1) AND ($5::text IS NULL OR tenant = $5)
           AND state = 'running' AND cancel_requested_at IS NULL
        RETURNING id
    )
    SELECT (SELECT count(*) FROM q) + (SELECT count(*) FROM r),
           (SELECT count(pg_notify($4, id)) FROM r)"""
# Params: ids.
CANCEL_REQUESTED = """
    SELECT id FROM floodgate_jobs
     WHERE id = ANY($1::text[]) AND state = 'running' AND cancel_requested_at IS NOT NULL"""
# Params: lane. The lane's QUEUED count (migration 3's triggers keep it); no row: none.
QUEUED_COUNT = "SELECT n FROM floodgate_lane_queued WHERE lane = $1"

# Fair claims (see _fair), in one transaction under the lane's advisory lock.
# Params: lane. Whether any QUEUED job of the lane names a tenant (a fair claim, then).
FAIR_ANY = """
    SELECT EXISTS (SELECT 1 FROM floodgate_lane_tenants
                    WHERE lane = $1 AND n > 0 AND tenant <> '')"""
FAIR_LOCK = """
    SELECT pg_advisory_xact_lock(hashtext('floodgate.lane:' || current_schema()), hashtext($1))"""
# Params: lane. The lane's virtual clock, whether it has queued jobs without a tenant, the
# tenant-less flow's virtual time (NULL: no row) and how many queued tenants' times behind
# the clock were raised to it (tenants new to the lane, or passed over: the clock only
# moves on, so their start tags stay the same, and (vtime, tenant) becomes the fair order).
FAIR_CLOCK = """
    WITH c AS (
        SELECT coalesce((SELECT vclock FROM floodgate_lane_queued WHERE lane = $1), 0) AS v
    ), lifted AS (
        UPDATE floodgate_lane_tenants SET vtime = (SELECT v FROM c)
         WHERE lane = $1 AND n > 0 AND vtime < (SELECT v FROM c)
        RETURNING 1
    )
    SELECT c.v,
           EXISTS (SELECT 1 FROM floodgate_jobs
                    WHERE lane = $1 AND state = 'queued' AND tenant IS NULL),
           (SELECT vtime FROM floodgate_lane_tenants WHERE lane = $1 AND tenant = ''),
           (SELECT count(*) FROM lifted)
      FROM c"""
# Params: lane, vtime, tenant, n: the next ``n`` queued tenants after (vtime, tenant) in
# fair order (floodgate_lane_tenants_fair): (tenant, QUEUED count, virtual time).
FAIR_PAGE = """
    SELECT tenant, n, vtime FROM floodgate_lane_tenants
     WHERE lane = $1 AND n > 0 AND (vtime, tenant COLLATE "C") > ($2::float8, $3::text)
       AND tenant <> ''
     ORDER BY vtime, tenant COLLATE "C" LIMIT $4"""
# Params: lane, now, owner: live leases of other owners (the lane's fleet-wide ceiling).
FAIR_LIVE = """
    SELECT count(*) FROM floodgate_jobs
     WHERE lane = $1 AND state = 'running' AND lease_until > $2 AND lease_owner <> $3"""
# Params: lane, now: live leases per named tenant (Tenants.max_in_flight).
FAIR_RUNNING = """
    SELECT tenant, count(*) FROM floodgate_jobs
     WHERE lane = $1 AND state = 'running' AND lease_until > $2 AND tenant IS NOT NULL
     GROUP BY tenant"""
_FAIR_LEASE = f"""
    UPDATE floodgate_jobs j
       SET state = 'running', attempts = j.attempts + 1, lease_owner = $2,
           lease_until = $3, updated_at = $4
      FROM ({{pick}}) c WHERE j.seq = c.seq
    RETURNING {", ".join("j." + c.strip() for c in COLUMNS.split(","))}"""
# Params: lane, owner, lease_until, now, n: expired leases of any tenant.
FAIR_LOST = _FAIR_LEASE.format(
    pick="""SELECT seq FROM floodgate_jobs
             WHERE lane = $1 AND state = 'running' AND lease_until <= $4
             ORDER BY rank, run_at, seq LIMIT $5 FOR UPDATE SKIP LOCKED"""
)
# Params: lane, owner, lease_until, now, n: the tenant-less flow's next due jobs.
FAIR_NONE = _FAIR_LEASE.format(
    pick="""SELECT seq FROM floodgate_jobs
             WHERE lane = $1 AND state = 'queued' AND tenant IS NULL AND run_at <= $4
             ORDER BY rank, run_at, seq LIMIT $5 FOR UPDATE SKIP LOCKED"""
)
# Params: lane, owner, lease_until, now, n, tenant: one tenant's next due jobs.
FAIR_TENANT = _FAIR_LEASE.format(
    pick="""SELECT seq FROM floodgate_jobs
             WHERE lane = $1 AND tenant = $6 AND state = 'queued' AND run_at <= $4
             ORDER BY rank, run_at, seq LIMIT $5 FOR UPDATE SKIP LOCKED"""
)
# Params: lane, tenants, vtimes (arrays), vclock: store the served flows' virtual times
# and the lane's clock. A served tenant with nothing queued left has no row (the count
# trigger dropped it) and gets none back: it returns at the lane's clock.
FAIR_STORE = """
    WITH u AS (
        SELECT * FROM unnest($2::text[], $3::float8[]) AS u(tenant, vtime)
    ), upd AS (
        UPDATE floodgate_lane_tenants c SET vtime = u.vtime FROM u
         WHERE c.lane = $1 AND c.tenant = u.tenant AND (c.n > 0 OR c.tenant = '')
        RETURNING c.tenant
    ), ins AS (
        INSERT INTO floodgate_lane_tenants (lane, tenant, vtime)
        SELECT $1, '', u.vtime FROM u WHERE u.tenant = ''
        ON CONFLICT (lane, tenant) DO NOTHING
    )
    UPDATE floodgate_lane_queued SET vclock = $4 WHERE lane = $1"""
# Params: lane, limit: the tenants with most QUEUED jobs.
TOP_TENANTS = """
    SELECT tenant, n FROM floodgate_lane_tenants WHERE lane = $1 AND n > 0 AND tenant <> ''
     ORDER BY n DESC, tenant LIMIT $2"""
# Params: lanes, tenants (arrays, pairs sorted): locks the pairs' counter rows (created if
# missing) and answers their counts, as LOCK_LANES does for lanes.
LOCK_TENANTS = """
    INSERT INTO floodgate_lane_tenants AS c (lane, tenant, n)
    SELECT l, t, 0 FROM unnest($1::text[], $2::text[]) AS u(l, t) ORDER BY l, t
    ON CONFLICT (lane, tenant) DO UPDATE SET n = c.n
    RETURNING lane, tenant, n"""

# Params: lanes. Locks the lanes' counter rows (created if missing) in lane order, the order
# the count trigger takes them in, and answers their counts: until the submit's transaction
# ends, no other transaction can change these lanes' QUEUED counts.
LOCK_LANES = """
    INSERT INTO floodgate_lane_queued AS c (lane, n)
    SELECT l, 0 FROM unnest($1::text[]) AS l ORDER BY l
    ON CONFLICT (lane) DO UPDATE SET n = c.n
    RETURNING lane, n"""

# The advisory lock an owner holds for its life: (floodgate.owner:<schema>, owner).
# Params: owner.
OWNER_LOCK = """
    SELECT pg_try_advisory_lock(hashtext('floodgate.owner:' || current_schema()), hashtext($1))"""
# Params: owner, now.
REGISTER_OWNER = """
    INSERT INTO floodgate_owners (owner, registered_at) VALUES ($1, $2)
    ON CONFLICT (owner) DO UPDATE SET registered_at = EXCLUDED.registered_at"""
# Params: owners.
DELETE_OWNERS = "DELETE FROM floodgate_owners WHERE owner = ANY($1::text[])"
# Params: lane (NULL: every registered owner), owner (the caller), now.
RECLAIM_DEAD = "SELECT dead_owner, ended FROM floodgate_reclaim_dead($1, $2, $3)"
COUNTS = "SELECT lane, state, count(*) FROM floodgate_jobs GROUP BY lane, state"
GET = f"SELECT {COLUMNS} FROM floodgate_jobs WHERE id = $1"


def list_query(state: bool, lane: bool) -> str:
    """``list_jobs``: params state (if ``state``), lane (if ``lane``), limit, offset."""
    where, n = ["TRUE"], 0
    for column, wanted in (("state", state), ("lane", lane)):
        if wanted:
            n += 1
            where.append(f"{column} = ${n}")
    return (
        f"SELECT {COLUMNS} FROM floodgate_jobs WHERE {' AND '.join(where)}"
        f" ORDER BY seq LIMIT ${n + 1} OFFSET ${n + 2}"
    )


def check_schema(schema: str) -> str:
    """``schema`` if it is a plain lower-case identifier, else ``ConfigError``."""
    if not isinstance(schema, str) or not SCHEMA_RE.fullmatch(schema):
        raise ConfigError(
            f"schema must match {SCHEMA_RE.pattern} (lower-case letters, digits, _), got {schema!r}"
        )
    return schema


def create_schema(schema: str) -> str:
    """``CREATE SCHEMA IF NOT EXISTS`` for a name :func:`check_schema` accepts."""
    return f'CREATE SCHEMA IF NOT EXISTS "{check_schema(schema)}"'


def channel_for(schema: str, prefix: str = "floodgate") -> str:
    """The LISTEN/NOTIFY channel of the backlog in ``schema`` (under 64 bytes); the
    ``floodgate-cancel`` prefix names its channel of cancel requests."""
    channel = f"{prefix}:{schema}"
    if len(channel.encode()) < 64:
        return channel
    return f"{prefix}:" + hashlib.sha256(schema.encode()).hexdigest()[:32]


def decode(row: Sequence[Any]) -> tuple[int, JobRecord, str | None]:
    """``(seq, record, problem)`` as for SQLite; a NaN priority, run_at or cost is corrupt too
    (PostgreSQL's typed columns cannot hold text where a number belongs, but NaN can be
    written behind our back, and ``submit`` refuses it)."""
    values = list(row)
    for i in (5, 9, 19):  # priority, run_at, cost
        if isinstance(values[i], float) and math.isnan(values[i]):
            values[i] = "NaN"  # decoded as "not a number: 'NaN'"
    return _decode_row(values)


def status_count(status: str) -> int:
    """The row count of a command status such as ``"UPDATE 3"``."""
    try:
        return int(status.rsplit(" ", 1)[-1])
    except ValueError:
        return 0


# -- errors ------------------------------------------------------------------------

#: SQLSTATE classes and codes meaning "the database is not reachable right now"
_UNAVAILABLE_CLASSES = ("08",)  # connection exception
_UNAVAILABLE_CODES = frozenset(
    {
        "57P01",  # admin_shutdown (pg_terminate_backend, server stopping)
        "57P02",  # crash_shutdown
        "57P03",  # cannot_connect_now (starting up, recovering)
        "57P04",  # database_dropped
        "53300",  # too_many_connections
        "25006",  # read_only_sql_transaction (a standby, e.g. mid-failover)
    }
)
_FULL_CODES = frozenset({"53100", "54000"})  # disk_full, program_limit_exceeded


def translate_error(exc: BaseException, where: str, *, unreachable: bool) -> BacklogError:
    """The Floodgate error for a database error, naming the backlog (never its password).

    ``unreachable``: the caller saw a socket, timeout or closed-connection error
    (asyncpg's ``InterfaceError`` family) rather than an answer from the server.
    """
    text = f"{type(exc).__name__}: {exc}".strip()
    code = str(getattr(exc, "sqlstate", "") or "")
    if unreachable:
        return BacklogUnavailable(f"backlog {where} is unreachable ({text}); retry later")
    if code.startswith(_UNAVAILABLE_CLASSES) or code in _UNAVAILABLE_CODES:
        return BacklogUnavailable(f"backlog {where} lost its connection ({text}); retry later")
    if code in _FULL_CODES:
        return BacklogFull(f"backlog {where}: disk or database full ({text}); nothing stored")
    return BacklogError(f"backlog {where}: {text}")
