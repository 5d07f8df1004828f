"""aos_record_access (migration 0019): the Logs and Export sessions append access entries of
their session's tenant through it, and nothing else — tried as the services' own logins."""
from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta, timezone

import psycopg
import pytest

from aos_recording import hashing
from aos_recording.writers import AuditLedgerWriter
from tests.db.sessions import ledger_report, make_tenant, new_id
from tests.logins import login_url

pytestmark = pytest.mark.db

CALL = "SELECT aos_record_access(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s)"


def _service_session(database_url: str, service: str, tenant: str | None):
    """The service's own login, as aos_runtime.db opens it (Logs: read-only by default), in a
    read-write transaction scoped to ``tenant`` as the access recorder's flush is."""
    options = "-c default_transaction_read_only=on" if service in ("logs", "overview") else ""
    conn = psycopg.connect(login_url(database_url, service), options=options)
    conn.execute("SET TRANSACTION READ WRITE")
    conn.execute("SELECT set_config('aos.tenant_id', %s, true)", (tenant or "",))
    return conn


def _access(tenant: str, **changes) -> tuple:
    """The function's arguments for a well-formed AccessGranted of ``tenant`` (with its true hash)."""
    entry = AuditLedgerWriter.entry(
        tenant_id=tenant, event_type="AccessGranted", entity_type="LLM_RUN", entity_id="run-1",
        actor_type="HUMAN", actor_id="user-1", action_reason="/aos.logs.v1.LlmRunsService/GetLlmRunTrace",
        correlation_id="req-1", after_state={"rpc": "/aos.logs.v1.LlmRunsService/GetLlmRunTrace", "success": True},
        created_at=datetime.now(timezone.utc), entry_id=new_id("acc"))
    entry.update(changes)
    digest = changes.get("content_hash", hashing.ledger_content_hash(entry))
    return (entry["id"], entry["event_type"], entry["entity_type"], entry["entity_id"], entry["actor_type"],
            entry["actor_id"], entry["action_reason"], entry["correlation_id"], entry["created_at"],
            json.dumps(entry["after_state"]), digest)


@pytest.mark.parametrize("service", ["logs", "export"])
def test_the_service_appends_an_access_entry_the_chain_verifies(database_url, service):
    tenant = make_tenant(database_url)
    with _service_session(database_url, service, tenant) as conn:
        seqs = [conn.execute(CALL, _access(tenant)).fetchone()[0] for _ in range(3)]
        conn.commit()
    assert seqs == [1, 2, 3]
    report = ledger_report(database_url, tenant)
    assert report.ok and report.checked == 3, report.anomalies


@pytest.mark.parametrize(("changes", "sqlstate"), [
    ({"event_type": "LimitOverrideGranted"}, "42501"),   # any other event: refused
    ({"event_type": "EvidenceExported"}, "42501"),
    ({"entity_type": "LIMIT"}, "42501"),                 # not a resource a read names
    ({"created_at": datetime.now(timezone.utc) - timedelta(hours=2)}, "23514"),  # backdated
    ({"created_at": datetime.now(timezone.utc) + timedelta(hours=1)}, "23514"),  # ahead
    ({"after_state": ["not", "an", "object"]}, "23514"),
    ({"content_hash": b"short"}, "22023"),               # the chain trigger: a 32-byte hash
])
def test_the_function_refuses_anything_but_an_access_entry(database_url, changes, sqlstate):
    tenant = make_tenant(database_url)
    with _service_session(database_url, "logs", tenant) as conn:
        with pytest.raises(psycopg.Error) as err:
            conn.execute(CALL, _access(tenant, **changes))
    assert err.value.sqlstate == sqlstate, err.value


def test_no_tenant_no_entry_and_never_another_tenants(database_url):
    a, b = make_tenant(database_url), make_tenant(database_url)
    with _service_session(database_url, "logs", None) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(CALL, _access(a))
    # A session scoped to a: whatever tenant the caller meant, the entry is a's (no parameter names one).
    with _service_session(database_url, "logs", a) as conn:
        conn.execute(CALL, _access(b))
        conn.commit()
    assert ledger_report(database_url, a).checked == 1
    assert ledger_report(database_url, b).checked == 0


