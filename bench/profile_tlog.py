"""A CPU profile of GetInclusionProof / GetConsistencyProof (issue #20): of a proof call's
service CPU, how much is the proof (tree arithmetic, hashing) and how much the call around it.

    .venv/bin/python bench/profile_tlog.py [--entries 200000] [--calls 1500] [--top 25]
    .venv/bin/python bench/profile_tlog.py --urls FILE   # an already loaded database (see below)

As bench/profile_audit.py: the Logs service in this process (``build_server``) over its own
login, a client thread calling one RPC at a time, ``Database.run``'s transactions run inline
on the event loop's thread so that cProfile (thread CPU time) sees them; gRPC's C core and
PostgreSQL are not in the profile. Inclusion proofs of random seqs at the current size, then
consistency proofs from random sizes to the current one. ``--urls``: a JSON file
{"url": admin URL, "logins": {"logs": …}} of a database already holding bulk tenant 1's
ledger (e.g. loaded by bench/tlog.py's ``load_without_tree``), instead of a scratch one.
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
import random
import tempfile
import threading
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

import grpc
import psycopg

from aos.logs.v1 import audit_ledger_service_pb2 as pb, audit_ledger_service_pb2_grpc as pb_grpc
from aos_recording import bulk
from aos_runtime import db as db_mod
from aos_runtime.auth import mint_token
from aos_runtime.config import Settings
from aos_runtime.db import libpq_url
from aos_runtime.service_main import build_server
from profile_audit import SECRET, inline_run, layer
from scratch import scratch_database, service_logins
from services.logs import server as logs_server


@contextmanager
def database(args):
    if args.urls:
        urls = json.loads(args.urls.read_text())
        yield urls["url"], urls["logins"]["logs"], Path(tempfile.mkdtemp(prefix="aos-bench-profile-tlog-"))
        return
    with scratch_database(prefix="aos-bench-profile-tlog-") as (url, work):
        bulk.load(url, bulk.Volume(tenants=1, ledger=args.entries, traces=0, steps=0, system=0))
        yield url, service_logins(url, work / "aos")["logs"], work


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entries", type=int, default=200_000)
    parser.add_argument("--calls", type=int, default=1_500)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--urls", type=Path)
    args = parser.parse_args()
    load_before = [round(x, 2) for x in os.getloadavg()]
    with database(args) as (url, logs_url, work):
        (tenant,) = bulk.tenant_ids(1)
        with psycopg.connect(libpq_url(url)) as conn:
            size = conn.execute("SELECT tree_size FROM tlog_hashes WHERE tenant_id = %s AND log = 'ledger' "
                                "ORDER BY hash_index DESC LIMIT 1", (tenant,)).fetchone()[0]
        token = mint_token(secret=SECRET, tenant_id=tenant, subject="bench")
        conf = dataclasses.replace(Settings.from_env({}), jwt_secret=SECRET, data_dir=work / "aos",
                                   checkpoint_interval_s=0)
        db_mod.Database.run = inline_run  # type: ignore[method-assign]
        rng = random.Random(7)
        kinds = {"inclusion": [pb.GetInclusionProofRequest(seq=rng.randint(1, size)) for _ in range(args.calls)],
                 "consistency": [pb.GetConsistencyProofRequest(first_tree_size=rng.randint(1, size))
                                 for _ in range(args.calls)]}
        profiles = {kind: cProfile.Profile(time.thread_time) for kind in kinds}
        result: dict[str, float] = {}

        async def serve() -> None:
            server = build_server("logs", logs_server.servicers, conf, logs_url, port=0)
            port = await server.start()
            loop = asyncio.get_running_loop()
            done = loop.create_future()

            def client() -> None:
                metadata = (("authorization", f"Bearer {token}"),)
                with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                    stub = pb_grpc.AuditLedgerServiceStub(channel)
                    calls = {"inclusion": stub.GetInclusionProof, "consistency": stub.GetConsistencyProof}
                    for kind, requests in kinds.items():
                        for request in requests[:100]:
                            calls[kind](request, metadata=metadata, timeout=10)
                        loop.call_soon_threadsafe(profiles[kind].enable)
                        time.sleep(0.2)
                        started = time.monotonic()
                        for request in requests:
                            calls[kind](request, metadata=metadata, timeout=10)
                        result[f"{kind}_wall_ms_per_call"] = (time.monotonic() - started) / args.calls * 1000
                        loop.call_soon_threadsafe(profiles[kind].disable)
                        time.sleep(0.2)
                loop.call_soon_threadsafe(done.set_result, None)

            threading.Thread(target=client, daemon=True).start()
            await done
            await server.stop(grace=1)

        asyncio.run(serve())
    report: dict[str, object] = {
        "workload": f"{args.calls} calls of each, one at a time, tree size {size}, Logs in-process, transactions "
                    "inline; CPU time of the loop thread",
        "load_average_before": load_before, "load_average_after": [round(x, 2) for x in os.getloadavg()],
        **{k: round(v, 3) for k, v in result.items()}}
    texts = []
    for kind, profile in profiles.items():
        stats = pstats.Stats(profile)
        total = sum(v[2] for v in stats.stats.values())  # type: ignore[attr-defined]
        by_layer: dict[str, float] = defaultdict(float)
        for (filename, _line, _name), (_cc, _nc, tottime, _ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
            by_layer["proof (aos_recording.tlog)" if "aos_recording/tlog" in filename else layer(filename)] += tottime
        report[kind] = {"profiled_ms_per_call": round(total / args.calls * 1000, 3),
                        "own_time_by_layer_ms_per_call": {k: round(v / args.calls * 1000, 3) for k, v in
                                                          sorted(by_layer.items(), key=lambda kv: -kv[1]) if v > 0}}
        out = io.StringIO()
        pstats.Stats(profile, stream=out).sort_stats("cumulative").print_stats(args.top)
        texts.append(f"--- {kind}\n" + out.getvalue().split("\n", 6)[-1])
    print(json.dumps(report, indent=2))
    print("\n".join(texts))


if __name__ == "__main__":
    contextvars.copy_context().run(main)
