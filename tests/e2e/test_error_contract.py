"""The error contract on the wire: reasons, a tenant with no row, platform-wide metadata, the logs.

Real servers (the ``suite`` fixture), real channels, the demo scenarios.
"""
from __future__ import annotations

import logging
from datetime import datetime, timezone

import grpc
import pytest
from google.protobuf import message_factory
from sqlalchemy import text

from aos.evidence.v1 import bundle_pb2
from aos.export.v1 import (
    export_service_pb2 as export_pb,
    export_service_pb2_grpc as export_grpc,
    retention_service_pb2 as retention_pb,
    retention_service_pb2_grpc as retention_grpc,
)
from aos.logs.v1 import (
    audit_ledger_service_pb2 as audit_pb,
    audit_ledger_service_pb2_grpc as audit_grpc,
    llm_runs_service_pb2 as runs_pb,
    llm_runs_service_pb2_grpc as runs_grpc,
    system_logs_service_pb2 as sys_pb,
    system_logs_service_pb2_grpc as sys_grpc,
)
from aos.overview.v1 import overview_service_pb2 as overview_pb, overview_service_pb2_grpc as overview_grpc
from aos_recording.sources import SourceWriter
from aos_recording.writers import LlmRunRecordWriter, Producer, TraceRecorder
from aos_runtime import errors
from tests.e2e.support import BASE, DEMO, auth, error_info, settings
from tests.logins import login_url

pytestmark = pytest.mark.db
GHOST = "tenant-ghost"      # a valid token, no row in tenants
# A run recorded long before any system record: it has no baseline to show. In a tenant of its
# own, so the demo tenants' lists stay as the other tests expect them.
EARLY = "tenant-errors"
EARLY_RUN = f"{EARLY}.run-before-the-platform"
GAP_RUN = f"{EARLY}.run-with-a-gap"   # a trace written directly with steps 0 and 2: no step 1


@pytest.fixture(scope="module")
def early_run(database_url, demo):
    producer = Producer(login_url(database_url, "producer"))
    with producer.transaction(EARLY) as conn:
        SourceWriter(conn).ensure_tenant(tenant_id=EARLY, name=EARLY, created_at=BASE)
        LlmRunRecordWriter(conn).write(tenant_id=EARLY, run_id=EARLY_RUN, provider="openai", model="gpt",
                                       execution_status="succeeded",
                                       started_at=datetime(2000, 1, 1, tzinfo=timezone.utc))
        traces = TraceRecorder(conn)
        trace_id = traces.create_trace(tenant_id=EARLY, run_id=GAP_RUN, started_at=BASE)
        for index in (0, 2):
            traces.add_step(tenant_id=EARLY, trace_id=trace_id, step_index=index, step_type="llm_call",
                            timestamp=BASE)
    producer.close()
    return EARLY_RUN


@pytest.fixture()
async def stubs(suite):
    async with grpc.aio.insecure_channel(suite["logs"]) as logs, \
            grpc.aio.insecure_channel(suite["export"]) as export, \
            grpc.aio.insecure_channel(suite["overview"]) as overview:
        yield {"logs": logs, "export": export, "overview": overview}


def _not_found_calls(stubs, early_run):
    """Each call not yet made (one at a time: the two CreateExports of one tenant at once would
    make the second wait, and admission by predicted completion may refuse a waiting export)."""
    runs = runs_grpc.LlmRunsServiceStub(stubs["logs"])
    system = sys_grpc.SystemLogsServiceStub(stubs["logs"])
    audit = audit_grpc.AuditLedgerServiceStub(stubs["logs"])
    export = export_grpc.ExportServiceStub(stubs["export"])
    missing = f"{DEMO}.no-such-run"
    evidence = dict(bundle_type=bundle_pb2.BUNDLE_TYPE_EVIDENCE, format=bundle_pb2.EXPORT_FORMAT_JSON)
    return {
        errors.Resource.LLM_RUN: lambda: runs.GetLlmRunEnvelope(runs_pb.GetLlmRunEnvelopeRequest(run_id=missing),
                                                                metadata=auth()),
        errors.Resource.TRACE: lambda: runs.GetLlmRunTrace(runs_pb.GetLlmRunTraceRequest(run_id=missing),
                                                           metadata=auth()),
        errors.Resource.SYSTEM_BASELINE: lambda: system.GetSystemSnapshot(
            sys_pb.GetSystemSnapshotRequest(run_id=early_run), metadata=auth(EARLY)),
        errors.Resource.AUDIT_ENTRY: lambda: audit.GetAuditEntry(
            audit_pb.GetAuditEntryRequest(entry_id="aud_no_such_entry"), metadata=auth()),
        errors.Resource.EXPORT: lambda: export.GetExport(export_pb.GetExportRequest(export_id="exp_no_such_export"),
                                                         metadata=auth()),
        errors.Resource.RUN: lambda: export.CreateExport(export_pb.CreateExportRequest(run_id=missing, **evidence),
                                                         metadata=auth()),
        errors.Resource.INCIDENT: lambda: export.CreateExport(
            export_pb.CreateExportRequest(incident_id=f"{DEMO}.inc-none", **evidence), metadata=auth()),
        errors.Resource.TRACE_STEP: lambda: runs.GetLlmRunReplay(
            runs_pb.GetLlmRunReplayRequest(run_id=GAP_RUN, at_step=1), metadata=auth(EARLY)),
        errors.Resource.CHECKPOINT: lambda: export.GetLedgerCheckpoint(
            export_pb.GetLedgerCheckpointRequest(tree_size=10 ** 12), metadata=auth()),
        errors.Resource.LEGAL_HOLD: lambda: retention_grpc.RetentionServiceStub(stubs["export"]).ReleaseLegalHold(
            retention_pb.ReleaseLegalHoldRequest(hold_id="hold_no_such_hold", reason="closed"), metadata=auth()),
    }


