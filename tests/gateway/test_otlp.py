"""OTLP in: a program instrumented with the real OpenTelemetry SDK, its real OTLP exporters
(gRPC straight to the Ingest server, HTTP/protobuf through the gateway's POST /v1/traces)
configured by OTEL_EXPORTER_OTLP_ENDPOINT and OTEL_EXPORTER_OTLP_HEADERS, shows up as runs
with traces in LlmRunsService and in the Overview costs; OTLP/JSON and bad input too."""
from __future__ import annotations

import asyncio
import base64
import gzip
import json
import re
import time
import uuid
from pathlib import Path

import grpc
import httpx
import pytest
from google.protobuf import json_format
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as otlp, trace_service_pb2_grpc as otlp_grpc
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.trace.v1 import trace_pb2
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes

from aos.evidence.v1 import records_pb2
from aos.logs.v1 import llm_runs_service_pb2 as runs_pb, llm_runs_service_pb2_grpc as runs_grpc
from aos.overview.v1 import overview_service_pb2 as overview_pb, overview_service_pb2_grpc as overview_grpc
from tests.e2e.support import BASE, token
from tests.gateway.otlp_support import Recording, agent_program
from tests.logins import load_demo_scenarios

pytestmark = pytest.mark.db

TENANT = "tenant-otlp"


@pytest.fixture(scope="module")
def tenant(database_url) -> str:
    return load_demo_scenarios(database_url, TENANT, base=BASE, keep=lambda s: s.id != "SDSR-PLATFORM-001")


def producer_token(actor_type="AGENT", scopes=("evidence.write",)) -> str:
    return token(TENANT, scopes=scopes, actor_type=actor_type)


def reader():
    return (("authorization", f"Bearer {token(TENANT, scopes=('logs.read', 'overview.read'))}"),)


async def the_run(runs, conversation: str):
    """The run the conversation's spans became (found through its steps' metadata)."""
    listed = await runs.ListLlmRuns(runs_pb.ListLlmRunsRequest(agent_id="agent-refunds", page_size=1000),
                                    metadata=reader())
    for run in listed.runs:
        trace = await runs.GetLlmRunTrace(runs_pb.GetLlmRunTraceRequest(run_id=run.run_id), metadata=reader())
        if trace.steps and trace.steps[0].metadata["conversation_id"] == conversation:
            return run, trace
    raise AssertionError(f"no run for conversation {conversation}")


@pytest.fixture()
async def logs(suite):
    async with grpc.aio.insecure_channel(suite["logs"]) as channel:
        yield runs_grpc.LlmRunsServiceStub(channel)


@pytest.fixture()
async def overview(suite):
    async with grpc.aio.insecure_channel(suite["overview"]) as channel:
        yield overview_grpc.OverviewServiceStub(channel)


async def costs(overview) -> int:
    reply = await overview.GetCosts(overview_pb.GetCostsRequest(), metadata=reader())
    return reply.actuals.llm_run_cost.amount_cents


@pytest.mark.parametrize("transport", ["grpc", "http/protobuf"])
async def test_the_sdk_exporters_spans_become_a_run_with_its_trace_and_costs(
        transport, suite, served, tenant, logs, overview, monkeypatch):
    # The exporters read their endpoint and headers from the environment, as a deployed program would.
    endpoint = f"http://{suite['ingest']}" if transport == "grpc" else served
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", f"authorization=Bearer%20{producer_token()}")
    exporter = Recording(GrpcExporter(timeout=10) if transport == "grpc" else HttpExporter(timeout=10))
    conversation = uuid.uuid4().hex
    before = await costs(overview)
    await asyncio.to_thread(agent_program, exporter, conversation)
    assert exporter.results == [SpanExportResult.SUCCESS]

    run, trace = await the_run(logs, conversation)
    assert re.fullmatch(r"otel-[0-9a-f]{32}", run.run_id)  # one run per trace (stitched)
    assert (run.provider, run.model, run.agent_id) == ("openai", "gpt-4o-2024-08-06", "agent-refunds")
    assert (run.input_tokens, run.output_tokens, run.cost.amount_cents) == (320, 80, 10)
    assert (run.status, run.executor_type) == (records_pb2.LLM_RUN_STATUS_SUCCEEDED, records_pb2.EXECUTOR_TYPE_AGENT)
    assert [s.step_type for s in trace.steps] == [records_pb2.STEP_TYPE_INPUT, records_pb2.STEP_TYPE_LLM_CALL,
                                                  records_pb2.STEP_TYPE_TOOL_CALL, records_pb2.STEP_TYPE_LLM_CALL]
    chat, tool = (json_format.MessageToDict(trace.steps[i].input_data) for i in (1, 2))
    assert chat["messages"][0]["parts"][0]["content"] == "refund order 7?"  # JSON text kept as JSON
    assert tool["arguments"] == {"order": 7} and tool["tool"] == "lookup_order"
    assert [s.tokens for s in trace.steps] == [0, 150, 0, 250]
    assert trace.metadata.checksum  # sealed with its SPEC §5 hash
    assert await costs(overview) - before == 10


