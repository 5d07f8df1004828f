"""EraseDataSubject end to end (docs/ERASURE.md): v2 evidence written through Ingest with a
data_subject_id, erased through gRPC and REST, then the chain, the held checkpoint and the
Merkle proofs (aics-tlog: an RFC 9162 verifier not written here) re-verified, the content
looked for in the database as the admin, a legal hold and another tenant tried."""
from __future__ import annotations

import uuid

import grpc
import httpx
import psycopg
import pytest

from aos.evidence.v1 import evidence_pb2
from aos.ingest.v1 import ingest_service_pb2 as pb, ingest_service_pb2_grpc as pb_grpc
from aos.logs.v1 import audit_ledger_service_pb2 as audit_pb, audit_ledger_service_pb2_grpc as audit_grpc
from aos_recording import tlog
from gateway import backend_addresses, create_app
from tests.db.sessions import ledger_report
from tests.e2e.erasure_support import OTHER, SECRET, TENANT, officer, producer, write_subject
from tests.e2e.support import BASE, error_info, token, ts, violations
from tests.logins import load_demo_scenarios

pytestmark = pytest.mark.db



@pytest.fixture(scope="module")
def tenants(database_url):
    return tuple(load_demo_scenarios(database_url, tenant, base=BASE, keep=lambda s: s.id != "SDSR-PLATFORM-001")
                 for tenant in (TENANT, OTHER))


@pytest.fixture()
async def ingest(suite, tenants):
    async with grpc.aio.insecure_channel(suite["ingest"]) as channel:
        yield pb_grpc.IngestServiceStub(channel)


@pytest.fixture()
async def ledger(suite):
    async with grpc.aio.insecure_channel(suite["logs"]) as channel:
        yield audit_grpc.AuditLedgerServiceStub(channel)




def count_secret(url: str, tenant: str, subject: str) -> int:
    """Rows holding the subject's content: in the append-only tables never (any subject), in the
    side table the subject's own."""
    with psycopg.connect(url) as conn:
        for t in ("audit_ledger", "system_records", "aos_trace_steps"):
            rows = conn.execute(f"SELECT x::text FROM {t} x WHERE x.tenant_id = %s AND strpos(x::text, %s) > 0",
                                (tenant, SECRET)).fetchall()
            assert not rows, (t, rows)
        return conn.execute("SELECT count(*) FROM evidence_payloads x WHERE x.tenant_id = %s AND subject_id = %s "
                            "AND strpos(x::text, %s) > 0", (tenant, subject, SECRET)).fetchone()[0]


def tree(url: str, tenant: str):
    with psycopg.connect(url) as conn:
        hashes = {i: bytes(h) for i, h in conn.execute(
            "SELECT hash_index, hash FROM tlog_hashes WHERE tenant_id = %s AND log = 'ledger'", (tenant,))}
        size = conn.execute("SELECT max(seq) FROM audit_ledger WHERE tenant_id = %s", (tenant,)).fetchone()[0]
    return size, (lambda indexes: [hashes[i] for i in indexes])


async def test_erasure_over_grpc_keeps_every_proof(ingest, database_url):
    from aics_tlog import tree as aics_tree

    subject = f"subj-{uuid.uuid4().hex[:8]}"
    await write_subject(ingest, subject)
    # the content is only in the erasable side table: 2 events × (reason, state) + the record's 2 fields
    assert count_secret(database_url, TENANT, subject) == 6
    n0, read = tree(database_url, TENANT)
    root0, proofs0 = tlog.tree_hash(n0, read), {i: tlog.prove_record(n0, i, read) for i in (n0 - 3, n0 - 2, n0 - 1)}
    before = ledger_report(database_url, TENANT)
    assert before.ok

    reply = await ingest.EraseDataSubject(pb.EraseDataSubjectRequest(subject_id=subject, reason="DSR-42"),
                                          metadata=officer())
    assert reply.payloads_erased == 6 and reply.executed_seq == reply.request_seq + 1 == n0 + 2
    assert count_secret(database_url, TENANT, subject) == 0
    after = ledger_report(database_url, TENANT)
    assert after.ok and after.checked == before.checked + 2
    n1, read = tree(database_url, TENANT)
    root1 = tlog.tree_hash(n1, read)
    assert aics_tree.verify_consistency(n0, n1, root0, root1, tlog.prove_tree(n1, n0, read))
    with psycopg.connect(database_url) as conn:
        leaves = {seq - 1: bytes(h) for seq, h in conn.execute(
            "SELECT seq, content_hash FROM audit_ledger WHERE tenant_id = %s AND seq > %s", (TENANT, n0 - 3))}
    for i, proof in proofs0.items():
        assert aics_tree.verify_leaf_inclusion(leaves[i], i, n0, proof, root0)