async def test_each_resources_not_found_reason_on_the_wire(stubs, demo, early_run):
    calls = _not_found_calls(stubs, early_run)
    # Every resource a NOT_FOUND can name is exercised.
    assert set(calls) == set(errors.Resource)
    for resource, call in calls.items():
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call()
        assert err.value.code() == grpc.StatusCode.NOT_FOUND, (resource, err.value.details())
        info = error_info(err.value)
        assert (info.reason, info.domain) == (resource.reason, "aos.evidence")
        assert errors.REASON.fullmatch(info.reason)
    assert errors.Resource.TRACE.reason == "TRACE_NOT_FOUND"


async def test_a_platform_wide_record_does_not_claim_the_callers_tenant(stubs, demo):
    system = sys_grpc.SystemLogsServiceStub(stubs["logs"])
    reply = await system.ListSystemRecords(sys_pb.ListSystemRecordsRequest(page_size=100), metadata=auth())
    platform = [r for r in reply.records if r.system_wide]
    own = [r for r in reply.records if not r.system_wide]
    assert platform and own
    assert {r.metadata.tenant_id for r in platform} == {""}
    assert {r.metadata.tenant_id for r in own} == {DEMO}
    # The answer itself is the caller's.
    assert reply.metadata.tenant_id == DEMO
    # A run's baseline that is a platform record: the same, where it is the answer's evidence.
    snapshot = await system.GetSystemSnapshot(sys_pb.GetSystemSnapshotRequest(run_id=f"{DEMO}.run-support-103"),
                                              metadata=auth())
    assert snapshot.baseline.system_wide and snapshot.baseline.metadata.tenant_id == ""


# Requests that reach each RPC's store (an empty request may stop at validation): the rest get {}.
GHOST_RUN = f"{GHOST}.run-1"
_EXPORT = {"bundle_type": "BUNDLE_TYPE_EVIDENCE", "format": "EXPORT_FORMAT_JSON"}
GHOST_REQUESTS = {
    "GetAuditEntry": [{"entry_id": "aud_ghost"}],
    "GetLlmRunEnvelope": [{"run_id": GHOST_RUN}], "GetLlmRunTrace": [{"run_id": GHOST_RUN}],
    "GetLlmRunGovernance": [{"run_id": GHOST_RUN}], "GetLlmRunReplay": [{"run_id": GHOST_RUN}],
    "GetLlmRunExport": [{"run_id": GHOST_RUN}], "GetSystemSnapshot": [{"run_id": GHOST_RUN}],
    "GetSystemTelemetry": [{"run_id": GHOST_RUN}], "ListSystemRunEvents": [{"run_id": GHOST_RUN}],
    "GetSystemReplay": [{"run_id": GHOST_RUN}],
    "GetSystemAttribution": [{"created_after": "2026-10-01T00:00:00Z", "created_before": "2026-11-01T00:00:00Z"}],
    "CreateExport": [{"audit_slice": {}, **_EXPORT}, {"system_slice": {}, **_EXPORT}, {"run_id": GHOST_RUN, **_EXPORT},
                     {"audit_slice": {}, "idempotency_key": "ghost-1", **_EXPORT}],
    "GetExport": [{"export_id": "exp_ghost"}], "VerifyExport": [{"export_id": "exp_ghost"}],
    "DownloadExport": [{"export_id": "exp_ghost"}],
}


def _every_rpc(stubs):
    from google.protobuf import json_format

    from aos.export.v1 import retention_service_pb2
    from aos.logs.v1 import audit_ledger_service_pb2, llm_runs_service_pb2, system_logs_service_pb2
    from aos.overview.v1 import overview_service_pb2

    for module, channel in ((overview_service_pb2, "overview"), (audit_ledger_service_pb2, "logs"),
                            (llm_runs_service_pb2, "logs"), (system_logs_service_pb2, "logs"),
                            (export_pb, "export"), (retention_service_pb2, "export")):
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                request_class = message_factory.GetMessageClass(method.input_type)
                response_class = message_factory.GetMessageClass(method.output_type)
                path = f"/{service.full_name}/{method.name}"
                make = (stubs[channel].unary_stream if method.server_streaming else stubs[channel].unary_unary)
                call = make(path, request_serializer=request_class.SerializeToString,
                            response_deserializer=response_class.FromString)
                for document in GHOST_REQUESTS.get(method.name, [{}]):
                    yield method, call, json_format.ParseDict(document, request_class()), method.server_streaming


