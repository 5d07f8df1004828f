"""Pipelined against one-statement-at-a-time transactions for a ListAuditEntries page (issue #22).

    .venv/bin/python bench/pipeline_ab.py [--entries 20000] [--calls 300] [--rounds 10]

One process, one Database over the Logs service's own login with one pooled connection (so
one Postgres backend), the first page (50 entries, and the ledger's size) read with
``Database.run``: once as the store function is (``@pipelined``: BEGIN, scope, page and size
sent together, then COMMIT) and once through a wrapper without the mark (BEGIN, scope, page,
size, COMMIT: a round trip each). Blocks of --calls alternate (A, B, B, A, …) for --rounds;
each block's CPU per call is this process's (time.process_time: the loop and the pool's
thread) and the backend's (/proc/<pid>/stat of the one backend, user + system) — CPU, not
wall time, so that a loaded machine's waiting is not counted. Prints the medians.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from pathlib import Path

from aos_recording import bulk
from aos_runtime.db import Database, fetch_value
from scratch import scratch_database, service_logins
from services.logs import store


def backend_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def unpipelined(conn, *args):
    return store.list_audit_entries(conn, *args)


async def measure(db: Database, tenant: str, args) -> dict:
    pid = await db.run(tenant, lambda conn: fetch_value(conn, "SELECT pg_backend_pid()", {}))
    filters = store.AuditFilters()
    works = {"pipelined": store.list_audit_entries, "one at a time": unpipelined}
    pages = {name: await db.run(tenant, work, tenant, filters, None, 50) for name, work in works.items()}
    assert pages["pipelined"] == pages["one at a time"] and len(pages["pipelined"].rows) == 50
    for _ in range(100):  # warm-up: prepared statements, caches
        for work in works.values():
            await db.run(tenant, work, tenant, filters, None, 50)
    client: dict[str, list[float]] = {name: [] for name in works}
    server: dict[str, list[float]] = {name: [] for name in works}
    names = list(works)
    for i in range(args.rounds):
        for name in (names if i % 2 == 0 else names[::-1]):
            cpu, pg = time.process_time(), backend_cpu_s(pid)
            for _ in range(args.calls):
                await db.run(tenant, works[name], tenant, filters, None, 50)
            client[name].append((time.process_time() - cpu) / args.calls * 1000)
            server[name].append((backend_cpu_s(pid) - pg) / args.calls * 1000)
    return {"client_cpu_ms_per_call": {k: round(statistics.median(v), 3) for k, v in client.items()},
            "postgres_backend_cpu_ms_per_call": {k: round(statistics.median(v), 3) for k, v in server.items()},
            "client_rounds": {k: [round(x, 3) for x in v] for k, v in client.items()},
            "backend_rounds": {k: [round(x, 3) for x in v] for k, v in server.items()}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entries", type=int, default=20_000)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    load = [round(x, 2) for x in os.getloadavg()]
    with scratch_database(prefix="aos-bench-pipeline-") as (url, work):
        bulk.load(url, bulk.Volume(tenants=1, ledger=args.entries, traces=0, steps=0, system=0))
        (tenant,) = bulk.tenant_ids(1)
        db = Database(service_logins(url, work / "aos")["logs"], service="logs", pool_size=1)

        async def run() -> dict:
            try:
                return await measure(db, tenant, args)
            finally:
                await db.close()

        result = asyncio.run(run())
    print(json.dumps({"workload": f"ListAuditEntries page 1 (50 entries + the ledger's size) via Database.run, "
                                  f"tenant of {args.entries} entries, {args.calls} calls per block, "
                                  f"{args.rounds} rounds alternating",
                      "load_average_before": load, "load_average_after": [round(x, 2) for x in os.getloadavg()],
                      **result}, indent=2))


if __name__ == "__main__":
    main()
