"""AuditLedgerService end to end over the demo scenarios, answer by answer, field by field."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import grpc
import pytest

from aos.evidence.v1 import evidence_pb2, integrity_pb2
from aos.logs.v1 import audit_ledger_service_pb2 as pb, audit_ledger_service_pb2_grpc as pb_grpc
from aos_recording import hashing
from aos_runtime.validation import by_number
from tests.e2e.support import ACME, BASE, DEMO, auth, ts, violations

pytestmark = pytest.mark.db


@pytest.fixture()
async def ledger(suite, demo):
    async with grpc.aio.insecure_channel(suite["logs"]) as channel:
        yield pb_grpc.AuditLedgerServiceStub(channel)


# The ledger entries the four demo scenarios write for one tenant.
EXPECTED_EVENTS = sorted(["LimitCreated", "LimitBreached", "IncidentAcknowledged", "PolicyProposalApproved",
                          "PolicyRuleModified", "ActorLoggedIn", "AccessDenied", "AccessGranted",
                          "LimitOverrideGranted", "EmergencyOverrideActivated", "EmergencyOverrideDeactivated",
                          "LimitOverrideRevoked", "ApiKeyCreated", "ApiKeyRevoked", "ActorLoggedOut"])


def event_name(number: int) -> str:
    return by_number("aos.evidence.v1.AuditEventType")[number]


async def test_list_returns_every_entry_newest_first(ledger):
    reply = await ledger.ListAuditEntries(pb.ListAuditEntriesRequest(), metadata=auth())
    assert sorted(event_name(e.event_type) for e in reply.entries) == EXPECTED_EVENTS
    assert (reply.total_size, reply.has_more, reply.total_size_is_estimate, reply.next_page_token) == \
        (15, False, False, "")
    keys = [(e.created_at.ToDatetime(), e.id) for e in reply.entries]
    assert keys == sorted(keys, reverse=True)
    assert {e.metadata.tenant_id for e in reply.entries} == {DEMO}
    assert reply.metadata.tenant_id == DEMO and reply.metadata.source_component == "audit_ledger"
    # The answer's recorded_at is its newest evidence's, not the response time.
    assert reply.metadata.recorded_at == max((e.metadata.recorded_at for e in reply.entries),
                                             key=lambda t: (t.seconds, t.nanos))


async def test_an_entry_field_by_field(ledger):
    reply = await ledger.ListAuditEntries(
        pb.ListAuditEntriesRequest(event_type=evidence_pb2.AUDIT_EVENT_TYPE_LIMIT_BREACHED), metadata=auth())
    (entry,) = reply.entries
    assert entry.entity_type == evidence_pb2.AUDIT_ENTITY_TYPE_LIMIT
    assert entry.entity_id == f"{DEMO}.lim-support-budget"
    assert (entry.actor_type, entry.actor_id) == (evidence_pb2.ACTOR_TYPE_SYSTEM, "policy-engine")
    assert entry.action_reason == "run-support-103 pushed usage to 51700 of 50000 cents"
    assert entry.correlation_id == f"{DEMO}.run-support-103"
    assert entry.created_at.ToDatetime(tzinfo=timezone.utc) == BASE - timedelta(hours=2)
    # The content hash is SPEC section 5's, recomputed here from the fields.
    detail = await ledger.GetAuditEntry(pb.GetAuditEntryRequest(entry_id=entry.id), metadata=auth())
    after = dict(detail.after_state)
    fields = {"id": entry.id, "tenant_id": DEMO, "event_type": "LimitBreached", "entity_type": "LIMIT",
              "entity_id": entry.entity_id, "actor_type": "SYSTEM", "actor_id": "policy-engine",
              "action_reason": entry.action_reason, "correlation_id": entry.correlation_id,
              "created_at": BASE - timedelta(hours=2), "before_state": None,
              "after_state": {k: (int(v) if isinstance(v, float) and v.is_integer() else v) for k, v in after.items()}}
    assert entry.content_hash == hashing.ledger_content_hash(fields).hex()
    assert entry.metadata.checksum == entry.content_hash
    m = entry.metadata
    assert (m.tenant_id, m.actor_type, m.system_id) == (DEMO, evidence_pb2.ACTOR_TYPE_SYSTEM, "policy-engine")
    assert (m.run_id, m.trace_id) == (f"{DEMO}.run-support-103", f"{DEMO}.trace-support-103")
    assert list(m.policy_ids) == ["pol-budget-guard"]  # the run's violated policy, from its trace
    assert m.correlation_id == entry.correlation_id
    assert m.occurred_at == entry.created_at and m.timezone == "UTC" and m.immutable
    recorded = m.recorded_at.ToDatetime(tzinfo=timezone.utc)
    assert recorded < datetime.now(timezone.utc) - timedelta(milliseconds=1)  # persisted, not answered
    assert m.source_domain == evidence_pb2.SOURCE_DOMAIN_POLICY and m.origin == evidence_pb2.ORIGIN_SYSTEM


async def test_entry_detail_proves_before_and_after(ledger):
    reply = await ledger.ListAuditEntries(
        pb.ListAuditEntriesRequest(event_type=evidence_pb2.AUDIT_EVENT_TYPE_INCIDENT_ACKNOWLEDGED), metadata=auth())
    detail = await ledger.GetAuditEntry(pb.GetAuditEntryRequest(entry_id=reply.entries[0].id), metadata=auth())
    assert dict(detail.before_state) == {"lifecycle_state": "ACTIVE"}
    assert dict(detail.after_state) == {"lifecycle_state": "ACKED", "run_id": f"{DEMO}.run-research-7"}
    m = detail.metadata
    assert (m.human_actor_id, m.actor_type) == ("user-secops", evidence_pb2.ACTOR_TYPE_HUMAN)
    assert list(m.incident_ids) == [f"{DEMO}.inc-pii-7"] and m.trace_id == f"{DEMO}.trace-research-7"
    assert list(m.policy_ids) == ["pol-pii-egress"]


@pytest.mark.parametrize("request_fields,expected", [
    (dict(entity_type=evidence_pb2.AUDIT_ENTITY_TYPE_LIMIT), 6),
    (dict(actor_type=evidence_pb2.ACTOR_TYPE_HUMAN), 11),
    (dict(actor_id="user-admin"), 3),
    (dict(correlation_id=f"{DEMO}.run-research-7"), 1),
    (dict(actor_type=evidence_pb2.ACTOR_TYPE_SYSTEM, entity_type=evidence_pb2.AUDIT_ENTITY_TYPE_LIMIT), 2),
    (dict(created_after=ts(BASE - timedelta(hours=2)), created_before=ts(BASE - timedelta(hours=1))), 5),
])
async def test_filters_and_totals_agree(ledger, request_fields, expected):
    reply = await ledger.ListAuditEntries(pb.ListAuditEntriesRequest(**request_fields), metadata=auth())
    assert len(reply.entries) == reply.total_size == expected


async def test_keyset_pages_cover_the_list_exactly_once(ledger):
    everything = await ledger.ListAuditEntries(pb.ListAuditEntriesRequest(), metadata=auth())
    seen, page_token, pages = [], "", 0
    while True:
        reply = await ledger.ListAuditEntries(pb.ListAuditEntriesRequest(page_size=4, page_token=page_token),
                                              metadata=auth())
        pages += 1
        seen += [e.id for e in reply.entries]
        assert reply.total_size == 15 and reply.has_more == bool(reply.next_page_token)
        if not reply.has_more:
            break
        page_token = reply.next_page_token
    assert pages == 4 and seen == [e.id for e in everything.entries]


async def test_a_page_token_is_bound_to_its_filters_and_tenant(ledger):
    first = await ledger.ListAuditEntries(pb.ListAuditEntriesRequest(page_size=2), metadata=auth())
    for request, metadata in [
        (pb.ListAuditEntriesRequest(page_size=2, page_token=first.next_page_token, actor_id="user-admin"), auth()),
        (pb.ListAuditEntriesRequest(page_size=2, page_token=first.next_page_token), auth(ACME)),
        (pb.ListAuditEntriesRequest(page_size=2, page_token=first.next_page_token[:-3] + "abc"), auth()),
    ]:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await ledger.ListAuditEntries(request, metadata=metadata)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "page_token" in violations(err.value)


async def test_another_tenants_entry_is_not_found(ledger):
    theirs = await ledger.ListAuditEntries(pb.ListAuditEntriesRequest(page_size=1), metadata=auth(ACME))
    assert theirs.entries[0].metadata.tenant_id == ACME
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await ledger.GetAuditEntry(pb.GetAuditEntryRequest(entry_id=theirs.entries[0].id), metadata=auth())
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await ledger.GetAuditEntry(pb.GetAuditEntryRequest(entry_id="aud_does_not_exist"), metadata=auth())
    assert missing.value.details() == err.value.details().replace(theirs.entries[0].id, "aud_does_not_exist")


async def test_identity_authorization_and_access_panels(ledger):
    identity = await ledger.ListIdentityEvents(pb.ListIdentityEventsRequest(), metadata=auth())
    assert sorted(event_name(e.event_type) for e in identity.entries) == \
        ["ActorLoggedIn", "ActorLoggedOut", "ApiKeyCreated", "ApiKeyRevoked"]
    authz = await ledger.ListAuthorizationDecisions(pb.ListAuthorizationDecisionsRequest(), metadata=auth())
    assert sorted(event_name(e.event_type) for e in authz.entries) == ["AccessDenied", "AccessGranted"]
    narrowed = await ledger.ListIdentityEvents(pb.ListIdentityEventsRequest(actor_id="user-admin"), metadata=auth())
    assert narrowed.total_size == 2
    access = await ledger.ListAccessEvents(pb.ListAccessEventsRequest(), metadata=auth())
    assert (len(access.entries), access.total_size) == (0, 0)  # no export has been made yet


async def test_integrity_is_computed_and_continues_by_cursor(ledger):
    whole = await ledger.GetIntegrityReport(pb.GetIntegrityReportRequest(), metadata=auth())
    assert whole.status == integrity_pb2.INTEGRITY_STATUS_VERIFIED
    assert (whole.head.seq, whole.entries_checked, whole.verified_from_seq, whole.verified_to_seq) == (15, 15, 1, 15)
    everything = await ledger.ListAuditEntries(pb.ListAuditEntriesRequest(), metadata=auth())
    assert whole.head.chain_hash == next(e.chain_hash for e in everything.entries if e.seq == 15)
    checked, page_token, calls = 0, "", 0
    while True:
        part = await ledger.GetIntegrityReport(pb.GetIntegrityReportRequest(max_entries=4, page_token=page_token),
                                               metadata=auth())
        calls += 1
        checked += part.entries_checked
        assert part.entries_checked <= 4
        if not part.has_more:
            assert part.status == integrity_pb2.INTEGRITY_STATUS_VERIFIED
            break
        assert part.status == integrity_pb2.INTEGRITY_STATUS_PARTIAL
        page_token = part.next_page_token
    assert (checked, calls) == (15, 4)
    ranged = await ledger.GetIntegrityReport(pb.GetIntegrityReportRequest(from_seq=5, to_seq=9), metadata=auth())
    assert (ranged.verified_from_seq, ranged.verified_to_seq, ranged.status) == \
        (5, 9, integrity_pb2.INTEGRITY_STATUS_VERIFIED)


async def test_audit_exports_list_is_empty_before_any_export(ledger):
    reply = await ledger.ListAuditExports(pb.ListAuditExportsRequest(), metadata=auth())
    assert (len(reply.exports), reply.total_size, reply.has_more) == (0, 0, False)


@pytest.mark.parametrize("rpc,request_message,fields", [
    ("ListAuditEntries", pb.ListAuditEntriesRequest(page_size=-1), {"page_size"}),
    ("ListAuditEntries", pb.ListAuditEntriesRequest(event_type=999, actor_type=77), {"event_type", "actor_type"}),
    ("ListAuditEntries", pb.ListAuditEntriesRequest(created_after=ts(BASE), created_before=ts(BASE)),
     {"created_before"}),
    ("ListAuditEntries", pb.ListAuditEntriesRequest(page_token="garbage"), {"page_token"}),
    ("ListAuditEntries", pb.ListAuditEntriesRequest(actor_id="x" * 300), {"actor_id"}),
    ("GetAuditEntry", pb.GetAuditEntryRequest(entry_id=""), {"entry_id"}),
    ("GetAuditEntry", pb.GetAuditEntryRequest(entry_id="../etc/passwd"), {"entry_id"}),
    ("ListIdentityEvents", pb.ListIdentityEventsRequest(page_size=-5), {"page_size"}),
    ("ListAuthorizationDecisions", pb.ListAuthorizationDecisionsRequest(
        created_after=ts(BASE), created_before=ts(BASE - timedelta(1))), {"created_before"}),
    ("ListAccessEvents", pb.ListAccessEventsRequest(page_token="a.b"), {"page_token"}),
    ("GetIntegrityReport", pb.GetIntegrityReportRequest(from_seq=9, to_seq=3), {"to_seq"}),
    ("GetIntegrityReport", pb.GetIntegrityReportRequest(max_entries=-1, from_seq=-2), {"max_entries", "from_seq"}),
    ("ListAuditExports", pb.ListAuditExportsRequest(page_size=-1), {"page_size"}),
])
async def test_bad_input_is_invalid_argument_with_field_violations(ledger, rpc, request_message, fields):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await getattr(ledger, rpc)(request_message, metadata=auth())
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(violations(err.value)) == fields
