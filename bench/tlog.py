"""The ledger's transparency log (issue #20, migration 0013): what the tree costs an append, what
a proof costs at the service, how large it is, and what checking one costs offline.

    .venv/bin/python bench/tlog.py [--appends 2000] [--rounds 4] [--entries 200000] [--calls 1000] [--tree offline]

On a scratch database (embedded Postgres, non-durable, unless DATABASE_URL is set):
  append rate         AuditLedgerWriter.append as the producer, one entry per transaction, one
                      connection, with the tree trigger (audit_ledger_tlog) and without it (the
                      same appends with the trigger disabled, to the same tenant, whose tree is
                      then caught up untimed; --without own: to a tenant of their own), in
                      --rounds alternating rounds of --appends / --rounds each (the machine is
                      shared: alternation spreads its noise over both). Non-durable commits make
                      the tree's share of an append larger than it is on a durable database.
  bulk load           --entries entries of one tenant through COPY as the owner (bulk.load): the
                      trigger keeps the tree for every row; the load rate is reported.
                      With --tree offline (how 10 M entries are reached in reasonable time: the
                      trigger's ~100-200 µs per row would take 20-30 min more at 10 M), the tree
                      trigger is disabled for the COPY (the chain trigger still assigns seq, prev
                      hash and recorded_at), then the stored hashes are computed here from the
                      rows as the database holds them (seq order), the trigger's way (a leaf hash,
                      then one node hash per subtree it completes, at StoredHashIndex positions),
                      and COPYed into tlog_hashes; the trigger is enabled again. Checked: the
                      appends measured next go through the trigger on top of that tree, and an
                      inclusion proof of the last one and a consistency proof from --entries
                      must verify against the service's roots ("tree_check").
  proofs              GetInclusionProof (random seq, current size) and GetConsistencyProof (random
                      first size, current size) at ``python -m services.logs`` over a real channel,
                      one call at a time, --calls each: p50 / p99 client-side latency, proof sizes,
                      and CPU per call of the service process and of its PostgreSQL backends
                      (/proc, user + system: robust to the shared machine's load).
                      The append rates are measured after the load: both go to the loaded
                      tenant (its tree --entries deep; see append_rates).
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
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import grpc
import psycopg
from psycopg import sql

from aos.logs.v1 import audit_ledger_service_pb2 as pb, audit_ledger_service_pb2_grpc as pb_grpc
from aos_recording import bulk, retention, tlog
from aos_recording.sources import SourceWriter
from aos_recording.writers import AuditLedgerWriter, Producer
from aos_runtime.auth import mint_token
from aos_runtime.db import libpq_url
from scratch import scratch_database, service_logins
from workers_scaling import SECRET, LogsService

NOW = datetime.now(timezone.utc)


def percentile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def cpu_s(pids) -> float:
    """User + system CPU seconds of processes so far (Linux /proc); gone processes count 0."""
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def offline_tree(url: str, tenants: list[str]) -> int:
    """Each tenant's stored tree hashes from its ledger rows in seq order, the trigger's way
    (the layout of Go's sumdb/tlog StoredHashIndex), COPYed into tlog_hashes. Returns the leaves written."""
    leaves = 0
    with psycopg.connect(libpq_url(url), autocommit=True) as reader, \
            psycopg.connect(libpq_url(url), autocommit=True) as writer:
        writer.execute("SET ROLE aos_owner")
        writer.execute("SET synchronous_commit = off")
        for tenant in tenants:
            stack: list[bytes] = []
            rows = 0
            with writer.transaction(), writer.cursor().copy(
                    "COPY tlog_hashes (tenant_id, log, hash_index, hash, tree_size, entry_id, leaf_data, "
                    "created_at, recorded_at) FROM STDIN") as out, reader.cursor().copy(
                    "COPY (SELECT seq, id, content_hash, created_at, recorded_at FROM audit_ledger "
                    "WHERE tenant_id = %s ORDER BY seq) TO STDOUT", (tenant,)) as into:
                into.set_types(["int8", "text", "bytea", "timestamptz", "timestamptz"])
                for seq, entry_id, leaf, created, recorded in into.rows():
                    n = seq - 1
                    if n != rows:
                        raise RuntimeError(f"{tenant}: seq {seq} after {rows} rows: the chain has a gap")
                    index = 2 * n - n.bit_count()  # StoredHashIndex(0, n)
                    h = tlog.leaf_hash(leaf)
                    out.write_row((tenant, "ledger", index, h, seq, entry_id, leaf, created, recorded))
                    m = 0
                    while (n >> m) & 1:
                        h = tlog.node_hash(stack.pop(), h)
                        m += 1
                        out.write_row((tenant, "ledger", index + m, h, seq, None, None, None, None))
                    stack.append(h)
                    rows += 1
            leaves += rows
    return leaves


def load_without_tree(url: str, entries: int) -> dict[str, float]:
    """--tree offline: the COPY with the tree trigger off, then the stored hashes computed from
    the rows in seq order and COPYed into tlog_hashes (see the module's docstring)."""
    with psycopg.connect(libpq_url(url), autocommit=True) as admin:
        # The months first: a partition made later gets its triggers enabled (aos_ensure_ledger_partitions).
        retention.ensure_partitions(admin, first=bulk.EPOCH, through=bulk.EPOCH + timedelta(seconds=bulk.SPAN_S))
        admin.execute("ALTER TABLE audit_ledger DISABLE TRIGGER audit_ledger_tlog")
        try:
            started = time.perf_counter()
            bulk.load(url, bulk.Volume(tenants=1, ledger=entries, traces=0, steps=0, system=0))
            copy_s = time.perf_counter() - started
        finally:
            admin.execute("ALTER TABLE audit_ledger ENABLE ALWAYS TRIGGER audit_ledger_tlog")
    (tenant,) = bulk.tenant_ids(1)
    started = time.perf_counter()
    rows = offline_tree(url, [tenant])
    with psycopg.connect(libpq_url(url), autocommit=True) as admin:
        admin.execute("ANALYZE tlog_hashes")
    if rows != entries:
        raise RuntimeError(f"{rows} ledger rows, {entries} expected")
    tree_s = time.perf_counter() - started
    return {"copy_without_tree_s": copy_s, "copy_entries_per_s": entries / copy_s,
            "stored_hashes_computed_and_copied_s": tree_s, "total_s": copy_s + tree_s}


def backend_pids(admin: psycopg.Connection, login_url: str) -> list[int]:
    user = psycopg.conninfo.conninfo_to_dict(libpq_url(login_url)).get("user")
    return [r[0] for r in admin.execute("SELECT pid FROM pg_stat_activity WHERE usename = %s", (user,))]


def appends(producer: Producer, tenant: str, count: int) -> float:
    """Seconds for ``count`` appends, one per transaction."""
    started = time.perf_counter()
    for _ in range(count):
        with producer.transaction(tenant) as conn:
            AuditLedgerWriter(conn).append(tenant_id=tenant, event_type="LimitUpdated", entity_type="LIMIT",
                                           entity_id="lim-1", actor_type="SYSTEM", actor_id="bench",
                                           after_state={"max_value": 100})
    return time.perf_counter() - started


# The tree's leaves for the entries appended with the trigger off, in seq order, untimed:
# aos_tlog_add is the trigger's own body (migration 0013), callable by the owner only.
CATCH_UP = """
DO $$
DECLARE r record;
BEGIN
    FOR r IN SELECT seq, id, content_hash, created_at, recorded_at FROM audit_ledger
             WHERE tenant_id = {tenant} AND seq > {after} ORDER BY seq LOOP
        PERFORM aos_tlog_add({tenant}, 'ledger', r.seq, r.id, r.content_hash, r.created_at, r.recorded_at);
    END LOOP;
END $$"""


def append_rates(url: str, producer: Producer, total: int, rounds: int,
                 with_tenant: str = "bench-with-tree", without: str = "same") -> dict[str, float]:
    """Appends with the tree ÷ without it. ``without="same"``: both to ``with_tenant`` (the
    loaded one), the "without" rounds with the trigger off and the tree caught up after each
    (untimed), so that both pay the same chain-head lookup: aos_assign_chain's ``ORDER BY
    seq DESC LIMIT 1`` reads the tenant's newest row of every monthly partition, dearer for a
    tenant with rows in 15 months than for an empty one (issue #20: the 10 M run's 0.75×
    compared the loaded tenant with an empty one). ``"own"``: the earlier way, "without" to a
    tenant of its own."""
    other = with_tenant if without == "same" else "bench-without-tree"
    for tenant in {with_tenant, other}:
        with producer.transaction(tenant) as conn:
            SourceWriter(conn).ensure_tenant(tenant_id=tenant, name=tenant, created_at=NOW)
    seconds = {"with": 0.0, "without": 0.0}
    per_round = total // rounds
    with psycopg.connect(libpq_url(url), autocommit=True) as admin:
        appends(producer, with_tenant, 50)  # warm the pool and the plans
        for _ in range(rounds):
            head = admin.execute("SELECT coalesce(max(seq), 0) FROM audit_ledger WHERE tenant_id = %s",
                                 (other,)).fetchone()[0]
            admin.execute("ALTER TABLE audit_ledger DISABLE TRIGGER audit_ledger_tlog")
            try:
                seconds["without"] += appends(producer, other, per_round)
            finally:
                admin.execute("ALTER TABLE audit_ledger ENABLE ALWAYS TRIGGER audit_ledger_tlog")
                if other == with_tenant:
                    admin.execute(sql.SQL(CATCH_UP).format(tenant=sql.Literal(other),
                                                   after=sql.Literal(head)))
            seconds["with"] += appends(producer, with_tenant, per_round)
    with_rate, without_rate = per_round * rounds / seconds["with"], per_round * rounds / seconds["without"]
    return {"with_tree_per_s": with_rate, "without_tree_per_s": without_rate,
            "ratio_with_over_without": with_rate / without_rate, "without_appended_to": without}


def timed_calls(call, requests: list) -> list[float]:
    times = []
    for request in requests:
        started = time.perf_counter()
        call(request)
        times.append((time.perf_counter() - started) * 1000)
    return sorted(times)


def proofs(url: str, logs_url: str, work, tenant: str, size: int, calls: int, seed: int) -> dict[str, object]:
    token = mint_token(secret=SECRET, tenant_id=tenant, subject="bench")
    metadata = (("authorization", f"Bearer {token}"),)
    rng = random.Random(seed)
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
            with psycopg.connect(libpq_url(url), autocommit=True) as admin:
                pids = [service.process.pid]
                backends = backend_pids(admin, logs_url)
                cpu: dict[str, dict[str, float]] = {}
                before = (cpu_s(pids), cpu_s(backends))
                inc = timed_calls(inclusion, [pb.GetInclusionProofRequest(seq=rng.randint(1, size))
                                              for _ in range(calls)])
                middle = (cpu_s(pids), cpu_s(backends))
                con = timed_calls(consistency, [pb.GetConsistencyProofRequest(
                    first_tree_size=rng.randint(1, size)) for _ in range(calls)])
                after = (cpu_s(pids), cpu_s(backends))
                if set(backend_pids(admin, logs_url)) != set(backends):
                    cpu["note"] = {"backends_changed_during_the_calls": 1.0}
            for name, (a, b) in {"inclusion": (before, middle), "consistency": (middle, after)}.items():
                cpu[name] = {"service_ms_per_call": (b[0] - a[0]) / calls * 1000,
                             "postgres_ms_per_call": (b[1] - a[1]) / calls * 1000}
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
        "log2_n": math.log2(size), "cpu_per_call": cpu,
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
    parser.add_argument("--without", choices=("same", "own"), default="same",
                        help="the appends without the tree go to the loaded tenant (its tree caught up after "
                             "each round, untimed) or to a tenant of their own (before issue #20's remainder)")
    parser.add_argument("--tree", choices=("trigger", "offline"), default="trigger",
                        help="who builds the loaded tenant's tree: the trigger per row, or this script after "
                             "the COPY (the trigger's layout; for 10 M entries)")
    parser.add_argument("--seed", type=int, default=7,
                        help="of the random entries and tree sizes proved (another one on a kept database: "
                             "the earlier run's pages are warm)")
    parser.add_argument("--data-dir", type=Path,
                        help="keep the database in this directory; a later run with the same directory and "
                             "--entries skips the load and measures again (each run appends 2 x --appends more)")
    args = parser.parse_args()
    load_before = [round(x, 2) for x in os.getloadavg()]
    with scratch_database(prefix="aos-bench-tlog-", keep=args.data_dir) as (url, work):
        logins = service_logins(url, work / "aos")
        loaded = work / "loaded.json"
        if loaded.exists():
            earlier = json.loads(loaded.read_text())
            if (earlier["entries"], earlier["tree"]) != (args.entries, args.tree):
                sys.exit(f"{work} holds {earlier['entries']} entries loaded with --tree {earlier['tree']}")
            load_s, how = earlier["seconds"], {**earlier["how"], "reused_from_an_earlier_run": True}
        else:
            started = time.perf_counter()
            if args.tree == "offline":
                how = load_without_tree(url, args.entries)
            else:
                bulk.load(url, bulk.Volume(tenants=1, ledger=args.entries, traces=0, steps=0, system=0))
                how = {}
            load_s = time.perf_counter() - started
            if args.data_dir:
                loaded.write_text(json.dumps({"entries": args.entries, "tree": args.tree, "seconds": load_s,
                                              "how": how}))
        print(f"loaded {args.entries} entries in {load_s:.1f} s {how}", file=sys.stderr, flush=True)
        (tenant,) = bulk.tenant_ids(1)
        with psycopg.connect(libpq_url(url)) as conn:
            stored = conn.execute("SELECT count(*), pg_total_relation_size('tlog_hashes') FROM tlog_hashes "
                                  "WHERE tenant_id = %s", (tenant,)).fetchone()
            ledger_bytes = conn.execute("SELECT sum(pg_total_relation_size(c.oid)) FROM pg_inherits i "
                                        "JOIN pg_class c ON c.oid = i.inhrelid "
                                        "WHERE i.inhparent = 'audit_ledger'::regclass").fetchone()[0]
            ledger_bytes = int(ledger_bytes or 0)
        measured = proofs(url, logins["logs"], work, tenant, args.entries, args.calls, args.seed)
        print(f"proofs: {rounded({k: v for k, v in measured.items() if not k.startswith('_')})}",
              file=sys.stderr, flush=True)
        producer = Producer(logins["producer"], pool_size=1)
        try:
            rates = append_rates(url, producer, args.appends, args.rounds, with_tenant=tenant, without=args.without)
        finally:
            producer.close()
        checked = tree_check(logins["logs"], work, tenant, args.entries)
    sample, leaves = measured.pop("_sample"), measured.pop("_leaves")
    report = {
        "cpus": len(os.sched_getaffinity(0)),
        "load_average_before": load_before, "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "append_one_per_transaction": rates,
        "bulk_load": {"entries": args.entries, "tree": args.tree, "seconds": load_s,
                      "entries_per_s": args.entries / load_s, **how,
                      "stored_hashes": stored[0], "tlog_hashes_bytes_all_tenants": stored[1],
                      "audit_ledger_bytes": ledger_bytes},
        "proofs_at_the_service": {"tree_size": args.entries, "calls_each": args.calls, **measured},
        "offline": offline(sample, leaves),
        "tree_check": checked,
    }
    print(json.dumps(rounded(report), indent=2))


def tree_check(logs_url: str, work, tenant: str, loaded: int) -> dict[str, object]:
    """The tree as extended by the trigger after the load: the last entry's inclusion proof and
    the consistency proof from the loaded size, both checked against the service's roots."""
    metadata = (("authorization", f"Bearer {mint_token(secret=SECRET, tenant_id=tenant, subject='bench')}"),)
    service = LogsService(logs_url, work, 1)
    try:
        with grpc.insecure_channel(service.address) as channel:
            stub = pb_grpc.AuditLedgerServiceStub(channel)
            first = stub.GetInclusionProof(pb.GetInclusionProofRequest(seq=1), metadata=metadata)
            size = first.tree_size
            last = stub.GetInclusionProof(pb.GetInclusionProofRequest(seq=size, tree_size=size), metadata=metadata)
            tlog.check_record(list(last.audit_path), size, last.root_hash, last.leaf_index,
                              tlog.leaf_hash(last.leaf_data))
            middle = stub.GetInclusionProof(pb.GetInclusionProofRequest(seq=loaded // 2 + 1, tree_size=size),
                                            metadata=metadata)
            tlog.check_record(list(middle.audit_path), size, last.root_hash, middle.leaf_index,
                              tlog.leaf_hash(middle.leaf_data))
            consistency = stub.GetConsistencyProof(pb.GetConsistencyProofRequest(
                first_tree_size=loaded, second_tree_size=size), metadata=metadata)
            tlog.check_tree(list(consistency.proof), size, last.root_hash, loaded, consistency.first_root_hash)
            if consistency.second_root_hash != last.root_hash:
                raise RuntimeError("two roots for one size")
    finally:
        service.stop()
    return {"size_after_appends": size, "root_at_loaded_size": consistency.first_root_hash.hex(),
            "inclusion_of_last_and_middle_verified": True,
            f"consistency_{loaded}_to_{size}_verified": True}


def rounded(value):
    if isinstance(value, float):
        return round(value, 3)
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    return value


if __name__ == "__main__":
    main()
