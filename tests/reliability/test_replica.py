"""Reads from a streaming replica through a separate read DSN (issue #9).

Overview and Logs are read-only: they can serve from a hot standby while Export
writes to the primary. Here both are real embedded clusters (the replica a base
backup of the primary, streaming its WAL); the services run in this process on
port 0 and are called through real channels. Migrations and data go to the primary
only and reach the replica by replication.
"""
from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys

import grpc
import psycopg
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from aos.evidence.v1 import bundle_pb2, evidence_pb2
from aos.export.v1 import export_service_pb2 as export_pb, export_service_pb2_grpc as export_grpc
from aos.logs.v1 import (
    audit_ledger_service_pb2 as audit_pb,
    audit_ledger_service_pb2_grpc as audit_grpc,
    llm_runs_service_pb2 as runs_pb,
    llm_runs_service_pb2_grpc as runs_grpc,
)
from aos.overview.v1 import overview_service_pb2 as overview_pb, overview_service_pb2_grpc as overview_grpc
from aos_recording import scenarios
from aos_recording.writers import Producer
from aos_runtime import migrate
from aos_runtime.embedded import EmbeddedPostgres
from aos_runtime.service_main import build_server
from tests.e2e.support import BASE, DEMO, SECRET, auth, service_modules, settings
from tests.logins import login_url, migrate_and_provision

pytestmark = pytest.mark.db
SUPPORT = f"{DEMO}.run-support-103"


@pytest.fixture
def clusters(tmp_path):
    """(primary, replica): the replica made before migrations, so the schema too arrives by streaming."""
    if os.environ.get("DATABASE_URL"):
        pytest.skip("DATABASE_URL points at an external server: a streaming replica of it cannot be made here "
                    "(this test builds its own embedded primary and replica)")
    primary = EmbeddedPostgres(tmp_path / "primary", durable=False)
    primary.start()
    try:
        replica = primary.start_replica(tmp_path / "replica")
        try:
            yield primary, replica
        finally:
            replica.stop()
    finally:
        primary.stop()


@pytest.fixture
async def services(clusters, tmp_path):
    """{(service, cluster): address}: Logs and Overview on each cluster, Export on the primary only."""
    primary, replica = clusters
    migrate_and_provision(primary.url)
    producer = Producer(login_url(primary.url, "producer"))
    scenarios.load_demo(producer, base=BASE)
    producer.close()
    replica.wait_for_replay()
    conf, modules = settings(tmp_path / "aos"), service_modules()
    servers = {(name, role): build_server(name, modules[name].servicers, conf, login_url(cluster.url, name),
                                                 port=0)
               for name, role, cluster in [("logs", "replica", replica), ("overview", "replica", replica),
                                           ("logs", "primary", primary), ("overview", "primary", primary),
                                           ("export", "primary", primary)]}
    addresses = {}
    try:
        for key, server in servers.items():
            addresses[key] = f"127.0.0.1:{await server.start()}"
        yield addresses
    finally:
        for server in servers.values():
            await server.stop(grace=0)


async def test_read_services_serve_from_the_replica(clusters, services):
    primary, replica = clusters
    with psycopg.connect(replica.url) as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (True,), "the read DSN is a hot standby"

    for (name, _), address in services.items():
        async with grpc.aio.insecure_channel(address) as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING, name

    # The demo data, answered from the replica exactly as from the primary.
    answers = {}
    for cluster in ("replica", "primary"):
        async with grpc.aio.insecure_channel(services["logs", cluster]) as logs, \
                grpc.aio.insecure_channel(services["overview", cluster]) as overview:
            entries = await audit_grpc.AuditLedgerServiceStub(logs).ListAuditEntries(
                audit_pb.ListAuditEntriesRequest(page_size=1000), metadata=auth())
            trace = await runs_grpc.LlmRunsServiceStub(logs).GetLlmRunTrace(
                runs_pb.GetLlmRunTraceRequest(run_id=SUPPORT), metadata=auth())
            highlights = await overview_grpc.OverviewServiceStub(overview).GetHighlights(
                overview_pb.GetHighlightsRequest(), metadata=auth())
            highlights.ClearField("computed_at")  # the time of the call, not of the data
            answers[cluster] = (list(entries.entries), entries.total_size, list(trace.steps), highlights)
    entries, total, steps, highlights = answers["replica"]
    assert entries and total == len(entries)
    assert [s.step_index for s in steps] == [0, 1, 2, 3] and steps[3].is_inflection_point
    assert highlights.domain_counts and highlights.HasField("last_activity_at")
    assert answers["replica"] == answers["primary"]

    # A write on the primary (an export appends EvidenceExported to the ledger) reaches Logs on the replica.
    async with grpc.aio.insecure_channel(services["export", "primary"]) as channel:
        created = (await export_grpc.ExportServiceStub(channel).CreateExport(export_pb.CreateExportRequest(
            bundle_type=bundle_pb2.BUNDLE_TYPE_EVIDENCE, format=bundle_pb2.EXPORT_FORMAT_JSON, run_id=SUPPORT),
            metadata=auth())).export
    replica.wait_for_replay()
    async with grpc.aio.insecure_channel(services["logs", "replica"]) as channel:
        access = await audit_grpc.AuditLedgerServiceStub(channel).ListAccessEvents(
            audit_pb.ListAccessEventsRequest(page_size=1000), metadata=auth())
    recorded = {e.entity_id: e for e in access.entries}
    assert recorded[created.export_id].event_type == evidence_pb2.AUDIT_EVENT_TYPE_EVIDENCE_EXPORTED
    assert recorded[created.export_id].correlation_id == SUPPORT


