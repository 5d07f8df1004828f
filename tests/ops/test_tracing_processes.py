"""Tracing configured by the OTEL_* variables alone, across real processes: ``python -m gateway`` and
``python -m services.logs`` export OTLP over HTTP to a small collector in this test, and one REST
call arrives as one trace from both processes — gateway span → gRPC client span → (other process)
gRPC server span → database spans — in the caller's trace."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.e2e.support import SECRET, free_port
from tests.gateway.support import bearer
from tests.logins import login_url
from tests.ops.support import OPS

pytestmark = pytest.mark.db

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_SPAN = "b7ad6b7169203331"
SERVER, CLIENT = 2, 3  # opentelemetry.proto.trace.v1.Span.SpanKind


class Collector(ThreadingHTTPServer):
    """An OTLP/HTTP trace receiver: POST /v1/traces (protobuf) → (service.name, span) pairs."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, object]] = []
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = ExportTraceServiceRequest.FromString(body)
                for resource in request.resource_spans:
                    service = next(a.value.string_value for a in resource.resource.attributes
                                   if a.key == "service.name")
                    for scope in resource.scope_spans:
                        collector.spans.extend((service, span) for span in scope.spans)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)


@pytest.fixture
def collector():
    server = Collector()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _env(collector: Collector, data_dir: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AOS_", "OTEL_")) and k != "DATABASE_URL"}
    env.update(AOS_DATA_DIR=data_dir, AOS_AUTH_JWT_SECRET=SECRET, AOS_DEV_KEYS="true", AOS_MIGRATE_ON_START="false",
               PYTHONUNBUFFERED="1",
               OTEL_TRACES_EXPORTER="otlp", OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
               OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{collector.server_port}",
               OTEL_BSP_SCHEDULE_DELAY="100", **extra)
    return env


def _wait(condition, what: str, processes, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while not condition():
        for process in processes:
            assert process.poll() is None, f"{what}: a process exited with {process.returncode}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_otel_variables_alone_make_one_trace_across_the_gateway_and_service_processes(
        collector, database_url, ops_data):
    data_dir = tempfile.mkdtemp(prefix="aos-otel-")
    logs_port, gateway_port = free_port(), free_port()
    logs_log = os.path.join(data_dir, "logs.log")
    processes = []
    try:
        with open(logs_log, "w") as log_file:
            processes.append(subprocess.Popen(
                [sys.executable, "-m", "services.logs"], stdout=subprocess.DEVNULL, stderr=log_file,
                env=_env(collector, data_dir, AOS_LOGS_DATABASE_URL=login_url(database_url, "logs"),
                         AOS_LOGS_PORT=str(logs_port))))
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "gateway"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env=_env(collector, data_dir, AOS_GATEWAY_PORT=str(gateway_port),
                     **{f"AOS_{name}_ADDRESS": f"127.0.0.1:{logs_port}" for name in ("OVERVIEW", "LOGS", "EXPORT")})))

        def answers() -> int | None:
            request = urllib.request.Request(f"http://127.0.0.1:{gateway_port}/api/v1/logs/audit?page_size=1",
                                             headers={**bearer(OPS), "traceparent": f"00-{TRACE_ID}-{PARENT_SPAN}-01"})
            try:
                with urllib.request.urlopen(request, timeout=5) as reply:
                    return reply.status
            except OSError:
                return None

        _wait(lambda: answers() == 200, "the gateway answering through the service", processes)

        def spans(service: str):
            return [s for name, s in list(collector.spans) if name == service and s.trace_id.hex() == TRACE_ID]

        _wait(lambda: spans("aos-gateway") and any(s.kind == SERVER for s in spans("aos-logs"))
              and len(spans("aos-logs")) >= 2, "the spans of both processes", processes)
        gateway, logs = spans("aos-gateway"), spans("aos-logs")
        # The last call's spans: the gateway's server span whose client child reached the service.
        servers = [s for s in gateway if s.kind == SERVER]
        assert servers and all(s.parent_span_id.hex() == PARENT_SPAN for s in servers)
        assert {s.name for s in servers} == {"GET /api/v1/logs/audit"}
        clients = {s.span_id: s for s in gateway if s.kind == CLIENT}
        assert clients and all(c.parent_span_id in {s.span_id for s in servers} for c in clients.values())
        handled = [s for s in logs if s.kind == SERVER]
        assert handled and all(s.name == "/aos.logs.v1.AuditLedgerService/ListAuditEntries" for s in handled)
        assert all(s.parent_span_id in clients for s in handled), "the service's span is the gateway call's child"
        statements = [s for s in logs if s.kind == CLIENT]
        assert statements and all(s.parent_span_id in {h.span_id for h in handled} for s in statements)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=30)
    # The service's call log carries the trace id (after its exit: every line written).
    calls = [json.loads(line) for line in open(logs_log) if line.startswith("{")]
    assert any(line.get("msg") == "call" and line.get("trace_id") == TRACE_ID for line in calls)
    shutil.rmtree(data_dir, ignore_errors=True)
