"""Shared fixtures: a real PostgreSQL for the whole session, fresh databases on demand.

By default an embedded Postgres (the same wheel ``make run`` uses) is started in a
temporary directory. With DATABASE_URL set, the tests use that server instead,
each in a database of its own that is dropped afterwards.

The URLs these fixtures hand out are the admin's (they create, migrate and probe the
schema); a service or producer under test logs in with ``tests.logins.login_url(url, name)``,
its own role, as it does in production. A migrated database has those logins provisioned.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import uuid
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from aos_recording import scenarios
from aos_recording.writers import Producer
from aos_runtime import migrate
from aos_runtime.config import SERVICES
from aos_runtime.embedded import EmbeddedPostgres
from aos_runtime.service_main import build_server
from tests.e2e.support import BASE, service_modules, settings
from tests.logins import login_url, provision_logins


@pytest.fixture(scope="session")
def postgres_server():
    """A server URL whose user may create databases and roles (the embedded one's carries the
    superuser's generated password: the cluster trusts no connection)."""
    if os.environ.get("DATABASE_URL"):
        yield os.environ["DATABASE_URL"]
        return
    # Not under pytest's basetemp: another pytest session starting meanwhile prunes
    # old basetemps, and would delete a running server's data directory.
    work = Path(tempfile.mkdtemp(prefix="aos-test-pg-"))
    server = EmbeddedPostgres(work, durable=False)
    server.start()
    try:
        yield server.url
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


class DatabaseFactory:
    """Creates throwaway databases on the session's server and drops them at the end."""

    def __init__(self, server_url: str) -> None:
        self.server_url = server_url
        self.created: list[str] = []

    def admin(self) -> psycopg.Connection:
        return psycopg.connect(self.server_url, autocommit=True)

    def create(self, *, migrated: bool = True) -> str:
        name = f"aos_test_{uuid.uuid4().hex[:12]}"
        with self.admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        self.created.append(name)
        url = make_url(self.server_url).set(database=name).render_as_string(hide_password=False)
        if migrated:
            migrate.upgrade(url)
        provision_logins(url)
        return url

    def drop_all(self) -> None:
        with self.admin() as conn:
            for name in self.created:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def databases(postgres_server):
    factory = DatabaseFactory(postgres_server)
    yield factory
    factory.drop_all()


@pytest.fixture(scope="session")
def database_url(databases) -> str:
    """A migrated database shared by the session's read-mostly tests."""
    return databases.create()


@pytest.fixture
def producer_url(database_url) -> str:
    """The producer's own login DSN on ``database_url``'s database."""
    return login_url(database_url, "producer")


# The suite and its demo data, for the e2e, gateway, CLI and reliability tests alike
# (defined here, once: a conftest imported by another would start a second suite).

@pytest.fixture(scope="session")
def suite_settings(tmp_path_factory):
    """The suite's settings (its data directory holds the export signing keys they all use)."""
    return settings(tmp_path_factory.mktemp("suite"))


@pytest.fixture(scope="session")
async def suite(database_url, suite_settings):
    """The three services in this process, each on its own ephemeral port: {name: address}."""
    conf = suite_settings
    modules = service_modules()
    servers = {name: build_server(name, modules[name].servicers, conf, login_url(database_url, name),
                                      port=0) for name in SERVICES}
    addresses = {}
    for name, server in servers.items():
        addresses[name] = f"127.0.0.1:{await server.start()}"
    yield addresses
    for server in servers.values():
        await server.stop(grace=1)


@pytest.fixture(scope="session")
async def export_in_threads(suite, database_url, suite_settings):
    """The address of a second Export service on the suite's database, with the suite's settings
    and keys but its heavy calls' CPU-bound work in threads of this process
    (AOS_HEAVY_PROCESSES=off), for the tests that monkeypatch what that work calls (a verifier
    version, a re-render counted, the redaction profile, a recording step left out): a patch made
    in this process does not reach the suite's heavy worker processes, which imported their own
    copies of the modules. Those tests are about the patched behaviour, not about where it runs;
    the worker processes are tried by the rest of the suite (the default) and
    tests/e2e/test_export_crash.py."""
    conf = dataclasses.replace(suite_settings, heavy_processes=False)
    server = build_server("export", service_modules()["export"].servicers, conf, login_url(database_url, "export"),
                          port=0)
    address = f"127.0.0.1:{await server.start()}"
    yield address
    await server.stop(grace=1)


@pytest.fixture(scope="session")
def demo(database_url):
    """The demo scenarios for both demo tenants, at a fixed base time, in the suite's database."""
    producer = Producer(login_url(database_url, "producer"))
    scenarios.load_demo(producer, base=BASE)
    producer.close()
    return BASE


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Stop any embedded Postgres a test left running under this session's basetemp.

    A test that starts its own cluster stops it in a ``finally``; one interrupted between
    start and that block (a timeout, a crash of the thread that started it) would leave a
    postmaster running past the suite, holding a port and CI's process tree. Each one found
    is stopped and named, so the test that leaked it can be fixed rather than hidden.
    """
    factory = getattr(session.config, "_tmp_path_factory", None)
    if factory is None:
        return
    try:
        base = factory.getbasetemp()
    except (OSError, ValueError):
        return
    from aos_runtime.embedded import embedded_port, stop_embedded
    for pid_file in base.rglob("postmaster.pid"):
        data_dir = pid_file.parent.parent  # <data_dir>/pgdata/postmaster.pid
        if embedded_port(data_dir) is None:
            continue
        stop_embedded(data_dir)
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.ensure_newline()
            reporter.write_line(f"an embedded Postgres was left running under {data_dir}: stopped it",
                                yellow=True)