def test_nothing_can_be_written_through_the_replica(clusters):
    """Not only the read-only services' sessions: even a superuser cannot write on the standby."""
    primary, replica = clusters
    migrate.upgrade(primary.url)
    write = "INSERT INTO tenants (id, name) VALUES (%s, 'written by a superuser')"
    with psycopg.connect(primary.url) as conn:
        conn.execute(write, ("t-on-primary",))  # the same statement is a valid write on the primary
    replica.wait_for_replay()
    with psycopg.connect(replica.url) as conn:
        assert conn.execute("SELECT name FROM tenants WHERE id = 't-on-primary'").fetchone() == (
            "written by a superuser",)
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction, match="read-only transaction"):
            conn.execute(write, ("t-on-replica",))
    with psycopg.connect(replica.url, autocommit=True) as conn:
        with pytest.raises(psycopg.Error, match="cannot set transaction read-write mode during recovery"):
            conn.execute("BEGIN READ WRITE")
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute("CREATE TABLE written_on_a_standby (x int)")



def test_the_read_dsn_setting_points_a_read_service_at_the_replica(clusters, tmp_path):
    """`python -m services.logs` with DATABASE_URL (the primary) and AOS_READ_DATABASE_URL
    (the replica): it migrates the primary, serves, and its sessions are on the replica."""
    primary, replica = clusters
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AOS_") and k != "DATABASE_URL"}
    # The admin DSN for its migration step (a child process), its own login for serving; the
    # replica's URL gives only where to read (its credentials are not the service's).
    env.update(DATABASE_URL=primary.url, AOS_LOGS_DATABASE_URL=login_url(primary.url, "logs"),
               AOS_READ_DATABASE_URL=replica.url, AOS_LOGS_PORT=str(port),
               AOS_DATA_DIR=str(tmp_path / "aos"), AOS_AUTH_JWT_SECRET=SECRET, AOS_LOG_LEVEL="WARNING",
               AOS_DEV_KEYS="true")
    service = subprocess.Popen([sys.executable, "-m", "services.logs"], env=env)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            grpc.channel_ready_future(channel).result(timeout=60)
            replica.wait_for_replay()  # the migrations, committed on the primary before the server started
            reply = audit_grpc.AuditLedgerServiceStub(channel).ListAuditEntries(
                audit_pb.ListAuditEntriesRequest(page_size=10), metadata=auth(), timeout=30)
        assert reply.total_size == 0  # migrated (on the primary, streamed over), no data yet
        sessions = "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'aos-logs'"
        with psycopg.connect(replica.url) as conn:
            assert conn.execute(sessions).fetchone()[0] >= 1
        with psycopg.connect(primary.url) as conn:
            assert conn.execute(sessions).fetchone()[0] == 0
            assert conn.execute("SELECT count(*) FROM alembic_version").fetchone()[0] == 1
    finally:
        service.terminate()
        assert service.wait(timeout=30) == 0


async def test_a_read_passing_a_writes_wal_position_waits_for_the_replica_to_replay_it(clusters, services,
                                                                                       monkeypatch):
    """Read-your-writes (docs/SERVING.md): CreateExport answers with x-aos-wal-lsn; a Logs read
    on the replica that passes it back as x-aos-min-lsn answers only once the replica has
    replayed that far (never stale), or UNAVAILABLE; without it, the replica answers at once
    as of its replay position. Replay is paused on the replica to make the lag certain."""
    from aos_runtime import db
    from tests.e2e.support import violations

    primary, replica = clusters
    with psycopg.connect(replica.url, autocommit=True) as conn:
        conn.execute("SELECT pg_wal_replay_pause()")
    async with grpc.aio.insecure_channel(services["export", "primary"]) as channel:
        call = export_grpc.ExportServiceStub(channel).CreateExport(export_pb.CreateExportRequest(
            bundle_type=bundle_pb2.BUNDLE_TYPE_EVIDENCE, format=bundle_pb2.EXPORT_FORMAT_JSON, run_id=SUPPORT),
            metadata=auth())
        created = (await call).export
        lsn = dict(await call.initial_metadata())["x-aos-wal-lsn"]
    request = audit_pb.ListAccessEventsRequest(page_size=1000)
    after_write = auth() + (("x-aos-min-lsn", lsn),)

    def exported(reply) -> bool:
        return created.export_id in {e.entity_id for e in reply.entries}

    async with grpc.aio.insecure_channel(services["logs", "replica"]) as channel:
        stub = audit_grpc.AuditLedgerServiceStub(channel)
        assert not exported(await stub.ListAccessEvents(request, metadata=auth()))  # as of the replica: stale
        monkeypatch.setattr(db, "REPLAY_WAIT_S", 0.3)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.ListAccessEvents(request, metadata=after_write, timeout=10)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE and "not yet to " + lsn in err.value.details()
        monkeypatch.undo()
        waiting = asyncio.ensure_future(stub.ListAccessEvents(request, metadata=after_write, timeout=20))
        await asyncio.sleep(0.5)
        assert not waiting.done()
        with psycopg.connect(replica.url, autocommit=True) as conn:
            conn.execute("SELECT pg_wal_replay_resume()")
        assert exported(await waiting)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.ListAccessEvents(request, metadata=auth() + (("x-aos-min-lsn", "not-a-position"),))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "x-aos-min-lsn" in violations(err.value)
    async with grpc.aio.insecure_channel(services["logs", "primary"]) as channel:  # a primary holds it already
        assert exported(await audit_grpc.AuditLedgerServiceStub(channel).ListAccessEvents(
            request, metadata=after_write, timeout=5))
