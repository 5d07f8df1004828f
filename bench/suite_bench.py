"""The suite against its limits (issue #9): one command, load from tools that are not Python.

    .venv/bin/python bench/suite_bench.py [--quick] [--out bench/results/]

Needs h2load and wrk (`apt-get install -y nghttp2-client wrk`), pgbench
(`apt-get install -y postgresql-client`) and matplotlib (`.venv/bin/pip install -e '.[bench]'`);
it checks for each first and says what is missing.

What it does, in one run:
1. a scratch database (the embedded Postgres, or DATABASE_URL) with one large tenant's
   audit ledger (bulk-loaded, valid chains: --entries) and one tenant at Overview's
   volumes (bench/overview_volume.py's loader: --incidents, --proposals, --runs);
2. the suite as `make run` starts it (`python -m services`: three services and the
   REST gateway, each its own process) on free ports, with a known JWT and page-token key;
3. each measurement for --seconds after a short warm-up, --clients concurrent callers:
   gRPC through h2load (one prebuilt request body: 0x00, 4-byte big-endian length,
   the serialized request), REST through wrk, SQL through pgbench. Every request kind
   is first called once through a real client and checked; h2load counts an HTTP 200
   as success even when grpc-status is not 0, so every h2load run is also checked
   against the service's own call log (every call it logged for the method must be
   OK, and at least as many as h2load counted) and the bytes received;
4. p50/p99 from per-request latencies (h2load --log-file, pgbench --log, wrk --latency),
   throughput, and the ratios of issue #9, into <out>/suite_bench.json and a chart,
   <out>/suite_bench.png.

The ratios:
  1 ListAuditEntries (Logs service) against a bare grpc.aio server (bench/bare_server.py)
    answering the same response bytes, same process model — target >= 0.8x (throughput)
  2 the same against pgbench running the service's exact SQL (captured from the store
    function, same role, same tenant scope, same clients) — the database's limit
  3 page --deep-page against page 1 of the large tenant (p50) — target <= 1.2x
  4 REST through the gateway (wrk) against direct gRPC (h2load), the same request
  5 Overview GetHighlights and GetCosts at issue #5's volumes: p50 against 10 ms
    (issue #5's target: single-digit milliseconds)
  6 exporting the large tenant's ledger (CreateExport, JSON): entries/s against
    reading the same rows, and the Export process's peak RSS (VmHWM) against idle
  7 integrity verification (verify_ledger) against reading the same rows

--quick: a small smoke run (about two minutes) — its figures are labelled as such.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import grpc
import psutil
import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from sqlalchemy import event

from aos.export.v1 import export_service_pb2_grpc as ex_grpc
from aos.logs.v1 import audit_ledger_service_pb2 as au_pb, audit_ledger_service_pb2_grpc as au_grpc
from aos.overview.v1 import overview_service_pb2 as ov_pb
from aos_recording import bulk
from aos_recording.writers import Producer
from aos_runtime.auth import mint_token
from aos_runtime.db import Database, libpq_url
from aos_runtime.pagination import PageTokens, iso_utc, sealed
from export_volume import export_and_download, peak_rss_mib
from overview_volume import TENANT as OVERVIEW_TENANT, load as load_overview
from recording import read_and_verify
from scratch import free_port, scratch_database, service_logins
from services.logs import store as logs_store

BENCH = Path(__file__).resolve().parent
JWT_SECRET = "suite-bench-jwt-" + "x" * 40
PAGE_TOKEN_SECRET = "suite-bench-page-tokens-" + "y" * 32
AUDIT_LIST = "/aos.logs.v1.AuditLedgerService/ListAuditEntries"
HIGHLIGHTS = "/aos.overview.v1.OverviewService/GetHighlights"
COSTS = "/aos.overview.v1.OverviewService/GetCosts"
PAGE_SIZE = 50
OVERVIEW_TARGET_MS = 10.0  # issue #5: single-digit milliseconds

INSTALL = {
    "h2load": "apt-get install -y nghttp2-client",
    "wrk": "apt-get install -y wrk",
    "pgbench": "apt-get install -y postgresql-client",
    "curl": "apt-get install -y curl",
}


class BenchError(RuntimeError):
    """A measurement that cannot be trusted: the run stops rather than record it."""


# --- tools -----------------------------------------------------------------------------------

def check_tools() -> None:
    missing = [f"  {tool}: {how}" for tool, how in INSTALL.items() if shutil.which(tool) is None]
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        missing.append("  matplotlib: .venv/bin/pip install -e '.[bench]'")
    if missing:
        sys.exit("suite_bench needs:\n" + "\n".join(missing))


def tool_version(command: list[str]) -> str:
    out = subprocess.run(command, capture_output=True, text=True)
    return (out.stdout or out.stderr).strip().splitlines()[0]


def percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def grpc_frame(message) -> bytes:
    """A gRPC length-prefixed message: uncompressed flag, 4-byte big-endian length, the bytes."""
    data = message.SerializeToString()
    return b"\x00" + len(data).to_bytes(4, "big") + data


def redact(command: list[str]) -> str:
    return shlex.join(re.sub(r"Bearer \S+", "Bearer $TOKEN", part) for part in command)


# --- the suite -------------------------------------------------------------------------------

class Suite:
    """`python -m services` on free ports, its output (the services' JSON call log) in a file.

    It gets the admin ``url``, as `make run` has it: it is the migration step (migrates and
    provisions each service's login from the passwords under AOS_DATA_DIR, ``work/aos``) and
    hands each service only its own login's DSN."""

    def __init__(self, url: str, work: Path) -> None:
        self.ports = {name: free_port() for name in ("overview", "logs", "export", "ingest", "gateway")}
        self.log_path = work / "suite.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("AOS_")}
        env.update(DATABASE_URL=url, AOS_DATA_DIR=str(work / "aos"), AOS_AUTH_JWT_SECRET=JWT_SECRET,
                   AOS_PAGE_TOKEN_SECRET=PAGE_TOKEN_SECRET, AOS_DEV_KEYS="true", AOS_LOG_LEVEL="INFO",
                   # A million-entry export is one long statement; list calls are far below either bound.
                   AOS_DB_STATEMENT_TIMEOUT_MS="3600000",
                   **{f"AOS_{name.upper()}_PORT": str(port) for name, port in self.ports.items()})
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen([sys.executable, "-m", "services"], env=env, stdout=self._log,
                                        stderr=subprocess.STDOUT, cwd=BENCH.parent)
        deadline = time.monotonic() + 180
        while b"AOS Evidence Plane is running." not in self.log_path.read_bytes():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise BenchError(f"the suite did not start; its output:\n{self.log_path.read_text()[-3000:]}")
            time.sleep(0.3)

    def address(self, name: str) -> str:
        return f"127.0.0.1:{self.ports[name]}"

    def service_pid(self, name: str) -> int:
        for child in psutil.Process(self.process.pid).children():
            if child.cmdline()[1:3] == ["-m", f"services.{name}"]:
                return child.pid
        raise BenchError(f"no services.{name} process under the suite")

    def log_mark(self) -> int:
        return self.log_path.stat().st_size

    def calls_since(self, mark: int, method: str) -> Counter:
        """Status codes of the calls the services logged for ``method`` since ``mark``."""
        time.sleep(0.5)  # the last responses' log lines
        with self.log_path.open("rb") as f:
            f.seek(mark)
            lines = f.read().splitlines()
        codes: Counter = Counter()
        for line in lines:
            if b'"msg": "call"' in line:
                entry = json.loads(line)
                if entry.get("method") == method:
                    codes[entry["code"]] += 1
        return codes

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


class PostgresCpu:
    """CPU seconds the scratch database's server has spent so far (issue #22: Postgres CPU per
    call): the postmaster's own and its reaped children's (utime, stime, cutime, cstime of
    /proc/<postmaster>/stat: a pgbench connection's backend counts once it exits) plus every
    live child's (the services' pooled backends). Only this cluster's processes: the
    postmaster's pid is read from its data directory's postmaster.pid. What else the cluster
    does meanwhile counts too: the services' health probes (a fresh connection per service
    every 2 s), autovacuum, the checkpointer — a small share at these rates."""

    def __init__(self, admin_url: str) -> None:
        with psycopg.connect(libpq_url(admin_url)) as conn:
            data_dir = conn.execute("SHOW data_directory").fetchone()[0]
        self.pid = int((Path(data_dir) / "postmaster.pid").read_text().split()[0])
        self.tick = os.sysconf("SC_CLK_TCK")

    def _stat(self, pid: int, with_children: bool) -> float:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = int(fields[11]) + int(fields[12]) + (int(fields[13]) + int(fields[14]) if with_children else 0)
        return ticks / self.tick

    def children(self) -> set[int]:
        return {child.pid for child in psutil.Process(self.pid).children()}

    def settle(self, before: set[int], timeout_s: float = 3.0) -> None:
        """Waits (at most ``timeout_s``) until the backends born since ``before`` are gone and
        reaped: a pgbench connection's backend exits after pgbench does, and its CPU reaches the
        postmaster's cutime only once the postmaster has waited for it."""
        deadline = time.monotonic() + timeout_s
        while self.children() - before and time.monotonic() < deadline:
            time.sleep(0.05)

    def seconds(self) -> float:
        total = self._stat(self.pid, True)
        for child in psutil.Process(self.pid).children():
            try:
                total += self._stat(child.pid, False)
            except (FileNotFoundError, ProcessLookupError):
                pass  # exited meanwhile: counted in the postmaster's cutime from now on
        return total


def cpu_per_request(meter: PostgresCpu | None, run) -> tuple[Any, float | None]:
    """``run()`` and the database server's CPU ms per request it made (``requests`` of its result)."""
    if meter is None:
        return run(), None
    children, before = meter.children(), meter.seconds()
    result = run()
    meter.settle(children)
    spent = meter.seconds() - before
    return result, round(spent / max(result[1], 1) * 1000, 3)


# --- load generators -------------------------------------------------------------------------

def h2load(address: str, method: str, body: Path, token: str | None, seconds: int, clients: int, work: Path,
           warmup: int, meter: PostgresCpu | None = None) -> dict[str, Any]:
    """One request kind for ``seconds`` with ``clients`` connections, one stream each."""
    headers = ["-H", "content-type: application/grpc", "-H", "te: trailers"]
    if token:
        headers += ["-H", f"authorization: Bearer {token}"]
    base = ["h2load", "-t", "1", "-c", str(clients), "-m", "1", "-d", str(body), *headers]
    url = f"http://{address}{method}"
    if warmup:
        subprocess.run([*base, "-D", str(warmup), url], check=True, capture_output=True)
    log = work / f"h2load-{time.monotonic_ns()}.tsv"
    command = [*base, "-D", str(seconds), "--log-file", str(log), url]

    def main_run() -> tuple[str, int]:
        out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        done = re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded", out)
        return out, int(done.group(1)) if done else 0

    (out, _), pg_cpu_ms = cpu_per_request(meter, main_run)
    counts = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                       r"(\d+) errored, (\d+) timeout", out)
    rate = re.search(r"finished in ([\d.]+)s, ([\d.]+) req/s", out)
    data = re.search(r"traffic: .*?, \S+ \((\d+)\) data", out)
    statuses = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    if not (counts and rate and data and statuses):
        raise BenchError(f"unexpected h2load output:\n{out}")
    succeeded, failed, errored, timeout = (int(counts.group(i)) for i in (4, 5, 6, 7))
    if failed or errored or timeout or int(statuses.group(2)) + int(statuses.group(3)) + int(statuses.group(4)):
        raise BenchError(f"h2load saw failures:\n{out}")
    latencies = sorted(int(row.split("\t")[2]) / 1000 for row in log.read_text().splitlines()
                       if row.split("\t")[1] == "200")
    return {"tool": "h2load", "command": redact(command), "clients": clients,
            "load_average_1m_after": round(os.getloadavg()[0], 2), "seconds": float(rate.group(1)),
            "requests": succeeded, "throughput_per_s": round(float(rate.group(2)), 1),
            "p50_ms": round(percentile(latencies, 0.50), 2), "p99_ms": round(percentile(latencies, 0.99), 2),
            "mean_ms": round(sum(latencies) / len(latencies), 2), "data_bytes": int(data.group(1)),
            **({"postgres_cpu_ms_per_request": pg_cpu_ms} if pg_cpu_ms is not None else {})}


def wrk(url: str, token: str, seconds: int, clients: int, warmup: int) -> dict[str, Any]:
    base = ["wrk", "-t", "1", "-c", str(clients), "-H", f"Authorization: Bearer {token}"]
    if warmup:
        subprocess.run([*base, "-d", f"{warmup}s", url], check=True, capture_output=True)
    command = [*base, "-d", f"{seconds}s", "--latency", url]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    if "Non-2xx or 3xx responses" in out or "Socket errors" in out:
        raise BenchError(f"wrk saw failures:\n{out}")
    requests = re.search(r"(\d+) requests in ([\d.]+)(\w+),", out)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p50 = re.search(r"^\s+50%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
    p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
    if not (requests and rate and p50 and p99):
        raise BenchError(f"unexpected wrk output:\n{out}")
    to_ms = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    return {"tool": "wrk", "command": redact(command), "clients": clients,
            "load_average_1m_after": round(os.getloadavg()[0], 2), "seconds": seconds,
            "requests": int(requests.group(1)), "throughput_per_s": round(float(rate.group(1)), 1),
            "p50_ms": round(float(p50.group(1)) * to_ms[p50.group(2)], 2),
            "p99_ms": round(float(p99.group(1)) * to_ms[p99.group(2)], 2)}


def libpq_env(url: str, options: str) -> tuple[str, dict[str, str]]:
    """(``url`` without its password, the environment giving psql/pgbench the password and
    PGOPTIONS): the command line, recorded in the results, carries no credential."""
    params = conninfo_to_dict(libpq_url(url))
    env = dict(os.environ, PGOPTIONS=options, PGPASSWORD=params.pop("password", ""))
    return make_conninfo(**params), env


def pgbench(url: str, options: str, script: Path, seconds: int, clients: int, work: Path,
            warmup: int, meter: PostgresCpu | None = None) -> dict[str, Any]:
    """``url``: the Logs service's own login, whose session the captured SQL ran in."""
    conninfo, env = libpq_env(url, options)
    base = ["pgbench", "-n", "-M", "prepared", "-j", "1", "-c", str(clients), "-f", str(script)]
    if warmup:
        subprocess.run([*base, "-T", str(warmup), conninfo], check=True, capture_output=True,
                       env=env)
    prefix = work / f"pgbench-{time.monotonic_ns()}"
    command = [*base, "-T", str(seconds), "--log", f"--log-prefix={prefix}", conninfo]

    def main_run() -> tuple[subprocess.CompletedProcess, int]:
        ran = subprocess.run(command, capture_output=True, text=True, env=env)
        processed = re.search(r"number of transactions actually processed: (\d+)", ran.stdout)
        return ran, int(processed.group(1)) if processed else 0

    (run, _), pg_cpu_ms = cpu_per_request(meter, main_run)
    out = run.stdout
    failed = re.search(r"number of failed transactions: (\d+)", out)
    tps = re.search(r"tps = ([\d.]+) \(without initial connection time\)", out)
    done = re.search(r"number of transactions actually processed: (\d+)", out)
    if run.returncode or not (tps and done) or (failed and int(failed.group(1))):
        raise BenchError(f"pgbench failed:\n{out}\n{run.stderr}")
    latencies = sorted(int(line.split()[2]) / 1000 for log in work.glob(f"{prefix.name}.*")
                       for line in log.read_text().splitlines())
    return {"tool": "pgbench", "command": f"PGOPTIONS={shlex.quote(options)} " + shlex.join(command),
            "clients": clients, "load_average_1m_after": round(os.getloadavg()[0], 2), "seconds": seconds,
            "requests": int(done.group(1)),
            "throughput_per_s": round(float(tps.group(1)), 1),
            "p50_ms": round(percentile(latencies, 0.50), 2), "p99_ms": round(percentile(latencies, 0.99), 2),
            "mean_ms": round(sum(latencies) / len(latencies), 2),
            **({"postgres_cpu_ms_per_request": pg_cpu_ms} if pg_cpu_ms is not None else {})}


# --- validation ------------------------------------------------------------------------------

def grpc_call(address: str, method: str, body: bytes, token: str | None) -> bytes:
    """One call through a real gRPC client with the exact body h2load sends; the response bytes."""
    with grpc.insecure_channel(address, options=[("grpc.max_receive_message_length", 8 << 20)]) as channel:
        call = channel.unary_unary(method)  # no (de)serializers: raw bytes both ways
        metadata = (("authorization", f"Bearer {token}"),) if token else ()
        return call(body[5:], metadata=metadata, timeout=60)


def curl_status(address: str, method: str, body: Path, token: str | None) -> str:
    """grpc-status of the exact body h2load sends, read from the HTTP/2 trailers by curl."""
    command = ["curl", "-sS", "--http2-prior-knowledge", "-o", "/dev/null", "-D", "-", "--data-binary", f"@{body}",
               "-H", "content-type: application/grpc", "-H", "te: trailers", f"http://{address}{method}"]
    if token:
        command[1:1] = ["-H", f"authorization: Bearer {token}"]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    found = re.search(r"^grpc-status:\s*(\d+)", out, re.M | re.I)
    if not found:
        raise BenchError(f"no grpc-status in the response to {method}:\n{out}")
    return found.group(1)


def check_answers(method: str, result: dict[str, Any], reply_bytes: int, logged: Counter | None) -> None:
    """Raises unless h2load's "succeeded" requests were OK gRPC answers.

    h2load counts an HTTP 200 as success, and a gRPC error is an HTTP 200 with
    grpc-status in its trailers and no message. So: each answer must have carried a
    message of about the reply's size (an error carries no DATA bytes), and the service
    (when there is one) must have logged only OK calls for the method, at least as many."""
    per_reply = result["data_bytes"] / max(result["requests"], 1)
    if result["requests"] == 0 or per_reply < 0.98 * (reply_bytes + 5):
        raise BenchError(f"{method}: {per_reply:.0f} bytes per answer, expected {reply_bytes + 5}: calls failed")
    result["bytes_per_answer"] = round(per_reply, 1)
    if logged is not None:
        not_ok = {code: n for code, n in logged.items() if code != "OK"}
        if not_ok or logged["OK"] < result["requests"]:
            raise BenchError(f"{method}: the service logged {dict(logged)} for {result['requests']} h2load successes")
        result["service_logged_ok"] = logged["OK"]


def checked_h2load(suite: Suite | None, address: str, method: str, body: Path, token: str | None,
                   reply_bytes: int, args, work: Path, clients: int | None = None,
                   meter: PostgresCpu | None = None) -> dict[str, Any]:
    """h2load, with the evidence that its requests were answered OK, not just with HTTP 200."""
    if curl_status(address, method, body, token) != "0":
        raise BenchError(f"{method}: the prebuilt body is not answered with grpc-status 0")
    mark = suite.log_mark() if suite else 0
    result = h2load(address, method, body, token, args.seconds, clients or args.clients, work, args.warmup, meter)
    check_answers(method, result, reply_bytes, suite.calls_since(mark, method) if suite else None)
    return result


# --- the pieces ------------------------------------------------------------------------------

def page_sql(logs_url: str, tenant: str, work: Path) -> tuple[Path, str, int]:
    """The pgbench script: the SQL one ListAuditEntries page runs, captured from the Logs
    store through the service's own Database (its own login ``logs_url``, same tenant
    scope), with its parameters inlined. Returns (script, PGOPTIONS, rows the page query returned)."""
    db = Database(logs_url, service="logs")
    captured: list[tuple[str, Any]] = []
    session: dict[str, str] = {}

    def capture(conn, cursor, statement, parameters, context, many) -> None:
        session["options"] = conn.connection.dbapi_connection.info.options  # read-only: libpq options
        captured.append((statement, parameters))

    event.listen(db.engine, "before_cursor_execute", capture)

    async def one_page():
        try:
            return await db.run(tenant, logs_store.list_audit_entries, tenant, logs_store.AuditFilters(), None,
                                PAGE_SIZE)
        finally:
            await db.close()

    page = asyncio.run(one_page())
    if len(page.rows) != PAGE_SIZE:
        raise BenchError(f"the store returned {len(page.rows)} rows for a {PAGE_SIZE}-row page")
    with psycopg.connect(libpq_url(logs_url)) as conn:
        cursor = psycopg.ClientCursor(conn)
        statements = [cursor.mogrify(statement, parameters) for statement, parameters in captured]
    script = work / "list_audit_page.sql"
    script.write_text("BEGIN;\n" + "".join(f"{s.strip()};\n" for s in statements) + "COMMIT;\n")
    return script, session["options"], len(page.rows)


def deep_page_token(address: str, token: str, tenant: str, entries: int, page: int, first_reply: bytes) -> str:
    """A page token for page ``page`` (1-based) of the tenant's ledger, newest first.

    Walking 20,000 pages to get there would take minutes; the token is a keyset position
    sealed with the suite's page-token key, so it is minted from the entry ending page
    ``page - 1`` — read through GetAuditEntry — exactly as the service issues it. Checked:
    the token minted for page 2 equals the one the service returned with page 1."""
    tokens = PageTokens(PAGE_TOKEN_SECRET.encode())
    filters = sealed(logs_store.AuditFilters())

    with grpc.insecure_channel(address) as channel:
        stub = au_grpc.AuditLedgerServiceStub(channel)
        metadata = (("authorization", f"Bearer {token}"),)

        def minted(after_rank: int) -> str:
            # Bulk entries are numbered in time order, so newest-first rank r is entry N-1-r.
            entry_id = f"{tenant}.aud-{entries - 1 - after_rank}"
            entry = stub.GetAuditEntry(au_pb.GetAuditEntryRequest(entry_id=entry_id), metadata=metadata).entry
            created = entry.created_at.ToDatetime(tzinfo=timezone.utc)
            return tokens.issue(tenant, "audit", filters, [iso_utc(created), entry.id])

        if minted(PAGE_SIZE - 1) != au_pb.ListAuditEntriesResponse.FromString(first_reply).next_page_token:
            raise BenchError("a minted page token differs from the one the service issues: the minting is wrong")
        deep = minted((page - 1) * PAGE_SIZE - 1)
        reply = stub.ListAuditEntries(au_pb.ListAuditEntriesRequest(page_size=PAGE_SIZE, page_token=deep),
                                      metadata=metadata)
        expected_first = f"{tenant}.aud-{entries - 1 - (page - 1) * PAGE_SIZE}"
        if len(reply.entries) != PAGE_SIZE or reply.entries[0].id != expected_first:
            raise BenchError(f"page {page} starts at {reply.entries[0].id if reply.entries else None}, "
                             f"expected {expected_first}")
    return deep


def verification(producer_url: str, tenant: str, entries: int) -> dict[str, Any]:
    """bench/recording.py's measurement: verify_ledger against reading the same rows (item 7),
    as the producer's own login."""
    producer = Producer(producer_url, pool_size=1)
    try:
        rows, read_s, report, verify_s = read_and_verify(producer, tenant, to_seq=entries)
    finally:
        producer.close()
    if not report.ok or report.checked != rows or rows != entries:
        raise BenchError(f"verification: ok={report.ok}, checked {report.checked}, read {rows}, expected {entries}")
    return {"entries": rows, "read_s": round(read_s, 2), "read_rows_per_s": round(rows / read_s),
            "verify_s": round(verify_s, 2), "verify_entries_per_s": round(rows / verify_s),
            "verify_vs_read": round(read_s / verify_s, 3)}


def export(suite: Suite, token: str, entries: int, formats: list[str]) -> dict[str, Any]:
    """bench/export_volume.py's measurement, on the suite's own Export process (item 6)."""
    pid = suite.service_pid("export")
    results: dict[str, Any] = {"entries": entries, "service_peak_rss_mib_idle": peak_rss_mib(pid), "formats": {}}
    with grpc.insecure_channel(suite.address("export"),
                               options=[("grpc.max_receive_message_length", 8 << 20)]) as channel:
        stub = ex_grpc.ExportServiceStub(channel)
        metadata = (("authorization", f"Bearer {token}"),)
        for fmt in formats:
            created, create_s, after_create, size, download_s = export_and_download(stub, metadata, fmt, pid)
            records = json.loads(created.manifest)["records"]
            if size != created.size_bytes or records < entries:
                raise BenchError(f"export {fmt}: {size} of {created.size_bytes} bytes, {records} records")
            results["formats"][fmt] = {
                "records": records, "artifact_mib": round(size / 2**20, 1), "create_s": round(create_s, 1),
                "entries_per_s": round(records / create_s), "service_peak_rss_mib_after_create": after_create,
                "download_s": round(download_s, 1), "download_mib_per_s": round(size / 2**20 / download_s, 1),
                "service_peak_rss_mib_after_download": peak_rss_mib(pid)}
    return results


def machine(url: str) -> dict[str, Any]:
    meminfo = Path("/proc/meminfo").read_text()
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
    with psycopg.connect(libpq_url(url)) as conn:
        postgres = conn.execute("SHOW server_version").fetchone()[0]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=BENCH)
    return {"cores": os.cpu_count(), "cpu": model.group(1) if model else platform.processor(),
            "ram_gib": round(int(re.search(r"MemTotal:\s+(\d+)", meminfo).group(1)) / 2**20, 1),
            "os": platform.platform(), "python": platform.python_version(), "postgres": postgres,
            "postgres_where": "DATABASE_URL" if os.environ.get("DATABASE_URL") else "embedded (non-durable scratch)",
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
            "git_commit": commit.stdout.strip() or None,
            # Uncommitted changes in the tree the run measured (figures are of the tree, not the commit).
            "git_uncommitted_files": len(subprocess.run(["git", "status", "--porcelain"], capture_output=True,
                                                        text=True, cwd=BENCH).stdout.splitlines()),
            "h2load": tool_version(["h2load", "--version"]), "wrk": tool_version(["wrk", "-v"]),
            "pgbench": tool_version(["pgbench", "--version"])}


def ratio(item: int, name: str, value: float, definition: str, target: str | None = None,
          met: bool | None = None) -> dict[str, Any]:
    return {"item": item, "name": name, "value": round(value, 3), "definition": definition,
            "target": target, "met": met}


# --- the run ---------------------------------------------------------------------------------

def run(args, work: Path) -> dict[str, Any]:
    tenant = bulk.tenant_ids(1)[0]
    with scratch_database("aos-suite-bench-") as (url, scratch):
        figures: dict[str, Any] = {"machine": machine(url)}
        started = time.perf_counter()
        bulk.load(url, bulk.Volume(tenants=1, ledger=args.entries, traces=0, steps=0, system=0))
        dataset = {"ledger_tenant": tenant, "ledger_entries": args.entries,
                   "ledger_load_s": round(time.perf_counter() - started, 1)}
        print(f"ledger: {args.entries:,} entries in {dataset['ledger_load_s']} s", file=sys.stderr, flush=True)
        overview_s = load_overview(url, incidents=args.incidents, proposals=args.proposals, runs=args.runs,
                                   months=12)
        dataset["overview"] = {"tenant": OVERVIEW_TENANT, "incidents": args.incidents, "proposals": args.proposals,
                               "worker_runs": args.runs, "months": 12, "load_s": round(overview_s, 1)}
        print(f"overview volume loaded in {overview_s:.0f} s", file=sys.stderr, flush=True)
        figures["dataset"] = dataset
        # The admin URL loaded the data (as the owner) and starts the suite (its migration step);
        # every connection of the bench's own logs in as a service's role or the producer's.
        # scratch / "aos": the suite's AOS_DATA_DIR, so it provisions the same passwords.
        dsns = service_logins(url, scratch / "aos")
        script, options, sql_rows = page_sql(dsns["logs"], tenant, work)

        suite = Suite(url, scratch)
        try:
            figures["suite"] = {"ports": suite.ports, "processes": "python -m services: overview, logs, export, "
                                "gateway, one process each (AOS_WORKERS default)"}
            figures.update(measure(args, dsns, suite, tenant, script, options, sql_rows, work, PostgresCpu(url)))
        finally:
            suite.stop()
    return figures


def measure(args, dsns: dict[str, str], suite: Suite, tenant: str, script: Path, options: str, sql_rows: int,
            work: Path, meter: PostgresCpu | None = None) -> dict[str, Any]:
    token = mint_token(secret=JWT_SECRET, tenant_id=tenant, subject="suite-bench")
    logs = suite.address("logs")
    loads: dict[str, dict[str, Any]] = {}

    def step(name: str) -> None:
        print(f"measuring {name} ...", file=sys.stderr, flush=True)

    # Page 1: checked through a real client with the exact bytes h2load will send.
    first_body = work / "list_page_1.bin"
    first_body.write_bytes(grpc_frame(au_pb.ListAuditEntriesRequest(page_size=PAGE_SIZE)))
    first_reply = grpc_call(logs, AUDIT_LIST, first_body.read_bytes(), token)
    first = au_pb.ListAuditEntriesResponse.FromString(first_reply)
    if len(first.entries) != PAGE_SIZE or first.entries[0].id != f"{tenant}.aud-{args.entries - 1}":
        raise BenchError(f"page 1 is not the tenant's newest {PAGE_SIZE} entries")
    step("(1) ListAuditEntries page 1, Logs service")
    loads["grpc_list_page_1"] = checked_h2load(suite, logs, AUDIT_LIST, first_body, token, len(first_reply),
                                               args, work, meter=meter)

    # (1) The same bytes from a server that does nothing else.
    reply_file = work / "list_page_1.reply"
    reply_file.write_bytes(first_reply)
    bare = subprocess.Popen([sys.executable, str(BENCH / "bare_server.py"), "--method", AUDIT_LIST,
                             "--response", str(reply_file)], stdout=subprocess.PIPE, text=True)
    try:
        ready = bare.stdout.readline().split()
        if ready[:1] != ["READY"]:
            raise BenchError("the bare server did not start")
        bare_address = f"127.0.0.1:{ready[1]}"
        if grpc_call(bare_address, AUDIT_LIST, first_body.read_bytes(), None) != first_reply:
            raise BenchError("the bare server does not answer the service's bytes")
        step("(1) the same bytes, bare grpc.aio server")
        loads["bare_grpc_same_bytes"] = checked_h2load(None, bare_address, AUDIT_LIST, first_body, None,
                                                       len(first_reply), args, work)
    finally:
        bare.terminate()
        bare.wait(timeout=30)

    # (2) The page's SQL, straight to the database.
    conninfo, env = libpq_env(dsns["logs"], options)
    check = subprocess.run(["psql", "-X", "-v", "ON_ERROR_STOP=1", "-f", str(script), conninfo],
                           capture_output=True, text=True, env=env)
    if check.returncode or f"({sql_rows + 1} rows)" not in check.stdout:
        raise BenchError(f"the pgbench script does not return the page:\n{check.stdout[-2000:]}\n{check.stderr}")
    step("(2) the same SQL, pgbench")
    loads["pgbench_list_page_sql"] = pgbench(dsns["logs"], options, script, args.seconds, args.clients, work,
                                             args.warmup, meter)
    loads["pgbench_list_page_sql"]["script"] = script.read_text()

    # (3) A deep page of the same tenant.
    deep_token = deep_page_token(logs, token, tenant, args.entries, args.deep_page, first_reply)
    deep_body = work / "list_page_deep.bin"
    deep_body.write_bytes(grpc_frame(au_pb.ListAuditEntriesRequest(page_size=PAGE_SIZE, page_token=deep_token)))
    deep_reply = grpc_call(logs, AUDIT_LIST, deep_body.read_bytes(), token)
    step(f"(3) ListAuditEntries page {args.deep_page:,}")
    loads[f"grpc_list_page_{args.deep_page}"] = checked_h2load(suite, logs, AUDIT_LIST, deep_body, token,
                                                               len(deep_reply), args, work)

    # (4) The same request as REST through the gateway.
    rest_url = f"http://{suite.address('gateway')}/api/v1/logs/audit?page_size={PAGE_SIZE}"
    request = urllib.request.Request(rest_url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=30) as reply:
        if reply.status != 200 or len(json.loads(reply.read())["entries"]) != PAGE_SIZE:
            raise BenchError("the gateway's audit list is not the page")
    step("(4) the same request, REST through the gateway")
    mark = suite.log_mark()
    loads["rest_list_page_1"] = wrk(rest_url, token, args.seconds, args.clients, args.warmup)
    codes = suite.calls_since(mark, AUDIT_LIST)
    if set(codes) != {"OK"} or codes["OK"] < loads["rest_list_page_1"]["requests"]:
        raise BenchError(f"REST: the Logs service logged {dict(codes)} for {loads['rest_list_page_1']['requests']}")
    loads["rest_list_page_1"]["service_logged_ok"] = codes["OK"]

    # (5) Overview at issue #5's volumes.
    overview_token = mint_token(secret=JWT_SECRET, tenant_id=OVERVIEW_TENANT, subject="suite-bench")
    for name, method, message in (("highlights", HIGHLIGHTS, ov_pb.GetHighlightsRequest()),
                                  ("costs", COSTS, ov_pb.GetCostsRequest())):
        body = work / f"overview_{name}.bin"
        body.write_bytes(grpc_frame(message))
        reply = grpc_call(suite.address("overview"), method, body.read_bytes(), overview_token)
        step(f"(5) Overview {method.rsplit('/', 1)[1]}")
        loads[f"grpc_overview_{name}"] = checked_h2load(suite, suite.address("overview"), method, body,
                                                        overview_token, len(reply), args, work,
                                                        clients=args.overview_clients)

    # (7) before (6): the export appends its own ledger entry to the tenant's chain.
    step("(7) integrity verification against reading the rows")
    verified = verification(dsns["producer"], tenant, args.entries)
    step("(6) export of the tenant's ledger")
    exported = export(suite, token, args.entries, args.export_formats.split(","))
    return {"loads": loads, "verification": verified, "export": exported,
            "ratios": ratios(loads, verified, exported, args)}


def ratios(loads: dict, verified: dict, exported: dict, args) -> list[dict[str, Any]]:
    service, bare = loads["grpc_list_page_1"], loads["bare_grpc_same_bytes"]
    sql, deep = loads["pgbench_list_page_sql"], loads[f"grpc_list_page_{args.deep_page}"]
    rest = loads["rest_list_page_1"]
    out = [
        ratio(1, "ListAuditEntries / bare grpc.aio server (throughput)",
              service["throughput_per_s"] / bare["throughput_per_s"],
              "calls/s of the Logs service ÷ calls/s of bench/bare_server.py answering the same bytes",
              ">= 0.8", service["throughput_per_s"] / bare["throughput_per_s"] >= 0.8),
        ratio(2, "ListAuditEntries / pgbench of its SQL (throughput)",
              service["throughput_per_s"] / sql["throughput_per_s"],
              "calls/s of the Logs service ÷ transactions/s of pgbench running the page's exact SQL"),
        ratio(3, f"page {args.deep_page:,} / page 1 (p50)", deep["p50_ms"] / service["p50_ms"],
              f"p50 of page {args.deep_page:,} ÷ p50 of page 1, same tenant, same load", "<= 1.2",
              deep["p50_ms"] / service["p50_ms"] <= 1.2),
        ratio(3, f"page {args.deep_page:,} / page 1 (throughput)",
              deep["throughput_per_s"] / service["throughput_per_s"],
              f"calls/s at page {args.deep_page:,} ÷ calls/s at page 1"),
        ratio(4, "REST via gateway / direct gRPC (throughput)", rest["throughput_per_s"] / service["throughput_per_s"],
              "requests/s of wrk through the gateway ÷ calls/s of h2load to the Logs service, same request"),
    ]
    if "postgres_cpu_ms_per_request" in service and sql.get("postgres_cpu_ms_per_request"):
        pg = service["postgres_cpu_ms_per_request"] / sql["postgres_cpu_ms_per_request"]
        out.insert(2, ratio(2, "Postgres CPU per ListAuditEntries call / per pgbench transaction of its SQL", pg,
                            "the database server's CPU ms per call (h2load run) ÷ per transaction (pgbench run)",
                            "<= 1.5", pg <= 1.5))
    for name in ("highlights", "costs"):
        p50 = loads[f"grpc_overview_{name}"]["p50_ms"]
        out.append(ratio(5, f"Overview {name} p50 / {OVERVIEW_TARGET_MS:g} ms", p50 / OVERVIEW_TARGET_MS,
                         f"p50 of Get{name.title()} at issue #5's volumes ÷ 10 ms (single-digit milliseconds)",
                         "< 1.0", p50 < OVERVIEW_TARGET_MS))
    for fmt, figures in exported["formats"].items():
        out.append(ratio(6, f"export {fmt} / reading the rows (throughput)",
                         figures["entries_per_s"] / verified["read_rows_per_s"],
                         "entries/s of CreateExport ÷ rows/s of reading the same ledger (iter_ledger)"))
        out.append(ratio(6, f"export {fmt}: peak RSS / idle RSS",
                         figures["service_peak_rss_mib_after_download"] / exported["service_peak_rss_mib_idle"],
                         "the Export process's VmHWM after create and download ÷ its VmHWM before the first export"))
    out.append(ratio(7, "verification / reading the rows (throughput)", verified["verify_vs_read"],
                     "entries/s of verify_ledger ÷ rows/s of iter_ledger over the same entries"))
    return out


# --- the chart -------------------------------------------------------------------------------

def chart(figures: dict[str, Any], path: Path, label: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    loads, ov = figures["loads"], figures["dataset"]["overview"]
    names = list(loads)
    fig, (top, middle, bottom) = plt.subplots(3, 1, figsize=(12, 14), gridspec_kw={"height_ratios": [3, 3, 2]})
    fig.suptitle(f"AOS Evidence Plane against its limits (issue #9) — {label}\n"
                 f"{figures['machine']['cores']} cores, {figures['machine']['ram_gib']} GiB, "
                 f"PostgreSQL {figures['machine']['postgres']}, {figures['date']}; ledger tenant "
                 f"{figures['dataset']['ledger_entries']:,} entries, Overview {ov['incidents']:,} incidents / "
                 f"{ov['proposals']:,} proposals / {ov['worker_runs']:,} runs", fontsize=10)

    throughput = [loads[n]["throughput_per_s"] for n in names]
    bars = top.bar(range(len(names)), throughput, color=["C0" if loads[n]["tool"] == "h2load" else
                                                          "C1" if loads[n]["tool"] == "wrk" else "C2" for n in names])
    top.bar_label(bars, labels=[f"{t:,.0f}/s\n{loads[n]['tool']} c={loads[n]['clients']}"
                                for n, t in zip(names, throughput, strict=True)], fontsize=8)
    top.set_xticks(range(len(names)), names, rotation=15, fontsize=8)
    top.set_ylabel("throughput (requests/s)")
    top.set_ylim(0, max(throughput) * 1.25)
    lines = [f"({r['item']}) {r['name']}: {r['value']:.2f}×" +
             (f"  target {r['target']} — {'met' if r['met'] else 'NOT met'}" if r["target"] else "")
             for r in figures["ratios"]]
    top.text(0.99, 0.97, "\n".join(lines), transform=top.transAxes, ha="right", va="top", fontsize=7.5,
             bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.9})

    width = 0.38
    p50 = [loads[n]["p50_ms"] for n in names]
    p99 = [loads[n]["p99_ms"] for n in names]
    b50 = middle.bar([i - width / 2 for i in range(len(names))], p50, width, label="p50")
    b99 = middle.bar([i + width / 2 for i in range(len(names))], p99, width, label="p99")
    middle.bar_label(b50, labels=[f"{v:.1f}" for v in p50], fontsize=7)
    middle.bar_label(b99, labels=[f"{v:.1f}" for v in p99], fontsize=7)
    middle.set_xticks(range(len(names)), names, rotation=15, fontsize=8)
    middle.set_ylabel("latency (ms)")
    middle.legend()

    verified, exported = figures["verification"], figures["export"]
    rates = {"read ledger rows": verified["read_rows_per_s"], "verify_ledger": verified["verify_entries_per_s"]}
    for fmt, f in exported["formats"].items():
        rates[f"export {fmt} (peak RSS {f['service_peak_rss_mib_after_download']:.0f} MiB, "
              f"idle {exported['service_peak_rss_mib_idle']:.0f})"] = f["entries_per_s"]
    b = bottom.barh(list(rates), list(rates.values()), color="C4")
    bottom.bar_label(b, labels=[f"{v:,.0f}/s" for v in rates.values()], fontsize=8)
    bottom.set_xlabel(f"entries/s over the tenant's {verified['entries']:,} ledger entries")
    bottom.set_xlim(0, max(rates.values()) * 1.2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(figures: dict[str, Any]) -> str:
    """The tables BENCHMARKS.md carries, from the figures just measured."""
    lines = ["| measurement | tool | clients | requests | throughput/s | p50 ms | p99 ms |",
             "|---|---|---|---|---|---|---|"]
    for name, f in figures["loads"].items():
        lines.append(f"| {name} | {f['tool']} | {f['clients']} | {f['requests']:,} | {f['throughput_per_s']:,.1f} | "
                     f"{f['p50_ms']} | {f['p99_ms']} |")
    v, e = figures["verification"], figures["export"]
    lines += ["", "| rows | entries | seconds | entries/s | peak RSS MiB (idle → after) |", "|---|---|---|---|---|",
              f"| read (iter_ledger) | {v['entries']:,} | {v['read_s']} | {v['read_rows_per_s']:,} | |",
              f"| verify (verify_ledger) | {v['entries']:,} | {v['verify_s']} | {v['verify_entries_per_s']:,} | |"]
    for fmt, f in e["formats"].items():
        lines.append(f"| export {fmt} (CreateExport; {f['artifact_mib']} MiB, download {f['download_s']} s) | "
                     f"{f['records']:,} | {f['create_s']} | {f['entries_per_s']:,} | "
                     f"{e['service_peak_rss_mib_idle']} → {f['service_peak_rss_mib_after_download']} |")
    lines += ["", "| # | ratio | value | target | met |", "|---|---|---|---|---|"]
    for r in figures["ratios"]:
        met = "—" if r["met"] is None else ("met" if r["met"] else "**not met**")
        lines.append(f"| {r['item']} | {r['name']} | {r['value']:.2f}× | {r['target'] or '—'} | {met} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small smoke run (~2 minutes); figures labelled so")
    parser.add_argument("--out", type=Path, default=BENCH / "results")
    parser.add_argument("--entries", type=int, help="the large tenant's ledger (default 1,001,000; quick 60,000)")
    parser.add_argument("--deep-page", type=int, help="the deep page (default 20,000; quick 1,000)")
    parser.add_argument("--incidents", type=int, help="Overview volume (default 1,000,000; quick 20,000)")
    parser.add_argument("--proposals", type=int, help="Overview volume (default 100,000; quick 2,000)")
    parser.add_argument("--runs", type=int, help="Overview volume: worker runs (default 1,000,000; quick 20,000)")
    parser.add_argument("--seconds", type=int, help="each measurement (default 20; quick 4)")
    parser.add_argument("--warmup", type=int, help="warm-up before each measurement (default 3; quick 1)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent callers (connections), every tool")
    parser.add_argument("--overview-clients", type=int, default=1,
                        help="concurrent callers for Overview (default 1: issue #5's target is one call's latency)")
    parser.add_argument("--export-formats", default="JSON", help="comma-separated: JSON, CSV")
    args = parser.parse_args()
    defaults = ({"entries": 60_000, "deep_page": 1_000, "incidents": 20_000, "proposals": 2_000, "runs": 20_000,
                 "seconds": 4, "warmup": 1} if args.quick else
                {"entries": 1_001_000, "deep_page": 20_000, "incidents": 1_000_000, "proposals": 100_000,
                 "runs": 1_000_000, "seconds": 20, "warmup": 3})
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.deep_page * PAGE_SIZE >= args.entries:
        parser.error(f"--deep-page {args.deep_page} needs more than {args.deep_page * PAGE_SIZE} entries")
    check_tools()

    args.out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="aos-suite-bench-work-") as work:
        figures = run(args, Path(work))
    label = "QUICK smoke run (small volumes, not the issue's figures)" if args.quick else "full run"
    figures = {"run": {"label": label, "quick": args.quick, "command": shlex.join(["bench/suite_bench.py",
                                                                                 *sys.argv[1:]]),
                       "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                       "seconds_per_measurement": args.seconds, "warmup_s": args.warmup, "clients": args.clients,
                       "overview_clients": args.overview_clients, "page_size": PAGE_SIZE,
                       "deep_page": args.deep_page, "wall_s": round(time.monotonic() - started)},
               "date": datetime.now(timezone.utc).date().isoformat(), **figures}
    (args.out / "suite_bench.json").write_text(json.dumps(figures, indent=2) + "\n")
    chart(figures, args.out / "suite_bench.png", label)
    (args.out / "suite_bench.md").write_text(markdown(figures))
    print(markdown(figures))
    print(f"wrote suite_bench.json, .png and .md in {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
