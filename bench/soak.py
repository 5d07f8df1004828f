"""Soak (issue #8): the whole suite at ~80 % of its measured capacity for 10 minutes.

    .venv/bin/python bench/soak.py [--minutes 10] [--load 0.8] [--probe-seconds 30] [--rate R] [--out soak.json]
    .venv/bin/python bench/soak.py --overload 2.0 [--minutes 5] [--calm-seconds 60] [--capacity C]
        [--max-pending-calls N] [--env AOS_X=V ...] [--probe-rps N]    # issue #19

With --overload F (issue #19), instead of step 2: --calm-seconds at --load × capacity
(before), --minutes at F × capacity (the surge), --calm-seconds at --load × capacity again
(after). Reports goodput in the surge (OK calls/s) against capacity (target >= 90 %), the
accepted calls' p99 (target <= 1 s), how fast refusals (RESOURCE_EXHAUSTED from the services,
CANCELLED from their gRPC core beyond AOS_MAX_PENDING_CALLS) came back
(target < 10 ms), any other error, and the calm minute after the surge against the one
before (target: as fast). What changes after the surge, to find why it is not as fast:
each call type's latency in both calm phases (by_call); each call type alone, 40 calls one
at a time, before and after, with every process's CPU ms per call (alone_cpu_ms_per_call,
from schedstat: no queue, no concurrency); per phase each service's CPU per call handled, its
Python collections per generation and heap trims, the generator's own collections (CPU
time), PostgreSQL's table counters (rows fetched per table, rows inserted, live/dead rows,
autovacuum/autoanalyze runs), the machine's CPU by kind; every 5 s each process's CPU share
and what autovacuum is doing (samples); --py-spy DIR records the services in both calm phases;
--gc-probe DIR has every process time its own collections (bench/gc_probe/).

Starts the suite as `make run` does (python -m services: embedded Postgres in a
temporary AOS_DATA_DIR, migrations, the demo data, the three services), then:
0. settle: exports the demo run until the tenant's ledger is longer than the
   integrity call's window, so no call still grows with the data (see settle());
   each call type alone, one at a time, before the soak and after it;
1. capacity: a closed loop of --concurrency callers over the mixed workload below
   for --probe-seconds; capacity = calls/s it completed;
2. soak: an open loop issuing calls at --load × capacity for --minutes, each call
   on its own schedule (a slow answer does not slow the offered rate), recording
   every call's status and latency;
3. every 10 s, each service process's resident memory (VmRSS from /proc).
Reports errors (any status but OK), p50/p99 per minute, and each service's RSS
after the first minute (warm) against the end. Writes the figures as JSON.

The mix, per 100 calls: Overview highlights 10, costs 10, decisions 10; Logs audit
list 15, run trace 10, system records 10, integrity (1,000 entries) 5, run
governance 5; Export list 10, get 10, create (a run's EVIDENCE JSON) 5.
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc

from aos.export.v1 import export_service_pb2 as ex_pb, export_service_pb2_grpc as ex_grpc
from aos.logs.v1 import (
    audit_ledger_service_pb2 as au_pb,
    audit_ledger_service_pb2_grpc as au_grpc,
    llm_runs_service_pb2 as ru_pb,
    llm_runs_service_pb2_grpc as ru_grpc,
    system_logs_service_pb2 as sy_pb,
    system_logs_service_pb2_grpc as sy_grpc,
)
from aos.overview.v1 import overview_service_pb2 as ov_pb, overview_service_pb2_grpc as ov_grpc
from aos_runtime.embedded import EmbeddedPostgres
from scratch import free_port

RUN = "tenant-demo.run-support-103"
INTEGRITY_WINDOW = 1000  # ledger entries each integrity call verifies
# Refusals: the services' own (RESOURCE_EXHAUSTED) and their gRPC core's (CANCELLED, a call beyond
# AOS_MAX_PENDING_CALLS refused before the process took it: this generator never cancels a call).
REFUSED = ("RESOURCE_EXHAUSTED", "CANCELLED")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


TICKS = os.sysconf("SC_CLK_TCK")


def machine_cpu() -> dict[str, float]:
    """The machine's CPU seconds so far by kind (/proc/stat's first line, all CPUs): what every
    process and the kernel did, the suite's or not (writeback, other work on a shared machine)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:9]
    return {kind: int(value) / TICKS for kind, value in
            zip(("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal"), fields, strict=True)}


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    """CPU time (user + system) so far of each named process, of every postgres
    process on the machine together, and of this load generator."""
    def of(pid: int) -> float:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / TICKS

    found = {name: of(pid) for name, pid in pids.items()}
    found["postgres"] = sum(of(int(proc.name)) for proc in Path("/proc").iterdir()
                            if proc.name.isdigit() and _comm(proc) == "postgres")
    found["load generator"] = of(os.getpid())
    return found


def _comm(proc: Path) -> str:
    try:
        return (proc / "comm").read_text().strip()
    except OSError:
        return ""


def run_queue(pids: dict[str, int]) -> dict[str, tuple[float, float]]:
    """Per process (every thread summed, /proc/PID/task/*/schedstat): seconds on a CPU and
    seconds runnable but waiting for one (the run-queue delay), so far. The second is CPU
    starvation measured directly: time the process had work and the machine ran something else."""
    def of(pid: int) -> tuple[int, int]:
        ran = waited = 0
        try:
            for task in Path(f"/proc/{pid}/task").iterdir():
                try:
                    fields = (task / "schedstat").read_text().split()
                except OSError:
                    continue
                ran, waited = ran + int(fields[0]), waited + int(fields[1])
        except OSError:
            pass
        return ran, waited

    found = {}
    for name, pid in {**pids, "load generator": os.getpid()}.items():
        ran, waited = of(pid)
        found[name] = (ran / 1e9, waited / 1e9)
    # The suite's own PostgreSQL (not other work's on a shared machine): its postmaster (from
    # its pid file) and the postmaster's children, the backends.
    ran = waited = 0
    for pid in POSTMASTER and [POSTMASTER[0], *_kids(POSTMASTER[0])]:
        r, w = of(pid)
        ran, waited = ran + r, waited + w
    found["postgres"] = (ran / 1e9, waited / 1e9)
    return found


POSTMASTER: list[int] = []  # the suite's embedded PostgreSQL, once started


def _kids(pid: int) -> list[int]:
    try:
        return [int(c) for task in Path(f"/proc/{pid}/task").iterdir()
                for c in (task / "children").read_text().split()]
    except OSError:
        return []


# Counters read from each service at each phase boundary (family names, without _total): the
# heap trims after heavy calls (aos_runtime.heap) and what they cost.
COUNTERS = ("aos_heap_trims", "aos_heap_trim_seconds", "aos_heap_trim_released_bytes")