async def test_a_retried_export_is_the_same_run_and_other_spans_are_refused_with_partial_success(
        suite, tenant, logs):
    conversation = uuid.uuid4().hex
    request = export_request(conversation)
    auth = (("authorization", f"Bearer {producer_token()}"),)
    async with grpc.aio.insecure_channel(suite["ingest"]) as channel:
        stub = otlp_grpc.TraceServiceStub(channel)
        first = await stub.Export(request, metadata=auth)
        again = await stub.Export(request, metadata=auth)  # an exporter's retry
        # One non-GenAI span, refused with a count and a reason; the GenAI ones accepted both times.
        for reply in (first, again):
            assert reply.partial_success.rejected_spans == 1
            assert "gen_ai.operation.name" in reply.partial_success.error_message
        # The same trace re-sent with a changed span: the recorded run stands, its spans are refused.
        changed = export_request(conversation, input_tokens=999)
        reply = await stub.Export(changed, metadata=auth)
        assert reply.partial_success.rejected_spans == 3
        assert "already recorded" in reply.partial_success.error_message
        # Invalid GenAI spans (negative tokens) are refused, named.
        bad = export_request(uuid.uuid4().hex, input_tokens=-5)
        reply = await stub.Export(bad, metadata=auth)
        assert reply.partial_success.rejected_spans == 3
        assert "input_tokens must not be negative" in reply.partial_success.error_message
        # A count that is not a whole number would be left out of the tokens without a word: refused, named.
        for odd in ("12", 2.5):
            reply = await stub.Export(export_request(uuid.uuid4().hex, input_tokens=odd), metadata=auth)
            assert reply.partial_success.rejected_spans == 3
            assert "gen_ai.usage.input_tokens of span 0101010101010101 must be a whole number" in \
                reply.partial_success.error_message
        # A double holding a whole number (some SDKs send numbers so) counts as that number.
        whole = uuid.uuid4().hex
        reply = await stub.Export(export_request(whole, input_tokens=7.0), metadata=auth)
        assert reply.partial_success.rejected_spans == 1  # the HTTP span only
        # An empty request is fine (nothing to do); a person's token or a reader's is refused.
        assert (await stub.Export(otlp.ExportTraceServiceRequest(), metadata=auth)).partial_success.rejected_spans == 0
        for wrong in (producer_token(actor_type="HUMAN"), producer_token(scopes=("logs.read",))):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.Export(request, metadata=(("authorization", f"Bearer {wrong}"),))
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Export(request)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    run, trace = await the_run(logs, conversation)
    assert run.input_tokens == 10 and len(trace.steps) == 2
    assert (await the_run(logs, whole))[0].input_tokens == 7


def export_request(conversation: str, *, input_tokens: int | float | str = 10) -> otlp.ExportTraceServiceRequest:
    """A hand-built OTLP request: one trace of a chat and a tool span, and an HTTP span."""
    trace_id = bytes.fromhex(conversation)  # a uuid4's hex: the trace id doubles as the conversation

    def kv(key, value):
        if isinstance(value, bool):
            return common_pb2.KeyValue(key=key, value=common_pb2.AnyValue(bool_value=value))
        if isinstance(value, int):
            return common_pb2.KeyValue(key=key, value=common_pb2.AnyValue(int_value=value))
        if isinstance(value, float):
            return common_pb2.KeyValue(key=key, value=common_pb2.AnyValue(double_value=value))
        return common_pb2.KeyValue(key=key, value=common_pb2.AnyValue(string_value=value))

    now = time.time_ns() - 60 * 10 ** 9
    spans = [
        trace_pb2.Span(trace_id=trace_id, span_id=b"\x01" * 8, name="chat m", start_time_unix_nano=now,
                       end_time_unix_nano=now + 10 ** 9, attributes=[
                           kv("gen_ai.operation.name", "chat"), kv("gen_ai.request.model", "m-1"),
                           kv("gen_ai.agent.id", "agent-refunds"), kv("gen_ai.system", "acme"),
                           kv("gen_ai.conversation.id", conversation),
                           kv("gen_ai.usage.input_tokens", input_tokens), kv("gen_ai.usage.output_tokens", 5)]),
        trace_pb2.Span(trace_id=trace_id, span_id=b"\x02" * 8, name="execute_tool t",
                       start_time_unix_nano=now + 2 * 10 ** 9, end_time_unix_nano=now + 3 * 10 ** 9,
                       attributes=[kv("gen_ai.operation.name", "execute_tool"), kv("gen_ai.tool.name", "t"),
                                   kv("gen_ai.conversation.id", conversation)]),
        trace_pb2.Span(trace_id=trace_id, span_id=b"\x03" * 8, name="GET /", start_time_unix_nano=now,
                       end_time_unix_nano=now + 1),
    ]
    return otlp.ExportTraceServiceRequest(resource_spans=[trace_pb2.ResourceSpans(
        scope_spans=[trace_pb2.ScopeSpans(spans=spans)])])


