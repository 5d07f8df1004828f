"""Hot reads in psycopg's pipeline mode (aos_runtime.db.pipelined, issue #22): BEGIN, the tenant
scope and the page travel together, and they answer what the unpipelined transaction answers —
under the same tenant scope (RLS), deadline and transaction."""
from __future__ import annotations

import time

import psycopg
import pytest

from aos_recording import bulk
from aos_runtime.db import Database, call_deadline, fetch_rows, fetch_value, pipelined
from services.logs import store
from tests.logins import login_url

pytestmark = pytest.mark.db


@pipelined
def _scope(conn):
    return fetch_value(conn, "SELECT current_setting('aos.tenant_id', true) || '/' || "
                             "current_setting('transaction_read_only') || '/' || "
                             "(SELECT count(*) FROM audit_ledger)::text", {})


@pipelined
def _sleep(conn, seconds: float):
    return fetch_value(conn, "SELECT pg_sleep(:s)::text", {"s": seconds})


@pipelined
def _fails(conn):
    fetch_rows(conn, "SELECT 1/0 AS x", {})


@pipelined
def _idle(conn):  # after COMMIT the next transaction on the same connection starts clean
    return fetch_value(conn, "SELECT count(*) FROM pg_stat_activity WHERE pid = pg_backend_pid() "
                             "AND backend_xid IS NULL", {})


async def test_pipelined_pages_equal_unpipelined_and_stay_in_their_tenant(databases):
    url = databases.create()
    bulk.load(url, bulk.Volume(tenants=2, ledger=120, traces=10, steps=1, system=20))
    tenant, other = bulk.tenant_ids(2)
    db = Database(login_url(url, "logs"), service="logs", pool_size=1)
    try:
        assert store.list_audit_entries.pipelined and store.get_audit_entry.pipelined
        for filters in (store.AuditFilters(), store.AuditFilters(actor_type="SYSTEM")):
            fast = await db.run(tenant, store.list_audit_entries, tenant, filters, None, 50)
            slow = await db.run(tenant, lambda c, *a: store.list_audit_entries(c, *a), tenant, filters, None, 50)
            assert fast == slow and fast.rows and fast.has_more == (fast.total > 50)
            if filters == store.AuditFilters():
                assert fast.total == 60  # the ledger's size (120 entries over 2 tenants), read with the page
        entry = fast.rows[0]
        assert await db.run(tenant, store.get_audit_entry, tenant, entry["id"]) is not None
        # The other tenant's scope: forged tenant parameters find none of the first tenant's rows.
        theirs = await db.run(other, store.list_audit_entries, tenant, store.AuditFilters(), None, 50)
        assert theirs.rows == [] and theirs.total == 0
        assert await db.run(other, store.get_audit_entry, tenant, entry["id"]) is None
        mine_seen_by_other = await db.run(other, store.list_audit_entries, other, store.AuditFilters(), None, 50)
        assert mine_seen_by_other.rows and all(r["tenant_id"] == other for r in mine_seen_by_other.rows)
        # The scope is set before the work's first statement (same round trip), read-only session.
        assert await db.run(tenant, _scope) == f"{tenant}/on/60"
        assert await db.run(None, _scope) == "/on/0"
    finally:
        await db.close()


async def test_a_pipelined_failure_raises_and_leaves_the_connection_clean(database_url):
    db = Database(login_url(database_url, "logs"), service="logs", pool_size=1)
    try:
        with pytest.raises(psycopg.errors.DivisionByZero):
            await db.run("t", _fails)
        assert await db.run("t", _idle) == 1  # the one pooled connection serves the next call
        assert await db.run("t", _scope) == "t/on/0"
    finally:
        await db.close()


async def test_the_deadline_bounds_a_pipelined_read(database_url):
    db = Database(login_url(database_url, "logs"), service="logs", pool_size=1)
    call_deadline.set(time.monotonic() + 0.3)
    started = time.monotonic()
    try:
        with pytest.raises(psycopg.errors.QueryCanceled):
            await db.run("t", _sleep, 5)
        assert time.monotonic() - started < 2
    finally:
        call_deadline.set(None)
        await db.close()


async def test_pipelined_reads_keep_their_pooled_connection(database_url):
    """The connection goes back to the pool usable: calls do not open new ones."""
    from sqlalchemy import event
    db = Database(login_url(database_url, "logs"), service="logs", pool_size=1)
    opened = []
    event.listen(db.engine, "connect", lambda *a: opened.append(1))
    try:
        for _ in range(20):
            assert await db.run("t", _scope) == "t/on/0"
        assert len(opened) == 1
    finally:
        await db.close()


@pipelined
def _plan_mode(conn):
    return fetch_value(conn, "SELECT current_setting('plan_cache_mode')", {})


def _plan_mode_unmarked(conn):
    return _plan_mode(conn)


