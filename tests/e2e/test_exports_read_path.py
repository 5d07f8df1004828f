"""The Logs read path of exports (O5 lists, the access panel) over log_exports rows.

ExportService, which writes these rows, is issue #6; until then the rows are
written here exactly as the export role may write them (one row per export and its
EvidenceExported ledger entry), for a tenant of their own, so the read path is
proven on real rows — chain, manifest hash, metadata — and across tenants.
"""
from __future__ import annotations

import json
from datetime import timedelta

import grpc
import psycopg
import pytest

from aos.evidence.v1 import bundle_pb2, evidence_pb2
from aos.logs.v1 import (
    audit_ledger_service_pb2 as audit_pb,
    audit_ledger_service_pb2_grpc as audit_grpc,
    llm_runs_service_pb2 as runs_pb,
    llm_runs_service_pb2_grpc as runs_grpc,
)
from aos_recording import hashing, scenarios
from aos_recording.writers import AuditLedgerWriter, Producer
from tests.e2e.support import BASE, DEMO, auth
from tests.logins import login_url

pytestmark = pytest.mark.db
TENANT = "tenant-exports"
RUN = f"{TENANT}.run-support-103"


@pytest.fixture(scope="module")
def exports(database_url, demo):
    producer = Producer(login_url(database_url, "producer"))
    budget = next(s for s in scenarios.demo_scenarios() if s.id == "SDSR-BUDGET-BREACH-001")
    scenarios.load(producer, budget, TENANT, base=BASE)
    made = [write_export(database_url, producer, TENANT, RUN, i, bundle)
            for i, bundle in enumerate(("EVIDENCE", "SOC2"))]
    producer.close()
    return made


def write_export(database_url: str, producer: Producer, tenant: str, run: str, i: int, bundle: str) -> str:
    """One export of ``run``, i minutes after BASE: its log_exports row and EvidenceExported entry."""
    export_id = f"{tenant}.exp-{i}"
    created = BASE + timedelta(minutes=i)
    manifest = {"export_id": export_id, "tenant_id": tenant, "scope": "LLM_RUN", "subject": run,
                "bundle_type": bundle, "format": "JSON", "checksum": hashing.sha256(export_id.encode()).hex()}
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SET ROLE aos_export")
        conn.execute("SELECT set_config('aos.tenant_id', %s, false)", (tenant,))
        conn.execute(
            "INSERT INTO log_exports (id, tenant_id, scope, subject_id, run_id, bundle_type, format, content_type, "
            "filename, size_bytes, checksum, manifest, dsse_envelope, signing_key_id, redaction, "
            "idempotency_key, requested_by_type, requested_by_id, created_at, content_hash) VALUES "
            "(%s, %s, 'LLM_RUN', %s, %s, %s, 'JSON', 'application/json', %s, 123, %s, %s, %s, 'key-1', %s, "
            "%s, 'HUMAN', 'user-auditor', %s, %s)",
            (export_id, tenant, run, run, bundle, f"{export_id}.json", hashing.sha256(export_id.encode()),
             json.dumps(manifest), json.dumps({"payloadType": "application/vnd.aos.export-manifest+json"}),
             json.dumps({"profile": "default", "counts": {"email": 2}}), f"key-{i}", created,
             hashing.manifest_hash(manifest)))
    with producer.transaction(tenant) as conn:
        AuditLedgerWriter(conn).append(tenant_id=tenant, event_type="EvidenceExported", entity_type="LOG_EXPORT",
                                       entity_id=export_id, actor_type="HUMAN", actor_id="user-auditor",
                                       correlation_id=run, created_at=created)
    return export_id


@pytest.fixture()
async def stubs(suite, exports):
    async with grpc.aio.insecure_channel(suite["logs"]) as channel:
        yield audit_grpc.AuditLedgerServiceStub(channel), runs_grpc.LlmRunsServiceStub(channel)


