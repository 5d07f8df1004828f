"""Backpressure on the bytes of ingest requests in process (AOS_INGEST_INFLIGHT_BYTES): a full
bound refuses an Export with RESOURCE_EXHAUSTED + RetryInfo (OTLP/HTTP: 429 + Retry-After), and
the real OpenTelemetry exporters retry it by themselves until the data arrives."""
from __future__ import annotations

import asyncio
import uuid

import grpc
import psycopg
import pytest
import uvicorn
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.sdk.trace.export import SpanExportResult

from aos.logs.v1 import llm_runs_service_pb2 as runs_pb, llm_runs_service_pb2_grpc as runs_grpc
from aos_runtime.service_main import build_server
from gateway import backend_addresses, create_app
from services.ingest import server as ingest_server
from tests.e2e.support import settings, token
from tests.gateway.otlp_support import Recording, agent_program
from tests.gateway.support import start_uvicorn
from tests.logins import login_url

pytestmark = pytest.mark.db
LIMIT = 4096
TENANT = "tenant-otlp-backpressure"


@pytest.fixture(scope="module")
def tenant(database_url) -> str:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("INSERT INTO tenants (id, name) VALUES (%s, %s) ON CONFLICT DO NOTHING", (TENANT, TENANT))
    return TENANT


async def steps_of(logs_address: str, conversation: str) -> list:
    """The steps of the run the conversation's spans became (none: not arrived)."""
    reader = (("authorization", f"Bearer {token(TENANT, scopes=('logs.read',))}"),)
    async with grpc.aio.insecure_channel(logs_address) as channel:
        runs = runs_grpc.LlmRunsServiceStub(channel)
        listed = await runs.ListLlmRuns(runs_pb.ListLlmRunsRequest(page_size=1000), metadata=reader)
        for run in listed.runs:
            trace = await runs.GetLlmRunTrace(runs_pb.GetLlmRunTraceRequest(run_id=run.run_id), metadata=reader)
            if trace.steps and trace.steps[0].metadata["conversation_id"] == conversation:
                assert trace.metadata.checksum
                return list(trace.steps)
    return []


@pytest.fixture()
async def tight_ingest(suite, database_url, tmp_path):
    """An Ingest server of its own whose in-flight bound is LIMIT bytes, no tenant share."""
    conf = settings(tmp_path, ingest_inflight_bytes=LIMIT, ingest_inflight_bytes_per_tenant=0)
    server = build_server("ingest", ingest_server.servicers, conf, login_url(database_url, "ingest"), port=0)
    address = f"127.0.0.1:{await server.start()}"
    yield server, address
    await server.stop(grace=1)


async def _gateway(address: str, suite: dict[str, str]):
    app = create_app(backend_addresses({**suite, "ingest": address}))
    server, task, host, port = await start_uvicorn(uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="on",
                                                                  log_config=None, access_log=False))
    return server, task, f"http://{host}:{port}"


@pytest.mark.parametrize("transport", ["grpc", "http/protobuf"])
async def test_a_full_byte_bound_refuses_and_the_real_exporter_retries_until_the_run_arrives(
        transport, suite, tenant, tight_ingest, monkeypatch):
    server, address = tight_ingest
    gate = server.admission.inflight_bytes
    gateway = None
    if transport == "grpc":
        endpoint = f"http://{address}"
    else:
        gateway = await _gateway(address, suite)
        endpoint = gateway[2]
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", f"authorization=Bearer%20{token(TENANT, scopes=('evidence.write',), actor_type='AGENT')}")
    exporter = Recording(GrpcExporter(timeout=20) if transport == "grpc" else HttpExporter(timeout=20))
    conversation = uuid.uuid4().hex
    # Another producer's request holds the whole bound while this one's export arrives.
    held = gate.acquire(TENANT, LIMIT)
    try:
        program = asyncio.create_task(asyncio.to_thread(agent_program, exporter, conversation))
        for _ in range(2000):
            if gate.refused or program.done():
                break
            await asyncio.sleep(0.005)
        assert gate.refused >= 1, "the export was not refused while the bound was full"
        assert not exporter.results  # the exporter is retrying, not done
    finally:
        held.release()
    try:
        await program
        assert exporter.results == [SpanExportResult.SUCCESS]
        assert gate.held == 0
        assert len(await steps_of(suite["logs"], conversation)) == 4
    finally:
        if gateway is not None:
            gateway[0].should_exit = True
            await gateway[1]
