"""The services' database logins (SPEC §6): each service logs in as its own role.

Migrations create the service roles NOLOGIN and grant them their privileges; this step,
run with the admin (owner) DSN right after the migrations, lets each one log in:

    ALTER ROLE aos_logs LOGIN PASSWORD '…' NOSUPERUSER NOCREATEDB NOCREATEROLE
                        NOREPLICATION NOBYPASSRLS          -- and no membership in any role

and drops every setting stored for it (``ALTER ROLE … RESET ALL``, for all databases and
for each one), so that a service session holds its own role's privileges and nothing else: it cannot
``SET ROLE`` to the owner, a superuser or another service (it is a member of none), nor
``SET SESSION AUTHORIZATION`` (only a superuser can). The admin DSN stays with the
migration step; a service process gets only its own DSN.

Passwords: from the per-service DSNs when they are configured (AOS_<SERVICE>_DATABASE_URL),
else generated once into AOS_DATA_DIR (``local_state.dev_secret``). Roles are cluster-wide,
so provisioning is idempotent. When a configured DSN already logs in (an admin who
created the login roles themselves, e.g. on a managed database), nothing is altered: the
login is only checked ("expect" rather than "provision").
"""
from __future__ import annotations

import logging
from collections.abc import Mapping

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

from aos_runtime.db import ROLES, UnsafeDatabaseLogin, check_login, libpq_url
from aos_runtime.local_state import dev_secret

log = logging.getLogger(__name__)

# Every login the suite uses: the four services and the producers (demo loader, recording library).
LOGINS = ("overview", "logs", "export", "ingest", "producer")
# The roles the migrations create; a login must be exactly one of them (its grants are the role's).
OWNER = "aos_owner"


class ProvisioningError(UnsafeDatabaseLogin):
    """The service logins cannot be made or are not what the services need."""


def password_secret(role: str) -> str:
    """The dev_secret name holding ``role``'s generated password under AOS_DATA_DIR."""
    return f"db-password-{role}"


def login_url(admin_url: str, service: str, password: str) -> str:
    """``admin_url``'s server and database, logged in as ``service``'s role."""
    return make_url(admin_url).set(drivername="postgresql", username=ROLES[service], password=password) \
        .render_as_string(hide_password=False)


def read_url(login: str, read_database_url: str) -> str:
    """Where a read service reads (a replica): the replica's host, port and database with the
    service's own user and password (the replica has the primary's roles)."""
    own, replica = make_url(login), make_url(read_database_url)
    return replica.set(drivername="postgresql", username=own.username, password=own.password) \
        .render_as_string(hide_password=False)


def configured(settings) -> dict[str, str]:
    """The per-service DSNs configured in the environment (AOS_<SERVICE>_DATABASE_URL)."""
    return {name: url for name, url in settings.service_database_urls.items() if url}


def login_urls(settings, admin_url: str) -> dict[str, str]:
    """Each login's DSN: the configured one, else ``admin_url``'s server as the role, with the
    password generated once under AOS_DATA_DIR."""
    given = configured(settings)
    return {name: given.get(name) or login_url(admin_url, name, dev_secret(settings.data_dir,
                                                                           password_secret(ROLES[name])))
            for name in LOGINS}


def provision(admin_url: str, urls: Mapping[str, str], *, given: frozenset[str] | set[str] = frozenset()) -> None:
    """Make each login of ``urls`` ({service: its DSN}) able to log in with its DSN's password and
    nothing more, then check it from its own session. A service in ``given`` (its DSN came from the
    configuration) that already logs in is only checked: its password is the admin's to keep."""
    for name, url in urls.items():
        role = ROLES[name]
        user = make_url(url).username
        if user != role:
            raise ProvisioningError(f"the {name} DSN logs in as {user!r}; the {name} service's login role is "
                                    f"{role} (its grants come from the migrations)")
        if name in given:
            try:
                _reset_settings_as_admin(admin_url, role)
                _check(url, name)
                log.info("database login checked", extra={"role": role})
                continue
            except psycopg.OperationalError:
                pass  # cannot log in yet (NOLOGIN, or another password): provision it
        _provision_role(admin_url, role, make_url(url).password or "")
        _check(url, name)
        log.info("database login provisioned", extra={"role": role})


