"""``erase`` against the suite: a v2 subject written through Ingest, erased from the CLI."""
from __future__ import annotations

import json
import uuid
from datetime import timedelta

import grpc
import psycopg
import pytest

from aos.evidence.v1 import evidence_pb2
from aos.ingest.v1 import ingest_service_pb2 as pb, ingest_service_pb2_grpc as pb_grpc
from tests.e2e.support import BASE, token, ts

pytestmark = pytest.mark.db


async def write(suite, tenant: str, subject: str) -> None:
    event = pb.AuditEvent(event_id=f"evt-{uuid.uuid4().hex}", event_type=evidence_pb2.AUDIT_EVENT_TYPE_API_KEY_CREATED,
                          entity_type=evidence_pb2.AUDIT_ENTITY_TYPE_API_KEY, entity_id="key-cli",
                          action_reason="for the subject", occurred_at=ts(BASE + timedelta(hours=3)),
                          data_subject_id=subject)
    event.after_state.update({"owner": "CLI Subject"})
    meta = (("authorization", f"Bearer {token(tenant, scopes=('evidence.write',), actor_type='SYSTEM')}"),)
    async with grpc.aio.insecure_channel(suite["ingest"]) as channel:
        reply = await pb_grpc.IngestServiceStub(channel).AppendAuditEvents(
            pb.AppendAuditEventsRequest(events=[event]), metadata=meta)
    assert reply.results[0].status == pb.ITEM_STATUS_CREATED


async def test_erase_from_the_cli(cli, suite, writer_tenant, database_url):
    subject = f"subj-{uuid.uuid4().hex[:8]}"
    await write(suite, writer_tenant, subject)
    refused = await cli("erase", subject, "--reason", "DSR-1", tenant=writer_tenant)
    assert refused.code == 2 and "--yes" in refused.err
    result = await cli("--json", "erase", subject, "--reason", "DSR-1", "--yes", tenant=writer_tenant)
    assert result.code == 0, result.err
    doc = json.loads(result.out)
    assert doc["subject_id"] == subject and int(doc["payloads_erased"]) == 2
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM evidence_payloads WHERE tenant_id = %s AND subject_id = %s",
                            (writer_tenant, subject)).fetchone()[0] == 0
    table = await cli("erase", subject, "--reason", "DSR-1", "--yes", tenant=writer_tenant)
    assert table.code == 0 and subject in table.out


async def test_a_held_subject_exits_with_the_hold_named(cli, suite, writer_tenant):
    """The hold is retention's (``retention hold --subject``, migration 0023_erasure's SUBJECT scope):
    it refuses the erasure until it is released."""
    subject = f"subj-{uuid.uuid4().hex[:8]}"
    await write(suite, writer_tenant, subject)
    placed = await cli("--json", "retention", "hold", "--subject", subject, "--reason", "matter 9", tenant=writer_tenant)
    assert placed.code == 0, placed.err
    hold = json.loads(placed.out)
    assert hold["scope"] == "LEGAL_HOLD_SCOPE_SUBJECT" and hold["target_id"] == subject
    result = await cli("erase", subject, "--reason", "DSR-2", "--yes", tenant=writer_tenant)
    assert result.code != 0 and hold["hold_id"] in result.err
    released = await cli("retention", "release", hold["hold_id"], "--reason", "settled", tenant=writer_tenant)
    assert released.code == 0, released.err
    erased = await cli("--json", "erase", subject, "--reason", "DSR-2", "--yes", tenant=writer_tenant)
    assert erased.code == 0 and int(json.loads(erased.out)["payloads_erased"]) == 2, erased.err
