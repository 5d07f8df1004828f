"""Acknowledged means committed: the Ingest service killed outright (SIGKILL) under load loses
no acknowledged event, leaves every batch whole or absent, and the chain verifies; the same for
OTLP exports, whose acknowledged runs are there with their sealed traces."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent import futures
from typing import Any

import grpc
import psycopg
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as otlp, trace_service_pb2_grpc as otlp_grpc
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from aos.evidence.v1 import evidence_pb2
from aos.ingest.v1 import ingest_service_pb2 as pb, ingest_service_pb2_grpc as pb_grpc
from tests.db.sessions import ledger_report, make_tenant
from tests.e2e.support import BASE, SECRET, free_port, token, ts
from tests.logins import login_url

pytestmark = pytest.mark.db
BATCH = 200       # events per call
IN_FLIGHT = 4     # calls outstanding at once
ACKED_FIRST = 8   # batches acknowledged before the kill


def batch(number: int) -> pb.AppendAuditEventsRequest:
    return pb.AppendAuditEventsRequest(events=[pb.AuditEvent(
        event_id=f"crash-{number}-{i}", event_type=evidence_pb2.AUDIT_EVENT_TYPE_LIMIT_UPDATED,
        entity_type=evidence_pb2.AUDIT_ENTITY_TYPE_LIMIT, entity_id=f"lim-{i}", correlation_id=f"batch-{number}",
        occurred_at=ts(BASE)) for i in range(BATCH)])


def start_ingest(url: str, port: int, tmp_path, **settings: str) -> subprocess.Popen:
    """A real Ingest process on ``url``'s database (its output in tmp_path/ingest.log, read when a test fails)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AOS_")}
    env.update(AOS_INGEST_DATABASE_URL=login_url(url, "ingest"), AOS_INGEST_PORT=str(port),
               AOS_DATA_DIR=str(tmp_path / "aos"), AOS_AUTH_JWT_SECRET=SECRET, AOS_DEV_KEYS="true",
               AOS_MIGRATE_ON_START="false", AOS_LOG_LEVEL="WARNING", **settings)
    with (tmp_path / "ingest.log").open("ab") as log:
        return subprocess.Popen([sys.executable, "-m", "services.ingest"], env=env, stdout=log, stderr=log)


def stop(service: subprocess.Popen) -> None:
    if service.poll() is None:
        service.kill()
        service.wait(timeout=30)


@pytest.fixture()
def ingest_process(databases, tmp_path):
    """A real Ingest process on its own database: (database url, tenant, port, the process)."""
    url = databases.create()
    tenant = make_tenant(url)
    port = free_port()
    service = start_ingest(url, port, tmp_path)
    try:
        yield url, tenant, port, service
    finally:
        stop(service)


def load_then_kill(port: int, service: subprocess.Popen, call: Callable[[grpc.Channel], Callable[..., Any]],
                   request: Callable[[int], Any], metadata: Any, acknowledged_ok: Callable[[Any], bool]
                   ) -> tuple[list[int], list[int]]:
    """Keeps IN_FLIGHT calls outstanding until ACKED_FIRST are acknowledged, then SIGKILLs the
    service with calls in flight: (the numbers sent, the numbers acknowledged)."""
    acknowledged: list[int] = []
    sent: list[int] = []
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    grpc.channel_ready_future(channel).result(timeout=60)
    method = call(channel)
    pool = futures.ThreadPoolExecutor(IN_FLIGHT)
    pending: dict[futures.Future, int] = {}
    number = 0
    while len(acknowledged) < ACKED_FIRST:
        while len(pending) < IN_FLIGHT:
            pending[pool.submit(method, request(number), metadata=metadata, timeout=60)] = number
            sent.append(number)
            number += 1
        done, _ = futures.wait(list(pending), return_when=futures.FIRST_COMPLETED)
        for future in done:
            assert acknowledged_ok(future.result())
            acknowledged.append(pending.pop(future))
    # Calls are in flight (some mid-transaction): kill the service outright, no drain.
    service.send_signal(signal.SIGKILL)
    service.wait(timeout=30)
    for future, n in pending.items():
        try:
            future.result()
            acknowledged.append(n)  # answered before the kill landed
        except grpc.RpcError:
            pass
    pool.shutdown()
    channel.close()
    return sent, acknowledged


