"""Services as real processes hold only their own database login (SPEC §6, issue #17 part 1).

- `python -m services` (make run): each service child's environment carries its own role's
  DSN and nothing else (no DATABASE_URL, no other service's DSN, not the superuser's password);
  its sessions in the database are its role's.
- `python -m services.logs` handed the admin DSN refuses to start, with a message naming
  AOS_LOGS_DATABASE_URL; started alone on the embedded default it runs the migration step
  as a child process and serves as aos_logs.
"""
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
import psutil
import psycopg
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from aos_runtime.db import libpq_url
from aos_runtime.embedded import SUPERUSER_SECRET, EmbeddedPostgres
from tests.e2e.support import SECRET, free_port

pytestmark = pytest.mark.db


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AOS_") and k != "DATABASE_URL"}
    env.update(AOS_LOG_LEVEL="WARNING", PYTHONUNBUFFERED="1", **extra)
    return env


@pytest.fixture
def data_dir():
    """Outside pytest's basetemp (see test_suite_launcher): the embedded server's OS user must reach it."""
    path = Path(tempfile.mkdtemp(prefix="aos-logins-"))
    yield path / "aos"
    shutil.rmtree(path, ignore_errors=True)


def superuser_password(data_dir: Path) -> str:
    (found,) = [p for p in data_dir.rglob(SUPERUSER_SECRET) if p.is_file()]
    return found.read_text().strip()


def sessions_by_application(data_dir: Path) -> dict[str, set[str]]:
    pg = EmbeddedPostgres(data_dir)
    pg.port = pg.running_port(data_dir)
    with psycopg.connect(libpq_url(pg.url)) as conn:
        rows = conn.execute("SELECT application_name, usename FROM pg_stat_activity "
                            "WHERE application_name LIKE 'aos-%'").fetchall()
    found: dict[str, set[str]] = {}
    for application, user in rows:
        found.setdefault(application, set()).add(user)
    return found


def test_the_suite_gives_each_service_only_its_own_login(data_dir):
    ports = {name: free_port() for name in ("OVERVIEW", "LOGS", "EXPORT", "INGEST", "GATEWAY")}
    env = clean_env(AOS_DATA_DIR=str(data_dir), **{f"AOS_{n}_PORT": str(p) for n, p in ports.items()})
    suite = subprocess.Popen([sys.executable, "-m", "services"], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    output: list[str] = []
    try:
        deadline = time.monotonic() + 90
        while not any("Ctrl-C stops everything" in line for line in output):
            assert time.monotonic() < deadline and suite.poll() is None, "".join(output)
            output.append(suite.stdout.readline())
        admin_password = superuser_password(data_dir)
        children = {}
        for child in psutil.Process(suite.pid).children():
            command = child.cmdline()
            name = command[command.index("-m") + 1] if "-m" in command else None
            children[name] = child.environ()
        assert set(children) >= {"services.overview", "services.logs", "services.export", "gateway"}
        for name, environ in children.items():
            credentials = {k: v for k, v in environ.items() if k == "DATABASE_URL" or k.endswith("_DATABASE_URL")}
            assert not [v for v in environ.values() if admin_password in v], f"{name} holds the superuser's password"
            if name == "gateway":
                assert credentials == {}, credentials
                continue
            service = name.removeprefix("services.")
            assert set(credentials) == {f"AOS_{service.upper()}_DATABASE_URL"}, credentials
            assert f"//aos_{service}:" in credentials[f"AOS_{service.upper()}_DATABASE_URL"]
        # In the database, each service's sessions are its own role's (the health probes'
        # and the pools' connections), never the superuser's.
        with grpc.insecure_channel(f"127.0.0.1:{ports['LOGS']}") as channel:
            health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert health.status == health_pb2.HealthCheckResponse.SERVING
        sessions = sessions_by_application(data_dir)
        for service in ("overview", "logs", "export"):
            # Each service holds the pooled connection its start-up login check opened: a
            # service with no session at all must fail here, not pass by a default value.
            assert sessions.get(f"aos-{service}") == {f"aos_{service}"}, sessions
    finally:
        suite.send_signal(signal.SIGINT)
        try:
            suite.wait(timeout=60)
        except subprocess.TimeoutExpired:
            suite.kill()
            suite.wait()


def run_service(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "services.logs"], env=env, capture_output=True, text=True,
                          timeout=60)


def test_a_service_with_only_the_admin_dsn_refuses_to_start(database_url, tmp_path):
    result = run_service(clean_env(DATABASE_URL=database_url, AOS_DATA_DIR=str(tmp_path / "aos"),
                                   AOS_AUTH_JWT_SECRET=SECRET, AOS_DEV_KEYS="true", AOS_MIGRATE_ON_START="false",
                                   AOS_LOGS_PORT=str(free_port())))
    assert result.returncode != 0
    assert "set AOS_LOGS_DATABASE_URL" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_a_service_given_the_admin_dsn_as_its_own_refuses_to_start(database_url, tmp_path):
    result = run_service(clean_env(AOS_LOGS_DATABASE_URL=database_url, AOS_DATA_DIR=str(tmp_path / "aos"),
                                   AOS_AUTH_JWT_SECRET=SECRET, AOS_DEV_KEYS="true", AOS_MIGRATE_ON_START="false",
                                   AOS_LOGS_PORT=str(free_port())))
    assert result.returncode != 0
    assert re.search(r"refuses its database login: it logs in as '\w+', not as 'aos_logs'; is a superuser",
                     result.stderr), result.stderr


def test_a_service_started_alone_migrates_in_a_child_and_serves_as_its_role(data_dir):
    """The embedded default: the service process runs `python -m aos_runtime.migrate upgrade`
    as a child (the only process that reads the superuser's password), then serves as aos_logs,
    and on SIGTERM stops the embedded server that step started for it."""
    port = free_port()
    service = subprocess.Popen([sys.executable, "-m", "services.logs"],
                               env=clean_env(AOS_DATA_DIR=str(data_dir), AOS_LOGS_PORT=str(port),
                                             AOS_AUTH_JWT_SECRET=SECRET),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            grpc.channel_ready_future(channel).result(timeout=90)
            health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert health.status == health_pb2.HealthCheckResponse.SERVING
        assert not [v for v in psutil.Process(service.pid).environ().values()
                    if superuser_password(data_dir) in v]
        assert sessions_by_application(data_dir).get("aos-logs") == {"aos_logs"}
    finally:
        service.send_signal(signal.SIGTERM)
        try:
            code = service.wait(timeout=60)
        except subprocess.TimeoutExpired:
            service.kill()
            code = service.wait()
    assert code == 0, service.stderr.read()
    assert EmbeddedPostgres.running_port(data_dir) is None, "the embedded server it started is stopped"
