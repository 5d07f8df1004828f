"""IngestService end to end: batches written through a real channel, read back through Logs,
the chain verified from the database, and the REST binding through the gateway."""
from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta, timezone

import grpc
import httpx
import pytest
from google.protobuf import struct_pb2

from aos.evidence.v1 import evidence_pb2, records_pb2
from aos.ingest.v1 import ingest_service_pb2 as pb, ingest_service_pb2_grpc as pb_grpc
from aos.logs.v1 import (
    audit_ledger_service_pb2 as audit_pb,
    audit_ledger_service_pb2_grpc as audit_grpc,
    system_logs_service_pb2 as system_pb,
    system_logs_service_pb2_grpc as system_grpc,
)
from aos_recording import hashing
from aos_recording.writers import AuditLedgerWriter
from gateway import backend_addresses, create_app
from tests.db.sessions import ledger_report
from tests.e2e.support import BASE, token, ts, violations
from tests.logins import load_demo_scenarios

pytestmark = pytest.mark.db

TENANT, OTHER = "tenant-ingest-a", "tenant-ingest-b"
PRODUCER = "user-e2e"  # the subject tests.e2e.support.token signs


def tenant_scenarios(scenario) -> bool:
    # Not the platform story: its system-wide records are everyone's (a fixed id, written once).
    return scenario.id != "SDSR-PLATFORM-001"


@pytest.fixture(scope="module")
def tenants(database_url):
    return tuple(load_demo_scenarios(database_url, tenant, base=BASE, keep=tenant_scenarios)
                 for tenant in (TENANT, OTHER))


@pytest.fixture()
async def ingest(suite, tenants):
    async with grpc.aio.insecure_channel(suite["ingest"]) as channel:
        yield pb_grpc.IngestServiceStub(channel)


@pytest.fixture()
async def ledger(suite):
    async with grpc.aio.insecure_channel(suite["logs"]) as channel:
        yield audit_grpc.AuditLedgerServiceStub(channel)


def writer(tenant=TENANT, actor_type="SYSTEM", scopes=("evidence.write",)):
    return (("authorization", f"Bearer {token(tenant, scopes=scopes, actor_type=actor_type)}"),)


def reader(tenant=TENANT):
    return (("authorization", f"Bearer {token(tenant, scopes=('logs.read',))}"),)


def event(event_id: str, correlation: str, **kw) -> pb.AuditEvent:
    fields = dict(event_id=event_id, event_type=evidence_pb2.AUDIT_EVENT_TYPE_LIMIT_UPDATED,
                  entity_type=evidence_pb2.AUDIT_ENTITY_TYPE_LIMIT, entity_id="lim-1", correlation_id=correlation,
                  action_reason="raised by the budget job", occurred_at=ts(BASE + timedelta(hours=1)))
    fields.update(kw)
    message = pb.AuditEvent(**fields)
    if "after_state" not in kw:
        message.after_state.update({"limit_cents": 5000, "ratio": 0.5, "tags": ["a", "b"]})
    return message


def batch(n: int, correlation: str) -> list[pb.AuditEvent]:
    return [event(f"evt-{correlation}-{i}", correlation) for i in range(n)]


async def entries(ledger, correlation: str, tenant=TENANT) -> list:
    reply = await ledger.ListAuditEntries(audit_pb.ListAuditEntriesRequest(correlation_id=correlation, page_size=1000),
                                          metadata=reader(tenant))
    return sorted(reply.entries, key=lambda e: e.seq)


async def test_a_batch_appears_in_the_ledger_with_a_valid_chain(ingest, ledger, database_url):
    correlation = uuid.uuid4().hex
    reply = await ingest.AppendAuditEvents(pb.AppendAuditEventsRequest(events=batch(3, correlation)),
                                           metadata=writer())
    assert [r.status for r in reply.results] == [pb.ITEM_STATUS_CREATED] * 3
    assert (reply.created, reply.already_present, reply.conflicts, reply.invalid) == (3, 0, 0, 0)
    seqs = [r.seq for r in reply.results]
    assert seqs == list(range(seqs[0], seqs[0] + 3))  # appended in the request's order, gapless

    stored = await entries(ledger, correlation)
    assert [e.id for e in stored] == [f"evt-{correlation}-{i}" for i in range(3)]
    assert [e.seq for e in stored] == seqs
    for entry, result in zip(stored, reply.results, strict=True):
        # The producer is the token's subject and kind, never a payload field.
        assert (entry.actor_type, entry.actor_id) == (evidence_pb2.ACTOR_TYPE_SYSTEM, PRODUCER)
        assert entry.metadata.tenant_id == TENANT
        assert (entry.content_hash, entry.chain_hash) == (result.content_hash, result.chain_hash)
    # The server's hash is SPEC §5's over the entry as stored (whole numbers as integers).
    expected = hashing.ledger_content_hash(AuditLedgerWriter.entry(
        tenant_id=TENANT, entry_id=f"evt-{correlation}-0", event_type="LimitUpdated", entity_type="LIMIT",
        entity_id="lim-1", actor_type="SYSTEM", actor_id=PRODUCER, action_reason="raised by the budget job",
        correlation_id=correlation, created_at=BASE + timedelta(hours=1),
        after_state={"limit_cents": 5000, "ratio": 0.5, "tags": ["a", "b"]}))
    assert reply.results[0].content_hash == expected.hex()
    report = ledger_report(database_url, TENANT)
    assert report.ok, report.anomalies
    assert report.last_seq >= seqs[-1]


