"""The schema's guarantees, proven against a real PostgreSQL as each role.

Append-only evidence, database-assigned hash chains, enum CHECKs, least-privilege
roles and row-level security that fails closed.
"""
from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone

import psycopg
import pytest

from aos_recording import scenarios
from aos_recording.writers import Producer
from tests.db.sessions import make_tenant, new_id, session
from tests.logins import login_url

pytestmark = pytest.mark.db

ZERO = bytes(32)
APPEND_ONLY = ("audit_ledger", "llm_run_records", "system_records", "platform_records", "aos_trace_steps",
               "log_exports", "log_export_artifacts")
SERVICE_ROLES = ("aos_overview", "aos_logs", "aos_export", "aos_ingest", "aos_producer")
# The roles that read tenant tables beyond the two aos_ingest appends to (its own test: tests/db/test_ingest_role.py).
READERS = tuple(role for role in SERVICE_ROLES if role != "aos_ingest")


def h(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


def append_audit(conn, tenant: str, event: str = "PolicyRuleCreated", entity: str = "POLICY_RULE") -> str:
    entry = new_id("aud")
    conn.execute(
        "INSERT INTO audit_ledger (id, tenant_id, event_type, entity_type, entity_id, actor_type, actor_id, "
        "created_at, content_hash, seq, prev_hash, chain_hash) "
        "VALUES (%s, %s, %s, %s, 'rule-1', 'HUMAN', 'user-1', now(), %s, 999, %s, %s)",
        (entry, tenant, event, entity, h(entry), ZERO, ZERO))
    return entry


def seed_evidence(url: str, tenant: str) -> dict[str, str]:
    """One row in every append-only table (and a running trace), written as the producer."""
    ids = {}
    with session(url, "aos_producer", tenant) as conn:
        ids["audit_ledger"] = append_audit(conn, tenant)
        ids["llm_run_records"] = new_id("llm")
        conn.execute(
            "INSERT INTO llm_run_records (id, tenant_id, run_id, provider, model, execution_status, source, "
            "started_at, created_at, content_hash) VALUES (%s, %s, %s, 'openai', 'gpt-4o', 'succeeded', "
            "'worker', now(), now(), %s)", (ids["llm_run_records"], tenant, new_id("run"), h("r")))
        ids["system_records"] = new_id("sys")
        conn.execute(
            "INSERT INTO system_records (id, tenant_id, component, event_type, severity, summary, created_at, "
            "content_hash) VALUES (%s, %s, 'api', 'STARTUP', 'INFO', 'api started', now(), %s)",
            (ids["system_records"], tenant, h("s")))
        ids["aos_traces"] = new_id("trace")
        conn.execute("INSERT INTO aos_traces (trace_id, tenant_id, run_id, started_at) VALUES (%s, %s, %s, now())",
                     (ids["aos_traces"], tenant, new_id("run")))
        ids["aos_trace_steps"] = new_id("step")
        conn.execute(
            "INSERT INTO aos_trace_steps (id, trace_id, tenant_id, step_index, step_type, source, \"timestamp\", "
            "content_hash) VALUES (%s, %s, %s, 0, 'input', 'agent', now(), %s)",
            (ids["aos_trace_steps"], ids["aos_traces"], tenant, h("step")))
    with session(url, "aos_export", tenant) as conn:
        ids["log_exports"] = insert_export(conn, tenant)
        conn.execute("INSERT INTO log_export_artifacts (export_id, tenant_id, chunk_no, data) VALUES (%s, %s, 0, 'x')",
                     (ids["log_exports"], tenant))
        ids["log_export_artifacts"] = ids["log_exports"]
    with session(url, "aos_producer", None) as conn:  # a system-wide record: written for no tenant
        ids["platform_records"] = new_id("sys")
        conn.execute("INSERT INTO platform_records (id, component, event_type, severity, summary, created_at, "
                     "content_hash) VALUES (%s, 'platform', 'DEPLOY', 'INFO', 'release 1.1', now(), %s)",
                     (ids["platform_records"], h("p")))
    return ids


def insert_export(conn, tenant: str) -> str:
    export = new_id("exp")
    conn.execute(
        "INSERT INTO log_exports (id, tenant_id, scope, bundle_type, format, content_type, filename, size_bytes, "
        "checksum, manifest, dsse_envelope, signing_key_id, redaction, requested_by_type, requested_by_id, "
        "created_at, content_hash, seq, prev_hash, chain_hash) VALUES (%s, %s, 'AUDIT_SLICE', 'EVIDENCE', "
        "'JSON', 'application/json', 'x.json', 2, %s, '{}', '{}', 'k1', '{}', 'HUMAN', 'user-1', now(), %s, "
        "1, %s, %s)", (export, tenant, h("artifact"), h(export), ZERO, ZERO))
    return export


@pytest.fixture(scope="module")
def tenant(database_url):
    return make_tenant(database_url)


@pytest.fixture(scope="module")
def evidence(database_url, tenant):
    return seed_evidence(database_url, tenant)


KEYS = {"aos_traces": "trace_id", "log_export_artifacts": "export_id"}


@pytest.mark.parametrize("table", APPEND_ONLY)
@pytest.mark.parametrize("role", [*SERVICE_ROLES, None])
def test_append_only_refuses_update_delete_truncate(database_url, tenant, evidence, table, role):
    """No role — a superuser included — changes or removes evidence rows."""
    key = KEYS.get(table, "id")
    with session(database_url, role, tenant) as conn:
        for statement in (f"UPDATE {table} SET tenant_id = tenant_id WHERE {key} = %s",
                          f"DELETE FROM {table} WHERE {key} = %s"):
            with pytest.raises(psycopg.Error) as err:
                conn.execute(statement, (evidence[table],))
            assert err.value.sqlstate in ("AOS01", "42501"), err.value
        with pytest.raises(psycopg.Error) as err:
            conn.execute(f"TRUNCATE {table} CASCADE")
        assert err.value.sqlstate in ("AOS01", "42501")
    if role is None:  # as superuser the trigger itself said no, not a missing privilege
        with session(database_url, None, tenant) as conn, pytest.raises(psycopg.Error) as err:
            conn.execute(f"DELETE FROM {table} WHERE {key} = %s", (evidence[table],))
        assert err.value.sqlstate == "AOS01"
        assert "append-only" in str(err.value)


def test_replica_mode_does_not_silence_triggers(database_url, tenant, evidence):
    with session(database_url, None, tenant) as conn:
        conn.execute("SET session_replication_role = replica")
        for table in APPEND_ONLY:
            with pytest.raises(psycopg.Error) as err:
                conn.execute(f"DELETE FROM {table} WHERE {KEYS.get(table, 'id')} = %s", (evidence[table],))
            assert err.value.sqlstate == "AOS01"


@pytest.mark.parametrize("role", SERVICE_ROLES)
def test_service_roles_cannot_alter_disable_or_drop(database_url, role):
    with session(database_url, role) as conn:
        for statement in ("ALTER TABLE audit_ledger DISABLE TRIGGER audit_ledger_append_only",
                          "ALTER TABLE audit_ledger ADD COLUMN x int",
                          "DROP TABLE log_exports",
                          "ALTER TABLE audit_ledger DISABLE ROW LEVEL SECURITY"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)


def test_trace_changes_only_while_running(database_url, tenant):
    trace = new_id("trace")
    with session(database_url, "aos_producer", tenant) as conn:
        conn.execute("INSERT INTO aos_traces (trace_id, tenant_id, run_id, started_at) VALUES (%s, %s, 'r', now())",
                     (trace, tenant))
        # identity fields never change
        with pytest.raises(psycopg.Error) as err:
            conn.execute("UPDATE aos_traces SET run_id = 'other' WHERE trace_id = %s", (trace,))
        assert err.value.sqlstate == "AOS01"
        # a violation is recorded once...
        conn.execute("UPDATE aos_traces SET violation_step_index = 1, violation_timestamp = now(), "
                     "violation_policy_id = 'pol-1', violation_reason = 'budget' WHERE trace_id = %s", (trace,))
        # ...and never rewritten
        with pytest.raises(psycopg.Error) as err:
            conn.execute("UPDATE aos_traces SET violation_policy_id = 'pol-2' WHERE trace_id = %s", (trace,))
        assert err.value.sqlstate == "AOS01"
        conn.execute("UPDATE aos_traces SET status = 'completed', completed_at = now(), step_count = 2, "
                     "content_hash = %s WHERE trace_id = %s", (h("x"), trace))
        # terminal: nothing changes any more, and no step joins it
        with pytest.raises(psycopg.Error) as err:
            conn.execute("UPDATE aos_traces SET total_tokens = 5 WHERE trace_id = %s", (trace,))
        assert err.value.sqlstate == "AOS01"
        with pytest.raises(psycopg.Error) as err:
            conn.execute("INSERT INTO aos_trace_steps (id, trace_id, tenant_id, step_index, step_type, source, "
                         "\"timestamp\", content_hash) VALUES (%s, %s, %s, 9, 'output', 'agent', now(), %s)",
                         (new_id("step"), trace, tenant, h("late")))
        assert err.value.sqlstate == "AOS01"
        with pytest.raises(psycopg.Error):
            conn.execute("DELETE FROM aos_traces WHERE trace_id = %s", (trace,))


def test_ledger_chain_is_assigned_by_the_database(database_url):
    tenant = make_tenant(database_url)
    with session(database_url, "aos_producer", tenant) as conn:
        for _ in range(5):
            append_audit(conn, tenant)
        rows = conn.execute("SELECT seq, content_hash, prev_hash, chain_hash FROM audit_ledger "
                            "WHERE tenant_id = %s ORDER BY seq", (tenant,)).fetchall()
    # Writers supplied seq 999 and zero hashes; the database ignored them.
    assert [r[0] for r in rows] == [1, 2, 3, 4, 5]
    prev = ZERO
    for _seq, content, prev_hash, chain in rows:
        assert bytes(prev_hash) == prev
        assert bytes(chain) == hashlib.sha256(prev + bytes(content)).digest()
        prev = bytes(chain)


def test_export_chain_is_per_tenant(database_url):
    first, second = make_tenant(database_url), make_tenant(database_url)
    for tenant in (first, second, first):
        with session(database_url, "aos_export", tenant) as conn:
            insert_export(conn, tenant)
    with session(database_url, None) as conn:
        seqs = conn.execute("SELECT tenant_id, array_agg(seq ORDER BY seq) FROM log_exports "
                            "WHERE tenant_id IN (%s, %s) GROUP BY tenant_id", (first, second)).fetchall()
    assert dict(seqs) == {first: [1, 2], second: [1]}


@pytest.mark.parametrize("column,value", [("event_type", "PolicyDeleted"), ("entity_type", "USER"),
                                          ("actor_type", "ROBOT")])
def test_non_canonical_audit_values_are_rejected(database_url, tenant, column, value):
    values = {"event_type": "LimitCreated", "entity_type": "LIMIT", "actor_type": "SYSTEM", column: value}
    with session(database_url, "aos_producer", tenant) as conn, pytest.raises(psycopg.errors.CheckViolation):
        conn.execute("INSERT INTO audit_ledger (id, tenant_id, event_type, entity_type, entity_id, actor_type, "
                     "created_at, content_hash) VALUES (%s, %s, %s, %s, 'e', %s, now(), %s)",
                     (new_id("aud"), tenant, values["event_type"], values["entity_type"], values["actor_type"],
                      h("x")))


def test_row_level_security_fails_closed(database_url):
    a, b = make_tenant(database_url), make_tenant(database_url)
    seed_evidence(database_url, a)
    seed_evidence(database_url, b)
    with session(database_url, "aos_producer", None) as conn:
        conn.execute("INSERT INTO platform_records (id, component, event_type, severity, summary, created_at, "
                     "content_hash) VALUES (%s, 'platform', 'DEPLOY', 'INFO', 'release 1.2', now(), %s)",
                     (new_id("sys"), h("global")))
    for role in ("aos_logs", "aos_export", "aos_producer"):
        # A query that forgets its tenant filter still sees only the caller's rows.
        with session(database_url, role, a) as conn:
            tenants = {r[0] for r in conn.execute("SELECT DISTINCT tenant_id FROM audit_ledger")}
            assert tenants == {a}
            seen = {r[0] for r in conn.execute("SELECT DISTINCT tenant_id FROM system_records")}
            assert seen == {a}  # its own records; the system-wide ones are apart, for every tenant
            assert conn.execute("SELECT count(*) FROM platform_records").fetchone()[0] >= 1
            assert conn.execute("SELECT count(*) FROM log_exports WHERE tenant_id = %s", (b,)).fetchone()[0] == 0
        # No tenant in the transaction: no tenant's rows at all; only system-wide records.
        with session(database_url, role) as conn:
            for table in ("audit_ledger", "aos_traces", "log_exports", "tenants", "incidents"):
                assert conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == 0, (role, table)
            assert conn.execute("SELECT count(*) FROM system_records").fetchone()[0] == 0
            assert conn.execute("SELECT count(*) FROM platform_records").fetchone()[0] >= 1


def test_writes_for_another_tenant_are_refused(database_url):
    a, b = make_tenant(database_url), make_tenant(database_url)
    with session(database_url, "aos_producer", a) as conn, pytest.raises(psycopg.Error) as err:
        append_audit(conn, b)
    assert err.value.sqlstate == "42501"  # new row violates row-level security policy


def test_overview_is_projection_only(database_url, tenant):
    """INV-OVERVIEW-001: the overview role reads its sources and writes nothing."""
    with session(database_url, "aos_overview", tenant) as conn:
        assert conn.execute("SELECT count(*) FROM incidents").fetchone()[0] >= 0
        for statement in ("INSERT INTO incidents (id, tenant_id, title, severity) VALUES ('i', %s, 't', 'low')",
                          "UPDATE incidents SET title = 'x' WHERE tenant_id = %s",
                          "INSERT INTO tenants (id, name) VALUES (%s || '-x', 'x')"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement, (tenant,))
        for table in ("llm_run_records", "log_exports", "aos_trace_steps"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(f"SELECT 1 FROM {table} LIMIT 1")


def test_logs_role_is_read_only(database_url, tenant):
    with session(database_url, "aos_logs", tenant) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            append_audit(conn, tenant)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            insert_export(conn, tenant)


def test_export_role_appends_exports_and_audit_entries_only(database_url, tenant):
    with session(database_url, "aos_export", tenant) as conn:
        append_audit(conn, tenant, "EvidenceExported", "LOG_EXPORT")
        insert_export(conn, tenant)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("INSERT INTO incidents (id, tenant_id, title, severity) VALUES ('i2', %s, 't', 'low')",
                         (tenant,))


def test_recorded_at_is_set_by_the_database(database_url, tenant):
    past = datetime(2001, 1, 1, tzinfo=timezone.utc)
    record = new_id("sys")
    with session(database_url, "aos_producer", tenant) as conn:
        conn.execute("INSERT INTO system_records (id, tenant_id, component, event_type, severity, summary, "
                     "created_at, content_hash, recorded_at) VALUES (%s, %s, 'api', 'ERROR', 'ERROR', 'boom', "
                     "%s, %s, %s)", (record, tenant, past, h("e"), past))
        created, recorded = conn.execute("SELECT created_at, recorded_at FROM system_records WHERE id = %s",
                                         (record,)).fetchone()
    assert created == past  # when it happened, as the producer says
    assert recorded.year >= 2026  # when it was persisted, as the database says


def test_governance_lookup_by_run_uses_its_index(database_url, tenant):
    state = {"run_id": "run-7", "limit": {"max": 1000}}
    with session(database_url, "aos_producer", tenant) as conn:
        entry = new_id("aud")
        conn.execute("INSERT INTO audit_ledger (id, tenant_id, event_type, entity_type, entity_id, actor_type, "
                     "created_at, after_state, content_hash) VALUES (%s, %s, 'LimitUpdated', 'LIMIT', 'l', "
                     "'SYSTEM', now(), %s, %s)", (entry, tenant, json.dumps(state), h(entry)))
        conn.execute("SET enable_seqscan = off")  # the table is tiny; ask whether the index *can* serve
        plan = "\n".join(r[0] for r in conn.execute(
            "EXPLAIN SELECT id FROM audit_ledger WHERE tenant_id = %s AND after_state ->> 'run_id' = 'run-7' "
            "AND after_state ? 'run_id' AND event_type <> 'EvidenceExported'", (tenant,)))
        # the ledger is partitioned (0008): each partition's plan names its own copy of the index
        names = {r[0] for r in conn.execute(
            "SELECT relid::regclass::text FROM pg_partition_tree('ix_audit_ledger_governance_after_run')")}
    assert any(f" {name} on " in plan for name in names)  # migration 0006: without the exports' entries


@pytest.mark.parametrize("role", READERS)
def test_unscoped_reads_of_every_table_see_only_the_callers_tenant(database_url, role):
    """Row-level security for a deliberately unscoped query, as each role, on every
    tenant-scoped table that role may read — source tables and evidence alike."""
    a, b = new_id("t"), new_id("t")
    producer = Producer(login_url(database_url, "producer"))
    # Both tenants' stories (the platform one writes system-wide records, shared by all: not needed here).
    stories = [story for story in scenarios.demo_scenarios() if story.id != "SDSR-PLATFORM-001"]
    assert scenarios.load_demo(producer, {a: "A", b: "B"}, scenarios=stories)
    producer.close()
    for tenant in (a, b):
        seed_evidence(database_url, tenant)
    with session(database_url) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "JOIN pg_attribute att ON att.attrelid = c.oid WHERE n.nspname = 'public' AND c.relkind = 'r' "
            "AND att.attname = 'tenant_id' AND has_table_privilege(%s, c.oid, 'SELECT')",
            (role,))]
    assert tables
    checked = 0
    for table in tables:
        shared = {None} if table == "platform_records" else set()
        with session(database_url) as conn:  # as the superuser: b's rows are there to be hidden
            present = {r[0] for r in conn.execute(f"SELECT DISTINCT tenant_id FROM {table} WHERE tenant_id = ANY(%s)",
                                                  ([a, b],))}
        with session(database_url, role, a) as conn:
            seen = {r[0] for r in conn.execute(f"SELECT DISTINCT tenant_id FROM {table}")}
        assert seen <= {a} | shared and seen & present == present - {b}, (role, table, seen)
        with session(database_url, role) as conn:
            assert {r[0] for r in conn.execute(f"SELECT DISTINCT tenant_id FROM {table}")} <= shared, (role, table)
        checked += b in present
    assert checked >= 5, "too few tables held the other tenant's rows for this test to mean anything"