def _check(url: str, service: str) -> None:
    with psycopg.connect(libpq_url(url), autocommit=True, connect_timeout=10) as conn:
        check_login(conn, service)


def _provision_role(admin_url: str, role: str, password: str) -> None:
    if not password:
        raise ProvisioningError(f"no password for the login role {role}: its DSN must carry one")
    with psycopg.connect(libpq_url(admin_url), autocommit=True, connect_timeout=10) as conn:
        if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone() is None:
            raise ProvisioningError(f"role {role} does not exist: run the migrations first "
                                    "(python -m aos_runtime.migrate upgrade)")
        # Sent as a SCRAM verifier computed here (libpq's PQencryptPasswordConn), never in clear:
        # the statement may be logged (log_statement=ddl) and the log must not hold the password.
        verifier = conn.pgconn.encrypt_password(password.encode(), role.encode(), b"scram-sha-256").decode()
        with conn.transaction():
            conn.execute(sql.SQL("ALTER ROLE {} LOGIN PASSWORD {} NOSUPERUSER NOCREATEDB NOCREATEROLE "
                                 "NOREPLICATION NOBYPASSRLS").format(sql.Identifier(role), sql.Literal(verifier)))
            # Membership in any role would let the session SET ROLE to it (or inherit its
            # privileges): revoke every grant, whoever made it.
            for granted, grantor in conn.execute(
                    "SELECT g.rolname, gr.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid "
                    "JOIN pg_roles r ON r.oid = m.member JOIN pg_roles gr ON gr.oid = m.grantor "
                    "WHERE r.rolname = %s", (role,)).fetchall():
                conn.execute(sql.SQL("REVOKE {} FROM {} GRANTED BY {}").format(
                    sql.Identifier(granted), sql.Identifier(role), sql.Identifier(grantor)))
            _reset_settings(conn, role)


def _reset_settings(conn: psycopg.Connection, role: str) -> None:
    """Drop every setting stored for ``role`` (ALTER ROLE … SET, for all databases or one):
    a superuser's leftover session_replication_role = replica, or a search_path, timeout or
    synchronous_commit a session of the role persisted for itself, would shape every later
    session. check_login refuses a login that has any."""
    conn.execute(sql.SQL("ALTER ROLE {} RESET ALL").format(sql.Identifier(role)))
    for (database,) in conn.execute(
            "SELECT d.datname FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase "
            "JOIN pg_roles r ON r.oid = s.setrole WHERE r.rolname = %s", (role,)).fetchall():
        conn.execute(sql.SQL("ALTER ROLE {} IN DATABASE {} RESET ALL").format(sql.Identifier(role),
                                                                             sql.Identifier(database)))


def _reset_settings_as_admin(admin_url: str, role: str) -> None:
    """The "expect" path's reset: an admin that may not alter the role (a managed database
    whose logins the operator made) leaves it to check_login, which then refuses loudly."""
    with psycopg.connect(libpq_url(admin_url), autocommit=True, connect_timeout=10) as conn:
        try:
            with conn.transaction():
                _reset_settings(conn, role)
        except psycopg.errors.InsufficientPrivilege:
            log.warning("cannot reset the stored settings of a configured login", extra={"role": role})


def provision_from_settings(settings, admin_url: str, *, only_configured: bool = False) -> dict[str, str]:
    """The migration step's provisioning: every login, from the configured DSNs or generated
    passwords. Returns {service: DSN} (the launcher hands each child its own).

    ``only_configured``: just the logins whose DSN is configured, when there are any (the
    migrate job of a deployment, or a service's own migration step): a password generated
    here must never replace one an operator gave another service."""
    urls = login_urls(settings, admin_url)
    given = set(configured(settings))
    if only_configured and given:
        urls = {name: url for name, url in urls.items() if name in given}
    provision(admin_url, urls, given=given)
    return urls
