"""Reads from a streaming replica (issue #9): read throughput, and replication lag under exports.

    .venv/bin/python bench/replica_reads.py [--entries 20000] [--callers 16] [--seconds 5] [--rounds 3]
                                            [--exports 200] [--exporters 2] [--not-durable]

An embedded primary and a streaming replica of it (base backup, hot standby), both
in a scratch directory; migrations and data go to the primary only. In this process:
Logs on the primary, Logs on the replica, Export on the primary, all on ephemeral
ports, called through real gRPC channels.

1. Read throughput: ``--callers`` concurrent callers of ListAuditEntries (first page,
   page_size 50, over a tenant with ``--entries`` ledger entries) for ``--seconds``,
   alternating primary and replica for ``--rounds`` rounds each.
2. Lag: ``--exporters`` tenants export concurrently (CreateExport on the primary), each
   then polls ListAccessEvents on Logs-on-the-replica until its export's EvidenceExported
   entry shows; lag = from CreateExport's reply (its transaction committed) to the first
   reply that holds the entry (so it includes one read's latency); ``--exports`` in all.

Durable by default (synchronous_commit=on, as ``make run``): a commit's WAL is flushed,
hence sent, before the reply. ``--not-durable`` runs as the tests do (fsync and
synchronous_commit off), where the WAL writer sends it within its 200 ms cycle.
Needs the embedded Postgres (ignores DATABASE_URL: it cannot make a replica of that).
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import itertools
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import grpc

from aos.evidence.v1 import bundle_pb2
from aos.export.v1 import export_service_pb2 as export_pb, export_service_pb2_grpc as export_grpc
from aos.logs.v1 import audit_ledger_service_pb2 as audit_pb, audit_ledger_service_pb2_grpc as audit_grpc
from aos_recording import bulk, scenarios
from aos_recording.writers import Producer
from aos_runtime import migrate
from aos_runtime.auth import mint_token
from aos_runtime.config import Settings
from aos_runtime.embedded import EmbeddedPostgres
from aos_runtime.provision import read_url
from aos_runtime.service_main import build_server
from scratch import service_logins
from services.export.server import servicers as export_servicers
from services.logs.server import servicers as logs_servicers

SECRET = "bench-secret-" + "x" * 40


def metadata(tenant: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {mint_token(secret=SECRET, tenant_id=tenant, subject='bench')}"),)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


async def read_round(address: str, tenant: str, callers: int, seconds: float) -> dict:
    """``callers`` concurrent ListAuditEntries callers for ``seconds``: calls/s and latency."""
    latencies: list[float] = []
    auth = metadata(tenant)
    async with grpc.aio.insecure_channel(address) as channel:
        stub = audit_grpc.AuditLedgerServiceStub(channel)
        await stub.ListAuditEntries(audit_pb.ListAuditEntriesRequest(page_size=50), metadata=auth)  # warm
        stop = time.perf_counter() + seconds

        async def caller() -> None:
            while time.perf_counter() < stop:
                started = time.perf_counter()
                reply = await stub.ListAuditEntries(audit_pb.ListAuditEntriesRequest(page_size=50), metadata=auth)
                latencies.append(time.perf_counter() - started)
                assert len(reply.entries) == 50

        began = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(callers)))
        elapsed = time.perf_counter() - began
    return {"calls_per_s": round(len(latencies) / elapsed, 1), "p50_ms": ms(statistics.median(latencies)),
            "p99_ms": ms(percentile(latencies, 0.99))}


async def lag_run(export_address: str, replica_logs: str, tenants: list[str],
                  exports: int) -> tuple[list[float], int]:
    """Each tenant exports in a loop and waits to see its export through Logs on the replica.
    Returns the lags and how many exports the first read after CreateExport's reply already saw."""
    lags: list[float] = []
    first_read_saw = [0]
    remaining = [exports]

    async def exporter(tenant: str) -> None:
        auth = metadata(tenant)
        async with grpc.aio.insecure_channel(export_address) as e_channel, \
                grpc.aio.insecure_channel(replica_logs) as l_channel:
            export, logs = export_grpc.ExportServiceStub(e_channel), audit_grpc.AuditLedgerServiceStub(l_channel)
            while remaining[0] > 0:
                remaining[0] -= 1
                created = (await export.CreateExport(export_pb.CreateExportRequest(
                    bundle_type=bundle_pb2.BUNDLE_TYPE_EVIDENCE, format=bundle_pb2.EXPORT_FORMAT_JSON,
                    run_id=f"{tenant}.run-support-103"), metadata=auth)).export
                committed = time.perf_counter()
                for reads in itertools.count(1):
                    # Newest first; this tenant's exports are sequential, so its newest is the one to see.
                    reply = await logs.ListAccessEvents(audit_pb.ListAccessEventsRequest(page_size=1), metadata=auth)
                    if reply.entries and reply.entries[0].entity_id == created.export_id:
                        lags.append(time.perf_counter() - committed)
                        first_read_saw[0] += reads == 1
                        break

    await asyncio.gather(*(exporter(t) for t in tenants))
    return lags, first_read_saw[0]