def scrape(ports: dict[str, int]) -> dict[str, dict]:
    """Each service's /metrics (issue #19's split of a call's time inside the process): the
    histograms' cumulative bucket counts by name, every label but ``le`` summed over."""
    from urllib.request import urlopen

    from prometheus_client.parser import text_string_to_metric_families

    wanted = ("grpc_server_handling_seconds", "aos_db_pool_wait_seconds", "aos_event_loop_lag_seconds",
              "aos_refusal_seconds")
    found: dict[str, dict] = {}
    for name, port in ports.items():
        try:
            text = urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        except OSError:
            continue
        buckets: dict[str, dict[float, float]] = {}
        refused: dict[str, float] = {}
        collections: dict[str, float] = {}
        counters: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            if family.name == "python_gc_collections":  # prometheus_client's GC collector, per generation
                for sample in family.samples:
                    if sample.name.endswith("_total"):
                        collections[sample.labels["generation"]] = sample.value
            if family.name in COUNTERS:
                counters[family.name] = sum(sample.value for sample in family.samples
                                            if sample.name.endswith("_total"))
            if family.name == "aos_admission_refused":  # the counter's family name, without _total
                for sample in family.samples:
                    if sample.name.endswith("_total"):
                        key = f"{sample.labels['gate']}/{sample.labels['cause']}"
                        refused[key] = refused.get(key, 0.0) + sample.value
            if family.name not in wanted:
                continue
            for sample in family.samples:
                if sample.name.endswith("_bucket"):
                    le = float(sample.labels["le"])
                    mine = buckets.setdefault(family.name, {})
                    mine[le] = mine.get(le, 0.0) + sample.value
        found[name] = {**buckets, "refused_by_cause": refused, "gc_collections": collections,  # type: ignore[dict-item]
                       "counters": counters}
    return found


def _quantile(buckets: dict[float, float], q: float) -> float | None:
    """The q-quantile of a histogram's cumulative buckets (linear within a bucket, as PromQL's
    histogram_quantile), in ms; None without observations."""
    bounds = sorted(buckets)
    total = buckets[bounds[-1]] if bounds else 0
    if total <= 0:
        return None
    rank, lower, below = q * total, 0.0, 0.0
    for le in bounds:
        if buckets[le] >= rank:
            if le == float("inf"):
                return round(lower * 1000, 1)
            inside = buckets[le] - below
            return round((lower + (le - lower) * ((rank - below) / inside if inside else 1)) * 1000, 1)
        lower, below = le, buckets[le]
    return None


def inside(start: dict, end: dict, rq0: dict, rq1: dict, seconds: float) -> dict:
    """Where the time of a phase went in each process: CPU and run-queue delay (share of the
    phase's wall time), and from its metrics the event loop's lag, the calls' handling time
    (from the first interceptor to the answer: what gRPC's queue adds is the caller's latency
    minus this), the wait for a database connection and admission's refusals by the service's
    clock, p50 / p99 ms."""
    out: dict[str, dict] = {}
    for name in rq1:
        ran = rq1[name][0] - rq0.get(name, (0, 0))[0]
        waited = rq1[name][1] - rq0.get(name, (0, 0))[1]
        entry: dict = {"cpu_pct": round(ran / seconds * 100, 1), "run_queue_wait_pct": round(waited / seconds * 100, 1),
                       # Of the time it was runnable, the share spent waiting for a CPU.
                       "starved_pct": round(waited / (ran + waited) * 100, 1) if ran + waited else None}
        # Python's collections by generation in the phase (a full one, "2", walks the whole heap).
        g0, g1 = start.get(name, {}).get("gc_collections", {}), end.get(name, {}).get("gc_collections", {})
        if g1:
            entry["gc_collections"] = {gen: int(g1[gen] - g0.get(gen, 0.0)) for gen in sorted(g1)}
        k0, k1 = start.get(name, {}).get("counters", {}), end.get(name, {}).get("counters", {})
        if k1:
            entry["counters"] = {key: round(k1[key] - k0.get(key, 0.0), 3) for key in sorted(k1)}
        for metric, label in (("aos_event_loop_lag_seconds", "loop_lag"), ("grpc_server_handling_seconds", "handling"),
                              ("aos_db_pool_wait_seconds", "pool_wait"),
                              # Admission's refusals timed by the service's own clock.
                              ("aos_refusal_seconds", "refusal")):
            b0, b1 = start.get(name, {}).get(metric, {}), end.get(name, {}).get(metric, {})
            diff = {le: b1[le] - b0.get(le, 0.0) for le in b1}
            if diff:
                entry[label] = {"n": int(diff[max(diff)]), "p50_ms": _quantile(diff, 0.5),
                                "p99_ms": _quantile(diff, 0.99)}
        if entry.get("handling", {}).get("n"):
            # The process's CPU per call it handled (ms): what "after costs more than before" is in.
            entry["cpu_ms_per_call"] = round(ran * 1000 / entry["handling"]["n"], 2)
        # Admission's refusals by gate and cause (aos_admission_refused_total; AOS_ACCEPTED_TARGET_S).
        c0, c1 = start.get(name, {}).get("refused_by_cause", {}), end.get(name, {}).get("refused_by_cause", {})
        causes = {key: int(c1[key] - c0.get(key, 0.0)) for key in sorted(c1) if c1[key] - c0.get(key, 0.0)}
        if causes:
            entry["refused_by_cause"] = causes
        out[name] = entry
    return out


# PostgreSQL's own counters per table (partitions by their own name), read as the admin at each
# phase boundary: what the calm phases read (scans, rows fetched), what the surge grew (rows
# inserted, live and dead rows) and whether autovacuum/autoanalyze ran in a phase.
_TABLE_STATS = ("SELECT relname, seq_scan, seq_tup_read, coalesce(idx_scan, 0), coalesce(idx_tup_fetch, 0), n_tup_ins, "
                "n_live_tup, n_dead_tup, autovacuum_count, autoanalyze_count FROM pg_stat_user_tables")
_TABLE_FIELDS = ("seq_scan", "seq_tup_read", "idx_scan", "idx_tup_fetch", "n_tup_ins", "n_live_tup", "n_dead_tup",
                 "autovacuum_count", "autoanalyze_count")
_GROWING = ("n_live_tup", "n_dead_tup")  # levels, not counters: reported as they are at the phase's end


def table_stats(admin_url: str | None) -> dict[str, dict[str, int]]:
    if not admin_url:
        return {}
    import psycopg

    try:
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
            conn.execute("SELECT pg_stat_clear_snapshot()")
            rows = conn.execute(_TABLE_STATS).fetchall()
            blocks = conn.execute("SELECT blks_hit + blks_read, tup_returned, tup_fetched FROM pg_stat_database "
                                  "WHERE datname = current_database()").fetchone()
    except psycopg.Error:
        return {}
    found = {row[0]: dict(zip(_TABLE_FIELDS, (int(v) for v in row[1:]), strict=True)) for row in rows}
    found["(database)"] = dict(zip(("blocks", "tup_returned", "tup_fetched"), (int(v) for v in blocks), strict=True))
    return found


def table_diff(start: dict, end: dict) -> dict[str, dict[str, int]]:
    """Per table, what changed in a phase (counters as differences, live/dead rows as levels at its end)."""
    out = {}
    for table, now in sorted(end.items()):
        was = start.get(table, {})
        changed = {field: value - was.get(field, 0) for field, value in now.items()
                   if field not in _GROWING and value != was.get(field, 0)}
        if changed:
            out[table] = {**changed, **{field: now[field] for field in _GROWING if field in now}}
    return out


def autovacuum_now(admin_url: str | None) -> list[str]:
    """What autovacuum workers are doing at this moment (their query text)."""
    if not admin_url:
        return []
    import psycopg

    try:
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
            return [row[0] for row in conn.execute(
                "SELECT query FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'").fetchall()]
    except psycopg.Error:
        return []