async def test_the_erasure_entries_name_the_request_and_its_execution(ingest, ledger):
    subject = f"subj-{uuid.uuid4().hex[:8]}"
    await write_subject(ingest, subject)
    reply = await ingest.EraseDataSubject(pb.EraseDataSubjectRequest(subject_id=subject, reason="DSR-43"),
                                          metadata=officer())
    read = (("authorization", f"Bearer {token(TENANT, scopes=('logs.read',))}"),)
    listed = await ledger.ListAuditEntries(audit_pb.ListAuditEntriesRequest(correlation_id=reply.erasure_id),
                                           metadata=read)
    kinds = sorted((e.event_type, e.entity_id, e.actor_id) for e in listed.entries)
    assert kinds == [(evidence_pb2.AUDIT_EVENT_TYPE_SUBJECT_ERASURE_REQUESTED, subject, "user-e2e"),
                     (evidence_pb2.AUDIT_EVENT_TYPE_SUBJECT_ERASED, subject, "user-e2e")]


async def test_erasure_needs_its_scope_and_valid_input(ingest):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await ingest.EraseDataSubject(pb.EraseDataSubjectRequest(subject_id="s", reason="r"),
                                      metadata=officer(scopes=("evidence.write", "logs.read")))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await ingest.EraseDataSubject(pb.EraseDataSubjectRequest(subject_id="", reason="x" * 5000),
                                      metadata=officer())
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(violations(err.value)) == {"subject_id", "reason"}


async def test_a_v2_event_with_a_claimed_hash_is_invalid(ingest):
    e = pb.AuditEvent(event_id=f"evt-{uuid.uuid4().hex}", event_type=evidence_pb2.AUDIT_EVENT_TYPE_API_KEY_CREATED,
                      entity_type=evidence_pb2.AUDIT_ENTITY_TYPE_API_KEY, entity_id="k",
                      occurred_at=ts(BASE), data_subject_id="subj", content_hash="0" * 64)
    reply = await ingest.AppendAuditEvents(pb.AppendAuditEventsRequest(events=[e]), metadata=producer())
    assert reply.results[0].status == pb.ITEM_STATUS_INVALID
    assert [v.field for v in reply.results[0].violations] == ["content_hash"]


async def test_another_tenant_cannot_erase_yours(ingest, database_url):
    subject = f"subj-{uuid.uuid4().hex[:8]}"
    await write_subject(ingest, subject, TENANT)
    reply = await ingest.EraseDataSubject(pb.EraseDataSubjectRequest(subject_id=subject, reason="not mine"),
                                          metadata=officer(OTHER))
    assert reply.payloads_erased == 0
    with psycopg.connect(database_url) as conn:
        left = conn.execute("SELECT count(*) FROM evidence_payloads WHERE tenant_id = %s AND subject_id = %s",
                            (TENANT, subject)).fetchone()[0]
    assert left == 6


