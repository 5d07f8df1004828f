"""Noisy neighbour (issue #19): one tenant's heavy work against another tenant's light reads.

    .venv/bin/python bench/noisy_neighbour.py [--seconds 60] [--alone-seconds 30] [--ledger 100000]
        [--isolation on|off] [--env AOS_X=value ...] [--out bench/results/noisy_neighbour.json]

Starts the three services as their own processes (python -m services.<name>, as `make run`
does) on a scratch database: tenant A (bulk) with --ledger audit entries, tenant B
(tenant-demo) with the demo scenarios. Then:
1. B alone: --b-callers closed loops of light reads, in turn ListAuditEntries (50),
   GetLlmRunTrace, GetHighlights, ListExports (20), for --alone-seconds;
2. B again, for --seconds, while A runs the heavy mix: --a-exports callers each creating an
   AUDIT_SLICE JSON export of its whole ledger, --a-integrity callers each asking
   GetIntegrityReport(max_entries=100000), --a-verify callers each re-verifying A's export
   (VerifyExport re-renders it). A's callers retry a refusal after its RetryInfo delay.
Reports B's p50/p99 alone and under A (target: p99 ≤ 3× alone, no error for B), each of B's
call types apart (``by_call``), A's completed heavy calls per minute and its refusals, the CPU
seconds each service's process tree (its heavy worker processes included) and PostgreSQL used
in each phase, and the machine's load average at each phase's start and end, as one JSON
document (--out). AOS_HEAVY_ISOLATION is --isolation: `off` shows the same run without the
isolation; --env sets any other variable of the services (e.g. AOS_HEAVY_PROCESSES=off).
"""
from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import grpc
import psutil
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from aos.evidence.v1 import bundle_pb2
from aos.export.v1 import export_service_pb2 as ex_pb, export_service_pb2_grpc as ex_grpc
from aos.logs.v1 import (
    audit_ledger_service_pb2 as au_pb,
    audit_ledger_service_pb2_grpc as au_grpc,
    llm_runs_service_pb2 as ru_pb,
    llm_runs_service_pb2_grpc as ru_grpc,
)
from aos.overview.v1 import overview_service_pb2 as ov_pb, overview_service_pb2_grpc as ov_grpc
from aos_recording import bulk, scenarios
from aos_recording.writers import Producer
from aos_runtime.auth import mint_token
from scratch import free_port, scratch_database, service_env, service_logins

SECRET = "bench-secret-" + "x" * 40
B = "tenant-demo"
RUN = "tenant-demo.run-support-103"
SERVICES = ("overview", "logs", "export")
MAX_RETRY_WAIT_S = 5.0


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[int(q * (len(ordered) - 1))]


def summary(latencies: list[float], errors: list[str], seconds: float) -> dict:
    return {"calls": len(latencies), "calls_per_s": round(len(latencies) / seconds, 1),
            "p50_ms": round(statistics.median(latencies) * 1000, 1) if latencies else None,
            "p99_ms": round(quantile(latencies, 0.99) * 1000, 1) if latencies else None,
            "errors": {code: errors.count(code) for code in sorted(set(errors))}}


