"""Bounded memory under concurrent large exports (issue #19): the Export service's resident
memory idle, at its peak under four concurrent exports of each format, and after.

    .venv/bin/python bench/export_memory.py [--entries 200000] [--concurrency 4]
                                            [--formats JSON,CSV,PDF,ZIP] [--out bench/results/export_memory.json]
                                            [--run-steps N] [--env AOS_HEAP_TRIM=off]

Bulk-loads one tenant's audit ledger (aos_recording.bulk), starts the Export service as its
own process (python -m services.export, its own login), then per format: ``concurrency``
CreateExport calls of an AUDIT_SLICE of the whole ledger at once, then the same number of
DownloadExport streams at once. The service's resident memory (VmRSS of the process and any
children, from /proc) is sampled every 50 ms throughout; reported per format: RSS before,
the peak during the exports and downloads, and the RSS 3 s after they end, each against
the idle RSS measured before the first export (the issue's bound: peak ≤ idle + 100 MiB,
and back near idle after; by default two rounds through the formats, so a second round
shows whether anything accumulates). With ``--run-steps N`` the exports are of one run of N
steps (an LLM_RUN EVIDENCE bundle, JSON/PDF/ZIP) instead of the slice. Also the artifacts' sizes,
the wall time and the service's heap trims (aos_heap_trims_total, from its /metrics). Quotas are off for
the run (AOS_EXPORT_RATE_PER_HOUR=0), and the tenant's heavy share is ``concurrency`` (so the
exports do render at once). Uses an embedded Postgres in a temporary directory
unless DATABASE_URL is set. The JSON result goes to --out (and stdout).
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

import grpc
from google.protobuf import timestamp_pb2

from aos.evidence.v1 import bundle_pb2
from aos.export.v1 import export_service_pb2 as pb, export_service_pb2_grpc as pb_grpc
from aos_recording import bulk
from aos_runtime.auth import mint_token
from scratch import free_port, scratch_database, service_env, service_logins
from services.__main__ import MALLOC_DEFAULTS

SECRET = "bench-secret-" + "x" * 40
BOUND_MIB = 100


def _kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _family(pid: int) -> list[int]:
    """The process and its descendants (a service with AOS_WORKERS > 1 forks)."""
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        for task in Path(f"/proc/{p}/task").iterdir():
            children = (task / "children").read_text().split()
            todo.extend(int(c) for c in children)
    return found


def rss_mib(pid: int) -> float:
    return round(sum(_kib(p, "VmRSS") for p in _family(pid)) / 1024, 1)


def rss_parts_mib(pid: int) -> dict[str, float]:
    """Resident memory by kind: anonymous (the heap: Python objects, malloc arenas, buffers)
    and file-backed (shared libraries' pages touched so far)."""
    return {field: round(sum(_kib(p, field) for p in _family(pid)) / 1024, 1) for field in ("RssAnon", "RssFile")}


class Sampler:
    """VmRSS every ``interval`` seconds in a thread; ``peak`` since the last ``reset``."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid, self.interval, self.peak = pid, interval, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, rss_mib(self.pid))
            except (FileNotFoundError, ProcessLookupError):
                pass
            self._stop.wait(self.interval)

    def reset(self) -> None:
        self.peak = rss_mib(self.pid)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=200_000)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--formats", default="JSON,CSV,PDF,ZIP")
    parser.add_argument("--rounds", type=int, default=2,
                        help="times through the formats (a second round shows whether memory accumulates)")
    parser.add_argument("--settle-s", type=float, default=3.0, help="seconds after a format's calls end")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "export_memory.json")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="extra environment for the service (e.g. MALLOC_ARENA_MAX=2, AOS_HEAP_TRIM=off)")
    parser.add_argument("--run-steps", type=int, default=0,
                        help="export one run of this many steps (JSON, PDF, ZIP) instead of the audit slice")
    args = parser.parse_args()
    if args.run_steps and "CSV" in args.formats.split(","):
        args.formats = ",".join(f for f in args.formats.split(",") if f != "CSV")  # a run has no CSV
    with scratch_database() as (url, work):
        service = None
        try:
            started = time.perf_counter()
            bulk.load(url, bulk.Volume(tenants=1, ledger=args.entries, traces=1 if args.run_steps else 0,
                                       steps=args.run_steps, system=0))
            load_s = time.perf_counter() - started
            (tenant,) = bulk.tenant_ids(1)
            port, metrics_port = free_port(), free_port()
            extra = dict(item.split("=", 1) for item in args.env)
            env = service_env(service_logins(url, work / "aos"), "export", AOS_EXPORT_PORT=str(port),
                              AOS_EXPORT_METRICS_PORT=str(metrics_port),
                              AOS_DATA_DIR=str(work / "aos"), AOS_AUTH_JWT_SECRET=SECRET, AOS_LOG_LEVEL="WARNING",
                              AOS_DB_STATEMENT_TIMEOUT_MS="3600000", AOS_EXPORT_RATE_PER_HOUR="0",
                              AOS_EXPORT_STORED_BYTES_PER_TENANT="0",
                              # The bound is tried with ``concurrency`` exports rendering at once: one
                              # tenant's heavy share (1 by default) would queue them one by one, and
                              # refuse the fourth after AOS_HEAVY_QUEUE_BUDGET_S.
                              AOS_HEAVY_CONCURRENCY=str(args.concurrency),
                              AOS_HEAVY_PER_TENANT=str(args.concurrency),
                              # As `python -m services` and the image start it (--env overrides).
                              **{**MALLOC_DEFAULTS, **extra})
            service = subprocess.Popen([sys.executable, "-m", "services.export"], env=env)
            channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.max_receive_message_length", 8 << 20)])
            grpc.channel_ready_future(channel).result(timeout=60)
            stub = pb_grpc.ExportServiceStub(channel)
            metadata = (("authorization", f"Bearer {mint_token(secret=SECRET, tenant_id=tenant, subject='bench')}"),)
            # Warm: one small call, so idle is the service as it serves, not as it booted.
            stub.ListExports(pb.ListExportsRequest(), metadata=metadata, timeout=60)
            time.sleep(1)
            idle = rss_mib(service.pid)
            idle_parts = rss_parts_mib(service.pid)
            sampler = Sampler(service.pid)
            results = {"command": " ".join(["bench/export_memory.py", *sys.argv[1:]]),
                       "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                       "machine": f"{platform.machine()}, {len(__import__('os').sched_getaffinity(0))} cores "
                                  "(shared with other work during the run)",
                       "entries": args.entries, "concurrency": args.concurrency, "run_steps": args.run_steps,
                       "service_env": {**MALLOC_DEFAULTS, **extra},
                       "bulk_load_s": round(load_s, 1), "idle_rss_mib": idle, "idle_rss_parts_mib": idle_parts,
                       "bound_mib": BOUND_MIB,
                       "runs": []}

            # The bulk-loaded entries only: the exports' own EvidenceExported entries (now) stay out,
            # so every export of a format covers the same records and has the same bytes.
            until = timestamp_pb2.Timestamp()
            until.FromDatetime(bulk.EPOCH + timedelta(seconds=bulk.SPAN_S + 86400))
            slice_ = pb.AuditSlice(created_before=until)

            subject = {"run_id": f"{tenant}.run-0"} if args.run_steps else {"audit_slice": slice_}

            def create(fmt: str) -> bundle_pb2.Export:
                return stub.CreateExport(pb.CreateExportRequest(
                    **subject, bundle_type=bundle_pb2.BUNDLE_TYPE_EVIDENCE,
                    format=bundle_pb2.ExportFormat.Value(f"EXPORT_FORMAT_{fmt}")),
                    metadata=metadata, timeout=3600).export

            def heap_trims() -> dict[str, float]:
                """The service's aos_heap_trim* counters (its /metrics), 0 before its first trim."""
                found = {"trims": 0.0, "released_mib": 0.0, "seconds": 0.0}
                text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()
                for line in text.splitlines():
                    for key, name, scale in (("trims", "aos_heap_trims_total", 1),
                                             ("released_mib", "aos_heap_trim_released_bytes_total", 2**20),
                                             ("seconds", "aos_heap_trim_seconds_total", 1)):
                        if line.startswith(name + "{"):
                            found[key] = round(float(line.rsplit(" ", 1)[1]) / scale, 3)
                return found

            def download(export_id: str) -> int:
                return sum(len(m.data) for m in stub.DownloadExport(
                    pb.DownloadExportRequest(export_id=export_id), metadata=metadata, timeout=3600))

            with ThreadPoolExecutor(args.concurrency) as pool:
                for round_no, fmt in ((r, f) for r in range(1, args.rounds + 1) for f in args.formats.split(",")):
                    before = rss_mib(service.pid)
                    sampler.reset()
                    t0 = time.perf_counter()
                    exports = list(pool.map(lambda _i, f=fmt: create(f), range(args.concurrency)))
                    create_s = time.perf_counter() - t0
                    peak_create = sampler.peak
                    t0 = time.perf_counter()
                    sizes = list(pool.map(download, [e.export_id for e in exports]))
                    download_s = time.perf_counter() - t0
                    assert sizes == [e.size_bytes for e in exports]
                    assert len({e.checksum for e in exports}) == 1, "the same request gave different bytes"
                    peak = sampler.peak
                    time.sleep(args.settle_s)
                    after = rss_mib(service.pid)
                    run = {
                        "format": fmt, "round": round_no, "records": json.loads(exports[0].manifest)["records"],
                        "artifact_mib": round(exports[0].size_bytes / 2**20, 1),
                        "create_s": round(create_s, 1), "download_s": round(download_s, 1),
                        "rss_before_mib": before, "peak_rss_during_creates_mib": peak_create,
                        "peak_rss_mib": peak, "rss_after_mib": after,
                        "rss_after_parts_mib": rss_parts_mib(service.pid),
                        "peak_over_idle_mib": round(peak - idle, 1), "after_over_idle_mib": round(after - idle, 1),
                        "within_bound": peak - idle <= BOUND_MIB, "heap_trims_so_far": heap_trims()}
                    results["runs"].append(run)
                    print(json.dumps(run), flush=True)
            sampler.stop()
            results["final_rss_mib"] = rss_mib(service.pid)
            results["all_within_bound"] = all(r["within_bound"] for r in results["runs"])
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(results, indent=2) + "\n")
            print(json.dumps(results, indent=2))
        finally:
            if service is not None:
                service.terminate()
                service.wait(timeout=30)


if __name__ == "__main__":
    main()