async def test_a_retry_is_already_present_and_adds_nothing(ingest, ledger, database_url):
    correlation = uuid.uuid4().hex
    request = pb.AppendAuditEventsRequest(events=batch(4, correlation))
    first = await ingest.AppendAuditEvents(request, metadata=writer())
    again = await ingest.AppendAuditEvents(request, metadata=writer())
    assert [r.status for r in again.results] == [pb.ITEM_STATUS_ALREADY_PRESENT] * 4
    assert (again.created, again.already_present) == (0, 4)
    # The same entries answer: same seq, same hashes.
    assert [(r.seq, r.content_hash, r.chain_hash) for r in again.results] == \
        [(r.seq, r.content_hash, r.chain_hash) for r in first.results]
    assert len(await entries(ledger, correlation)) == 4
    # One id twice in one batch: the second is the first's retry.
    twice = uuid.uuid4().hex
    reply = await ingest.AppendAuditEvents(pb.AppendAuditEventsRequest(
        events=[event(f"evt-{twice}", twice), event(f"evt-{twice}", twice)]), metadata=writer())
    assert [r.status for r in reply.results] == [pb.ITEM_STATUS_CREATED, pb.ITEM_STATUS_ALREADY_PRESENT]
    assert len(await entries(ledger, twice)) == 1
    # … and with other content the second is a conflict, the first written (one batch, one statement).
    other = uuid.uuid4().hex
    reply = await ingest.AppendAuditEvents(pb.AppendAuditEventsRequest(
        events=[event(f"evt-{other}", other), event(f"evt-{other}", other, entity_id="lim-2")]), metadata=writer())
    assert [r.status for r in reply.results] == [pb.ITEM_STATUS_CREATED, pb.ITEM_STATUS_CONFLICT]
    assert [e.entity_id for e in await entries(ledger, other)] == ["lim-1"]
    assert ledger_report(database_url, TENANT).ok


async def test_concurrent_retries_of_one_batch_record_each_id_once(ingest, ledger, database_url):
    """A producer that retries while its first call is still running (a timeout, a second
    instance): however the calls interleave, each id is one entry and the chain holds."""
    correlation = uuid.uuid4().hex
    request = pb.AppendAuditEventsRequest(events=batch(50, correlation))
    replies = await asyncio.gather(*(ingest.AppendAuditEvents(request, metadata=writer()) for _ in range(5)))
    assert sum(r.created for r in replies) == 50
    assert sum(r.already_present for r in replies) == 200
    assert {tuple((x.seq, x.chain_hash) for x in r.results) for r in replies} == \
        {tuple((x.seq, x.chain_hash) for x in replies[0].results)}  # every call answers the same entries
    stored = await entries(ledger, correlation)
    assert len(stored) == 50 and len({e.id for e in stored}) == 50
    assert ledger_report(database_url, TENANT).ok


async def test_a_changed_retry_is_a_conflict_and_changes_nothing(ingest, ledger):
    correlation = uuid.uuid4().hex
    await ingest.AppendAuditEvents(pb.AppendAuditEventsRequest(events=batch(1, correlation)), metadata=writer())
    (before,) = await entries(ledger, correlation)
    changed = event(f"evt-{correlation}-0", correlation, entity_id="lim-2")
    fresh = event(f"evt-{correlation}-fresh", correlation)
    bad = event("", correlation)
    reply = await ingest.AppendAuditEvents(pb.AppendAuditEventsRequest(events=[changed, fresh, bad]),
                                           metadata=writer())
    assert [r.status for r in reply.results] == [pb.ITEM_STATUS_CONFLICT, pb.ITEM_STATUS_CREATED,
                                                 pb.ITEM_STATUS_INVALID]
    assert (reply.created, reply.conflicts, reply.invalid) == (1, 1, 1)
    assert "already recorded with different content" in reply.results[0].message
    assert reply.results[0].seq == 0 and not reply.results[0].content_hash
    assert [v.field for v in reply.results[2].violations] == ["event_id"]
    after = await entries(ledger, correlation)
    # The recorded entry stands as it was; the batch's valid item was still written.
    assert [e.id for e in after] == [f"evt-{correlation}-0", f"evt-{correlation}-fresh"]
    assert after[0] == before


