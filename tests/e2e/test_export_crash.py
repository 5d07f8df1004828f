"""An export killed mid-way leaves nothing: no log_exports row, no artifact chunk, no ledger entry."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import grpc
import psycopg
import pytest

from aos.export.v1 import export_service_pb2 as pb, export_service_pb2_grpc as pb_grpc
from aos_recording import bulk
from tests.e2e.support import SECRET, auth, free_port
from tests.logins import login_url

pytestmark = pytest.mark.db
ENTRIES = 40_000


def _count(url: str, sql: str, *args) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute(sql, args).fetchone()[0]


def test_a_killed_export_leaves_nothing(databases, tmp_path):
    url = databases.create()
    bulk.load(url, bulk.Volume(tenants=1, ledger=ENTRIES, traces=0, steps=0, system=0))
    (tenant,) = bulk.tenant_ids(1)
    ledger_before = _count(url, "SELECT count(*) FROM audit_ledger WHERE tenant_id = %s", tenant)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AOS_")}
    env.update(AOS_EXPORT_DATABASE_URL=login_url(url, "export"), AOS_EXPORT_PORT=str(port), AOS_DATA_DIR=str(tmp_path / "aos"),
               AOS_AUTH_JWT_SECRET=SECRET, AOS_DEV_KEYS="true", AOS_LOG_LEVEL="WARNING")
    service = subprocess.Popen([sys.executable, "-m", "services.export"], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        grpc.channel_ready_future(channel).result(timeout=60)
        call = pb_grpc.ExportServiceStub(channel).CreateExport.future(
            pb.CreateExportRequest(audit_slice=pb.AuditSlice(), bundle_type=1, format=1), metadata=auth(tenant),
            timeout=120)
        # Wait until the artifact is being written (its chunks are INSERTed in the open transaction;
        # an export is heavy work, on the pool whose sessions are named aos-export-heavy) ...
        deadline = time.monotonic() + 60
        while not _count(url, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                              "AND application_name LIKE 'aos-export%%' AND query LIKE 'INSERT INTO log_export_artifacts%%'"):
            assert time.monotonic() < deadline and not call.done(), "the export never started writing its artifact"
            time.sleep(0.01)
        # ... then kill the service outright: no drain, no cleanup code runs.
        service.send_signal(signal.SIGKILL)
        service.wait(timeout=30)
        with pytest.raises(grpc.RpcError):
            call.result()
        deadline = time.monotonic() + 30
        while _count(url, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                          "AND application_name LIKE 'aos-export%%'"):
            assert time.monotonic() < deadline, "the killed service's sessions did not end"
            time.sleep(0.05)
    finally:
        if service.poll() is None:
            service.kill()
    assert _count(url, "SELECT count(*) FROM log_exports") == 0
    assert _count(url, "SELECT count(*) FROM log_export_artifacts") == 0
    assert _count(url, "SELECT count(*) FROM audit_ledger WHERE tenant_id = %s", tenant) == ledger_before
