"""Per-tenant export quotas through real Export services on port 0: the hourly rate and the
stored artifact bytes refuse with RESOURCE_EXHAUSTED, ErrorInfo, QuotaFailure and (for the
rate) RetryInfo; an idempotent replay is never refused; other tenants are untouched; and
two instances on one database together never pass a limit (the database is the truth); the
stored bytes the database keeps per tenant (migration 0035) stay the sum of its exports' sizes
under concurrent creates of two tenants."""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import tempfile
from datetime import timedelta
from pathlib import Path

import grpc
import psycopg
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from aos.evidence.v1 import bundle_pb2
from aos.export.v1 import export_service_pb2 as pb, export_service_pb2_grpc as pb_grpc
from aos_runtime.service_main import build_server
from services.export import server as export_server
from tests.e2e.support import BASE, auth, settings, ts
from tests.logins import load_demo_scenarios, login_url

pytestmark = pytest.mark.db
RATE_A, RATE_B, STORE, SHARED = "tenant-quota-ra", "tenant-quota-rb", "tenant-quota-st", "tenant-quota-sh"
BYTES_A, BYTES_B, BYTES_SHARED = "tenant-quota-ba", "tenant-quota-bb", "tenant-quota-bs"


@pytest.fixture(scope="module")
def quota_data(database_url):
    for tenant in (RATE_A, RATE_B, STORE, SHARED, BYTES_A, BYTES_B, BYTES_SHARED):
        load_demo_scenarios(database_url, tenant, base=BASE)


@contextlib.asynccontextmanager
async def export_services(database_url: str, count: int = 1, **limits):
    """``count`` Export services of their own on port 0 over one database, with one signing
    key and the quota settings given: a stub to each."""
    conf = dataclasses.replace(settings(Path(tempfile.mkdtemp(prefix="aos-quota-"))), **limits)
    servers = [build_server("export", export_server.servicers, conf, login_url(database_url, "export"), port=0)
               for _ in range(count)]
    ports = [await s.start() for s in servers]
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{port}") for port in ports]
    try:
        yield [pb_grpc.ExportServiceStub(c) for c in channels]
    finally:
        for channel in channels:
            await channel.close()
        for server in servers:
            await server.stop(grace=0)


def audit_slice(fmt: str = "JSON", **kw) -> pb.CreateExportRequest:
    return pb.CreateExportRequest(
        audit_slice=pb.AuditSlice(created_before=ts(BASE + timedelta(hours=1))),
        bundle_type=bundle_pb2.BUNDLE_TYPE_EVIDENCE, format=bundle_pb2.ExportFormat.Value(f"EXPORT_FORMAT_{fmt}"),
        **kw)


def details(err: grpc.aio.AioRpcError) -> dict[str, object]:
    found: dict[str, object] = {}
    for detail in rpc_status.from_call(err).details:
        for cls in (error_details_pb2.ErrorInfo, error_details_pb2.QuotaFailure, error_details_pb2.RetryInfo):
            if detail.Is(cls.DESCRIPTOR):
                message = cls()
                detail.Unpack(message)
                found[cls.__name__] = message
    return found


async def listed(stub, tenant: str) -> int:
    return len((await stub.ListExports(pb.ListExportsRequest(page_size=1000), metadata=auth(tenant))).exports)


async def test_the_hourly_rate_refuses_with_when_to_retry_and_replays_pass(database_url, quota_data):
    async with export_services(database_url, export_rate_per_hour=2) as (stub,):
        first = (await stub.CreateExport(audit_slice(idempotency_key="q-1"), metadata=auth(RATE_A))).export
        await stub.CreateExport(audit_slice("CSV"), metadata=auth(RATE_A))
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.CreateExport(audit_slice("PDF"), metadata=auth(RATE_A))
        err = refused.value
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, err.details()
        found = details(err)
        assert found["ErrorInfo"].reason == "EXPORT_RATE_LIMITED" and found["ErrorInfo"].metadata["limit"] == "2"
        assert [(v.subject, v.description) for v in found["QuotaFailure"].violations] == [
            (f"tenant:{RATE_A}", "at most 2 exports per hour")]
        # The slot frees when the older of the two leaves the hour: a little under an hour from now.
        assert 3000 < found["RetryInfo"].retry_delay.ToSeconds() <= 3600
        assert await listed(stub, RATE_A) == 2                   # the refused call recorded nothing
        # An idempotent replay of an existing export is answered, not refused.
        replay = (await stub.CreateExport(audit_slice(idempotency_key="q-1"), metadata=auth(RATE_A))).export
        assert replay.export_id == first.export_id
        # Another tenant has a window of its own.
        await stub.CreateExport(audit_slice(), metadata=auth(RATE_B))