def children_of(pid: int) -> dict[str, int]:
    """The suite's service processes, by name (python -m services.<name>)."""
    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
            status = (proc / "status").read_text()
        except OSError:
            continue
        ppid = int(re.search(r"PPid:\s+(\d+)", status).group(1))
        if ppid == pid and len(cmd) > 2 and cmd[1] == b"-m" and cmd[2].startswith(b"services."):
            found[cmd[2].decode().split(".", 1)[1]] = int(proc.name)
    return found


class Mix:
    def __init__(self, channels: dict[str, grpc.aio.Channel], metadata) -> None:
        self.md = metadata
        ov, logs, ex = channels["overview"], channels["logs"], channels["export"]
        self.ov, self.au = ov_grpc.OverviewServiceStub(ov), au_grpc.AuditLedgerServiceStub(logs)
        self.ru, self.sy = ru_grpc.LlmRunsServiceStub(logs), sy_grpc.SystemLogsServiceStub(logs)
        self.ex = ex_grpc.ExportServiceStub(ex)
        self.export_ids: list[str] = []
        self.calls = ([self.highlights] * 10 + [self.costs] * 10 + [self.decisions] * 10 + [self.audit] * 15 +
                      [self.trace] * 10 + [self.system] * 10 + [self.integrity] * 5 + [self.governance] * 5 +
                      [self.list_exports] * 10 + [self.get_export] * 10 + [self.create_export] * 5)

    def pick(self, rng: random.Random):
        return rng.choice(self.calls)

    async def one(self, rng: random.Random) -> str:
        call = self.pick(rng)
        await call()
        return call.__name__

    async def highlights(self):
        await self.ov.GetHighlights(ov_pb.GetHighlightsRequest(), metadata=self.md, timeout=10)

    async def costs(self):
        await self.ov.GetCosts(ov_pb.GetCostsRequest(), metadata=self.md, timeout=10)

    async def decisions(self):
        await self.ov.ListDecisions(ov_pb.ListDecisionsRequest(page_size=20), metadata=self.md, timeout=10)

    async def audit(self):
        await self.au.ListAuditEntries(au_pb.ListAuditEntriesRequest(page_size=50), metadata=self.md, timeout=10)

    async def trace(self):
        await self.ru.GetLlmRunTrace(ru_pb.GetLlmRunTraceRequest(run_id=RUN), metadata=self.md, timeout=10)

    async def system(self):
        await self.sy.ListSystemRecords(sy_pb.ListSystemRecordsRequest(page_size=50), metadata=self.md, timeout=10)

    async def integrity(self):
        await self.au.GetIntegrityReport(au_pb.GetIntegrityReportRequest(max_entries=INTEGRITY_WINDOW),
                                         metadata=self.md, timeout=10)

    async def governance(self):
        await self.ru.GetLlmRunGovernance(ru_pb.GetLlmRunGovernanceRequest(run_id=RUN), metadata=self.md, timeout=10)

    async def list_exports(self):
        await self.ex.ListExports(ex_pb.ListExportsRequest(page_size=20), metadata=self.md, timeout=10)

    async def get_export(self):
        if not self.export_ids:
            await self.create_export()
            return
        await self.ex.GetExport(ex_pb.GetExportRequest(export_id=self.export_ids[-1]), metadata=self.md, timeout=10)

    async def create_export(self):
        reply = await self.ex.CreateExport(ex_pb.CreateExportRequest(run_id=RUN, bundle_type=1, format=1),
                                           metadata=self.md, timeout=10)
        self.export_ids.append(reply.export.export_id)
        del self.export_ids[:-10]


# A refusal's message when the call waited in its gate's queue and gave up (admission's
# ``budget_passed``): decided after that wait by design, not at once.
WAITED = "did not start within its budget"


async def timed(mix: Mix, rng: random.Random, results: list) -> None:
    call = mix.pick(rng)
    started = time.monotonic()
    waited = False
    try:
        await call()
        code = "OK"
    except grpc.aio.AioRpcError as err:
        code = err.code().name
        waited = WAITED in (err.details() or "")
    results.append((started, time.monotonic() - started, code, call.__name__, waited))


async def settle(mix: Mix, concurrency: int) -> int:
    """Grows the demo tenant's ledger past the integrity call's window with exports
    (each records one ledger entry), so that no call's cost still changes with the
    ledger's size when capacity is measured: measured on a 100-entry ledger, the
    integrity call is 15x cheaper than for the rest of the soak. Returns the head."""
    async def head() -> int:
        reply = await mix.au.GetIntegrityReport(au_pb.GetIntegrityReportRequest(max_entries=1), metadata=mix.md,
                                                timeout=10)
        return reply.head.seq

    while (seq := await head()) <= INTEGRITY_WINDOW + 100:
        outcomes = await asyncio.gather(*[mix.create_export() for _ in range(concurrency)], return_exceptions=True)
        for outcome in outcomes:
            # Exports are heavy calls (issue #19): one tenant's beyond its share wait or are
            # refused RESOURCE_EXHAUSTED; the loop simply asks again.
            if isinstance(outcome, BaseException) and not (
                    isinstance(outcome, grpc.aio.AioRpcError) and outcome.code().name in REFUSED):
                raise outcome
    return seq


async def solo(mix: Mix, repeat: int = 20) -> dict[str, float]:
    """Each call type alone, one at a time: median ms. Taken before and after the soak,
    it tells whether the calls themselves got slower (growing data) or only queued."""
    medians = {}
    for call in dict.fromkeys(mix.calls):
        times = []
        for _ in range(repeat):
            started = time.monotonic()
            await call()
            times.append(time.monotonic() - started)
        medians[call.__name__] = round(statistics.median(times) * 1000, 1)
    return medians


async def solo_cpu(mix: Mix, pids: dict[str, int], repeat: int = 40) -> dict[str, dict[str, float]]:
    """Each call type alone, one at a time: CPU ms per call of each process (its threads'
    schedstat, ns resolution; PostgreSQL's postmaster and backends together), over ``repeat``
    calls. Taken before the calm phase and after the calm phase after the surge: whether a call
    itself costs more CPU afterwards, with no queue and no concurrency to blur it."""
    found = {}
    for call in dict.fromkeys(mix.calls):
        await call()  # one first, so that a cold path's first call is not in it
        before = run_queue(pids)
        for _ in range(repeat):
            await call()
        after = run_queue(pids)
        found[call.__name__] = {name: round((after[name][0] - before[name][0]) * 1000 / repeat, 2)
                                for name in after if name != "ingest"}
    return found


