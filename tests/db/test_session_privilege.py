"""Privilege that holds for the session, not only for the role (issue #17 part 1, SPEC §6).

Every escalation is tried from a REAL service session: a ``Database`` built the way a
service builds it (its own login DSN) and the recording library's ``Producer``. Before this
change the services logged in as the superuser and assumed their role with ``-c role=``:
each ``SET ROLE postgres`` below then succeeded and the ledger could be rewritten.
"""
from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from pathlib import Path

import psycopg
import pytest
import sqlalchemy.exc
from sqlalchemy import text
from sqlalchemy.engine import make_url

from aos_recording.writers import Producer, UnsafeProducerLogin
from aos_runtime import provision
from aos_runtime.db import ROLES, Database, UnsafeDatabaseLogin, libpq_url
from aos_runtime.embedded import SUPERUSER, SUPERUSER_SECRET, EmbeddedPostgres, _bin
from tests.logins import login_url, provision_logins

pytestmark = pytest.mark.db

# insufficient_privilege, read_only_sql_transaction, the append-only triggers' AOS01.
REFUSED = {"42501", "25006", "AOS01"}
SESSIONS = ("overview", "logs", "export", "ingest", "producer")


def attacks(admin_user: str, service: str) -> dict[str, list[str]]:
    other = "aos_export" if service != "export" else "aos_producer"
    return {
        "SET ROLE superuser": [f'SET ROLE "{admin_user}"'],
        "SET ROLE aos_owner": ["SET ROLE aos_owner"],
        "SET ROLE another service": [f"SET ROLE {other}"],
        "SET SESSION AUTHORIZATION": [f'SET SESSION AUTHORIZATION "{admin_user}"'],
        "RESET ROLE then write": ["RESET ROLE", "UPDATE audit_ledger SET event_type = event_type"],
        "disable the triggers": ["ALTER TABLE audit_ledger DISABLE TRIGGER ALL"],
        "session_replication_role": ["SET session_replication_role = replica"],
        "UPDATE the ledger": ["UPDATE audit_ledger SET action_reason = 'rewritten'"],
        "DELETE from the ledger": ["DELETE FROM audit_ledger"],
        "TRUNCATE the ledger": ["TRUNCATE audit_ledger"],
        "grant itself the owner": [f"GRANT aos_owner TO {ROLES[service]}"],
        # Migration 0012: a temp table would shadow the ledger for the owner's functions.
        "shadow the ledger with a temp table": ["CREATE TEMP TABLE audit_ledger "
                                                "(tenant_id text, seq bigint, chain_hash bytea)"],
        "create a large object": ["SELECT lo_from_bytea(0, 'unbounded')"],
    }


def _run_in_service_session(url: str, service: str, statements: list[str]) -> tuple[str | None, tuple]:
    """(SQLSTATE of the first refused statement or None, (current_user, session_user) afterwards)."""
    def attempt(conn):
        for statement in statements:
            conn.execute(text(statement))

    def whoami(conn):
        return tuple(conn.execute(text("SELECT current_user::text, session_user::text")).one())

    if service == "producer":
        producer = Producer(login_url(url, "producer"), pool_size=1)
        try:
            try:
                with producer.transaction("tenant-x") as conn:
                    attempt(conn)
                state = None
            except sqlalchemy.exc.DBAPIError as exc:
                state = exc.orig.sqlstate
            with producer.transaction(None) as conn:
                return state, whoami(conn)
        finally:
            producer.close()

    async def scenario():
        db = Database(login_url(url, service), service=service, pool_size=1)
        try:
            try:
                await db.run("tenant-x", attempt)
                state = None
            except sqlalchemy.exc.DBAPIError as exc:
                state = exc.orig.sqlstate
            return state, await db.run(None, whoami)
        finally:
            await db.close()

    return asyncio.run(scenario())


@pytest.mark.parametrize("service", SESSIONS)
@pytest.mark.parametrize("attack", list(attacks("postgres", "logs")))
def test_every_escalation_is_refused_from_a_service_session(database_url, service, attack):
    admin = make_url(database_url).username
    state, after = _run_in_service_session(database_url, service, attacks(admin, service)[attack])
    assert state in REFUSED, f"{service}: {attack} was not refused (SQLSTATE {state})"
    assert after == (ROLES[service], ROLES[service]), f"{service}: the session became {after}"


