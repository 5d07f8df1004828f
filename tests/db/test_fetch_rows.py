"""The hot reads through psycopg directly (aos_runtime.db.fetch_rows, issue #22) give the rows
SQLAlchemy gives: same columns, values and types, under the same tenant scope (RLS)."""
from __future__ import annotations

import pytest
from sqlalchemy import create_engine, event, text

from aos_recording import bulk
from aos_recording.driver import driver_sql as _driver_sql
from aos_runtime.db import sync_url
from services.logs import store

pytestmark = pytest.mark.db


def test_placeholders_become_psycopgs_and_casts_and_percents_survive():
    assert _driver_sql("SELECT :a::text, x ->> 'k' LIKE 'a%' AND t = :t_1 AND '12:30' = :b") == \
        "SELECT %(a)s::text, x ->> 'k' LIKE 'a%%' AND t = %(t_1)s AND '12:30' = %(b)s"


def _read(engine, tenant: str, entry_id: str | None):
    with engine.begin() as conn:
        conn.execute(text("SELECT set_config('aos.tenant_id', :t, true)"), {"t": tenant})
        page = store.list_audit_entries(conn, tenant, store.AuditFilters(), None, 50)
        deep = store.list_audit_entries(conn, tenant, store.AuditFilters(actor_type="SYSTEM"), None, 5)
        system = store.list_system_records(conn, tenant, {}, None, 20)
        entry = store.get_audit_entry(conn, tenant, entry_id or page.rows[0]["id"])
        other_tenant = store.get_audit_entry(conn, "tenant-nobody", page.rows[0]["id"])
        return page, deep, system, entry, other_tenant


def test_direct_rows_equal_sqlalchemys(databases):
    url = databases.create()
    bulk.load(url, bulk.Volume(tenants=2, ledger=300, traces=40, steps=2, system=60))
    tenant, other = bulk.tenant_ids(2)
    direct = create_engine(sync_url(url), connect_args={"options": "-c role=aos_logs"})
    through = create_engine(sync_url(url), connect_args={"options": "-c role=aos_logs"})
    sent: list[str] = []
    event.listen(through, "before_cursor_execute", lambda c, cur, statement, *rest: sent.append(statement))
    try:
        fast = _read(direct, tenant, None)
        slow = _read(through, tenant, None)
        assert sent  # the observed engine went through SQLAlchemy
        for a, b in zip(fast[:3], slow[:3], strict=True):
            assert (a.total, a.total_is_estimate, a.has_more) == (b.total, b.total_is_estimate, b.has_more)
            assert [dict(r) for r in a.rows] == [dict(r) for r in b.rows] and a.rows
            assert [tuple(type(v) for v in r.values()) for r in a.rows] == \
                [tuple(type(v) for v in dict(r).values()) for r in b.rows]
        assert dict(fast[3]) == dict(slow[3])
        assert fast[4] is None and slow[4] is None
        # In the other tenant's scope, none of this tenant's rows.
        theirs = _read(direct, other, fast[3]["id"])
        assert theirs[3] is None and all(r["tenant_id"] == other for r in theirs[0].rows)
    finally:
        direct.dispose()
        through.dispose()
