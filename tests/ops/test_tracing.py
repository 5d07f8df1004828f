"""OpenTelemetry: one REST call is one trace — gateway span → gRPC client span → gRPC server span →
database spans — continuing the caller's W3C traceparent; log lines carry its trace id; off by default.

Real servers (a Logs server on port 0, the gateway behind uvicorn on port 0) built while tracing
goes to an in-memory exporter."""
from __future__ import annotations

import io
import json
import logging

import httpx
import pytest
import uvicorn
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from aos_runtime import tracing
from aos_runtime.observability import JsonFormatter
from aos_runtime.service_main import build_server
from gateway import backend_addresses, create_app
from tests.e2e.support import settings
from tests.gateway.support import bearer, start_uvicorn
from tests.logins import login_url
from tests.ops.support import OPS

pytestmark = pytest.mark.db

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN = "00f067aa0ba902b7"




@pytest.fixture
async def traced(database_url, ops_data, tmp_path_factory):
    """(gateway base URL, exporter, captured JSON log) with tracing on for the servers built here."""
    from services.logs import server as logs

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use(provider)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logging.getLogger().addHandler(handler)
    previous_level = logging.getLogger().level
    logging.getLogger().setLevel(logging.INFO)
    server = build_server("logs", logs.servicers, settings(tmp_path_factory.mktemp("traced")),
                          login_url(database_url, "logs"), port=0)
    web = None
    try:
        port = await server.start()
        address = f"127.0.0.1:{port}"
        app = create_app({service: where for service, where in backend_addresses(
            {"overview": address, "logs": address, "export": address, "ingest": address}).items() if service.startswith("aos.logs.")})
        web, task, host, http_port = await start_uvicorn(
            uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, access_log=False))
        yield f"http://{host}:{http_port}", exporter, stream
        web.should_exit = True
        await task
    finally:
        tracing.stop()
        await server.stop(grace=1)
        logging.getLogger().removeHandler(handler)
        logging.getLogger().setLevel(previous_level)


def _hex(value: int, width: int) -> str:
    return format(value, f"0{width}x")


async def test_one_rest_call_is_one_connected_trace_continuing_the_callers_traceparent(traced):
    base, exporter, log = traced
    exporter.clear()
    async with httpx.AsyncClient(base_url=base, headers=bearer(OPS)) as http:
        reply = await http.get("/api/v1/logs/audit", params={"page_size": 2},
                               headers={"traceparent": f"00-{TRACE_ID}-{PARENT_SPAN}-01"})
    assert reply.status_code == 200, reply.text
    spans = exporter.get_finished_spans()
    assert spans, "no span exported"
    assert {_hex(s.context.trace_id, 32) for s in spans} == {TRACE_ID}, "every span in the caller's trace"
    by_id = {s.context.span_id: s for s in spans}

    (gateway,) = [s for s in spans if s.kind is SpanKind.SERVER and s.instrumentation_scope.name.endswith("asgi")]
    assert _hex(gateway.parent.span_id, 16) == PARENT_SPAN and gateway.parent.is_remote
    assert gateway.name == "GET /api/v1/logs/audit"
    (client,) = [s for s in spans if s.kind is SpanKind.CLIENT and "grpc" in s.instrumentation_scope.name]
    assert client.parent.span_id == gateway.context.span_id
    (service,) = [s for s in spans if s.kind is SpanKind.SERVER and "grpc" in s.instrumentation_scope.name]
    assert service.name == "/aos.logs.v1.AuditLedgerService/ListAuditEntries"
    assert service.parent.span_id == client.context.span_id and service.parent.is_remote  # across the gRPC hop
    statements = [s for s in spans if "sqlalchemy" in s.instrumentation_scope.name]
    assert statements, "no database span"
    for statement in statements:  # each statement a child of the service's span (through the pool thread)
        assert statement.parent.span_id == service.context.span_id, (statement.name, by_id.get(statement.parent.span_id))
        assert statement.attributes.get("db.system") == "postgresql" or \
            statement.attributes.get("db.system.name") == "postgresql"
    # The answer's trace id is the one the caller sent; the JSON log lines of the call carry it.
    lines = [json.loads(line) for line in log.getvalue().splitlines() if line.strip()]
    call = [line for line in lines if line.get("msg") == "call"
            and line.get("method") == "/aos.logs.v1.AuditLedgerService/ListAuditEntries"]
    assert call and call[-1]["trace_id"] == TRACE_ID and call[-1]["span_id"] == _hex(service.context.span_id, 16)
    request = [line for line in lines if line.get("msg") == "request" and line.get("path") == "/api/v1/logs/audit"]
    assert request and request[-1]["trace_id"] == TRACE_ID


async def test_a_call_without_traceparent_starts_a_new_trace(traced):
    base, exporter, _ = traced
    exporter.clear()
    async with httpx.AsyncClient(base_url=base, headers=bearer(OPS)) as http:
        assert (await http.get("/api/v1/logs/audit", params={"page_size": 1})).status_code == 200
    spans = exporter.get_finished_spans()
    traces = {s.context.trace_id for s in spans}
    assert len(traces) == 1 and len(spans) >= 4
    (root,) = [s for s in spans if s.parent is None]
    assert root.kind is SpanKind.SERVER and root.name == "GET /api/v1/logs/audit"


def test_tracing_is_off_unless_an_exporter_is_named():
    assert not tracing.configure("logs", env={})
    assert not tracing.configure("logs", env={"OTEL_TRACES_EXPORTER": "none"})
    assert not tracing.enabled()
    assert tracing.server_interceptors() == [] and tracing.client_interceptors() == []
    assert tracing.asgi_middleware() == []


def test_an_exporter_named_by_otel_traces_exporter_is_the_sdks_own(monkeypatch):
    try:
        assert tracing.configure("logs", env={"OTEL_TRACES_EXPORTER": "console", "OTEL_SERVICE_NAME": "logs-eu-1"})
        assert tracing.enabled() and len(tracing.server_interceptors()) == 1
    finally:
        tracing.stop()
    assert not tracing.enabled()
    with pytest.raises(ValueError, match="no installed package provides"):
        tracing.configure("logs", env={"OTEL_TRACES_EXPORTER": "jaeger-thrift"})
