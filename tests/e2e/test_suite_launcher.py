"""`make run`'s program (python -m services) from the outside: starts the services and the
gateway, serves gRPC and REST, stops cleanly."""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.e2e.support import free_port

pytestmark = pytest.mark.db


@pytest.fixture
def tmp_path():
    """Not under pytest's basetemp: a pytest session starting meanwhile re-chmods
    /tmp/pytest-of-<user> to 0700, and the embedded Postgres' own system user (when the
    suite runs as root) could then no longer reach its data directory to stop it."""
    path = Path(tempfile.mkdtemp(prefix="aos-suite-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_suite_starts_serves_and_stops_everything(tmp_path):
    ports = {name: free_port() for name in ("OVERVIEW", "LOGS", "EXPORT", "GATEWAY")}
    env = {k: v for k, v in os.environ.items() if not k.startswith("AOS_") and k != "DATABASE_URL"}
    env.update({f"AOS_{name}_PORT": str(port) for name, port in ports.items()})
    env.update(AOS_DATA_DIR=str(tmp_path / "aos"), AOS_LOG_LEVEL="WARNING", PYTHONUNBUFFERED="1")
    suite = subprocess.Popen([sys.executable, "-m", "services"], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    output = []
    try:
        deadline = time.monotonic() + 90
        while not any("Ctrl-C stops everything" in line for line in output):
            assert time.monotonic() < deadline and suite.poll() is None, "".join(output)
            output.append(suite.stdout.readline())
        text = "".join(output)
        assert re.search(r"Loaded \d+ demo scenarios", text)
        for port in ports.values():
            assert f"127.0.0.1:{port}" in text
        gateway = f"http://127.0.0.1:{ports['GATEWAY']}"
        assert gateway in text
        token = re.search(r"^\s+(eyJ[\w-]+\.[\w-]+\.[\w-]+)\s*$", text, re.M).group(1)

        # The gateway answers REST with the printed token, and refuses a call without one.
        highlights = httpx.get(f"{gateway}/api/v1/runtime/overview/highlights",
                               headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert highlights.status_code == 200, highlights.text
        assert highlights.json()["pulse"]["status"].startswith("PULSE_STATUS_")
        refused = httpx.get(f"{gateway}/api/v1/logs/audit", timeout=10)
        assert refused.status_code == 401 and refused.json()["code"] == 16

        with grpc.insecure_channel(f"127.0.0.1:{ports['LOGS']}") as channel:
            health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert health.status == health_pb2.HealthCheckResponse.SERVING
            # The printed demo token is accepted: the call gets past authentication.
            call = channel.unary_unary("/aos.logs.v1.AuditLedgerService/ListAuditEntries",
                                       request_serializer=lambda m: b"", response_deserializer=lambda b: b)
            try:
                call(None, metadata=(("authorization", f"Bearer {token}"),), timeout=5)
            except grpc.RpcError as err:
                assert err.code() not in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED,
                                          grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL), err
            with pytest.raises(grpc.RpcError) as err:
                call(None, timeout=5)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED

        suite.send_signal(signal.SIGINT)  # what Ctrl-C does
        assert suite.wait(timeout=60) == 0, "".join(output) + suite.stdout.read()
    finally:
        if suite.poll() is None:
            suite.kill()
    # The embedded Postgres stopped with it.
    assert not (tmp_path / "aos" / "pgdata" / "postmaster.pid").exists()
