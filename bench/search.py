"""How fast is evidence search? (issue #25)

    .venv/bin/python bench/search.py [--tenants 20] [--ledger 200000] [--traces 4000] [--steps 10]
                                     [--system 40000] [--queries 100]

Bulk-loads the volume (aos_recording.bulk: the ledger, traces and system records spread over
``--tenants`` tenants; with the defaults 10,000 ledger entries per tenant, the per-tenant size
of the 10 M / 1,000-tenant target), starts the Logs service in this process on an ephemeral
port, and calls SearchEvidence through a real gRPC channel as random tenants: the first page
(50 hits) with its total. Each class of query ``--queries`` times, after 5 unmeasured calls:

- one rare word: a number that is one entry's state value (`n`) in every tenant (~1 hit);
- one common word: an event type's word (~1/30 of the tenant's entries; total counted to 10,001);
- a phrase: an actor id, `actor-17`, searched as the phrase "actor 17" (~2 % of the entries);
- a phrase over trace steps: "step 3 of trace" (one step of each of the tenant's traces).

With ``--lists`` it also calls ListAuditEntries with `search` (the lists' search, the same
matcher) — the common word and the rare word, newest first and oldest first — and the
unfiltered ledger oldest first, a first page of 50 with its total, and reports the in-process
CPU time per call next to the wall time (client and Logs server share this process; the
database's CPU is not in it).

Prints p50/p99 per class (ms) right after the load (GIN pending lists not yet merged) and
after VACUUM, the rows loaded and the search indexes' sizes. Uses the embedded
Postgres in a temporary directory unless DATABASE_URL is set.
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import random
import time
from pathlib import Path
from typing import Any

import grpc
import psycopg

from aos.evidence.v1 import evidence_pb2
from aos.logs.v1 import (
    audit_ledger_service_pb2 as audit_pb,
    audit_ledger_service_pb2_grpc as audit_grpc,
    evidence_search_service_pb2 as pb,
    evidence_search_service_pb2_grpc as pb_grpc,
)
from aos_recording import bulk
from aos_runtime.auth import mint_token
from aos_runtime.config import Settings
from aos_runtime.db import libpq_url
from aos_runtime.service_main import build_server
from scratch import scratch_database, service_logins
from services.logs.server import servicers

SECRET = "bench-secret-" + "x" * 40
INDEXES = ("ix_audit_ledger_search", "ix_aos_trace_steps_search", "ix_system_records_search")


def queries(rng: random.Random, per_tenant: int, text: bool = False) -> dict[str, str]:
    """One query of each class. ``text``: on aos_recording.bulk's free text (bench/search_scale.py),
    also a word in ~60 % of a tenant's entries (`customer`: 3 reasons in 8 and every after
    state's `customer_id`), in ~77 % (`the`), and a phrase of 1 reason in 8."""
    found = {"one_rare_word": str(rng.randrange(1001, max(per_tenant, 1002), 2)),
             "one_common_word": rng.choice(["limitcreated", "actorloggedin", "accessgranted", "apikeycreated"]),
             "phrase_actor_id": f"actor-{rng.randrange(50)}",
             "phrase_in_steps": f'"step {rng.randrange(10)} of trace"'}
    if text:
        found.update({"one_very_common_word": rng.choice(["customer", "the"]),
                      "phrase_in_reasons": rng.choice(['"budget exceeded"', '"manual review"'])})
    return found


def list_queries(search: dict[str, str]) -> dict[str, tuple[str, int]]:
    """ListAuditEntries cases: (search, order) for the same random words as SearchEvidence's."""
    asc, desc = evidence_pb2.SORT_ORDER_ASCENDING, evidence_pb2.SORT_ORDER_DESCENDING
    return {"list_common_word_desc": (search["one_common_word"], desc),
            "list_common_word_asc": (search["one_common_word"], asc),
            "list_rare_word_desc": (search["one_rare_word"], desc),
            "list_rare_word_asc": (search["one_rare_word"], asc),
            "list_unfiltered_asc": ("", asc),
            **({"list_very_common_word_desc": (search["one_very_common_word"], desc)}
               if "one_very_common_word" in search else {})}


