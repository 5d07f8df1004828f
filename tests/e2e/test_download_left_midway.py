"""A client that leaves a download midway gives the export service its database
connection back: the artifact streams through Database.stream, whose pool thread is
never left waiting to hand over a chunk nobody will take."""
from __future__ import annotations

import dataclasses

import grpc
import pytest

from aos.evidence.v1 import bundle_pb2
from aos.export.v1 import export_service_pb2 as pb, export_service_pb2_grpc as pb_grpc
from aos_recording import bulk
from aos_runtime.service_main import build_server
from services.export import server as export
from tests.e2e.support import auth, settings
from tests.logins import login_url

pytestmark = pytest.mark.db


async def test_a_download_left_midway_gives_its_connection_back(databases, tmp_path):
    url = databases.create()
    bulk.load(url, bulk.Volume(tenants=1, ledger=20_000, traces=0, steps=0, system=0))
    (tenant,) = bulk.tenant_ids(1)
    # One connection: a download that kept it would have every later call refused.
    conf = dataclasses.replace(settings(tmp_path), pool_size=1, pool_timeout_s=2)
    server = build_server("export", export.servicers, conf, login_url(url, "export"), port=0)
    port = await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.ExportServiceStub(channel)
            created = (await stub.CreateExport(pb.CreateExportRequest(
                audit_slice=pb.AuditSlice(), bundle_type=bundle_pb2.BundleType.Value("BUNDLE_TYPE_EVIDENCE"),
                format=bundle_pb2.ExportFormat.Value("EXPORT_FORMAT_JSON")), metadata=auth(tenant), timeout=120)).export
            # Several chunks: one taken, one waiting in the hand-over, the pump at the next.
            assert created.size_bytes > 4 * 1024 * 1024, created.size_bytes
            for _ in range(3):
                call = stub.DownloadExport(pb.DownloadExportRequest(export_id=created.export_id),
                                           metadata=auth(tenant), timeout=30)
                first = await call.read()
                assert first.size_bytes == created.size_bytes and len(first.data) > 0
                call.cancel()
                again = await stub.GetExport(pb.GetExportRequest(export_id=created.export_id),
                                             metadata=auth(tenant), timeout=10)
                assert again.export.export_id == created.export_id
            # And a whole download still comes out whole.
            body = b"".join([m.data async for m in stub.DownloadExport(
                pb.DownloadExportRequest(export_id=created.export_id), metadata=auth(tenant), timeout=60)])
            assert len(body) == created.size_bytes
    finally:
        await server.stop(grace=1)
