"""Faults injected into a running service, under load: the database stopped and
restarted, SIGTERM with calls in flight. Calls fail fast with the right code and
everything recovers without a restart. (The deadline and pool faults are in
tests/db/test_database.py; an export killed mid-way in tests/e2e/test_export_crash.py.)"""
from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import subprocess
import sys
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from aos.logs.v1 import audit_ledger_service_pb2 as pb, audit_ledger_service_pb2_grpc as pb_grpc
from aos_recording import bulk, scenarios
from aos_recording.writers import Producer
from aos_runtime.embedded import EmbeddedPostgres
from aos_runtime.service_main import build_server
from tests.e2e.support import SECRET, auth, free_port, service_modules, settings
from tests.logins import login_url, migrate_and_provision

pytestmark = pytest.mark.db
WORKERS = 8
WALKS = 8                # integrity walks queued when SIGTERM lands (test_sigterm_drains_calls_in_flight)


async def _health(address: str) -> int:
    async with grpc.aio.insecure_channel(address) as channel:
        return (await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)).status


async def test_database_stopped_and_restarted_under_load(tmp_path):
    pg = EmbeddedPostgres(tmp_path / "pg", durable=False)
    pg.start()
    migrate_and_provision(pg.url)
    producer = Producer(login_url(pg.url, "producer"))
    scenarios.load_demo(producer)
    producer.close()
    conf = dataclasses.replace(settings(tmp_path), health_probe_interval_s=0.2, connect_timeout_s=1)
    server = build_server("logs", service_modules()["logs"].servicers, conf, login_url(pg.url, "logs"), port=0)
    address = f"127.0.0.1:{await server.start()}"
    calls: list[tuple[float, grpc.StatusCode, float]] = []   # (started, code, seconds)
    stop = asyncio.Event()

    async def worker(stub):
        while not stop.is_set():
            started = time.monotonic()
            try:
                await stub.ListAuditEntries(pb.ListAuditEntriesRequest(page_size=5), metadata=auth(), timeout=10)
                code = grpc.StatusCode.OK
            except grpc.aio.AioRpcError as err:
                code = err.code()
            calls.append((started, code, time.monotonic() - started))
            await asyncio.sleep(0.01)

    async def until(predicate, seconds: float, what: str):
        deadline = time.monotonic() + seconds
        while not await predicate():
            assert time.monotonic() < deadline, what
            await asyncio.sleep(0.05)

    try:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = pb_grpc.AuditLedgerServiceStub(channel)
            workers = [asyncio.create_task(worker(stub)) for _ in range(WORKERS)]
            await asyncio.sleep(1)
            await asyncio.to_thread(pg.stop)
            down = time.monotonic()
            await until(lambda: _health_is(address, health_pb2.HealthCheckResponse.NOT_SERVING), 10,
                        "health did not turn NOT_SERVING")
            await asyncio.sleep(2)
            up = time.monotonic()  # from here the server may accept connections again
            await asyncio.to_thread(pg.start)
            await until(lambda: _health_is(address, health_pb2.HealthCheckResponse.SERVING), 15,
                        "health did not recover")
            await until(lambda: _ok_since(calls, up), 15, "calls did not recover")
            recovered = time.monotonic()
            await asyncio.sleep(2)
            stop.set()
            await asyncio.gather(*workers)
    finally:
        await server.stop(grace=0)
        pg.stop()
    codes = {code for _, code, _ in calls}
    assert codes <= {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE}, codes
    while_down = [(c, s) for t, c, s in calls if down + 0.5 < t and t + s < up]
    assert while_down and all(c == grpc.StatusCode.UNAVAILABLE for c, _ in while_down), \
        [(t - down, c, s) for t, c, s in calls if down < t and t + s < up and c != grpc.StatusCode.UNAVAILABLE][:5]
    assert max(s for _, s in while_down) < 3, "calls must fail fast while the database is down"
    after = [c for t, c, _ in calls if t > recovered + 0.5]
    assert after and all(c == grpc.StatusCode.OK for c in after), "every call succeeds once it is back"


async def _health_is(address: str, status: int) -> bool:
    return await _health(address) == status


async def _ok_since(calls, since: float) -> bool:
    return any(t > since and c == grpc.StatusCode.OK for t, c, _ in calls)


def test_sigterm_drains_calls_in_flight(databases, tmp_path):
    """SIGTERM while slow calls run: each finishes OK, the process then exits 0."""
    url = databases.create()
    bulk.load(url, bulk.Volume(tenants=1, ledger=30_000, traces=0, steps=0, system=0))
    (tenant,) = bulk.tenant_ids(1)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AOS_")}
    env.update(AOS_LOGS_DATABASE_URL=login_url(url, "logs"), AOS_LOGS_PORT=str(port), AOS_DATA_DIR=str(tmp_path / "aos"),
               AOS_AUTH_JWT_SECRET=SECRET, AOS_DEV_KEYS="true", AOS_LOG_LEVEL="WARNING", AOS_GRACE_PERIOD_S="30",
               # One tenant's heavy calls run one at a time: the walks below queue behind each other,
               # and however long that takes on a loaded machine none may be refused for waiting.
               AOS_HEAVY_QUEUE_BUDGET_S="120")
    service = subprocess.Popen([sys.executable, "-m", "services.logs"], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        grpc.channel_ready_future(channel).result(timeout=60)
        stub = pb_grpc.AuditLedgerServiceStub(channel)
        # WALKS walks of 30,000 entries, one after another: the last ends seconds after the signal
        # here and still after it on a machine several times faster (four walks at once, each in
        # flight for ~1 s, left a margin of ~2x over the pause).
        in_flight = [stub.GetIntegrityReport.future(pb.GetIntegrityReportRequest(max_entries=30_000),
                                                   metadata=auth(tenant), timeout=120) for _ in range(WALKS)]
        time.sleep(0.3)  # the calls reach the service
        assert not all(f.done() for f in in_flight), "every call finished before the signal: make them longer"
        service.send_signal(signal.SIGTERM)
        reports = [f.result() for f in in_flight]
        assert [r.entries_checked for r in reports] == [30_000] * WALKS
        assert service.wait(timeout=60) == 0
    finally:
        if service.poll() is None:
            service.kill()