async def test_a_legal_hold_refuses_with_failed_precondition_and_records_the_request(ingest, database_url):
    subject = f"subj-{uuid.uuid4().hex[:8]}"
    await write_subject(ingest, subject)
    hold = f"hold-{uuid.uuid4().hex[:6]}"
    with psycopg.connect(database_url) as conn:
        conn.execute("INSERT INTO legal_holds (tenant_id, id, scope, target_id, reason, placed_by_type, "
                     "placed_by_id, placed_at) VALUES (%s, %s, 'SUBJECT', %s, 'matter', 'HUMAN', 'counsel', now())",
                     (TENANT, hold, subject))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await ingest.EraseDataSubject(pb.EraseDataSubjectRequest(subject_id=subject, reason="DSR-44"),
                                      metadata=officer())
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    info = error_info(err.value)
    assert info.reason == "LEGAL_HOLD" and info.metadata["legal_hold_id"] == hold
    with psycopg.connect(database_url) as conn:
        refused = conn.execute("SELECT after_state FROM audit_ledger WHERE tenant_id = %s AND entity_id = %s "
                               "AND event_type = 'SubjectErasureRequested'", (TENANT, subject)).fetchall()
        left = conn.execute("SELECT count(*) FROM evidence_payloads WHERE tenant_id = %s AND subject_id = %s",
                            (TENANT, subject)).fetchone()[0]
    assert [r[0]["status"] for r in refused] == ["REFUSED_LEGAL_HOLD"] and left == 6
    assert info.metadata["request_seq"]


async def test_rest_through_the_gateway(suite, tenants, ingest, database_url):
    subject = f"subj-{uuid.uuid4().hex[:8]}"
    await write_subject(ingest, subject)
    app = create_app(backend_addresses(suite))
    headers = {"Authorization": f"Bearer {token(TENANT, scopes=('evidence.erase',))}"}
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://gateway") as http:
        erased = await http.post("/api/v1/ingest/erasures", json={"subjectId": subject, "reason": "DSR-45"},
                                 headers=headers)
        again = await http.post("/api/v1/ingest/erasures", json={"subjectId": subject, "reason": "DSR-45"},
                                headers=headers)
        bad = await http.post("/api/v1/ingest/erasures", json={"reason": "DSR-45"}, headers=headers)
        denied = await http.post("/api/v1/ingest/erasures", json={"subjectId": subject, "reason": "x"}, headers={
            "Authorization": f"Bearer {token(TENANT, scopes=('logs.read',))}"})
    assert erased.status_code == 200, erased.text
    assert int(erased.json()["payloads_erased"]) == 6
    assert again.status_code == 200 and int(again.json().get("payloads_erased", 0)) == 0  # nothing left; recorded
    assert bad.status_code == 400 and denied.status_code == 403
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM evidence_payloads WHERE tenant_id = %s AND subject_id = %s",
                            (TENANT, subject)).fetchone()[0] == 0


async def _slice_export(suite, correlation: str) -> tuple[bytes, str, list]:
    """An AUDIT_SLICE JSON export of the correlation's entries: (artifact, envelope, the signing keys)."""
    from aos.evidence.v1 import bundle_pb2
    from aos.export.v1 import export_service_pb2 as export_pb, export_service_pb2_grpc as export_grpc
    from aos_recording import dsse

    meta = (("authorization", f"Bearer {token(TENANT, scopes=('exports.read', 'exports.create'))}"),)
    async with grpc.aio.insecure_channel(suite["export"]) as channel:
        stub = export_grpc.ExportServiceStub(channel)
        created = (await stub.CreateExport(export_pb.CreateExportRequest(
            bundle_type=bundle_pb2.BUNDLE_TYPE_EVIDENCE, format=bundle_pb2.EXPORT_FORMAT_JSON,
            audit_slice=export_pb.AuditSlice(correlation_id=correlation)), metadata=meta)).export
        data = b"".join([m.data async for m in stub.DownloadExport(
            export_pb.DownloadExportRequest(export_id=created.export_id), metadata=meta)])
        keys = [k for k in (await stub.ListSigningKeys(export_pb.ListSigningKeysRequest(), metadata=meta)).keys
                if k.key_id == created.signing_key_id]
    return data, created.dsse_envelope, [dsse.PublicKey.from_raw(k.public_key) for k in keys] + [keys]


