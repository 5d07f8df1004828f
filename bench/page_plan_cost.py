"""What PostgreSQL spends on one ListAuditEntries page, by plan cache mode (issue #22).

    .venv/bin/python bench/page_plan_cost.py [--entries 20000] [--executions 300]

A scratch database with one tenant of --entries ledger entries (the ledger is partitioned by
month: bulk-loaded entries span the months before now, plus the months ahead and the default
partition). Over the Logs service's own login, in the tenant's scope: EXPLAIN ANALYZE of the
page's SQL (planning and execution time of one custom plan), then the backend's CPU per
execution (/proc/<backend>/stat, user + system) of the prepared page query under each
``plan_cache_mode``, of the ledger's size, and of an empty transaction that only sets the scope.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import psycopg

from aos_evidence.queries import AUDIT_SELECT
from aos_recording import bulk
from aos_recording.driver import driver_sql as _driver_sql
from aos_runtime.db import libpq_url
from aos_runtime.keyset import NEWEST_FIRST
from scratch import scratch_database, service_logins
from services.logs import store


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entries", type=int, default=20_000)
    parser.add_argument("--executions", type=int, default=300)
    parser.add_argument("--deep-page", type=int, default=200, help="also the keyset page this deep (50 per page)")
    args = parser.parse_args()
    load = [round(x, 2) for x in os.getloadavg()]
    out: dict = {}
    with scratch_database(prefix="aos-bench-plan-") as (url, work):
        bulk.load(url, bulk.Volume(tenants=1, ledger=args.entries, traces=0, steps=0, system=0))
        (tenant,) = bulk.tenant_ids(1)
        logs = service_logins(url, work / "aos")["logs"]
        with psycopg.connect(libpq_url(url)) as admin:
            out["ledger_partitions"] = admin.execute(
                "SELECT count(*) FROM pg_inherits WHERE inhparent = 'audit_ledger'::regclass").fetchone()[0]
        clauses, params = store.AuditFilters().where()
        page = _driver_sql(AUDIT_SELECT.format(extra="") +
                           f" WHERE {clauses} ORDER BY a.created_at DESC, a.id DESC LIMIT :limit")
        values = {**params, "tenant": tenant, "limit": 51}
        with psycopg.connect(libpq_url(logs)) as conn:
            pid = conn.info.backend_pid

            def cpu_s() -> float:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

            def per_execution_ms(run) -> float:
                for _ in range(10):
                    run()
                before = cpu_s()
                for _ in range(args.executions):
                    run()
                return round((cpu_s() - before) / args.executions * 1000, 3)

            conn.execute("SELECT set_config('aos.tenant_id', %s, false)", (tenant,))
            plan = conn.execute("EXPLAIN (ANALYZE, SUMMARY, FORMAT JSON) " + page, values).fetchone()[0][0]
            out["one_custom_plan_ms"] = {"planning": plan["Planning Time"], "execution": plan["Execution Time"]}
            cursor = conn.cursor()
            by_mode = {}
            for mode in ("auto", "force_custom_plan", "force_generic_plan"):
                conn.execute(f"SET plan_cache_mode = {mode}")
                by_mode[mode] = per_execution_ms(lambda: cursor.execute(page, values, prepare=True).fetchall())
                conn.execute("DEALLOCATE ALL")
            out["page_backend_cpu_ms_per_execution"] = by_mode
            # The deep page: the same query past a position (the keyset clause), as a page token reads it.
            at, ident = conn.execute("SELECT created_at, id FROM audit_ledger ORDER BY created_at DESC, id DESC "
                                     "OFFSET %s LIMIT 1", (args.deep_page * 50,)).fetchone()
            deep = _driver_sql(AUDIT_SELECT.format(extra="") + f" WHERE {clauses} AND {NEWEST_FIRST}"
                               " ORDER BY a.created_at DESC, a.id DESC LIMIT :limit")
            deep_values = {**values, "after_at": at, "after_id": ident}
            by_mode = {}
            for mode in ("auto", "force_custom_plan", "force_generic_plan"):
                conn.execute(f"SET plan_cache_mode = {mode}")
                by_mode[mode] = per_execution_ms(lambda: cursor.execute(deep, deep_values, prepare=True).fetchall())
                conn.execute("DEALLOCATE ALL")
            out[f"page_{args.deep_page}_backend_cpu_ms_per_execution"] = by_mode
            conn.execute("SET plan_cache_mode = auto")
            size = _driver_sql(store.LEDGER_SIZE)
            out["ledger_size_backend_cpu_ms"] = per_execution_ms(
                lambda: cursor.execute(size, {"t": tenant}, prepare=True).fetchall())

            def empty() -> None:
                with conn.transaction():
                    conn.execute("SELECT set_config('aos.tenant_id', %s, true), "
                                 "set_config('statement_timeout', '30000', true)", (tenant,), prepare=True)
            out["begin_scope_commit_backend_cpu_ms"] = per_execution_ms(empty)
    print(json.dumps({"workload": f"one tenant of {args.entries} entries, first page (51 rows read), "
                                  f"{args.executions} executions per figure, the Logs login",
                      "load_average_before": load, "load_average_after": [round(x, 2) for x in os.getloadavg()],
                      **out}, indent=2))


if __name__ == "__main__":
    main()
