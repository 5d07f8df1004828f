"""Redaction over the demo scenarios' real evidence (issue #17 part 6): the detectors
(entropy included) leave our own hashes, ids, timestamps and sequence numbers alone,
so every hash in an export is the database's and the offline verifier still passes.

The demo scenarios are loaded into a tenant of this module's own, as the demo loader
does for tenant-demo: other tests rely on tenant-demo holding no export."""
from __future__ import annotations

import json

import grpc
import psycopg
import pytest

from aos.evidence.v1 import bundle_pb2
from aos.export.v1 import export_service_pb2 as pb, export_service_pb2_grpc as pb_grpc
from aos_recording import dsse, scenarios, verify_export
from aos_recording.writers import Producer
from services.export import redaction
from tests.e2e.support import BASE, auth
from tests.logins import login_url

pytestmark = pytest.mark.db
DEMO = "tenant-redaction"
RUN = f"{DEMO}.run-support-103"
HASH_FIELDS = ("content_hash", "chain_hash", "prev_hash")


@pytest.fixture(scope="module")
def demo_data(database_url):
    producer = Producer(login_url(database_url, "producer"))
    scenarios.load_demo(producer, {DEMO: "Redaction Demo"}, base=BASE)   # what make run loads, for this tenant
    producer.close()


@pytest.fixture
async def stub(suite, demo_data):
    async with grpc.aio.insecure_channel(suite["export"]) as channel:
        yield pb_grpc.ExportServiceStub(channel)


@pytest.fixture
async def threaded(export_in_threads, demo_data):
    """For the test that monkeypatches the redaction profile: the verification's re-render in
    threads of this process (tests/conftest.py's export_in_threads), which the patch reaches."""
    async with grpc.aio.insecure_channel(export_in_threads) as channel:
        yield pb_grpc.ExportServiceStub(channel)


async def _export(stub, **subject) -> tuple[bundle_pb2.Export, bytes]:
    created = (await stub.CreateExport(pb.CreateExportRequest(
        bundle_type=bundle_pb2.BUNDLE_TYPE_EVIDENCE, format=bundle_pb2.EXPORT_FORMAT_JSON, **subject),
        metadata=auth(DEMO))).export
    data = b"".join([m.data async for m in stub.DownloadExport(pb.DownloadExportRequest(export_id=created.export_id),
                                                                metadata=auth(DEMO))])
    return created, data


def _hashes(value, found: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Every (field, value) of a hash field anywhere in the bundle."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key in HASH_FIELDS and isinstance(item, str):
                found.append((key, item))
            else:
                _hashes(item, found)
    elif isinstance(value, list):
        for item in value:
            _hashes(item, found)
    return found


def _database_hashes(database_url: str) -> set[str]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT encode(content_hash, 'hex') FROM audit_ledger WHERE tenant_id = %(t)s "
            "UNION SELECT encode(chain_hash, 'hex') FROM audit_ledger WHERE tenant_id = %(t)s "
            "UNION SELECT encode(prev_hash, 'hex') FROM audit_ledger WHERE tenant_id = %(t)s "
            "UNION SELECT encode(content_hash, 'hex') FROM aos_trace_steps WHERE tenant_id = %(t)s "
            "UNION SELECT encode(content_hash, 'hex') FROM aos_traces WHERE tenant_id = %(t)s "
            "UNION SELECT encode(content_hash, 'hex') FROM llm_run_records WHERE tenant_id = %(t)s "
            "UNION SELECT encode(content_hash, 'hex') FROM system_records WHERE tenant_id = %(t)s "
            "UNION SELECT encode(content_hash, 'hex') FROM platform_records",  # system-wide, read by every tenant
            {"t": DEMO}).fetchall()
    return {row[0] for row in rows if row[0]}


async def test_demo_exports_keep_every_hash_and_verify_offline(stub, database_url, tmp_path):
    # A first export puts our own 64-hex checksum and an export id into the ledger, in
    # an entry's after_state: a field redaction scans.
    first, _ = await _export(stub, run_id=RUN)
    keys = await stub.ListSigningKeys(pb.ListSigningKeysRequest(), metadata=auth(DEMO))
    (tmp_path / "keys.json").write_text(json.dumps(dsse.keys_document(
        dsse.PublicKey.from_raw(k.public_key) for k in keys.keys)))
    kinds: dict[str, int] = {}
    for subject in ({"run_id": RUN}, {"audit_slice": pb.AuditSlice()}, {"system_slice": pb.SystemSlice()}):
        created, data = await _export(stub, **subject)
        bundle = json.loads(data)
        hashes = _hashes(bundle, [])
        assert hashes, subject
        assert {value for _, value in hashes} <= _database_hashes(database_url), subject  # each one the database's, none rewritten
        for kind in created.redaction.counts:
            kinds[kind.kind] = kinds.get(kind.kind, 0) + kind.count
        verdict = await stub.VerifyExport(pb.VerifyExportRequest(export_id=created.export_id), metadata=auth(DEMO))
        assert verdict.valid, [(c.name, c.detail) for c in verdict.checks if not c.passed]
        (tmp_path / "artifact.json").write_bytes(data)
        (tmp_path / "export.dsse.json").write_text(created.dsse_envelope)
        # Offline, with the signing key pinned as an auditor would (its id obtained out of band).
        assert verify_export.main([str(tmp_path / "artifact.json"), "--envelope", str(tmp_path / "export.dsse.json"),
                                   "--keys", str(tmp_path / "keys.json"), "--key", created.signing_key_id]) == 0, subject
        if "audit_slice" in subject:
            entries = [e for e in bundle["records"] if e.get("event_type") == "EvidenceExported"
                       and e["entity_id"] == first.export_id]
            assert len(entries) == 1
            # Our checksum, export id and run id survive, and the entry stays verifiable.
            assert entries[0]["after_state"]["checksum"] == first.checksum
            assert entries[0]["after_state"]["export_id"] == first.export_id
            assert entries[0]["redacted"] is False
            assert all(not e["redacted"] for e in bundle["records"] if "@" not in json.dumps(e))
    # The demo holds one kind of personal data (an email address) and no secrets: any
    # other kind is a detector firing on evidence.
    assert set(kinds) <= {"email"}, kinds


async def test_an_export_redacted_under_another_profile_is_named_not_blamed_on_its_records(threaded, monkeypatch):
    stub = threaded
    # After an upgrade changes the redaction profile, VerifyExport cannot re-render an
    # older export byte for byte: it says so, instead of "the source records changed".
    created, _ = await _export(stub, run_id=RUN)
    monkeypatch.setattr(redaction, "PROFILE", "aos-default-v99")   # the service after an upgrade
    verdict = await stub.VerifyExport(pb.VerifyExportRequest(export_id=created.export_id), metadata=auth(DEMO))
    checks = {c.name: c for c in verdict.checks}
    assert not verdict.valid and not checks["reproducible"].passed
    assert "aos-default-v2" in checks["reproducible"].detail and "aos-default-v99" in checks["reproducible"].detail
    assert "source records changed" not in checks["reproducible"].detail
    assert all(c.passed for name, c in checks.items() if name != "reproducible")
