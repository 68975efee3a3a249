"""Floodgate's benchmarks.

They need the ``bench`` extra (the peers they measure against):
``.venv/bin/pip install -e '.[bench]'``. Run them from the repository root::

    .venv/bin/python -m benchmarks                # every benchmark, full size
    .venv/bin/python -m benchmarks --quick        # a smoke run
    .venv/bin/python -m benchmarks --only head_of_line
    .venv/bin/python -m benchmarks --record       # full size, into benchmarks/results/

or one alone: ``python -m benchmarks.overhead``, ``python -m benchmarks.head_of_line``,
``python -m benchmarks.durable``.
Each writes ``<name>.md`` to ``benchmarks/out/`` (untracked; ``--record`` writes the
tracked ``benchmarks/results/`` the README quotes): absolute figures for Floodgate
and its baseline, their ratio, the target, the verdict and the machine.

Verdicts: PASS/FAIL against the targets on a full run (exit status 1 on a FAIL);
SMOKE on a ``--quick`` run, which only checks that everything runs (exit status 1
only if a benchmark crashed or broke an invariant, e.g. lost jobs); SKIPPED when a
benchmark cannot run here (postgres without a server).

- ``overhead``: no-op jobs through ``Scheduler.call`` vs a bare ``asyncio.Semaphore(16)``.
- ``head_of_line``: interactive start latency behind a 5,000-job batch backlog,
  Floodgate's lanes vs one FIFO ``asyncio.Queue`` with 16 workers.
- ``durable``: durable submit and drain throughput on SQLite vs huey and
  persist-queue on the same disk, and a worker's RSS with 1,000,000 queued jobs.
- ``postgres``: drain throughput of the PostgreSQL backlog with 1, 2 and 4 worker
  processes vs procrastinate on the same server (about 3.5 minutes; the server
  ``FLOODGATE_TEST_POSTGRES_DSN`` names, else ``postgresql://postgres@127.0.0.1:5432/test``
  if it answers; SKIPPED without one).
- ``tenants``: nine small tenants' jobs behind one tenant's 100,000 (fair queuing vs
  one FIFO queue) and the cost per job of fairness.
- ``tenants_durable``: the same on a durable lane with the defaults (SQLite file,
  the ``batch`` lane, ``submit_many(..., tenant=)``), and the drain's cost per job
  over 10 and 1,000 tenants; ``tenants_postgres``: the same on PostgreSQL (SKIPPED
  without a server).
- ``fleet``: 1, 2, 4 and 8 worker processes sharing one upstream that allows R req/s
  (aggregate goodput as a share of R), the cost of sharing per request, and how fast a
  pause reaches another process (p50/p99; PostgreSQL too when the DSN is set).
"""
