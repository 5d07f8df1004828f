"""The Logs process's CPU per ListAuditEntries call under load, A/B between code copies, with
an optional py-spy profile of each (issue #22: "measured from process CPU time under load").

    PYTHONPATH=.:gen:bench .venv/bin/python bench/logs_cpu_load.py --copy A=/path/main --copy B=. \
        [--entries 20000] [--requests 4000] [--rounds 4] [--clients 8] [--profile 15]

One scratch database (one tenant of --entries ledger entries), one Logs process per copy
(``python -m services.logs`` with that copy first on PYTHONPATH, AOS_WORKERS=1), all started at
once. Each round drives every copy with h2load (--requests first-page calls, page_size 50,
--clients connections × one stream each: the load suite_bench.py puts on it), the copies' order
alternating between rounds. CPU per call = the service process's user + system time (/proc,
every thread: the event loop, gRPC's core, the database threads) over the run ÷ the calls, each
call checked OK in the service's own call log (h2load counts any HTTP 200). Time spent waiting
for a CPU is not counted, so the figure holds on a loaded machine better than throughput does.

``--profile S``: afterwards, each copy under the same load once more for S seconds while
``py-spy record --native --format raw`` samples it (every thread, idle ones left out); the
samples are summarised by the layer of their innermost frame (``LAYERS``) and by function,
as shares of the samples — multiply by the CPU per call for milliseconds. Needs py-spy
(``pip install py-spy``) and the ptrace permission (root, or kernel.yama.ptrace_scope 0).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import grpc

from aos.logs.v1 import audit_ledger_service_pb2 as pb, audit_ledger_service_pb2_grpc as pb_grpc
from aos_recording import bulk
from aos_runtime.auth import mint_token
from scratch import scratch_database, service_logins
from workers_scaling import METHOD, PAGE_SIZE, SECRET, LogsService, grpc_body, h2load

# The first needle found in a frame (function and file) names its layer; in this order.
LAYERS = (
    ("grpc_core", "grpc core (C: HTTP/2, polling)"), ("libgrpc", "grpc core (C: HTTP/2, polling)"),
    ("cygrpc", "grpc aio (Cython)"), ("grpc/aio", "grpc aio (Python)"), ("grpc/_", "grpc (Python)"),
    ("aos_runtime/server", "call policy (aos_runtime.server)"), ("aos_runtime/auth", "token (aos_runtime.auth)"),
    ("aos_runtime/access", "access evidence"), ("aos_runtime/metrics", "metrics (ours)"),
    ("prometheus_client", "metrics (prometheus_client)"), ("opentelemetry", "tracing"),
    ("aos_runtime/tracing", "tracing"), ("aos_runtime/db", "db runner (aos_runtime.db)"),
    ("aos_runtime/admission", "admission"), ("aos_runtime/observability", "call log"),
    ("logging/", "call log"), ("json/", "call log"), ("aos_evidence", "rows to wire (aos_evidence)"),
    ("services/logs", "handler (services/logs)"), ("aos_runtime", "runtime (paging, keyset, validation)"),
    ("sqlalchemy", "SQLAlchemy"), ("psycopg", "psycopg + libpq"), ("libpq", "psycopg + libpq"),
    ("google/protobuf", "protobuf"), ("_upb", "protobuf"), ("asyncio", "asyncio"), ("selectors", "asyncio"),
    ("concurrent/futures", "thread pool hand-off"), ("threading", "thread pool hand-off"),
    ("queue.py", "thread pool hand-off"), ("contextvars", "thread pool hand-off"),
    ("_queuemodule", "thread pool hand-off"), ("_asynciomodule", "asyncio"), ("selectmodule", "asyncio"),
)


def _py_spy() -> str:
    """py-spy beside this Python (a venv's bin is not always on PATH), else on PATH."""
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else "py-spy"


# Native frames of the interpreter and libc: charged to the nearest frame outward that has a layer.
NEUTRAL = ("libc.so", "libpython", "ld-linux", "libpthread", "python3.", "<frozen")


def layer(frame: str) -> str | None:
    for needle, name in LAYERS:
        if needle in frame:
            return name
    return None if any(n in frame for n in NEUTRAL) or ".py:" not in frame else "other"


def charged(frames: list[str]) -> tuple[str, str]:
    """(layer, frame) a sample is charged to: its innermost frame that has a layer (a system
    call or the interpreter counts to the code that made it); the innermost frame if none."""
    for frame in reversed(frames):
        name = layer(frame)
        if name is not None:
            return name, frame
    return "unattributed (libc, interpreter)", frames[-1]


# A sample whose innermost frames are one of these is a thread waiting (for a call, for the
# database, for work), not spending CPU: py-spy's own idle test does not apply to native stacks.
WAITS = ("epoll_wait", "poll (", "pthread_cond_wait", "pthread_cond_timedwait", "PyThread_acquire_lock_timed",
         "sem_wait", "sem_timedwait", "sem_clockwait", "select (", "nanosleep", "futex")


def idle(frames: list[str]) -> bool:
    return any(frame.startswith(WAITS) or f" {frame}".find(" poll (") == 0 for frame in frames[-3:])


def thread_cpu(pid: int) -> dict[int, tuple[str, float]]:
    """tid → (thread name, user + system CPU seconds so far) of every thread of ``pid``."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            name = (task / "comm").read_text().strip()
        except OSError:
            continue
        out[int(task.name)] = (name, (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"))
    return out


# Threads of a service process by what runs on them: the event loop (the main thread), gRPC's
# C core (named by it), and Python's other threads — the database pool's, nearly all of it
# (grpc.aio's completion-queue poller and the access recorder's are the rest).
KINDS = ("event loop (main thread)", "grpc core threads", "database pool threads (+ grpc aio poller)")
GRPC_THREADS = ("event_engine", "grpc_global_tim", "lifeguard", "resolver", "grpc_")


def kind_of(tid: int, pid: int, name: str) -> str:
    if tid == pid:
        return KINDS[0]
    return KINDS[1] if name.startswith(GRPC_THREADS) else KINDS[2]


def stack_kind(frames: list[str]) -> str:
    if any("run_forever" in f for f in frames):
        return KINDS[0]
    return KINDS[2] if any(".py:" in f for f in frames) else KINDS[1]


def cpu_by_kind(pid: int, before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]
                ) -> dict[str, float]:
    out = dict.fromkeys(KINDS, 0.0)
    for tid, (name, cpu) in after.items():
        out[kind_of(tid, pid, name)] += cpu - before.get(tid, (name, 0.0))[1]
    return out


def breakdown(raw: Path, ms_by_kind: dict[str, float]) -> dict[str, dict[str, float]]:
    """ms per call by thread kind and layer: each kind's CPU per call (/proc, measured without the
    profiler) split by the layers' shares of that kind's samples (py-spy)."""
    samples: dict[str, Counter[str]] = {k: Counter() for k in KINDS}
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if stack and not idle(frames):
            samples[stack_kind(frames)][charged(frames)[0]] += int(count)
    out = {}
    for kind, counts in samples.items():
        total = sum(counts.values())
        out[kind] = {name: round(ms_by_kind[kind] * n / total, 3) for name, n in counts.most_common()} if total else {}
    return out


def summarise(raw: Path, top: int) -> dict:
    """py-spy's raw (collapsed stacks) output → shares of samples by innermost frame's layer and function.

    Samples of a waiting thread (``idle``) are left out: the shares are of the CPU's samples."""
    by_layer: Counter[str] = Counter()
    by_function: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        frames = stack.split(";")
        if idle(frames):
            continue
        total += n
        name, leaf = charged(frames)
        by_layer[name] += n
        by_function[leaf] += n
        for seen in {layer(f) for f in frames} - {None}:
            inclusive[seen] += n
    return {"samples": total,
            "own_share_by_layer": {k: round(v / total, 4) for k, v in by_layer.most_common()},
            "inclusive_share_by_layer": {k: round(v / total, 4) for k, v in inclusive.most_common()},
            "top_functions": {k: round(v / total, 4) for k, v in by_function.most_common(top)}}


