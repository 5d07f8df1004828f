"""The cost of applying retention policies (``aos_recording.retention.apply_policies``).

    .venv/bin/python bench/retention_apply.py                          # 200,000 entries, 10 tenants
    .venv/bin/python bench/retention_apply.py --entries 1000000 --records 200000
    .venv/bin/python bench/retention_apply.py --longer-ledger-tenants 0   # the ledger's months drop whole

On a scratch database (bench/scratch.py) at head, with monthly partitions for 2026: loads the
ledger entries, system records and trace steps (aos_recording.bulk: created_at spread over
~300 days from 2026-01; trace steps all in the load's month), records checkpoints, then at
``now`` = 2027-03-01 (every 2026 month past the default 90-day and system-record levels, the
ledger's months up to February 2026 past 365 days) times, as the owner:
1. ``apply_policies(dry_run=True)`` (the checks alone: each candidate partition read once),
2. ``apply_policies`` (checks, drops, one EvidencePartitionDropped entry per tenant and partition),
   then row by row (migration 0026): ``--longer-ledger-tenants`` tenants (default 1) keep their
   ledger 7 years (SOC2), so no ledger month drops whole and the other tenants' expired entries
   leave them row-set by row-set behind their checkpoints; the load's CRITICAL system records
   (permanent by default) keep their months and every other record of those months goes row by
   row. Each table is timed on its own (``tables=[table]``).
Wall time and this process's CPU time; the work is the server's, so the CPU figure is small.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import date, datetime, timezone
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aos_recording import bulk, retention
from aos_runtime.db import libpq_url
from scratch import scratch_database


def timed(work) -> tuple[object, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    result = work()
    return result, round(time.perf_counter() - wall, 3), round(time.process_time() - cpu, 3)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--entries", type=int, default=200_000)
    parser.add_argument("--tenants", type=int, default=10)
    parser.add_argument("--records", type=int, default=40_000, help="system records, and trace steps")
    parser.add_argument("--longer-ledger-tenants", type=int, default=1,
                        help="tenants keeping their ledger 7 years (SOC2): their rows keep every month")
    args = parser.parse_args()
    now = datetime(2027, 3, 1, tzinfo=timezone.utc)
    results: dict[str, object] = vars(args).copy()
    with scratch_database("aos-bench-retention-") as (url, _work):
        with psycopg.connect(libpq_url(url), autocommit=True) as conn:
            retention.ensure_partitions(conn, first=date(2026, 1, 1), through=date(2026, 12, 1))
        bulk.load(url, bulk.Volume(tenants=args.tenants, ledger=args.entries, traces=args.records // 20, steps=20,
                                   system=args.records))
        with psycopg.connect(libpq_url(url), autocommit=True) as conn:
            conn.execute("ANALYZE")
            for tenant in bulk.tenant_ids(args.tenants)[:args.longer_ledger_tenants]:
                conn.execute("INSERT INTO retention_policies (tenant_id, record_type, level, retention_days, "
                             "retention_class, updated_at, updated_by_type, updated_by_id) VALUES "
                             "(%s, 'AUDIT_LEDGER', '', 2555, 'SOC2', now(), 'HUMAN', 'bench')", (tenant,))
            retention.record_checkpoints(conn)
            for label, dry in (("dry_run", True), ("apply", False)):
                results[label] = {}
                for table in retention.APPLY_ORDER:
                    outcomes, wall, cpu = timed(
                        lambda d=dry, t=table: retention.apply_policies(conn, now, dry_run=d, tables=[t]))
                    o = outcomes[0]
                    results[label][table] = {
                        "wall_s": wall, "cpu_s": cpu, "dropped": len(o.dropped), "rows_dropped": sum(o.rows.values()),
                        "rows_removed": sum(n for rows in o.removed.values() for n in rows.values()),
                        "sets_removed": sum(len(rows) for rows in o.removed.values()),
                        "partitions_row_by_row": len(o.removed), "refused": len(o.refused), "kept": o.kept}
                    print(label, table, wall, "s wall", cpu, "s cpu;", retention.describe(o, dry_run=dry)[:400])
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