async def capacity(mix: Mix, seconds: float, concurrency: int, pids: dict[str, int]) -> tuple[float, dict]:
    """Calls/s a closed loop of ``concurrency`` callers completes, and each process's CPU share meanwhile."""
    results: list = []
    before, started = cpu_seconds(pids), time.monotonic()
    deadline = started + seconds

    async def caller(seed: int):
        rng = random.Random(seed)
        while time.monotonic() < deadline:
            await timed(mix, rng, results)

    await asyncio.gather(*[caller(i) for i in range(concurrency)])
    elapsed, after = time.monotonic() - started, cpu_seconds(pids)
    # RESOURCE_EXHAUSTED is admission (issue #19) refusing what would wait too long: e.g. one
    # tenant's integrity calls beyond its heavy share. Not capacity, not an error either.
    errors = [r for r in results if r[2] not in ("OK", *REFUSED)]
    if errors:
        raise RuntimeError(f"errors while measuring capacity: {errors[:5]}")
    refused = sum(1 for r in results if r[2] in REFUSED)
    if refused:
        print(json.dumps({"refused_while_measuring_capacity": refused}), flush=True)
    ok = sum(1 for r in results if r[2] == "OK")
    return ok / seconds, {name: round((after[name] - before[name]) / elapsed * 100, 1) for name in after}


async def ramp(mix: Mix, start: float, step: float, seconds: float, pids: dict[str, int]) -> tuple[float, list]:
    """Capacity from an open-loop ramp rather than a closed loop (whose callers wait for each
    answer, so it measures what 16 callers get, not what the suite can take): ``start``,
    ``start + step``, … calls/s, ``seconds`` each, until a step misses the latency target
    (OK calls' p99 > 1 s) or completes < 95 % of what it offered. Capacity: the highest
    step's goodput that met both. Returns it and every step's figures."""
    steps: list[dict] = []
    best, rate = 0.0, start
    rng = random.Random(5)
    while True:
        before, started = cpu_seconds(pids), time.monotonic()
        results = await offer(mix, rate, seconds, rng)
        elapsed, after = time.monotonic() - started, cpu_seconds(pids)
        ok = latencies(results)
        goodput = ok["calls"] / seconds
        met = ok.get("p99_ms", 0) <= 1000 and goodput >= 0.95 * rate
        steps.append({"offered_per_s": round(rate, 1), "goodput_per_s": round(goodput, 1), "p50_ms": ok.get("p50_ms"),
                      "p99_ms": ok.get("p99_ms"), "codes": _codes(results), "met": met,
                      "cpu_pct": {name: round((after[name] - before[name]) / elapsed * 100, 1) for name in after}})
        print(json.dumps({"ramp_step": steps[-1]}), flush=True)
        if not met:
            return best, steps
        best, rate = goodput, rate + step


async def soak(mix: Mix, rate: float, minutes: float, pids: dict[str, int]) -> dict:
    results: list = []
    memory: list[tuple[float, dict[str, float]]] = []
    cpu: list[tuple[float, dict[str, float]]] = []
    rng = random.Random(7)
    start = time.monotonic()
    end = start + minutes * 60
    pending: set[asyncio.Task] = set()
    next_sample = start
    n = 0
    while (now := time.monotonic()) < end:
        if now >= next_sample:
            memory.append((now - start, {name: round(rss_mib(pid), 1) for name, pid in pids.items()}))
            cpu.append((now - start, cpu_seconds(pids)))
            next_sample += 10
        due = start + n / rate
        if due > now:
            await asyncio.sleep(due - now)
        task = asyncio.create_task(timed(mix, rng, results))
        pending.add(task)
        task.add_done_callback(pending.discard)
        n += 1
    cpu.append((time.monotonic() - start, cpu_seconds(pids)))
    await asyncio.gather(*pending)
    memory.append((time.monotonic() - start, {name: round(rss_mib(pid), 1) for name, pid in pids.items()}))
    per_minute = []
    for minute in range(int(minutes + 0.999)):
        window = [r[1] for r in results if minute * 60 <= r[0] - start < (minute + 1) * 60]
        if window:
            ordered = sorted(window)
            per_minute.append({"minute": minute + 1, "calls": len(window),
                               "p50_ms": round(statistics.median(ordered) * 1000, 1),
                               "p99_ms": round(ordered[int(0.99 * (len(ordered) - 1))] * 1000, 1)})
    warm = next((m for t, m in memory if t >= 60), memory[0][1])
    last = memory[-1][1]
    errors: dict[str, int] = {}
    for r in results:
        if r[2] != "OK":
            errors[r[2]] = errors.get(r[2], 0) + 1
    by_call = {}
    for name in sorted({r[3] for r in results}):
        mine = sorted(r[1] for r in results if r[3] == name)
        by_call[name] = {"calls": len(mine), "errors": sum(1 for r in results if r[3] == name and r[2] != "OK"),
                         "p50_ms": round(statistics.median(mine) * 1000, 1),
                         "p99_ms": round(mine[int(0.99 * (len(mine) - 1))] * 1000, 1)}
    (t0, first), (t1, final) = cpu[0], cpu[-1]
    return {"offered_rate_per_s": round(rate, 1), "calls": len(results),
            "achieved_rate_per_s": round(len(results) / (minutes * 60), 1), "errors": errors,
            "per_minute": per_minute, "by_call": by_call,
            # Share of one core each process used over the soak (2 cores = 200 %).
            "cpu_pct": {name: round((final[name] - first[name]) / (t1 - t0) * 100, 1) for name in final},
            "rss_mib": {name: {"after_1_min": warm[name], "end": last[name],
                               "growth_pct": round((last[name] - warm[name]) / warm[name] * 100, 1)}
                        for name in last},
            "rss_samples": memory}


async def offer(mix: Mix, rate: float, seconds: float, rng: random.Random) -> list:
    """An open loop: ``rate`` calls/s for ``seconds``, each call on its own schedule; every
    call's (started, seconds, code, name), the stragglers awaited."""
    results: list = []
    start = time.monotonic()
    pending: set[asyncio.Task] = set()
    n = 0
    while (now := time.monotonic()) < start + seconds:
        due = start + n / rate
        if due > now:
            await asyncio.sleep(due - now)
        task = asyncio.create_task(timed(mix, rng, results))
        pending.add(task)
        task.add_done_callback(pending.discard)
        n += 1
    await asyncio.gather(*pending)
    return results


def latencies(results: list, code: str | None = "OK") -> dict:
    mine = sorted(r[1] for r in results if code is None or r[2] == code)
    if not mine:
        return {"calls": 0}
    return {"calls": len(mine), "p50_ms": round(statistics.median(mine) * 1000, 1),
            "p99_ms": round(mine[int(0.99 * (len(mine) - 1))] * 1000, 1), "max_ms": round(mine[-1] * 1000, 1)}


