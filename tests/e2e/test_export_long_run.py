"""A run of thousands of steps exports through a real Export server with its steps streamed
from the database (a server-side cursor into bundles.Steps, issue #19): every step in order in
the JSON, the ZIP's evidence.json the same bytes, and VerifyExport's re-render reproduces
both. tests/unit/test_bundle_stream.py pins the bytes
against the former in-memory rendering and bounds the memory."""
from __future__ import annotations

import io
import json
import shutil
import tempfile
import zipfile
from pathlib import Path

import grpc
import pytest

from aos.evidence.v1 import bundle_pb2
from aos.export.v1 import export_service_pb2 as pb, export_service_pb2_grpc as pb_grpc
from aos_recording import bulk, hashing
from aos_runtime.service_main import build_server
from tests.e2e.support import auth, service_modules, settings
from tests.logins import login_url

pytestmark = pytest.mark.db
STEPS = 3000


@pytest.fixture(scope="module")
def long_run(databases) -> tuple[str, str]:
    url = databases.create()
    bulk.load(url, bulk.Volume(tenants=1, ledger=10, traces=1, steps=STEPS, system=0))
    (tenant,) = bulk.tenant_ids(1)
    return url, tenant


async def test_a_long_run_streams_every_step_and_reproduces(long_run):
    url, tenant = long_run
    data = Path(tempfile.mkdtemp(prefix="aos-long-run-"))
    server = build_server("export", service_modules()["export"].servicers, settings(data),
                          login_url(url, "export"), port=0)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{await server.start()}") as channel:
            stub = pb_grpc.ExportServiceStub(channel)
            artifacts = {}
            for fmt in ("JSON", "ZIP"):
                created = (await stub.CreateExport(pb.CreateExportRequest(
                    run_id=f"{tenant}.run-0", bundle_type=bundle_pb2.BUNDLE_TYPE_EVIDENCE,
                    format=bundle_pb2.ExportFormat.Value(f"EXPORT_FORMAT_{fmt}")), metadata=auth(tenant))).export
                body = b"".join([m.data async for m in stub.DownloadExport(
                    pb.DownloadExportRequest(export_id=created.export_id), metadata=auth(tenant))])
                assert hashing.sha256(body).hex() == created.checksum
                assert json.loads(created.manifest)["contents"]["trace_step"] == {"count": STEPS}
                verdict = await stub.VerifyExport(pb.VerifyExportRequest(export_id=created.export_id),
                                                  metadata=auth(tenant))
                assert verdict.valid, [(c.name, c.detail) for c in verdict.checks if not c.passed]
                artifacts[fmt] = body
    finally:
        await server.stop(grace=1)
        shutil.rmtree(data, ignore_errors=True)
    steps = json.loads(artifacts["JSON"])["trace"]["steps"]
    assert [s["step_index"] for s in steps] == list(range(STEPS))
    with zipfile.ZipFile(io.BytesIO(artifacts["ZIP"])) as package:
        assert package.read("evidence.json") == artifacts["JSON"]
        assert package.read("report.pdf").startswith(b"%PDF-")
