"""Does a deep page cost what the first page costs? (issue #4)

    .venv/bin/python bench/list_depth.py [--entries 110000] [--pages 2000] [--page-size 50]
        [--sort event_type|entity_type|actor ...] [--order asc|desc]
    .venv/bin/python bench/list_depth.py --runs 30000 [--pages 500] [--run-sort total_tokens ...]

Bulk-loads one large tenant's audit ledger, starts the Logs service in this process
on an ephemeral port, and walks ListAuditEntries page by page through a real gRPC
channel, following next_page_token (no shortcut to the deep pages). Reports the
median and p90 latency of the first 20 pages against the last 20, and their ratio. With
--sort, each sort field (and created_at, the default) is walked in turn on the same load
(issue #25: a sorted list's keyset on (field, created_at, id)). With --runs, the tenant gets that
many LLM run records (COPY, no ledger) and ListLlmRuns is walked instead, in each --run-sort
(issue #25: the total_tokens sort's later pages, migration 0033).
Uses the embedded Postgres in a temporary directory unless DATABASE_URL is set.
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import hashlib
import json
import random
import statistics
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import grpc
import psycopg

from aos.evidence.v1 import evidence_pb2
from aos.logs.v1 import (
    audit_ledger_service_pb2 as pb,
    audit_ledger_service_pb2_grpc as pb_grpc,
    llm_runs_service_pb2 as runs_pb,
    llm_runs_service_pb2_grpc as runs_grpc,
)
from aos_recording import bulk
from aos_runtime.auth import mint_token
from aos_runtime.config import Settings
from aos_runtime.db import libpq_url
from aos_runtime.service_main import build_server
from scratch import scratch_database, service_logins
from services.logs.server import servicers

SECRET = "bench-secret-" + "x" * 40


async def walk(logs_url: str, pages: int, size: int, data_dir: Path, sort: int = 0, order: int = 0,
               runs: bool = False) -> list[float]:
    settings = dataclasses.replace(Settings.from_env({}), jwt_secret=SECRET, data_dir=data_dir)
    server = build_server("logs", servicers, settings, logs_url, port=0)
    port = await server.start()
    (tenant,) = bulk.tenant_ids(1)
    metadata = (("authorization", f"Bearer {mint_token(secret=SECRET, tenant_id=tenant, subject='bench')}"),)
    latencies, token = [], ""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.AuditLedgerServiceStub(channel)
        run_stub = runs_grpc.LlmRunsServiceStub(channel)
        for _ in range(pages):
            started = time.perf_counter()
            if runs:
                reply = await run_stub.ListLlmRuns(runs_pb.ListLlmRunsRequest(
                    page_size=size, page_token=token, sort=sort, order=order),  # type: ignore[arg-type]
                    metadata=metadata)
                items = len(reply.runs)
            else:
                reply = await stub.ListAuditEntries(pb.ListAuditEntriesRequest(
                    page_size=size, page_token=token, sort=sort, order=order),  # type: ignore[arg-type]
                    metadata=metadata)
                items = len(reply.entries)
            latencies.append(time.perf_counter() - started)
            assert items == size, "ran out of rows: load more with --entries / --runs"
            token = reply.next_page_token
    await server.stop(grace=0)
    return latencies


RUN_COPY = ("COPY llm_run_records (id, tenant_id, run_id, provider, model, execution_status, source, started_at, "
            "created_at, input_tokens, output_tokens, cost_cents, content_hash) FROM STDIN")


def load_runs(admin_url: str, tenant: str, count: int, seed: int = 7) -> None:
    """``count`` run records of ``tenant`` one second apart, with token counts drawn from a few
    hundred values (so the sort has ties), through COPY as the owner."""
    rng = random.Random(seed)
    start = datetime(2026, 6, 1, tzinfo=timezone.utc)
    with psycopg.connect(libpq_url(admin_url), autocommit=True) as conn:
        conn.execute("SET ROLE aos_owner")
        with conn.transaction(), conn.cursor().copy(RUN_COPY) as copy:
            for i in range(count):
                at = start + timedelta(seconds=i)
                copy.write_row((f"llm-bench-{i}", tenant, f"{tenant}.run-{i}", "openai", "gpt", "succeeded", "bench",
                                at, at, rng.randrange(400), rng.randrange(300), rng.randrange(1000),
                                hashlib.sha256(str(i).encode()).digest()))
        conn.execute("RESET ROLE")
        conn.execute("ANALYZE llm_run_records")


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {"p50_ms": round(statistics.median(ordered) * 1000, 2),
            "p90_ms": round(ordered[int(0.9 * (len(ordered) - 1))] * 1000, 2)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entries", type=int, default=110_000)
    parser.add_argument("--pages", type=int, default=2000)
    parser.add_argument("--page-size", type=int, default=50)
    parser.add_argument("--sort", nargs="*", default=[], choices=("event_type", "entity_type", "actor"),
                        help="also walk the list sorted by these fields")
    parser.add_argument("--order", choices=("asc", "desc"), default="desc")
    parser.add_argument("--runs", type=int, default=0,
                        help="walk ListLlmRuns over this many run records instead of the ledger")
    parser.add_argument("--run-sort", nargs="*", default=["total_tokens"],
                        choices=("started_at", "total_cost_cents", "total_tokens"),
                        help="with --runs: the sort fields walked (after created_at)")
    args = parser.parse_args()
    order = evidence_pb2.SORT_ORDER_ASCENDING if args.order == "asc" else evidence_pb2.SORT_ORDER_DESCENDING
    sorts = {"created_at": pb.AUDIT_SORT_FIELD_CREATED_AT, "event_type": pb.AUDIT_SORT_FIELD_EVENT_TYPE,
             "entity_type": pb.AUDIT_SORT_FIELD_ENTITY_TYPE, "actor": pb.AUDIT_SORT_FIELD_ACTOR}
    run_sorts = {"created_at": runs_pb.LLM_RUN_SORT_FIELD_CREATED_AT,
                 "started_at": runs_pb.LLM_RUN_SORT_FIELD_STARTED_AT,
                 "total_cost_cents": runs_pb.LLM_RUN_SORT_FIELD_TOTAL_COST_CENTS,
                 "total_tokens": runs_pb.LLM_RUN_SORT_FIELD_TOTAL_TOKENS}
    results = {}
    with scratch_database() as (url, work):
        bulk.load(url, bulk.Volume(tenants=1, ledger=0 if args.runs else args.entries, traces=0, steps=0, system=0))
        if args.runs:
            load_runs(url, bulk.tenant_ids(1)[0], args.runs)
        logs = service_logins(url, work / "aos")["logs"]  # the service logs in as itself, never as the admin
        for name in ["created_at", *(args.run_sort if args.runs else args.sort)]:
            latencies = asyncio.run(walk(logs, args.pages, args.page_size, work,
                                         (run_sorts if args.runs else sorts)[name], order, runs=bool(args.runs)))
            first, last = summary(latencies[:20]), summary(latencies[-20:])
            results[name] = {"pages_1_to_20": first, f"pages_{args.pages - 19}_to_{args.pages}": last,
                             "deep_over_first_p50": round(last["p50_ms"] / first["p50_ms"], 2),
                             "all_pages": summary(latencies)}
    print(json.dumps({"list": "runs" if args.runs else "audit",
                      "entries": args.runs or args.entries, "page_size": args.page_size, "pages_walked": args.pages,
                      "order": args.order, "sorts": results}, indent=2))


if __name__ == "__main__":
    main()