async def test_the_runs_exports_and_the_exports_list(stubs, exports):
    audit, runs = stubs
    by_run = await runs.GetLlmRunExport(runs_pb.GetLlmRunExportRequest(run_id=RUN), metadata=auth(TENANT))
    assert [e.export_id for e in by_run.exports] == list(reversed(exports))  # newest first
    listed = await audit.ListAuditExports(audit_pb.ListAuditExportsRequest(), metadata=auth(TENANT))
    assert [e.export_id for e in listed.exports] == list(reversed(exports)) and listed.total_size == 2
    export = listed.exports[-1]
    assert (export.scope, export.bundle_type, export.format) == \
        (bundle_pb2.EXPORT_SCOPE_LLM_RUN, bundle_pb2.BUNDLE_TYPE_EVIDENCE, bundle_pb2.EXPORT_FORMAT_JSON)
    assert (export.run_id, export.size_bytes, export.signing_key_id, export.idempotency_key) == \
        (RUN, 123, "key-1", "key-0")
    assert (export.seq, export.prev_hash) == (1, "00" * 32)
    manifest = json.loads(export.manifest)
    assert hashing.chain_hash(bytes(32), hashing.manifest_hash(manifest)).hex() == export.chain_hash
    assert listed.exports[0].prev_hash == export.chain_hash  # the per-tenant export chain
    assert [(c.kind, c.count) for c in export.redaction.counts] == [("email", 2)]
    m = export.metadata
    assert (m.export_id, m.run_id, m.human_actor_id, m.tenant_id) == (export.export_id, RUN, "user-auditor", TENANT)
    page = await audit.ListAuditExports(audit_pb.ListAuditExportsRequest(page_size=1), metadata=auth(TENANT))
    rest = await audit.ListAuditExports(audit_pb.ListAuditExportsRequest(page_size=1, page_token=page.next_page_token),
                                        metadata=auth(TENANT))
    assert [e.export_id for e in [*page.exports, *rest.exports]] == list(reversed(exports)) and not rest.has_more


async def test_the_access_panel_shows_evidence_exported(stubs, exports):
    audit, _ = stubs
    access = await audit.ListAccessEvents(audit_pb.ListAccessEventsRequest(), metadata=auth(TENANT))
    assert [e.entity_id for e in access.entries] == list(reversed(exports))
    assert {e.event_type for e in access.entries} == {evidence_pb2.AUDIT_EVENT_TYPE_EVIDENCE_EXPORTED}
    assert access.entries[0].metadata.export_id == exports[-1]


async def test_another_tenant_sees_none_of_them(stubs, exports):
    audit, runs = stubs
    assert not (await audit.ListAuditExports(audit_pb.ListAuditExportsRequest(), metadata=auth(DEMO))).exports
    assert not (await audit.ListAccessEvents(audit_pb.ListAccessEventsRequest(), metadata=auth(DEMO))).entries
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await runs.GetLlmRunExport(runs_pb.GetLlmRunExportRequest(run_id=RUN), metadata=auth(DEMO))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    integrity = await audit.GetIntegrityReport(audit_pb.GetIntegrityReportRequest(), metadata=auth(TENANT))
    demo_integrity = await audit.GetIntegrityReport(audit_pb.GetIntegrityReportRequest(), metadata=auth(DEMO))
    assert integrity.head.seq == 4 and demo_integrity.head.seq == 15  # each tenant's own chain
    assert integrity.head.chain_hash != demo_integrity.head.chain_hash


PAGED = "tenant-exports-paged"


async def test_the_runs_exports_are_paged_past_one_page(database_url, stubs):
    """GetLlmRunExport pages (it stopped silently at 1,000): 5 exports at 2 a page come
    back once each, newest first, with their total; the token is bound to the run."""
    producer = Producer(login_url(database_url, "producer"))
    budget = next(s for s in scenarios.demo_scenarios() if s.id == "SDSR-BUDGET-BREACH-001")
    scenarios.load(producer, budget, PAGED, base=BASE)
    run = f"{PAGED}.run-support-103"
    made = [write_export(database_url, producer, PAGED, run, i, "EVIDENCE") for i in range(5)]
    producer.close()
    _, runs = stubs
    seen, token, pages = [], "", []
    while True:
        page = await runs.GetLlmRunExport(runs_pb.GetLlmRunExportRequest(run_id=run, page_size=2, page_token=token),
                                          metadata=auth(PAGED))
        pages.append((len(page.exports), page.total_size, page.total_size_is_estimate, page.has_more))
        seen += [e.export_id for e in page.exports]
        token = page.next_page_token
        if not token:
            break
    assert seen == list(reversed(made))
    assert pages == [(2, 5, False, True), (2, 5, False, True), (1, 5, False, False)]
    first = await runs.GetLlmRunExport(runs_pb.GetLlmRunExportRequest(run_id=run, page_size=2), metadata=auth(PAGED))
    for other in (runs.GetLlmRunExport(runs_pb.GetLlmRunExportRequest(
                      run_id=f"{PAGED}.run-other", page_size=2, page_token=first.next_page_token), metadata=auth(PAGED)),
                  runs.GetLlmRunExport(runs_pb.GetLlmRunExportRequest(run_id=run, page_size=-1), metadata=auth(PAGED))):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await other
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
