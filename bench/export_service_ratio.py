"""suite_bench's item 6 alone, A/B across checkouts: CreateExport (AUDIT_SLICE, JSON) through the
Export service against reading the same rows (issue #22: export >= 0.6x of reading).

    PYTHONPATH=.:gen:bench .venv/bin/python bench/export_service_ratio.py --entries 300000 --rounds 2 \\
        --copy main=/path/to/a/clean/copy --copy branch=. [--keep DIR] [--py-spy DIR]

What suite_bench measures for its ratio 6, at a volume of your choosing and without the rest of
the suite: one bulk-loaded tenant (the suite's bulk loader); per round and per checkout (rounds
alternate the order, so the machine's load falls on both alike):

  read    store.iter_ledger over the tenant's whole ledger, as the producer's login in one
          transaction (suite_bench's ``verification``: what ratio 6 divides by), timed in this
          process with this checkout's code (the same reader for every checkout);
  export  that checkout's Export service (``python -m services.export``, its code first on the
          path, started fresh, as the suite starts it: heavy work in its worker processes) asked
          for an AUDIT_SLICE EVIDENCE export in JSON, timed around the CreateExport call, as
          suite_bench's ``export`` does (export_volume.export_and_download, without the download).

Reported per run: wall seconds of each, the ratio (records/s of the export ÷ rows/s of the read:
suite_bench's), the CPU seconds the service's process tree and the database server spent during
the export, and the artifact's size and checksum. Each export appends its EvidenceExported entry
to the ledger, and an unfiltered slice carries it: every export's artifact differs from the last
by that entry, so the bytes are compared elsewhere (bench/export_verify_cost.py, the pinned tests).
``--verify`` then asks the same service to VerifyExport that export (its checks and a re-render of
the slice: the verification of an export), timed the same way (``verify_s``, its CPU seconds, and
``verify_ratio``: records/s of the verification ÷ rows/s of the read).
``--py-spy DIR`` records each export's worker processes with py-spy (a flame graph per run; the
sampling costs CPU: a profiled run's times are not the figures).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import grpc
import psutil

BENCH = Path(__file__).resolve().parent
SECRET = "bench-secret-" + "x" * 40


def _tree_cpu(pid: int) -> float:
    """User + system CPU seconds of a process and its living descendants."""
    total = 0.0
    try:
        root = psutil.Process(pid)
        for proc in [root, *root.children(recursive=True)]:
            try:
                times = proc.cpu_times()
                total += times.user + times.system
            except psutil.NoSuchProcess:
                pass
    except psutil.NoSuchProcess:
        pass
    return total


def _postmaster(work: Path) -> int | None:
    pid_file = work / "pg" / "data" / "postmaster.pid"
    candidates = [pid_file, *(work / "pg").glob("**/postmaster.pid")]
    for path in candidates:
        if path.exists():
            return int(path.read_text().split()[0])
    return None


def _read(producer_url: str, tenant: str) -> tuple[int, float, float]:
    """(rows, wall s, this process's CPU s) of iter_ledger over the tenant's ledger."""
    from aos_recording import store
    from aos_recording.writers import Producer

    producer = Producer(producer_url, pool_size=1)
    try:
        with producer.transaction(tenant) as conn:
            wall, cpu = time.perf_counter(), time.process_time()
            rows = sum(1 for _ in store.iter_ledger(conn, tenant))
            return rows, time.perf_counter() - wall, time.process_time() - cpu
    finally:
        producer.close()


def _export(root: Path, logins: dict[str, str], work: Path, tenant: str, spy: Path | None, label: str,
            verify: bool = False) -> dict:
    from aos.evidence.v1 import bundle_pb2
    from aos.export.v1 import export_service_pb2 as pb, export_service_pb2_grpc as pb_grpc
    from aos_runtime.auth import mint_token
    from scratch import free_port, service_env

    port = free_port()
    env = service_env(logins, "export", AOS_EXPORT_PORT=str(port), AOS_DATA_DIR=str(work / "aos"),
                      AOS_AUTH_JWT_SECRET=SECRET, AOS_LOG_LEVEL="WARNING", AOS_DB_STATEMENT_TIMEOUT_MS="3600000",
                      PYTHONPATH=f"{root}:{root / 'gen'}")
    # -P: the checkout's own code, not this working directory's (python -m puts the cwd first).
    service = subprocess.Popen([sys.executable, "-P", "-m", "services.export"], env=env, cwd=root)
    spies: list[subprocess.Popen] = []
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        grpc.channel_ready_future(channel).result(timeout=60)
        stub = pb_grpc.ExportServiceStub(channel)
        metadata = (("authorization", f"Bearer {mint_token(secret=SECRET, tenant_id=tenant, subject='bench')}"),)
        postmaster = _postmaster(work)
        pg_before = _tree_cpu(postmaster) if postmaster else 0.0
        svc_before = _tree_cpu(service.pid)
        request = pb.CreateExportRequest(audit_slice=pb.AuditSlice(), bundle_type=bundle_pb2.BUNDLE_TYPE_EVIDENCE,
                                         format=bundle_pb2.EXPORT_FORMAT_JSON)
        if spy is not None:  # the worker processes exist once the first heavy call starts them
            future = stub.CreateExport.future(request, metadata=metadata, timeout=3600)
            started = time.perf_counter()
            deadline = time.monotonic() + 30
            while not psutil.Process(service.pid).children(recursive=True) and time.monotonic() < deadline:
                time.sleep(0.05)
            spy.mkdir(parents=True, exist_ok=True)
            spies.append(subprocess.Popen(
                [str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(service.pid), "--subprocesses",
                 "--rate", "50", "--format", "raw", "--output", str(spy / f"{label}.txt"), "--nonblocking"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            export = future.result().export
        else:
            started = time.perf_counter()
            export = stub.CreateExport(request, metadata=metadata, timeout=3600).export
        create_s = time.perf_counter() - started
        svc_cpu = _tree_cpu(service.pid) - svc_before
        pg_cpu = (_tree_cpu(postmaster) - pg_before) if postmaster else None
        manifest = json.loads(export.manifest)
        figures = {"create_s": create_s, "records": manifest["records"], "size": export.size_bytes,
                   "checksum": manifest["checksum"], "service_cpu_s": svc_cpu, "postgres_cpu_s": pg_cpu}
        if verify:
            pg_before = _tree_cpu(postmaster) if postmaster else 0.0
            svc_before = _tree_cpu(service.pid)
            started = time.perf_counter()
            verified = stub.VerifyExport(pb.VerifyExportRequest(export_id=export.export_id), metadata=metadata,
                                         timeout=3600)
            figures.update(verify_s=time.perf_counter() - started, verify_valid=verified.valid,
                           verify_service_cpu_s=_tree_cpu(service.pid) - svc_before,
                           verify_postgres_cpu_s=(_tree_cpu(postmaster) - pg_before) if postmaster else None)
        channel.close()
        return figures
    finally:
        for s in spies:
            s.send_signal(2)
            s.wait(timeout=60)
        service.terminate()
        service.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=300_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--copy", action="append", default=[], metavar="NAME=PATH",
                        help="a checkout to measure (repeatable; default: this one)")
    parser.add_argument("--keep", type=Path, help="keep the loaded database in this directory (a later run "
                                                  "with the same --keep and --entries reuses it)")
    parser.add_argument("--verify", action="store_true", help="then VerifyExport each export, timed")
    parser.add_argument("--py-spy", type=Path, dest="spy", help="record each export with py-spy into this directory")
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    args = parser.parse_args()

    from aos_recording import bulk
    from scratch import scratch_database, service_logins

    copies = dict(c.split("=", 1) for c in args.copy) or {"this": str(BENCH.parent)}
    results: dict[str, list[dict]] = {name: [] for name in copies}
    load_before = os.getloadavg()
    with scratch_database("aos-bench-exr-", keep=args.keep) as (url, work):
        tenant = bulk.tenant_ids(1)[0]
        loaded = work / f"loaded-{args.entries}"
        if not loaded.exists():
            bulk.load(url, bulk.Volume(tenants=1, ledger=args.entries, traces=0, steps=0, system=0))
            loaded.write_text("bulk-loaded\n")
        logins = service_logins(url, work / "aos")
        _read(logins["producer"], tenant)  # warm: the first read of a loaded database pays its cache
        for n in range(args.rounds):
            for name, path in (copies.items() if n % 2 == 0 else reversed(copies.items())):
                rows, read_s, read_cpu = _read(logins["producer"], tenant)
                load = os.getloadavg()[0]
                figures = _export(Path(path).resolve(), logins, work, tenant, args.spy, f"{name}-{n + 1}",
                                  args.verify)
                figures.update(rows=rows, read_s=read_s, read_cpu_s=read_cpu, load_1min=load,
                               ratio=round((figures["records"] / figures["create_s"]) / (rows / read_s), 3))
                if args.verify:
                    figures["verify_ratio"] = round((figures["records"] / figures["verify_s"]) / (rows / read_s), 3)
                    print(f"round {n + 1} {name}: verify {figures['verify_s']:.2f} s (valid "
                          f"{figures['verify_valid']}, service CPU {figures['verify_service_cpu_s']:.2f} s); "
                          f"verify ratio {figures['verify_ratio']}", file=sys.stderr)
                results[name].append(figures)
                print(f"round {n + 1} {name} (load {load:.1f}): read {rows:,} rows {read_s:.2f} s; export "
                      f"{figures['records']:,} records {figures['create_s']:.2f} s (service CPU "
                      f"{figures['service_cpu_s']:.2f} s, postgres CPU {figures['postgres_cpu_s'] or 0:.2f} s); "
                      f"ratio {figures['ratio']}", file=sys.stderr)
    summary = {"entries": args.entries, "rounds": args.rounds, "load_average_before": load_before,
               "load_average_after": os.getloadavg(), "copies": {}}
    for name, runs in results.items():
        summary["copies"][name] = {
            "runs": runs,
            "median": {k: round(statistics.median(r[k] for r in runs), 3)
                       for k in ("read_s", "create_s", "ratio", "service_cpu_s", "postgres_cpu_s", "verify_s",
                                 "verify_ratio", "verify_service_cpu_s", "verify_postgres_cpu_s")
                       if all(r.get(k) is not None for r in runs)}}
    text = json.dumps(summary, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
