"""Overview at volume (issue #5): highlights, costs and decisions for one large tenant.

    .venv/bin/python bench/overview_volume.py [--incidents 1000000] [--proposals 100000]
                                              [--runs 1000000] [--months 12] [--calls 300]
                                              [--breakdown]

Writes one tenant with the given volume of source rows (spread over --months
months up to now; 0.1 % of incidents ACTIVE, 1 % of proposals draft, 0.01 % of
runs queued or running, budgets at every scope and reset period, 10,000 breaches;
the runs' daily cost rollup follows through its trigger, and load_s includes it),
VACUUM ANALYZEs as an operator would, starts the Overview service in this process
on an ephemeral port and calls each RPC through a real gRPC channel, one call at a
time. Reports p50 and p99 per RPC, client-side (the whole call, gRPC included), and
this process's CPU time per call (client and service, not Postgres'). GetBudgetHistory
is measured at its default 14 days and at its maximum, 92.
Uses the embedded Postgres in a temporary directory unless DATABASE_URL is set.

--breakdown adds where a call's time goes (medians over the same number of calls):
a gRPC call that touches no database (Health.Check), Database.run of an empty unit
of work (pool, BEGIN, tenant scope, COMMIT), and each RPC's store function run
through Database.run without gRPC.
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import statistics
import time
from pathlib import Path

import grpc
from sqlalchemy import create_engine, text

from aos.overview.v1 import overview_service_pb2 as pb, overview_service_pb2_grpc as pb_grpc
from aos_runtime.auth import mint_token
from aos_runtime.config import Settings
from aos_runtime.db import sync_url
from aos_runtime.service_main import build_server
from scratch import scratch_database, service_logins
from services.overview.server import servicers

SECRET = "bench-secret-" + "x" * 40
TENANT = "tenant-volume"

LOAD = """
INSERT INTO tenants (id, name) VALUES (:t, 'Volume Corp');
INSERT INTO incidents (id, tenant_id, title, severity, lifecycle_state, created_at)
SELECT 'inc-' || i, :t, 'incident ' || i, (ARRAY['critical','high','medium','low'])[1 + i % 4],
       CASE WHEN i % 1000 = 0 THEN 'ACTIVE' WHEN i % 3 = 0 THEN 'ACKED' ELSE 'RESOLVED' END,
       now() - make_interval(secs => (i::float8 / :incidents) * :span)
FROM generate_series(1, :incidents) i;
INSERT INTO policy_proposals (id, tenant_id, proposal_name, status, created_at)
SELECT 'prop-' || i, :t, 'proposal ' || i, CASE WHEN i % 100 = 0 THEN 'draft' WHEN i % 2 = 0 THEN 'approved'
       ELSE 'rejected' END, now() - make_interval(secs => (i::float8 / :proposals) * :span)
FROM generate_series(1, :proposals) i;
INSERT INTO worker_runs (id, tenant_id, project_id, agent_id, provider, model, status, cost_cents, created_at)
SELECT 'run-' || i, :t, 'proj-' || (i % 20), 'agent-' || (i % 50),
       (ARRAY['openai','anthropic','google','mistral'])[1 + i % 4], 'model-' || (i % 7),
       CASE WHEN i % 10000 = 0 THEN 'running' WHEN i % 10000 = 1 THEN 'queued' ELSE 'completed' END,
       (i::bigint * 7919) % 500, now() - make_interval(secs => (i::float8 / :runs) * :span)
FROM generate_series(1, :runs) i;
INSERT INTO limits (id, tenant_id, name, limit_category, scope, scope_id, max_value, reset_period)
SELECT 'lim-' || s || '-' || r, :t, s || ' ' || r || ' budget', 'BUDGET', s,
       CASE s WHEN 'TENANT' THEN NULL WHEN 'PROJECT' THEN 'proj-3' WHEN 'AGENT' THEN 'agent-7' ELSE 'openai' END,
       1000000000, r
FROM unnest(ARRAY['TENANT','PROJECT','AGENT','PROVIDER']) s, unnest(ARRAY['DAILY','WEEKLY','MONTHLY','NONE']) r;
INSERT INTO limit_breaches (id, tenant_id, limit_id, value_at_breach, limit_value, breached_at)
SELECT 'br-' || i, :t, 'lim-PROJECT-MONTHLY', 1000000000 + i, 1000000000,
       now() - make_interval(secs => (i::float8 / 10000) * :span)
