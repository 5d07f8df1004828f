"""RetentionService on the running Export server: a tenant's policies and legal holds, each
change an audit entry of that tenant, nothing of one tenant visible or changeable by another."""
from __future__ import annotations

import json
import uuid

import grpc
import pytest
from sqlalchemy import text

from aos.evidence.v1 import evidence_pb2, records_pb2
from aos.export.v1 import retention_service_pb2 as pb, retention_service_pb2_grpc as pb_grpc
from aos.logs.v1 import audit_ledger_service_pb2 as audit_pb, audit_ledger_service_pb2_grpc as audit_grpc
from aos_recording.writers import Producer
from tests.db.sessions import ledger_report, session
from tests.e2e.support import token, violations
from tests.logins import login_url

pytestmark = pytest.mark.db

LEDGER, LLM, SYSTEM = (pb.RETENTION_RECORD_TYPE_AUDIT_LEDGER, pb.RETENTION_RECORD_TYPE_LLM_RUNS,
                       pb.RETENTION_RECORD_TYPE_SYSTEM_RECORDS)


def new_tenant(database_url: str) -> str:
    tenant = f"tenant-ret-{uuid.uuid4().hex[:10]}"
    producer = Producer(login_url(database_url, "producer"), pool_size=1)
    try:
        with producer.transaction(tenant) as conn:
            conn.execute(text("INSERT INTO tenants (id, name) VALUES (:t, :t)"), {"t": tenant})
    finally:
        producer.close()
    return tenant


def who(tenant: str, scopes=("retention.read", "retention.admin")):
    return (("authorization", f"Bearer {token(tenant, scopes=scopes)}"),)


@pytest.fixture
async def stub(suite):
    async with grpc.aio.insecure_channel(suite["export"]) as channel:
        yield pb_grpc.RetentionServiceStub(channel)


def entries(database_url: str, tenant: str) -> list[tuple[str, str, dict | None, dict | None]]:
    with session(database_url) as conn:
        return conn.execute("SELECT event_type, entity_id, before_state, after_state FROM audit_ledger "
                            "WHERE tenant_id = %s ORDER BY seq", (tenant,)).fetchall()


async def test_defaults_then_a_set_policy_recorded_once_and_invisible_to_another_tenant(stub, database_url):
    mine, other = new_tenant(database_url), new_tenant(database_url)
    got = (await stub.GetRetentionPolicies(pb.GetRetentionPoliciesRequest(), metadata=who(mine))).policies
    assert len(got) == 7 and all(p.is_default for p in got)
    by_key = {(p.record_type, p.level): p for p in got}
    assert by_key[(LEDGER, 0)].retention_days == 365 and by_key[(LLM, 0)].retention_days == 90
    assert by_key[(SYSTEM, records_pb2.SYSTEM_SEVERITY_CRITICAL)].permanent
    assert by_key[(SYSTEM, records_pb2.SYSTEM_SEVERITY_DEBUG)].retention_days == 1

    request = pb.SetRetentionPolicyRequest(record_type=LEDGER, retention_days=7 * 365, retention_class="SOC2",
                                           compliance_tags=["soc2", "eu-data"])
    answer = await stub.SetRetentionPolicy(request, metadata=who(mine))
    assert answer.changed and answer.policy.retention_days == 2555 and not answer.policy.is_default
    assert answer.policy.updated_by_id == "user-e2e" and list(answer.policy.compliance_tags) == ["soc2", "eu-data"]
    again = await stub.SetRetentionPolicy(request, metadata=who(mine))
    assert not again.changed
    [entry] = entries(database_url, mine)
    assert entry[:2] == ("RetentionPolicyChanged", "AUDIT_LEDGER")
    assert entry[2]["retention_days"] == 365 and entry[2]["is_default"]
    assert entry[3]["retention_days"] == 2555 and entry[3]["retention_class"] == "SOC2"
    assert ledger_report(database_url, mine).ok
    # The other tenant still has the defaults and no entry.
    theirs = (await stub.GetRetentionPolicies(pb.GetRetentionPoliciesRequest(), metadata=who(other))).policies
    assert all(p.is_default for p in theirs) and entries(database_url, other) == []
    # A level's policy for system records.
    level = await stub.SetRetentionPolicy(pb.SetRetentionPolicyRequest(
        record_type=SYSTEM, level=records_pb2.SYSTEM_SEVERITY_DEBUG, permanent=True), metadata=who(mine))
    assert level.changed and level.policy.permanent and level.policy.retention_days == 0
    assert entries(database_url, mine)[-1][1] == "SYSTEM_RECORDS/DEBUG"


