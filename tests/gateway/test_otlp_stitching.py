"""OTLP trace stitching (docs/INGEST.md): the spans of one trace id, split by the OpenTelemetry
BatchSpanProcessor over several Export requests, become ONE run of the tenant with all its steps
(SPEC §5 hashes verified), sealed when the root span arrives or after the quiet window; the kept
spans are committed before the ack and sealed by the next process; other tenants stay apart."""
from __future__ import annotations

import asyncio
import time
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any, cast

import grpc
import psycopg
import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as otlp, trace_service_pb2_grpc as otlp_grpc
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExportResult
from opentelemetry.trace import SpanKind
from psycopg.rows import dict_row

from aos.evidence.v1 import records_pb2
from aos.logs.v1 import llm_runs_service_pb2 as runs_pb, llm_runs_service_pb2_grpc as runs_grpc
from aos_recording.verify import verify_trace
from aos_runtime.db import Database
from aos_runtime.server import ServiceContext
from services.ingest import otlp as receiver_module
from tests.db.sessions import make_tenant
from tests.e2e.support import token
from tests.gateway.otlp_support import Recording
from tests.logins import login_url

pytestmark = pytest.mark.db


@pytest.fixture(scope="module")
def tenants(database_url) -> tuple[str, str]:
    return make_tenant(database_url), make_tenant(database_url)


def writer(tenant: str):
    return (("authorization", f"Bearer {token(tenant, scopes=('evidence.write',), actor_type='AGENT')}"),)


def reader(tenant: str):
    return (("authorization", f"Bearer {token(tenant, scopes=('logs.read',))}"),)


@pytest.fixture()
async def ingest(suite):
    async with grpc.aio.insecure_channel(suite["ingest"]) as channel:
        yield otlp_grpc.TraceServiceStub(channel)


@pytest.fixture()
async def logs(suite):
    async with grpc.aio.insecure_channel(suite["logs"]) as channel:
        yield runs_grpc.LlmRunsServiceStub(channel)


@pytest.fixture()
async def next_process(database_url):
    """A TraceReceiver as a newly started Ingest process has it (nothing but the database)."""
    db = Database(login_url(database_url, "ingest"), service="ingest", pool_size=2)
    yield receiver_module.TraceReceiver(ServiceContext(db=db, page_tokens=cast(Any, None)))
    await db.close()


def verified(database_url: str, tenant: str, run_id: str) -> list[dict]:
    """The run's steps as stored, after checking every step hash and the trace hash (SPEC §5)."""
    with psycopg.connect(database_url, row_factory=dict_row) as conn:
        trace = conn.execute("SELECT * FROM aos_traces WHERE tenant_id = %s AND trace_id = %s",
                             (tenant, run_id)).fetchone()
        steps = conn.execute("SELECT * FROM aos_trace_steps WHERE tenant_id = %s AND trace_id = %s "
                             "ORDER BY step_index", (tenant, run_id)).fetchall()
    assert trace is not None and trace["status"] in ("completed", "failed") and trace["content_hash"]
    assert verify_trace(trace, steps) == []
    return steps


def kept(database_url: str, tenant: str, trace_id: str) -> int:
    with psycopg.connect(database_url) as conn:
        return conn.execute("SELECT count(*) FROM otlp_staged_spans WHERE tenant_id = %s AND otel_trace_id = %s",
                            (tenant, trace_id)).fetchone()[0]


