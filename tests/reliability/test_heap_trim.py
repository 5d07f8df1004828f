"""Memory returns after heavy work (issue #19): a real Export server closes its idle database
connections and trims its heap once its heavy calls have ended, and says so in /metrics
(aos_heap_trims_total). With AOS_HEAP_TRIM=off
it does not — the same check then fails, so the test can tell. How much it gives back under
four concurrent largest-size exports is bench/export_memory.py's (BENCHMARKS.md)."""
from __future__ import annotations

import asyncio
import contextlib
import platform
import shutil
import tempfile
from pathlib import Path

import grpc
import pytest
from prometheus_client import REGISTRY, generate_latest

from aos.evidence.v1 import bundle_pb2
from aos.export.v1 import export_service_pb2 as pb, export_service_pb2_grpc as pb_grpc
from aos_runtime.service_main import build_server
from tests.e2e.support import BASE, auth, service_modules, settings
from tests.logins import load_demo_scenarios, login_url

pytestmark = [pytest.mark.db,
              pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")]
TENANT = "tenant-trim"
RUN = f"{TENANT}.run-support-103"


@pytest.fixture(scope="module")
def trim_data(database_url) -> str:
    load_demo_scenarios(database_url, TENANT, base=BASE)
    return database_url


@contextlib.asynccontextmanager
async def export_server(url: str, **changes):
    data = Path(tempfile.mkdtemp(prefix="aos-trim-"))
    server = build_server("export", service_modules()["export"].servicers, settings(data, **changes),
                          login_url(url, "export"), port=0)
    address = f"127.0.0.1:{await server.start()}"
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            yield server, pb_grpc.ExportServiceStub(channel)
    finally:
        await server.stop(grace=1)
        shutil.rmtree(data, ignore_errors=True)


def trims(service: str) -> float:
    return REGISTRY.get_sample_value("aos_heap_trims_total", {"service": service}) or 0


def idle_connections(server) -> int:
    return sum(engine.pool.checkedin() for engine in server.db.engines())


async def export_and_verify(stub) -> None:
    created = (await stub.CreateExport(pb.CreateExportRequest(
        run_id=RUN, bundle_type=bundle_pb2.BUNDLE_TYPE_SOC2, format=bundle_pb2.EXPORT_FORMAT_ZIP),
        metadata=auth(TENANT))).export
    verdict = await stub.VerifyExport(pb.VerifyExportRequest(export_id=created.export_id), metadata=auth(TENANT))
    assert verdict.valid, [(c.name, c.detail) for c in verdict.checks if not c.passed]


async def test_the_heap_is_trimmed_after_heavy_calls_and_metrics_say_so(trim_data):
    async with export_server(trim_data) as (server, stub):
        assert server.trimmer is not None
        before = trims("export")
        await export_and_verify(stub)
        for _ in range(100):           # the trim runs 0.2 s after the last heavy call, in a thread
            if trims("export") > before:
                break
            await asyncio.sleep(0.05)
        assert trims("export") > before
        assert b'aos_heap_trims_total{service="export"}' in generate_latest(REGISTRY)
        assert server.trimmer.trims >= 1
        # The connections the calls used were closed before the trim (their libpq buffers
        # keep their largest message until then: tests/db/test_connection_buffers.py) — the
        # light pool's by the follow-up trim, once no light call has run for LIGHT_QUIET_S.
        for _ in range(100):
            if idle_connections(server) == 0:
                break
            await asyncio.sleep(0.05)
        assert idle_connections(server) == 0


async def test_aos_heap_trim_off_does_not_trim(trim_data):
    async with export_server(trim_data, heap_trim=False) as (server, stub):
        assert server.trimmer is None
        before = trims("export")
        await export_and_verify(stub)
        await asyncio.sleep(0.5)
        assert trims("export") == before
        assert idle_connections(server) > 0
