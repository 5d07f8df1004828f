"""The benchmarks' database set-up (bench/scratch.py): each connection a benchmark makes
logs in as its own role, and a service it starts gets only its own login.

    .venv/bin/python -m pytest -q bench/test_scratch.py

A real embedded Postgres (scratch_database) and a real ``python -m services.logs``.
"""
from __future__ import annotations

import psycopg
import pytest

from aos_recording.writers import Producer, UnsafeProducerLogin
from aos_runtime.db import ROLES, UnsafeDatabaseLogin, check_login, libpq_url
from scratch import scratch_database, service_env, service_logins


@pytest.fixture(scope="module")
def scratch(monkeypatch_module):
    with scratch_database(prefix="aos-bench-test-") as (url, work):
        yield url, work


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("DATABASE_URL", raising=False)  # the embedded scratch database, always
        yield patch


def test_each_login_is_its_own_role_and_the_admin_url_is_refused(scratch):
    url, work = scratch
    dsns = service_logins(url, work / "aos")
    assert set(dsns) == {"overview", "logs", "export", "producer"}
    for name, dsn in dsns.items():
        with psycopg.connect(libpq_url(dsn)) as conn:
            check_login(conn, name)  # raises unless the session is exactly ROLES[name]
            assert conn.execute("SELECT session_user").fetchone()[0] == ROLES[name]
    with psycopg.connect(libpq_url(url)) as conn, pytest.raises(UnsafeDatabaseLogin):
        check_login(conn, "logs")  # what a bench handing the admin URL to a service would hit
    producer = Producer(dsns["producer"], pool_size=1)
    try:
        with producer.engine.connect():
            pass
    finally:
        producer.close()
    admin_producer = Producer(url, pool_size=1)
    try:
        with pytest.raises(UnsafeProducerLogin):
            admin_producer.engine.connect()
    finally:
        admin_producer.close()


def test_provisioning_again_from_the_same_data_dir_keeps_every_password(scratch):
    """A suite started with AOS_DATA_DIR=<data_dir> provisions after the bench did: the bench's
    DSNs must still log in."""
    url, work = scratch
    first = service_logins(url, work / "aos")
    assert service_logins(url, work / "aos") == first
    other = service_logins(url, work / "elsewhere")  # another data dir: new passwords
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(libpq_url(first["logs"])).close()
    service_logins(url, work / "aos")
    psycopg.connect(libpq_url(first["logs"])).close()
    assert other != first


def test_a_service_process_gets_its_own_login_and_no_admin_credential(scratch, monkeypatch):
    url, work = scratch
    dsns = service_logins(url, work / "aos")
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setenv("AOS_EXPORT_DATABASE_URL", dsns["export"])
    monkeypatch.setenv("PGPASSWORD", "x")
    env = service_env(dsns, "logs", AOS_LOGS_PORT="1")
    assert env["AOS_LOGS_DATABASE_URL"] == dsns["logs"]
    assert not {"DATABASE_URL", "AOS_EXPORT_DATABASE_URL", "PGPASSWORD"} & set(env)
    assert env["AOS_DEV_KEYS"] == "true" and env["AOS_MIGRATE_ON_START"] == "false"
    assert [k for k in env if k.startswith("AOS_")] == ["AOS_LOGS_DATABASE_URL", "AOS_MIGRATE_ON_START",
                                                        "AOS_DEV_KEYS", "AOS_LOGS_PORT"]


def test_a_logs_service_started_by_a_bench_serves(scratch):
    from workers_scaling import LogsService

    url, work = scratch
    service = LogsService(service_logins(url, work / "aos")["logs"], work, 1)  # raises if it did not start
    assert service.stop() == 0


def test_a_bench_started_logs_service_gets_the_settings_it_is_given(scratch, monkeypatch):
    # bench/logs_cpu_load.py --env: an AOS_ setting reaches the service (service_env drops the
    # bench's own AOS_ variables, so it must be passed as the service's).
    from pathlib import Path

    from workers_scaling import LogsService

    url, work = scratch
    monkeypatch.setenv("AOS_DB_POOL_SIZE", "7")  # the bench's own: not passed on
    service = LogsService(service_logins(url, work / "aos")["logs"], work, 1, AOS_MAX_INFLIGHT="9")
    try:
        environ = dict(item.split("=", 1) for item in
                       Path(f"/proc/{service.process.pid}/environ").read_text().split("\0") if "=" in item)
        assert environ["AOS_MAX_INFLIGHT"] == "9" and "AOS_DB_POOL_SIZE" not in environ
    finally:
        assert service.stop() == 0
