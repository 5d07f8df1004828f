"""What the erasure tests share: the tenants, the subject's text, the callers, the writes."""
from __future__ import annotations

import uuid
from datetime import timedelta

from aos.evidence.v1 import evidence_pb2, records_pb2 as evidence_records_pb2
from aos.ingest.v1 import ingest_service_pb2 as pb
from tests.e2e.support import BASE, token, ts

TENANT, OTHER = "tenant-erase-a", "tenant-erase-b"
SECRET = "Erasure Subject Seventy lives on Elm Street"


def producer(tenant=TENANT):
    return (("authorization", f"Bearer {token(tenant, scopes=('evidence.write',), actor_type='SYSTEM')}"),)


def officer(tenant=TENANT, scopes=("evidence.erase",)):
    return (("authorization", f"Bearer {token(tenant, scopes=scopes)}"),)


async def write_subject(ingest, subject: str, tenant=TENANT) -> str:
    """Two v2 events and a v2 system record for ``subject``, a v1 event beside them; the correlation."""
    correlation = uuid.uuid4().hex
    events = []
    for i, data_subject in enumerate([subject, subject, None]):
        e = pb.AuditEvent(event_id=f"evt-{correlation}-{i}", event_type=evidence_pb2.AUDIT_EVENT_TYPE_API_KEY_CREATED,
                          entity_type=evidence_pb2.AUDIT_ENTITY_TYPE_API_KEY, entity_id=f"key-{i}",
                          correlation_id=correlation, action_reason=f"key for {SECRET}" if data_subject else "v1",
                          occurred_at=ts(BASE + timedelta(hours=2, seconds=i)))
        e.after_state.update({"owner": SECRET} if data_subject else {"owner": "service"})
        if data_subject:
            e.data_subject_id = data_subject
        events.append(e)
    reply = await ingest.AppendAuditEvents(pb.AppendAuditEventsRequest(events=events), metadata=producer(tenant))
    assert [r.status for r in reply.results] == [pb.ITEM_STATUS_CREATED] * 3, reply
    record = pb.SystemRecordInput(record_id=f"sys-{correlation}", component="mailer",
                                  event_type=evidence_records_pb2.SYSTEM_EVENT_TYPE_ERROR,
                                  severity=evidence_records_pb2.SYSTEM_SEVERITY_ERROR, summary=f"bounce for {SECRET}",
                                  occurred_at=ts(BASE + timedelta(hours=2)), data_subject_id=subject)
    record.details.update({"to": SECRET})
    reply = await ingest.AppendSystemRecords(pb.AppendSystemRecordsRequest(records=[record]), metadata=producer(tenant))
    assert reply.results[0].status == pb.ITEM_STATUS_CREATED, reply
    return correlation
