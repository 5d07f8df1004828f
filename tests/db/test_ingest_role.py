"""aos_ingest (migrations 0017, 0020, 0022, 0024): appends audit entries, system records and finished runs
(run record, activity row, trace, steps; seals the trace it created) of its session's tenant,
reads them back for the idempotency check; keeps, reads and drops the OTLP spans of traces
not sealed yet (0024); and can do nothing else."""
from __future__ import annotations

import hashlib
from datetime import datetime, timezone

import psycopg
import pytest
from sqlalchemy import create_engine, text

from aos_recording.writers import AuditLedgerWriter, EvidenceConflict
from aos_runtime.db import sync_url
from tests.db.sessions import ledger_report, make_tenant, new_id, session
from tests.logins import login_url

pytestmark = pytest.mark.db

ROLE = "aos_ingest"
GRANTED = {("audit_ledger", "SELECT"), ("audit_ledger", "INSERT"), ("system_records", "SELECT"),
           ("system_records", "INSERT"),
           *((table, privilege) for table in ("llm_run_records", "worker_runs", "aos_traces", "aos_trace_steps")
             for privilege in ("SELECT", "INSERT")),
           ("aos_traces", "UPDATE"),
           # 0022_retention_policies: legal holds read (the holds an erasure must not pass)
           ("legal_holds", "SELECT"),
           # 0023_erasure (docs/ERASURE.md): v2 payloads written and read back for retries, erasures'
           # tombstones read
           ("evidence_payloads", "SELECT"), ("evidence_payloads", "INSERT"), ("evidence_erasures", "SELECT"),
           ("erased_payloads", "SELECT"),
           # 0024_otlp_staging: OTLP spans kept until their trace is whole
           *(("otlp_staged_spans", privilege) for privilege in ("SELECT", "INSERT", "DELETE")),
           # 0026_erasure_exports: the export artifacts an erasure deleted, read for its answer
           ("erased_export_artifacts", "SELECT")}


def test_it_holds_exactly_its_grants(database_url):
    with session(database_url) as conn:
        held = {(table, privilege) for table, privilege in conn.execute(
            "SELECT c.relname, p.privilege FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "CROSS JOIN unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES', "
            "'TRIGGER']) AS p(privilege) WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm') "
            "AND has_table_privilege(%s, c.oid, p.privilege)", (ROLE,)).fetchall()}
        attributes = conn.execute("SELECT rolsuper, rolcreaterole, rolcreatedb, rolbypassrls, rolreplication "
                                  "FROM pg_roles WHERE rolname = %s", (ROLE,)).fetchone()
        temporary = conn.execute("SELECT has_database_privilege(%s, current_database(), 'TEMPORARY')",
                                 (ROLE,)).fetchone()[0]
    assert held == GRANTED
    assert attributes == (False, False, False, False, False)
    assert temporary is False


def test_it_appends_only_in_its_sessions_tenant(database_url):
    a, b = make_tenant(database_url), make_tenant(database_url)
    digest = hashlib.sha256(b"x").digest()
    insert = ("INSERT INTO audit_ledger (id, tenant_id, event_type, entity_type, entity_id, actor_type, created_at, "
              "content_hash) VALUES (%s, %s, 'LimitCreated', 'LIMIT', 'lim', 'SYSTEM', now(), %s)")
    with session(database_url, ROLE, a) as conn:
        conn.execute(insert, (new_id("aud"), a, digest))
        with pytest.raises(psycopg.errors.InsufficientPrivilege):  # row-level security's WITH CHECK
            conn.execute(insert, (new_id("aud"), b, digest))
        for statement in ("UPDATE audit_ledger SET entity_id = 'x'", "DELETE FROM system_records",
                          "UPDATE worker_runs SET cost_cents = 0", "DELETE FROM aos_trace_steps",
                          "SELECT count(*) FROM incidents", "SELECT count(*) FROM tenants",
                          "INSERT INTO tenants (id, name) VALUES ('t-new', 'n')"):
            with pytest.raises(psycopg.Error) as err:
                conn.execute(statement)
            assert err.value.sqlstate in ("42501", "AOS01"), statement
    with session(database_url, ROLE, b) as conn:
        assert conn.execute("SELECT count(*) FROM audit_ledger").fetchone()[0] == 0  # a's entry is not b's to see


