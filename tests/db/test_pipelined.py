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
