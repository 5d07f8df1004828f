"""A heavy worker process's first job against its later ones, and what a service's start costs
(issue #19: the workers' start-up in the heavy gate's service times).

    .venv/bin/python bench/heavy_warmup.py [--entries 15000] [--walks 8] [--rounds 3] [--kill]

Per round: a Logs server in this process (``build_server``, as the tests start it; the heavy
work in AOS_HEAVY_CONCURRENCY=2 worker processes, the default) on a scratch database with one
tenant of ``--entries`` ledger entries. Timed: its ``start()`` (until it takes calls), then
``--walks`` integrity walks one at a time — each walk at the caller, and its job in a worker
(``HeavyProcesses.durations``: from the job sent to its answer, the time the heavy gate's
service time is made of, less the call's own handling). The workers take jobs in turn, so
walks 1 and 2 are each worker's first job. With ``--kill``, one worker is then SIGKILLed, one
walk fails (its worker lost), and the next two walks run on the replacement and the survivor.

Each round is a new server with new worker processes; this process's fork server starts with
the first round's workers and serves the later rounds', as a test session's does (a service's
process starts its own once: round 1 is that case). Run a commit's code with
``PYTHONPATH=<checkout>:bench .venv/bin/python -P bench/heavy_warmup.py`` (as the before/after
figures in RELIABILITY.md were).
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import signal
import statistics
import time
from typing import Any

SECRET = "heavy-warmup-jwt-" + "x" * 40
# The rest is imported in main(), not here: a worker process started by the fork server runs this
# script's top level again (multiprocessing's "main module" fix-up, for a script run by its path;
# a service, run with -m, has none), and these imports (alembic, the embedded Postgres) would then
# be timed as the workers' start-up, which a service's workers do not pay.


async def one_round(conf: Any, url: str, token: str, entries: int, walks: int, kill: bool) -> dict:
    import grpc

    from aos.logs.v1 import audit_ledger_service_pb2 as pb, audit_ledger_service_pb2_grpc as pb_grpc
    from aos_runtime.service_main import build_server
    from services.logs import server as logs_server

    server = build_server("logs", logs_server.servicers, conf, url, port=0)
    began = time.monotonic()
    port = await server.start()
    start_ms = (time.monotonic() - began) * 1000
    metadata = (("authorization", f"Bearer {token}"),)
    request = pb.GetIntegrityReportRequest(max_entries=entries)
    offload = server.db.offload
    assert offload is not None, "AOS_HEAVY_PROCESSES is off"
    caller_ms: list[float] = []
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.AuditLedgerServiceStub(channel)

            async def walk() -> None:
                began = time.monotonic()
                report = await stub.GetIntegrityReport(request, metadata=metadata, timeout=60)
                assert report.entries_checked == entries, report
                caller_ms.append((time.monotonic() - began) * 1000)

            for _ in range(walks):
                await walk()
            jobs_ms = [d * 1000 for d in offload.durations]
            result = {"start_ms": round(start_ms, 1),
                      "first_two_walks_caller_ms": [round(x, 1) for x in caller_ms[:2]],
                      "later_walks_caller_ms_median": round(statistics.median(caller_ms[2:]), 1),
                      "first_two_jobs_ms": [round(x, 1) for x in jobs_ms[:2]],
                      "later_jobs_ms_median": round(statistics.median(jobs_ms[2:]), 1),
                      "later_jobs_ms_max": round(max(jobs_ms[2:]), 1)}
            if kill:
                os.kill(offload.pids()[0], signal.SIGKILL)
                try:
                    await walk()
                    result["walk_after_kill"] = "OK (the killed worker was idle and not chosen)"
                except grpc.aio.AioRpcError as err:
                    result["walk_after_kill"] = err.code().name
                before = len(offload.durations)
                caller_ms.clear()
                for _ in range(2):
                    await walk()
                result["next_two_jobs_ms"] = [round(d * 1000, 1) for d in list(offload.durations)[before:]]
                result["next_two_walks_caller_ms"] = [round(x, 1) for x in caller_ms]
    finally:
        await server.stop(grace=1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entries", type=int, default=15_000)
    parser.add_argument("--walks", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--kill", action="store_true")
    args = parser.parse_args()
    assert args.walks >= 4
    from aos_recording import bulk
    from aos_runtime.auth import mint_token
    from aos_runtime.config import Settings
    from scratch import scratch_database, service_logins

    load_before = [round(x, 2) for x in os.getloadavg()]
    with scratch_database(prefix="aos-bench-warmup-") as (url, work):
        bulk.load(url, bulk.Volume(tenants=1, ledger=args.entries, traces=0, steps=0, system=0))
        (tenant,) = bulk.tenant_ids(1)
        token = mint_token(secret=SECRET, tenant_id=tenant, subject="bench")
        logs_url = service_logins(url, work / "aos")["logs"]
        conf = dataclasses.replace(Settings.from_env({}), jwt_secret=SECRET, data_dir=work / "aos",
                                   checkpoint_interval_s=0, heavy_processes=True, heavy_concurrency=2)

        async def rounds() -> list[dict]:
            return [await one_round(conf, logs_url, token, args.entries, args.walks, args.kill)
                    for _ in range(args.rounds)]

        results = asyncio.run(rounds())
    print(json.dumps({"workload": f"{args.walks} integrity walks of {args.entries} entries one at a time, "
                                  "Logs in-process, 2 heavy worker processes",
                      "load_average_before": load_before,
                      "load_average_after": [round(x, 2) for x in os.getloadavg()],
                      "rounds": results}, indent=2))


if __name__ == "__main__":
    main()
