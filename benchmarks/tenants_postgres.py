"""Tenants on a durable lane on PostgreSQL: ``tenants_durable``'s figures (nine small
tenants behind one tenant's flood of 100,000 queued jobs; the cost per job of
fairness over 10 and 1,000 tenants) with ``Scheduler("postgresql://...")``.

Each run gets a fresh schema (named in the DSN's ``search_path``, as a
deployment would), dropped afterwards. Uses ``FLOODGATE_TEST_POSTGRES_DSN``, else
``postgresql://postgres@127.0.0.1:5432/test`` if it answers; without either it is
SKIPPED (no report written).

Run alone: ``python -m benchmarks.tenants_postgres [--quick] [--repeat K]``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from ._common import Options, Outcome, main, postgres_dsn, progress
from .postgres import _checked, _schema_name, _sql, _with_query
from .tenants_durable import Backend, run_on

NAME = "tenants_postgres"


def backend(dsn: str, source: str) -> Backend:
    """Fresh schemas on the server ``dsn`` names."""

    @contextlib.asynccontextmanager
    async def fresh() -> AsyncIterator[str]:
        schema = _checked(_schema_name())
        await _sql(dsn, f'CREATE SCHEMA "{schema}"')
        try:
            yield _with_query(dsn, search_path=schema, application_name="floodgate-bench-tenants")
        finally:
            await _sql(dsn, f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')

    return Backend(
        NAME,
        "PostgreSQL",
        fresh,
        f"`Scheduler(dsn)` on PostgreSQL ({source}): a fresh schema per run, named in the "
        "DSN's `search_path`, dropped afterwards; one scheduler process",
    )


def run(options: Options) -> Outcome:
    dsn, source = postgres_dsn()
    if dsn is None:
        progress(f"{NAME}: SKIPPED: {source}")
        return Outcome(NAME, False, "", None, skipped=source)
    return run_on(backend(dsn, source), options)


if __name__ == "__main__":
    raise SystemExit(main(NAME, __doc__, run))
