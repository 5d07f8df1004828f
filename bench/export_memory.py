"""Bounded memory under concurrent large exports (issue #19): the Export service's resident
memory idle, at its peak under four concurrent exports of each format, and after.

    .venv/bin/python bench/export_memory.py [--entries 200000] [--concurrency 4]
                                            [--formats JSON,CSV,PDF,ZIP] [--out bench/results/export_memory.json]
                                            [--run-steps N] [--env AOS_HEAP_TRIM=off] [--return-mib 25]

Bulk-loads one tenant's audit ledger (aos_recording.bulk), starts the Export service as its
own process (python -m services.export, its own login), warms it (one list, then ``concurrency``
small exports of each format at once: that starts its heavy worker processes and runs each
format's code in each of them), then per format: ``concurrency`` CreateExport calls
of an AUDIT_SLICE of the whole ledger at once, then the same number of DownloadExport streams
at once. The memory of the service's process tree — the service, the fork server of its heavy
worker processes and the workers (aos_runtime.offload) — is sampled every 50 ms throughout in
two sums: of each process's VmRSS, and of each one's PSS (/proc/PID/smaps_rollup). The RSS sum
counts a page that forked processes share (the interpreter, the imported modules) once per
process; the PSS sum counts it once, split among them — the fair figure for a process tree,
and the one the bound is judged on (the RSS sum is reported beside it). Reported per format,
each as both sums: before, the peak during the exports and downloads, and the tree ``--settle-s``
after they end (by process role too), each against idle — the warmed tree, workers included
(also reported: idle before the workers started). The issue's bound: peak ≤ idle + 100 MiB
(``within_bound``) and back near idle after (``returned``: within ``--return-mib`` of idle).
By default two rounds through the formats, so a second round shows whether anything
accumulates. With ``--run-steps N`` the exports are of one run of N steps (an LLM_RUN
EVIDENCE bundle, JSON/PDF/ZIP) instead of the slice. Also the artifacts' sizes, the wall time
and the service's heap trims (aos_heap_trims_total, from its /metrics). Quotas are off for the
run (AOS_EXPORT_RATE_PER_HOUR=0), and the tenant's heavy share is ``concurrency`` (so the
exports do render at once). Uses an embedded Postgres in a temporary directory unless
DATABASE_URL is set. The JSON result goes to --out (and stdout).
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
# "Returns after": the tree's PSS sum --settle-s after a format's last download, within this of idle.
RETURN_MIB = 25.0


def _kib(path: str, field: str) -> int:
    """A ``Field:   N kB`` line of a /proc file (status, smaps_rollup), 0 if absent."""
    for line in Path(path).read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _children(pid: int) -> list[int]:
    found = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except FileNotFoundError:  # the process ended meanwhile (a recycled worker)
        return found
    for task in tasks:
        try:
            found.extend(int(c) for c in (task / "children").read_text().split())
        except FileNotFoundError:  # a thread that ended meanwhile
            continue
    return found


def family(pid: int) -> dict[int, str]:
    """The service's process tree, each process with its role: the service itself; the fork server
    that forks its heavy worker processes (aos_runtime.offload) and the workers it forked; anything
    else (multiprocessing's resource tracker) as ``other``."""
    roles, todo = {pid: "service"}, [pid]
    while todo:
        parent = todo.pop()
        for child in _children(parent):
            try:
                cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
            except FileNotFoundError:
                continue
            if roles[parent] == "forkserver":
                roles[child] = "worker"
            elif b"forkserver" in cmdline:
                roles[child] = "forkserver"
            else:
                roles[child] = "other"
            todo.append(child)
    return roles


def memory(pid: int) -> dict:
    """The process tree's resident memory, MiB: ``rss`` the sum of each process's VmRSS, ``pss`` the
    sum of each one's proportional share (/proc/PID/smaps_rollup). Forked processes share their
    parent's pages until they write them (the imported modules, the interpreter): a plain RSS sum
    counts every such page once per process, PSS divides each page among the processes mapping it,
    so the PSS sum is what the tree holds of the machine's memory. Also by role (``roles``)."""
    total = {"rss": 0, "pss": 0}
    roles: dict[str, dict[str, float]] = {}
    for p, role in family(pid).items():
        try:
            rss, pss = _kib(f"/proc/{p}/status", "VmRSS"), _kib(f"/proc/{p}/smaps_rollup", "Pss")
        except (FileNotFoundError, ProcessLookupError):  # ended meanwhile (a recycled worker)
            continue
        total["rss"] += rss
        total["pss"] += pss
        mine = roles.setdefault(role, {"processes": 0, "rss": 0, "pss": 0})
        mine["processes"] += 1
        mine["rss"] += rss
        mine["pss"] += pss
    mib = {k: round(v / 1024, 1) for k, v in total.items()}
    return {**mib, "roles": {role: {"processes": v["processes"], "rss": round(v["rss"] / 1024, 1),
                                    "pss": round(v["pss"] / 1024, 1)} for role, v in sorted(roles.items())}}


def workers(pid: int) -> set[int]:
    return {p for p, role in family(pid).items() if role == "worker"}


def workers_anon_mib(pid: int) -> dict[str, float]:
    """Each heavy worker's resident anonymous memory (RssAnon, MiB) by pid: what the recycling bound
    (AOS_HEAVY_WORKER_RECYCLE_MIB) is judged on, against the worker's own before its first job."""
    found = {}
    for p in sorted(workers(pid)):
        try:
            found[str(p)] = round(_kib(f"/proc/{p}/status", "RssAnon") / 1024, 1)
        except FileNotFoundError:
            continue
    return found


def rss_parts_mib(pid: int) -> dict[str, float]:
    """Resident memory by kind, summed over the tree: anonymous (the heap: Python objects, malloc
    arenas, buffers) and file-backed (shared libraries' pages touched so far)."""
    found = {"RssAnon": 0, "RssFile": 0}
    for p in family(pid):
        for field in found:
            try:
                found[field] += _kib(f"/proc/{p}/status", field)
            except FileNotFoundError:
                continue
    return {field: round(kib / 1024, 1) for field, kib in found.items()}


def steady(pid: int, timeout_s: float = 30.0) -> dict:
    """The tree's memory once it stops moving (PSS sum within 1 MiB over 2 s): the worker processes
    a first heavy job started finish their imports, the first job's trim runs."""
    last, deadline = memory(pid), time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        time.sleep(2)
        now = memory(pid)
        if abs(now["pss"] - last["pss"]) < 1:
            return now
        last = now
    return last


class Sampler:
    """The tree's RSS sum and PSS sum every ``interval`` seconds in a thread; the peak of each
    since the last ``reset``."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid, self.interval = pid, interval
        self.peak = {"rss": 0.0, "pss": 0.0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                now = memory(self.pid)
                self.peak = {k: max(self.peak[k], now[k]) for k in self.peak}
            except (FileNotFoundError, ProcessLookupError):
                pass
            self._stop.wait(self.interval)

    def reset(self) -> None:
        now = memory(self.pid)
        self.peak = {k: now[k] for k in self.peak}

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
    parser.add_argument("--return-mib", type=float, default=RETURN_MIB,
                        help="'after' counts as returned when within this of idle (PSS sum)")
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
            # Warm: one small call, so idle is the service as it serves, not as it booted; then
            # ``concurrency`` small exports (the first hour of the slice, a few records) of each
            # format at once. They start the heavy worker processes (on the first heavy job, all at
            # once) and run each format's code in each worker: a worker forked from the fork server
            # shares its imported modules' pages until running their code writes to them (reference
            # counts), and from then holds its own copy — memory the workers take on their first
            # jobs of a kind, whatever their size. Without this "idle" would lack both, and the
            # first large exports' figures would count them as the exports' memory.
            stub.ListExports(pb.ListExportsRequest(), metadata=metadata, timeout=60)
            time.sleep(1)
            cold = memory(service.pid)
            # The workers warm (the service starts them), before any job: the recycling baseline.
            cold_anon = workers_anon_mib(service.pid)
            small = timestamp_pb2.Timestamp()
            small.FromDatetime(bulk.EPOCH + timedelta(hours=1))
            with ThreadPoolExecutor(args.concurrency) as pool:
                for fmt in args.formats.split(","):
                    list(pool.map(lambda _i, f=fmt: stub.CreateExport(pb.CreateExportRequest(
                        audit_slice=pb.AuditSlice(created_before=small), bundle_type=bundle_pb2.BUNDLE_TYPE_EVIDENCE,
                        format=bundle_pb2.ExportFormat.Value(f"EXPORT_FORMAT_{f}")), metadata=metadata, timeout=600),
                        range(args.concurrency)))
            idle_mem = steady(service.pid)
            idle = {k: idle_mem[k] for k in ("rss", "pss")}
            idle_parts = rss_parts_mib(service.pid)
            idle_anon = workers_anon_mib(service.pid)
            sampler = Sampler(service.pid)
            results = {"command": " ".join(["bench/export_memory.py", *sys.argv[1:]]),
                       "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                       "machine": f"{platform.machine()}, {len(__import__('os').sched_getaffinity(0))} cores "
                                  "(shared with other work during the run)",
                       "entries": args.entries, "concurrency": args.concurrency, "run_steps": args.run_steps,
                       "service_env": {**MALLOC_DEFAULTS, **extra},
                       "bulk_load_s": round(load_s, 1),
                       # MiB of the service's process tree: the sum of VmRSS and the sum of PSS.
                       "idle_before_workers_mib": cold, "idle_mib": idle_mem, "idle_rss_parts_mib": idle_parts,
                       # Each worker's RssAnon warm before any job, and after the small exports (workers
                       # recycled meanwhile have other pids): what small jobs grow a warm worker by.
                       "workers_anon_warm_mib": cold_anon, "workers_anon_idle_mib": idle_anon,
                       "bound_mib": BOUND_MIB, "return_mib": args.return_mib,
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
                    before = memory(service.pid)
                    workers_before = workers(service.pid)
                    sampler.reset()
                    t0 = time.perf_counter()
                    exports = list(pool.map(lambda _i, f=fmt: create(f), range(args.concurrency)))
                    create_s = time.perf_counter() - t0
                    peak_create = dict(sampler.peak)
                    t0 = time.perf_counter()
                    sizes = list(pool.map(download, [e.export_id for e in exports]))
                    download_s = time.perf_counter() - t0
                    assert sizes == [e.size_bytes for e in exports]
                    assert len({e.checksum for e in exports}) == 1, "the same request gave different bytes"
                    peak = dict(sampler.peak)
                    time.sleep(args.settle_s)
                    after = memory(service.pid)
                    over = {k: round(peak[k] - idle[k], 1) for k in idle}
                    after_over = {k: round(after[k] - idle[k], 1) for k in idle}
                    run = {
                        "format": fmt, "round": round_no, "records": json.loads(exports[0].manifest)["records"],
                        "artifact_mib": round(exports[0].size_bytes / 2**20, 1),
                        "create_s": round(create_s, 1), "download_s": round(download_s, 1),
                        # Each {rss, pss}: MiB of the whole tree (the service, its fork server, its workers).
                        "before_mib": before, "peak_during_creates_mib": peak_create, "peak_mib": peak,
                        "after_mib": after, "after_rss_parts_mib": rss_parts_mib(service.pid),
                        "workers_anon_after_mib": workers_anon_mib(service.pid),
                        "peak_over_idle_mib": over, "after_over_idle_mib": after_over,
                        # The bound, on the fair measure (PSS); the RSS sum beside it.
                        "within_bound": over["pss"] <= BOUND_MIB, "rss_sum_within_bound": over["rss"] <= BOUND_MIB,
                        "returned": after_over["pss"] <= args.return_mib,
                        # Heavy worker processes that ended and were replaced (AOS_HEAVY_WORKER_RECYCLE_MIB).
                        "workers_replaced": len(workers_before - workers(service.pid)),
                        "heap_trims_so_far": heap_trims()}
                    results["runs"].append(run)
                    print(json.dumps(run), flush=True)
            sampler.stop()
            results["final_mib"] = memory(service.pid)
            results["all_within_bound"] = all(r["within_bound"] for r in results["runs"])
            results["all_returned"] = all(r["returned"] for r in results["runs"])
            results["summary"] = [
                {"format": r["format"], "round": r["round"], "idle": idle, "peak_over_idle": r["peak_over_idle_mib"],
                 "after_over_idle": r["after_over_idle_mib"], "within_bound": r["within_bound"],
                 "returned": r["returned"]} for r in results["runs"]]
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(results, indent=2) + "\n")
            print(json.dumps(results, indent=2))
        finally:
            if service is not None:
                service.terminate()
                service.wait(timeout=30)


if __name__ == "__main__":
    main()
