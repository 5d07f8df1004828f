"""A session cannot shadow the tables the owner's functions read, nor make large objects
(issue #17 review, migration 0012).

The attack: PostgreSQL searches the session's temporary schema first for relation names,
even inside a SECURITY DEFINER function whose search_path does not name pg_temp last. A
temp table called audit_ledger with a fake head row made the chain trigger store a forged
seq and prev_hash. Two layers stop it, each tried here from a real producer session:
no session can create a temporary table, and with TEMPORARY granted back (as if an
operator had) every function still reads the real tables (its pinned search_path).
"""
from __future__ import annotations

import contextlib
from datetime import datetime, timezone

import psycopg
import pytest
import sqlalchemy.exc
from sqlalchemy import text

from aos_recording import vocabulary
from aos_recording.writers import AuditLedgerWriter, EvidenceConflict, Producer, SystemRecordWriter, TraceRecorder
from aos_runtime.db import ROLES, libpq_url
from tests.db.sessions import append_entries, ledger_report
from tests.logins import login_url

pytestmark = pytest.mark.db

TENANT = "tenant-shadow"
FAKE_HASH = b"\x42" * 32
WHEN = datetime(2026, 3, 1, tzinfo=timezone.utc)


def _public_functions(url: str) -> dict[str, list[str]]:
    with psycopg.connect(libpq_url(url)) as conn:
        return {name: config or [] for name, config in conn.execute(
            "SELECT p.oid::regprocedure::text, p.proconfig FROM pg_proc p "
            "WHERE p.pronamespace = 'public'::regnamespace ORDER BY 1")}


def test_every_public_function_pins_its_search_path_with_pg_temp_last(database_url):
    functions = _public_functions(database_url)
    # The SECURITY DEFINER functions and the triggers the review named are among them.
    for name in ("aos_assign_chain()", "aos_check_step_trace()", "aos_record_once()", "aos_refuse_mutation()",
                 "aos_stamp_recorded_at()", "aos_chain_lock_key(text,text)"):
        assert name in functions
    unpinned = {name: config for name, config in functions.items()
                if "search_path=pg_catalog, public, pg_temp" not in config}
    # The one exception (migration 0012): the policies' tenant, kept inlinable.
    assert unpinned == {"aos_current_tenant()": []}, unpinned


def test_the_policies_tenant_function_names_nothing_a_session_could_shadow(database_url):
    """aos_current_tenant() is left unpinned so that the planner inlines it into every
    policy: its body must stay one call of a pg_catalog function on a literal, and the
    plan of a policy-filtered read must show that call, not the function."""
    with psycopg.connect(libpq_url(database_url)) as conn:
        language, body = conn.execute("SELECT l.lanname, p.prosrc FROM pg_proc p JOIN pg_language l "
                                      "ON l.oid = p.prolang WHERE p.oid = 'aos_current_tenant()'::regprocedure"
                                      ).fetchone()
    assert language == "sql"
    assert " ".join(body.split()) == "SELECT nullif(current_setting('aos.tenant_id', true), '')"
    with psycopg.connect(libpq_url(login_url(database_url, "logs"))) as conn:
        plan = "\n".join(r[0] for r in conn.execute("EXPLAIN VERBOSE SELECT count(*) FROM audit_ledger"))
    assert "current_setting('aos.tenant_id'" in plan and "aos_current_tenant" not in plan, plan


@pytest.mark.parametrize("service", ["overview", "logs", "export", "producer"])
def test_no_service_role_may_create_temporary_tables_or_large_objects(database_url, service):
    with psycopg.connect(libpq_url(database_url)) as conn:
        temp, lo = conn.execute(
            "SELECT has_database_privilege(%(r)s, current_database(), 'TEMPORARY'), "
            "ARRAY(SELECT p.oid::regprocedure::text FROM pg_proc p WHERE p.pronamespace = 'pg_catalog'::regnamespace "
            "      AND p.proname IN ('lo_from_bytea', 'lo_create', 'lo_creat', 'lo_put', 'lowrite', 'lo_open', "
            "                        'lo_import') AND has_function_privilege(%(r)s, p.oid, 'EXECUTE'))",
            {"r": ROLES[service]}).fetchone()
    assert (temp, lo) == (False, [])


def test_a_read_only_session_cannot_create_a_large_object(database_url):
    """The review's attack, as a raw logs login: leave read-only mode, create a large object."""
    with psycopg.connect(libpq_url(login_url(database_url, "logs")), autocommit=True) as conn:
        conn.execute("SET default_transaction_read_only = off")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT lo_from_bytea(0, %s)", (b"x" * 1024,))
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT lo_creat(-1)")


@contextlib.contextmanager
def temporary_granted(url: str, role: str):
    """TEMPORARY on the test's database granted back to ``role``, as an operator might."""
    with psycopg.connect(libpq_url(url), autocommit=True) as admin:
        database = admin.execute("SELECT current_database()").fetchone()[0]
        admin.execute(f'GRANT TEMPORARY ON DATABASE "{database}" TO {role}')
        try:
            yield
        finally:
            admin.execute(f'REVOKE TEMPORARY ON DATABASE "{database}" FROM {role}')


