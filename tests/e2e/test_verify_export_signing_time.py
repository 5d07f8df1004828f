"""VerifyExport on a stored manifest that states no usable signing time: a failed
'signature' check saying so, never INTERNAL (the service's KeyError/ValueError once
escaped as a traceback)."""
from __future__ import annotations

import grpc
import psycopg
import pytest

from aos.evidence.v1 import bundle_pb2
from aos.export.v1 import export_service_pb2 as pb, export_service_pb2_grpc as pb_grpc
from tests.db.sessions import append_entries
from tests.e2e.support import BASE, auth

pytestmark = pytest.mark.db
TENANT = "tenant-signtime"   # a tenant of its own: other tests count tenant-demo's exports


@pytest.fixture
async def stub(suite, database_url):
    append_entries(database_url, TENANT, [BASE], 3)   # a few ledger entries to export
    async with grpc.aio.insecure_channel(suite["export"]) as channel:
        yield pb_grpc.ExportServiceStub(channel)


# What the owner sets the stored manifest to (SQL over the column ``manifest``).
EDITS = {
    "neither signed_at nor created_at": "manifest - 'signed_at' - 'created_at'",
    "not RFC 3339": "jsonb_set(manifest, '{signed_at}', '\"yesterday\"')",
    "not a string": "jsonb_set(manifest, '{signed_at}', '1764000000')",
    "no time zone": "jsonb_set(manifest, '{signed_at}', '\"2026-11-01T12:00:00\"')",
    "null": "jsonb_set(manifest, '{signed_at}', 'null')",
}


@pytest.mark.parametrize("edit", EDITS.values(), ids=EDITS.keys())
async def test_a_manifest_without_a_usable_signing_time_fails_the_signature_check(stub, database_url, edit):
    created = (await stub.CreateExport(pb.CreateExportRequest(
        bundle_type=bundle_pb2.BUNDLE_TYPE_EVIDENCE, format=bundle_pb2.EXPORT_FORMAT_JSON,
        audit_slice=pb.AuditSlice()), metadata=auth(TENANT))).export
    before = await stub.VerifyExport(pb.VerifyExportRequest(export_id=created.export_id), metadata=auth(TENANT))
    assert {c.name: c.passed for c in before.checks}["signature"]
    # The owner edits the stored row past the append-only trigger, in one transaction that
    # puts the trigger back before it commits: as a faulty migration or a hand edit could.
    with psycopg.connect(database_url) as conn:
        conn.execute("ALTER TABLE log_exports DISABLE TRIGGER log_exports_append_only")
        conn.execute(f"UPDATE log_exports SET manifest = {edit} WHERE id = %s", (created.export_id,))
        conn.execute("ALTER TABLE log_exports ENABLE ALWAYS TRIGGER log_exports_append_only")
    # Answered from the verification recorded before the edit, saying so; recompute sees the edit.
    recorded = await stub.VerifyExport(pb.VerifyExportRequest(export_id=created.export_id), metadata=auth(TENANT))
    assert recorded.recorded and (recorded.audit_entry_id, recorded.valid) == (before.audit_entry_id, before.valid)
    verdict = await stub.VerifyExport(pb.VerifyExportRequest(export_id=created.export_id, recompute=True),
                                      metadata=auth(TENANT))
    assert not verdict.recorded and verdict.audit_entry_seq > before.audit_entry_seq
    signature = {c.name: c for c in verdict.checks}["signature"]
    assert not verdict.valid and not signature.passed
    assert "no usable signing time" in signature.detail and "signed_at" in signature.detail