@pytest.mark.parametrize("fields,field", [
    ({"record_type": LEDGER, "retention_days": 100}, "retention_days"),            # below the ledger's year
    ({"record_type": LLM, "retention_days": 200, "retention_class": "HIPAA"}, "retention_days"),
    ({"record_type": LLM, "retention_days": 90, "retention_class": "PLATINUM"}, "retention_class"),
    ({"record_type": SYSTEM, "retention_days": 5}, "level"),
    ({"record_type": LEDGER, "level": records_pb2.SYSTEM_SEVERITY_INFO, "retention_days": 400}, "level"),
    ({"record_type": LLM, "retention_days": 90, "permanent": True}, "retention_days"),
    ({"record_type": LLM}, "retention_days"),
    ({"retention_days": 90}, "record_type"),
    ({"record_type": LLM, "retention_days": 90, "compliance_tags": ["Bad Tag"]}, "compliance_tags"),
    ({"record_type": LLM, "retention_days": 40000}, "retention_days"),
])
async def test_a_policy_out_of_bounds_is_refused_with_its_field(stub, database_url, fields, field):
    mine = new_tenant(database_url)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.SetRetentionPolicy(pb.SetRetentionPolicyRequest(**fields), metadata=who(mine))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and field in violations(err.value)
    assert entries(database_url, mine) == []


async def test_reading_needs_retention_read_and_changing_retention_admin(stub, database_url):
    mine = new_tenant(database_url)
    for call, request, scopes in (
            (stub.GetRetentionPolicies, pb.GetRetentionPoliciesRequest(), ("logs.read",)),
            (stub.SetRetentionPolicy, pb.SetRetentionPolicyRequest(record_type=LLM, retention_days=30),
             ("retention.read",)),
            (stub.PlaceLegalHold, pb.PlaceLegalHoldRequest(scope=pb.LEGAL_HOLD_SCOPE_TENANT, reason="x"),
             ("retention.read", "exports.create"))):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call(request, metadata=who(mine, scopes))
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert entries(database_url, mine) == []


async def test_holds_placed_listed_released_once_and_only_by_their_tenant(stub, database_url):
    mine, other = new_tenant(database_url), new_tenant(database_url)
    run_hold = (await stub.PlaceLegalHold(pb.PlaceLegalHoldRequest(
        scope=pb.LEGAL_HOLD_SCOPE_RUN, target_id="run-77", reason="litigation 2026-114"), metadata=who(mine))).hold
    tenant_hold = (await stub.PlaceLegalHold(pb.PlaceLegalHoldRequest(
        scope=pb.LEGAL_HOLD_SCOPE_TENANT, reason="regulator request"), metadata=who(mine))).hold
    assert run_hold.active and run_hold.target_id == "run-77" and run_hold.placed_by_id == "user-e2e"
    # Another tenant sees none of them and cannot release them (NOT_FOUND, as a missing one).
    listed = await stub.ListLegalHolds(pb.ListLegalHoldsRequest(), metadata=who(other))
    assert list(listed.holds) == [] and listed.total_size == 0
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.ReleaseLegalHold(pb.ReleaseLegalHoldRequest(hold_id=run_hold.hold_id, reason="mine now"),
                                    metadata=who(other))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    # Paged, newest first.
    first = await stub.ListLegalHolds(pb.ListLegalHoldsRequest(page_size=1), metadata=who(mine))
    assert [h.hold_id for h in first.holds] == [tenant_hold.hold_id] and first.has_more and first.total_size == 2
    second = await stub.ListLegalHolds(pb.ListLegalHoldsRequest(page_size=1, page_token=first.next_page_token),
                                       metadata=who(mine))
    assert [h.hold_id for h in second.holds] == [run_hold.hold_id] and not second.has_more
    with pytest.raises(grpc.aio.AioRpcError) as err:  # a token bound to other filters
        await stub.ListLegalHolds(pb.ListLegalHoldsRequest(page_size=1, page_token=first.next_page_token,
                                                           include_released=True), metadata=who(mine))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # Released once; the release is kept and listed on request.
    released = (await stub.ReleaseLegalHold(pb.ReleaseLegalHoldRequest(hold_id=run_hold.hold_id, reason="settled"),
                                            metadata=who(mine))).hold
    assert not released.active and released.release_reason == "settled" and released.HasField("released_at")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.ReleaseLegalHold(pb.ReleaseLegalHoldRequest(hold_id=run_hold.hold_id, reason="again"),
                                    metadata=who(mine))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    active = await stub.ListLegalHolds(pb.ListLegalHoldsRequest(), metadata=who(mine))
    assert [h.hold_id for h in active.holds] == [tenant_hold.hold_id]
    every = await stub.ListLegalHolds(pb.ListLegalHoldsRequest(include_released=True), metadata=who(mine))
    assert every.total_size == 2
    assert [e[:2] for e in entries(database_url, mine)] == [
        ("LegalHoldPlaced", run_hold.hold_id), ("LegalHoldPlaced", tenant_hold.hold_id),
        ("LegalHoldReleased", run_hold.hold_id)]
    assert entries(database_url, other) == [] and ledger_report(database_url, mine).ok


