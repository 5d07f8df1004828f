"""An export killed mid-way leaves nothing: no log_exports row, no artifact chunk, no ledger entry —
and, with its CPU-bound work in heavy worker processes (AOS_HEAVY_PROCESSES, aos_runtime.offload),
no process either: a worker (or the fork server) that outlived its service could go on and commit.

The service is ``python -m services.export`` in a process of its own, killed with SIGKILL (no drain,
no cleanup code runs), at several points of one heavy call. The processes it started are found by a
tag in their environment (inherited by the fork server, its workers and the resource tracker)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import grpc
import psycopg
import pytest

from aos.export.v1 import export_service_pb2 as pb, export_service_pb2_grpc as pb_grpc
from aos_recording import bulk
from tests.e2e.support import SECRET, auth, free_port
from tests.logins import login_url

pytestmark = [pytest.mark.db,
              pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds processes through /proc")]
ENTRIES = 40_000
TAG = "TEST_EXPORT_CRASH_TAG"  # not an AOS_ variable: the service refuses unknown ones
SERVICE_SESSIONS = ("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND application_name LIKE 'aos-export%%'")


def _count(url: str, sql: str, *args) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute(sql, args).fetchone()[0]


def _statement_running(url: str, like: str) -> bool:
    """Whether a session of the export service is running, or last ran, a statement ``like``."""
    return bool(_count(url, SERVICE_SESSIONS + " AND query LIKE %s", like))


def _tagged(tag: str) -> dict[int, int]:
    """{pid: parent pid} of the live processes (zombies are not) whose environment carries ``tag``."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if f"{TAG}={tag}".encode() not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # ended meanwhile
            continue
        if fields[0] not in ("Z", "X"):
            found[int(entry.name)] = int(fields[1])
    return found


@pytest.fixture(scope="module")
def ledger(databases):
    """A database whose one tenant has a ledger long enough for its export to take a while:
    (admin URL, tenant). Nothing a test here does may commit."""
    url = databases.create()
    bulk.load(url, bulk.Volume(tenants=1, ledger=ENTRIES, traces=0, steps=0, system=0))
    (tenant,) = bulk.tenant_ids(1)
    return url, tenant


def _kill_the_service_while_it_exports(ledger, tmp_path, processes: str, when) -> None:
    """Starts the service (AOS_HEAVY_PROCESSES=``processes``), asks for an export of the whole
    ledger, calls ``when(url, service, tag)`` until it says the moment has come, SIGKILLs the
    service, and checks that the call failed, that every process it started and every session it
    held ended, and that nothing was committed."""
    url, tenant = ledger
    # Counted here: a test that failed before may have left its export (the module shares the database).
    exports = _count(url, "SELECT count(*) FROM log_exports")
    chunks = _count(url, "SELECT count(*) FROM log_export_artifacts")
    entries = _count(url, "SELECT count(*) FROM audit_ledger WHERE tenant_id = %s", tenant)
    tag = uuid.uuid4().hex
    port = free_port()
    service = _start_service(url, tmp_path, tag, port, processes)
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        grpc.channel_ready_future(channel).result(timeout=60)
        call = pb_grpc.ExportServiceStub(channel).CreateExport.future(
            pb.CreateExportRequest(audit_slice=pb.AuditSlice(), bundle_type=1, format=1), metadata=auth(tenant),
            timeout=120)
        deadline = time.monotonic() + 60
        while not when(url, service, tag):
            assert time.monotonic() < deadline and not call.done(), "the export never got to that point"
            time.sleep(0.01)
        service.send_signal(signal.SIGKILL)
        service.wait(timeout=30)
        with pytest.raises(grpc.RpcError):
            call.result()
        channel.close()
        _nothing_of_it_left(url, tag)
    finally:
        _stop(service, tag)
    assert _count(url, "SELECT count(*) FROM log_exports") == exports, "the killed export was committed"
    assert _count(url, "SELECT count(*) FROM log_export_artifacts") == chunks
    assert _count(url, "SELECT count(*) FROM audit_ledger WHERE tenant_id = %s", tenant) == entries


