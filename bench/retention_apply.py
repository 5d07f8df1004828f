"""The cost of applying retention policies (``aos_recording.retention.apply_policies``).

    .venv/bin/python bench/retention_apply.py                          # 200,000 entries, 10 tenants
    .venv/bin/python bench/retention_apply.py --entries 1000000 --records 200000

On a scratch database (bench/scratch.py) at head, with monthly partitions for 2026: loads the
ledger entries, system records and trace steps (aos_recording.bulk: created_at spread over
~300 days from 2026-01; trace steps all in the load's month), records checkpoints, then at
``now`` = 2027-03-01 (every 2026 month past the default 90-day and system-record levels, the
ledger's months up to February 2026 past 365 days) times, as the owner:
1. ``apply_policies(dry_run=True)`` (the checks alone: each candidate partition read once),
2. ``apply_policies`` (checks, drops, one EvidencePartitionDropped entry per tenant and partition).
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
            retention.record_checkpoints(conn)
            for label, dry in (("dry_run", True), ("apply", False)):
                outcomes, wall, cpu = timed(lambda d=dry: retention.apply_policies(conn, now, dry_run=d))
                results[label] = {"wall_s": wall, "cpu_s": cpu, "tables": {
                    o.table: {"dropped": len(o.dropped), "rows": sum(o.rows.values()), "kept": o.kept}
                    for o in outcomes}}
                print(label, wall, "s wall", cpu, "s cpu", [retention.describe(o, dry_run=dry) for o in outcomes])
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
