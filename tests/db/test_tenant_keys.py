"""Migration 0007: every tenant table is keyed by tenant (Citus-ready, docs/SCALE.md), and
the reads that found rows by id alone still find them by index."""
from __future__ import annotations

import hashlib
import uuid

import psycopg
import pytest

from tests.db.sessions import session

pytestmark = pytest.mark.db

# The tenants themselves, and the system-wide records every tenant reads (tenant_id always
# NULL there: on a sharded cluster a reference table, migration 0011).
NOT_TENANT_KEYED = {"tenants", "platform_records"}


def tenant_tables(conn) -> list[str]:
    return [r[0] for r in conn.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id' "
        "WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p') AND NOT c.relispartition "
        "ORDER BY 1")]


def test_every_key_and_index_of_a_tenant_table_leads_with_tenant_id(database_url):
    with session(database_url) as conn:
        tables = [t for t in tenant_tables(conn) if t not in NOT_TENANT_KEYED]
        indexes = conn.execute(
            "SELECT c.relname, i.indexrelid::regclass::text, a.attname, i.indisunique "
            "FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid "
            "LEFT JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] "
            "WHERE c.relname = ANY(%s)", (tables,)).fetchall()
        foreign = conn.execute(
            "SELECT conrelid::regclass::text, conname, confrelid::regclass::text, "
            "ARRAY(SELECT attname FROM pg_attribute WHERE attrelid = conrelid AND attnum = ANY(conkey)), "
            "ARRAY(SELECT attname FROM pg_attribute WHERE attrelid = confrelid AND attnum = ANY(confkey)) "
            "FROM pg_constraint WHERE contype = 'f' AND conrelid::regclass::text = ANY(%s)", (tables,)).fetchall()
    assert len(tables) >= 12, tables
    assert {t for t, _, _, _ in indexes} == set(tables)  # each has its primary key at least
    assert [(t, ix) for t, ix, first, _ in indexes if first != "tenant_id"] == []
    # between tenant tables the tenant is part of the key on both sides; to tenants it is the key
    wrong = [(t, name) for t, name, target, cols, target_cols in foreign
             if not (("tenant_id" in cols and "tenant_id" in target_cols) or
                     (target == "tenants" and cols == ["tenant_id"]))]
    assert wrong == []
    assert sum(target != "tenants" for _, _, target, _, _ in foreign) >= 4


def h(value: str) -> bytes:
    return hashlib.sha256(value.encode()).digest()


def make_tenant(url: str) -> str:
    tenant = f"t_{uuid.uuid4().hex[:12]}"
    with session(url, "aos_producer", tenant) as conn:
        conn.execute("INSERT INTO tenants (id, name) VALUES (%s, %s)", (tenant, tenant))
    return tenant


def test_ids_are_unique_per_tenant_and_references_stay_in_the_tenant(database_url):
    a, b = make_tenant(database_url), make_tenant(database_url)
    for tenant in (a, b):  # the same id in two tenants: two rows
        with session(database_url, "aos_producer", tenant) as conn:
            conn.execute("INSERT INTO incidents (id, tenant_id, title, severity) VALUES ('inc-1', %s, 't', 'low')",
                         (tenant,))
            conn.execute("INSERT INTO limits (id, tenant_id, name, limit_category, max_value) "
                         "VALUES ('lim-1', %s, 'budget', 'BUDGET', 100)", (tenant,))
    with session(database_url, "aos_producer", a) as conn:
        conn.execute("INSERT INTO policy_proposals (id, tenant_id, proposal_name, triggering_incident_id) "
                     "VALUES ('prop-1', %s, 'p', 'inc-1')", (a,))
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute("INSERT INTO incidents (id, tenant_id, title, severity) VALUES ('inc-1', %s, 't', 'low')",
                         (a,))
    c = make_tenant(database_url)  # c has no incident inc-1: a's and b's do not count
    with session(database_url, "aos_producer", c) as conn:
        for statement in ("INSERT INTO policy_proposals (id, tenant_id, proposal_name, triggering_incident_id) "
                          "VALUES ('prop-1', %s, 'p', 'inc-1')",
                          "INSERT INTO limit_breaches (id, tenant_id, limit_id, value_at_breach, limit_value, "
                          "breached_at) VALUES ('br-1', %s, 'lim-1', 120, 100, now())"):
            with pytest.raises(psycopg.errors.ForeignKeyViolation):
                conn.execute(statement, (c,))


