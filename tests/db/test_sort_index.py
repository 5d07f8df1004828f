"""The lists' `sort` (migrations 0025, 0029, 0031, 0033): every sort field, in either order, first page and a
later one, is a walk of an index — the plan has no Sort node over the table — and the rows come in
(field, created_at, id) order. With sorting disabled in the planner a plan still sorts when no
index holds the key in that order, so each of these fails without the migrations' indexes (the actor sort without
0029's, on the ledger's old actor index). A later page's keyset must be an index condition: under row-level
security only a leakproof one can be, which 0025's severity rank function (0031 made it a CASE) and its
tokens sum (int8 `+`; 0033 made it a stored column) were not."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import create_engine, event, text

from aos_recording import bulk
from aos_recording.writers import LlmRunRecordWriter, Producer
from aos_runtime.db import sync_url
from services.logs import store
from tests.logins import login_url

pytestmark = pytest.mark.db

T0 = datetime(2026, 11, 2, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def loaded(databases):
    url = databases.create()
    bulk.load(url, bulk.Volume(tenants=2, ledger=3_000, traces=20, steps=2, system=1_500))
    tenant = bulk.tenant_ids(2)[0]
    producer = Producer(login_url(url, "producer"), pool_size=1)
    try:
        with producer.transaction(tenant) as conn:
            runs = LlmRunRecordWriter(conn)
            for i in range(300):
                at = T0 + timedelta(minutes=i)
                runs.write(tenant_id=tenant, run_id=f"{tenant}.sorted-{i}", provider="openai", model="gpt",
                           execution_status="succeeded", started_at=at - timedelta(minutes=(i * 7) % 50),
                           created_at=at, cost_cents=(i * 37) % 11 * 100, input_tokens=(i * 13) % 17,
                           output_tokens=i % 5)
    finally:
        producer.close()
    with create_engine(sync_url(url)).begin() as conn:
        conn.execute(text("ANALYZE"))
    return url, tenant


def nodes(node):
    yield node
    for child in node.get("Plans", []):
        yield from nodes(child)


CASES = [
    ("audit", "event_type", lambda conn, t, asc, after: store.list_audit_entries(
        conn, t, store.AuditFilters(sort="event_type", ascending=asc), after, 20), "audit_ledger"),
    ("audit", "entity_type", lambda conn, t, asc, after: store.list_audit_entries(
        conn, t, store.AuditFilters(sort="entity_type", ascending=asc), after, 20), "audit_ledger"),
    ("audit", "actor", lambda conn, t, asc, after: store.list_audit_entries(
        conn, t, store.AuditFilters(sort="actor", ascending=asc), after, 20), "audit_ledger"),
    ("runs", "started_at", lambda conn, t, asc, after: store.list_runs(
        conn, t, store.RunFilters(sort="started_at", ascending=asc), after, 20), "llm_run_records"),
    ("runs", "total_cost_cents", lambda conn, t, asc, after: store.list_runs(
        conn, t, store.RunFilters(sort="total_cost_cents", ascending=asc), after, 20), "llm_run_records"),
    ("runs", "total_tokens", lambda conn, t, asc, after: store.list_runs(
        conn, t, store.RunFilters(sort="total_tokens", ascending=asc), after, 20), "llm_run_records"),
    ("system", "severity", lambda conn, t, asc, after: store.list_system_records(
        conn, t, {"sort": "severity", "ascending": asc}, after, 20), "system_records"),
]


@pytest.mark.parametrize("ascending", [False, True])
@pytest.mark.parametrize("name,sort,call,table", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_every_sort_walks_an_index(loaded, name, sort, call, table, ascending):
    url, tenant = loaded
    engine = create_engine(sync_url(url), connect_args={"options": "-c role=aos_logs"})
    seen: list[tuple[str, object]] = []
    event.listen(engine, "before_cursor_execute",
                 lambda conn, cursor, statement, params, context, many: seen.append((statement, params)))
    with engine.begin() as conn:
        conn.execute(text("SELECT set_config('aos.tenant_id', :t, true)"), {"t": tenant})
        conn.execute(text("SET LOCAL enable_sort = off; SET LOCAL enable_seqscan = off"))
        first = call(conn, tenant, ascending, None)
        last = first.rows[-1]
        key = last["sort_key"]
        after = [last["created_at"].astimezone(timezone.utc).isoformat(), last["id"],
                 key.isoformat() if isinstance(key, datetime) else key]
        seen.clear()
        second = call(conn, tenant, ascending, after)
        statement, params = next((s, p) for s, p in seen if "ORDER BY" in s and "LIMIT" in s)
        plan = conn.exec_driver_sql("EXPLAIN (FORMAT JSON) " + statement, params).scalar_one()
    engine.dispose()
    rows = first.rows + second.rows
    assert first.has_more and len(rows) == 40
    keys = [(r["sort_key"], r["created_at"], r["id"]) for r in rows]
    assert keys == sorted(keys, reverse=not ascending) and len(set(keys)) == 40
    if sort == "total_tokens":  # the key is the run's input + output tokens, ties broken by (created_at, id)
        assert all(r["sort_key"] == r["input_tokens"] + r["output_tokens"] for r in rows)
        assert len({k for k, _, _ in keys}) < len(keys)
    scans = {n.get("Index Name", "") for n in nodes(plan[0]["Plan"]) if "Index" in n["Node Type"]}
    assert not list(sorted_scans(plan[0]["Plan"], table)), (statement, scans)
    assert any(i.startswith((table, f"ix_{table}")) for i in scans), scans
    # The later page starts at its position in the index: the keyset is an index condition (under
    # row-level security only a leakproof one can be), not a filter over the rows before it.
    keyed = [n for n in nodes(plan[0]["Plan"]) if n.get("Relation Name", "").startswith(table)
             and "Index" in n["Node Type"]]
    assert keyed and all("created_at" in n.get("Index Cond", "") for n in keyed), [
        (n.get("Index Name"), n.get("Index Cond"), n.get("Filter")) for n in keyed]


def sorted_scans(node, table: str, sorting: bool = False):
    """Scans of ``table`` whose rows a Sort above them orders, unbounded: a Sort over a LIMITed
    subquery (the system list's merge of two pages) sorts a page, not the table; a Sort inside
    the lateral join of a run's trace sorts that run's traces, not the list."""
    if node["Node Type"] in ("Sort", "Incremental Sort"):
        sorting = True
    elif node["Node Type"] == "Limit":
        sorting = False
    if sorting and node.get("Relation Name", "").startswith(table):
        yield node
    for child in node.get("Plans", []):
        yield from sorted_scans(child, table, sorting)


@pytest.mark.parametrize("sort", [None, "actor"])
def test_the_actor_filter_walks_the_actor_index(loaded, sort):
    """The actor_id filter is written on the actor index's expression (0029): it stays an index
    condition of that index (alone, and sorted by actor), with no Sort of the tenant's entries."""
    url, tenant = loaded
    engine = create_engine(sync_url(url), connect_args={"options": "-c role=aos_logs"})
    seen: list[tuple[str, object]] = []
    event.listen(engine, "before_cursor_execute",
                 lambda conn, cursor, statement, params, context, many: seen.append((statement, params)))
    with engine.begin() as conn:
        conn.execute(text("SELECT set_config('aos.tenant_id', :t, true)"), {"t": tenant})
        conn.execute(text("SET LOCAL enable_sort = off; SET LOCAL enable_seqscan = off"))
        page = store.list_audit_entries(conn, tenant, store.AuditFilters(actor_id="actor-7", sort=sort), None, 20)
        statement, params = next((s, p) for s, p in seen if "ORDER BY" in s and "LIMIT" in s)
        plan = conn.exec_driver_sql("EXPLAIN (FORMAT JSON) " + statement, params).scalar_one()
    engine.dispose()
    assert page.rows and {r["actor_id"] for r in page.rows} == {"actor-7"}
    assert not list(sorted_scans(plan[0]["Plan"], "audit_ledger"))
    # Each partition's scan has the actor in its index condition (not a filter over the tenant's rows).
    scans = [n for n in nodes(plan[0]["Plan"]) if n.get("Relation Name", "").startswith("audit_ledger")]
    assert scans and all("actor_id" in n.get("Index Cond", "") for n in scans), [
        (n.get("Index Name"), n.get("Index Cond"), n.get("Filter")) for n in scans]