def test_the_logs_session_still_writes_no_table(database_url):
    """The function is its one door: a read-write transaction gives the Logs login no INSERT,
    UPDATE or DELETE on the ledger, and no other function of the kind."""
    tenant = make_tenant(database_url)
    digest = hashlib.sha256(b"x").digest()
    for statement, args in (
            ("INSERT INTO audit_ledger (id, tenant_id, event_type, entity_type, entity_id, actor_type, created_at, "
             "content_hash) VALUES (%s, %s, 'AccessGranted', 'LLM_RUN', 'r', 'HUMAN', now(), %s)",
             (new_id("aud"), tenant, digest)),
            ("UPDATE audit_ledger SET entity_id = 'x'", ()),
            ("DELETE FROM audit_ledger", ()),
            ("SELECT aos_record_ledger_checkpoints('x', '{}'::jsonb)", ())):
        with _service_session(database_url, "logs", tenant) as conn:
            with pytest.raises(psycopg.Error) as err:
                conn.execute(statement, args)
        assert err.value.sqlstate == "42501", statement


@pytest.mark.parametrize("service", ["overview", "ingest", "producer"])
def test_no_other_login_may_call_it(database_url, service):
    tenant = make_tenant(database_url)
    with _service_session(database_url, service, tenant) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(CALL, _access(tenant))


def test_a_wrong_content_hash_is_caught_by_the_integrity_walk(database_url):
    """What the database cannot check (SPEC §5's JCS in SQL), the chain verification does."""
    tenant = make_tenant(database_url)
    with _service_session(database_url, "logs", tenant) as conn:
        conn.execute(CALL, _access(tenant))
        conn.execute(CALL, _access(tenant, content_hash=hashlib.sha256(b"forged").digest()))
        conn.commit()
    report = ledger_report(database_url, tenant)
    assert [(a.seq, a.kind) for a in report.anomalies] == [(2, "CONTENT_MISMATCH")]


def test_the_function_pins_its_search_path(database_url):
    with psycopg.connect(database_url) as conn:
        config, definer, owner = conn.execute(
            "SELECT p.proconfig, p.prosecdef, r.rolname FROM pg_proc p JOIN pg_roles r ON r.oid = p.proowner "
            "WHERE p.proname = 'aos_record_access'").fetchone()
    assert definer and owner == "aos_owner"
    assert "search_path=pg_catalog, public, pg_temp" in config


def test_the_recorders_batch_statement_stores_each_entry_as_hashed(database_url):
    """The flush's one statement (aos_runtime.access._append: the rows as one JSON array) stores
    every field the content hash covers as it was hashed — the time to the microsecond, the
    after_state's text, a missing actor as NULL — in the buffer's order, and the chain verifies."""
    from sqlalchemy import create_engine, text

    from aos_runtime import access
    from aos_runtime.db import sync_url

    tenant = make_tenant(database_url)
    # The function takes only a time near now: a whole-second one would not show a lost microsecond.
    at = datetime.now(timezone.utc).replace(microsecond=123456) - timedelta(seconds=1)
    client = access.Client("2001:db8::7", 'console "beta" — ünïcode/1.0 \\ {}')
    items = [access._Pending(tenant, "HUMAN", "user-1" if i % 2 else "", i % 3 != 0, "LLM_RUN", f"run-{i}",
                             "/aos.logs.v1.LlmRunsService/GetLlmRun", None if i % 3 else "not_found",
                             client if i % 2 else access.Client(None, None), f"req-{i}",
                             at + timedelta(microseconds=i)) for i in range(7)]
    engine = create_engine(sync_url(login_url(database_url, "logs")))
    try:
        with engine.connect() as conn:
            conn.execute(text("SET TRANSACTION READ WRITE"))
            conn.execute(text("SELECT set_config('aos.tenant_id', :t, true)"), {"t": tenant})
            access._append(conn, items)
            conn.commit()
    finally:
        engine.dispose()
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT entity_id, actor_id, created_at, after_state, content_hash, event_type, "
                            "action_reason, id FROM audit_ledger WHERE tenant_id = %s ORDER BY seq", (tenant,)).fetchall()
    assert [r[0] for r in rows] == [f"run-{i}" for i in range(7)]
    for item, (_, actor, created, after, digest, event, reason, entry_id) in zip(items, rows, strict=True):
        entry = {**access._entry(item), "id": entry_id}  # _entry names a new id each time
        assert created == item.at and actor == (item.actor_id or None) and after == entry["after_state"]
        assert event == ("AccessGranted" if item.granted else "AccessDenied") and reason == entry["action_reason"]
        assert bytes(digest) == hashing.ledger_content_hash({**entry, "created_at": created, "after_state": after})
    report = ledger_report(database_url, tenant)
    assert report.ok and report.checked == 7, report.anomalies
