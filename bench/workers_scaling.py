"""Does a second worker process buy throughput? (issue #9)

    .venv/bin/python bench/workers_scaling.py [--requests 10000] [--rounds 3] [--connections 16] [--streams 2]

Bulk-loads one tenant's audit ledger, starts the Logs service twice as real
processes (``python -m services.logs``), once with AOS_WORKERS=1 and once with
AOS_WORKERS=2, and drives both with the same fixed read workload: the first
ListAuditEntries page (page_size 50) of that tenant, as raw gRPC unary calls from
h2load (nghttp2's HTTP/2 load generator, C: its own CPU cost is small next to the
Python server's, and it is reported). Rounds alternate between the two services so
that drift on a shared machine hits both alike.

h2load counts every HTTP 200 as a success, and gRPC reports errors in trailers of
an HTTP 200; so each run is checked against the services' own call log (one JSON
line per call, with its gRPC code and, with workers, the pid that served it): every
request of a run must appear there as OK. A control run with a bad token shows the
check is needed (h2load: all "succeeded"; call log: all UNAUTHENTICATED).

Needs h2load: ``apt-get install nghttp2-client`` (Debian/Ubuntu). Uses the embedded
Postgres in a temporary directory unless DATABASE_URL is set.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import grpc

from aos.logs.v1 import audit_ledger_service_pb2 as pb, audit_ledger_service_pb2_grpc as pb_grpc
from aos_recording import bulk
from aos_runtime.auth import mint_token
from scratch import free_port, scratch_database, service_env, service_logins

SECRET = "bench-secret-" + "x" * 40
METHOD = "/aos.logs.v1.AuditLedgerService/ListAuditEntries"
PAGE_SIZE = 50
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


class LogsService:
    """``python -m services.logs`` with ``workers`` workers; its JSON log in a file.

    ``logs_url``: the Logs service's own login DSN (scratch.service_logins), never the admin's."""

    def __init__(self, logs_url: str, work: Path, workers: int, **variables: str) -> None:
        self.workers = workers
        self.port = free_port()
        self.log_path = work / f"logs-service-{workers}-workers.log"
        self._offset = 0
        env = service_env({"logs": logs_url}, "logs", AOS_WORKERS=str(workers), AOS_LOGS_PORT=str(self.port),
                          AOS_DATA_DIR=str(work / "aos"), AOS_AUTH_JWT_SECRET=SECRET, AOS_LOG_LEVEL="INFO",
                          **variables)
        with open(self.log_path, "w") as log:
            # -P: without it ``python -m`` puts the working directory ahead of PYTHONPATH, and a
            # benchmark comparing checkouts by PYTHONPATH ran the working directory's code in each.
            self.process = subprocess.Popen([sys.executable, "-P", "-m", "services.logs"], env=env,
                                            stdout=subprocess.DEVNULL, stderr=log)
        deadline = time.monotonic() + 60
        while len([e for e in self.new_entries(advance=False) if e.get("msg") == "listening"]) < workers:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the service did not start: {self.log_path.read_text()[-2000:]}")
            time.sleep(0.1)
        self.new_entries()  # start-up lines are not calls

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def new_entries(self, advance: bool = True) -> list[dict]:
        """Log lines written since the last call (complete lines only)."""
        with open(self.log_path, "rb") as log:
            log.seek(self._offset)
            data = log.read()
        complete = data[:data.rfind(b"\n") + 1]
        if advance:
            self._offset += len(complete)
        return [json.loads(line) for line in complete.splitlines() if line.startswith(b"{")]

    def calls(self, expected: int) -> list[dict]:
        """The call-log lines of the last ``expected`` calls (waits briefly for the log to catch up)."""
        found: list[dict] = []
        deadline = time.monotonic() + 10
        while len(found) < expected and time.monotonic() < deadline:
            found += [e for e in self.new_entries() if e.get("msg") == "call"]
            time.sleep(0.05)
        return found

    def cpu_seconds(self) -> float:
        """User + system CPU of the service's processes (the supervisor and its workers)."""
        pids = [self.process.pid]
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        if children.exists():
            pids += [int(p) for p in children.read_text().split()]
        total = 0
        for pid in pids:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        return total / os.sysconf("SC_CLK_TCK")

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=60)


def grpc_body(request) -> bytes:
    """One gRPC length-prefixed message: compressed flag 0, 4-byte big-endian length, payload."""
    payload = request.SerializeToString()
    return b"\x00" + len(payload).to_bytes(4, "big") + payload