async def test_a_subject_hold_takes_any_subject_id_erasure_takes(stub, database_url):
    """SUBJECT (migration 0023_erasure): the id as EraseDataSubject takes it (e.g. an e-mail
    address, not a resource id), placed and released like the others, recorded as they are."""
    mine = new_tenant(database_url)
    hold = (await stub.PlaceLegalHold(pb.PlaceLegalHoldRequest(
        scope=pb.LEGAL_HOLD_SCOPE_SUBJECT, target_id="jane doe <jane@example.com>", reason="DSR dispute"),
        metadata=who(mine))).hold
    assert hold.scope == pb.LEGAL_HOLD_SCOPE_SUBJECT and hold.target_id == "jane doe <jane@example.com>"
    assert not (await stub.ReleaseLegalHold(pb.ReleaseLegalHoldRequest(hold_id=hold.hold_id, reason="done"),
                                            metadata=who(mine))).hold.active
    assert [e[:2] for e in entries(database_url, mine)] == [
        ("LegalHoldPlaced", hold.hold_id), ("LegalHoldReleased", hold.hold_id)]


async def test_the_entries_read_through_the_logs_service(stub, suite, database_url):
    """Each new entity type has its metadata (the Logs service reads every entry it lists)."""
    mine = new_tenant(database_url)
    await stub.SetRetentionPolicy(pb.SetRetentionPolicyRequest(record_type=LLM, retention_days=30),
                                  metadata=who(mine))
    hold = (await stub.PlaceLegalHold(pb.PlaceLegalHoldRequest(scope=pb.LEGAL_HOLD_SCOPE_TENANT, reason="x"),
                                      metadata=who(mine))).hold
    async with grpc.aio.insecure_channel(suite["logs"]) as channel:
        listed = await audit_grpc.AuditLedgerServiceStub(channel).ListAuditEntries(
            audit_pb.ListAuditEntriesRequest(), metadata=who(mine, ("logs.read",)))
    assert [(e.entity_id, e.metadata.source_domain) for e in listed.entries] == [
        (hold.hold_id, evidence_pb2.SOURCE_DOMAIN_LOGS), ("LLM_RUNS", evidence_pb2.SOURCE_DOMAIN_LOGS)]


@pytest.mark.parametrize("fields,field", [
    ({"scope": pb.LEGAL_HOLD_SCOPE_TENANT, "target_id": "run-1", "reason": "x"}, "target_id"),
    ({"scope": pb.LEGAL_HOLD_SCOPE_RUN, "reason": "x"}, "target_id"),
    ({"scope": pb.LEGAL_HOLD_SCOPE_INCIDENT, "target_id": "bad id!", "reason": "x"}, "target_id"),
    ({"scope": pb.LEGAL_HOLD_SCOPE_RUN, "target_id": "run-1", "reason": " "}, "reason"),
    ({"target_id": "run-1", "reason": "x"}, "scope"),
    ({"scope": 9, "reason": "x"}, "scope"),
    ({"scope": pb.LEGAL_HOLD_SCOPE_SUBJECT, "reason": "x"}, "target_id"),
    ({"scope": pb.LEGAL_HOLD_SCOPE_SUBJECT, "target_id": "s" * 257, "reason": "x"}, "target_id"),
    ({"scope": pb.LEGAL_HOLD_SCOPE_SUBJECT, "target_id": "subj\n1", "reason": "x"}, "target_id"),
])
async def test_a_bad_hold_is_refused_with_its_field(stub, database_url, fields, field):
    mine = new_tenant(database_url)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.PlaceLegalHold(pb.PlaceLegalHoldRequest(**fields), metadata=who(mine))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and field in violations(err.value)


async def test_an_export_carries_the_retention_class_and_tags_in_its_signed_manifest(stub, suite, database_url):
    from aos.evidence.v1 import bundle_pb2
    from aos.export.v1 import export_service_pb2 as export_pb, export_service_pb2_grpc as export_grpc
    mine = new_tenant(database_url)
    await stub.SetRetentionPolicy(pb.SetRetentionPolicyRequest(
        record_type=LEDGER, retention_days=7 * 365, retention_class="SOC2", compliance_tags=["soc2", "pci"]),
        metadata=who(mine))
    scopes = ("exports.create", "exports.read")
    async with grpc.aio.insecure_channel(suite["export"]) as channel:
        exports = export_grpc.ExportServiceStub(channel)
        made = (await exports.CreateExport(export_pb.CreateExportRequest(
            audit_slice=export_pb.AuditSlice(), bundle_type=bundle_pb2.BUNDLE_TYPE_EVIDENCE,
            format=bundle_pb2.EXPORT_FORMAT_JSON), metadata=who(mine, scopes))).export
        verified = await exports.VerifyExport(export_pb.VerifyExportRequest(export_id=made.export_id),
                                              metadata=who(mine, scopes))
    assert made.retention_class == "SOC2" and list(made.compliance_tags) == ["pci", "soc2"]
    section = json.loads(made.manifest)["retention"]
    assert section["retention_class"] == "SOC2" and section["policies"][0]["retention_days"] == 2555
    assert verified.valid
