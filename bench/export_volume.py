"""Exporting a million ledger entries (issue #6): throughput and the service's peak memory.

    .venv/bin/python bench/export_volume.py [--entries 1000000] [--formats JSON,CSV]

Bulk-loads one tenant's audit ledger, starts the Export service as its own process
(python -m services.export) and asks it for an AUDIT_SLICE export of the whole
ledger in each format, then downloads each artifact. Reports per format: seconds,
entries/s, artifact MiB, and the service's peak resident memory (VmHWM from
/proc, for the whole process: Python, gRPC and the pool included) before the first
export and after each step. Uses the embedded Postgres in a temporary directory
unless DATABASE_URL is set.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import grpc

from aos.evidence.v1 import bundle_pb2
from aos.export.v1 import export_service_pb2 as pb, export_service_pb2_grpc as pb_grpc
from aos_recording import bulk
from aos_runtime.auth import mint_token
from scratch import free_port, scratch_database, service_env, service_logins

SECRET = "bench-secret-" + "x" * 40


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError("no VmHWM")


def export_and_download(stub: pb_grpc.ExportServiceStub, metadata, fmt: str,
                        pid: int) -> tuple[bundle_pb2.Export, float, float, int, float]:
    """Export the whole ledger in one format, then download the artifact:
    (export, create seconds, service peak RSS MiB after create, bytes downloaded, download seconds)."""
    started = time.perf_counter()
    export = stub.CreateExport(pb.CreateExportRequest(
        audit_slice=pb.AuditSlice(), bundle_type=bundle_pb2.BUNDLE_TYPE_EVIDENCE,
        format=bundle_pb2.ExportFormat.Value(f"EXPORT_FORMAT_{fmt}")), metadata=metadata, timeout=3600).export
    create_s = time.perf_counter() - started
    after_create = peak_rss_mib(pid)
    started, size = time.perf_counter(), 0
    for message in stub.DownloadExport(pb.DownloadExportRequest(export_id=export.export_id),
                                       metadata=metadata, timeout=3600):
        size += len(message.data)
    return export, create_s, after_create, size, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--formats", default="JSON,CSV")
    args = parser.parse_args()
    with scratch_database() as (url, work):
        service = None
        try:
            started = time.perf_counter()
            bulk.load(url, bulk.Volume(tenants=1, ledger=args.entries, traces=0, steps=0, system=0))
            load_s = time.perf_counter() - started
            (tenant,) = bulk.tenant_ids(1)
            port = free_port()
            # The service gets its own login's DSN only; the admin URL stays here (bulk load).
            env = service_env(service_logins(url, work / "aos"), "export", AOS_EXPORT_PORT=str(port),
                              AOS_DATA_DIR=str(work / "aos"), AOS_AUTH_JWT_SECRET=SECRET, AOS_LOG_LEVEL="WARNING",
                              AOS_DB_STATEMENT_TIMEOUT_MS="3600000")
            service = subprocess.Popen([sys.executable, "-m", "services.export"], env=env)
            channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.max_receive_message_length", 8 << 20)])
            grpc.channel_ready_future(channel).result(timeout=60)
            stub = pb_grpc.ExportServiceStub(channel)
            metadata = (("authorization", f"Bearer {mint_token(secret=SECRET, tenant_id=tenant, subject='bench')}"),)
            results = {"entries": args.entries, "bulk_load_s": round(load_s, 1),
                       "service_peak_rss_mib_idle": peak_rss_mib(service.pid), "formats": {}}
            for fmt in args.formats.split(","):
                export, create_s, after_create, size, download_s = export_and_download(stub, metadata, fmt,
                                                                                       service.pid)
                assert size == export.size_bytes
                results["formats"][fmt] = {
                    "records": json.loads(export.manifest)["records"], "artifact_mib": round(size / 2**20, 1),
                    "create_s": round(create_s, 1), "entries_per_s": round(args.entries / create_s),
                    "service_peak_rss_mib_after_create": after_create,
                    "download_s": round(download_s, 1), "download_mib_per_s": round(size / 2**20 / download_s, 1),
                    "service_peak_rss_mib_after_download": peak_rss_mib(service.pid)}
            print(json.dumps(results, indent=2))
        finally:
            if service is not None:
                service.terminate()
                service.wait(timeout=30)


if __name__ == "__main__":
    main()