def test_the_ledger_is_unchanged_after_the_attacks(database_url):
    """The writes above were refused, not merely aimed at no row: with entries present an
    export session's UPDATE/DELETE still fails and every entry stays."""
    from datetime import datetime, timezone

    from tests.db.sessions import append_entries

    append_entries(database_url, "tenant-victim", [datetime(2026, 3, 1, tzinfo=timezone.utc)], 3)
    for statement in ("UPDATE audit_ledger SET action_reason = 'rewritten'", "DELETE FROM audit_ledger"):
        state, _ = _run_in_service_session(database_url, "export", [statement])
        assert state in REFUSED
    with psycopg.connect(libpq_url(database_url)) as conn:
        rows = conn.execute("SELECT count(*), count(*) FILTER (WHERE action_reason = 'rewritten') "
                            "FROM audit_ledger WHERE tenant_id = 'tenant-victim'").fetchone()
    assert rows == (3, 0)


# ---- a service or producer handed a DSN that could do more refuses it ----------------------

@pytest.mark.parametrize("service", ["overview", "logs", "export"])
def test_a_service_given_the_admin_dsn_refuses_to_start(database_url, service):
    db = Database(database_url, service=service, pool_size=1)
    try:
        with pytest.raises(UnsafeDatabaseLogin, match=rf"logs in as .*is a superuser.*AOS_{service.upper()}_DATABASE_URL"):
            db.check_login()
    finally:
        db.engine.dispose()


def test_a_service_given_another_services_dsn_refuses_it(database_url):
    db = Database(login_url(database_url, "export"), service="logs", pool_size=1)
    try:
        with pytest.raises(UnsafeDatabaseLogin, match="logs in as 'aos_export', not as 'aos_logs'"):
            db.check_login()
    finally:
        db.engine.dispose()


def test_the_producer_refuses_the_admin_dsn(database_url):
    producer = Producer(database_url, pool_size=1)
    try:
        with pytest.raises(UnsafeProducerLogin, match="superuser"):
            with producer.transaction(None):
                pass
    finally:
        producer.close()


def test_a_login_that_became_a_member_of_the_owner_is_refused_until_provisioning_revokes_it(database_url):
    """Membership is what SET ROLE needs: a login granted aos_owner is refused at its next
    connection, and provisioning (as the migration step runs it) takes the grant back."""
    with psycopg.connect(libpq_url(database_url), autocommit=True) as admin:
        admin.execute("GRANT aos_owner TO aos_logs")
    try:
        db = Database(login_url(database_url, "logs"), service="logs", pool_size=1)
        try:
            with pytest.raises(UnsafeDatabaseLogin, match="member of aos_owner"):
                db.check_login()
        finally:
            db.engine.dispose()
    finally:
        provision_logins(database_url)
    db = Database(login_url(database_url, "logs"), service="logs", pool_size=1)
    try:
        db.check_login()
    finally:
        db.engine.dispose()


def _settings(database_url: str, role: str) -> list:
    with psycopg.connect(libpq_url(database_url)) as conn:
        return conn.execute("SELECT s.setdatabase, s.setconfig FROM pg_db_role_setting s "
                            "JOIN pg_roles r ON r.oid = s.setrole WHERE r.rolname = %s", (role,)).fetchall()


def test_a_stored_role_setting_is_refused_until_provisioning_resets_it(database_url):
    """A superuser's leftover ALTER ROLE … SET (replica mode would skip every ENABLE-d trigger;
    a read-only service's default turned off, a search_path that puts pg_temp first): each
    later session inherits it. The login is refused at its next connection, saying why (not
    with a bare privilege error from the driver's first query), and provisioning clears it."""
    with psycopg.connect(libpq_url(database_url), autocommit=True) as admin:
        database = admin.execute("SELECT current_database()").fetchone()[0]
        admin.execute("ALTER ROLE aos_producer SET session_replication_role = replica")
        admin.execute(f'ALTER ROLE aos_producer IN DATABASE "{database}" SET search_path = pg_temp, public')
        admin.execute(f'ALTER ROLE aos_logs IN DATABASE "{database}" SET default_transaction_read_only = off')
        admin.execute(f'ALTER ROLE aos_logs IN DATABASE "{database}" SET search_path = pg_temp, public')
    try:
        producer = Producer(login_url(database_url, "producer"), pool_size=1)
        try:
            with pytest.raises(UnsafeProducerLogin, match="stored role settings"):
                with producer.transaction(None):
                    pass
        finally:
            producer.close()
        db = Database(login_url(database_url, "logs"), service="logs", pool_size=1)
        try:
            with pytest.raises(UnsafeDatabaseLogin, match=rf"stored role settings \({database}: default_transaction_read_only=off"):
                db.check_login()
        finally:
            db.engine.dispose()
    finally:
        provision_logins(database_url)
    assert _settings(database_url, "aos_producer") == [] and _settings(database_url, "aos_logs") == []
    producer = Producer(login_url(database_url, "producer"), pool_size=1)
    try:
        with producer.transaction(None) as conn:
            assert conn.execute(text("SHOW session_replication_role")).scalar() == "origin"
    finally:
        producer.close()


