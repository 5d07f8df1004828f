"""An erasure reaches exports that recorded nothing of whose payloads they carry (migration
0030_untracked_exports, docs/ERASURE.md §3c): exports rendered before 0026 have no
export_payload_subjects and no export_subjects_tracked rows. Such exports are made here by the
real Export service with its recording step left out (``store.record_payload_subjects``, the
one call that writes both: what the Export service did before 0026), then the subject is erased:

- the untracked export made after the subject's payloads were stored loses its artifact under
  an UNTRACKED tombstone (DownloadExport CONTENT_ERASED; no byte of it left; the content in no
  artifact of the tenant), and EraseDataSubject names it;
- an untracked export made before any of them (of another subject), and a tracked export of
  another subject, keep their artifacts and download as before;
- the untracked export still verifies (VerifyExport VALID: manifest, signature, chain, records);
- the reads say on which basis each erasure took an export's artifact: GetExport, ListExports and
  VerifyExport (gRPC and REST) carry `erasures` with ERASURE_BASIS_UNTRACKED for the untracked
  export (its count an upper bound: "up to N payloads") and RECORDED for the tracked one once its
  own subject is erased; DownloadExport's CONTENT_ERASED names the bases."""
from __future__ import annotations

import uuid

import grpc
import httpx
import psycopg
import pytest

from aos.evidence.v1 import bundle_pb2
from aos.export.v1 import export_service_pb2 as export_pb, export_service_pb2_grpc as export_grpc
from aos.ingest.v1 import ingest_service_pb2 as pb, ingest_service_pb2_grpc as pb_grpc
from gateway import backend_addresses, create_app
from services.export import store as export_store
from tests.e2e.erasure_support import SECRET, officer, write_subject
from tests.e2e.support import BASE, error_info, token
from tests.logins import load_demo_scenarios

pytestmark = pytest.mark.db

TENANT = "tenant-erase-untracked"


@pytest.fixture(scope="module")
def tenant(database_url):
    return load_demo_scenarios(database_url, TENANT, base=BASE, keep=lambda s: s.id != "SDSR-PLATFORM-001")


@pytest.fixture()
async def stubs(suite, export_in_threads, tenant):
    # The Export service whose heavy work runs in threads of this process (tests/conftest.py's
    # export_in_threads): the recording step this test leaves out (a monkeypatch) is in that work.
    async with grpc.aio.insecure_channel(suite["ingest"]) as ingest, \
            grpc.aio.insecure_channel(export_in_threads) as export:
        yield pb_grpc.IngestServiceStub(ingest), export_grpc.ExportServiceStub(export)


META = (("authorization", f"Bearer {token(TENANT, scopes=('exports.read', 'exports.create'))}"),)


async def slice_export(export, correlation: str) -> tuple[str, bytes]:
    """An AUDIT_SLICE JSON export of the correlation's entries: (its id, its artifact)."""
    created = (await export.CreateExport(export_pb.CreateExportRequest(
        bundle_type=bundle_pb2.BUNDLE_TYPE_EVIDENCE, format=bundle_pb2.EXPORT_FORMAT_JSON,
        audit_slice=export_pb.AuditSlice(correlation_id=correlation)), metadata=META)).export
    return created.export_id, await download(export, created.export_id)


async def download(export, export_id: str) -> bytes:
    return b"".join([m.data async for m in export.DownloadExport(export_pb.DownloadExportRequest(export_id=export_id),
                                                                  metadata=META)])


def subject_of(url: str, export_id: str) -> set[str]:
    """The subjects whose payloads a tracked export recorded carrying."""
    with psycopg.connect(url) as conn:
        return {s for (s,) in conn.execute("SELECT subject_id FROM export_payload_subjects "
                                           "WHERE tenant_id = %s AND export_id = %s", (TENANT, export_id))}


def tracked_rows(url: str, export_id: str) -> tuple[int, int]:
    with psycopg.connect(url) as conn:
        return tuple(conn.execute(  # type: ignore[return-value]
            "SELECT (SELECT count(*) FROM export_subjects_tracked WHERE tenant_id = %s AND export_id = %s), "
            "(SELECT count(*) FROM export_payload_subjects WHERE tenant_id = %s AND export_id = %s)",
            (TENANT, export_id, TENANT, export_id)).fetchone())


