"""The audit ledger partitioned by month vs unpartitioned, and checkpoint-gated retention.

    .venv/bin/python bench/partitioning.py                      # 1,000,000 entries, 10 tenants
    .venv/bin/python bench/partitioning.py --entries 100000     # a quick run

On a scratch database (bench/scratch.py: DATABASE_URL, or an embedded Postgres) at
migration 0007 (the last unpartitioned schema):
1. loads the entries through the real chain trigger (aos_recording.bulk: COPY, content
   hashes as a producer computes them; created_at spread over ~300 days from 2026-01);
2. vacuums, then measures, as the Logs role under row-level security, the Logs store's own queries —
   the first page of ListAuditEntries, a page of one month in the middle, the ledger
   head — plus a full verification of one tenant's chain and single appends;
3. converts the ledger in place (migration 0008, applied to the loaded database as a
   deployment would) and measures the same again;
4. retention: a drop without checkpoints is refused; checkpoints are recorded; the
   first three months are dropped; the tenant's chain verifies from its anchor, and
   is flagged TRUNCATION without it.
Prints one line per figure and, with --json, the figures as JSON.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from datetime import date, datetime, timezone
from pathlib import Path

import psycopg
from sqlalchemy import create_engine, text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from scratch import scratch_database  # noqa: E402

from aos_recording import bulk, retention, verify  # noqa: E402
from aos_recording.writers import AuditLedgerWriter, Producer  # noqa: E402
from aos_runtime import migrate  # noqa: E402
from aos_runtime.db import libpq_url, sync_url  # noqa: E402
from services.logs import store  # noqa: E402


def timed(fn, repeat: int) -> dict[str, float]:
    """p50 / p99 / max in milliseconds over ``repeat`` calls (after one warm-up call)."""
    fn()
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return {"p50_ms": round(statistics.median(samples), 3),
            "p99_ms": round(samples[min(len(samples) - 1, int(len(samples) * 0.99))], 3),
            "max_ms": round(samples[-1], 3)}


def measure(url: str, tenant: str, repeat: int) -> dict[str, dict[str, float]]:
    # Both layouts measured vacuumed: index-only scans need the visibility map, and a
    # freshly copied table has none until autovacuum passes.
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE) audit_ledger")
    engine = create_engine(sync_url(url), connect_args={"options": "-c role=aos_logs"}, pool_size=1)
    producer = Producer(url, pool_size=1)
    figures = {}
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT set_config('aos.tenant_id', :t, false)"), {"t": tenant})
            first_page = lambda: store.list_audit_entries(conn, tenant, store.AuditFilters(), None, 50)  # noqa: E731
            month = store.AuditFilters(created_after=datetime(2026, 5, 1, tzinfo=timezone.utc),
                                       created_before=datetime(2026, 6, 1, tzinfo=timezone.utc))
            month_page = lambda: store.list_audit_entries(conn, tenant, month, None, 50)  # noqa: E731
            assert first_page().rows and month_page().rows
            figures["list_first_page"] = timed(first_page, repeat)
            figures["list_one_month_page"] = timed(month_page, repeat)
            figures["ledger_head"] = timed(lambda: store.ledger_head(conn, tenant), repeat)
            conn.rollback()
            started = time.perf_counter()
            with conn.begin():
                conn.execute(text("SELECT set_config('aos.tenant_id', :t, true)"), {"t": tenant})
                report = verify.verify_ledger(conn, tenant)
            figures["verify_tenant_chain"] = {"entries": report.checked, "ok": report.ok,
                                              "s": round(time.perf_counter() - started, 3)}

        def append_one() -> None:
            with producer.transaction(tenant) as conn:
                AuditLedgerWriter(conn).append(tenant_id=tenant, event_type="LimitUpdated", entity_type="LIMIT",
                                               entity_id="lim-1", actor_type="SYSTEM",
                                               created_at=datetime(2026, 10, 20, tzinfo=timezone.utc))
        figures["append_one_entry"] = timed(append_one, repeat)
    finally:
        engine.dispose()
        producer.close()
    return figures


def retention_demo(url: str, tenant: str) -> dict[str, object]:
    demo: dict[str, object] = {}
    engine = create_engine(sync_url(url))
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        try:
            retention.drop_partitions_before(conn, date(2026, 4, 1))
            demo["drop_without_checkpoint"] = "DROPPED (wrong)"
        except psycopg.Error as err:
            demo["drop_without_checkpoint"] = f"refused {err.sqlstate}: {err.diag.message_primary}"
        started = time.perf_counter()
        demo["checkpoints_recorded"] = len(retention.record_checkpoints(conn))
        demo["checkpoint_s"] = round(time.perf_counter() - started, 3)
        started = time.perf_counter()
        demo["dropped"] = retention.drop_partitions_before(conn, date(2026, 4, 1))
        demo["drop_s"] = round(time.perf_counter() - started, 3)
        anchor = retention.retention_anchor(conn, tenant)
        demo["anchor_seq"] = anchor.seq
    with engine.begin() as conn:
        started = time.perf_counter()
        kept = verify.verify_ledger(conn, tenant, anchor=anchor)
        demo["verify_from_anchor"] = {"ok": kept.ok, "first_seq": kept.first_seq, "last_seq": kept.last_seq,
                                      "s": round(time.perf_counter() - started, 3)}
        cut = verify.verify_ledger(conn, tenant)
        demo["verify_without_anchor"] = [f"{a.seq}:{a.kind}" for a in cut.anomalies[:2]]
    engine.dispose()
    return demo


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--tenants", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results: dict[str, object] = {"entries": args.entries, "tenants": args.tenants}
    with scratch_database("aos-bench-partitioning-", revision="0007_tenant_keyed_schema") as (url, _):
        with psycopg.connect(libpq_url(url)) as conn:
            results["server"] = conn.execute("SHOW server_version").fetchone()[0]
        started = time.perf_counter()
        bulk.load(url, bulk.Volume(tenants=args.tenants, ledger=args.entries, traces=0, steps=0, system=0))
        results["load_s"] = round(time.perf_counter() - started, 1)
        tenant = bulk.tenant_ids(args.tenants)[0]
        results["unpartitioned"] = measure(url, tenant, args.repeat)
        with psycopg.connect(libpq_url(url), autocommit=True) as conn:
            results["size_unpartitioned_mb"] = round(conn.execute(
                "SELECT pg_total_relation_size('audit_ledger')").fetchone()[0] / 2**20, 1)
            started = time.perf_counter()
            migrate.upgrade(url)
            results["convert_s"] = round(time.perf_counter() - started, 2)
            results["partitions"] = retention.partitions(conn)
            results["size_partitioned_mb"] = round(conn.execute(
                "SELECT sum(pg_total_relation_size(inhrelid)) FROM pg_inherits "
                "WHERE inhparent = 'audit_ledger'::regclass").fetchone()[0] / 2**20, 1)
        results["partitioned"] = measure(url, tenant, args.repeat)
        results["retention"] = retention_demo(url, tenant)
    for key in ("server", "entries", "tenants", "load_s", "size_unpartitioned_mb", "size_partitioned_mb", "convert_s"):
        print(f"{key:<24} {results[key]}")
    for name in results["unpartitioned"]:
        print(f"{name:<24} unpartitioned {results['unpartitioned'][name]}")
        print(f"{'':<24} partitioned   {results['partitioned'][name]}")
    for key, value in results["retention"].items():
        print(f"retention.{key:<14} {value}")
    if args.json:
        print(json.dumps(results, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
