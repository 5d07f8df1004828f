"""REST through the gateway against direct gRPC, under load, A/B between code copies (issue #22:
"REST >= 0.8x gRPC", "gateway + Logs <= 1.0 ms per REST call", "measured from process CPU time
under load").

    PYTHONPATH=.:gen:bench .venv/bin/python bench/rest_cpu_load.py --copy main=/path/main --copy branch=. \
        [--copy fast=. --env fast=AOS_GATEWAY_HTTP_PARSER=httptools] \
        [--entries 20000] [--requests 3000] [--rounds 4] [--clients 8] [--profile 12]

One scratch database (one tenant of --entries ledger entries); per copy one Logs process
(``python -m services.logs``, AOS_WORKERS=1) and one gateway process (``python -m gateway``, its
Logs backend that copy's Logs), that copy first on PYTHONPATH. Each round, for each copy (the
copies' order alternating between rounds): --requests first-page ListAuditEntries calls
(page_size 50) straight to the Logs process over gRPC (h2load, --clients connections × one
stream), then the same number as ``GET /api/v1/logs/audit?page_size=50`` through the gateway
(h2load --h1, --clients keep-alive HTTP/1.1 connections: the same client program for both, so
the client's own CPU is alike). CPU per call = each process's user + system time (/proc) over
the run ÷ the calls; every call checked OK in the Logs service's call log (h2load counts any
HTTP 200; a REST call must answer 2xx). REST ÷ gRPC = the two runs' calls/s.

``--profile S``: afterwards each copy's gateway under REST load once more for S seconds while
``py-spy record --native`` samples it; the samples summarised by the layer of their innermost
frame (``LAYERS``) — shares, multiplied by the gateway's CPU per call for milliseconds.
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
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path

import grpc

from aos.logs.v1 import audit_ledger_service_pb2 as pb, audit_ledger_service_pb2_grpc as pb_grpc
from aos_recording import bulk
from aos_runtime.auth import mint_token
from logs_cpu_load import _py_spy, idle
from scratch import free_port, scratch_database, service_logins
from workers_scaling import PAGE_SIZE, SECRET, LogsService, grpc_body, h2load

REST_PATH = f"/api/v1/logs/audit?page_size={PAGE_SIZE}"
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}

# The first needle found in a frame names its layer; in this order.
LAYERS = (
    ("grpc_core", "grpc core (C)"), ("libgrpc", "grpc core (C)"), ("cygrpc", "grpc aio client (Cython)"),
    ("grpc/aio", "grpc aio client (Python)"), ("grpc/_", "grpc (Python)"),
    ("h11", "HTTP parser (h11)"), ("httptools", "HTTP parser (httptools)"),
    ("uvicorn/protocols", "uvicorn protocol"), ("uvicorn", "uvicorn"), ("gateway/serving", "uvicorn protocol"),
    ("starlette", "starlette"), ("gateway/stored_json", "rendering (gateway.stored_json)"),
    ("google/protobuf", "protobuf"), ("_upb", "protobuf"),
    ("gateway/transcode", "request building (gateway.transcode, fields)"),
    ("gateway/fields", "request building (gateway.transcode, fields)"),
    ("gateway/routes", "routing (gateway.routes)"), ("gateway/clients", "client metadata (gateway.clients)"),
    ("ipaddress", "client metadata (gateway.clients)"), ("gateway/app", "gateway.app"),
    ("prometheus_client", "metrics"), ("aos_runtime/metrics", "metrics"),
    ("aos_runtime/observability", "request log"), ("logging/", "request log"), ("json/", "request log"),
    ("uuid", "request id"), ("urllib", "urllib (query parsing)"),
    ("asyncio", "asyncio"), ("selectors", "asyncio"), ("_asynciomodule", "asyncio"), ("selectmodule", "asyncio"),
    ("aos_runtime", "aos_runtime (other)"), ("threading", "threads"),
)
NEUTRAL = ("libc.so", "libpython", "ld-linux", "libpthread", "python3.", "<frozen")


def layer(frame: str) -> str | None:
    for needle, name in LAYERS:
        if needle in frame:
            return name
    return None if any(n in frame for n in NEUTRAL) or ".py:" not in frame else "other"


def summarise(raw: Path, top: int) -> dict:
    by_layer: Counter[str] = Counter()
    by_function: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        frames = stack.split(";")
        if idle(frames):
            continue
        n = int(count)
        total += n
        for frame in reversed(frames):
            name = layer(frame)
            if name is not None:
                break
        else:
            name, frame = "unattributed (libc, interpreter)", frames[-1]
        by_layer[name] += n
        by_function[frame] += n
    return {"samples": total, "own_share_by_layer": {k: round(v / total, 4) for k, v in by_layer.most_common()},
            "top_functions": {k: round(v / total, 4) for k, v in by_function.most_common(top)}} if total else {}


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Gateway:
    """``python -m gateway`` with its Logs backend at ``logs``; its log in a file."""

    def __init__(self, logs: str, work: Path, extra: dict[str, str]) -> None:
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("AOS_")}
        env.update(AOS_LOGS_ADDRESS=logs, AOS_GATEWAY_PORT=str(self.port), AOS_LOG_LEVEL="INFO",
                   AOS_DATA_DIR=str(work / "aos"), **extra)
        self.log = (work / "gateway.log").open("w")
        # -P: ``python -m`` puts the working directory first on sys.path, ahead of PYTHONPATH, so
        # every copy ran the gateway of the directory the benchmark was started in.
        self.process = subprocess.Popen([sys.executable, "-P", "-m", "gateway"], env=env, stdout=subprocess.DEVNULL,
                                        stderr=self.log)
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=2):
                    break
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"the gateway did not start: {(work / 'gateway.log').read_text()[-2000:]}") from None
                time.sleep(0.2)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=60)
        self.log.close()


def h2load_rest(port: int, token: str, *, requests: int, connections: int) -> dict:
    """h2load over HTTP/1.1 keep-alive (--h1) at the gateway's audit list."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(["h2load", "--h1", "-n", str(requests), "-c", str(connections), "-m", "1",
                          "-H", f"authorization: Bearer {token}", f"http://127.0.0.1:{port}{REST_PATH}"],
                         check=True, capture_output=True, text=True).stdout
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    finished = re.search(r"finished in ([\d.]+)(us|ms|s), ([\d.]+) req/s", out)
    done = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed", out)
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    if not (finished and done and codes):
        raise RuntimeError(f"unexpected h2load output:\n{out}")
    return {"seconds": float(finished[1]) * _UNITS[finished[2]] / 1000, "req_per_s": float(finished[3]),
            "done": int(done[2]), "http_2xx": int(codes[1]),
            "h2load_cpu_s": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--copy", action="append", required=True, help="NAME=PATH of a checkout (repeat)")
    parser.add_argument("--entries", type=int, default=20_000)
    parser.add_argument("--requests", type=int, default=3_000, help="calls per copy per round, each way")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--clients", type=int, default=8, help="connections, one request in flight each")
    parser.add_argument("--profile", type=int, default=0, help="seconds of py-spy on each gateway afterwards")
    parser.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--env", action="append", default=[], help="NAME=KEY=VALUE: an environment setting for "
                        "one copy's gateway (repeat), e.g. branch=AOS_GATEWAY_HTTP_PARSER=httptools")
    args = parser.parse_args()
    if not shutil.which("h2load"):
        sys.exit("h2load not found: apt-get install nghttp2-client")
    copies = dict(item.split("=", 1) for item in args.copy)
    extra: dict[str, dict[str, str]] = {}
    for item in args.env:
        name, key, value = item.split("=", 2)
        extra.setdefault(name, {})[key] = value
    load = [round(x, 2) for x in os.getloadavg()]
    with scratch_database(prefix="aos-bench-rest-cpu-") as (url, work):
        bulk.load(url, bulk.Volume(tenants=1, ledger=args.entries, traces=0, steps=0, system=0))
        (tenant,) = bulk.tenant_ids(1)
        token = mint_token(secret=SECRET, tenant_id=tenant, subject="bench")
        request = pb.ListAuditEntriesRequest(page_size=PAGE_SIZE)
        body = work / "list-audit-entries.bin"
        body.write_bytes(grpc_body(request))
        logs_url = service_logins(url, work / "aos")["logs"]
        services: dict[str, LogsService] = {}
        gateways: dict[str, Gateway] = {}
        saved = dict(os.environ)
        try:
            for name, path in copies.items():
                root = Path(path).resolve()
                os.environ["PYTHONPATH"] = f"{root}:{root / 'gen'}"
                (work / name).mkdir()
                services[name] = LogsService(logs_url, work / name, 1)
                gateways[name] = Gateway(services[name].address, work / name, extra.get(name, {}))
                os.environ.clear()
                os.environ.update(saved)
        finally:
            os.environ.clear()
            os.environ.update(saved)
        try:
            for name, service in services.items():  # warm both ways; the answers are the page
                with grpc.insecure_channel(service.address) as channel:
                    reply = pb_grpc.AuditLedgerServiceStub(channel).ListAuditEntries(
                        request, metadata=(("authorization", f"Bearer {token}"),), timeout=10)
                assert len(reply.entries) == PAGE_SIZE, f"{name}: the tenant has fewer entries than a page"
                rest = urllib.request.Request(f"http://127.0.0.1:{gateways[name].port}{REST_PATH}",
                                              headers={"Authorization": f"Bearer {token}"})
                with urllib.request.urlopen(rest, timeout=10) as answer:
                    assert len(json.loads(answer.read())["entries"]) == PAGE_SIZE
                h2load(service.address, body, token, requests=1_000, connections=args.clients, streams=1)
                h2load_rest(gateways[name].port, token, requests=1_000, connections=args.clients)
                service.calls(2_001)

            def run(name: str, way: str, requests: int, strict: bool = True) -> dict:
                service, gateway = services[name], gateways[name]
                logs_before, gw_before = service.cpu_seconds(), cpu_seconds(gateway.process.pid)
                if way == "grpc":
                    figures = h2load(service.address, body, token, requests=requests, connections=args.clients,
                                     streams=1)
                    ok = figures["done"] == requests
                else:
                    figures = h2load_rest(gateway.port, token, requests=requests, connections=args.clients)
                    ok = figures["done"] == requests and figures["http_2xx"] == requests
                logs_cpu = service.cpu_seconds() - logs_before
                gw_cpu = cpu_seconds(gateway.process.pid) - gw_before
                codes = Counter(c["code"] for c in service.calls(requests))
                if strict and (not ok or codes != Counter({"OK": requests})):
                    raise RuntimeError(f"not every call succeeded: {figures}, call log {dict(codes)}")
                out = {"calls_per_s": round(figures["req_per_s"], 1),
                       "logs_cpu_ms_per_call": round(logs_cpu / requests * 1000, 3),
                       "client_cpu_ms_per_call": round(figures["h2load_cpu_s"] / requests * 1000, 3)}
                if way == "rest":
                    out["gateway_cpu_ms_per_call"] = round(gw_cpu / requests * 1000, 3)
                    out["gateway_plus_logs_ms_per_call"] = round((gw_cpu + logs_cpu) / requests * 1000, 3)
                return out

            rounds: dict[str, list[dict]] = {name: [] for name in services}
            order = list(services)
            for i in range(args.rounds):
                for name in (order if i % 2 == 0 else order[::-1]):
                    grpc_figures = run(name, "grpc", args.requests)
                    rest_figures = run(name, "rest", args.requests)
                    figures = {"grpc": grpc_figures, "rest": rest_figures,
                               "rest_over_grpc": round(rest_figures["calls_per_s"] / grpc_figures["calls_per_s"], 3),
                               "load": round(os.getloadavg()[0], 2)}
                    rounds[name].append(figures)
                    print(json.dumps({"round": i + 1, "copy": name, **figures}), file=sys.stderr, flush=True)
            profiles = {}
            for name, gateway in gateways.items() if args.profile else ():
                raw = work / f"py-spy-gateway-{name}.txt"
                spy = subprocess.Popen([_py_spy(), "record", "--native", "-r", str(args.rate), "-d", str(args.profile),
                                        "-p", str(gateway.process.pid), "--format", "raw", "-o", str(raw)],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                stop = threading.Event()

                def drive(name: str = name, stop: threading.Event = stop) -> None:
                    while not stop.is_set():
                        run(name, "rest", 500, strict=False)

                driver = threading.Thread(target=drive)
                driver.start()
                spy.wait()
                stop.set()
                driver.join()
                profiles[name] = summarise(raw, args.top) if raw.exists() else {
                    "error": spy.stderr.read().decode()[-500:]}  # type: ignore[union-attr]
        finally:
            for gateway in gateways.values():
                gateway.stop()
            for service in services.values():
                service.stop()

    def median(name: str, way: str, key: str) -> float:
        return round(statistics.median(r[way][key] for r in rounds[name]), 3)

    print(json.dumps({
        "workload": f"ListAuditEntries page 1 ({PAGE_SIZE} entries), tenant of {args.entries} entries; per copy per "
                    f"round {args.requests} gRPC calls (h2load) then {args.requests} REST calls (h2load --h1), "
                    f"{args.clients} connections x 1 in flight; Logs AOS_WORKERS=1, one gateway process",
        "load_average_before": load, "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "gateway_env": extra, "rounds": rounds,
        "medians": {name: {"grpc_calls_per_s": median(name, "grpc", "calls_per_s"),
                           "rest_calls_per_s": median(name, "rest", "calls_per_s"),
                           "rest_over_grpc": round(statistics.median(r["rest_over_grpc"] for r in rounds[name]), 3),
                           "logs_cpu_ms_per_grpc_call": median(name, "grpc", "logs_cpu_ms_per_call"),
                           "logs_cpu_ms_per_rest_call": median(name, "rest", "logs_cpu_ms_per_call"),
                           "gateway_cpu_ms_per_rest_call": median(name, "rest", "gateway_cpu_ms_per_call"),
                           "gateway_plus_logs_ms_per_rest_call": median(name, "rest", "gateway_plus_logs_ms_per_call")}
                    for name in rounds},
        **({"gateway_profiles": profiles} if profiles else {}),
    }, indent=2))


if __name__ == "__main__":
    main()