class BareServer:
    """bench/bare_server.py answering ``reply`` (a LogsService's face for this benchmark: its
    calls are checked by h2load's count only, it keeps no call log)."""

    def __init__(self, reply: Path) -> None:
        self.process = subprocess.Popen([sys.executable, str(Path(__file__).parent / "bare_server.py"), "--method",
                                         METHOD, "--response", str(reply)], stdout=subprocess.PIPE, text=True)
        self.address = f"127.0.0.1:{self.process.stdout.readline().split()[1]}"  # type: ignore[union-attr]

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def calls(self, expected: int) -> list[dict]:
        return [{"code": "OK"}] * expected

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--copy", action="append", required=True, help="NAME=PATH of a checkout (repeat)")
    parser.add_argument("--entries", type=int, default=20_000)
    parser.add_argument("--requests", type=int, default=4_000, help="calls per copy per round")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--clients", type=int, default=8, help="h2load connections, one stream each")
    parser.add_argument("--profile", type=int, default=0, help="seconds of py-spy per copy afterwards (0: none)")
    parser.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--out", type=Path, help="directory for the raw profiles (default: not kept)")
    parser.add_argument("--bare", action="store_true", help="also the bare grpc.aio server answering the same "
                        "bytes (bench/bare_server.py), under the same load: the floor")
    parser.add_argument("--env", action="append", default=[], help="NAME=KEY=VALUE: an environment setting "
                        "for one copy's service (repeat)")
    args = parser.parse_args()
    if not shutil.which("h2load"):
        sys.exit("h2load not found: apt-get install nghttp2-client")
    copies = dict(item.split("=", 1) for item in args.copy)
    extra: dict[str, dict[str, str]] = {}
    for item in args.env:
        name, key, value = item.split("=", 2)
        extra.setdefault(name, {})[key] = value
    load = [round(x, 2) for x in os.getloadavg()]
    with scratch_database(prefix="aos-bench-logs-cpu-") as (url, work):
        bulk.load(url, bulk.Volume(tenants=1, ledger=args.entries, traces=0, steps=0, system=0))
        (tenant,) = bulk.tenant_ids(1)
        token = mint_token(secret=SECRET, tenant_id=tenant, subject="bench")
        request = pb.ListAuditEntriesRequest(page_size=PAGE_SIZE)
        body = work / "list-audit-entries.bin"
        body.write_bytes(grpc_body(request))
        logs_url = service_logins(url, work / "aos")["logs"]
        services: dict[str, LogsService] = {}
        saved = dict(os.environ)
        try:
            for name, path in copies.items():
                root = Path(path).resolve()
                os.environ["PYTHONPATH"] = f"{root}:{root / 'gen'}"
                (work / name).mkdir()
                # As the service's own variables: service_env drops every AOS_ variable of ours.
                services[name] = LogsService(logs_url, work / name, 1, **extra.get(name, {}))
                os.environ.clear()
                os.environ.update(saved)
        finally:
            os.environ.clear()
            os.environ.update(saved)
        try:
            for name, service in list(services.items()):
                with grpc.insecure_channel(service.address) as channel:
                    reply = pb_grpc.AuditLedgerServiceStub(channel).ListAuditEntries(
                        request, metadata=(("authorization", f"Bearer {token}"),), timeout=10)
                assert len(reply.entries) == PAGE_SIZE, f"{name}: the tenant has fewer entries than a page"
                h2load(service.address, body, token, requests=1_000, connections=args.clients, streams=1)
                service.calls(1_001)
            if args.bare:
                (work / "reply.bin").write_bytes(reply.SerializeToString())
                services["bare"] = BareServer(work / "reply.bin")  # type: ignore[assignment]

            def run(service: LogsService, requests: int, strict: bool = True) -> dict:
                before, threads = service.cpu_seconds(), thread_cpu(service.process.pid)
                figures = h2load(service.address, body, token, requests=requests, connections=args.clients,
                                 streams=1)
                spent = service.cpu_seconds() - before
                kinds = cpu_by_kind(service.process.pid, threads, thread_cpu(service.process.pid))
                codes = Counter(c["code"] for c in service.calls(requests))
                if strict and (figures["done"] != requests or codes != Counter({"OK": requests})):
                    raise RuntimeError(f"not every call succeeded: {figures}, call log {dict(codes)}")
                return {"cpu_ms_per_call": round(spent / requests * 1000, 3),
                        "calls_per_s": round(figures["req_per_s"], 1),
                        "by_thread_ms": {k: round(v / requests * 1000, 3) for k, v in kinds.items()}}

            rounds: dict[str, list[dict]] = {name: [] for name in services}
            order = list(services)
            for i in range(args.rounds):
                for name in (order if i % 2 == 0 else order[::-1]):
                    figures = run(services[name], args.requests)
                    rounds[name].append(figures)
                    print(json.dumps({"round": i + 1, "copy": name, **figures,
                                      "load": round(os.getloadavg()[0], 2)}), file=sys.stderr, flush=True)
            profiles = {}
            for name, service in services.items() if args.profile else ():
                raw = (args.out or work) / f"py-spy-{name}.txt"
                raw.parent.mkdir(parents=True, exist_ok=True)
                spy = subprocess.Popen([_py_spy(), "record", "--native", "-r", str(args.rate), "-d", str(args.profile),
                                        "-p", str(service.process.pid), "--format", "raw", "-o", str(raw)],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                stop = threading.Event()
                done = {"calls": 0, "cpu_s": 0.0}

                def drive(service: LogsService = service, stop: threading.Event = stop,
                          done: dict = done) -> None:
                    before, threads = service.cpu_seconds(), thread_cpu(service.process.pid)
                    while not stop.is_set():  # py-spy pauses the process: a call may be refused
                        run(service, 500, strict=False)
                        done["calls"] += 500
                    done["cpu_s"] = service.cpu_seconds() - before
                    after = thread_cpu(service.process.pid)
                    calls = max(done["calls"], 1)
                    done["threads"] = {  # type: ignore[assignment]
                        f"{'main (event loop)' if tid == service.process.pid else name} {tid}":
                        round((cpu - threads.get(tid, (name, 0.0))[1]) / calls * 1000, 3)
                        for tid, (name, cpu) in sorted(after.items(), key=lambda kv: -kv[1][1])
                        if cpu - threads.get(tid, (name, 0.0))[1] > 0}

                driver = threading.Thread(target=drive)
                driver.start()
                spy.wait()
                stop.set()
                driver.join()
                summary = summarise(raw, args.top) if raw.exists() else {"error": spy.stderr.read().decode()[-500:]}
                summary["cpu_ms_per_call_while_profiled"] = round(done["cpu_s"] / max(done["calls"], 1) * 1000, 3)
                summary["cpu_ms_per_call_by_thread"] = done.get("threads", {})
                if raw.exists() and rounds[name]:
                    # Each kind's ms per call: the median over the measured rounds (no profiler then).
                    ms = {k: statistics.median(r["by_thread_ms"][k] for r in rounds[name]) for k in KINDS}
                    summary["ms_per_call_by_thread_and_layer"] = breakdown(raw, ms)
                profiles[name] = summary
        finally:
            for service in services.values():
                service.stop()
    print(json.dumps({
        "workload": f"ListAuditEntries page 1 ({PAGE_SIZE} entries), tenant of {args.entries} entries, h2load "
                    f"{args.requests} calls per copy per round, {args.clients} connections x 1 stream, AOS_WORKERS=1",
        "load_average_before": load, "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "env": extra, "rounds": rounds,
        "median_cpu_ms_per_call": {k: statistics.median(r["cpu_ms_per_call"] for r in v) for k, v in rounds.items()},
        "median_calls_per_s": {k: statistics.median(r["calls_per_s"] for r in v) for k, v in rounds.items()},
        **({"profiles": profiles} if profiles else {}),
    }, indent=2))


if __name__ == "__main__":
    main()