async def test_hot_reads_keep_generic_plans_only_in_their_own_transaction(database_url):
    db = Database(login_url(database_url, "logs"), service="logs", pool_size=1)
    try:
        assert await db.run("t", _plan_mode) == "force_generic_plan"
        assert await db.run("t", _plan_mode_unmarked) == "auto"  # SET LOCAL: gone with the transaction
    finally:
        await db.close()


async def test_the_ledger_reads_in_binary_format_the_values_text_gives(databases):
    # The ledger's page and GetAuditEntry read their rows in binary format (issue #22): the same
    # values of the same types as the text format and SQLAlchemy give, for v1 entries, v2 entries
    # (commitments: jsonb) and entries joined to a trace.
    from datetime import datetime, timedelta, timezone

    from sqlalchemy import text

    from aos_evidence.queries import AUDIT_SELECT
    from aos_recording.sources import SourceWriter
    from aos_recording.writers import AuditLedgerWriter, Producer, TraceRecorder

    url = databases.create()
    bulk.load(url, bulk.Volume(tenants=1, ledger=80, traces=10, steps=1, system=0))
    (tenant,) = bulk.tenant_ids(1)
    producer = Producer(login_url(url, "producer"))
    t0 = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=timezone.utc)
    with producer.transaction(tenant) as conn:
        SourceWriter(conn).ensure_tenant(tenant_id=tenant, name="binary", created_at=t0)
        TraceRecorder(conn).create_trace(tenant_id=tenant, run_id="run-binary", started_at=t0)
        for i in range(3):
            AuditLedgerWriter(conn).append(
                tenant_id=tenant, event_type="ApiKeyCreated", entity_type="API_KEY", entity_id=f"key-{i}",
                actor_type="HUMAN", actor_id="subj-1", action_reason=f"key {i}", correlation_id="run-binary",
                after_state={"owner_email": "a@example.com", "n": i}, created_at=t0 + timedelta(seconds=i),
                data_subject="subj-1")
    producer.close()
    db = Database(login_url(url, "logs"), service="logs", pool_size=1)
    sql = AUDIT_SELECT.format(extra=", a.before_state, a.after_state") + \
        " WHERE a.tenant_id = :tenant ORDER BY a.created_at DESC, a.id DESC"

    def read(conn):
        return (fetch_rows(conn, sql, {"tenant": tenant}, binary=True), fetch_rows(conn, sql, {"tenant": tenant}),
                [dict(r) for r in conn.execute(text(sql), {"tenant": tenant}).mappings()])

    try:
        binary, textual, alchemy = await db.run(tenant, read)
        assert len(binary) == 83
        assert binary == textual == alchemy
        assert [[type(v) for v in r.values()] for r in binary] == [[type(v) for v in r.values()] for r in textual]
        assert [[v.isoformat() for v in r.values() if isinstance(v, datetime)] for r in binary] == \
            [[v.isoformat() for v in r.values() if isinstance(v, datetime)] for r in textual]
        v2 = [r for r in binary if r["hash_version"] == 2]
        assert len(v2) == 3 and all(isinstance(r["commitments"], dict) and r["trace_id"] for r in v2)
        # The hot reads themselves: the page and GetAuditEntry answer those rows.
        page = await db.run(tenant, store.list_audit_entries, tenant, store.AuditFilters(), None, 50)
        assert [r["id"] for r in page.rows] == [r["id"] for r in textual[:50]]
        assert all(r == {k: t[k] for k in r} for r, t in zip(page.rows, textual) if r["hash_version"] == 1)
        one = await db.run(tenant, store.get_audit_entry, tenant, v2[0]["id"])
        assert one is not None and one["commitments"] == v2[0]["commitments"]
    finally:
        await db.close()


async def test_a_total_past_the_exact_cap_is_a_flagged_estimate_in_a_pipelined_read(databases, monkeypatch):
    """Past EXACT_TOTAL_LIMIT matches a list's total is the planner's estimate, read with EXPLAIN:
    in pipeline mode that statement too must be read through the driver (through SQLAlchemy it
    came back empty: INTERNAL on the page)."""
    from datetime import datetime, timezone

    from aos_runtime import keyset

    monkeypatch.setattr(keyset, "EXACT_TOTAL_LIMIT", 100)
    url = databases.create()
    bulk.load(url, bulk.Volume(tenants=1, ledger=400, traces=0, steps=0, system=0))
    (tenant,) = bulk.tenant_ids(1)
    db = Database(login_url(url, "logs"), service="logs", pool_size=1)
    try:
        wide = store.AuditFilters(created_after=datetime(2000, 1, 1, tzinfo=timezone.utc))
        first = await db.run(tenant, store.list_audit_entries, tenant, wide, None, 50)
        assert first.total_is_estimate and first.total > 100 and first.has_more
        last = first.rows[-1]
        second = await db.run(tenant, store.list_audit_entries, tenant, wide, (last["created_at"].isoformat(), last["id"]), 50)
        assert second.total_is_estimate and second.total > 100 and len(second.rows) == 50
    finally:
        await db.close()
