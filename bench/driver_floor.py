"""The database driver's share of a ListAuditEntries call (issue #22): the client CPU of the
first page's transaction as the Logs service runs it, against other ways of running it.

    PYTHONPATH=.:gen:bench .venv/bin/python bench/driver_floor.py [--entries 20000] [--calls 300] [--repeat 5]

One thread, one connection as the Logs login (row-level security on), the page's exact SQL
(aos_evidence.queries.AUDIT_SELECT, first page of 51 rows) and the ledger's size, in one
transaction with the tenant scope and generic plans (aos_runtime.db._HOT_SCOPE). Client CPU
(``time.process_time``) per transaction, best of --repeat rounds:

- ``service``: ``Database.run(store.list_audit_entries)`` as the handler calls it (SQLAlchemy's
  pool and transaction, psycopg's pipeline mode, dict rows, the thread hand-off), one call at a
  time and 8 at once (as h2load's 8 clients: the figure per call);
- ``psycopg pipeline``: the same statements on a bare psycopg connection, pipelined, dict rows;
- ``psycopg binary``: the same with results in binary format;
- ``asyncpg``: the same statements through asyncpg (prepared, binary, Cython decoding) on an
  event loop, no thread — only when asyncpg is installed (it is not in requirements.lock:
  ``pip install asyncpg`` to measure it).

The page's rows are compared between the ways (the same values), so each way reads the same.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import time

import psycopg
from psycopg.rows import dict_row

from aos_evidence.queries import AUDIT_SELECT
from aos_recording import bulk
from aos_runtime.db import _HOT_SCOPE, Database, _driver_sql, libpq_url
from scratch import scratch_database, service_logins
from services.logs import store

# What a page of stored wire forms would read instead (issue #22's "a column" option, not built):
# the same rows, walked the same way, but per row only its id, times and ~600 bytes of encoding
# (here a stand-in of that size) instead of 27 columns to decode.
STORED_PAGE = ("SELECT a.id, a.created_at, a.recorded_at, decode(repeat('ab', 600), 'hex') AS wire FROM audit_ledger a "
               "WHERE a.tenant_id = :tenant ORDER BY a.created_at DESC, a.id DESC LIMIT :limit")
PAGE = AUDIT_SELECT.format(extra="") + " WHERE a.tenant_id = :tenant ORDER BY a.created_at DESC, a.id DESC LIMIT :limit"


def best_ms(work, calls: int, repeat: int) -> float:
    rounds = []
    for _ in range(repeat):
        started = time.process_time()
        for _ in range(calls):
            work()
        rounds.append((time.process_time() - started) / calls * 1000)
    return round(min(rounds), 4)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entries", type=int, default=20_000)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    load = [round(x, 2) for x in os.getloadavg()]
    with scratch_database(prefix="aos-bench-driver-") as (url, work):
        bulk.load(url, bulk.Volume(tenants=1, ledger=args.entries, traces=0, steps=0, system=0))
        (tenant,) = bulk.tenant_ids(1)
        logs_url = service_logins(url, work / "aos")["logs"]
        scope = {"tenant": tenant, "timeout": "30000"}
        params = {"tenant": tenant, "limit": 51}
        figures: dict[str, float] = {}
        pages: dict[str, list] = {}

        db = Database(logs_url, service="logs")
        loop = asyncio.new_event_loop()
        filters = store.AuditFilters()

        def service() -> None:
            pages["service"] = loop.run_until_complete(
                db.run(tenant, store.list_audit_entries, tenant, filters, None, 50)).rows

        def in_flight() -> None:
            # 8 calls at once, as under h2load's 8 clients (the figure is per call).
            async def eight() -> None:
                await asyncio.gather(*(db.run(tenant, store.list_audit_entries, tenant, filters, None, 50)
                                       for _ in range(8)))
            loop.run_until_complete(eight())

        try:
            service()
            in_flight()
            figures["service: Database.run(list_audit_entries) (pool, pipeline, dict rows, thread hand-off)"] = \
                best_ms(service, args.calls, args.repeat)
            figures["service, 8 calls in flight, per call"] = \
                round(best_ms(in_flight, max(1, args.calls // 8), args.repeat) / 8, 4)
        finally:
            loop.run_until_complete(db.close())
            loop.close()

        for binary, page in ((False, PAGE), (True, PAGE), (True, STORED_PAGE)):
            with psycopg.connect(libpq_url(logs_url), options="-c default_transaction_read_only=on") as conn:
                def bare(conn=conn, binary=binary, page=page) -> None:
                    with conn.pipeline(), conn.cursor() as setup, \
                            conn.cursor(row_factory=dict_row, binary=binary) as rows, conn.cursor() as size:
                        setup.execute(_driver_sql(_HOT_SCOPE), scope)
                        rows.execute(_driver_sql(page), params)
                        size.execute(_driver_sql(store.LEDGER_SIZE), {"t": tenant})
                        found = rows.fetchall()
                        if page is PAGE:
                            pages["psycopg binary" if binary else "psycopg"] = found
                        size.fetchone()
                        conn.commit()

                bare()
                what = ("psycopg alone, pipelined, dict rows" if page is PAGE else
                        "psycopg alone, pipelined, a page of stored forms (id, two times, 600 bytes)")
                figures[f"{what}{', binary results' if binary else ''}"] = best_ms(bare, args.calls, args.repeat)
        try:
            import asyncpg  # type: ignore[import-not-found, import-untyped, unused-ignore]
        except ImportError:
            asyncpg = None
        if asyncpg is not None:
            async def run_asyncpg() -> float:
                conn = await asyncpg.connect(libpq_url(logs_url), server_settings={
                    "default_transaction_read_only": "on"})
                # jsonb parsed as psycopg does, so that the rows compare.
                await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
                page_sql = PAGE.replace(":tenant", "$1").replace(":limit", "$2")
                size_sql = store.LEDGER_SIZE.replace(":t", "$1")
                scope_sql = ("SELECT set_config('aos.tenant_id', $1, true), set_config('statement_timeout', $2, true),"
                             " set_config('plan_cache_mode', 'force_generic_plan', true)")

                async def once() -> None:
                    async with conn.transaction():
                        await conn.fetchrow(scope_sql, tenant, "30000")
                        pages["asyncpg"] = [dict(r) for r in await conn.fetch(page_sql, tenant, 51)]
                        await conn.fetchval(size_sql, tenant)

                await once()
                rounds = []
                for _ in range(args.repeat):
                    started = time.process_time()
                    for _ in range(args.calls):
                        await once()
                    rounds.append((time.process_time() - started) / args.calls * 1000)
                await conn.close()
                return round(min(rounds), 4)

            figures["asyncpg on the event loop (prepared, binary), dict rows"] = asyncio.run(run_asyncpg())
    first = pages["service"]  # the page as the service cuts it (50 rows, the 51st only tells has_more)

    def comparable(rows: list) -> list[dict]:
        return [{k: row[k] for k in first[0]} for row in rows[:len(first)]]
    same = {name: comparable(rows) == comparable(first) for name, rows in pages.items()}
    print(json.dumps({"workload": f"first ListAuditEntries page (51 rows) + ledger size in one transaction, "
                                  f"tenant of {args.entries} entries, one thread, best of {args.repeat} x "
                                  f"{args.calls}", "load_average_before": load,
                      "load_average_after": [round(x, 2) for x in os.getloadavg()],
                      "client_cpu_ms_per_transaction": figures, "same_rows_as_the_service": same}, indent=2))


if __name__ == "__main__":
    main()
