"""Recording and verification rates (issue #3).

    .venv/bin/python bench/recording.py [--entries 20000] [--verify 200000]

Measures, on the embedded Postgres in a temporary directory (or DATABASE_URL):
  append, one tenant, 1 connection    AuditLedgerWriter.append, one entry per transaction
  append, one tenant, 8 connections   the same tenant's chain from 8 threads (serialised by its lock)
  append, 8 tenants, 8 connections    one tenant per thread (chains independent)
  append, batched                     100 entries per transaction, one connection
  verify                              verify_ledger over a bulk-loaded chain, against reading the same rows
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

from aos_recording import bulk, store, verify
from aos_recording.sources import SourceWriter
from aos_recording.writers import AuditLedgerWriter, Producer
from aos_runtime import migrate
from aos_runtime.embedded import EmbeddedPostgres
from scratch import service_logins

NOW = datetime.now(timezone.utc)


def tenant(producer: Producer, name: str) -> str:
    with producer.transaction(name) as conn:
        SourceWriter(conn).ensure_tenant(tenant_id=name, name=name, created_at=NOW)
    return name


def append_loop(producer_url: str, tenant_id: str, count: int, per_tx: int = 1) -> None:
    producer = Producer(producer_url, pool_size=1)
    for _ in range(count // per_tx):
        with producer.transaction(tenant_id) as conn:
            writer = AuditLedgerWriter(conn)
            for _ in range(per_tx):
                writer.append(tenant_id=tenant_id, event_type="LimitUpdated", entity_type="LIMIT",
                              entity_id="lim-1", actor_type="SYSTEM", actor_id="bench",
                              after_state={"max_value": 100})
    producer.close()


def timed_threads(producer_url: str, tenants: list[str], per_thread: int, per_tx: int = 1) -> float:
    threads = [threading.Thread(target=append_loop, args=(producer_url, t, per_thread, per_tx)) for t in tenants]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return len(tenants) * per_thread / (time.perf_counter() - started)


def read_and_verify(producer: Producer, tenant_id: str,
                    to_seq: int | None = None) -> tuple[int, float, verify.ChainReport, float]:
    """Time reading a tenant's ledger rows, then verify_ledger over the same rows, in one transaction:
    (rows read, read seconds, verification report, verify seconds)."""
    with producer.transaction(tenant_id) as conn:
        started = time.perf_counter()
        rows = sum(1 for _ in store.iter_ledger(conn, tenant_id, to_seq=to_seq))
        read_s = time.perf_counter() - started
        started = time.perf_counter()
        report = verify.verify_ledger(conn, tenant_id, to_seq=to_seq)
        verify_s = time.perf_counter() - started
    return rows, read_s, report, verify_s


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entries", type=int, default=20_000, help="appends per append measurement")
    parser.add_argument("--verify", type=int, default=200_000, help="chain length for the verify measurement")
    args = parser.parse_args()
    # Durable (unlike scratch.scratch_database): the append rates include the commit's flush.
    work = Path(tempfile.mkdtemp(prefix="aos-bench-"))
    server, url = None, os.environ.get("DATABASE_URL")
    if not url:
        server = EmbeddedPostgres(work / "pg")
        server.start()
        url = server.url
    results = {}
    try:
        migrate.upgrade(url)
        # The admin URL migrates and bulk-loads; the producers log in as aos_producer (they refuse the admin).
        producer_url = service_logins(url, work / "aos")["producer"]
        producer = Producer(producer_url)
        one = tenant(producer, "bench-one")
        results["append_one_tenant_1_conn_per_s"] = timed_threads(producer_url, [one], args.entries)
        results["append_one_tenant_8_conn_per_s"] = timed_threads(producer_url, [one] * 8, args.entries // 8)
        many = [tenant(producer, f"bench-many-{i}") for i in range(8)]
        results["append_8_tenants_8_conn_per_s"] = timed_threads(producer_url, many, args.entries // 8)
        results["append_batched_100_per_tx_per_s"] = timed_threads(producer_url, [tenant(producer, "bench-batch")],
                                                                   args.entries, per_tx=100)

        bulk.load(url, bulk.Volume(tenants=1, ledger=args.verify, traces=0, steps=0, system=0))
        (chain_tenant,) = bulk.tenant_ids(1)
        rows, read_s, report, verify_s = read_and_verify(producer, chain_tenant)
        assert report.ok and report.checked == rows == args.verify
        results["read_ledger_rows_per_s"] = rows / read_s
        results["verify_ledger_entries_per_s"] = rows / verify_s
        results["verify_vs_read_ratio"] = read_s / verify_s
        producer.close()
    finally:
        if server:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)
    results = {k: round(v, 2) for k, v in results.items()}
    results["cores"] = os.cpu_count()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
