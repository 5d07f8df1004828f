"""What recording access evidence costs a read, and what a crash can lose of it (issue #21).

    .venv/bin/python bench/access_recording.py [--calls 1000] [--seconds 15] [--rounds 2]

The Logs service (``python -m services.logs``, one process, its own login) over the demo
scenarios of one tenant, started alternately with AOS_ACCESS_RECORDING=0 and =1 (``--rounds``
pairs, so that drift in the shared machine's load hits both alike). Per start:

1. latency: ``--calls`` GetLlmRunTrace calls one at a time (p50 / p99, ms);
2. throughput: 8 concurrent callers for ``--seconds`` (calls/s);
3. recording on only: the lag from a call's answer to its entry being readable
   (ListAuditEntries by its x-request-id, polled every 2 ms; 100 samples) — with the flush
   interval, what a crash can lose;
4. recording on only: SIGTERM, then every answered view has its entry (drain: none lost).

Then the crash: 8 callers against a recording service, SIGKILL after 3 s; answered views
against entries present = what the crash lost. Prints and writes bench/results/access_recording.json.

Embedded Postgres in a temporary directory, non-durable (fsync off) unless DATABASE_URL is set:
the appends' own cost at the database is understated there; they are off the request path.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import grpc
import psycopg

from aos.logs.v1 import (
    audit_ledger_service_pb2 as ledger_pb,
    audit_ledger_service_pb2_grpc as ledger_grpc,
    llm_runs_service_pb2 as runs_pb,
    llm_runs_service_pb2_grpc as runs_grpc,
)
from aos_recording import scenarios
from aos_recording.writers import Producer
from aos_runtime.auth import mint_token
from scratch import free_port, scratch_database, service_env, service_logins

BENCH = Path(__file__).resolve().parent
SECRET = "bench-access-" + "x" * 40
TENANT = "tenant-bench"
RUN = f"{TENANT}.run-support-103"


class Logs:
    def __init__(self, logs_url: str, work: Path, recording: bool) -> None:
        self.port = free_port()
        env = service_env({"logs": logs_url}, "logs", AOS_LOGS_PORT=str(self.port), AOS_DATA_DIR=str(work / "aos"),
                          AOS_AUTH_JWT_SECRET=SECRET, AOS_LOG_LEVEL="WARNING",
                          AOS_ACCESS_RECORDING="1" if recording else "0")
        self.process = subprocess.Popen([sys.executable, "-m", "services.logs"], env=env,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while True:
            try:
                with grpc.insecure_channel(self.address) as channel:
                    grpc.channel_ready_future(channel).result(timeout=1)
                break
            except grpc.FutureTimeoutError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the Logs service did not start") from None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self, sig: int = signal.SIGTERM) -> int:
        self.process.send_signal(sig)
        return self.process.wait(timeout=60)


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc): robust to the shared
    machine's load, unlike calls/s, which swing ±40 % between identical rounds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def meta(rid: str | None = None):
    pairs = [("authorization", f"Bearer {mint_token(secret=SECRET, tenant_id=TENANT, subject='bench')}")]
    if rid:
        pairs.append(("x-request-id", rid))
    return tuple(pairs)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)


async def latency(address: str, calls: int, metadata) -> dict:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = runs_grpc.LlmRunsServiceStub(channel)
        request = runs_pb.GetLlmRunTraceRequest(run_id=RUN)
        for _ in range(100):
            await stub.GetLlmRunTrace(request, metadata=metadata)
        times = []
        for _ in range(calls):
            started = time.perf_counter()
            await stub.GetLlmRunTrace(request, metadata=metadata)
            times.append((time.perf_counter() - started) * 1000)
    return {"calls": calls, "p50_ms": pct(times, 0.5), "p99_ms": pct(times, 0.99),
            "mean_ms": round(statistics.fmean(times), 3)}


async def load(address: str, seconds: float, metadata, *, callers: int = 8, stop_after: float | None = None,
               on_stop=None) -> int:
    """Calls answered OK by ``callers`` callers in ``seconds`` (or until ``on_stop`` fires at ``stop_after``)."""
    answered = 0
    deadline = time.monotonic() + seconds

    async def caller(stub) -> None:
        nonlocal answered
        request = runs_pb.GetLlmRunTraceRequest(run_id=RUN)
        while time.monotonic() < deadline:
            try:
                await stub.GetLlmRunTrace(request, metadata=metadata, timeout=5)
                answered += 1
            except grpc.aio.AioRpcError:
                if stop_after is not None:
                    return
                raise

    async with grpc.aio.insecure_channel(address) as channel:
        stub = runs_grpc.LlmRunsServiceStub(channel)
        tasks = [asyncio.create_task(caller(stub)) for _ in range(callers)]
        if stop_after is not None:
            await asyncio.sleep(stop_after)
            on_stop()
        await asyncio.gather(*tasks)
    return answered


async def visible_lag(address: str, samples: int) -> dict:
    lags = []
    async with grpc.aio.insecure_channel(address) as channel:
        runs, ledger = runs_grpc.LlmRunsServiceStub(channel), ledger_grpc.AuditLedgerServiceStub(channel)
        for _ in range(samples):
            rid = f"lag-{uuid.uuid4().hex}"
            await runs.GetLlmRunTrace(runs_pb.GetLlmRunTraceRequest(run_id=RUN), metadata=meta(rid))
            answered = time.perf_counter()
            while True:  # polling the service is the point: when does the entry become readable
                reply = await ledger.ListAuditEntries(ledger_pb.ListAuditEntriesRequest(correlation_id=rid),
                                                      metadata=meta())
                if reply.entries:
                    break
                await asyncio.sleep(0.002)
            lags.append((time.perf_counter() - answered) * 1000)
    return {"samples": samples, "p50_ms": pct(lags, 0.5), "p99_ms": pct(lags, 0.99), "max_ms": round(max(lags), 3)}


def granted(admin_url: str) -> int:
    """AccessGranted entries of the tenant (read as the admin, who sees every row)."""
    with psycopg.connect(admin_url) as conn:
        return conn.execute("SELECT count(*) FROM audit_ledger WHERE tenant_id = %s AND event_type = 'AccessGranted'",
                            (TENANT,)).fetchone()[0]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    results: dict = {"command": " ".join(["bench/access_recording.py", *sys.argv[1:]]),
                     "load_before": os.getloadavg(), "rounds": []}
    with scratch_database() as (admin_url, work):
        dsns = service_logins(admin_url, work / "aos")
        producer = Producer(dsns["producer"])
        for scenario in scenarios.demo_scenarios():
            scenarios.load(producer, scenario, TENANT)
        producer.close()
        for round_ in range(args.rounds):
            for recording in (False, True):
                before = granted(admin_url)
                service = Logs(dsns["logs"], work, recording)
                row: dict = {"round": round_, "recording": recording}
                row["latency"] = asyncio.run(latency(service.address, args.calls, meta()))
                cpu_before = cpu_s(service.process.pid)
                answered = asyncio.run(load(service.address, args.seconds, meta()))
                row["throughput_calls_s"] = round(answered / args.seconds, 1)
                # The service's CPU per answered view under load, its recorder's flushes included
                # (the ledger appends' database CPU is not: that is PostgreSQL's processes).
                row["service_cpu_ms_per_call"] = round((cpu_s(service.process.pid) - cpu_before) / answered * 1000, 3)
                if recording:
                    row["visible_lag"] = asyncio.run(visible_lag(service.address, 100))
                service.stop()
                row["entries_written"] = granted(admin_url) - before
                row["views_answered"] = (args.calls + 100 + answered + (100 if recording else 0))
                print(json.dumps(row), flush=True)
                results["rounds"].append(row)
        # The crash: SIGKILL under load.
        before = granted(admin_url)
        service = Logs(dsns["logs"], work, True)
        answered = asyncio.run(load(service.address, 30, meta(), stop_after=3.0,
                                    on_stop=lambda: service.process.send_signal(signal.SIGKILL)))
        service.process.wait(timeout=30)
        written = granted(admin_url) - before
        results["sigkill"] = {"views_answered": answered, "entries_written": written,
                              "lost": answered - written}
        print(json.dumps(results["sigkill"]), flush=True)
    on = [r for r in results["rounds"] if r["recording"]]
    off = [r for r in results["rounds"] if not r["recording"]]
    results["summary"] = {
        "throughput_on_over_off": round(statistics.fmean(r["throughput_calls_s"] for r in on)
                                        / statistics.fmean(r["throughput_calls_s"] for r in off), 3),
        # What the machine's load cannot swing: CPU per view, on over off (1 / this is the
        # throughput ratio a CPU-bound service process would reach).
        "service_cpu_per_call_on_over_off": round(statistics.fmean(r["service_cpu_ms_per_call"] for r in on)
                                                  / statistics.fmean(r["service_cpu_ms_per_call"] for r in off), 3),
        "p50_added_ms": round(statistics.fmean(r["latency"]["p50_ms"] for r in on)
                              - statistics.fmean(r["latency"]["p50_ms"] for r in off), 3),
        "p99_added_ms": round(statistics.fmean(r["latency"]["p99_ms"] for r in on)
                              - statistics.fmean(r["latency"]["p99_ms"] for r in off), 3),
        "load_after": os.getloadavg(),
    }
    print(json.dumps(results["summary"]))
    (BENCH / "results").mkdir(exist_ok=True)
    (BENCH / "results" / "access_recording.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