def _start_service(url: str, tmp_path: Path, tag: str, port: int, processes: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AOS_")}
    env.update({TAG: tag}, AOS_EXPORT_DATABASE_URL=login_url(url, "export"), AOS_EXPORT_PORT=str(port),
               AOS_DATA_DIR=str(tmp_path / "aos"), AOS_AUTH_JWT_SECRET=SECRET, AOS_DEV_KEYS="true",
               AOS_LOG_LEVEL="WARNING", AOS_HEAVY_PROCESSES=processes)
    return subprocess.Popen([sys.executable, "-m", "services.export"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def _nothing_of_it_left(url: str, tag: str) -> None:
    """Every process the killed service started ends with it (the fork server, its workers, the
    resource tracker), and so does every session of the service's."""
    deadline = time.monotonic() + 15
    while left := _tagged(tag):
        assert time.monotonic() < deadline, f"processes of the killed service still run: {left}"
        time.sleep(0.05)
    deadline = time.monotonic() + 30
    while _count(url, SERVICE_SESSIONS):
        assert time.monotonic() < deadline, "the killed service's sessions did not end"
        time.sleep(0.05)


def _stop(service: subprocess.Popen, tag: str) -> None:
    if service.poll() is None:
        service.kill()
        service.wait(timeout=30)
    for pid in _tagged(tag):  # only after a failure: none may be left
        os.kill(pid, signal.SIGKILL)


def _writing(url: str, _service: subprocess.Popen, _tag: str) -> bool:
    # The artifact is being written: its chunks are INSERTed in the export's open transaction.
    return _statement_running(url, "INSERT INTO log_export_artifacts%")


@pytest.mark.parametrize("processes", ["on", "off"])
def test_a_killed_export_leaves_nothing(ledger, tmp_path, processes):
    _kill_the_service_while_it_exports(ledger, tmp_path, processes, _writing)


def _worker_forked(_url: str, service: subprocess.Popen, tag: str) -> bool:
    # A heavy worker exists (a process of the fork server's, itself the service's child). The
    # workers start with the service and are warm before it serves (issue #19), so in a call this
    # is the moment it was made, its job not yet begun; at the service's start, a worker starting
    # (test_a_service_killed_while_its_workers_start_leaves_no_process).
    processes = _tagged(tag)
    return any(parent in processes and parent != service.pid for parent in processes.values())


def _reading(url: str, _service: subprocess.Popen, _tag: str) -> bool:
    # The worker reads the ledger through its server-side cursor (aos_runtime.db.stream_tuples).
    return _statement_running(url, "%aos_stream_%")


def _done_but_not_committed(url: str, service: subprocess.Popen, _tag: str) -> bool:
    """The service is stopped (SIGSTOP) once the artifact is being written; the worker, on its own,
    finishes the work: its last statement reads the export's row back. Then it is at its COMMIT,
    which only the service may allow — and a stopped service allows nothing. (Had the worker
    committed on its own, the row is there now: the moment has come too, and the test fails.)"""
    if Path(f"/proc/{service.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "T":  # not stopped yet
        if not _writing(url, service, _tag):
            return False
        service.send_signal(signal.SIGSTOP)
    return bool(_count(url, SERVICE_SESSIONS + " AND backend_xid IS NOT NULL AND state = 'idle in transaction' "
                                               "AND query LIKE %s", "%FROM log_exports a%")
                or _count(url, "SELECT count(*) FROM log_exports"))


@pytest.mark.parametrize("when", [_worker_forked, _reading, _writing, _done_but_not_committed],
                         ids=["worker-starting", "reading", "writing", "done-awaiting-commit"])
def test_a_service_killed_anywhere_in_a_heavy_call_commits_nothing_and_leaves_no_process(ledger, tmp_path, when):
    _kill_the_service_while_it_exports(ledger, tmp_path, "on", when)


def test_a_service_killed_while_its_workers_start_leaves_no_process(ledger, tmp_path):
    """The heavy workers start with the service, which serves only once they are warm (their
    imports, their connection: aos_runtime.offload). A service SIGKILLed as soon as a worker of its
    is seen (a scan of /proc every few ms: as a rule while the workers warm, ~0.1 s of CPU each)
    leaves no process (the fork server, the workers, the resource tracker) and no session."""
    url, _tenant = ledger
    tag = uuid.uuid4().hex
    port = free_port()
    service = _start_service(url, tmp_path, tag, port, "on")
    try:
        deadline = time.monotonic() + 60
        while not _worker_forked(url, service, tag):
            assert time.monotonic() < deadline and service.poll() is None, "no heavy worker was started"
            time.sleep(0.005)
        service.send_signal(signal.SIGKILL)
        service.wait(timeout=30)
        _nothing_of_it_left(url, tag)
    finally:
        _stop(service, tag)
