"""A CPU profile of ListAuditEntries (issue #22): where a call's time goes, in one process.

    .venv/bin/python bench/profile_audit.py [--entries 20000] [--calls 1500] [--top 30] [--out FILE]

The Logs service runs in this process (``build_server``, as the test suite starts it) over
its own login on a scratch database; a client thread calls ListAuditEntries (first page,
50 entries) ``--calls`` times, one at a time. cProfile sees one thread only, so while it
runs, ``Database.run``'s transactions are run inline on the event loop's thread instead of
the pool's threads (the same SQL, session scope and store code; only the thread hand-off,
a fixed ~0.1 ms measured by bench/audit_call_costs.py, is left out). The report groups the
profile's own time (tottime) by the layer of the code that spent it, and prints the top
functions by cumulative and own time. gRPC's C core runs on its own threads and is not
in the profile: bench/audit_call_costs.py measures the whole process's CPU per call.
"""
from __future__ import annotations

import argparse
import asyncio
import contextvars
import cProfile
import dataclasses
import io
import json
import os
import pstats
import threading
import time
from collections import defaultdict
from pathlib import Path

import grpc

from aos.logs.v1 import audit_ledger_service_pb2 as pb, audit_ledger_service_pb2_grpc as pb_grpc
from aos_recording import bulk
from aos_runtime import db as db_mod
from aos_runtime.auth import mint_token
from aos_runtime.config import Settings
from aos_runtime.service_main import build_server
from scratch import scratch_database, service_logins
from services.logs import server as logs_server

SECRET = "profile-audit-jwt-" + "x" * 40
PAGE_SIZE = 50
LAYERS = (  # the first match names the layer of a function's file
    ("services/logs", "handler (services/logs)"), ("aos_evidence", "rows to protos (aos_evidence)"),
    ("aos_runtime/evidence", "evidence metadata (aos_runtime.evidence)"),
    ("aos_runtime/auth", "token (aos_runtime.auth)"), ("jwt/", "token (PyJWT)"), ("cryptography", "token (PyJWT)"),
    ("aos_runtime", "runtime (server, db, paging, metrics)"), ("sqlalchemy", "SQLAlchemy"),
    ("psycopg", "psycopg"), ("grpc", "grpc (Python side)"), ("opentelemetry", "tracing"),
    ("prometheus_client", "metrics"), ("logging", "call log"), ("asyncio", "asyncio"),
    ("google/protobuf", "protobuf (Python side)"))


def inline_run(self, tenant_id, work, *args):
    """Database.run without the thread: the same transaction, scope and work, on this thread."""
    async def run():
        timeout_ms = str(self._timeout_ms(db_mod.call_deadline.get()))
        with self.engine.begin() as conn:
            scope = {"tenant": tenant_id or "", "timeout": timeout_ms}
            if getattr(work, "pipelined", False):  # issue #22's pipelined hot reads
                return db_mod._pipelined(conn, scope, work, args)
            if hasattr(db_mod, "fetch_rows"):  # issue #22's code
                db_mod.fetch_rows(conn, db_mod._SCOPE, scope)
            else:  # before it (a copy of an older commit, for a before/after profile)
                conn.execute(db_mod._SCOPE, scope)
            return work(conn, *args)
    return run()


def layer(filename: str) -> str:
    for needle, name in LAYERS:
        if needle in filename:
            return name
    return "builtins / other" if filename.startswith(("~", "<")) else "other: " + Path(filename).name


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entries", type=int, default=20_000)
    parser.add_argument("--calls", type=int, default=1_500)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--out", type=Path, help="also write the pstats dump here")
    args = parser.parse_args()
    load_before = [round(x, 2) for x in os.getloadavg()]
    with scratch_database(prefix="aos-bench-profile-") as (url, work):
        bulk.load(url, bulk.Volume(tenants=1, ledger=args.entries, traces=0, steps=0, system=0))
        (tenant,) = bulk.tenant_ids(1)
        token = mint_token(secret=SECRET, tenant_id=tenant, subject="bench")
        logs_url = service_logins(url, work / "aos")["logs"]
        conf = dataclasses.replace(Settings.from_env({}), jwt_secret=SECRET, data_dir=work / "aos",
                                   checkpoint_interval_s=0)
        db_mod.Database.run = inline_run  # type: ignore[method-assign]
        # CPU time of this thread (the event loop, running the transactions inline), not wall time:
        # time waiting for Postgres or for the client is no cost of the service's.
        profile = cProfile.Profile(time.thread_time)
        result: dict[str, float] = {}

        async def serve() -> None:
            server = build_server("logs", logs_server.servicers, conf, logs_url, port=0)
            port = await server.start()
            done = asyncio.get_running_loop().create_future()
            loop = asyncio.get_running_loop()

            def client() -> None:
                request = pb.ListAuditEntriesRequest(page_size=PAGE_SIZE)
                metadata = (("authorization", f"Bearer {token}"),)
                with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                    stub = pb_grpc.AuditLedgerServiceStub(channel)
                    for _ in range(200):
                        stub.ListAuditEntries(request, metadata=metadata, timeout=10)
                    loop.call_soon_threadsafe(profile.enable)
                    time.sleep(0.2)
                    started = time.process_time(), time.monotonic()
                    for _ in range(args.calls):
                        stub.ListAuditEntries(request, metadata=metadata, timeout=10)
                    result["wall_ms_per_call"] = (time.monotonic() - started[1]) / args.calls * 1000
                    loop.call_soon_threadsafe(profile.disable)
                loop.call_soon_threadsafe(done.set_result, None)

            threading.Thread(target=client, daemon=True).start()
            await done
            await server.stop(grace=1)

        asyncio.run(serve())
    stats = pstats.Stats(profile)
    if args.out:
        stats.dump_stats(args.out)
    total = sum(v[2] for v in stats.stats.values())  # type: ignore[attr-defined]
    by_layer: dict[str, float] = defaultdict(float)
    for (filename, _line, _name), (_cc, _nc, tottime, _ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        by_layer[layer(filename)] += tottime
    report = {
        "workload": f"ListAuditEntries page 1 ({PAGE_SIZE} entries), {args.calls} calls one at a time, "
                    f"tenant of {args.entries} entries, Logs in-process, transactions inline; "
                    "CPU time of the loop thread",
        "load_average_before": load_before, "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "profiled_ms_per_call": round(total / args.calls * 1000, 3),
        "own_time_by_layer_ms_per_call": {k: round(v / args.calls * 1000, 3)
                                          for k, v in sorted(by_layer.items(), key=lambda kv: -kv[1]) if v > 0},
        **{k: round(v, 3) for k, v in result.items()},
    }
    print(json.dumps(report, indent=2))
    for key in ("cumulative", "tottime"):
        out = io.StringIO()
        pstats.Stats(profile, stream=out).sort_stats(key).print_stats(args.top)
        print(out.getvalue().split("\n", 6)[-1])


if __name__ == "__main__":
    contextvars.copy_context().run(main)
