"""VerifyExport's result is evidence: recorded once as an ExportVerified audit entry, later
calls answered from it (saying so, when, by which verifier version), `recompute` verifies
afresh, a record by another verifier version is not reused, and concurrent calls for one
export share one verification (one re-render, one entry)."""
from __future__ import annotations

import asyncio
import json
import threading
from datetime import timedelta

import grpc
import psycopg
import pytest

from aos.evidence.v1 import bundle_pb2, evidence_pb2
from aos.export.v1 import export_service_pb2 as pb, export_service_pb2_grpc as pb_grpc
from aos.logs.v1 import audit_ledger_service_pb2 as audit_pb, audit_ledger_service_pb2_grpc as audit_grpc
from services.export import verification
from tests.e2e.support import BASE, auth, ts
from tests.logins import load_demo_scenarios

pytestmark = pytest.mark.db
TENANT = "tenant-verified"


@pytest.fixture(scope="module")
def verified_data(database_url):
    load_demo_scenarios(database_url, TENANT, base=BASE)


@pytest.fixture
async def stub(suite, verified_data):
    async with grpc.aio.insecure_channel(suite["export"]) as channel:
        yield pb_grpc.ExportServiceStub(channel)


@pytest.fixture
async def threaded(export_in_threads, verified_data):
    """The tests that monkeypatch the verification's work run it in threads of this process
    (tests/conftest.py's export_in_threads): a patch does not reach a heavy worker process."""
    async with grpc.aio.insecure_channel(export_in_threads) as channel:
        yield pb_grpc.ExportServiceStub(channel)


async def _export(stub, fmt: str = "ZIP") -> bundle_pb2.Export:
    return (await stub.CreateExport(pb.CreateExportRequest(
        audit_slice=pb.AuditSlice(created_before=ts(BASE + timedelta(hours=1))),
        bundle_type=bundle_pb2.BUNDLE_TYPE_EVIDENCE, format=bundle_pb2.ExportFormat.Value(f"EXPORT_FORMAT_{fmt}")),
        metadata=auth(TENANT))).export


def _entries(database_url: str, export_id: str) -> list[tuple]:
    with psycopg.connect(database_url) as conn:
        return conn.execute("SELECT id, seq, after_state FROM audit_ledger WHERE tenant_id = %s "
                            "AND event_type = 'ExportVerified' AND entity_id = %s ORDER BY seq",
                            (TENANT, export_id)).fetchall()


async def test_a_verification_is_recorded_once_and_answered_from_the_record(stub, suite, database_url):
    export = await _export(stub)
    first = await stub.VerifyExport(pb.VerifyExportRequest(export_id=export.export_id), metadata=auth(TENANT))
    assert first.valid and not first.recorded and first.verifier_version == verification.VERIFIER_VERSION
    [(entry_id, seq, state)] = _entries(database_url, export.export_id)
    assert (first.audit_entry_id, first.audit_entry_seq) == (entry_id, seq)
    assert state["valid"] is True and state["checksum"] == export.checksum
    assert [(c["name"], c["passed"], c["detail"]) for c in state["checks"]] == [
        (c.name, c.passed, c.detail) for c in first.checks]
    # The entry is in the ledger, as Logs lists it, under the contract's event type.
    async with grpc.aio.insecure_channel(suite["logs"]) as channel:
        listed = await audit_grpc.AuditLedgerServiceStub(channel).ListAuditEntries(audit_pb.ListAuditEntriesRequest(
            event_type=evidence_pb2.AUDIT_EVENT_TYPE_EXPORT_VERIFIED), metadata=auth(TENANT))
    assert entry_id in {e.id for e in listed.entries}

    again = await stub.VerifyExport(pb.VerifyExportRequest(export_id=export.export_id), metadata=auth(TENANT))
    assert again.recorded and (again.audit_entry_id, again.verified_at, again.valid) == (
        first.audit_entry_id, first.verified_at, first.valid)
    assert list(again.checks) == list(first.checks)
    assert len(_entries(database_url, export.export_id)) == 1          # nothing re-rendered, nothing appended

    fresh = await stub.VerifyExport(pb.VerifyExportRequest(export_id=export.export_id, recompute=True),
                                    metadata=auth(TENANT))
    assert fresh.valid and not fresh.recorded and fresh.audit_entry_seq > first.audit_entry_seq
    latest = await stub.VerifyExport(pb.VerifyExportRequest(export_id=export.export_id), metadata=auth(TENANT))
    assert latest.recorded and latest.audit_entry_id == fresh.audit_entry_id   # the newest record answers


async def test_a_record_by_another_verifier_version_is_not_reused(threaded, database_url, monkeypatch):
    stub = threaded
    export = await _export(stub, "JSON")
    older = await stub.VerifyExport(pb.VerifyExportRequest(export_id=export.export_id), metadata=auth(TENANT))
    monkeypatch.setattr(verification, "VERIFIER_VERSION", "aos-export-verifier/99")  # the service after an upgrade
    newer = await stub.VerifyExport(pb.VerifyExportRequest(export_id=export.export_id), metadata=auth(TENANT))
    assert not newer.recorded and newer.verifier_version == "aos-export-verifier/99"
    assert newer.audit_entry_id != older.audit_entry_id
    assert [json.dumps(s["verifier_version"]) for _, _, s in _entries(database_url, export.export_id)] == [
        '"aos-export-verifier/1"', '"aos-export-verifier/99"']


async def test_concurrent_verifications_of_one_export_share_one_re_render(threaded, database_url, monkeypatch):
    stub = threaded
    export = await _export(stub)
    renders = []
    rerender = verification.builder.rerender_checksum

    def counted(*args, **kwargs):
        renders.append(1)
        return rerender(*args, **kwargs)

    monkeypatch.setattr(verification.builder, "rerender_checksum", counted)
    answers = await asyncio.gather(*[
        stub.VerifyExport(pb.VerifyExportRequest(export_id=export.export_id), metadata=auth(TENANT))
        for _ in range(6)])
    assert all(a.valid for a in answers)
    assert len(renders) == 1
    assert len({a.audit_entry_id for a in answers}) == 1 and len(_entries(database_url, export.export_id)) == 1
    # Another export is verified on its own, not blocked behind the first one's flight.
    other = await _export(stub, "CSV")
    assert (await stub.VerifyExport(pb.VerifyExportRequest(export_id=other.export_id), metadata=auth(TENANT))).valid


async def test_an_audit_slice_is_read_again_on_the_helper_thread(threaded, monkeypatch):
    """VerifyExport's re-render of an audit slice reads the slice's rows ahead on the export's
    helper thread (services/export/dbthread.py), as CreateExport does: the database's time overlaps
    the render's. Every batch of rows is fetched there, none on the verifying thread."""
    stub = threaded
    export = await _export(stub, "JSON")
    readers: list[str] = []
    audit_slice = verification.builder.store.audit_slice

    def watched(*args, **kwargs):
        for batch in audit_slice(*args, **kwargs):
            readers.append(threading.current_thread().name)  # the thread that fetched this batch
            yield batch

    monkeypatch.setattr(verification.builder.store, "audit_slice", watched)
    answer = await stub.VerifyExport(pb.VerifyExportRequest(export_id=export.export_id), metadata=auth(TENANT))
    assert answer.valid and {c.name: c.passed for c in answer.checks}["reproducible"]
    assert readers and all(name.startswith("export-db") for name in readers), readers