def _shadow(conn, table: str, columns: str, row: str) -> None:
    conn.execute(text(f"CREATE TEMP TABLE {table} ({columns}) ON COMMIT DROP"))
    conn.execute(text(f"INSERT INTO pg_temp.{table} VALUES {row}"))
    # The functions run as the owner: the shadow must be open to it (FOR UPDATE too).
    conn.execute(text(f"GRANT ALL ON pg_temp.{table} TO PUBLIC"))
    # The writers' unqualified INSERTs reach the real table; the functions are on their own.
    conn.execute(text("SET LOCAL search_path = public, pg_temp"))


@pytest.fixture(scope="module")
def ledger(database_url):
    append_entries(database_url, TENANT, [WHEN], 3)
    return database_url


@pytest.mark.parametrize("table", ["audit_ledger", "aos_traces", "system_records"])
def test_a_producer_session_cannot_create_the_shadow_table(ledger, table):
    producer = Producer(login_url(ledger, "producer"), pool_size=1)
    try:
        with pytest.raises(sqlalchemy.exc.ProgrammingError) as refused:
            with producer.transaction(TENANT) as conn:
                conn.execute(text(f"CREATE TEMP TABLE {table} (tenant_id text)"))
        assert refused.value.orig.sqlstate == "42501"
    finally:
        producer.close()


def test_a_shadowed_ledger_head_does_not_reach_the_chain_trigger(ledger):
    """With TEMPORARY granted back: a temp audit_ledger whose head says seq 41 — the next
    real entry is still seq 4 after the real head, and the chain verifies."""
    with temporary_granted(ledger, "aos_producer"):
        producer = Producer(login_url(ledger, "producer"), pool_size=1)
        try:
            with producer.transaction(TENANT) as conn:
                _shadow(conn, "audit_ledger", "tenant_id text, seq bigint, chain_hash bytea",
                        f"('{TENANT}', 41, '\\x{FAKE_HASH.hex()}'::bytea)")
                entry = AuditLedgerWriter(conn).append(
                    tenant_id=TENANT, event_type="LimitUpdated", entity_type="LIMIT", entity_id="lim-1",
                    actor_type="HUMAN", actor_id="user-1", after_state={"max_value": 99}, created_at=WHEN)
        finally:
            producer.close()
    assert entry.seq == 4 and entry.prev_hash != FAKE_HASH
    assert ledger_report(ledger, TENANT).ok


def test_a_shadowed_trace_does_not_let_a_step_join_it(ledger):
    """A temp aos_traces holding a running trace that does not exist: the step is refused."""
    with temporary_granted(ledger, "aos_producer"):
        producer = Producer(login_url(ledger, "producer"), pool_size=1)
        try:
            with pytest.raises(sqlalchemy.exc.IntegrityError, match="not found") as refused:
                with producer.transaction(TENANT) as conn:
                    _shadow(conn, "aos_traces", "tenant_id text, trace_id text, status text",
                            f"('{TENANT}', 'trace-ghost', 'running')")
                    TraceRecorder(conn).add_step(tenant_id=TENANT, trace_id="trace-ghost", step_index=0,
                                                 step_type=sorted(vocabulary.STEP_TYPES)[0], timestamp=WHEN)
            assert refused.value.orig.sqlstate == "23503"
        finally:
            producer.close()


def test_a_shadowed_system_records_does_not_let_an_id_be_recorded_twice(ledger):
    """A record id taken with one content; an empty temp system_records hides it from
    aos_record_once — other content under that id is still refused."""
    def write(conn, summary, created_at):
        return SystemRecordWriter(conn).write(
            tenant_id=TENANT, component="test", event_type=sorted(vocabulary.SYSTEM_EVENT_TYPES)[0],
            severity=sorted(vocabulary.SYSTEM_SEVERITIES)[0], summary=summary, created_at=created_at,
            record_id="sys-once")

    producer = Producer(login_url(ledger, "producer"), pool_size=1)
    try:
        with producer.transaction(TENANT) as conn:
            write(conn, "the original", WHEN)
        with temporary_granted(ledger, "aos_producer"):
            with pytest.raises(EvidenceConflict):
                with producer.transaction(TENANT) as conn:
                    _shadow(conn, "system_records", "tenant_id text, id text, content_hash bytea",
                            f"('{TENANT}', 'someone-else', '\\x{FAKE_HASH.hex()}'::bytea)")
                    # Another created_at: not the primary key's conflict, only the trigger's.
                    write(conn, "a rewrite", WHEN.replace(hour=1))
    finally:
        producer.close()
    with psycopg.connect(libpq_url(ledger)) as conn:
        assert conn.execute("SELECT summary FROM system_records WHERE id = 'sys-once'").fetchall() == \
            [("the original",)]