def h2load(address: str, body: Path, token: str, *, requests: int, connections: int, streams: int) -> dict:
    """Run h2load against ``METHOD``; its figures, plus its own CPU seconds."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(
        ["h2load", "-n", str(requests), "-c", str(connections), "-m", str(streams), "-d", str(body),
         "-H", "content-type: application/grpc", "-H", "te: trailers", "-H", f"authorization: Bearer {token}",
         f"http://{address}{METHOD}"], check=True, capture_output=True, text=True).stdout
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    finished = re.search(r"finished in ([\d.]+)(us|ms|s), ([\d.]+) req/s", out)
    done = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed", out)
    latency = re.search(r"time for request:\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)", out)
    if not (finished and done and latency):
        raise RuntimeError(f"unexpected h2load output:\n{out}")
    return {"seconds": float(finished[1]) * _UNITS[finished[2]] / 1000, "req_per_s": float(finished[3]),
            "done": int(done[2]),
            "http_succeeded": int(done[3]), "http_failed": int(done[4]),
            "latency_ms": {"min": float(latency[1]) * _UNITS[latency[2]],
                           "max": float(latency[3]) * _UNITS[latency[4]],
                           "mean": float(latency[5]) * _UNITS[latency[6]]},
            "h2load_cpu_s": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)}


def measured_run(service: LogsService, body: Path, token: str, args) -> dict:
    cpu_before, started = service.cpu_seconds(), time.monotonic()
    figures = h2load(service.address, body, token, requests=args.requests, connections=args.connections,
                     streams=args.streams)
    service_cpu = service.cpu_seconds() - cpu_before
    calls = service.calls(args.requests)
    codes = Counter(c["code"] for c in calls)
    # The gRPC outcome of every request, from the server's side: all OK, no more, no fewer.
    if figures["done"] != args.requests or codes != Counter({"OK": args.requests}):
        raise RuntimeError(f"not every request succeeded: h2load {figures}, call log codes {dict(codes)}")
    figures["grpc_codes"] = dict(codes)
    figures["calls_per_worker"] = sorted(Counter(c.get("pid", service.process.pid) for c in calls).values())
    figures["service_cpu_per_s"] = round(service_cpu / (time.monotonic() - started), 2)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=10_000, help="requests per measured run")
    parser.add_argument("--rounds", type=int, default=3, help="measured runs per worker count")
    parser.add_argument("--connections", type=int, default=16,
                        help="h2load -c: TCP connections (the kernel spreads connections, not calls)")
    parser.add_argument("--streams", type=int, default=2, help="h2load -m: concurrent calls per connection")
    parser.add_argument("--entries", type=int, default=10_000, help="the tenant's ledger entries")
    args = parser.parse_args()
    if not shutil.which("h2load"):
        sys.exit("h2load not found: apt-get install nghttp2-client")
    # The machine is shared: what else ran shows in the load average, reported with the figures.
    load_before = [round(x, 2) for x in os.getloadavg()]

    with scratch_database(prefix="aos-bench-workers-") as (url, work):
        bulk.load(url, bulk.Volume(tenants=1, ledger=args.entries, traces=0, steps=0, system=0))
        (tenant,) = bulk.tenant_ids(1)
        token = mint_token(secret=SECRET, tenant_id=tenant, subject="bench")
        request = pb.ListAuditEntriesRequest(page_size=PAGE_SIZE)
        body = work / "list-audit-entries.bin"
        body.write_bytes(grpc_body(request))

        logs_url = service_logins(url, work / "aos")["logs"]
        services = {n: LogsService(logs_url, work, n) for n in (1, 2)}
        try:
            results: dict[int, list[dict]] = {n: [] for n in services}
            control = None
            for service in services.values():
                # A real call through grpc first: the body h2load sends answers a full page.
                with grpc.insecure_channel(service.address) as channel:
                    reply = pb_grpc.AuditLedgerServiceStub(channel).ListAuditEntries(
                        request, metadata=(("authorization", f"Bearer {token}"),), timeout=10)
                assert len(reply.entries) == PAGE_SIZE, "the tenant has fewer entries than a page"
                service.calls(1)
                # Control: a bad token, which h2load still counts as succeeded (HTTP 200).
                if control is None:
                    bad = h2load(service.address, body, "not-a-token", requests=20, connections=1, streams=1)
                    control = {"h2load_succeeded": bad["http_succeeded"],
                               "call_log_codes": dict(Counter(c["code"] for c in service.calls(20)))}
                # Warm-up (connections, pools, caches), not measured.
                h2load(service.address, body, token, requests=2_000, connections=args.connections,
                       streams=args.streams)
                service.calls(2_000)
            for _ in range(args.rounds):
                for n, service in services.items():
                    results[n].append(measured_run(service, body, token, args))
                    print(f"workers={n}: {results[n][-1]['req_per_s']:.0f} req/s", file=sys.stderr)
        finally:
            exits = {n: s.stop() for n, s in services.items()}

    summary = {n: {"req_per_s": [r["req_per_s"] for r in runs],
                   "median_req_per_s": statistics.median(r["req_per_s"] for r in runs),
                   "mean_latency_ms": [round(r["latency_ms"]["mean"], 2) for r in runs],
                   "service_cpu_per_s": [r["service_cpu_per_s"] for r in runs],
                   "h2load_cpu_per_s": [round(r["h2load_cpu_s"] / r["seconds"], 2) for r in runs],
                   "calls_per_worker": [r["calls_per_worker"] for r in runs]} for n, runs in results.items()}
    print(json.dumps({
        "cpus": len(os.sched_getaffinity(0)), "load_average_before": load_before,
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "workload": f"ListAuditEntries page_size={PAGE_SIZE}, first page, one tenant of {args.entries} entries",
        "h2load": f"-n {args.requests} -c {args.connections} -m {args.streams}",
        "control_bad_token": control, "workers": summary,
        "two_over_one": round(summary[2]["median_req_per_s"] / summary[1]["median_req_per_s"], 2),
        "service_exit_codes": exits}, indent=2))


if __name__ == "__main__":
    main()