async def measure(logs_url: str, data_dir: Path, tenants: list[str], per_tenant: int, count: int,
                  lists: bool = False, text: bool = False, seed: int = 25) -> dict[str, dict[str, float]]:
    settings = dataclasses.replace(Settings.from_env({}), jwt_secret=SECRET, data_dir=data_dir)
    server = build_server("logs", servicers, settings, logs_url, port=0)
    port = await server.start()
    rng = random.Random(seed)  # the same seed: the same tenants and words
    latencies: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {}
    hits: dict[str, list[int]] = {}
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.EvidenceSearchServiceStub(channel)
        audit = audit_grpc.AuditLedgerServiceStub(channel)
        for i in range(count + 5):
            tenant = rng.choice(tenants)
            metadata = (("authorization", f"Bearer {mint_token(secret=SECRET, tenant_id=tenant, subject='b')}"),)
            words = queries(rng, per_tenant, text)
            # (rpc, request) pairs, called one at a time (an aio call starts when it is made)
            calls: dict[str, tuple[Any, Any]] = {
                name: (stub.SearchEvidence, pb.SearchEvidenceRequest(query=query)) for name, query in words.items()}
            if lists:
                calls.update({name: (audit.ListAuditEntries,
                                     audit_pb.ListAuditEntriesRequest(search=search, order=order, page_size=50))
                              for name, (search, order) in list_queries(words).items()})
            for name, (rpc, request) in calls.items():
                started, used = time.perf_counter(), time.process_time()
                reply = await rpc(request, metadata=metadata)
                if i >= 5:
                    latencies.setdefault(name, []).append(time.perf_counter() - started)
                    cpu.setdefault(name, []).append(time.process_time() - used)
                    hits.setdefault(name, []).append(reply.total_size)
    await server.stop(grace=0)
    return {name: {**percentiles(values), "cpu_p50_ms": percentiles(cpu[name])["p50_ms"],
                   "median_total_size": sorted(hits[name])[len(hits[name]) // 2]}
            for name, values in latencies.items()}


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {"p50_ms": round(ordered[len(ordered) // 2] * 1000, 2),
            "p99_ms": round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1000, 2)}


def index_sizes(url: str) -> dict[str, int]:
    """Bytes of each search index over every partition, and of the tables' heaps."""
    with psycopg.connect(libpq_url(url)) as conn:
        found = {name: conn.execute("SELECT coalesce(sum(pg_relation_size(relid)), 0) FROM pg_partition_tree(%s)",
                                    (name,)).fetchone()[0] for name in INDEXES}
        for table in ("audit_ledger", "aos_trace_steps", "system_records"):
            found[f"{table} (heap)"] = conn.execute(
                "SELECT coalesce(sum(pg_relation_size(relid)), 0) FROM pg_partition_tree(%s)", (table,)).fetchone()[0]
    return {name: int(size) for name, size in found.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tenants", type=int, default=20)
    parser.add_argument("--ledger", type=int, default=200_000)
    parser.add_argument("--traces", type=int, default=4_000)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--system", type=int, default=40_000)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--lists", action="store_true", help="also ListAuditEntries with search, both orders")
    args = parser.parse_args()
    volume = bulk.Volume(tenants=args.tenants, ledger=args.ledger, traces=args.traces, steps=args.steps,
                         system=args.system)
    with scratch_database() as (url, work):
        started = time.monotonic()
        bulk.load(url, volume)
        loaded_s = time.monotonic() - started
        logs = service_logins(url, work / "aos")["logs"]  # the service logs in as itself, never as the admin
        tenants, per_tenant = bulk.tenant_ids(args.tenants), args.ledger // args.tenants
        # Right after the load: each partition's GIN pending list not yet merged (what a search
        # meets between autovacuums); then after VACUUM, the steady state.
        after_load = asyncio.run(measure(logs, work, tenants, per_tenant, args.queries, args.lists))
        with psycopg.connect(libpq_url(url), autocommit=True) as conn:
            conn.execute("VACUUM (ANALYZE) audit_ledger, aos_trace_steps, system_records, platform_records")
        vacuumed = asyncio.run(measure(logs, work, tenants, per_tenant, args.queries, args.lists))
        sizes = index_sizes(url)
    print(json.dumps({"volume": dataclasses.asdict(volume), "load_s": round(loaded_s, 1),
                      "queries_per_class": args.queries,
                      "first_page_of_50": {"after_load": after_load, "after_vacuum": vacuumed},
                      "bytes": sizes}, indent=2))


if __name__ == "__main__":
    main()