class CpuMeter:
    """CPU seconds (user + system) of each service's process tree (its heavy worker processes
    too) and of PostgreSQL's (the postmaster and its backends), read from /proc by psutil."""

    def __init__(self, services: dict[str, int], postmaster: int | None) -> None:
        self.roots = {**services, **({"postgresql": postmaster} if postmaster else {})}

    @staticmethod
    def _tree_s(pid: int) -> float:
        try:
            root = psutil.Process(pid)
            total = 0.0
            for proc in [root, *root.children(recursive=True)]:
                try:
                    t = proc.cpu_times()
                    total += t.user + t.system + t.children_user + t.children_system
                except psutil.NoSuchProcess:
                    pass
            return total
        except psutil.NoSuchProcess:
            return 0.0

    def backends_by_nice(self) -> dict[str, int]:
        """PostgreSQL's processes (the postmaster's children) counted by nice value, {} without ours."""
        counts: dict[str, int] = {}
        if "postgresql" in self.roots:
            try:
                for proc in psutil.Process(self.roots["postgresql"]).children():
                    try:
                        nice = str(proc.nice())
                    except psutil.NoSuchProcess:
                        continue
                    counts[nice] = counts.get(nice, 0) + 1
            except psutil.NoSuchProcess:
                pass
        return dict(sorted(counts.items()))

    def read(self) -> dict[str, float]:
        own = psutil.Process().cpu_times()  # this process alone: B's and A's callers
        return {**{name: self._tree_s(pid) for name, pid in self.roots.items()}, "client": own.user + own.system}

    @staticmethod
    def spent(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
        return {name: round(after[name] - before[name], 1) for name in before}


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


class Tenant:
    def __init__(self, channels: dict[str, grpc.aio.Channel], tenant: str) -> None:
        self.md = (("authorization", f"Bearer {mint_token(secret=SECRET, tenant_id=tenant, subject='bench')}"),)
        self.ov = ov_grpc.OverviewServiceStub(channels["overview"])
        self.au = au_grpc.AuditLedgerServiceStub(channels["logs"])
        self.ru = ru_grpc.LlmRunsServiceStub(channels["logs"])
        self.ex = ex_grpc.ExportServiceStub(channels["export"])

    # B's light reads
    async def audit(self):
        await self.au.ListAuditEntries(au_pb.ListAuditEntriesRequest(page_size=50), metadata=self.md, timeout=10)

    async def trace(self):
        await self.ru.GetLlmRunTrace(ru_pb.GetLlmRunTraceRequest(run_id=RUN), metadata=self.md, timeout=10)

    async def highlights(self):
        await self.ov.GetHighlights(ov_pb.GetHighlightsRequest(), metadata=self.md, timeout=10)

    async def list_exports(self):
        await self.ex.ListExports(ex_pb.ListExportsRequest(page_size=20), metadata=self.md, timeout=10)

    # A's heavy mix
    async def export(self) -> str:
        reply = await self.ex.CreateExport(ex_pb.CreateExportRequest(
            audit_slice=ex_pb.AuditSlice(), bundle_type=bundle_pb2.BUNDLE_TYPE_EVIDENCE,
            format=bundle_pb2.EXPORT_FORMAT_JSON), metadata=self.md, timeout=600)
        return reply.export.export_id

    async def integrity(self):
        await self.au.GetIntegrityReport(au_pb.GetIntegrityReportRequest(max_entries=100_000), metadata=self.md,
                                         timeout=600)

    async def verify(self, export_id: str):
        await self.ex.VerifyExport(ex_pb.VerifyExportRequest(export_id=export_id), metadata=self.md, timeout=600)


async def light_loops(b: Tenant, callers: int, seconds: float, cpu: CpuMeter | None = None) -> dict:
    latencies: list[float] = []
    errors: list[str] = []
    by_call: dict[str, tuple[list[float], list[str]]] = {}
    end = time.monotonic() + seconds

    async def caller(offset: int) -> None:
        calls = itertools.islice(itertools.cycle([b.audit, b.trace, b.highlights, b.list_exports]), offset, None)
        for call in calls:
            if time.monotonic() >= end:
                return
            own = by_call.setdefault(call.__name__, ([], []))
            started = time.monotonic()
            try:
                await call()
                latencies.append(time.monotonic() - started)
                own[0].append(latencies[-1])
            except grpc.aio.AioRpcError as err:
                errors.append(err.code().name)
                own[1].append(err.code().name)

    load_before, cpu_before = load(), cpu.read() if cpu else None
    started = time.monotonic()
    await asyncio.gather(*[caller(i) for i in range(callers)])
    took = time.monotonic() - started
    result = summary(latencies, errors, took)
    result["by_call"] = {name: summary(own, failed, took) for name, (own, failed) in sorted(by_call.items())}
    result["load_average"] = {"start": load_before, "end": load()}
    if cpu is not None and cpu_before is not None:
        result["cpu_s"] = CpuMeter.spent(cpu_before, cpu.read())
    return result


def retry_delay(err: grpc.aio.AioRpcError) -> float | None:
    status = rpc_status.from_call(err)
    for detail in status.details if status else ():
        info = error_details_pb2.RetryInfo()
        if detail.Unpack(info):
            return info.retry_delay.ToNanoseconds() / 1e9
    return None


async def heavy_loop(name: str, call, stop: asyncio.Event, done: dict) -> None:
    while not stop.is_set():
        started = time.monotonic()
        try:
            await call()
            done[name]["ok"] += 1
            done[name]["seconds"].append(time.monotonic() - started)
        except grpc.aio.AioRpcError as err:
            code = err.code().name
            # CANCELLED: the service's gRPC core refused it (AOS_MAX_PENDING_CALLS); no RetryInfo, 1 s.
            done[name]["refused" if code in ("RESOURCE_EXHAUSTED", "CANCELLED") else "errors"] += 1
            delay = retry_delay(err)
            await asyncio.sleep(min(delay if delay is not None else 1.0, MAX_RETRY_WAIT_S))


async def measure(addresses: dict[str, str], a_tenant: str, args, cpu: CpuMeter | None = None) -> dict:
    options = [("grpc.max_receive_message_length", 64 << 20)]
    channels = {name: grpc.aio.insecure_channel(address, options=options) for name, address in addresses.items()}
    a, b = Tenant(channels, a_tenant), Tenant(channels, B)
    for call in (b.audit, b.trace, b.highlights, b.list_exports):  # warm every path
        await call()
    started = time.monotonic()
    export_id = await a.export()  # the export A's verifications re-render
    first_export_s = time.monotonic() - started
    alone = await light_loops(b, args.b_callers, args.alone_seconds, cpu)
    print(json.dumps({"b_alone": alone}), flush=True)
    stop = asyncio.Event()
    done = {name: {"ok": 0, "refused": 0, "errors": 0, "seconds": []} for name in ("export", "integrity", "verify")}
    heavy = ([heavy_loop("export", a.export, stop, done) for _ in range(args.a_exports)]
             + [heavy_loop("integrity", a.integrity, stop, done) for _ in range(args.a_integrity)]
             + [heavy_loop("verify", lambda: a.verify(export_id), stop, done) for _ in range(args.a_verify)])
    tasks = [asyncio.ensure_future(h) for h in heavy]
    await asyncio.sleep(2)  # A's mix under way
    loaded = await light_loops(b, args.b_callers, args.seconds, cpu)
    backends = cpu.backends_by_nice() if cpu is not None else {}
    stop.set()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for channel in channels.values():
        await channel.close()
    ratio = round(loaded["p99_ms"] / alone["p99_ms"], 2) if loaded["p99_ms"] and alone["p99_ms"] else None
    minutes = (args.seconds + 2) / 60
    return {
        "first_export_s": round(first_export_s, 1),
        "b_alone": alone, "b_with_a": loaded, "b_p99_ratio": ratio,
        # PostgreSQL's backends as A's mix ends, counted by nice value (the heavy workers' at
        # AOS_HEAVY_NICE where the database is local: aos_runtime.offload).
        "postgres_backends_by_nice": backends,
        "targets": {"b_p99_within_3x": ratio is not None and ratio <= 3,
                    "b_no_errors": not loaded["errors"]},
        "a_heavy": {name: {"done_per_min": round(d["ok"] / minutes, 1), "refused": d["refused"],
                           "errors": d["errors"],
                           "median_s": round(statistics.median(d["seconds"]), 2) if d["seconds"] else None}
                    for name, d in done.items()},
    }


def postmaster(work: Path) -> int | None:
    """The scratch embedded PostgreSQL's postmaster (None with DATABASE_URL: not ours to watch)."""
    pidfile = work / "pg" / "pgdata" / "postmaster.pid"
    return int(pidfile.read_text().splitlines()[0]) if pidfile.exists() else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60, help="B's reads under A's heavy mix")
    parser.add_argument("--alone-seconds", type=float, default=30, help="B's reads alone, before")
    parser.add_argument("--ledger", type=int, default=100_000, help="tenant A's audit entries")
    parser.add_argument("--b-callers", type=int, default=4)
    parser.add_argument("--a-exports", type=int, default=4)
    parser.add_argument("--a-integrity", type=int, default=4)
    parser.add_argument("--a-verify", type=int, default=4)
    parser.add_argument("--isolation", choices=("on", "off"), default="on", help="AOS_HEAVY_ISOLATION")
    parser.add_argument("--env", action="append", default=[], metavar="AOS_X=VALUE",
                        help="a variable of the services' environment (repeatable)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "noisy_neighbour.json")
    args = parser.parse_args()
    extra = dict(item.split("=", 1) for item in args.env)
    if any(not name.startswith("AOS_") for name in extra):
        parser.error("--env takes AOS_ variables only")
    with scratch_database(prefix="aos-noisy-") as (url, work):
        started = time.monotonic()
        bulk.load(url, bulk.Volume(tenants=1, ledger=args.ledger, traces=0, steps=0, system=0))
        (a_tenant,) = bulk.tenant_ids(1)
        dsns = service_logins(url, work / "aos")
        producer = Producer(dsns["producer"])
        scenarios.load_demo(producer)
        producer.close()
        load_s = time.monotonic() - started
        ports = {name: free_port() for name in SERVICES}
        processes = []
        try:
            for name in SERVICES:
                env = service_env(dsns, name, **{f"AOS_{name.upper()}_PORT": str(ports[name])},
                                  AOS_DATA_DIR=str(work / "aos"), AOS_AUTH_JWT_SECRET=SECRET,
                                  AOS_LOG_LEVEL="WARNING", AOS_HEAVY_ISOLATION=args.isolation,
                                  AOS_DB_STATEMENT_TIMEOUT_MS="600000", **extra)
                processes.append(subprocess.Popen([sys.executable, "-m", f"services.{name}"], env=env))
            for name in SERVICES:
                grpc.channel_ready_future(grpc.insecure_channel(f"127.0.0.1:{ports[name]}")).result(timeout=120)
            cpu = CpuMeter({name: p.pid for name, p in zip(SERVICES, processes, strict=True)}, postmaster(work))
            result = asyncio.run(measure({name: f"127.0.0.1:{port}" for name, port in ports.items()}, a_tenant, args,
                                         cpu))
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                process.wait(timeout=60)
    result = {"command": " ".join(["bench/noisy_neighbour.py", *sys.argv[1:]]), "isolation": args.isolation,
              "env": extra,
              "ledger_a": args.ledger, "load_s": round(load_s, 1), "seconds": args.seconds,
              "alone_seconds": args.alone_seconds, **result}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