def test_a_killed_ingest_keeps_every_acknowledged_event(ingest_process):
    url, tenant, port, service = ingest_process
    metadata = (("authorization", f"Bearer {token(tenant, scopes=('evidence.write',), actor_type='SYSTEM')}"),)
    sent, acknowledged = load_then_kill(port, service, lambda c: pb_grpc.IngestServiceStub(c).AppendAuditEvents,
                                        batch, metadata, lambda reply: reply.created == BATCH)
    with psycopg.connect(url) as conn:
        counts = dict(conn.execute(
            "SELECT correlation_id, count(*) FROM audit_ledger WHERE tenant_id = %s GROUP BY 1", (tenant,)).fetchall())
        distinct = conn.execute("SELECT count(DISTINCT id) = count(*) FROM audit_ledger WHERE tenant_id = %s",
                                (tenant,)).fetchone()[0]
    interrupted = set(sent) - set(acknowledged)
    assert interrupted, "every call was answered before the kill: nothing was tried"
    for n in acknowledged:
        assert counts.get(f"batch-{n}") == BATCH, f"acknowledged batch {n} is not whole: {counts.get(f'batch-{n}')}"
    for n in interrupted:
        assert counts.get(f"batch-{n}", 0) in (0, BATCH), f"unacknowledged batch {n} is partly there"
    assert distinct
    report = ledger_report(url, tenant)
    assert report.ok, report.anomalies
    assert report.checked == sum(counts.values())


TRACES = 20   # OTLP traces (runs) per export
SPANS = 5     # GenAI spans per trace (steps per run)


def export(number: int) -> otlp.ExportTraceServiceRequest:
    """TRACES traces of SPANS chat spans each; trace t of export n has the trace id
    hex(n + 1) ‖ hex(t), 16 digits each (an all-zero trace id is invalid in OTLP)."""
    now = time.time_ns() - 60 * 10 ** 9
    attributes = [common_pb2.KeyValue(key=k, value=v) for k, v in (
        ("gen_ai.operation.name", common_pb2.AnyValue(string_value="chat")),
        ("gen_ai.request.model", common_pb2.AnyValue(string_value="m-1")),
        ("gen_ai.usage.input_tokens", common_pb2.AnyValue(int_value=10)))]
    spans = [trace_pb2.Span(trace_id=bytes.fromhex(f"{number + 1:016x}{t:016x}"), span_id=(s + 1).to_bytes(8, "big"),
                            name="chat m-1", start_time_unix_nano=now + s * 10 ** 6,
                            end_time_unix_nano=now + s * 10 ** 6 + 1000, attributes=attributes)
             for t in range(TRACES) for s in range(SPANS)]
    return otlp.ExportTraceServiceRequest(resource_spans=[trace_pb2.ResourceSpans(
        scope_spans=[trace_pb2.ScopeSpans(spans=spans)])])


def test_a_killed_ingest_keeps_every_acknowledged_otlp_run(ingest_process):
    url, tenant, port, service = ingest_process
    metadata = (("authorization", f"Bearer {token(tenant, scopes=('evidence.write',), actor_type='AGENT')}"),)
    sent, acknowledged = load_then_kill(port, service, lambda c: otlp_grpc.TraceServiceStub(c).Export, export,
                                        metadata, lambda reply: reply.partial_success.rejected_spans == 0)
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT r.run_id, t.status, t.step_count, t.content_hash IS NOT NULL, w.id IS NOT NULL "
            "FROM llm_run_records r LEFT JOIN aos_traces t ON t.tenant_id = r.tenant_id AND t.trace_id = r.trace_id "
            "LEFT JOIN worker_runs w ON w.tenant_id = r.tenant_id AND w.id = r.run_id WHERE r.tenant_id = %s",
            (tenant,)).fetchall()
        orphans = conn.execute(
            "SELECT (SELECT count(*) FROM aos_traces t WHERE tenant_id = %s AND NOT EXISTS (SELECT 1 FROM "
            "llm_run_records r WHERE r.tenant_id = t.tenant_id AND r.trace_id = t.trace_id)) + (SELECT count(*) "
            "FROM aos_traces WHERE tenant_id = %s AND status = 'running')", (tenant, tenant)).fetchone()[0]
    per_export: dict[int, int] = {}
    for run_id, status, steps, sealed, activity in rows:
        assert (status, steps, sealed, activity) == ("completed", SPANS, True, True), run_id  # each run whole
        number = int(run_id.split("-")[1][:16], 16) - 1  # otel-<trace id>
        per_export[number] = per_export.get(number, 0) + 1
    interrupted = set(sent) - set(acknowledged)
    assert interrupted, "every call was answered before the kill: nothing was tried"
    for n in acknowledged:
        assert per_export.get(n) == TRACES, f"acknowledged export {n} is not whole: {per_export.get(n)}"
    for n in interrupted:
        assert per_export.get(n, 0) in (0, TRACES), f"unacknowledged export {n} is partly there"
    assert orphans == 0  # no trace without its run, none left running