def test_a_session_that_persists_a_setting_for_itself_fails_its_next_connection(database_url):
    """PostgreSQL lets a role ALTER itself (SET …, even its password): a compromised export
    session can persist synchronous_commit = off for every later session. It cannot be
    stopped in the session, so the next connection refuses the login, loudly."""
    async def persist():
        db = Database(login_url(database_url, "export"), service="export", pool_size=1)
        try:
            await db.run(None, lambda conn: conn.execute(text("ALTER ROLE aos_export SET synchronous_commit = off")))
        finally:
            await db.close()

    try:
        asyncio.run(persist())
        db = Database(login_url(database_url, "export"), service="export", pool_size=1)
        try:
            with pytest.raises(UnsafeDatabaseLogin, match=r"stored role settings \(\*: synchronous_commit=off\)"):
                db.check_login()
        finally:
            db.engine.dispose()
    finally:
        provision_logins(database_url)
    assert _settings(database_url, "aos_export") == []


def test_a_login_that_owns_a_large_object_is_refused(database_url):
    with psycopg.connect(libpq_url(database_url), autocommit=True) as admin:
        oid = admin.execute("SELECT lo_from_bytea(0, 'x')").fetchone()[0]
        admin.execute(f"ALTER LARGE OBJECT {oid} OWNER TO aos_logs")
        try:
            db = Database(login_url(database_url, "logs"), service="logs", pool_size=1)
            try:
                with pytest.raises(UnsafeDatabaseLogin, match="owns 1 large objects"):
                    db.check_login()
            finally:
                db.engine.dispose()
            producer_oid = admin.execute("SELECT lo_from_bytea(0, 'y')").fetchone()[0]
            admin.execute(f"ALTER LARGE OBJECT {producer_oid} OWNER TO aos_producer")
            try:
                producer = Producer(login_url(database_url, "producer"), pool_size=1)
                try:
                    with pytest.raises(UnsafeProducerLogin, match="owns 1 large objects"):
                        with producer.transaction(None):
                            pass
                finally:
                    producer.close()
            finally:
                admin.execute("SELECT lo_unlink(%s)", (producer_oid,))
        finally:
            admin.execute("SELECT lo_unlink(%s)", (oid,))


def test_provisioning_only_checks_a_login_that_already_works(database_url):
    """The "expect" path: a configured DSN that logs in is checked, its password not rewritten."""
    def stored():
        with psycopg.connect(libpq_url(database_url)) as conn:
            return conn.execute("SELECT rolpassword FROM pg_authid WHERE rolname = 'aos_logs'").fetchone()[0]

    before = stored()
    with psycopg.connect(libpq_url(database_url), autocommit=True) as admin:
        admin.execute("ALTER ROLE aos_logs SET statement_timeout = 0")
    provision.provision(database_url, {"logs": login_url(database_url, "logs")}, given={"logs"})
    assert stored() == before
    assert _settings(database_url, "aos_logs") == [], "the expect path resets stored settings too"
    provision.provision(database_url, {"logs": login_url(database_url, "logs")})  # generated path: re-set
    assert stored() != before and stored().startswith("SCRAM-SHA-256$")


# ---- the embedded cluster trusts nobody --------------------------------------------------

def embedded_only():
    if os.environ.get("DATABASE_URL"):
        pytest.skip("DATABASE_URL points at an external server: its pg_hba.conf is its operator's")


def test_the_embedded_cluster_has_no_trust_line(postgres_server):
    embedded_only()
    with psycopg.connect(libpq_url(postgres_server)) as conn:
        rules = conn.execute("SELECT type, database, user_name, auth_method FROM pg_hba_file_rules").fetchall()
    assert rules and not [r for r in rules if r[3] == "trust"], rules
    assert {r[3] for r in rules} == {"scram-sha-256"}


