"""The ledger's transparency log (issue #20, migration 0013): what the tree costs an append, what
a proof costs at the service, how large it is, and what checking one costs offline.

    .venv/bin/python bench/tlog.py [--appends 2000] [--rounds 4] [--entries 200000] [--calls 1000]

On a scratch database (embedded Postgres, non-durable, unless DATABASE_URL is set):
  append rate         AuditLedgerWriter.append as the producer, one entry per transaction, one
                      connection, with the tree trigger (audit_ledger_tlog) and without it (the
                      same appends with the trigger disabled, to a tenant of their own), in
                      --rounds alternating rounds of --appends / --rounds each (the machine is
                      shared: alternation spreads its noise over both). Non-durable commits make
                      the tree's share of an append larger than it is on a durable database.
  bulk load           --entries entries of one tenant through COPY as the owner (bulk.load): the
                      trigger keeps the tree for every row; the load rate is reported.
  proofs              GetInclusionProof (random seq, current size) and GetConsistencyProof (random
                      first size, current size) at ``python -m services.logs`` over a real channel,
                      one call at a time, --calls each: p50 / p99 client-side latency, proof sizes.
  offline check       aos_recording.tlog.check_record of one inclusion proof, against walking the
                      chain (SHA-256(prev ‖ content) per entry) up to that entry.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import time
from datetime import datetime, timezone

import grpc
import psycopg

from aos.logs.v1 import audit_ledger_service_pb2 as pb, audit_ledger_service_pb2_grpc as pb_grpc
from aos_recording import bulk, tlog
from aos_recording.sources import SourceWriter
from aos_recording.writers import AuditLedgerWriter, Producer
from aos_runtime.auth import mint_token
from aos_runtime.db import libpq_url
from scratch import scratch_database, service_logins
from workers_scaling import SECRET, LogsService

NOW = datetime.now(timezone.utc)


def percentile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def appends(producer: Producer, tenant: str, count: int) -> float:
    """Seconds for ``count`` appends, one per transaction."""
    started = time.perf_counter()
    for _ in range(count):
        with producer.transaction(tenant) as conn:
            AuditLedgerWriter(conn).append(tenant_id=tenant, event_type="LimitUpdated", entity_type="LIMIT",
                                           entity_id="lim-1", actor_type="SYSTEM", actor_id="bench",
                                           after_state={"max_value": 100})
    return time.perf_counter() - started


def append_rates(url: str, producer: Producer, total: int, rounds: int) -> dict[str, float]:
    for tenant in ("bench-with-tree", "bench-without-tree"):
        with producer.transaction(tenant) as conn:
            SourceWriter(conn).ensure_tenant(tenant_id=tenant, name=tenant, created_at=NOW)
    seconds = {"with": 0.0, "without": 0.0}
    per_round = total // rounds
    with psycopg.connect(libpq_url(url), autocommit=True) as admin:
        appends(producer, "bench-with-tree", 50)  # warm the pool and the plans
        for _ in range(rounds):
            admin.execute("ALTER TABLE audit_ledger DISABLE TRIGGER audit_ledger_tlog")
            try:
                seconds["without"] += appends(producer, "bench-without-tree", per_round)
            finally:
                admin.execute("ALTER TABLE audit_ledger ENABLE ALWAYS TRIGGER audit_ledger_tlog")
            seconds["with"] += appends(producer, "bench-with-tree", per_round)
    with_rate, without_rate = per_round * rounds / seconds["with"], per_round * rounds / seconds["without"]
    return {"with_tree_per_s": with_rate, "without_tree_per_s": without_rate,
            "ratio_with_over_without": with_rate / without_rate}


def timed_calls(call, requests: list) -> list[float]:
    times = []
    for request in requests:
        started = time.perf_counter()
        call(request)
        times.append((time.perf_counter() - started) * 1000)
    return sorted(times)


def proofs(logs_url: str, work, tenant: str, size: int, calls: int) -> dict[str, object]:
    token = mint_token(secret=SECRET, tenant_id=tenant, subject="bench")
    metadata = (("authorization", f"Bearer {token}"),)
    rng = random.Random(7)
    service = LogsService(logs_url, work, 1)
    try:
        with grpc.insecure_channel(service.address) as channel:
            stub = pb_grpc.AuditLedgerServiceStub(channel)
            last: dict[str, object] = {}

            def inclusion(request):
                last["inclusion"] = stub.GetInclusionProof(request, metadata=metadata, timeout=10)

            def consistency(request):
                last["consistency"] = stub.GetConsistencyProof(request, metadata=metadata, timeout=10)

            timed_calls(inclusion, [pb.GetInclusionProofRequest(seq=1 + i) for i in range(50)])  # warm-up
            inc = timed_calls(inclusion, [pb.GetInclusionProofRequest(seq=rng.randint(1, size))
                                          for _ in range(calls)])
            con = timed_calls(consistency, [pb.GetConsistencyProofRequest(first_tree_size=rng.randint(1, size))
                                            for _ in range(calls)])
            sample = stub.GetInclusionProof(pb.GetInclusionProofRequest(seq=size // 3), metadata=metadata)
            sample_consistency = stub.GetConsistencyProof(pb.GetConsistencyProofRequest(first_tree_size=size // 3),
                                                          metadata=metadata)
            entries = stub.ListLedgerLeaves(pb.ListLedgerLeavesRequest(page_size=1000, to_seq=min(size, 1000)),
                                            metadata=metadata)
    finally:
        service.stop()
    return {
        "inclusion_ms": {"p50": percentile(inc, 0.5), "p99": percentile(inc, 0.99), "max": inc[-1]},
        "consistency_ms": {"p50": percentile(con, 0.5), "p99": percentile(con, 0.99), "max": con[-1]},
        "inclusion_proof_bytes_at_seq_n_over_3": 32 * len(sample.audit_path),
        "consistency_proof_bytes_from_n_over_3": 32 * len(sample_consistency.proof),
        "log2_n": math.log2(size),
        "_sample": sample, "_leaves": [leaf.leaf_data for leaf in entries.leaves],
    }


def offline(sample: pb.GetInclusionProofResponse, leaf_data: list[bytes], repeat: int = 2000) -> dict[str, float]:
    """check_record of one proof, against re-linking the chain over the first len(leaf_data) entries."""
    path = list(sample.audit_path)
    started = time.perf_counter()
    for _ in range(repeat):
        tlog.check_record(path, sample.tree_size, sample.root_hash, sample.leaf_index, tlog.leaf_hash(sample.leaf_data))
    check_us = (time.perf_counter() - started) / repeat * 1e6
    started = time.perf_counter()
    for _ in range(20):
        link = bytes(32)
        for content in leaf_data:
            link = hashlib.sha256(link + content).digest()
    per_entry_us = (time.perf_counter() - started) / 20 / len(leaf_data) * 1e6
    return {"check_record_us": check_us, "chain_walk_us_per_entry": per_entry_us,
            "chain_walk_to_seq_n_over_3_ms_estimated": per_entry_us * sample.seq / 1000}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--appends", type=int, default=2000, help="appends per variant (with / without the tree)")
    parser.add_argument("--rounds", type=int, default=4, help="alternating rounds the appends are split into")
    parser.add_argument("--entries", type=int, default=200_000, help="the bulk-loaded tenant's ledger")
    parser.add_argument("--calls", type=int, default=1000, help="calls per proof measurement")
    args = parser.parse_args()
    load_before = [round(x, 2) for x in os.getloadavg()]
    with scratch_database(prefix="aos-bench-tlog-") as (url, work):
        logins = service_logins(url, work / "aos")
        producer = Producer(logins["producer"], pool_size=1)
        try:
            rates = append_rates(url, producer, args.appends, args.rounds)
        finally:
            producer.close()
        started = time.perf_counter()
        bulk.load(url, bulk.Volume(tenants=1, ledger=args.entries, traces=0, steps=0, system=0))
        load_s = time.perf_counter() - started
        (tenant,) = bulk.tenant_ids(1)
        with psycopg.connect(libpq_url(url)) as conn:
            stored = conn.execute("SELECT count(*), pg_total_relation_size('tlog_hashes') FROM tlog_hashes "
                                  "WHERE tenant_id = %s", (tenant,)).fetchone()
        measured = proofs(logins["logs"], work, tenant, args.entries, args.calls)
    sample, leaves = measured.pop("_sample"), measured.pop("_leaves")
    report = {
        "cpus": len(os.sched_getaffinity(0)),
        "load_average_before": load_before, "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "append_one_per_transaction": rates,
        "bulk_load": {"entries": args.entries, "seconds_with_tree": load_s, "entries_per_s": args.entries / load_s,
                      "stored_hashes": stored[0], "tlog_hashes_bytes_all_tenants": stored[1]},
        "proofs_at_the_service": {"tree_size": args.entries, "calls_each": args.calls, **measured},
        "offline": offline(sample, leaves),
    }
    print(json.dumps(rounded(report), indent=2))


def rounded(value):
    if isinstance(value, float):
        return round(value, 3)
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    return value


if __name__ == "__main__":
    main()