def test_a_step_joins_only_its_own_tenants_trace(database_url):
    a, b = make_tenant(database_url), make_tenant(database_url)
    with session(database_url, "aos_producer", a) as conn:
        conn.execute("INSERT INTO aos_traces (trace_id, tenant_id, run_id, started_at) VALUES ('tr-1', %s, 'r', now())",
                     (a,))
    step = ("INSERT INTO aos_trace_steps (id, trace_id, tenant_id, step_index, step_type, source, \"timestamp\", "
            "content_hash) VALUES ('s-0', 'tr-1', %s, 0, 'input', 'agent', now(), %s)")
    with session(database_url, "aos_producer", b) as conn, pytest.raises(psycopg.Error) as err:
        conn.execute(step, (b, h("s")))
    assert err.value.sqlstate == "23503"
    with session(database_url, "aos_producer", a) as conn:
        conn.execute(step, (a, h("s")))
        # the producer's idempotent retry is skipped; other content at a taken index refused
        # (the step trigger keeps (tenant_id, trace_id, step_index) unique across partitions)
        assert conn.execute(step + " RETURNING id", (a, h("s"))).fetchone() is None
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute(step, (a, h("other")))


def test_system_records_are_keyed_by_tenant_and_system_wide_ones_kept_apart(database_url):
    """Migration 0011: a record id is the tenant's own (another tenant may use it), a
    system-wide record lives in platform_records, written only for no tenant, read by all."""
    a, b = make_tenant(database_url), make_tenant(database_url)
    record = ("INSERT INTO system_records (id, tenant_id, component, event_type, severity, summary, created_at, "
              "content_hash) VALUES ('sys-1', %s, 'api', 'DEPLOY', 'INFO', 's', '2026-01-02', %s)")
    system_wide = ("INSERT INTO platform_records (id, tenant_id, component, event_type, severity, summary, "
                   "created_at, content_hash) VALUES ('sys-1', %s, 'platform', 'DEPLOY', 'INFO', 'p', now(), %s)")
    for tenant in (a, b):  # the same id in two tenants: two records
        with session(database_url, "aos_producer", tenant) as conn:
            conn.execute(record, (tenant, h("s")))
    with session(database_url, "aos_producer", a) as conn:
        assert conn.execute(record + " RETURNING id", (a, h("s"))).fetchone() is None  # a retry: skipped
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute(record.replace("2026-01-02", "2026-03-04"), (a, h("other")))  # in another month too
        with pytest.raises(psycopg.errors.InsufficientPrivilege):  # row-level security: not for a tenant
            conn.execute(system_wide, (None, h("p")))
    with session(database_url, "aos_producer") as conn:
        with pytest.raises(psycopg.Error):  # a tenant's table holds no tenant-less record any more
            conn.execute(record, (None, h("s")))
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute(system_wide, (a, h("p")))
        conn.execute(system_wide, (None, h("p")))  # its own id space
    with session(database_url, "aos_logs", b) as conn:
        assert conn.execute("SELECT tenant_id FROM system_records WHERE id = 'sys-1'").fetchall() == [(b,)]
        assert conn.execute("SELECT summary FROM platform_records WHERE id = 'sys-1'").fetchall() == [("p",)]


# Reads by id alone (the producer's trace updates, the governance lookup by ids) run under
# row-level security: its tenant condition is the leading column of the tenant-keyed index.
@pytest.mark.parametrize("role,sql", [
    ("aos_producer", "EXPLAIN UPDATE aos_traces SET status = 'completed', completed_at = now() "
                     "WHERE trace_id = 'tr-x' AND status = 'running'"),
    ("aos_producer", "EXPLAIN SELECT content_hash FROM aos_trace_steps WHERE trace_id = 'tr-x' ORDER BY step_index"),
    ("aos_logs", "EXPLAIN SELECT * FROM audit_ledger WHERE id = ANY(ARRAY['a', 'b'])"),
    ("aos_export", "EXPLAIN SELECT * FROM log_exports WHERE id = 'e'"),
    ("aos_overview", "EXPLAIN SELECT * FROM incidents WHERE id = 'i'"),
])
def test_reads_by_id_under_row_level_security_use_the_tenant_keyed_index(database_url, role, sql):
    tenant = make_tenant(database_url)
    with session(database_url, role, tenant) as conn:
        conn.execute("SET enable_seqscan = off")  # tiny tables: ask whether an index *can* serve
        plan = "\n".join(r[0] for r in conn.execute(sql))
    assert "Seq Scan" not in plan, plan