async def test_the_stored_bytes_quota_refuses_the_export_that_would_pass_it(database_url, quota_data):
    async with export_services(database_url, export_rate_per_hour=0) as (probe,):
        size = (await probe.CreateExport(audit_slice(), metadata=auth(STORE))).export.size_bytes
    # Room for one more of the same, not two.
    async with export_services(database_url, export_rate_per_hour=0,
                               export_stored_bytes_per_tenant=2 * size + size // 2) as (stub,):
        await stub.CreateExport(audit_slice(), metadata=auth(STORE))
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.CreateExport(audit_slice(), metadata=auth(STORE))
        err = refused.value
        found = details(err)
        assert (err.code(), found["ErrorInfo"].reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "EXPORT_STORAGE_QUOTA")
        assert found["ErrorInfo"].metadata["stored"] == str(2 * size)
        assert found["QuotaFailure"].violations[0].subject == f"tenant:{STORE}"
        assert "RetryInfo" not in found                           # waiting frees no bytes
        assert await listed(stub, STORE) == 2


async def test_two_instances_on_one_database_never_pass_the_rate_together(database_url, quota_data):
    async with export_services(database_url, count=2, export_rate_per_hour=3) as stubs:
        calls = [stubs[i % 2].CreateExport(audit_slice(), metadata=auth(SHARED)) for i in range(6)]
        results = await asyncio.gather(*calls, return_exceptions=True)
        made = [r for r in results if not isinstance(r, BaseException)]
        refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
        assert (len(made), len(refused)) == (3, 3), results
        assert all(r.code() == grpc.StatusCode.RESOURCE_EXHAUSTED for r in refused)
        assert await listed(stubs[0], SHARED) == 3


def stored(database_url: str, tenant: str) -> tuple[int | None, int]:
    """(the total the database keeps, the sum over the tenant's log_exports), read as the admin."""
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT (SELECT stored_bytes FROM export_stored_bytes WHERE tenant_id = %(t)s), "
                           "(SELECT coalesce(sum(size_bytes), 0) FROM log_exports WHERE tenant_id = %(t)s)",
                           {"t": tenant}).fetchone()
    return row[0], row[1]


async def test_concurrent_creates_of_two_tenants_keep_each_stored_total_the_sum(database_url, quota_data):
    async with export_services(database_url, count=2, export_rate_per_hour=0,
                               export_stored_bytes_per_tenant=10 ** 12) as stubs:
        tenants = [BYTES_A, BYTES_B] * 3
        made = await asyncio.gather(*[stubs[i % 2].CreateExport(audit_slice(("JSON", "CSV", "JSON")[i // 2]),
                                                                metadata=auth(tenant))
                                      for i, tenant in enumerate(tenants)])
    for tenant in (BYTES_A, BYTES_B):
        sizes = sum(r.export.size_bytes for r, t in zip(made, tenants, strict=True) if t == tenant)
        assert stored(database_url, tenant) == (sizes, sizes)


async def test_two_instances_on_one_database_never_pass_the_stored_bytes_together(database_url, quota_data):
    async with export_services(database_url, export_rate_per_hour=0) as (probe,):
        size = (await probe.CreateExport(audit_slice(), metadata=auth(BYTES_SHARED))).export.size_bytes
    # Room for two more of the same: six at once on two instances make exactly two.
    async with export_services(database_url, count=2, export_rate_per_hour=0,
                               export_stored_bytes_per_tenant=3 * size + size // 2) as stubs:
        results = await asyncio.gather(*[stubs[i % 2].CreateExport(audit_slice(), metadata=auth(BYTES_SHARED))
                                         for i in range(6)], return_exceptions=True)
    made = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert (len(made), len(refused)) == (2, 4), results
    assert {(r.code(), details(r)["ErrorInfo"].reason) for r in refused} == {
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "EXPORT_STORAGE_QUOTA")}
    assert stored(database_url, BYTES_SHARED) == (3 * size, 3 * size)