class LoopLag:
    """How late this load generator's own event loop runs a timer (every 50 ms): when it lags,
    the latencies it records include its own queueing, not only the services'."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float]] = []   # (when, lag s)
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while True:
            due = time.monotonic() + 0.05
            await asyncio.sleep(0.05)
            now = time.monotonic()
            self.samples.append((now, now - due))

    def between(self, start: float, end: float) -> dict:
        lags = sorted(lag for when, lag in self.samples if start <= when < end)
        if not lags:
            return {}
        return {"p50_ms": round(statistics.median(lags) * 1000, 1),
                "p99_ms": round(lags[int(0.99 * (len(lags) - 1))] * 1000, 1), "max_ms": round(lags[-1] * 1000, 1)}

    def stop(self) -> None:
        self._task.cancel()


class Probe:
    """A second, light caller that is not this Python process (issue #19): h2load, one HTTP/2
    connection per target and one call at a time, ``rps`` calls/s each, for the surge. It tells
    "the load generator is slow" from "the server is slow": the generator is Python on the same
    two cores as the services, and its own wait for a CPU and its event loop's lag enter every
    latency it records, a refusal's too.

    Its calls are refusals by construction: the heavy RPCs the soak's refusals are (integrity,
    create export) with a token that is not one, so every call is answered UNAUTHENTICATED
    (checked once before, through curl) — the same server path as admission's refusal (gRPC's
    queues, the interceptors, the request read, the call wrapper up to the refusal, the status),
    less the gate's few microseconds — at every moment of the surge, not only when a tenant's
    heavy queue is full (the soak's own refusals come in its busiest moments). Each call carries
    ``grpc-timeout: 10S`` as the generator's do. h2load's per-request log is the latency."""

    TOKEN = "not-a-token"

    def __init__(self, addresses: dict[str, str], rps: int, work: Path) -> None:
        self.rps, self.work = rps, work
        self.urls: dict[str, tuple[str, Path]] = {}
        self.running: dict[str, tuple[subprocess.Popen, Path]] = {}
        targets = {"logs": ("/aos.logs.v1.AuditLedgerService/GetIntegrityReport",
                            au_pb.GetIntegrityReportRequest(max_entries=INTEGRITY_WINDOW)),
                   "export": ("/aos.export.v1.ExportService/CreateExport",
                              ex_pb.CreateExportRequest(run_id=RUN, bundle_type=1, format=1))}
        for name, (method, request) in targets.items():
            body = work / f"probe-{name}.bin"
            raw = request.SerializeToString()
            body.write_bytes(b"\0" + len(raw).to_bytes(4, "big") + raw)  # gRPC's frame: no compression, length
            self.urls[name] = (f"http://{addresses[name]}{method}", body)

    def _headers(self) -> list[str]:
        return ["-H", "content-type: application/grpc", "-H", "te: trailers", "-H", "grpc-timeout: 10S",
                "-H", f"authorization: Bearer {self.TOKEN}"]

    def check(self) -> None:
        """Every probe call must be the refusal it is meant to be: grpc-status 16 (UNAUTHENTICATED)."""
        for name, (url, body) in self.urls.items():
            out = subprocess.run(["curl", "-sS", "--http2-prior-knowledge", "-o", "/dev/null", "-D", "-",
                                  "--data-binary", f"@{body}", *self._headers(), url],
                                 check=True, capture_output=True, text=True).stdout
            found = re.search(r"^grpc-status:\s*(\d+)", out, re.M | re.I)
            if not found or found.group(1) != "16":
                raise RuntimeError(f"the probe's call to {name} is not refused UNAUTHENTICATED:\n{out}")

    def start(self, seconds: float) -> None:
        for name, (url, body) in self.urls.items():
            log = self.work / f"probe-{name}.tsv"
            self.running[name] = (subprocess.Popen(
                ["h2load", "-t", "1", "-c", "1", "-m", "1", "--rps", str(self.rps), "-D", str(max(1, int(seconds))),
                 "-d", str(body), *self._headers(), "--log-file", str(log), url],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True), log)

    def result(self) -> dict:
        found = {}
        self.calls: dict[str, list[tuple[float, float]]] = {}
        for name, (process, log) in self.running.items():
            out, _ = process.communicate(timeout=120)
            rows = [row.split("\t") for row in log.read_text().splitlines()] if log.exists() else []
            # (Unix start s, ms) of each call: h2load logs its start in µs since the epoch.
            self.calls[name] = [(int(row[0]) / 1e6, int(row[2]) / 1000) for row in rows if row[1] == "200"]
            ms = sorted(int(row[2]) / 1000 for row in rows if row[1] == "200")
            found[name] = {"calls": len(ms), "failed": sum(1 for row in rows if row[1] != "200"),
                           "p50_ms": round(statistics.median(ms), 2) if ms else None,
                           "p99_ms": round(ms[int(0.99 * (len(ms) - 1))], 2) if ms else None,
                           "max_ms": round(ms[-1], 2) if ms else None,
                           "under_10ms_pct": round(sum(1 for m in ms if m < 10) / len(ms) * 100, 1) if ms else None,
                           **({} if ms else {"h2load": out[-2000:]})}
        return found



def _loop_during(start: float, ms: float, slow: list, gcs: list, seconds: dict) -> dict:
    """The loop-probe's records of one process overlapping a call's [start, start + ms]."""
    end = start + ms / 1000
    held = [(w, c, what) for t, w, c, what in slow if t < end and t + w / 1000 > start]
    return {"held": held, "gc_ms": sum(g for t, _, g in gcs if start <= t < end),
            "busy": seconds.get(str(int(start)), [0.0])[0] / 1000}


def loop_during_refusals(calls: dict[str, list[tuple[float, float]]], probe_dir: Path,
                         pids: dict[str, int]) -> dict:
    """--loop-probe with --probe-rps: what each service's event loop was doing while the probe's
    refusals were in flight (bench/loop_probe/), the late ones (>= 10 ms) against the rest. Per
    refusal: whether a callback of >= 5 ms ran in it and how much of that callback's wall time was
    CPU (near 100 %: the loop was working; far below: the process was waiting for a CPU), whether
    a collection of >= 2 ms ran in it, and how busy the loop was in that second (callbacks' wall
    time); the coroutines or callbacks that held the loop longest during the late ones."""
    found: dict[str, dict] = {}
    for name, rows in calls.items():
        path = probe_dir / f"{pids.get(name)}.json"
        if not rows or not path.exists():
            continue
        seconds = json.loads(path.read_text())["seconds"]
        items = [json.loads(line) for line in path.with_suffix(".jsonl").read_text().splitlines()]
        slow = [item[1:] for item in items if item[0] == "slow"]
        gcs = [item[1:] for item in items if item[0] == "gc"]

        groups: dict[str, dict] = {}
        for label, chosen in (("late", [r for r in rows if r[1] >= 10]), ("fast", [r for r in rows if r[1] < 10])):
            seen = [_loop_during(start, ms, slow, gcs, seconds) for start, ms in chosen]
            if not seen:
                continue
            with_held = [x for x in seen if x["held"]]
            wall = sum(w for x in with_held for w, _, _ in x["held"])
            cpu = sum(c for x in with_held for _, c, _ in x["held"])
            names: dict[str, float] = {}
            for x in with_held:
                for w, _, what in x["held"]:
                    names[what] = names.get(what, 0.0) + w
            groups[label] = {
                "calls": len(seen), "p50_ms": round(statistics.median(r[1] for r in chosen), 2),
                "with_a_callback_over_5ms_pct": round(len(with_held) / len(seen) * 100, 1),
                "those_callbacks_cpu_of_wall_pct": round(cpu / wall * 100, 1) if wall else None,
                "with_a_collection_over_2ms_pct": round(sum(1 for x in seen if x["gc_ms"]) / len(seen) * 100, 1),
                "loop_busy_in_their_second_p50_pct": round(statistics.median(x["busy"] for x in seen) * 100, 1),
                "longest_holders_ms": {k: round(v, 1) for k, v in sorted(names.items(), key=lambda kv: -kv[1])[:8]}}
        found[name] = groups
    return found


class GcTimer:
    """This load generator's own garbage collections (gc.callbacks): count and CPU seconds per
    generation so far. Its heap holds every call's result, so it grows with the surge too."""

    def __init__(self) -> None:
        self.count = [0, 0, 0]
        self.seconds = [0.0, 0.0, 0.0]
        self._started = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict) -> None:
        # CPU time of the collecting thread, not wall time: on a busy machine a collection is
        # preempted, and its wall time would be the machine's, not the collector's.
        if phase == "start":
            self._started = time.thread_time()
        else:
            self.count[info["generation"]] += 1
            self.seconds[info["generation"]] += time.thread_time() - self._started

    def snapshot(self) -> tuple[list[int], list[float]]:
        return list(self.count), list(self.seconds)

    def stop(self) -> None:
        gc.callbacks.remove(self._callback)


