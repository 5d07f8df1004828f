"""ExportService end to end: every scope × bundle type × format through a real server,
checked byte for byte, offline, and against tampering."""
from __future__ import annotations

import csv
import io
import json
import zipfile
from datetime import timedelta

import grpc
import pytest

from aos.evidence.v1 import bundle_pb2, evidence_pb2, records_pb2, sources_pb2
from aos.export.v1 import export_service_pb2 as pb, export_service_pb2_grpc as pb_grpc
from aos_recording import dsse, hashing, scenarios, verify_export
from aos_recording.writers import Producer
from tests.e2e.support import BASE, auth, ts, violations

pytestmark = pytest.mark.db
TENANT = "tenant-ex"
RUN = f"{TENANT}.run-support-103"           # a trace with a violation at step 3
INCIDENT = f"{TENANT}.inc-pii-7"           # an incident of a run, with a proposal
BUNDLES = ("EVIDENCE", "SOC2", "EXECUTIVE")
FORMATS = ("JSON", "CSV", "PDF", "ZIP")
SCOPES = ("run", "incident", "audit", "system")


@pytest.fixture(scope="module")
def ex_data(database_url):
    producer = Producer(database_url)
    for scenario in scenarios.demo_scenarios():
        scenarios.load(producer, scenario, TENANT, base=BASE)
    producer.close()


@pytest.fixture
async def stub(suite, ex_data):
    async with grpc.aio.insecure_channel(suite["export"]) as channel:
        yield pb_grpc.ExportServiceStub(channel)


def request(scope: str, bundle: str, fmt: str, **kw) -> pb.CreateExportRequest:
    subject = {"run": {"run_id": RUN}, "incident": {"incident_id": INCIDENT},
               # Entries up to the demo's base time: the exports' own EvidenceExported entries stay out.
               "audit": {"audit_slice": pb.AuditSlice(created_before=ts(BASE + timedelta(hours=1)))},
               "system": {"system_slice": pb.SystemSlice(created_before=ts(BASE + timedelta(hours=1)))}}[scope]
    return pb.CreateExportRequest(bundle_type=bundle_pb2.BundleType.Value(f"BUNDLE_TYPE_{bundle}"),
                                  format=bundle_pb2.ExportFormat.Value(f"EXPORT_FORMAT_{fmt}"), **subject, **kw)


async def download(stub, export_id: str, tenant: str = TENANT) -> tuple[bytes, list[pb.DownloadExportResponse]]:
    messages = [m async for m in stub.DownloadExport(pb.DownloadExportRequest(export_id=export_id),
                                                      metadata=auth(tenant))]
    return b"".join(m.data for m in messages), messages


async def keys_file(stub, tmp_path):
    keys = await stub.ListSigningKeys(pb.ListSigningKeysRequest(), metadata=auth(TENANT))
    doc = dsse.keys_document(dsse.PublicKey.from_raw(k.public_key) for k in keys.keys)
    path = tmp_path / "keys.json"
    path.write_text(json.dumps(doc))
    return path


CASES = [(s, b, f) for s in SCOPES for b in BUNDLES for f in FORMATS if not (f == "CSV" and s in ("run", "incident"))]


@pytest.mark.parametrize("scope, bundle, fmt", CASES)
async def test_every_scope_bundle_and_format(stub, tmp_path, scope, bundle, fmt):
    created = (await stub.CreateExport(request(scope, bundle, fmt), metadata=auth(TENANT))).export
    assert (bundle_pb2.BundleType.Name(created.bundle_type), bundle_pb2.ExportFormat.Name(created.format)) == (
        f"BUNDLE_TYPE_{bundle}", f"EXPORT_FORMAT_{fmt}")
    data, messages = await download(stub, created.export_id)
    assert all(len(m.data) <= 1024 * 1024 for m in messages)
    assert (len(data), hashing.sha256(data).hex()) == (created.size_bytes, created.checksum)
    assert messages[0].content_type == created.content_type and messages[0].checksum == created.checksum
    manifest = json.loads(created.manifest)
    assert (manifest["checksum"], manifest["size"], manifest["export_id"]) == (created.checksum, len(data),
                                                                               created.export_id)
    _looks_like(fmt, data, bundle)
    # Verified by the service, and offline with nothing but the files and the public keys.
    verdict = await stub.VerifyExport(pb.VerifyExportRequest(export_id=created.export_id), metadata=auth(TENANT))
    assert verdict.valid, [(c.name, c.detail) for c in verdict.checks if not c.passed]
    assert {c.name for c in verdict.checks} == {"checksum", "manifest", "signature", "content_hash", "export_chain",
                                                "reproducible"}
    (tmp_path / "artifact").write_bytes(data)
    (tmp_path / "export.dsse.json").write_text(created.dsse_envelope)
    assert verify_export.main([str(tmp_path / "artifact"), "--envelope", str(tmp_path / "export.dsse.json"),
                               "--keys", str(await keys_file(stub, tmp_path))]) == 0


def _looks_like(fmt: str, data: bytes, bundle: str) -> None:
    if fmt == "JSON":
        assert json.loads(data)["bundle_type"] == bundle
        assert hashing.canonical_json(json.loads(data)) == data  # RFC 8785 bytes
    elif fmt == "CSV":
        rows = list(csv.reader(io.StringIO(data.decode())))
        assert rows[0][0] in ("seq", "id", "group")
    elif fmt == "PDF":
        assert data.startswith(b"%PDF-") and data.rstrip().endswith(b"%%EOF")
    else:
        names = zipfile.ZipFile(io.BytesIO(data)).namelist()
        assert {"evidence.json", "report.pdf", "package-manifest.json", "package-manifest.dsse.json",
                "SHA256SUMS"} <= set(names)
