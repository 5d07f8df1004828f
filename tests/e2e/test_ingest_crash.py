"""Acknowledged means committed: the Ingest service killed outright (SIGKILL) under load loses
no acknowledged event, leaves every batch whole or absent, and the chain verifies."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from concurrent import futures

import grpc
import psycopg
import pytest

from aos.evidence.v1 import evidence_pb2
from aos.ingest.v1 import ingest_service_pb2 as pb, ingest_service_pb2_grpc as pb_grpc
from tests.db.sessions import ledger_report, make_tenant
from tests.e2e.support import BASE, SECRET, free_port, token, ts
from tests.logins import login_url

pytestmark = pytest.mark.db
BATCH = 200       # events per call
IN_FLIGHT = 4     # calls outstanding at once
ACKED_FIRST = 8   # batches acknowledged before the kill


def batch(number: int) -> pb.AppendAuditEventsRequest:
    return pb.AppendAuditEventsRequest(events=[pb.AuditEvent(
        event_id=f"crash-{number}-{i}", event_type=evidence_pb2.AUDIT_EVENT_TYPE_LIMIT_UPDATED,
        entity_type=evidence_pb2.AUDIT_ENTITY_TYPE_LIMIT, entity_id=f"lim-{i}", correlation_id=f"batch-{number}",
        occurred_at=ts(BASE)) for i in range(BATCH)])


def test_a_killed_ingest_keeps_every_acknowledged_event(databases, tmp_path):
    url = databases.create()
    tenant = make_tenant(url)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AOS_")}
    env.update(AOS_INGEST_DATABASE_URL=login_url(url, "ingest"), AOS_INGEST_PORT=str(port),
               AOS_DATA_DIR=str(tmp_path / "aos"), AOS_AUTH_JWT_SECRET=SECRET, AOS_DEV_KEYS="true",
               AOS_MIGRATE_ON_START="false", AOS_LOG_LEVEL="WARNING")
    service = subprocess.Popen([sys.executable, "-m", "services.ingest"], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    metadata = (("authorization", f"Bearer {token(tenant, scopes=('evidence.write',), actor_type='SYSTEM')}"),)
    acknowledged: list[int] = []
    sent: list[int] = []
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        grpc.channel_ready_future(channel).result(timeout=60)
        stub = pb_grpc.IngestServiceStub(channel)
        pool = futures.ThreadPoolExecutor(IN_FLIGHT)
        pending: dict[futures.Future, int] = {}
        number = 0
        while len(acknowledged) < ACKED_FIRST:
            while len(pending) < IN_FLIGHT:
                pending[pool.submit(stub.AppendAuditEvents, batch(number), metadata=metadata, timeout=60)] = number
                sent.append(number)
                number += 1
            done, _ = futures.wait(list(pending), return_when=futures.FIRST_COMPLETED)
            for call in done:
                assert call.result().created == BATCH
                acknowledged.append(pending.pop(call))
        # Calls are in flight (some mid-transaction): kill the service outright, no drain.
        service.send_signal(signal.SIGKILL)
        service.wait(timeout=30)
        for call, n in pending.items():
            try:
                call.result()
                acknowledged.append(n)  # answered before the kill landed
            except grpc.RpcError:
                pass
        pool.shutdown()
        channel.close()
    finally:
        if service.poll() is None:
            service.kill()
    with psycopg.connect(url) as conn:
        counts = dict(conn.execute(
            "SELECT correlation_id, count(*) FROM audit_ledger WHERE tenant_id = %s GROUP BY 1", (tenant,)).fetchall())
        distinct = conn.execute("SELECT count(DISTINCT id) = count(*) FROM audit_ledger WHERE tenant_id = %s",
                                (tenant,)).fetchone()[0]
    interrupted = set(sent) - set(acknowledged)
    assert interrupted, "every call was answered before the kill: nothing was tried"
    for n in acknowledged:
        assert counts.get(f"batch-{n}") == BATCH, f"acknowledged batch {n} is not whole: {counts.get(f'batch-{n}')}"
    for n in interrupted:
        assert counts.get(f"batch-{n}", 0) in (0, BATCH), f"unacknowledged batch {n} is partly there"
    assert distinct
    report = ledger_report(url, tenant)
    assert report.ok, report.anomalies
    assert report.checked == sum(counts.values())