async def test_an_untracked_export_of_the_subject_loses_its_artifact(stubs, suite, database_url, monkeypatch):
    ingest, export = stubs
    subject = f"subj-{uuid.uuid4().hex[:8]}"
    with monkeypatch.context() as pre_0026:  # the Export service as it was before 0026
        pre_0026.setattr(export_store, "record_payload_subjects", lambda *args, **kwargs: None)
        # Made before any of the subject's payloads was stored (another subject's): cannot carry them.
        early_id, early = await slice_export(
            export, await write_subject(ingest, f"subj-{uuid.uuid4().hex[:8]}", tenant=TENANT))
        correlation = await write_subject(ingest, subject, tenant=TENANT)
        untracked_id, untracked = await slice_export(export, correlation)
    assert SECRET.encode() in untracked
    assert tracked_rows(database_url, untracked_id) == (0, 0) == tracked_rows(database_url, early_id)
    # Made now, by the service as it is: tracked, carrying another subject's payloads only.
    other = await write_subject(ingest, f"subj-{uuid.uuid4().hex[:8]}", tenant=TENANT)
    tracked_id, tracked = await slice_export(export, other)
    assert tracked_rows(database_url, tracked_id) == (1, 1)

    reply = await ingest.EraseDataSubject(pb.EraseDataSubjectRequest(subject_id=subject, reason="DSR-0030"),
                                          metadata=officer(TENANT))
    assert reply.payloads_erased > 0
    assert list(reply.exports_erased) == [untracked_id]

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await download(export, untracked_id)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_info(err.value).reason == "CONTENT_ERASED"
    with psycopg.connect(database_url) as conn:
        tombstones = conn.execute(
            "SELECT export_id, subject_id, erasure_id, basis, payloads_erased, artifact_bytes "
            "FROM erased_export_artifacts WHERE tenant_id = %s AND subject_id = %s", (TENANT, subject)).fetchall()
        left = conn.execute("SELECT count(*) FROM log_export_artifacts WHERE tenant_id = %s AND export_id = %s",
                            (TENANT, untracked_id)).fetchone()[0]
        # (write_subject writes the same SECRET for every subject: the other two exports hold theirs.)
        holding = {e for (e,) in conn.execute("SELECT DISTINCT export_id FROM log_export_artifacts "
                                              "WHERE tenant_id = %s AND position(%s IN data) > 0",
                                              (TENANT, SECRET.encode()))}
    # Every deleted payload was stored before the export: all of them counted, an upper bound.
    assert tombstones == [(untracked_id, subject, reply.erasure_id, "UNTRACKED", reply.payloads_erased,
                           len(untracked))]
    assert left == 0 and holding == {early_id, tracked_id}
    # The others keep their bytes.
    assert await download(export, early_id) == early
    assert await download(export, tracked_id) == tracked
    # The untracked export's row, manifest, signature and chain stay: it verifies.
    verified = await export.VerifyExport(export_pb.VerifyExportRequest(export_id=untracked_id), metadata=META)
    assert verified.valid and verified.payloads_erased == reply.payloads_erased
    assert list(verified.erasure_ids) == [reply.erasure_id]

    # The reads say on which basis: UNTRACKED, its count an upper bound (docs/ERASURE.md §3c).
    (untracked_basis,) = verified.erasures
    assert (untracked_basis.erasure_id, untracked_basis.basis, untracked_basis.payloads_erased) == (
        reply.erasure_id, bundle_pb2.ERASURE_BASIS_UNTRACKED, reply.payloads_erased)
    artifact = next(c for c in verified.checks if c.name == "artifact")
    assert f"up to {reply.payloads_erased} payloads" in artifact.detail and "basis UNTRACKED" in artifact.detail
    shown = (await export.GetExport(export_pb.GetExportRequest(export_id=untracked_id), metadata=META)).export
    assert list(shown.erasures) == [untracked_basis]
    listed = {e.export_id: e for e in (await export.ListExports(export_pb.ListExportsRequest(page_size=1000),
                                                                metadata=META)).exports}
    assert list(listed[untracked_id].erasures) == [untracked_basis]
    assert not listed[early_id].erasures and not listed[tracked_id].erasures
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await download(export, untracked_id)
    assert error_info(err.value).metadata["erasure_bases"] == "UNTRACKED"
    assert f"(up to {reply.payloads_erased} payloads)" in err.value.details()
    # The tracked export, once its own subject is erased: RECORDED, exact.
    other_subject = next(iter(subject_of(database_url, tracked_id)))
    recorded = await ingest.EraseDataSubject(pb.EraseDataSubjectRequest(subject_id=other_subject, reason="DSR-0030c"),
                                             metadata=officer(TENANT))
    assert list(recorded.exports_erased) == [tracked_id]
    shown = (await export.GetExport(export_pb.GetExportRequest(export_id=tracked_id), metadata=META)).export
    (recorded_basis,) = shown.erasures
    assert (recorded_basis.erasure_id, recorded_basis.basis) == (recorded.erasure_id, bundle_pb2.ERASURE_BASIS_RECORDED)
    assert recorded_basis.payloads_erased == shown.payloads_erased > 0
    # Over REST (the gateway follows the proto): the same, as JSON enum names.
    app = create_app(backend_addresses(suite))
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://gateway") as http:
        headers = {"Authorization": META[0][1]}
        one = await http.get(f"/api/v1/logs/exports/{untracked_id}", headers=headers)
        many = await http.get("/api/v1/logs/exports", params={"page_size": 1000}, headers=headers)
        checked = await http.post(f"/api/v1/logs/exports/{untracked_id}:verify", json={}, headers=headers)
        gone = await http.get(f"/api/v1/logs/exports/{untracked_id}:download", headers=headers)
    assert one.status_code == many.status_code == checked.status_code == 200, (one.text, many.text, checked.text)
    by_id = {e["export_id"]: e for e in many.json()["exports"]}
    for doc in (one.json()["export"], by_id[untracked_id], checked.json()):
        assert [(e["erasure_id"], e["basis"], e["payloads_erased"]) for e in doc["erasures"]] == [
            (reply.erasure_id, "ERASURE_BASIS_UNTRACKED", reply.payloads_erased)]
    assert [e["basis"] for e in by_id[tracked_id]["erasures"]] == ["ERASURE_BASIS_RECORDED"]
    assert not by_id[early_id]["erasures"] and not by_id[early_id]["content_erased"]
    assert gone.status_code == 400 and "UNTRACKED" in gone.text, gone.text
    # A second erasure of the same subject takes nothing more (its tombstone is there).
    again = await ingest.EraseDataSubject(pb.EraseDataSubjectRequest(subject_id=subject, reason="DSR-0030b"),
                                          metadata=officer(TENANT))
    assert again.payloads_erased == 0 and not again.exports_erased
