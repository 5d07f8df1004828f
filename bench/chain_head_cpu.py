"""The chain trigger's database CPU per append against the months a tenant's ledger spans
(issue #20, migration 0032_ledger_heads): PostgreSQL backend CPU (/proc, user + system) and
wall time of one-entry appends, each its own transaction.

    .venv/bin/python bench/chain_head_cpu.py [--months 3 15 60] [--per-month 2000] [--appends 2000] [--rounds 4]

For each --months M: a tenant whose --per-month × M entries lie in M monthly partitions (its
head in the newest), loaded by one INSERT … SELECT; then, alternating by round, --appends
appends to it with aos_assign_chain as 0008 made it (``before``: ``ORDER BY seq DESC LIMIT 1``
over every partition, main's) and as 0032 makes it (``after``: the head row, one probe of the
head's month). Both in the same database, so the machine's load falls on both alike; the
first append of each round is untimed. 0008's trigger does not keep the head row: before each
``after`` round the owner sets it to the newest entry again (untimed) — 0032's probe finds a
head row's entry gone, not one left behind by appends that bypassed it. The tree trigger (audit_ledger_tlog) is
off throughout: its cost does not depend on the months (bench/tlog_trigger_cpu.py measures
it); this measures the chain trigger alone. The head functions are put back at the end.
Scratch embedded Postgres (non-durable), or DATABASE_URL.
"""
from __future__ import annotations

import argparse
import json
import os
import runpy
import time
import uuid
from datetime import date
from pathlib import Path

import psycopg

from aos_runtime.db import libpq_url
from scratch import scratch_database
from tlog import cpu_s

MIGRATION = Path(__file__).resolve().parent.parent / "migrations" / "versions" / "0032_ledger_heads.py"
LOAD = ("INSERT INTO audit_ledger (id, tenant_id, event_type, entity_type, entity_id, actor_type, created_at, "
        "content_hash) SELECT %s || i, %s, 'LimitUpdated', 'LIMIT', 'x', 'HUMAN', "
        "%s::timestamptz + ((i - 1) / %s) * interval '1 month' + (i %% 1000) * interval '1 second', "
        "sha256(int8send(i)) FROM generate_series(1, %s) i")
APPEND = ("INSERT INTO audit_ledger (id, tenant_id, event_type, entity_type, entity_id, actor_type, created_at, "
          "content_hash) VALUES (%s, %s, 'LimitUpdated', 'LIMIT', 'x', 'HUMAN', %s::timestamptz, sha256(%s))")
# as the owner, untimed: the head row names the newest entry again after 0008's trigger appended
SYNC = ("UPDATE ledger_heads h SET seq = a.seq, chain_hash = a.chain_hash, created_at = a.created_at "
        "FROM (SELECT seq, chain_hash, created_at FROM audit_ledger WHERE tenant_id = %s "
        "ORDER BY seq DESC LIMIT 1) a WHERE h.tenant_id = %s")
FIRST = date(2020, 1, 1)


def month(k: int) -> date:
    return date(FIRST.year + (FIRST.month - 1 + k) // 12, (FIRST.month - 1 + k) % 12 + 1, 1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--months", type=int, nargs="+", default=[3, 15, 60])
    parser.add_argument("--per-month", type=int, default=2000)
    parser.add_argument("--appends", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    before_sql = runpy.run_path(str(MIGRATION))["ASSIGN_CHAIN_0008"]
    results = []
    load_before = [round(x, 2) for x in os.getloadavg()]
    with scratch_database(prefix="aos-bench-chain-head-") as (url, _work), \
            psycopg.connect(libpq_url(url), autocommit=True) as conn:
        after_sql = conn.execute("SELECT pg_get_functiondef('aos_assign_chain()'::regprocedure)").fetchone()[0]  # type: ignore[index]
        pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]  # type: ignore[index]
        conn.execute("SELECT aos_ensure_ledger_partitions(%s, %s)", (FIRST, month(max(args.months) - 1)))
        conn.execute("ALTER TABLE audit_ledger DISABLE TRIGGER audit_ledger_tlog")
        try:
            for months in args.months:
                tenant = f"bench-{months}m-{uuid.uuid4().hex[:6]}"
                conn.execute("INSERT INTO tenants (id, name) VALUES (%s, %s)", (tenant, tenant))
                started = time.perf_counter()
                conn.execute(LOAD, (f"{tenant}-", tenant, FIRST, args.per_month, args.per_month * months))
                loaded_s = time.perf_counter() - started
                conn.execute("ANALYZE audit_ledger")
                at = month(months - 1).isoformat() + "T12:00:00Z"
                cpu = {"before": 0.0, "after": 0.0}
                wall = {"before": 0.0, "after": 0.0}
                for r in range(args.rounds):
                    for variant in (("before", "after") if r % 2 == 0 else ("after", "before")):
                        conn.execute(before_sql if variant == "before" else after_sql)
                        if variant == "after":  # 0008's appends left the head row behind: the newest again
                            conn.execute(SYNC, (tenant, tenant))
                        conn.execute(APPEND, (f"{tenant}-w{r}{variant}", tenant, at, b"warm"))  # untimed
                        ids = [f"{tenant}-{r}{variant}{i}" for i in range(args.appends)]
                        c0, t0 = cpu_s([pid]), time.perf_counter()
                        for entry in ids:
                            conn.execute(APPEND, (entry, tenant, at, entry.encode()))
                        wall[variant] += time.perf_counter() - t0
                        cpu[variant] += cpu_s([pid]) - c0
                n = args.appends * args.rounds
                head = conn.execute("SELECT seq FROM ledger_heads WHERE tenant_id = %s", (tenant,)).fetchone()
                newest = conn.execute("SELECT max(seq), count(*) FROM audit_ledger WHERE tenant_id = %s",
                                      (tenant,)).fetchone()
                results.append({
                    "months": months, "entries_loaded": args.per_month * months, "load_s": round(loaded_s, 2),
                    "appends_per_variant": n,
                    "cpu_us_per_append": {k: round(v / n * 1e6, 1) for k, v in cpu.items()},
                    "wall_us_per_append": {k: round(v / n * 1e6, 1) for k, v in wall.items()},
                    "after_over_before_cpu": round(cpu["after"] / cpu["before"], 3) if cpu["before"] else None,
                    # seq = count: no gap; the head row as the last variant left it
                    "gapless": newest[0] == newest[1], "head_row_seq": head[0] if head else None,
                    "load_average_now": [round(x, 2) for x in os.getloadavg()]})
                print(json.dumps(results[-1]), flush=True)
        finally:
            conn.execute(after_sql)
            conn.execute("ALTER TABLE audit_ledger ENABLE ALWAYS TRIGGER audit_ledger_tlog")
    print(json.dumps({"per_month": args.per_month, "rounds": args.rounds, "results": results,
                      "load_average_before": load_before,
                      "load_average_after": [round(x, 2) for x in os.getloadavg()]}, indent=2))


if __name__ == "__main__":
    main()
