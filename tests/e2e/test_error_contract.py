"""The error contract on the wire: reasons, a tenant with no row, platform-wide metadata, the logs.

Real servers (the ``suite`` fixture), real channels, the demo scenarios.
"""
from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone

import grpc
import pytest
from google.protobuf import message_factory
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from aos.evidence.v1 import bundle_pb2
from aos.export.v1 import export_service_pb2 as export_pb, export_service_pb2_grpc as export_grpc
from aos.logs.v1 import audit_ledger_service_pb2 as audit_pb, audit_ledger_service_pb2_grpc as audit_grpc
from aos.logs.v1 import llm_runs_service_pb2 as runs_pb, llm_runs_service_pb2_grpc as runs_grpc
from aos.logs.v1 import system_logs_service_pb2 as sys_pb, system_logs_service_pb2_grpc as sys_grpc
from aos.overview.v1 import overview_service_pb2 as overview_pb
from aos_recording.sources import SourceWriter
from aos_recording.writers import LlmRunRecordWriter, Producer
from aos_runtime import errors
from tests.e2e.support import BASE, DEMO, auth, ts

pytestmark = pytest.mark.db
GHOST = "tenant-ghost"      # a valid token, no row in tenants
# A run recorded long before any system record: it has no baseline to show.
EARLY_RUN = f"{DEMO}.run-before-the-platform"


def error_info(err: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    status = rpc_status.from_call(err)
    assert status is not None, f"{err.code()} without rich details: {err.details()}"
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    raise AssertionError(f"{err.code()} without an ErrorInfo")


@pytest.fixture(scope="module")
def early_run(database_url, demo):
    producer = Producer(database_url)
    with producer.transaction(DEMO) as conn:
        SourceWriter(conn).ensure_tenant(tenant_id=DEMO, name=DEMO, created_at=BASE)
        LlmRunRecordWriter(conn).write(tenant_id=DEMO, run_id=EARLY_RUN, provider="openai", model="gpt",
                                       execution_status="succeeded",
                                       started_at=datetime(2000, 1, 1, tzinfo=timezone.utc))
    producer.close()
    return EARLY_RUN


@pytest.fixture()
async def stubs(suite):
    async with grpc.aio.insecure_channel(suite["logs"]) as logs, \
            grpc.aio.insecure_channel(suite["export"]) as export, \
            grpc.aio.insecure_channel(suite["overview"]) as overview:
        yield {"logs": logs, "export": export, "overview": overview}


def _not_found_calls(stubs, early_run):
    runs = runs_grpc.LlmRunsServiceStub(stubs["logs"])
    system = sys_grpc.SystemLogsServiceStub(stubs["logs"])
    audit = audit_grpc.AuditLedgerServiceStub(stubs["logs"])
    export = export_grpc.ExportServiceStub(stubs["export"])
    missing = f"{DEMO}.no-such-run"
    evidence = dict(bundle_type=bundle_pb2.BUNDLE_TYPE_EVIDENCE, format=bundle_pb2.EXPORT_FORMAT_JSON)
    return {
        errors.Resource.LLM_RUN: runs.GetLlmRunEnvelope(runs_pb.GetLlmRunEnvelopeRequest(run_id=missing),
                                                        metadata=auth()),
        errors.Resource.TRACE: runs.GetLlmRunTrace(runs_pb.GetLlmRunTraceRequest(run_id=missing), metadata=auth()),
        errors.Resource.SYSTEM_BASELINE: system.GetSystemSnapshot(
            sys_pb.GetSystemSnapshotRequest(run_id=early_run), metadata=auth()),
        errors.Resource.AUDIT_ENTRY: audit.GetAuditEntry(audit_pb.GetAuditEntryRequest(entry_id="aud_no_such_entry"),
                                                         metadata=auth()),
        errors.Resource.EXPORT: export.GetExport(export_pb.GetExportRequest(export_id="exp_no_such_export"),
                                                 metadata=auth()),
        errors.Resource.RUN: export.CreateExport(export_pb.CreateExportRequest(run_id=missing, **evidence),
                                                 metadata=auth()),
        errors.Resource.INCIDENT: export.CreateExport(
            export_pb.CreateExportRequest(incident_id=f"{DEMO}.inc-none", **evidence), metadata=auth()),
    }


async def test_each_resources_not_found_reason_on_the_wire(stubs, demo, early_run):
    calls = _not_found_calls(stubs, early_run)
    # Every resource a NOT_FOUND can name is exercised (TENANT is the ghost tenant's, below).
    assert set(calls) == set(errors.Resource) - {errors.Resource.TENANT}
    for resource, call in calls.items():
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call
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
