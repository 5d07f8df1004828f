"""A/B of the Logs service's CPU per ListAuditEntries call between code copies (issue #22).

    .venv/bin/python bench/ab_call_cpu.py --copy A=/path/to/main --copy B=/path/to/branch \
        [--entries 20000] [--calls 1000] [--rounds 6]

One scratch database (one tenant of --entries ledger entries, loaded once), one Logs service
process per copy (``python -m services.logs`` with that copy first on PYTHONPATH, AOS_WORKERS=1),
all started at once; then --rounds rounds, each calling every copy --calls times (first page,
page_size 50, one call at a time), the copies' order alternating between rounds. CPU per call
is the service process's user + system time from /proc over its calls: robust to a loaded
machine (time spent waiting for the CPU is not counted), unlike throughput. Prints each round
and the median per copy. bench/audit_call_costs.py's end-to-end figure, without its bulk load
per copy, so that copies can be compared in alternation on a busy machine.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

import grpc

from aos.logs.v1 import audit_ledger_service_pb2 as pb, audit_ledger_service_pb2_grpc as pb_grpc
from aos_recording import bulk
from aos_runtime.auth import mint_token
from audit_call_costs import server_cpu_per_call_ms
from scratch import scratch_database, service_logins
from workers_scaling import SECRET, LogsService


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--copy", action="append", required=True, help="NAME=PATH of a checkout (repeat)")
    parser.add_argument("--entries", type=int, default=20_000)
    parser.add_argument("--calls", type=int, default=1_000, help="calls per copy per round")
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    copies = dict(item.split("=", 1) for item in args.copy)
    load = [round(x, 2) for x in os.getloadavg()]
    with scratch_database(prefix="aos-bench-ab-") as (url, work):
        bulk.load(url, bulk.Volume(tenants=1, ledger=args.entries, traces=0, steps=0, system=0))
        (tenant,) = bulk.tenant_ids(1)
        token = mint_token(secret=SECRET, tenant_id=tenant, subject="bench")
        logs_url = service_logins(url, work / "aos")["logs"]
        services = {}
        saved = os.environ.get("PYTHONPATH")
        try:
            for name, path in copies.items():
                root = Path(path).resolve()
                os.environ["PYTHONPATH"] = f"{root}:{root / 'gen'}"
                (work / name).mkdir()
                services[name] = LogsService(logs_url, work / name, 1)
        finally:
            if saved is None:
                os.environ.pop("PYTHONPATH", None)
            else:
                os.environ["PYTHONPATH"] = saved
        try:
            sizes = {}
            for name, service in services.items():
                with grpc.insecure_channel(service.address) as channel:
                    reply = pb_grpc.AuditLedgerServiceStub(channel).ListAuditEntries(
                        pb.ListAuditEntriesRequest(page_size=50), metadata=(("authorization", f"Bearer {token}"),),
                        timeout=10)
                sizes[name] = len(reply.entries)
            rounds: dict[str, list[float]] = {name: [] for name in services}
            order = list(services)
            for i in range(args.rounds):
                for name in (order if i % 2 == 0 else order[::-1]):
                    ms = server_cpu_per_call_ms(services[name].address, services[name].process.pid, token, args.calls)
                    rounds[name].append(round(ms, 3))
                    print(json.dumps({"round": i + 1, "copy": name, "cpu_ms_per_call": round(ms, 3),
                                      "load": round(os.getloadavg()[0], 2)}), file=sys.stderr, flush=True)
        finally:
            for service in services.values():
                service.stop()
    print(json.dumps({"workload": f"ListAuditEntries page 1 (50 entries), tenant of {args.entries} entries, "
                                  f"{args.calls} calls per copy per round, one at a time, AOS_WORKERS=1",
                      "entries_answered": sizes, "load_average_before": load,
                      "load_average_after": [round(x, 2) for x in os.getloadavg()],
                      "cpu_ms_per_call_by_round": rounds,
                      "median_cpu_ms_per_call": {k: statistics.median(v) for k, v in rounds.items()}}, indent=2))


if __name__ == "__main__":
    main()
