"""The services' login roles in tests: each service and producer logs in as its own role
(SPEC §6), never with the admin URL the fixtures create databases with.

``login_url(admin_url, "logs")`` is ``admin_url``'s server and database as ``aos_logs``. The
password is derived from the admin's server and credentials, so every test session on one
cluster (roles are cluster-wide) computes the same one and concurrent sessions do not
overwrite each other's; on the per-session embedded cluster it is as secret as the
superuser's own password.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import datetime

from sqlalchemy.engine import make_url

from aos_recording import scenarios
from aos_recording.writers import Producer
from aos_runtime import provision
from aos_runtime.db import ROLES


def password(admin_url: str, service: str) -> str:
    admin = make_url(admin_url)
    # Not the host or port: a streaming replica (same roles) is reached with the same passwords.
    seed = f"{admin.username}:{admin.password or ''}:{ROLES[service]}"
    return hashlib.sha256(seed.encode()).hexdigest()


def login_url(admin_url: str, service: str) -> str:
    """``admin_url``'s database, logged in as ``service``'s role (overview, logs, export, producer)."""
    return provision.login_url(admin_url, service, password(admin_url, service))


def provision_logins(admin_url: str) -> None:
    """Let every login role log in with its test password (idempotent, as the admin).

    The roles are made first when missing, as migration 0001 makes them (NOLOGIN NOINHERIT, it
    skips existing ones): a test that migrates only part of the way, or not yet, still has its
    producer log in as itself."""
    import psycopg

    from aos_runtime.db import libpq_url

    with psycopg.connect(libpq_url(admin_url), autocommit=True) as conn:
        for name in provision.LOGINS:
            conn.execute(f"DO $$ BEGIN CREATE ROLE {ROLES[name]} NOLOGIN NOINHERIT; "
                         "EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$")
    provision.provision(admin_url, {name: login_url(admin_url, name) for name in provision.LOGINS})


def migrate_and_provision(admin_url: str) -> None:
    from aos_runtime import migrate

    migrate.upgrade(admin_url)
    provision_logins(admin_url)


def load_demo_scenarios(admin_url: str, tenant: str, *, base: datetime,
                        keep: Callable[[scenarios.Scenario], bool] = lambda scenario: True) -> str:
    """``tenant`` with the demo scenarios (those ``keep`` accepts) of its own, written as the
    producer's login: tests that write (exports) do it in a tenant of their own, so that
    tenant-demo's lists stay as the other tests expect them."""
    producer = Producer(login_url(admin_url, "producer"))
    try:
        for scenario in scenarios.demo_scenarios():
            if keep(scenario):
                scenarios.load(producer, scenario, tenant, base=base)
    finally:
        producer.close()
    return tenant