async def test_a_human_token_or_one_without_the_scope_is_refused(ingest, ledger):
    correlation = uuid.uuid4().hex
    request = pb.AppendAuditEventsRequest(events=batch(1, correlation))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await ingest.AppendAuditEvents(request, metadata=writer(actor_type="HUMAN"))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "SYSTEM or AGENT" in err.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await ingest.AppendAuditEvents(request, metadata=writer(scopes=("logs.read", "exports.create")))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "evidence.write" in err.value.details()
    # An AGENT producer is accepted, and recorded as one.
    reply = await ingest.AppendAuditEvents(request, metadata=writer(actor_type="AGENT"))
    assert reply.created == 1
    (entry,) = await entries(ledger, correlation)
    assert entry.actor_type == evidence_pb2.ACTOR_TYPE_AGENT
    assert len(await entries(ledger, correlation, tenant=OTHER)) == 0


async def test_the_tenant_is_the_tokens_and_ids_are_per_tenant(ingest, ledger):
    # No payload field can name a tenant (SPEC §3: the tenant comes only from the credentials).
    for message in (pb.AppendAuditEventsRequest, pb.AuditEvent, pb.AppendSystemRecordsRequest,
                    pb.SystemRecordInput):
        assert not {"tenant_id", "tenant", "actor_id", "actor_type"} & set(message.DESCRIPTOR.fields_by_name)
    correlation = uuid.uuid4().hex
    request = pb.AppendAuditEventsRequest(events=batch(1, correlation))
    mine = await ingest.AppendAuditEvents(request, metadata=writer(TENANT))
    # The same producer id in another tenant is another entry, in that tenant's chain.
    theirs = await ingest.AppendAuditEvents(request, metadata=writer(OTHER))
    assert (mine.created, theirs.created) == (1, 1)
    assert [e.metadata.tenant_id for e in await entries(ledger, correlation, TENANT)] == [TENANT]
    assert [e.metadata.tenant_id for e in await entries(ledger, correlation, OTHER)] == [OTHER]
    # A valid token of a tenant the platform does not have: nothing recorded, a clear refusal.
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await ingest.AppendAuditEvents(request, metadata=writer("tenant-nowhere"))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_batch_limits_are_invalid_argument_naming_the_limit(ingest):
    correlation = uuid.uuid4().hex
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await ingest.AppendAuditEvents(pb.AppendAuditEventsRequest(events=batch(1001, correlation)),
                                       metadata=writer())
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "at most 1000" in violations(err.value)["events"]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await ingest.AppendAuditEvents(pb.AppendAuditEventsRequest(), metadata=writer())
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "events" in violations(err.value)
    big = event(f"evt-{correlation}-big", correlation, after_state=struct_pb2.Struct())
    big.after_state.update({"blob": "x" * (4 * 1024 * 1024)})
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await ingest.AppendAuditEvents(pb.AppendAuditEventsRequest(events=[big]), metadata=writer())
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "4194304 bytes" in violations(err.value)["events"]


async def test_invalid_items_name_their_fields(ingest, ledger):
    correlation = uuid.uuid4().hex
    future = datetime.now(timezone.utc) + timedelta(hours=1)
    no_time = event(f"evt-{correlation}-0", correlation)
    no_time.ClearField("occurred_at")
    items = [no_time,
             event(f"evt-{correlation}-1", correlation, occurred_at=ts(future)),
             event(f"evt-{correlation}-2", correlation, event_type=0, entity_id=""),
             event(f"evt-{correlation}-3", correlation, content_hash="00" * 32),
             event(f"evt-{correlation}-4", correlation, action_reason="nul\x00byte"),
             event(f"evt-{correlation}-5", correlation, event_type=999)]
    nan = event(f"evt-{correlation}-6", correlation)
    nan.after_state.update({"x": float("nan")})
    huge = event(f"evt-{correlation}-8", correlation)
    huge.after_state.update({"x": [2.0 ** 60]})  # found by tests/reliability/test_fuzz.py: was INTERNAL
    items += [nan, huge]
    reply = await ingest.AppendAuditEvents(pb.AppendAuditEventsRequest(events=items), metadata=writer())
    assert [r.status for r in reply.results] == [pb.ITEM_STATUS_INVALID] * 8
    assert [sorted(v.field for v in r.violations) for r in reply.results] == [
        ["occurred_at"], ["occurred_at"], ["entity_id", "event_type"], ["content_hash"], ["action_reason"],
        ["event_type"], ["after_state"], ["after_state"]]
    assert await entries(ledger, correlation) == []
    # The right content hash, sent by the producer, is accepted.
    good = event(f"evt-{correlation}-7", correlation)
    computed = hashing.ledger_content_hash(AuditLedgerWriter.entry(
        tenant_id=TENANT, entry_id=good.event_id, event_type="LimitUpdated", entity_type="LIMIT", entity_id="lim-1",
        actor_type="SYSTEM", actor_id=PRODUCER, action_reason="raised by the budget job", correlation_id=correlation,
        created_at=BASE + timedelta(hours=1), after_state={"limit_cents": 5000, "ratio": 0.5, "tags": ["a", "b"]}))
    good.content_hash = computed.hex()
    reply = await ingest.AppendAuditEvents(pb.AppendAuditEventsRequest(events=[good]), metadata=writer())
    assert reply.results[0].status == pb.ITEM_STATUS_CREATED


