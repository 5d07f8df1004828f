"""Which database access model serves grpc.aio handlers better? (issue #2's choice)

Compares, on the same query and pool size:
  async   — SQLAlchemy async engine over psycopg 3's async connection
  threads — SQLAlchemy sync engine in a thread pool sized to the pool
            (aos_runtime.db.Database.run, what the services use)
Each worker runs a tenant-scoped transaction (set_config + a 50-row keyset page of
audit_ledger) in a loop; we report throughput and latency percentiles.

    .venv/bin/python bench/db_access_choice.py [--seconds 10] [--concurrency 64] [--pool 10]

Uses the embedded Postgres in a temporary directory unless DATABASE_URL is set.
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import statistics
import time
import uuid

import psycopg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from aos_runtime.db import Database, libpq_url, sync_url
from scratch import scratch_database, service_logins

TENANT = "bench-tenant"
QUERY = text("SELECT id, event_type, entity_type, entity_id, actor_type, actor_id, created_at, seq "
             "FROM audit_ledger WHERE tenant_id = :t ORDER BY created_at DESC, id DESC LIMIT 50")
SCOPE = text("SELECT set_config('aos.tenant_id', :t, true), set_config('statement_timeout', '5000', true)")


def seed(admin_url: str, producer_url: str, rows: int = 5000) -> None:
    # Written as the producer's own login (as the recording library writes), analysed as the owner.
    with psycopg.connect(libpq_url(producer_url), autocommit=True) as conn:
        conn.execute("SELECT set_config('aos.tenant_id', %s, false)", (TENANT,))
        conn.execute("INSERT INTO tenants (id, name) VALUES (%s, 'bench') ON CONFLICT DO NOTHING", (TENANT,))
        with conn.transaction():
            for i in range(rows):
                entry = uuid.uuid4().hex
                conn.execute("INSERT INTO audit_ledger (id, tenant_id, event_type, entity_type, entity_id, "
                             "actor_type, actor_id, created_at, content_hash) VALUES "
                             "(%s, %s, 'LimitUpdated', 'LIMIT', %s, 'SYSTEM', 'svc', now() - %s * interval '1s', %s)",
                             (entry, TENANT, f"lim-{i % 50}", i, hashlib.sha256(entry.encode()).digest()))
    with psycopg.connect(libpq_url(admin_url), autocommit=True) as conn:
        conn.execute("ANALYZE audit_ledger")


def report(name: str, latencies: list[float], seconds: float) -> None:
    latencies.sort()
    q = lambda p: latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000  # noqa: E731
    print(f"{name:<8} {len(latencies) / seconds:>8.0f} tx/s   p50 {q(0.5):6.2f} ms   p99 {q(0.99):6.2f} ms   "
          f"mean {statistics.fmean(latencies) * 1000:6.2f} ms")


async def run_async(url: str, seconds: float, concurrency: int, pool: int) -> None:
    engine = create_async_engine(sync_url(url), pool_size=pool, max_overflow=0, pool_timeout=30,
                                 connect_args={"options": "-c default_transaction_read_only=on"})

    async def one():
        async with engine.begin() as conn:
            await conn.execute(SCOPE, {"t": TENANT})
            (await conn.execute(QUERY, {"t": TENANT})).fetchall()

    await one()
    report("async", await drive(one, seconds, concurrency), seconds)
    await engine.dispose()


async def run_threads(url: str, seconds: float, concurrency: int, pool: int) -> None:
    db = Database(url, service="logs", pool_size=pool, pool_timeout_s=30)

    def page(conn):
        return conn.execute(QUERY, {"t": TENANT}).fetchall()

    async def one():
        await db.run(TENANT, page)

    await one()
    report("threads", await drive(one, seconds, concurrency), seconds)
    await db.close()


async def drive(one, seconds: float, concurrency: int) -> list[float]:
    latencies: list[float] = []
    stop = time.monotonic() + seconds

    async def worker():
        while time.monotonic() < stop:
            t = time.perf_counter()
            await one()
            latencies.append(time.perf_counter() - t)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--pool", type=int, default=10)
    args = parser.parse_args()
    with scratch_database() as (url, work):
        # Both models connect as the Logs service's own login (the services' role), never the admin.
        dsns = service_logins(url, work / "aos")
        seed(url, dsns["producer"])
        print(f"{args.concurrency} concurrent callers, pool {args.pool}, {args.seconds:.0f} s each, "
              f"{os.cpu_count()} cores")
        asyncio.run(run_async(dsns["logs"], args.seconds, args.concurrency, args.pool))
        asyncio.run(run_threads(dsns["logs"], args.seconds, args.concurrency, args.pool))


if __name__ == "__main__":
    main()