async def test_an_export_made_before_the_erasure_still_verifies_and_one_made_after_holds_no_content(
        suite, ingest, database_url):
    import json

    from securesystemslib.dsse import Envelope
    from securesystemslib.signer import SSlibKey

    from aos_recording import hashing, verify_export

    subject = f"subj-{uuid.uuid4().hex[:8]}"
    correlation = await write_subject(ingest, subject)
    *before_export, = await _slice_export(suite, correlation)
    data0, envelope0, (key0, raw0) = before_export[0], before_export[1], before_export[2]
    records0 = json.loads(data0)["records"]
    v2 = [r for r in records0 if r.get("hash_version") == 2]
    assert len(v2) == 2 and all(r["after_state"] == {"owner": SECRET} and set(r["salts"]) ==
                                {"action_reason", "after_state"} for r in v2)
    assert all(hashing.openings_match(r, hashing.LEDGER_PAYLOAD_FIELDS) for r in v2)
    assert verify_export.verify(data0, envelope0, [key0]).ok

    await ingest.EraseDataSubject(pb.EraseDataSubjectRequest(subject_id=subject, reason="DSR-46"),
                                  metadata=officer())

    # the earlier export: still VALID offline, its records' hashes the database's own
    assert verify_export.verify(data0, envelope0, [key0]).ok
    sslib_key = SSlibKey(raw0[0].key_id, "ed25519", "ed25519", {"public": raw0[0].public_key.hex()})
    assert raw0[0].key_id in Envelope.from_dict(json.loads(envelope0)).verify([sslib_key], 1)
    with psycopg.connect(database_url) as conn:
        stored = {i: bytes(h).hex() for i, h in conn.execute(
            "SELECT id, content_hash FROM audit_ledger WHERE tenant_id = %s AND correlation_id = %s",
            (TENANT, correlation))}
    assert {r["id"]: r["content_hash"] for r in records0} == stored
    # an export made after: the commitments without the content, and it verifies
    data1, envelope1, (key1, _) = await _slice_export(suite, correlation)
    assert SECRET.encode() not in data1
    records1 = {r["id"]: r for r in json.loads(data1)["records"]}
    for r in v2:
        after = records1[r["id"]]
        assert after["commitments"] == r["commitments"] and after["content_hash"] == r["content_hash"]
        assert after["erased"] == ["action_reason", "after_state"] and after["after_state"] is None
        assert after["salts"] == {}
    assert verify_export.verify(data1, envelope1, [key1]).ok


async def test_reads_show_the_content_then_the_commitment_marked_erased(ingest, ledger):
    from aos.logs.v1 import records_pb2 as logs_records

    subject = f"subj-{uuid.uuid4().hex[:8]}"
    correlation = await write_subject(ingest, subject)
    read = (("authorization", f"Bearer {token(TENANT, scopes=('logs.read',))}"),)
    entry_id = f"evt-{correlation}-0"

    async def entry_now():
        got = await ledger.GetAuditEntry(audit_pb.GetAuditEntryRequest(entry_id=entry_id), metadata=read)
        listed = await ledger.ListAuditEntries(audit_pb.ListAuditEntriesRequest(correlation_id=correlation),
                                               metadata=read)
        (item,) = [e for e in listed.entries if e.id == entry_id]
        assert item == got.entry
        return got

    before = await entry_now()
    assert before.entry.hash_version == 2 and before.entry.action_reason == f"key for {SECRET}"
    assert dict(before.after_state) == {"owner": SECRET}
    assert [(p.field, p.state) for p in before.entry.payloads] == [
        ("action_reason", logs_records.PAYLOAD_STATE_PRESENT), ("after_state", logs_records.PAYLOAD_STATE_PRESENT)]
    v1 = await ledger.GetAuditEntry(audit_pb.GetAuditEntryRequest(entry_id=f"evt-{correlation}-2"), metadata=read)
    assert v1.entry.hash_version == 1 and not v1.entry.payloads and dict(v1.after_state) == {"owner": "service"}

    reply = await ingest.EraseDataSubject(pb.EraseDataSubjectRequest(subject_id=subject, reason="DSR-47"),
                                          metadata=officer())
    after = await entry_now()
    assert not after.entry.HasField("action_reason") and not after.HasField("after_state")
    assert [(p.field, p.commitment, p.state, p.erasure_id) for p in after.entry.payloads] == [
        (p.field, p.commitment, logs_records.PAYLOAD_STATE_ERASED, reply.erasure_id) for p in before.entry.payloads]
    assert after.entry.content_hash == before.entry.content_hash
    v1_after = await ledger.GetAuditEntry(audit_pb.GetAuditEntryRequest(entry_id=f"evt-{correlation}-2"),
                                          metadata=read)
    assert v1_after == v1