def test_an_append_once_retry_and_conflict_as_the_ingest_login(database_url):
    """The writer the Ingest service uses, in the service's own login: one entry per id."""
    tenant = make_tenant(database_url)
    engine = create_engine(sync_url(login_url(database_url, "ingest")))
    fields = dict(tenant_id=tenant, entry_id="evt-1", event_type="LimitCreated", entity_type="LIMIT",
                  entity_id="lim-1", actor_type="AGENT", actor_id="agent-7",
                  created_at=datetime(2026, 12, 1, tzinfo=timezone.utc))
    outcomes: list = []
    try:
        for changes in ({}, {}, {"entity_id": "lim-2"}):
            with engine.begin() as conn:
                conn.execute(text("SELECT set_config('aos.tenant_id', :t, true)"), {"t": tenant})
                writer = AuditLedgerWriter(conn)
                writer.hold_producer_ids(tenant)
                try:
                    entry, created = writer.append_once(**{**fields, **changes})
                    outcomes.append((entry.seq, created))
                except EvidenceConflict:
                    outcomes.append("conflict")
    finally:
        engine.dispose()
    assert outcomes == [(1, True), (1, False), "conflict"]
    assert ledger_report(database_url, tenant).ok


def test_kept_otlp_spans_are_the_sessions_tenants_and_only_ingest_finds_quiet_ones(database_url):
    """Migration 0024: otlp_staged_spans under row-level security; aos_otlp_quiet_traces (ids
    only, across tenants, for the sealer) executable by aos_ingest alone."""
    a, b = make_tenant(database_url), make_tenant(database_url)
    trace = hashlib.sha256(a.encode()).hexdigest()[:32]
    insert = ("INSERT INTO otlp_staged_spans (tenant_id, otel_trace_id, span_id, span, resource, received_at) "
              "VALUES (%s, %s, %s, '\\x00', '\\x00', now() - interval '1 hour')")
    with session(database_url, ROLE, a) as conn:
        conn.execute(insert, (a, trace, "01" * 8))
        with pytest.raises(psycopg.errors.InsufficientPrivilege):  # row-level security's WITH CHECK
            conn.execute(insert, (b, trace, "02" * 8))
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute(insert, (a, "not-hex", "03" * 8))
    with session(database_url, ROLE, b) as conn:
        conn.execute(insert, (b, trace, "01" * 8))  # the same trace id in another tenant: its own row
        assert conn.execute("SELECT tenant_id FROM otlp_staged_spans").fetchall() == [(b,)]
        assert conn.execute("DELETE FROM otlp_staged_spans WHERE tenant_id = %s", (a,)).rowcount == 0  # a's unseen
    with session(database_url, ROLE) as conn:  # the sealer: no tenant scope, ids of both
        quiet = set(conn.execute("SELECT * FROM aos_otlp_quiet_traces(now(), 1000)").fetchall())
        assert {(a, trace), (b, trace)} <= quiet
        assert not {(a, trace), (b, trace)} & set(
            conn.execute("SELECT * FROM aos_otlp_quiet_traces(now() - interval '2 hours', 1000)").fetchall())
        assert conn.execute("SELECT count(*) FROM otlp_staged_spans").fetchone()[0] == 0
    for role in ("aos_logs", "aos_export", "aos_overview", "aos_producer"):
        with session(database_url, role, a) as conn:
            for statement in ("SELECT * FROM aos_otlp_quiet_traces(now(), 10)", "SELECT * FROM otlp_staged_spans"):
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    conn.execute(statement)