def gc_between(a: tuple[list[int], list[float]], b: tuple[list[int], list[float]]) -> dict:
    return {str(gen): {"n": b[0][gen] - a[0][gen], "ms": round((b[1][gen] - a[1][gen]) * 1000, 1)}
            for gen in range(3)}


class Sampler:
    """Every ``every`` seconds through all three phases: each process's CPU share since the last
    sample and what autovacuum workers are doing — the shape of the phase after the surge
    (a transient that decays, or a level)."""

    def __init__(self, pids: dict[str, int], admin_url: str | None, every: float = 5.0) -> None:
        self.pids, self.admin_url, self.every = pids, admin_url, every
        self.samples: list[dict] = []
        self.origin = time.monotonic()
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        last, last_at, was = cpu_seconds(self.pids), time.monotonic(), machine_cpu()
        while True:
            await asyncio.sleep(self.every)
            now, now_at, machine = cpu_seconds(self.pids), time.monotonic(), machine_cpu()
            busy = sum(machine[k] - was[k] for k in machine if k not in ("idle", "iowait"))
            was = machine
            vacuum = await asyncio.to_thread(autovacuum_now, self.admin_url)
            self.samples.append({"t_s": round(now_at - self.origin, 1),
                                 "cpu_pct": {name: round((now[name] - last[name]) / (now_at - last_at) * 100, 1)
                                             for name in now},
                                 "machine_busy_pct": round(busy / (now_at - last_at) * 100, 1),
                                 **({"autovacuum": vacuum} if vacuum else {})})
            last, last_at = now, now_at

    def stop(self) -> None:
        self._task.cancel()


def by_call(results: list) -> dict[str, dict]:
    """Per call type: its OK calls' latency (and any other code)."""
    return {name: {**latencies([r for r in results if r[3] == name]),
                   **({"codes": codes} if len(codes := _codes([r for r in results if r[3] == name])) > 1
                      or "OK" not in codes else {})}
            for name in sorted({r[3] for r in results})}