async def test_a_tenant_with_no_row_gets_clean_answers(stubs):
    """A valid token for a tenant the platform has no row for: every RPC answers with a canonical
    result (empty reads, NOT_FOUND, FAILED_PRECONDITION TENANT_NOT_FOUND for writes), never
    INTERNAL or UNKNOWN."""
    answers = {}
    for method, call, request, streaming in _every_rpc(stubs):
        try:
            if streaming:
                [m async for m in call(request, metadata=auth(GHOST))]
            else:
                await call(request, metadata=auth(GHOST))
            answers[(method.name, str(request))] = "OK"
        except grpc.aio.AioRpcError as err:
            info = error_info(err)
            assert errors.REASON.fullmatch(info.reason), (method.name, info.reason)
            answers[(method.name, str(request))] = (err.code().name, info.reason)
    # Every RPC of the three services (4 Overview, 22 Logs, 8 Export + 5 Retention) was called.
    assert len({name for name, _ in answers}) == 39, sorted(answers)
    bad = {k: v for k, v in answers.items() if v != "OK" and v[0] in ("INTERNAL", "UNKNOWN")}
    assert not bad, bad
    # Writes are refused as a precondition (the tenant is not provisioned), not answered OK.
    creates = [v for (name, _), v in answers.items() if name == "CreateExport"]
    assert set(creates) <= {("FAILED_PRECONDITION", "TENANT_NOT_FOUND"), ("NOT_FOUND", "RUN_NOT_FOUND")}
    assert ("FAILED_PRECONDITION", "TENANT_NOT_FOUND") in creates


# What a failing statement is given: evidence text and artifact bytes that must stay out of the logs.
SECRET_TEXT = "evidence-secret-4f1c9a"
ARTIFACT_BYTES = b"%PDF-1.7 artifact-bytes-77ab31"


class _FailingStatement(overview_grpc.OverviewServiceServicer):
    """A servicer whose one RPC runs a statement that fails with the values above bound to it:
    PostgreSQL's own message quotes the text ('invalid input syntax for type integer: "…"')
    and SQLAlchemy's would list every parameter."""

    def __init__(self, ctx) -> None:
        self.ctx = ctx

    @staticmethod
    def statement(conn):
        conn.execute(text("SELECT CAST(:value AS integer), length(:artifact)"),
                     {"value": SECRET_TEXT, "artifact": ARTIFACT_BYTES})

    async def GetHighlights(self, request, context):
        await self.ctx.db.run(DEMO, self.statement)


async def test_a_failing_statement_logs_no_values(database_url, tmp_path):
    from aos_runtime.observability import JsonFormatter
    from aos_runtime.server import Servicer
    from aos_runtime.service_main import build_server

    lines: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record):  # formatted at once: the request id is the call's context
            lines.append(JsonFormatter().format(record))

    handler = Capture(level=logging.DEBUG)
    logger = logging.getLogger("aos")
    logger.addHandler(handler)
    server = build_server("overview", lambda ctx: [Servicer(overview_pb.DESCRIPTOR.services_by_name[
        "OverviewService"], overview_grpc.add_OverviewServiceServicer_to_server, _FailingStatement(ctx))],
        settings(tmp_path), login_url(database_url, "overview"), port=0)
    try:
        port = await server.start()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = overview_grpc.OverviewServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.GetHighlights(overview_pb.GetHighlightsRequest(),
                                         metadata=auth() + (("x-request-id", "rid-leak-probe"),))
        # The exception's own text (whoever prints it) holds no parameter either.
        with pytest.raises(Exception) as raw:
            await server.db.run(DEMO, _FailingStatement.statement)
        assert "parameters hidden" in str(raw.value) and repr(ARTIFACT_BYTES) not in str(raw.value)
    finally:
        logger.removeHandler(handler)
        await server.stop(grace=0)
    assert err.value.code() == grpc.StatusCode.INTERNAL
    assert SECRET_TEXT not in err.value.details()
    failed = [line for line in lines if '"call failed"' in line]
    assert failed, lines
    logged = "\n".join(lines)
    assert "rid-leak-probe" in failed[0]
    # What an operator needs is there: the SQLSTATE and the statement.
    assert "22P02" in failed[0] and "CAST(%(value)s AS integer)" in failed[0]
    for value in (SECRET_TEXT, ARTIFACT_BYTES.decode(), repr(ARTIFACT_BYTES), ARTIFACT_BYTES.hex()):
        assert value not in logged