async def measure(dsns: dict[str, str], replica: EmbeddedPostgres, work: Path, args) -> dict:
    """``dsns``: each service's own login on the primary (scratch.service_logins). The replica has
    the primary's roles and passwords: Logs reads there as itself (provision.read_url)."""
    settings = dataclasses.replace(Settings.from_env({}), jwt_secret=SECRET, data_dir=work / "aos")
    servers = {"logs@primary": build_server("logs", logs_servicers, settings, dsns["logs"], port=0),
               "logs@replica": build_server("logs", logs_servicers, settings,
                                            read_url(dsns["logs"], replica.url), port=0),
               "export@primary": build_server("export", export_servicers, settings, dsns["export"], port=0)}
    address = {name: f"127.0.0.1:{await server.start()}" for name, server in servers.items()}
    try:
        (reader,) = bulk.tenant_ids(1)
        reads: dict[str, list[dict]] = {"primary": [], "replica": []}
        for _ in range(args.rounds):
            for where in ("primary", "replica"):
                reads[where].append(await read_round(address[f"logs@{where}"], reader, args.callers, args.seconds))
        tenants = list(scenarios.DEMO_TENANTS)[:args.exporters]
        lags, first_read_saw = await lag_run(address["export@primary"], address["logs@replica"], tenants,
                                             args.exports)
    finally:
        for server in servers.values():
            await server.stop(grace=0)
    return {
        "reads": {where: {"rounds": rounds,
                          "median_calls_per_s": statistics.median(r["calls_per_s"] for r in rounds)}
                  for where, rounds in reads.items()},
        "lag": {"exports": len(lags), "exporters": len(tenants), "p50_ms": ms(statistics.median(lags)),
                "p99_ms": ms(percentile(lags, 0.99)), "max_ms": ms(max(lags)),
                "first_read_already_saw_it": first_read_saw},
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entries", type=int, default=20_000)
    parser.add_argument("--callers", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--exports", type=int, default=200)
    parser.add_argument("--exporters", type=int, default=2, choices=(1, 2))
    parser.add_argument("--not-durable", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="aos-bench-replica-"))
    primary = EmbeddedPostgres(work / "primary", durable=not args.not_durable)
    replica = None
    try:
        primary.start()
        replica = primary.start_replica(work / "replica")
        # The admin URL migrates, provisions the logins and bulk-loads; the replica gets all of it
        # (schema, roles, passwords) by streaming, like everything else.
        migrate.upgrade(primary.url)
        dsns = service_logins(primary.url, work / "aos")
        bulk.load(primary.url, bulk.Volume(tenants=1, ledger=args.entries, traces=0, steps=0, system=0))
        producer = Producer(dsns["producer"])
        scenarios.load_demo(producer)
        producer.close()
        replica.wait_for_replay(timeout_s=120)
        result = asyncio.run(measure(dsns, replica, work, args))
    finally:
        if replica:
            replica.stop()
        primary.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps({"durable": not args.not_durable, "entries": args.entries, "callers": args.callers,
                      "seconds_per_round": args.seconds, **result}, indent=2))


if __name__ == "__main__":
    main()