FROM generate_series(1, 10000) i;
"""


def load(url: str, incidents: int, proposals: int, runs: int, months: int) -> float:
    # Synchronous commits, unlike the embedded server's default: while an asynchronous
    # commit is not flushed, VACUUM sets no hint bits on the rows (nor visibility-map
    # bits on their pages), and every index-only scan would then visit the heap.
    engine = create_engine(sync_url(url), connect_args={"options": "-c synchronous_commit=on"})
    started = time.perf_counter()
    params = {"t": TENANT, "incidents": incidents, "proposals": proposals, "runs": runs,
              "span": months * 30 * 86400}
    with engine.begin() as conn:
        for statement in filter(str.strip, LOAD.split(";")):
            conn.execute(text(statement), params)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE incidents, policy_proposals, worker_runs, worker_run_cost_daily, limits, "
                          "limit_breaches"))
    engine.dispose()
    return time.perf_counter() - started


async def measure(overview_url: str, calls: int, data_dir: Path, breakdown: bool = False) -> dict[str, dict]:
    """``overview_url``: the Overview service's own login (aos_overview); it refuses the admin's."""
    settings = dataclasses.replace(Settings.from_env({}), jwt_secret=SECRET, data_dir=data_dir)
    server = build_server("overview", servicers, settings, overview_url, port=0)
    port = await server.start()
    metadata = (("authorization", f"Bearer {mint_token(secret=SECRET, tenant_id=TENANT, subject='bench')}"),)
    results = {}
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.OverviewServiceStub(channel)
        rpcs = {"GetHighlights": (stub.GetHighlights, pb.GetHighlightsRequest()),
                "GetCosts": (stub.GetCosts, pb.GetCostsRequest()),
                "ListDecisions": (stub.ListDecisions, pb.ListDecisionsRequest(page_size=50)),
                "GetBudgetHistory": (stub.GetBudgetHistory, pb.GetBudgetHistoryRequest()),
                "GetBudgetHistory_92d": (stub.GetBudgetHistory, pb.GetBudgetHistoryRequest(days=92))}
        for name, (call, request) in rpcs.items():
            for _ in range(20):  # warm the pool, the caches and the plans
                reply = await call(request, metadata=metadata)
            latencies = []
            cpu_started = time.process_time()
            for _ in range(calls):
                started = time.perf_counter()
                reply = await call(request, metadata=metadata)
                latencies.append(time.perf_counter() - started)
            cpu = time.process_time() - cpu_started
            ordered = sorted(latencies)
            # cpu_ms: this process's CPU per call (client and service, not Postgres), robust under load.
            results[name] = {"p50_ms": round(statistics.median(ordered) * 1000, 2),
                             "p99_ms": round(ordered[int(0.99 * (len(ordered) - 1))] * 1000, 2),
                             "cpu_ms": round(cpu / calls * 1000, 2)}
            if name == "GetHighlights":
                results[name]["answer"] = {d.domain: [d.total, d.total_is_estimate, d.pending]
                                           for d in reply.domain_counts}
    if breakdown:
        results["breakdown_p50_ms"] = await _breakdown(overview_url, calls, port)
    await server.stop(grace=0)
    return results


async def _breakdown(overview_url: str, calls: int, port: int) -> dict[str, float]:
    from datetime import datetime, timedelta, timezone

    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from aos_runtime.db import Database
    from aos_runtime.periods import month_of, reset_window
    from services.overview import store
    from services.overview.server import _RESET_PERIODS, CURRENCY

    async def median_ms(call) -> float:
        for _ in range(20):
            await call()
        latencies = []
        for _ in range(calls):
            started = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - started)
        return round(statistics.median(latencies) * 1000, 2)

    now = datetime.now(timezone.utc)
    windows = {period: reset_window(period, now) for period in _RESET_PERIODS}
    db = Database(overview_url, service="overview")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            figures = {"grpc_without_db": await median_ms(lambda: health.Check(health_pb2.HealthCheckRequest()))}
        figures["db_run_empty"] = await median_ms(lambda: db.run(TENANT, lambda conn: None))
        figures["db_run_highlights"] = await median_ms(
            lambda: db.run(TENANT, store.highlights, TENANT, now - timedelta(hours=24)))
        figures["db_run_costs"] = await median_ms(
            lambda: db.run(TENANT, store.costs, TENANT, CURRENCY, *month_of(now), windows))
    finally:
        await db.close()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--incidents", type=int, default=1_000_000)
    parser.add_argument("--proposals", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--months", type=int, default=12)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--breakdown", action="store_true")
    args = parser.parse_args()
    with scratch_database() as (url, work):
        load_s = load(url, args.incidents, args.proposals, args.runs, args.months)  # as the admin (owner)
        overview = service_logins(url, work / "aos")["overview"]
        results = asyncio.run(measure(overview, args.calls, work, args.breakdown))
    print(json.dumps({"incidents": args.incidents, "proposals": args.proposals, "worker_runs": args.runs,
                      "months": args.months, "load_s": round(load_s, 1), "calls_each": args.calls,
                      "rpcs": results}, indent=2))


if __name__ == "__main__":
    main()