async def test_a_trace_split_over_several_exports_is_one_run(suite, database_url, tenants, logs, monkeypatch):
    tenant = tenants[0]
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://{suite['ingest']}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", f"authorization={writer(tenant)[0][1].replace(' ', '%20')}")
    exporter = Recording(GrpcExporter(timeout=10))

    def program() -> str:
        provider = TracerProvider(resource=Resource.create({"service.name": "stitch-agent"}))
        # Two spans per Export: the agent turn's five spans arrive in three requests, the root last.
        provider.add_span_processor(BatchSpanProcessor(exporter, max_export_batch_size=2, schedule_delay_millis=50))
        tracer = provider.get_tracer("tests.otlp.stitching")
        with tracer.start_as_current_span("invoke_agent a", attributes={
                "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.id": "agent-stitch"}) as root:
            for i in range(3):
                with tracer.start_as_current_span("chat m", kind=SpanKind.CLIENT, attributes={
                        "gen_ai.operation.name": "chat", "gen_ai.request.model": "m-1",
                        "gen_ai.provider.name": "acme", "gen_ai.usage.input_tokens": 10 + i,
                        "gen_ai.usage.output_tokens": 1, "aos.usage.cost_cents": 1}):
                    time.sleep(0.06)  # let the processor export the finished pair on its schedule
            with tracer.start_as_current_span("execute_tool t", attributes={
                    "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "t"}):
                pass
            trace_id = format(root.get_span_context().trace_id, "032x")
        provider.force_flush()
        provider.shutdown()
        return trace_id

    trace_id = await asyncio.to_thread(program)
    assert len(exporter.results) >= 3 and set(exporter.results) == {SpanExportResult.SUCCESS}
    run_id = f"otel-{trace_id}"
    run = await logs.GetLlmRunEnvelope(runs_pb.GetLlmRunEnvelopeRequest(run_id=run_id), metadata=reader(tenant))
    assert (run.run.input_tokens, run.run.output_tokens, run.run.cost.amount_cents) == (33, 3, 3)
    assert run.run.executor_type == records_pb2.EXECUTOR_TYPE_AGENT
    steps = verified(database_url, tenant, run_id)
    assert [s["metadata"]["name"] for s in steps] == ["invoke_agent a", "chat m", "chat m", "chat m", "execute_tool t"]
    assert kept(database_url, tenant, trace_id) == 0
    listed = await logs.ListLlmRuns(runs_pb.ListLlmRunsRequest(agent_id="agent-stitch", page_size=100),
                                    metadata=reader(tenant))
    assert [r.run_id for r in listed.runs] == [run_id]  # one run, not one per Export


def span(trace_id: bytes, number: int, *, parent: int | None, start_s: int, tokens: int = 5,
         operation: str = "chat") -> trace_pb2.Span:
    now = time.time_ns() - 600 * 10 ** 9 + start_s * 10 ** 9
    return trace_pb2.Span(
        trace_id=trace_id, span_id=bytes([number]) * 8, parent_span_id=bytes([parent]) * 8 if parent else b"",
        name=f"{operation} {number}", start_time_unix_nano=now, end_time_unix_nano=now + 10 ** 8,
        attributes=[common_pb2.KeyValue(key="gen_ai.operation.name",
                                        value=common_pb2.AnyValue(string_value=operation)),
                    common_pb2.KeyValue(key="gen_ai.usage.input_tokens", value=common_pb2.AnyValue(int_value=tokens))])


def request(*spans: trace_pb2.Span) -> otlp.ExportTraceServiceRequest:
    resource = resource_pb2.Resource(attributes=[common_pb2.KeyValue(
        key="service.name", value=common_pb2.AnyValue(string_value="hand-built"))])
    return otlp.ExportTraceServiceRequest(resource_spans=[trace_pb2.ResourceSpans(
        resource=resource, scope_spans=[trace_pb2.ScopeSpans(spans=list(spans))])])


async def test_another_tenants_same_trace_id_stays_separate(database_url, tenants, ingest, logs):
    a, b = tenants
    trace = uuid.uuid4().bytes
    run_id = f"otel-{trace.hex()}"
    # a's children are kept; b sends the same trace id, root and one child: sealed alone.
    reply = await ingest.Export(request(span(trace, 2, parent=1, start_s=1), span(trace, 3, parent=1, start_s=2)),
                                metadata=writer(a))
    assert reply.partial_success.rejected_spans == 0 and kept(database_url, a, trace.hex()) == 2
    reply = await ingest.Export(request(span(trace, 1, parent=None, start_s=0, operation="invoke_agent"),
                                        span(trace, 4, parent=1, start_s=1, tokens=100)), metadata=writer(b))
    assert reply.partial_success.rejected_spans == 0
    assert [s["metadata"]["span_id"] for s in verified(database_url, b, run_id)] == ["01" * 8, "04" * 8]
    assert kept(database_url, a, trace.hex()) == 2  # b's root sealed nothing of a's
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await logs.GetLlmRunEnvelope(runs_pb.GetLlmRunEnvelopeRequest(run_id=run_id), metadata=reader(a))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND  # b's run is not a's
    # a's root seals a's run of its own three spans.
    reply = await ingest.Export(request(span(trace, 1, parent=None, start_s=0, operation="invoke_agent")),
                                metadata=writer(a))
    assert reply.partial_success.rejected_spans == 0
    assert [s["metadata"]["span_id"] for s in verified(database_url, a, run_id)] == ["01" * 8, "02" * 8, "03" * 8]
    # The run's tokens are its model calls' (the agent span's own are not added): a's 5 + 5, b's 100.
    for tenant, tokens in ((a, 10), (b, 100)):
        envelope = await logs.GetLlmRunEnvelope(runs_pb.GetLlmRunEnvelopeRequest(run_id=run_id),
                                                metadata=reader(tenant))
        assert envelope.run.input_tokens == tokens


async def test_a_trace_without_its_root_is_sealed_after_the_quiet_window_by_the_next_process(
        database_url, tenants, ingest, logs, next_process):
    tenant = tenants[0]
    trace = uuid.uuid4().bytes
    run_id = f"otel-{trace.hex()}"
    first = request(span(trace, 2, parent=1, start_s=1), span(trace, 3, parent=1, start_s=2))
    assert (await ingest.Export(first, metadata=writer(tenant))).partial_success.rejected_spans == 0
    assert (await ingest.Export(first, metadata=writer(tenant))).partial_success.rejected_spans == 0  # a retry
    assert (await ingest.Export(request(span(trace, 4, parent=1, start_s=3)), metadata=writer(tenant))) \
        .partial_success.rejected_spans == 0
    # Acknowledged = committed: the kept spans are in the database before any seal (the suite's
    # own sealer waits its 30 s window); the process that took them is not needed to seal them.
    assert kept(database_url, tenant, trace.hex()) == 3
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await logs.GetLlmRunEnvelope(runs_pb.GetLlmRunEnvelopeRequest(run_id=run_id), metadata=reader(tenant))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    now = datetime.now(timezone.utc)
    assert await next_process.seal_quiet(now) == 0  # not quiet yet
    assert kept(database_url, tenant, trace.hex()) == 3
    assert await next_process.seal_quiet(now + timedelta(seconds=next_process.quiet_s + 1)) >= 1  # the clock moved
    assert [s["metadata"]["span_id"] for s in verified(database_url, tenant, run_id)] == ["02" * 8, "03" * 8, "04" * 8]
    assert kept(database_url, tenant, trace.hex()) == 0
    # After the seal: a retry of what is in the run is accepted; a late span or a changed one is refused.
    assert (await ingest.Export(first, metadata=writer(tenant))).partial_success.rejected_spans == 0
    late = await ingest.Export(request(span(trace, 1, parent=None, start_s=0, operation="invoke_agent")),
                               metadata=writer(tenant))
    assert late.partial_success.rejected_spans == 1 and "already sealed" in late.partial_success.error_message
    changed = await ingest.Export(request(span(trace, 2, parent=1, start_s=1, tokens=99)), metadata=writer(tenant))
    assert changed.partial_success.rejected_spans == 1
    assert "already recorded with other steps" in changed.partial_success.error_message
    assert kept(database_url, tenant, trace.hex()) == 0
    envelope = await logs.GetLlmRunEnvelope(runs_pb.GetLlmRunEnvelopeRequest(run_id=run_id), metadata=reader(tenant))
    assert envelope.run.input_tokens == 15


async def test_a_root_span_that_is_no_genai_span_still_seals_its_trace(database_url, tenants, ingest, logs):
    """An agent's GenAI spans under an HTTP handler's span: the handler's span (refused, not kept)
    is the trace's root; when it arrives the trace is whole and its kept spans become the run."""
    tenant = tenants[1]
    trace = uuid.uuid4().bytes
    reply = await ingest.Export(request(span(trace, 2, parent=1, start_s=1), span(trace, 3, parent=2, start_s=2)),
                                metadata=writer(tenant))
    assert reply.partial_success.rejected_spans == 0 and kept(database_url, tenant, trace.hex()) == 2
    handler = trace_pb2.Span(trace_id=trace, span_id=b"\x01" * 8, name="POST /chat",
                             start_time_unix_nano=time.time_ns() - 700 * 10 ** 9, end_time_unix_nano=time.time_ns())
    reply = await ingest.Export(request(handler), metadata=writer(tenant))
    assert reply.partial_success.rejected_spans == 1  # not a GenAI span: refused, as before
    assert [s["metadata"]["span_id"] for s in verified(database_url, tenant, f"otel-{trace.hex()}")] == \
        ["02" * 8, "03" * 8]
    assert kept(database_url, tenant, trace.hex()) == 0
    # Another tenant's root of the same trace id seals nothing of this tenant's (nothing kept there).
    other = uuid.uuid4().bytes
    await ingest.Export(request(span(other, 2, parent=1, start_s=1)), metadata=writer(tenant))
    assert (await ingest.Export(request(trace_pb2.Span(trace_id=other, span_id=b"\x01" * 8, name="x")),
                                metadata=writer(tenants[0]))).partial_success.rejected_spans == 1
    assert kept(database_url, tenant, other.hex()) == 1


async def test_a_trace_kept_and_sealed_at_once_is_never_kept_behind_its_run(database_url, tenants, ingest):
    """Children and root sent concurrently (two exporter threads, say): the tenant's lock orders
    them, so the children are in the run, or refused as late — never kept behind a sealed run."""
    tenant = tenants[0]
    for _ in range(6):
        trace = uuid.uuid4().bytes
        children, root = await asyncio.gather(
            ingest.Export(request(span(trace, 2, parent=1, start_s=1), span(trace, 3, parent=1, start_s=2)),
                          metadata=writer(tenant)),
            ingest.Export(request(span(trace, 1, parent=None, start_s=0, operation="invoke_agent")),
                          metadata=writer(tenant)))
        assert root.partial_success.rejected_spans == 0
        in_run = [s["metadata"]["span_id"] for s in verified(database_url, tenant, f"otel-{trace.hex()}")]
        if children.partial_success.rejected_spans:
            assert children.partial_success.rejected_spans == 2 and in_run == ["01" * 8]
            assert "already sealed" in children.partial_success.error_message
        else:
            assert in_run == ["01" * 8, "02" * 8, "03" * 8]
        assert kept(database_url, tenant, trace.hex()) == 0
