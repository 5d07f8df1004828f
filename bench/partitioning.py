"""The evidence tables partitioned by month vs unpartitioned, and checkpoint-gated retention.

    .venv/bin/python bench/partitioning.py                      # 1,000,000 entries, 10 tenants
    .venv/bin/python bench/partitioning.py --entries 100000 --records 20000   # a quick run

On a scratch database (bench/scratch.py: DATABASE_URL, or an embedded Postgres) at
migration 0007 (the last unpartitioned schema):
1. loads the ledger entries through the real chain trigger, and system records and
   trace steps (``--records`` each: 20 steps per trace) through their triggers
   (aos_recording.bulk: COPY, content hashes as a producer computes them; created_at
   spread over ~300 days from 2026-01, steps stamped when loaded);
2. vacuums, then measures, as the Logs role under row-level security, the Logs store's own queries —
   the first page of ListAuditEntries, a page of one month in the middle, the ledger
   head, the first page of system records — plus a full verification of one tenant's
   chain and single writes as a producer makes them (a ledger append, a system record,
   a trace step, each its own transaction);
3. converts the tables in place (migrations 0008, 0009, then 0010-0011 — system-wide
   records moved to platform_records — applied to the loaded database as a deployment
   would, each timed) and measures the same again;
4. retention: a drop without checkpoints is refused; checkpoints are recorded; the
   first three months of the ledger are dropped, then those of system records; the
   tenant's chain verifies from its anchor, and is flagged TRUNCATION without it.
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

from aos_evidence import queries as evidence
from aos_recording import bulk, retention, verify
from aos_recording.writers import AuditLedgerWriter, Producer, SystemRecordWriter, TraceRecorder
from aos_runtime import migrate
from aos_runtime.db import libpq_url, sync_url
from scratch import scratch_database, service_logins
from services.logs import store


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


def measure(url: str, dsns: dict[str, str], tenant: str, repeat: int) -> dict[str, dict[str, float]]:
    """``url``: the admin's (VACUUM); ``dsns``: the logins (scratch.service_logins) the reads and
    writes run as, the Logs service's and the producer's own."""
    # Both layouts measured vacuumed: index-only scans need the visibility map, and a
    # freshly copied table has none until autovacuum passes.
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        for table in ("audit_ledger", "system_records", "aos_trace_steps"):
            conn.execute(f"VACUUM (ANALYZE) {table}")
    engine = create_engine(sync_url(dsns["logs"]), pool_size=1)
    producer = Producer(dsns["producer"], pool_size=1)
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
            figures["ledger_head"] = timed(lambda: evidence.ledger_head(conn, tenant), repeat)
            figures["system_records_first_page"] = timed(
                lambda: store.list_system_records(conn, tenant, {}, None, 50), repeat)
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

        def write_system_record() -> None:
            with producer.transaction(tenant) as conn:
                SystemRecordWriter(conn).write(tenant_id=tenant, component="api", event_type="ERROR",
                                               severity="ERROR", summary="bench",
                                               created_at=datetime(2026, 10, 20, tzinfo=timezone.utc))
        figures["write_one_system_record"] = timed(write_system_record, repeat)

        with producer.transaction(tenant) as conn:
            trace = TraceRecorder(conn).create_trace(tenant_id=tenant, run_id="bench-run")
        steps = iter(range(repeat + 1))

        def add_step() -> None:
            with producer.transaction(tenant) as conn:
                TraceRecorder(conn).add_step(tenant_id=tenant, trace_id=trace, step_index=next(steps),
                                             step_type="llm_call", timestamp=datetime.now(timezone.utc))
        figures["append_one_trace_step"] = timed(add_step, repeat)
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
        started = time.perf_counter()
        demo["dropped_system_records"] = retention.drop_partitions_before(conn, date(2026, 4, 1), "system_records")
        demo["drop_system_records_s"] = round(time.perf_counter() - started, 3)
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
    parser.add_argument("--records", type=int, default=200_000, help="system records, and trace steps")
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results: dict[str, object] = {"entries": args.entries, "tenants": args.tenants, "records": args.records}
    tables = ("audit_ledger", "system_records", "aos_trace_steps")
    with scratch_database("aos-bench-partitioning-", revision="0007_tenant_keyed_schema") as (url, work):
        # The roles exist since 0001: their logins work on the 0007 layout and, unchanged, after the upgrade.
        dsns = service_logins(url, work / "aos")
        with psycopg.connect(libpq_url(url)) as conn:
            results["server"] = conn.execute("SHOW server_version").fetchone()[0]
        started = time.perf_counter()
        bulk.load(url, bulk.Volume(tenants=args.tenants, ledger=args.entries, traces=args.records // 20, steps=20,
                                   system=args.records))
        results["load_s"] = round(time.perf_counter() - started, 1)
        tenant = bulk.tenant_ids(args.tenants)[0]
        with psycopg.connect(libpq_url(url), autocommit=True) as conn:
            # The store reads system-wide records from platform_records (migration 0011); on
            # this 0007 layout they are system_records' rows without a tenant, read through
            # the same partial index its store then used. Dropped before the upgrade.
            conn.execute("CREATE VIEW platform_records AS SELECT * FROM system_records WHERE tenant_id IS NULL")
            conn.execute("GRANT SELECT ON platform_records TO aos_logs")
        results["unpartitioned"] = measure(url, dsns, tenant, args.repeat)
        with psycopg.connect(libpq_url(url), autocommit=True) as conn:
            conn.execute("DROP VIEW platform_records")
            def sizes() -> dict[str, float]:
                # pg_partition_tree: nothing for a plain table, every partition for a partitioned one
                return {t: round(float(conn.execute(
                    "SELECT coalesce(sum(pg_total_relation_size(relid)), pg_total_relation_size(%s::regclass)) "
                    "FROM pg_partition_tree(%s)", (t, t)).fetchone()[0]) / 2**20, 1) for t in tables}
            results["size_unpartitioned_mb"] = sizes()
            for revision in ("0008_partitioned_audit_ledger", "0009_partitioned_records_steps",
                             "0011_platform_records"):
                started = time.perf_counter()
                migrate.upgrade(url, revision)
                results[f"convert_s_{revision[:4]}"] = round(time.perf_counter() - started, 2)
            migrate.upgrade(url)
            results["partitions"] = {t: retention.partitions(conn, t) for t in tables}
            results["size_partitioned_mb"] = sizes()
        results["partitioned"] = measure(url, dsns, tenant, args.repeat)
        results["retention"] = retention_demo(url, tenant)
    for key in ("server", "entries", "tenants", "records", "load_s", "size_unpartitioned_mb", "size_partitioned_mb",
                "convert_s_0008", "convert_s_0009", "convert_s_0011"):
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
