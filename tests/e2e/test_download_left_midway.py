"""A client that leaves a download midway gives the export service its database
connection back, and a slow one holds neither a heavy slot nor a connection while it
reads (issue #19): the artifact is read one chunk per short transaction, and the call
holds a stream slot (AOS_DOWNLOADS_PER_TENANT) once it found the export."""
from __future__ import annotations

import asyncio
import dataclasses
import time

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


@pytest.fixture(scope="module")
def loaded(databases) -> tuple[str, str]:
    """A database whose one tenant's JSON evidence export is several 1 MiB chunks."""
    url = databases.create()
    bulk.load(url, bulk.Volume(tenants=1, ledger=20_000, traces=0, steps=0, system=0))
    (tenant,) = bulk.tenant_ids(1)
    return url, tenant


async def create(stub, tenant: str) -> pb.Export:
    created = (await stub.CreateExport(pb.CreateExportRequest(
        audit_slice=pb.AuditSlice(), bundle_type=bundle_pb2.BundleType.Value("BUNDLE_TYPE_EVIDENCE"),
        format=bundle_pb2.ExportFormat.Value("EXPORT_FORMAT_JSON")), metadata=auth(tenant), timeout=120)).export
    # Several chunks: one taken, one waiting in the hand-over, the pump at the next.
    assert created.size_bytes > 4 * 1024 * 1024, created.size_bytes
    return created


async def test_a_download_left_midway_gives_its_connection_back(loaded, tmp_path):
    url, tenant = loaded
    # One connection: a download that kept it would have every later call refused.
    conf = dataclasses.replace(settings(tmp_path), pool_size=1, pool_timeout_s=2)
    server = build_server("export", export.servicers, conf, login_url(url, "export"), port=0)
    port = await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.ExportServiceStub(channel)
            created = await create(stub, tenant)
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


async def until(predicate, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "the server never reached the state the test waits for"
        await asyncio.sleep(0.01)


async def test_a_slow_download_holds_no_heavy_slot_and_no_connection(loaded, tmp_path):
    """One heavy call of the tenant at once, none waiting, one download at once: while a client
    sits on a download after its first chunk, the tenant's next heavy call still starts at once,
    no database connection is checked out, and a second download is refused (its own limit,
    with RetryInfo); then the first one comes out whole and its slot is free again."""
    url, tenant = loaded
    conf = dataclasses.replace(settings(tmp_path), heavy_concurrency=1, heavy_per_tenant=1, heavy_queue_per_tenant=0,
                               downloads_per_tenant=1)
    server = build_server("export", export.servicers, conf, login_url(url, "export"), port=0)
    port = await server.start()
    admission = server.admission
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.ExportServiceStub(channel)
            created = await create(stub, tenant)
            call = stub.DownloadExport(pb.DownloadExportRequest(export_id=created.export_id),
                                       metadata=auth(tenant), timeout=60)
            first = await call.read()
            await until(lambda: admission.streams.running_of(tenant) == 1)
            assert admission.heavy.running == 0, "the slow download gave its heavy slot back"
            await until(lambda: all(engine.pool.checkedout() == 0 for engine in server.db.engines()))
            # The tenant's one heavy slot is free, and none may wait: this would be refused if it were not.
            verified = await stub.VerifyExport(pb.VerifyExportRequest(export_id=created.export_id),
                                               metadata=auth(tenant), timeout=60)
            assert verified.valid, verified
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                second = stub.DownloadExport(pb.DownloadExportRequest(export_id=created.export_id),
                                             metadata=auth(tenant), timeout=10)
                await second.read()
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, refused.value
            assert "AOS_DOWNLOADS_PER_TENANT=1" in refused.value.details(), refused.value.details()
            body = bytearray(first.data)
            while (message := await call.read()) is not grpc.aio.EOF:
                body += message.data
            assert len(body) == created.size_bytes
            await until(lambda: admission.streams.running_of(tenant) == 0)
    finally:
        await server.stop(grace=1)
