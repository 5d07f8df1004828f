"""Where one ListAuditEntries call's CPU goes, against the bare server's (issue #9, ratio 1).

    .venv/bin/python bench/audit_call_costs.py [--entries 10000] [--calls 3000]

suite_bench.py's ratio 1 compares the throughput of the Logs service and of a bare
grpc.aio server answering the same bytes (bench/bare_server.py), each one Python
process. Both are bound by their process's CPU, so the ratio is close to the ratio of
their CPU per call. This measures that directly and splits the service's side:

1. server CPU per call, end to end: the Logs service (``python -m services.logs``) and
   the bare server, each its own process, called one call at a time over a real channel
   (the first page, ``page_size`` 50); CPU from /proc (user + system) over ``--calls``
   calls. One call at a time is the floor: under concurrent load the service's threads
   also pay for switching between them.
2. the service's work, piece by piece, in this process, one thread, the same code the
   handler runs: verifying the bearer token, one database transaction doing nothing but
   its tenant scope (pool checkout, BEGIN + scope, COMMIT, the thread hand-off), the
   page's SQL inside it (page + its total), turning 50 rows into protobuf messages
   with their evidence metadata, serializing the response, and the call-log line.
   Each is the best of --repeat rounds (the machine is shared; the minimum is the cost
   least disturbed by others).

Embedded Postgres in a temporary directory unless DATABASE_URL is set.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import grpc

from aos.logs.v1 import audit_ledger_service_pb2 as pb, audit_ledger_service_pb2_grpc as pb_grpc
from aos_evidence.messages import audit_entry
from aos_recording import bulk
from aos_runtime import auth
from aos_runtime.auth import mint_token
from aos_runtime.db import Database
from aos_runtime.observability import JsonFormatter
from scratch import scratch_database, service_logins
from services.logs import store
from services.logs.messages import answer_metadata
from workers_scaling import SECRET, LogsService

BENCH = Path(__file__).resolve().parent
METHOD = "/aos.logs.v1.AuditLedgerService/ListAuditEntries"
PAGE_SIZE = 50


def process_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_cpu_per_call_ms(address: str, pid: int, token: str | None, calls: int) -> float:
    """CPU the server process spends per call, calls sent one at a time."""
    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    request = pb.ListAuditEntriesRequest(page_size=PAGE_SIZE)
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.AuditLedgerServiceStub(channel)
        for _ in range(200):  # warm-up: connections, pools, prepared statements
            stub.ListAuditEntries(request, metadata=metadata, timeout=10)
        before = process_cpu_s(pid)
        for _ in range(calls):
            stub.ListAuditEntries(request, metadata=metadata, timeout=10)
        return (process_cpu_s(pid) - before) / calls * 1000


def best_ms(work, *, number: int, repeat: int) -> float:
    """Least CPU per run of ``work`` (this process, every thread) over ``repeat`` rounds."""
    rounds = []
    for _ in range(repeat):
        started = time.process_time()
        for _ in range(number):
            work()
        rounds.append((time.process_time() - started) / number * 1000)
    return min(rounds)


def pieces(logs_url: str, tenant: str, token: str, repeat: int) -> dict[str, float]:
    verifier = auth.TokenVerifier(secret=SECRET, public_key_pem=None, audience="aos-evidence", issuer=None)
    db = Database(logs_url, service="logs")  # the Logs service's own login, as the handler's
    loop = asyncio.new_event_loop()
    filters = store.AuditFilters()

    def transaction(work, *args):
        return loop.run_until_complete(db.run(tenant, work, *args))

    rows = transaction(store.list_audit_entries, tenant, filters, None, PAGE_SIZE).rows
    assert len(rows) == PAGE_SIZE, "the tenant has fewer entries than a page"
    entries = [audit_entry(r) for r in rows]
    response = pb.ListAuditEntriesResponse(metadata=answer_metadata(tenant, "audit_ledger", entries),
                                           entries=entries, has_more=True)
    formatter = JsonFormatter()
    record = logging.LogRecord("aos.call", logging.INFO, __file__, 0, "call", None, None)
    record.__dict__.update(method=METHOD, code="OK", ms=12.34, tenant_id=tenant, reason=None)
    try:
        empty = best_ms(lambda: transaction(lambda conn: None), number=300, repeat=repeat)
        with_page = best_ms(lambda: transaction(store.list_audit_entries, tenant, filters, None, PAGE_SIZE),
                            number=300, repeat=repeat)
        return {
            "verify the bearer token": best_ms(lambda: verifier.verify(f"Bearer {token}"), number=2000, repeat=repeat),
            "a transaction doing only its scope (pool, BEGIN + scope, COMMIT, thread hand-off)": empty,
            "the page's SQL in it (page + its total), beyond the empty transaction": with_page - empty,
            "50 rows into messages with evidence metadata": best_ms(
                lambda: answer_metadata(tenant, "audit_ledger", [audit_entry(r) for r in rows]),
                number=300, repeat=repeat),
            "serializing the response": best_ms(response.SerializeToString, number=2000, repeat=repeat),
            "the call-log line (JSON)": best_ms(lambda: formatter.format(record), number=2000, repeat=repeat),
        }
    finally:
        loop.run_until_complete(db.close())
        loop.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entries", type=int, default=10_000, help="the tenant's ledger entries")
    parser.add_argument("--calls", type=int, default=3_000, help="calls per end-to-end measurement")
    parser.add_argument("--repeat", type=int, default=7, help="rounds per piece (the least is kept)")
    args = parser.parse_args()
    load_before = [round(x, 2) for x in os.getloadavg()]
    with scratch_database(prefix="aos-bench-call-costs-") as (url, work):
        bulk.load(url, bulk.Volume(tenants=1, ledger=args.entries, traces=0, steps=0, system=0))
        (tenant,) = bulk.tenant_ids(1)
        token = mint_token(secret=SECRET, tenant_id=tenant, subject="bench")
        logs_url = service_logins(url, work / "aos")["logs"]  # the admin URL only bulk-loaded
        service = LogsService(logs_url, work, 1)
        try:
            with grpc.insecure_channel(service.address) as channel:
                reply = pb_grpc.AuditLedgerServiceStub(channel).ListAuditEntries(
                    pb.ListAuditEntriesRequest(page_size=PAGE_SIZE),
                    metadata=(("authorization", f"Bearer {token}"),), timeout=10)
            reply_file = work / "reply.bin"
            reply_file.write_bytes(reply.SerializeToString())
            bare = subprocess.Popen([sys.executable, str(BENCH / "bare_server.py"), "--method", METHOD,
                                     "--response", str(reply_file)], stdout=subprocess.PIPE, text=True)
            try:
                bare_address = f"127.0.0.1:{bare.stdout.readline().split()[1]}"
                end_to_end = {
                    "logs_service_ms": server_cpu_per_call_ms(service.address, service.process.pid, token,
                                                              args.calls),
                    "bare_server_ms": server_cpu_per_call_ms(bare_address, bare.pid, None, args.calls),
                }
            finally:
                bare.terminate()
                bare.wait(timeout=30)
        finally:
            service.stop()
        parts = pieces(logs_url, tenant, token, args.repeat)
    end_to_end["bare_over_service"] = round(end_to_end["bare_server_ms"] / end_to_end["logs_service_ms"], 3)
    print(json.dumps({
        "workload": f"ListAuditEntries first page, page_size {PAGE_SIZE}, one tenant of {args.entries} entries, "
                    f"{len(reply.SerializeToString())} response bytes",
        "cpus": len(os.sched_getaffinity(0)),
        "load_average_before": load_before, "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "server_cpu_per_call_one_at_a_time": {k: round(v, 3) for k, v in end_to_end.items()},
        "service_pieces_cpu_ms_per_call": {k: round(v, 3) for k, v in parts.items()},
        "pieces_sum_ms": round(sum(parts.values()), 3),
    }, indent=2))


if __name__ == "__main__":
    main()