def windows(results: list, started: float, seconds: float = 10) -> list[dict]:
    """Each ``seconds`` of a phase: offered, OK, the accepted calls' p50/p99."""
    if not results:
        return []
    span = max(r[0] for r in results) - started
    return [{"from_s": w * seconds, "offered": len(win), "ok": sum(1 for r in win if r[2] == "OK"),
             "accepted_p50_ms": latencies(win).get("p50_ms"), "accepted_p99_ms": latencies(win).get("p99_ms")}
            for w in range(int(span // seconds) + 1)
            if (win := [r for r in results if w * seconds <= r[0] - started < (w + 1) * seconds])]


def profile(phase: str, pids: dict[str, int], args) -> list[subprocess.Popen]:
    """With --py-spy DIR: a py-spy (on PATH; not a dependency of the project) sampling each
    service named in --py-spy-services for the calm phase, without pausing it (--nonblocking),
    collapsed stacks into DIR/<phase>-<service>.txt. The same cost in both calm phases."""
    if not args.py_spy:
        return []
    args.py_spy.mkdir(parents=True, exist_ok=True)
    return [subprocess.Popen(["py-spy", "record", "--nonblocking", "-r", "50", "-f", "raw", "-p", str(pids[name]),
                              "-d", str(int(args.calm_seconds)), "-o", str(args.py_spy / f"{phase}-{name}.txt")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for name in args.py_spy_services.split(",") if name in pids]


async def finish(spies: list) -> None:
    for spy in spies:
        await asyncio.to_thread(spy.wait)


async def overload(mix: Mix, capacity_per_s: float, args, pids: dict[str, int] | None = None,
                   metrics_ports: dict[str, int] | None = None, probe: Probe | None = None,
                   admin_url: str | None = None) -> dict:
    """Calm, surge (args.overload × capacity for args.minutes), calm again: see the module's doc."""
    rng = random.Random(11)
    lag = LoopLag()
    gc_timer = GcTimer()
    sampler = Sampler(pids or {}, admin_url)
    marks = [time.monotonic()]
    offset = time.time() - marks[0]  # the phases' bounds in Unix time too, to match the services' logs
    # Per phase boundary: each service's histograms and every process's run-queue figures,
    # PostgreSQL's table counters, this generator's collections.
    snaps = [(scrape(metrics_ports or {}), run_queue(pids or {}))]
    tables = [await asyncio.to_thread(table_stats, admin_url)]
    gcs = [gc_timer.snapshot()]
    machine = [machine_cpu()]
    calm = capacity_per_s * args.load
    spies = profile("before", pids or {}, args)
    before = await offer(mix, calm, args.calm_seconds, rng)
    await finish(spies)
    snaps.append((scrape(metrics_ports or {}), run_queue(pids or {})))
    tables.append(await asyncio.to_thread(table_stats, admin_url))
    gcs.append(gc_timer.snapshot())
    machine.append(machine_cpu())
    surge_rate = capacity_per_s * args.overload
    surge_started = time.monotonic()
    marks.append(surge_started)
    cpu_before = cpu_seconds(pids or {})
    if probe is not None:
        probe.start(args.minutes * 60)
    surge = await offer(mix, surge_rate, args.minutes * 60, rng)
    surge_s = time.monotonic() - surge_started
    cpu_after = cpu_seconds(pids or {})
    marks.append(time.monotonic())
    snaps.append((scrape(metrics_ports or {}), run_queue(pids or {})))
    tables.append(await asyncio.to_thread(table_stats, admin_url))
    gcs.append(gc_timer.snapshot())
    machine.append(machine_cpu())
    after_started = time.monotonic()
    spies = profile("after", pids or {}, args)
    after = await offer(mix, calm, args.calm_seconds, rng)
    await finish(spies)
    marks.append(time.monotonic())
    snaps.append((scrape(metrics_ports or {}), run_queue(pids or {})))
    tables.append(await asyncio.to_thread(table_stats, admin_url))
    gcs.append(gc_timer.snapshot())
    machine.append(machine_cpu())
    lag.stop()
    sampler.stop()
    gc_timer.stop()
    phases = {phase: inside(snaps[i][0], snaps[i + 1][0], snaps[i][1], snaps[i + 1][1], marks[i + 1] - marks[i])
              for i, phase in enumerate(("before", "surge", "after"))}
    for i, phase in enumerate(("before", "surge", "after")):
        phases[phase]["load generator"]["gc"] = gc_between(gcs[i], gcs[i + 1])
    database = {phase: table_diff(tables[i], tables[i + 1]) for i, phase in enumerate(("before", "surge", "after"))}
    # The whole machine's CPU per phase (share of one core; 2 cores = 200 %) by kind.
    machine_pct = {phase: {kind: round((machine[i + 1][kind] - machine[i][kind]) / (marks[i + 1] - marks[i]) * 100, 1)
                           for kind in machine[i]}
                   for i, phase in enumerate(("before", "surge", "after"))}
    ok = sum(1 for r in surge if r[2] == "OK")
    codes: dict[str, int] = {}
    for r in surge:
        codes[r[2]] = codes.get(r[2], 0) + 1
    by_reason: dict[str, int] = {}
    refused = [r for r in surge if r[2] in REFUSED]
    for r in refused:
        by_reason[r[3]] = by_reason.get(r[3], 0) + 1
    accepted = latencies(surge)
    refusals = latencies(refused, None)
    refusal_ms = sorted(r[1] * 1000 for r in refused)
    goodput = ok / surge_s
    return {
        "capacity_calls_per_s": round(capacity_per_s, 1), "calm_rate_per_s": round(calm, 1),
        "surge_rate_per_s": round(surge_rate, 1), "surge_s": round(surge_s, 1),
        "phases_unix": [round(mark + offset, 3) for mark in marks],
        "surge": {"offered": len(surge), "codes": codes, "refused_by_call": by_reason,
                  "goodput_per_s": round(goodput, 1),
                  "goodput_vs_capacity_pct": round(goodput / capacity_per_s * 100, 1),
                  "accepted": accepted, "refusals": refusals,
                  "refusals_by_code": {code: latencies(surge, code) for code in REFUSED},
                  "refusals_under_10ms_pct": round(sum(1 for ms in refusal_ms if ms < 10) / len(refusal_ms) * 100, 1)
                  if refusal_ms else None,
                  # The refusals the services decided at once, without those that waited in a gate's
                  # queue and gave up (WAITED: admission's budget_passed, late by design).
                  "refusals_at_once": {**latencies(at_once := [r for r in refused if not r[4]], None),
                                       "under_10ms_pct": round(sum(1 for r in at_once if r[1] < 0.01)
                                                               / len(at_once) * 100, 1) if at_once else None},
                  # The same refusal path as a light non-Python caller sees it (Probe; --probe-rps).
                  **({"probe_refusals": probe.result()} if probe is not None else {})},
        # Share of one core each process used in the surge (2 cores = 200 %): the load generator
        # runs on the same two cores as the services.
        "surge_cpu_pct": {name: round((cpu_after[name] - cpu_before[name]) / surge_s * 100, 1) for name in cpu_after},
        # Each 10 s of the surge: is a long tail steady or a transient when the surge begins?
        "surge_windows": [{"from_s": w * 10, "offered": len(win), "ok": sum(1 for r in win if r[2] == "OK"),
                           "accepted_p50_ms": latencies(win).get("p50_ms"),
                           "accepted_p99_ms": latencies(win).get("p99_ms"),
                           "refusals_p50_ms": latencies([r for r in win if r[2] in REFUSED], None).get("p50_ms"),
                           "refusals_under_10ms": sum(1 for r in win if r[2] in REFUSED and r[1] < 0.01)}
                          for w in range(int(surge_s // 10) + 1)
                          if (win := [r for r in surge if w * 10 <= r[0] - surge_started < (w + 1) * 10])],
        # Per call type in the surge: the accepted calls' latency and how each was refused.
        "surge_by_call": {name: {"accepted": latencies([r for r in surge if r[3] == name]),
                                 "refused": {code: n for code, n in _codes([r for r in surge if r[3] == name]).items()
                                             if code != "OK"}}
                          for name in sorted({r[3] for r in surge})},
        # Inside each process, per phase (issue #19: queueing in the process vs CPU starvation).
        "inside": phases,
        "load_average": list(os.getloadavg()),
        "load_generator_loop_lag": {"before": lag.between(marks[0], marks[1]),
                                    "surge": lag.between(marks[1], marks[2]),
                                    "after": lag.between(marks[2], marks[3])},
        # Issue #19's "as fast after as before", per call type: which calls got dearer.
        "by_call": {"before": by_call(before), "after": by_call(after)},
        "after_windows": windows(after, after_started),
        "database": database,
        "machine_cpu_pct": machine_pct,
        "samples": sampler.samples,
        "before": {"codes": _codes(before), **latencies(before)},
        "after": {"codes": _codes(after), **latencies(after)},
        "first_minute_after": {"codes": _codes([r for r in after if r[0] - after[0][0] < 60]),
                               **latencies([r for r in after if r[0] - after[0][0] < 60])} if after else {},
        "targets": {"goodput_ge_90pct": goodput >= 0.9 * capacity_per_s,
                    "accepted_p99_le_1s": accepted.get("p99_ms", 0) <= 1000,
                    "refusals_p99_lt_10ms": refusals.get("p99_ms", 0) < 10,
                    "after_as_fast_as_before": latencies(after).get("p99_ms", 0)
                    <= 1.2 * latencies(before).get("p99_ms", 0)},
    }


def _codes(results: list) -> dict[str, int]:
    codes: dict[str, int] = {}
    for r in results:
        codes[r[2]] = codes.get(r[2], 0) + 1
    return codes


async def run(addresses: dict[str, str], token: str, args, pids: dict[str, int],
              metrics_ports: dict[str, int] | None = None, probe: Probe | None = None,
              admin_url: str | None = None) -> dict:
    channels = {name: grpc.aio.insecure_channel(address) for name, address in addresses.items()}
    mix = Mix(channels, (("authorization", f"Bearer {token}"),))
    for _ in range(30):  # warm every path once
        await mix.one(random.Random(1))
    head = await settle(mix, args.concurrency)
    before = await solo(mix)
    print(json.dumps({"alone_before_ms": before}), flush=True)
    ramp_steps: list = []
    if args.capacity:  # given: the same offered load for runs compared with each other
        cap, cap_cpu = args.capacity, {}
    elif args.ramp:
        cap, ramp_steps = await ramp(mix, args.ramp[0], args.ramp[1], args.ramp_seconds, pids)
        cap_cpu = ramp_steps[-2]["cpu_pct"] if len(ramp_steps) > 1 else {}
        print(json.dumps({"capacity_calls_per_s": round(cap, 1), "from": "ramp"}), flush=True)
        if cap <= 0:
            raise RuntimeError(f"no ramp step met the latency target: {ramp_steps}")
    else:
        cap, cap_cpu = await capacity(mix, args.probe_seconds, args.concurrency, pids)
    print(json.dumps({"capacity_calls_per_s": round(cap, 1), "cpu_pct": cap_cpu}), flush=True)
    if args.overload:
        cpu_before = await solo_cpu(mix, pids)
        result = {"ledger_head_before": head, "capacity_cpu_pct": cap_cpu, "ramp": ramp_steps,
                  "overload": args.overload, "minutes": args.minutes, "calm_seconds": args.calm_seconds,
                  **await overload(mix, cap, args, pids, metrics_ports, probe, admin_url)}
        if probe is not None and args.loop_probe:
            result["surge"]["loop_during_probe_refusals"] = loop_during_refusals(probe.calls, args.loop_probe, pids)
        # Each call type alone, one at a time, before the calm phase and after the calm phase after
        # the surge: a call that itself got dearer (not only queued) shows here.
        result["alone_ms"] = {"before": before, "after": await solo(mix)}
        result["alone_cpu_ms_per_call"] = {"before": cpu_before, "after": await solo_cpu(mix, pids)}
        for channel in channels.values():
            await channel.close()
        return result
    rate = args.rate or cap * args.load
    result = {"ledger_head_before": head, "capacity_calls_per_s": round(cap, 1), "capacity_cpu_pct": cap_cpu,
              "load": round(rate / cap, 3),
              "minutes": args.minutes, **await soak(mix, rate, args.minutes, pids)}
    result["alone_ms"] = {"before": before, "after": await solo(mix)}
    for channel in channels.values():
        await channel.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--load", type=float, default=0.8)
    parser.add_argument("--probe-seconds", type=float, default=30)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rate", type=float, help="offer this many calls/s instead of --load × capacity")
    parser.add_argument("--overload", type=float,
                        help="issue #19: calm, then this many times capacity for --minutes, then calm again")
    parser.add_argument("--calm-seconds", type=float, default=60, help="with --overload: each calm phase")
    parser.add_argument("--shed-lag-s", help="AOS_SHED_LAG_S for the services (0: shedding off, to compare)")
    parser.add_argument("--max-pending-calls",
                        help="AOS_MAX_PENDING_CALLS for the services (0: gRPC's own bound of thousands, to compare)")
    parser.add_argument("--capacity", type=float,
                        help="calls/s to take as capacity instead of probing it (to compare runs at one offered load)")
    parser.add_argument("--ramp", type=float, nargs=2, metavar=("START", "STEP"),
                        help="capacity from an open-loop ramp (START, START+STEP, … calls/s), not the closed loop")
    parser.add_argument("--ramp-seconds", type=float, default=10, help="with --ramp: each step")
    parser.add_argument("--env", action="append", default=[], metavar="AOS_X=V",
                        help="a setting for the services (repeatable), e.g. --env AOS_MAX_INFLIGHT=10")
    parser.add_argument("--generator-nice", type=int, default=0,
                        help="this load generator's niceness (e.g. -10, as root): on a machine shared with other "
                             "work the generator is starved too, and its own wait for a CPU enters every latency "
                             "it records; the services keep theirs")
    parser.add_argument("--probe-rps", type=int, default=0,
                        help="with --overload: a second, light, non-Python caller (h2load, `apt-get install -y "
                             "nghttp2-client`) refused on the same server path, this many calls/s to Logs and to "
                             "Export each, through the surge (Probe): the refusals' latency without this generator's")
    parser.add_argument("--py-spy", type=Path, metavar="DIR",
                        help="with --overload: py-spy record (on PATH) the services of --py-spy-services in each "
                             "calm phase, collapsed stacks into DIR")
    parser.add_argument("--py-spy-services", default="logs,export,overview")
    parser.add_argument("--gc-probe", type=Path, metavar="DIR",
                        help="every process of the suite times its garbage collections into DIR/<pid>.json "
                             "(bench/gc_probe/sitecustomize.py): each full collection's CPU ms, GC-tracked objects")
    parser.add_argument("--loop-probe", type=Path, metavar="DIR",
                        help="every process of the suite records what holds its event loop into DIR/<pid>.json "
                             "(bench/loop_probe/sitecustomize.py); with --probe-rps, what each service's loop did "
                             "while the probe's refusals were late (surge.loop_during_probe_refusals). Not with "
                             "--gc-probe (both are a sitecustomize)")
    parser.add_argument("--out", type=Path, default=Path("soak.json"))
    args = parser.parse_args()
    if args.gc_probe and args.loop_probe:
        parser.error("--gc-probe and --loop-probe are both a sitecustomize: one at a time")
    work = Path(tempfile.mkdtemp(prefix="aos-soak-"))
    ports = {name: free_port() for name in ("overview", "logs", "export", "gateway")}
    metrics_ports = {name: free_port() for name in ("overview", "logs", "export")}
    env = {k: v for k, v in os.environ.items() if not k.startswith("AOS_") and k != "DATABASE_URL"}
    env.update({f"AOS_{name.upper()}_PORT": str(port) for name, port in ports.items()},
               **{f"AOS_{name.upper()}_METRICS_PORT": str(port) for name, port in metrics_ports.items()},
               AOS_DATA_DIR=str(work / "aos"), AOS_LOG_LEVEL="WARNING", PYTHONUNBUFFERED="1",
               # The mix creates ~8 exports a second for one tenant: a capacity run, not a quota test.
               AOS_EXPORT_RATE_PER_HOUR="0")
    if args.shed_lag_s is not None:
        env["AOS_SHED_LAG_S"] = args.shed_lag_s
    if args.max_pending_calls is not None:
        env["AOS_MAX_PENDING_CALLS"] = args.max_pending_calls
    if args.gc_probe:
        args.gc_probe.mkdir(parents=True, exist_ok=True)
        env["SOAK_GC_PROBE_DIR"] = str(args.gc_probe.resolve())
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).resolve().with_name("gc_probe")),
                                                          env.get("PYTHONPATH")]))
    if args.loop_probe:
        args.loop_probe.mkdir(parents=True, exist_ok=True)
        env["SOAK_LOOP_PROBE_DIR"] = str(args.loop_probe.resolve())
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).resolve().with_name("loop_probe")),
                                                          env.get("PYTHONPATH")]))
    for setting in args.env:
        name, _, value = setting.partition("=")
        env[name] = value
    suite = subprocess.Popen([sys.executable, "-m", "services"], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        while not any("Ctrl-C stops everything" in line for line in lines):
            line = suite.stdout.readline()
            if not line and suite.poll() is not None:
                raise RuntimeError("the suite did not start:\n" + "".join(lines))
            lines.append(line)
        token = re.search(r"^\s+(eyJ[\w-]+\.[\w-]+\.[\w-]+)\s*$", "".join(lines), re.M).group(1)
        pids = children_of(suite.pid)
        found = sorted(work.rglob("postmaster.pid"))
        if found:
            POSTMASTER.append(int(found[0].read_text().split()[0]))
        addresses = {name: f"127.0.0.1:{ports[name]}" for name in ("overview", "logs", "export")}
        if args.generator_nice:
            # After the suite started (its processes keep the niceness they were started with).
            os.setpriority(os.PRIO_PROCESS, 0, args.generator_nice)
        probe = None
        if args.probe_rps and args.overload:
            probe = Probe(addresses, args.probe_rps, work)
            probe.check()
        admin_url = None
        if (pg_port := EmbeddedPostgres.running_port(work / "aos")) is not None:
            # The admin's DSN of this run's own scratch cluster: PostgreSQL's table counters per phase.
            server = EmbeddedPostgres(work / "aos")
            server.port = pg_port
            admin_url = server.url
        measured = asyncio.run(run(addresses, token, args, pids, metrics_ports, probe, admin_url))
        result = {"command": " ".join(["bench/soak.py", *sys.argv[1:]]),
                  "generator_nice": os.getpriority(os.PRIO_PROCESS, 0), **measured}
        args.out.write_text(json.dumps(result, indent=2))
        summary = {k: v for k, v in result.items() if k not in ("rss_samples",)}
        print(json.dumps(summary, indent=2))
    finally:
        suite.send_signal(signal.SIGINT)
        try:
            suite.wait(timeout=60)
        except subprocess.TimeoutExpired:
            suite.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