@pytest.fixture(scope="module")
def own_cluster(tmp_path_factory):
    embedded_only()
    pg = EmbeddedPostgres(tmp_path_factory.mktemp("own") / "aos", durable=False)
    pg.start()
    provision_logins(pg.url)
    yield pg
    pg.stop()


def test_a_wrong_or_missing_password_is_refused(own_cluster):
    for user in (SUPERUSER, "aos_logs"):
        for password in ("", "wrong"):
            with pytest.raises(psycopg.OperationalError, match="password"):
                psycopg.connect(host="127.0.0.1", port=own_cluster.port, user=user, password=password,
                                dbname="aos", connect_timeout=5).close()


def test_a_cluster_made_with_trust_is_converted_on_start(tmp_path):
    """An .aos/ from before this change: initdb --auth=trust, no superuser password. Started
    now, it trusts nothing and the superuser logs in with the generated password only."""
    embedded_only()
    pg = EmbeddedPostgres(tmp_path / "aos", durable=False)
    pg.data_dir.mkdir(parents=True, exist_ok=True)
    pg.pgdata.mkdir()
    pg.pgdata.chmod(0o700)
    pg.logfile.touch()
    pg._prepare_user()
    pg._run(_bin("initdb"), "-D", str(pg.pgdata), "-U", SUPERUSER, "--auth=trust", "--encoding=UTF8",
            "--locale=C", "--no-instructions")  # exactly what the older version ran
    assert "trust" in (pg.pgdata / "pg_hba.conf").read_text()
    pg.start()
    try:
        with psycopg.connect(libpq_url(pg.url)) as conn:
            methods = {r[0] for r in conn.execute("SELECT auth_method FROM pg_hba_file_rules")}
        assert methods == {"scram-sha-256"}
        with pytest.raises(psycopg.OperationalError, match="password"):
            psycopg.connect(host="127.0.0.1", port=pg.port, user=SUPERUSER, dbname="aos", password="",
                            connect_timeout=5).close()
    finally:
        pg.stop()


# ---- another OS user on the machine -------------------------------------------------------

def as_nobody(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", *argv],
                          capture_output=True, text=True, timeout=30, env={"PATH": os.environ["PATH"]})


@pytest.fixture
def nobody():
    if os.geteuid() != 0 or not shutil.which("setpriv") or not shutil.which("psql"):
        pytest.skip("needs root (to become nobody), setpriv and psql")


def test_another_os_user_cannot_connect(own_cluster, nobody):
    for user in (SUPERUSER, "aos_logs", "aos_producer"):
        tcp = as_nobody("psql", "-w", f"host=127.0.0.1 port={own_cluster.port} user={user} dbname=aos",
                        "-c", "SELECT 1")
        assert tcp.returncode != 0 and "password" in tcp.stderr, (user, tcp.stdout, tcp.stderr)
        socket = as_nobody("psql", "-w", f"host={own_cluster.pgdata} port={own_cluster.port} user={user} "
                                         "dbname=aos", "-c", "SELECT 1")
        assert socket.returncode != 0, (user, socket.stdout)


def test_another_os_user_cannot_read_the_data_or_the_secrets(own_cluster, nobody):
    data_dir = own_cluster.data_dir
    secret_files = [p for p in data_dir.rglob(f"*{SUPERUSER_SECRET}*") if p.is_file()]
    assert secret_files, "the superuser's password is generated under the data directory"
    # The data directory itself is traversable (the server's OS user needs that), so what
    # stops nobody below is each directory's and file's own mode.
    assert as_nobody("ls", str(data_dir)).returncode == 0
    listing = as_nobody("ls", str(own_cluster.pgdata))
    assert listing.returncode != 0 and "Permission denied" in listing.stderr
    assert as_nobody("cat", str(own_cluster.pgdata / "PG_VERSION")).returncode != 0
    assert as_nobody("cat", str(own_cluster.logfile)).returncode != 0, "the server's log is readable"
    for secret in secret_files:
        read = as_nobody("cat", str(secret))
        assert read.returncode != 0 and own_cluster.password not in read.stdout
    for path in {p.parent for p in secret_files} - {data_dir}:
        assert as_nobody("ls", str(path)).returncode != 0
    assert (Path(own_cluster.pgdata).stat().st_mode & 0o777) == 0o700