async def test_otlp_http_json_and_bad_bodies(served, tenant, logs):
    conversation = uuid.uuid4().hex
    document = json.loads(json.dumps(_to_otlp_json(export_request(conversation))))
    headers = {"Authorization": f"Bearer {producer_token()}"}
    async with httpx.AsyncClient(base_url=served, timeout=30) as http:
        reply = await http.post("/v1/traces", json=document, headers=headers)
        assert reply.status_code == 200, reply.text
        assert reply.headers["content-type"].startswith("application/json")
        assert reply.json()["partialSuccess"]["rejectedSpans"] == "1"
        run, trace = await the_run(logs, conversation)
        assert run.run_id == f"otel-{conversation}" and len(trace.steps) == 2

        protobuf = {**headers, "Content-Type": "application/x-protobuf"}
        for body, kind, status in ((b"\xff\xff\xff", "application/x-protobuf", 400),
                                   (b"{not json", "application/json", 400),
                                   (b"{}", "text/plain", 415)):
            reply = await http.post("/v1/traces", content=body, headers={**headers, "Content-Type": kind})
            assert reply.status_code == status, reply.text
        bad_id = {"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz", "spanId": "01"}]}]}]}
        reply = await http.post("/v1/traces", json=bad_id, headers=headers)
        assert reply.status_code == 400 and "hex" in reply.json()["message"]
        # A refusal in the protobuf encoding is a google.rpc.Status in protobuf.
        reply = await http.post("/v1/traces", content=export_request(conversation).SerializeToString(),
                                headers={"Content-Type": "application/x-protobuf"})
        assert reply.status_code == 401 and reply.headers["content-type"] == "application/x-protobuf"
        # gzip, as the exporters send with OTEL_EXPORTER_OTLP_COMPRESSION=gzip; a body that is not gzip is 400.
        zipped = gzip.compress(export_request(uuid.uuid4().hex).SerializeToString())
        reply = await http.post("/v1/traces", content=zipped, headers={**protobuf, "Content-Encoding": "gzip"})
        assert reply.status_code == 200
        assert otlp.ExportTraceServiceResponse.FromString(reply.content).partial_success.rejected_spans == 1
        reply = await http.post("/v1/traces", content=b"plain", headers={**protobuf, "Content-Encoding": "gzip"})
        assert reply.status_code == 400
        reply = await http.post("/v1/traces", content=otlp.ExportTraceServiceRequest().SerializeToString(),
                                headers=protobuf)
        assert reply.status_code == 200
        assert otlp.ExportTraceServiceResponse.FromString(reply.content) == otlp.ExportTraceServiceResponse()


def _to_otlp_json(request: otlp.ExportTraceServiceRequest) -> dict:
    """OTLP/JSON as the specification writes it: ids in hex, not proto3 JSON's base64."""
    document = json_format.MessageToDict(request)
    for resource in document["resourceSpans"]:
        for scope in resource["scopeSpans"]:
            for span in scope["spans"]:
                for key in ("traceId", "spanId"):
                    span[key] = base64.b64decode(span[key]).hex()
    return document


def test_the_attribute_names_are_the_pinned_semantic_conventions():
    """Every gen_ai.* name the receiver reads is one the pinned opentelemetry-semantic-conventions defines."""
    source = Path(__file__).resolve().parents[2].joinpath("services/ingest/otlp.py").read_text()
    used = set(re.findall(r'"(gen_ai\.[a-z_.]+)"', source))
    known = {v for k, v in vars(gen_ai_attributes).items() if k.startswith("GEN_AI_") and isinstance(v, str)}
    assert used and used <= known, used - known


def test_the_data_subject_attributes_are_the_pinned_semantic_conventions():
    """The end-user ids a span's step is made erasable by (docs/ERASURE.md) are semconv's own names."""
    from opentelemetry.semconv._incubating.attributes import enduser_attributes, user_attributes

    from services.ingest import otlp

    assert otlp.SUBJECT_ATTRIBUTES == (enduser_attributes.ENDUSER_PSEUDO_ID, enduser_attributes.ENDUSER_ID,
                                       user_attributes.USER_ID)
