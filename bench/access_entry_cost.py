"""The CPU one recorded view costs the service process, in parts (issue #21).

    .venv/bin/python bench/access_entry_cost.py [--entries 20000] [--batch 500] [--reps 3]

bench/access_recording.py measures the Logs process's CPU per answered view with recording on
and off; on the shared machine identical rounds differ by ±15 %, more than the recording's
share. This measures that share directly, in one process, with the process's CPU clock (every
thread: the flush's work runs on a database thread): the real AccessRecorder over the Logs
service's rules, its own login on a scratch database,

- ``record``: what the call wrapper adds to a view on the event loop (AccessRecorder.record:
  the entry noted in the buffer, with the client's address and user agent);
- ``flush``: what the background writer spends per entry (the entry built, its canonical
  after_state and SPEC §5 content hash, the batch's one statement through SQLAlchemy and
  psycopg, the transaction), ``--batch`` entries a flush (500 is the recorder's batch size; a
  flush at 0.2 s under 8 callers holds ~50-100, ``--batch 50`` shows that).

Prints µs of this process's CPU per entry (min over ``--reps``) next to a view's CPU (the Logs
process, ~2 ms: bench/access_recording.py), and writes bench/results/access_entry_cost.json.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

import psycopg

from aos.logs.v1 import llm_runs_service_pb2 as runs_pb
from aos_runtime.access import AccessRecorder, access_rules
from aos_runtime.auth import Principal
from aos_runtime.db import Database
from scratch import scratch_database, service_logins

BENCH = Path(__file__).resolve().parent
TENANT = "tenant-bench"
METHOD = "/aos.logs.v1.LlmRunsService/GetLlmRunTrace"


async def one_rep(db: Database, entries: int, batch: int) -> dict:
    recorder = AccessRecorder(db, access_rules([runs_pb.DESCRIPTOR.services_by_name["LlmRunsService"]]),
                              batch_size=batch, max_buffered=entries + 1, service="logs")
    principal = Principal(tenant_id=TENANT, actor_id="bench", actor_type="HUMAN", scopes=frozenset({"logs.read"}))
    request = runs_pb.GetLlmRunTraceRequest(run_id=f"{TENANT}.run-support-103")
    metadata = (("user-agent", "grpc-python-asyncio/1.70.0 grpc-c/45.0.0 (linux; chttp2)"),
                ("authorization", "Bearer " + "x" * 300), ("x-request-id", "r-0"))
    started = time.process_time()
    for i in range(entries):
        recorder.record(METHOD, request, principal, granted=True, reason=None, peer="ipv4:127.0.0.1:41234",
                        metadata=metadata, request_id=f"r-{i}")
    recorded = time.process_time()
    await recorder.flush()
    flushed = time.process_time()
    return {"record_us": (recorded - started) / entries * 1e6, "flush_us": (flushed - recorded) / entries * 1e6}


async def run(logs_url: str, entries: int, batch: int, reps: int) -> list[dict]:
    db = Database(logs_url, service="logs")
    try:
        await one_rep(db, min(entries, 1000), batch)  # warm: connections, statement caches
        return [await one_rep(db, entries, batch) for _ in range(reps)]
    finally:
        await db.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entries", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    results: dict = {"command": " ".join(["bench/access_entry_cost.py", *sys.argv[1:]]),
                     "load_before": os.getloadavg()}
    with scratch_database() as (admin_url, work):
        dsns = service_logins(admin_url, work / "aos")
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute("INSERT INTO tenants (id, name) VALUES (%s, %s)", (TENANT, TENANT))
        reps = asyncio.run(run(dsns["logs"], args.entries, args.batch, args.reps))
        with psycopg.connect(admin_url) as conn:
            results["entries_in_ledger"] = conn.execute(
                "SELECT count(*) FROM audit_ledger WHERE tenant_id = %s AND event_type = 'AccessGranted'",
                (TENANT,)).fetchone()[0]
    results["reps"] = [{k: round(v, 1) for k, v in rep.items()} for rep in reps]
    results["record_us_min"] = round(min(r["record_us"] for r in reps), 1)
    results["flush_us_min"] = round(min(r["flush_us"] for r in reps), 1)
    results["per_view_us_min"] = round(results["record_us_min"] + results["flush_us_min"], 1)
    results["load_after"] = os.getloadavg()
    print(json.dumps(results))
    (BENCH / "results").mkdir(exist_ok=True)
    (BENCH / "results" / "access_entry_cost.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
