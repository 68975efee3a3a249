"""Floodgate's benchmarks.

Run them all from the repository root (about four minutes on two cores)::

    python -m benchmarks            # every benchmark, full size
    python -m benchmarks --quick    # a short smoke run
    python -m benchmarks --only head_of_line

or one alone: ``python -m benchmarks.overhead``, ``python -m benchmarks.head_of_line``,
``python -m benchmarks.durable``.
Each writes ``benchmarks/results/<name>.md``: absolute figures for Floodgate and
its baseline, their ratio, the target, PASS/FAIL and the machine. The exit status
is 1 when a benchmark misses its target.

- ``overhead``: no-op jobs through ``Scheduler.call`` vs a bare ``asyncio.Semaphore(16)``.
- ``head_of_line``: interactive start latency behind a 5,000-job batch backlog,
  Floodgate's lanes vs one FIFO ``asyncio.Queue`` with 16 workers.
- ``durable``: durable submit and drain throughput on SQLite vs huey and
  persist-queue on the same disk, and a worker's RSS with 1,000,000 queued jobs.
- ``postgres``: drain throughput of the PostgreSQL backlog with 1, 2 and 4 worker
  processes vs procrastinate on the same server (about 3.5 minutes; needs
  ``FLOODGATE_TEST_POSTGRES_DSN``, skipped without it).
- ``fleet``: 1, 2, 4 and 8 worker processes sharing one upstream that allows R req/s
  (aggregate goodput as a share of R), the cost of sharing per request, and how fast a
  pause reaches another process (p50/p99; PostgreSQL too when the DSN is set).
"""
