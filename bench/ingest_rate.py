"""Evidence in through the Ingest API against bulk COPY of the same rows (issue #21).

    .venv/bin/python bench/ingest_rate.py [--events 20000] [--batch 500] [--traces 2000] [--spans 5]

A real Ingest process (``python -m services.ingest``, its own login) on a scratch database.

1. audit events: ``--events`` events sent by one producer in batches of ``--batch`` through
   AppendAuditEvents (events/s, p50/p99 per batch, the service's CPU seconds per 1,000 events
   from /proc), then the same rows (same fields, their SPEC §5 content hashes computed the same
   way) by COPY as the table owner into another tenant, one transaction (rows/s). The ledger's
   chain trigger fires for both.
2. OTLP spans: ``--traces`` GenAI traces of ``--spans`` spans each, made by the real
   OpenTelemetry SDK and sent by its OTLP/gRPC exporter through a BatchSpanProcessor
   (max_export_batch_size 512) — spans/s from the first span to the last flush acknowledged,
   p50/p99 per Export — then the same number of traces and steps by COPY
   (aos_recording.bulk's trace loader: aos_traces + aos_trace_steps with their hashes; it
   writes no run record and no activity row, which the OTLP path also writes, and its steps
   carry no metadata, so the ratio is pessimistic for OTLP); and the same rows the OTLP path
   wrote, read back and written again by COPY (run records, activity rows, traces, steps with
   their metadata: ``spans_ratio_same_rows``, the issue's "COPY rate for the same rows").

Embedded Postgres non-durable (fsync off) unless DATABASE_URL is set. The machine is shared:
the load average is printed with the figures. Writes bench/results/ingest_rate.json.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import grpc
import psycopg
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from psycopg.types.json import Jsonb

from aos.evidence.v1 import evidence_pb2
from aos.ingest.v1 import ingest_service_pb2 as pb, ingest_service_pb2_grpc as pb_grpc
from aos_recording import bulk, hashing
from aos_runtime.auth import mint_token
from scratch import free_port, scratch_database, service_env, service_logins

BENCH = Path(__file__).resolve().parent
SECRET = "bench-ingest-" + "x" * 40
API, COPY_TENANT, OTLP = "tenant-ingest-api", "tenant-ingest-copy", "tenant-ingest-otlp"
START = datetime(2026, 12, 1, tzinfo=timezone.utc)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def event_fields(i: int) -> dict:
    return {"entity_id": f"lim-{i % 200}", "correlation_id": f"run-{i // 7}", "action_reason": "raised by the job",
            "created_at": START + timedelta(milliseconds=i), "after_state": {"limit_cents": 5000 + i, "n": i}}


def api_events(address: str, count: int, batch: int, pid: int) -> dict:
    token = mint_token(secret=SECRET, tenant_id=API, subject="bench-producer", actor_type="SYSTEM",
                       scopes=("evidence.write",))
    metadata = (("authorization", f"Bearer {token}"),)
    requests = []
    for first in range(0, count, batch):
        events = []
        for i in range(first, min(first + batch, count)):
            f = event_fields(i)
            event = pb.AuditEvent(event_id=f"api-{i}", event_type=evidence_pb2.AUDIT_EVENT_TYPE_LIMIT_UPDATED,
                                  entity_type=evidence_pb2.AUDIT_ENTITY_TYPE_LIMIT, entity_id=f["entity_id"],
                                  correlation_id=f["correlation_id"], action_reason=f["action_reason"])
            event.occurred_at.FromDatetime(f["created_at"])
            event.after_state.update(f["after_state"])
            events.append(event)
        requests.append(pb.AppendAuditEventsRequest(events=events))
    times = []
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.IngestServiceStub(channel)
        cpu_before, started = cpu_s(pid), time.perf_counter()
        for request in requests:
            t0 = time.perf_counter()
            reply = stub.AppendAuditEvents(request, metadata=metadata, timeout=120)
            times.append((time.perf_counter() - t0) * 1000)
            assert reply.created == len(request.events), reply
        elapsed, cpu = time.perf_counter() - started, cpu_s(pid) - cpu_before
    return {"events": count, "batch": batch, "seconds": round(elapsed, 2), "events_per_s": round(count / elapsed, 1),
            "batch_p50_ms": pct(times, 0.5), "batch_p99_ms": pct(times, 0.99),
            "service_cpu_s_per_1000_events": round(cpu / count * 1000, 3)}


def copy_events(admin_url: str, count: int) -> dict:
    started = time.perf_counter()
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute("SET ROLE aos_owner")
        with conn.transaction(), conn.cursor().copy(
                "COPY audit_ledger (id, tenant_id, event_type, entity_type, entity_id, actor_type, actor_id, "
                "action_reason, correlation_id, created_at, after_state, content_hash) FROM STDIN") as copy:
            for i in range(count):
                f = event_fields(i)
                entry = {"id": f"copy-{i}", "tenant_id": COPY_TENANT, "event_type": "LimitUpdated",
                         "entity_type": "LIMIT", "entity_id": f["entity_id"], "actor_type": "SYSTEM",
                         "actor_id": "bench-producer", "action_reason": f["action_reason"],
                         "correlation_id": f["correlation_id"], "created_at": f["created_at"], "before_state": None,
                         "after_state": f["after_state"]}
                copy.write_row((entry["id"], COPY_TENANT, "LimitUpdated", "LIMIT", f["entity_id"], "SYSTEM",
                                "bench-producer", f["action_reason"], f["correlation_id"], f["created_at"],
                                Jsonb(f["after_state"]), hashing.ledger_content_hash(entry)))
    elapsed = time.perf_counter() - started
    return {"rows": count, "seconds": round(elapsed, 2), "rows_per_s": round(count / elapsed, 1)}


class Timed(SpanExporter):
    """The real exporter, each Export timed."""

    def __init__(self, exporter: SpanExporter) -> None:
        self.exporter, self.times, self.failed = exporter, [], 0

    def export(self, spans):
        t0 = time.perf_counter()
        result = self.exporter.export(spans)
        self.times.append((time.perf_counter() - t0) * 1000)
        self.failed += result != SpanExportResult.SUCCESS
        return result

    def shutdown(self):
        self.exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def otlp_spans(address: str, traces: int, spans: int, pid: int) -> dict:
    token = mint_token(secret=SECRET, tenant_id=OTLP, subject="bench-agent", actor_type="AGENT",
                       scopes=("evidence.write",))
    exporter = Timed(OTLPSpanExporter(endpoint=f"http://{address}", insecure=True, timeout=60,
                                      headers=(("authorization", f"Bearer {token}"),)))
    provider = TracerProvider(resource=Resource.create({"service.name": "bench-agent"}))
    # A queue that holds the whole run: spans/s measures the export path, not drops.
    provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=max(traces * spans + 1, 512),
                                                   max_export_batch_size=512, schedule_delay_millis=200))
    tracer = provider.get_tracer("bench")
    cpu_before, started = cpu_s(pid), time.perf_counter()
    for t in range(traces):
        with tracer.start_as_current_span("invoke_agent bench", attributes={
                "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.id": f"agent-{t % 40}",
                "gen_ai.provider.name": "openai", "gen_ai.conversation.id": f"conv-{t}"}):
            for k in range(spans - 1):
                with tracer.start_as_current_span("chat gpt-4o", attributes={
                        "gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o",
                        "gen_ai.usage.input_tokens": 100 + k, "gen_ai.usage.output_tokens": 20,
                        "aos.usage.cost_cents": 1}):
                    pass
    provider.force_flush(timeout_millis=600_000)
    elapsed, cpu = time.perf_counter() - started, cpu_s(pid) - cpu_before
    provider.shutdown()
    total = traces * spans
    return {"traces": traces, "spans": total, "exports": len(exporter.times), "failed_exports": exporter.failed,
            "seconds": round(elapsed, 2), "spans_per_s": round(total / elapsed, 1),
            "export_p50_ms": pct(exporter.times, 0.5), "export_p99_ms": pct(exporter.times, 0.99),
            "service_cpu_s_per_1000_spans": round(cpu / total * 1000, 3)}


def copy_traces(admin_url: str, traces: int, spans: int) -> dict:
    started = time.perf_counter()
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute("SET ROLE aos_owner")
        bulk._traces(conn, [COPY_TENANT], bulk.Volume(tenants=1, ledger=0, traces=traces, steps=spans,
                                                      system=0), random.Random(7))
    elapsed = time.perf_counter() - started
    return {"steps": traces * spans, "seconds": round(elapsed, 2), "steps_per_s": round(traces * spans / elapsed, 1)}


_SAME = {  # table -> columns copied as they are (ids prefixed, the tenant swapped)
    "llm_run_records": ("id", "run_id", "trace_id", "agent_id", "project_id", "provider", "model", "execution_status",
                        "executor_type", "outcome", "termination_reason", "input_tokens", "output_tokens",
                        "cost_cents", "source", "started_at", "completed_at", "created_at", "content_hash"),
    "worker_runs": ("id", "project_id", "agent_id", "provider", "model", "status", "cost_cents", "input_tokens",
                    "output_tokens", "created_at", "started_at", "completed_at"),
    "aos_traces": ("trace_id", "run_id", "agent_id", "started_at"),
    "aos_trace_steps": ("id", "trace_id", "step_index", "step_type", "level", "source", "timestamp", "tokens",
                        "cost_cents", "duration_ms", "input_data", "output_data", "metadata", "content_hash"),
}
_PREFIXED = {"id", "run_id", "trace_id"}


def copy_same_rows(admin_url: str) -> dict:
    """The rows the OTLP path wrote (run records, activity rows, traces, steps with their metadata),
    read back, then written again by COPY into another tenant as the table owner in one
    transaction (ids prefixed): the bulk rate for the same rows (issue #21: the steps' metadata
    and its search document are most of an OTLP step's cost; bulk._traces' steps carry none).
    Traces are copied running, their steps after, then sealed as bulk._traces seals them."""
    with psycopg.connect(admin_url) as conn:
        rows = {table: conn.execute(f"SELECT {', '.join(cols)} FROM {table} WHERE tenant_id = %s",
                                    (OTLP,)).fetchall() for table, cols in _SAME.items()}
        seals = conn.execute("SELECT trace_id, status, completed_at, termination_reason, step_count, total_tokens, "
                             "total_cost_cents, total_duration_ms, content_hash FROM aos_traces WHERE tenant_id = %s",
                             (OTLP,)).fetchall()
    started = time.perf_counter()
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute("SET ROLE aos_owner")
        with conn.transaction():
            for table, cols in _SAME.items():
                with conn.cursor().copy(f"COPY {table} (tenant_id, {', '.join(cols)}) FROM STDIN") as copy:
                    for row in rows[table]:
                        copy.write_row((COPY_TENANT, *(("same-" + v if c in _PREFIXED and v is not None else
                                                        Jsonb(v) if isinstance(v, (dict, list)) else v)
                                                       for c, v in zip(cols, row, strict=True))))
            with conn.cursor() as cur:
                cur.executemany(
                    "UPDATE aos_traces SET status = %s, completed_at = %s, termination_reason = %s, step_count = %s, "
                    "total_tokens = %s, total_cost_cents = %s, total_duration_ms = %s, content_hash = %s "
                    "WHERE tenant_id = %s AND trace_id = %s",
                    [(*seal[1:], COPY_TENANT, "same-" + seal[0]) for seal in seals])
    elapsed = time.perf_counter() - started
    steps = len(rows["aos_trace_steps"])
    return {"steps": steps, "runs": len(rows["llm_run_records"]), "seconds": round(elapsed, 2),
            "steps_per_s": round(steps / elapsed, 1)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--traces", type=int, default=2_000)
    parser.add_argument("--spans", type=int, default=5)
    args = parser.parse_args()
    results: dict = {"command": " ".join(["bench/ingest_rate.py", *sys.argv[1:]]), "load_before": os.getloadavg()}
    with scratch_database() as (admin_url, work):
        dsns = service_logins(admin_url, work / "aos")
        with psycopg.connect(admin_url, autocommit=True) as conn:
            for tenant in (API, COPY_TENANT, OTLP):
                conn.execute("INSERT INTO tenants (id, name) VALUES (%s, %s)", (tenant, tenant))
        port = free_port()
        env = service_env(dsns, "ingest", AOS_INGEST_PORT=str(port), AOS_DATA_DIR=str(work / "aos"),
                          AOS_AUTH_JWT_SECRET=SECRET, AOS_LOG_LEVEL="WARNING")
        service = subprocess.Popen([sys.executable, "-m", "services.ingest"], env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        address = f"127.0.0.1:{port}"
        try:
            with grpc.insecure_channel(address) as channel:
                grpc.channel_ready_future(channel).result(timeout=90)
            results["api_events"] = api_events(address, args.events, args.batch, service.pid)
            print(json.dumps(results["api_events"]), flush=True)
            results["copy_events"] = copy_events(admin_url, args.events)
            print(json.dumps(results["copy_events"]), flush=True)
            results["events_ratio"] = round(results["api_events"]["events_per_s"]
                                            / results["copy_events"]["rows_per_s"], 3)
            results["otlp_spans"] = otlp_spans(address, args.traces, args.spans, service.pid)
            with psycopg.connect(admin_url) as conn:  # each trace one run (batches of 512 split traces of 5)
                results["otlp_spans"]["runs"], results["otlp_spans"]["kept_spans_left"] = conn.execute(
                    "SELECT (SELECT count(*) FROM llm_run_records WHERE tenant_id = %s), "
                    "(SELECT count(*) FROM otlp_staged_spans WHERE tenant_id = %s)", (OTLP, OTLP)).fetchone()
            print(json.dumps(results["otlp_spans"]), flush=True)
            results["copy_traces"] = copy_traces(admin_url, args.traces, args.spans)
            print(json.dumps(results["copy_traces"]), flush=True)
            results["spans_ratio"] = round(results["otlp_spans"]["spans_per_s"]
                                           / results["copy_traces"]["steps_per_s"], 3)
            results["copy_same_rows"] = copy_same_rows(admin_url)
            print(json.dumps(results["copy_same_rows"]), flush=True)
            results["spans_ratio_same_rows"] = round(results["otlp_spans"]["spans_per_s"]
                                                     / results["copy_same_rows"]["steps_per_s"], 3)
        finally:
            service.send_signal(signal.SIGTERM)
            service.wait(timeout=60)
    results["load_after"] = os.getloadavg()
    print(json.dumps({k: results[k] for k in ("events_ratio", "spans_ratio", "spans_ratio_same_rows", "load_before",
                                              "load_after")}))
    out = BENCH / "results" / "ingest_rate.json"
    out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