def children(number: int) -> otlp.ExportTraceServiceRequest:
    """export(number)'s spans as children of a root span that never comes: every trace is kept."""
    request = export(number)
    for span in request.resource_spans[0].scope_spans[0].spans:
        span.parent_span_id = b"\xff" * 8
    return request


def test_kept_spans_survive_a_kill_and_the_next_process_seals_them(ingest_process, tmp_path):
    """Trace stitching: spans kept for their trace's root are acknowledged only once committed;
    after a SIGKILL the next process (quiet window 0.2 s) seals each kept trace into one whole run."""
    url, tenant, port, service = ingest_process
    metadata = (("authorization", f"Bearer {token(tenant, scopes=('evidence.write',), actor_type='AGENT')}"),)
    sent, acknowledged = load_then_kill(port, service, lambda c: otlp_grpc.TraceServiceStub(c).Export, children,
                                        metadata, lambda reply: reply.partial_success.rejected_spans == 0)
    with psycopg.connect(url) as conn:
        kept = dict(conn.execute("SELECT otel_trace_id, count(*) FROM otlp_staged_spans WHERE tenant_id = %s "
                                 "GROUP BY 1", (tenant,)).fetchall())
        assert conn.execute("SELECT count(*) FROM llm_run_records WHERE tenant_id = %s", (tenant,)).fetchone()[0] == 0
    interrupted = set(sent) - set(acknowledged)
    assert interrupted, "every call was answered before the kill: nothing was tried"
    traces = {n: [f"{n + 1:016x}{t:016x}" for t in range(TRACES)] for n in sent}
    for n in acknowledged:
        assert [kept.get(trace) for trace in traces[n]] == [SPANS] * TRACES, f"acknowledged export {n} not kept whole"
    for n in interrupted:
        assert {kept.get(trace, 0) for trace in traces[n]} <= {0, SPANS}, f"unacknowledged export {n} partly kept"
    successor = start_ingest(url, port, tmp_path, AOS_OTLP_TRACE_QUIET_S="0.2")
    try:
        deadline = time.monotonic() + 60
        while True:
            with psycopg.connect(url) as conn:
                left = conn.execute("SELECT count(*) FROM otlp_staged_spans").fetchone()[0]
                rows = conn.execute(
                    "SELECT r.run_id, t.status, t.step_count, t.content_hash IS NOT NULL FROM llm_run_records r "
                    "JOIN aos_traces t ON t.tenant_id = r.tenant_id AND t.trace_id = r.trace_id "
                    "WHERE r.tenant_id = %s", (tenant,)).fetchall()
            if left == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.2)  # a separate process: its clock cannot be moved
    finally:
        stop(successor)
    assert left == 0, "the next process did not seal the kept spans"
    assert {run_id for run_id, *_ in rows} == {f"otel-{trace}" for trace in kept}
    assert all((status, steps, sealed) == ("completed", SPANS, True) for _, status, steps, sealed in rows), rows


def test_a_sigterm_keeps_the_kept_spans(ingest_process):
    """A drain cancels the sealer; the kept spans, committed before their ack, stay for the next process."""
    url, tenant, port, service = ingest_process
    metadata = (("authorization", f"Bearer {token(tenant, scopes=('evidence.write',), actor_type='AGENT')}"),)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        grpc.channel_ready_future(channel).result(timeout=60)
        reply = otlp_grpc.TraceServiceStub(channel).Export(children(0), metadata=metadata, timeout=60)
    assert reply.partial_success.rejected_spans == 0
    service.send_signal(signal.SIGTERM)
    assert service.wait(timeout=60) == 0
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT count(*) FROM otlp_staged_spans WHERE tenant_id = %s",
                            (tenant,)).fetchone()[0] == TRACES * SPANS