def system_record(record_id: str, **kw) -> pb.SystemRecordInput:
    fields = dict(record_id=record_id, component="worker", event_type=records_pb2.SYSTEM_EVENT_TYPE_DEPLOY,
                  severity=records_pb2.SYSTEM_SEVERITY_INFO, summary="release 1.2.3 deployed",
                  occurred_at=ts(BASE + timedelta(hours=2)), environment_id="prod")
    fields.update(kw)
    record = pb.SystemRecordInput(**fields)
    record.details.update({"version": "1.2.3", "replicas": 3})
    return record


async def test_system_records_created_retried_and_conflicting(ingest, suite):
    rid = f"sys-{uuid.uuid4().hex}"
    first = await ingest.AppendSystemRecords(pb.AppendSystemRecordsRequest(records=[system_record(rid)]),
                                             metadata=writer(actor_type="AGENT"))
    again = await ingest.AppendSystemRecords(pb.AppendSystemRecordsRequest(records=[system_record(rid)]),
                                             metadata=writer(actor_type="AGENT"))
    changed = await ingest.AppendSystemRecords(
        pb.AppendSystemRecordsRequest(records=[system_record(rid, summary="another text")]),
        metadata=writer(actor_type="AGENT"))
    assert [first.results[0].status, again.results[0].status, changed.results[0].status] == \
        [pb.ITEM_STATUS_CREATED, pb.ITEM_STATUS_ALREADY_PRESENT, pb.ITEM_STATUS_CONFLICT]
    assert first.results[0].content_hash == again.results[0].content_hash
    async with grpc.aio.insecure_channel(suite["logs"]) as channel:
        reply = await system_grpc.SystemLogsServiceStub(channel).ListSystemRecords(
            system_pb.ListSystemRecordsRequest(component="worker", page_size=200), metadata=reader())
    (record,) = [r for r in reply.records if r.id == rid]
    assert record.summary == "release 1.2.3 deployed"
    assert record.caused_by == records_pb2.CAUSED_BY_AUTOMATION  # an AGENT producer's default
    assert record.actor_id == PRODUCER


async def test_rest_through_the_gateway(suite, tenants, ledger):
    app = create_app(backend_addresses(suite))
    correlation = uuid.uuid4().hex
    body = {"events": [{"eventId": f"evt-{correlation}-rest", "eventType": "AUDIT_EVENT_TYPE_LIMIT_CREATED",
                        "entityType": "AUDIT_ENTITY_TYPE_LIMIT", "entityId": "lim-9", "correlationId": correlation,
                        "occurredAt": "2026-11-01T13:00:00Z", "afterState": {"limit_cents": 100}}]}
    headers = {"Authorization": f"Bearer {token(TENANT, scopes=('evidence.write',), actor_type='SYSTEM')}"}
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://gateway") as http:
        created = await http.post("/api/v1/ingest/audit-events", json=body, headers=headers)
        retried = await http.post("/api/v1/ingest/audit-events", json=body, headers=headers)
        human = await http.post("/api/v1/ingest/audit-events", json=body, headers={
            "Authorization": f"Bearer {token(TENANT, scopes=('evidence.write',))}"})
        empty = await http.post("/api/v1/ingest/system-records", json={}, headers=headers)
    assert created.status_code == 200, created.text
    assert created.json()["results"][0]["status"] == "ITEM_STATUS_CREATED"
    assert retried.json()["results"][0]["status"] == "ITEM_STATUS_ALREADY_PRESENT"
    assert human.status_code == 403
    assert empty.status_code == 400
    (entry,) = await entries(ledger, correlation)
    assert entry.event_type == evidence_pb2.AUDIT_EVENT_TYPE_LIMIT_CREATED
