"""What the tree trigger (audit_ledger_tlog) costs a bulk append, with 0018's functions and 0013's.

    .venv/bin/python bench/tlog_trigger.py [--entries 5000] [--rounds 2]

On a scratch database (embedded Postgres, non-durable, unless DATABASE_URL is set: then that
database is migrated and written to; give it one of its own). In each round, per variant: one
INSERT … SELECT of --entries ledger entries of a fresh tenant as the admin, timed, with the
trigger and with it disabled (another fresh tenant). Before each variant's first round (after
an untimed warm-up insert) tlog_hashes is analyzed with its tenants still small, as in a test
suite or right after a bulk load. Variants: migration 0018's trigger functions (head), then 0013's (downgraded to
0017_ingest_role, which restores them). 0013's lookup of the left siblings,
hash_index = ANY(...), became a filter over the tenant's whole log on PostgreSQL 15.
"""
from __future__ import annotations

import argparse
import json
import os
import time
import uuid

import psycopg

from aos_runtime import migrate
from aos_runtime.db import libpq_url
from scratch import scratch_database

INSERT = ("INSERT INTO audit_ledger (id, tenant_id, event_type, entity_type, entity_id, actor_type, created_at, "
          "content_hash) SELECT %s || i, %s, 'LimitUpdated', 'LIMIT', 'x', 'HUMAN', now(), sha256(int8send(i)) "
          "FROM generate_series(1, %s) i")


def timed_insert(conn: psycopg.Connection, entries: int, tree: bool) -> float:
    tenant = f"bench-{uuid.uuid4().hex[:8]}"
    conn.execute("INSERT INTO tenants (id, name) VALUES (%s, %s)", (tenant, tenant))
    if not tree:
        conn.execute("ALTER TABLE audit_ledger DISABLE TRIGGER audit_ledger_tlog")
    try:
        started = time.perf_counter()
        conn.execute(INSERT, (f"{tenant}-", tenant, entries))
        return time.perf_counter() - started
    finally:
        if not tree:
            conn.execute("ALTER TABLE audit_ledger ENABLE ALWAYS TRIGGER audit_ledger_tlog")


def variant(url: str, entries: int, rounds: int) -> dict[str, float]:
    seconds = {"with_tree": 0.0, "without_tree": 0.0}
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        timed_insert(conn, 100, tree=True)  # warm the caches and the plans (untimed)
        conn.execute("ANALYZE tlog_hashes")
        for _ in range(rounds):
            seconds["without_tree"] += timed_insert(conn, entries, tree=False)
            seconds["with_tree"] += timed_insert(conn, entries, tree=True)
    n = entries * rounds
    return {"with_tree_s": seconds["with_tree"], "without_tree_s": seconds["without_tree"],
            "tree_us_per_entry": (seconds["with_tree"] - seconds["without_tree"]) / n * 1e6,
            "with_over_without_time": seconds["with_tree"] / seconds["without_tree"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entries", type=int, default=5000, help="entries per INSERT (one tenant each)")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    load_before = [round(x, 2) for x in os.getloadavg()]
    with scratch_database(prefix="aos-bench-tlog-trigger-") as (url, _work):
        with psycopg.connect(libpq_url(url)) as conn:
            server = conn.execute("SHOW server_version").fetchone()[0]
        report = {"server_version": server, "entries_per_insert": args.entries, "rounds": args.rounds,
                  "functions_0018": variant(url, args.entries, args.rounds)}
        migrate.downgrade(url, "0017_ingest_role")
        report["functions_0013"] = variant(url, args.entries, args.rounds)
        migrate.upgrade(url)
    report["load_average_before"] = load_before
    report["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps({k: ({kk: round(vv, 3) for kk, vv in v.items()} if isinstance(v, dict) else v)
                      for k, v in report.items()}, indent=2))


if __name__ == "__main__":
    main()
