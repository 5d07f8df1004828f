"""Evidence search in the database (migration 0021): the search views make ``doc @@ query`` an
index condition together with the tenant (on the tables, under row-level security, it cannot
be), and they show the session's tenant only, nothing without one."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from sqlalchemy import create_engine, event, text

from aos_recording import bulk
from aos_runtime.db import sync_url
from services.logs import store
from services.logs.search import normalise_query

pytestmark = pytest.mark.db

TABLES = ("audit_ledger", "aos_trace_steps", "system_records", "platform_records")
ENTRIES = 10_000  # one tenant's ledger where a word in every entry must be hash-joined (as at 10 M)
MIGRATION = Path(__file__).resolve().parents[2] / "migrations" / "versions" / "0021_evidence_search.py"


def migration():
    spec = importlib.util.spec_from_file_location("evidence_search_migration", MIGRATION)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def loaded(databases):
    url = databases.create()
    bulk.load(url, bulk.Volume(tenants=2, ledger=4_000, traces=100, steps=5, system=2_000))
    return url


def logs_engine(url: str):
    engine = create_engine(sync_url(url), connect_args={"options": "-c role=aos_logs"})
    seen: list[tuple[str, object]] = []
    event.listen(engine, "before_cursor_execute",
                 lambda conn, cursor, statement, params, context, many: seen.append((statement, params)))
    return engine, seen


def nodes(node):
    yield node
    for child in node.get("Plans", []):
        yield from nodes(child)


def test_each_source_is_searched_on_its_index_with_the_tenant(loaded):
    tenant = bulk.tenant_ids(2)[0]
    engine, seen = logs_engine(loaded)
    with engine.begin() as conn:
        conn.execute(text("SELECT set_config('aos.tenant_id', :t, true)"), {"t": tenant})
        # A tiny table may be read faster without an index: these plans must show the index is
        # usable (its expression is the view's, the tenant and the words both in its condition).
        conn.execute(text("SET LOCAL enable_seqscan = off; SET LOCAL enable_indexscan = off"))
        seen.clear()
        page = store.search_evidence(conn, tenant, store.SearchFilters(query="17"), None, 10)
        statement, params = next((s, p) for s, p in seen if "UNION ALL" in s)
        plan = conn.exec_driver_sql("EXPLAIN (FORMAT JSON) " + statement, params).scalar_one()
    engine.dispose()
    assert page.rows and {r["record"]["tenant_id"] for r in page.rows} <= {tenant, None}
    heaps = [n for n in nodes(plan[0]["Plan"]) if n["Node Type"] == "Bitmap Heap Scan"]
    for table in TABLES:
        scans = [child for heap in heaps if heap["Relation Name"].startswith(table)
                 for child in nodes(heap) if child["Node Type"] == "Bitmap Index Scan"]
        # (a partition holding a handful of the tenant's rows may be read on its tenant index instead)
        on_words = [s for s in scans if "@@" in s["Index Cond"]
                    and ("tenant_id" in s["Index Cond"] or table == "platform_records")]
        assert on_words, (table, [(s["Index Name"], s["Index Cond"][:80]) for s in scans])


def test_on_the_table_under_row_level_security_the_words_are_only_a_filter(loaded):
    # Why the views exist: @@ is not leakproof, so under the policies it is never an index
    # condition, and every row of the tenant would have its document computed.
    tenant = bulk.tenant_ids(2)[0]
    engine, _ = logs_engine(loaded)
    with engine.begin() as conn:
        conn.execute(text("SELECT set_config('aos.tenant_id', :t, true)"), {"t": tenant})
        conn.execute(text("SET LOCAL enable_seqscan = off; SET LOCAL enable_indexscan = off"))
        view = conn.execute(text("EXPLAIN SELECT id FROM audit_search v WHERE v.doc @@ "
                                 "websearch_to_tsquery('simple', 'event')")).scalars().all()
        # the index's own expression, on the table
        table = conn.execute(text(
            f"EXPLAIN SELECT id FROM audit_ledger WHERE tenant_id = :t AND ({migration().AUDIT_DOC})"
            " @@ websearch_to_tsquery('simple', 'event')"), {"t": tenant}).scalars().all()
    engine.dispose()
    on_view = [line for line in view if "Index Cond" in line]
    assert any("@@" in line for line in on_view), view
    assert not any("@@" in line for line in table if "Index Cond" in line), table


def test_a_search_view_shows_nothing_without_a_tenant_and_only_its_tenant_with_one(loaded):
    first, second = bulk.tenant_ids(2)
    engine, _ = logs_engine(loaded)
    with engine.begin() as conn:
        for view in ("audit_search", "trace_step_search", "system_search"):
            assert conn.execute(text(f"SELECT count(*) FROM {view}")).scalar_one() == 0, view
        conn.execute(text("SELECT set_config('aos.tenant_id', :t, true)"), {"t": first})
        for view in ("audit_search", "trace_step_search", "system_search"):
            tenants = conn.execute(text(f"SELECT DISTINCT tenant_id FROM {view}")).scalars().all()
            assert tenants == [first], (view, tenants)
            assert conn.execute(text(f"SELECT count(*) FROM {view} WHERE tenant_id = :t"),
                                {"t": second}).scalar_one() == 0
    engine.dispose()


@pytest.mark.parametrize("ascending", [False, True])
def test_a_lists_search_is_an_index_condition_with_the_tenant(loaded, ascending):
    """ListAuditEntries' and ListSystemRecords' `search` go through the same views: the words
    and the tenant are the GIN index's condition, in either order."""
    tenant = bulk.tenant_ids(2)[0]
    engine, seen = logs_engine(loaded)
    plans = {}
    with engine.begin() as conn:
        conn.execute(text("SELECT set_config('aos.tenant_id', :t, true)"), {"t": tenant})
        conn.execute(text("SET LOCAL enable_seqscan = off; SET LOCAL enable_indexscan = off"))
        for name, call in (
                ("audit_ledger", lambda: store.list_audit_entries(
                    conn, tenant, store.AuditFilters(search="17", ascending=ascending), None, 10)),
                ("system_records", lambda: store.list_system_records(
                    conn, tenant, {"search": "16", "ascending": ascending}, None, 10))):  # bulk.sys-16: tenant 0
            seen.clear()
            page = call()
            assert page.rows and {r["tenant_id"] for r in page.rows} <= {tenant, None}, name
            keys = [(r["created_at"], r["id"]) for r in page.rows]
            assert keys == sorted(keys, reverse=not ascending)
            statement, params = next((s, p) for s, p in seen if "LIMIT" in s and "v.doc @@ " in s)
            plans[name] = conn.exec_driver_sql("EXPLAIN (FORMAT JSON) " + statement, params).scalar_one()
    engine.dispose()
    for table, plan in plans.items():
        conditions = [n.get("Index Cond", "") for n in nodes(plan[0]["Plan"]) if n["Node Type"] == "Bitmap Index Scan"]
        assert any("@@" in c and "tenant_id" in c for c in conditions), table


def search_as(url: str, tenant: str, query: str, after=None, limit: int = 50):
    engine, _ = logs_engine(url)
    with engine.begin() as conn:
        conn.execute(text("SELECT set_config('aos.tenant_id', :t, true)"), {"t": tenant})
        page = store.search_evidence(conn, tenant, store.SearchFilters(query=query), after, limit)
        exact = conn.execute(text(
            "SELECT (SELECT count(*) FROM audit_search v WHERE v.doc @@ websearch_to_tsquery('simple', :q))"
            " + (SELECT count(*) FROM trace_step_search v WHERE v.doc @@ websearch_to_tsquery('simple', :q))"
            " + (SELECT count(*) FROM system_search v WHERE v.doc @@ websearch_to_tsquery('simple', :q))"
            " + (SELECT count(*) FROM platform_search v WHERE v.doc @@ websearch_to_tsquery('simple', :q))"),
            {"q": query}).scalar_one()
    engine.dispose()
    return page, exact


def test_a_total_is_exact_up_to_the_lists_limit_in_one_count(loaded):
    # `actor` is in every entry's actor id (2,000 per tenant), `limitcreated` in one in 30:
    # both exact (SPEC §3: up to 10,000), counted over the four sources in one statement.
    tenant = bulk.tenant_ids(2)[0]
    for query in ("actor", "limitcreated"):
        page, exact = search_as(loaded, tenant, query)
        assert (page.total, page.total_is_estimate, page.has_more) == (exact, False, True), query


def test_a_phrase_is_found_on_its_words_then_checked_newest_first_in_order(loaded):
    # "actor 17": the entries of actor-17, not those with `actor` and a 17 elsewhere (an
    # amount, an n, an id): every hit has the phrase, newest first, and the pages walk every
    # one once; the total is the phrase's, exact.
    tenant = bulk.tenant_ids(2)[0]
    seen, after = [], None
    while True:
        page, exact = search_as(loaded, tenant, '"actor 17"', after, limit=20)
        seen += page.rows
        assert (page.total, page.total_is_estimate) == (exact, False)
        if not page.has_more:
            break
        last = page.rows[-1]
        after = [last["created_at"].isoformat(), last["id"], last["source"]]
    assert len(seen) == exact > 20
    assert len({(r["source"], r["id"]) for r in seen}) == exact
    assert all(r["record"]["actor_id"] == "actor-17" for r in seen)
    keys = [(r["created_at"], r["id"]) for r in seen]
    assert keys == sorted(keys, reverse=True)
    engine, _ = logs_engine(loaded)
    with engine.begin() as conn:
        conn.execute(text("SELECT set_config('aos.tenant_id', :t, true)"), {"t": tenant})
        words = conn.execute(text("SELECT count(*) FROM audit_search v WHERE v.doc @@ "
                                  "websearch_to_tsquery('simple', 'actor 17')")).scalar_one()
    engine.dispose()
    assert words > exact  # there are candidates the phrase check turned away


# An OTLP span's step as services/ingest/otlp.py writes it (docs/INGEST.md's mapping).
OTLP_STEP = {
    "step_type": "MODEL_CALL", "source": "otlp",
    "input_data": '{"model": "gpt-4o", "operation": "chat"}', "output_data": '{"error": "quota exhausted"}',
    "metadata": '{"kind": "SPAN_KIND_CLIENT", "name": "chat gpt-4o", "span_id": "cfedfe66a0236172", '
                '"otel_trace_id": "00860b1e26243dd89420ecbfdbe8b88a", "parent_span_id": "3e542f991ebeab59", '
                '"attributes": {"gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": 100, '
                '"gen_ai.conversation.id": "conv-42"}, '
                '"resource": {"service.name": "checkout-agent", "telemetry.sdk.language": "python"}}',
}


@pytest.mark.parametrize(("query", "found"), [
    ("cfedfe66a0236172", True),                  # the span's id
    ("00860b1e26243dd89420ecbfdbe8b88a", True),  # the OTel trace id
    ("conv-42", True),                           # an attribute's value, an id
    ("gen_ai.request.model", True),              # an attribute's key
    ("checkout-agent", True),                    # the resource
    ('"quota exhausted"', True),                 # an output's phrase
    ("SPAN_KIND_CLIENT", True),
    ("request.model.gpt", True),                 # a key then its value: the jsonb by its text
    ("101", False), ("conv-4", False), ("model.request", False),
])
def test_a_trace_steps_document_matches_what_search_documents(loaded, query, found):
    """docs/DATABASE.md "Search": a step by its type, source, inputs, outputs and metadata —
    a jsonb by its text, keys and values. An OTLP step's metadata (its OTel ids, attributes and
    resource) is therefore found by each: the index that serves it must keep indexing them all
    (issue #21 measured cutting it, bench/step_search_cost.py)."""
    query_text, _ = normalise_query(query)
    engine = create_engine(sync_url(loaded))
    with engine.connect() as conn:
        got = conn.execute(text(
            f"SELECT {migration().STEP_DOC} @@ websearch_to_tsquery('simple'::regconfig, :q) "
            "FROM (SELECT CAST(:step_type AS text) AS step_type, CAST(:source AS text) AS source, "
            "CAST(:input_data AS jsonb) AS input_data, CAST(:output_data AS jsonb) AS output_data, "
            "CAST(:metadata AS jsonb) AS metadata) AS s"), {**OTLP_STEP, "q": query_text}).scalar_one()
        indexed = conn.execute(text(
            "SELECT pg_get_indexdef(indexrelid) FROM pg_index WHERE indexrelid = 'ix_aos_trace_steps_search'::regclass"
        )).scalar_one()
    engine.dispose()
    assert got is found
    # The document asked here is the index's (and the view's): the test follows it if it changes.
    assert ("aos_search_document(VARIADIC ARRAY[step_type, source, (input_data)::text, (output_data)::text, "
            "(metadata)::text])") in indexed


def test_held_payloads_are_searched_on_their_index_with_the_tenant(loaded):
    """Migration 0034: a format-2 record's payloads (evidence_payloads) are matched through the
    tenant-scoped view payload_search, where the words, the record type and the tenant are the
    GIN index's condition; the view shows the session's tenant only, nothing without one; the
    lists' matcher and SearchEvidence take the record's key from it."""
    from aos_recording.writers import AuditLedgerWriter, Producer
    from tests.logins import login_url

    first, second = bulk.tenant_ids(2)
    producer = Producer(login_url(loaded, "producer"), pool_size=1)
    try:
        for tenant in (first, second):
            with producer.transaction(tenant) as conn:
                AuditLedgerWriter(conn).append(
                    tenant_id=tenant, event_type="LimitUpdated", entity_type="LIMIT", entity_id=f"{tenant}.held",
                    actor_type="HUMAN", actor_id="adam", action_reason="echidna raised", data_subject="subj-idx")
    finally:
        producer.close()
    # Enough held payloads of each tenant that an index is worth reading (as the admin: the rows alone).
    with create_engine(sync_url(loaded)).begin() as admin:
        admin.execute(text(
            "INSERT INTO evidence_payloads (tenant_id, record_type, record_id, field, subject_id, salt, payload) "
            "SELECT t, 'audit_entry', 'filler-' || n, 'action_reason', 'subj-filler', sha256(n::text::bytea), "
            "to_jsonb('filler ' || chr(97 + n % 26) || chr(97 + (n / 26) % 26)) "
            "FROM unnest(CAST(:tenants AS text[])) t, generate_series(1, 3000) n"), {"tenants": [first, second]})
        admin.execute(text("ANALYZE evidence_payloads"))
    engine, seen = logs_engine(loaded)
    with engine.begin() as conn:
        assert conn.execute(text("SELECT count(*) FROM payload_search")).scalar_one() == 0
        conn.execute(text("SELECT set_config('aos.tenant_id', :t, true)"), {"t": first})
        assert conn.execute(text("SELECT DISTINCT tenant_id FROM payload_search")).scalars().all() == [first]
        conn.execute(text("SET LOCAL enable_seqscan = off; SET LOCAL enable_indexscan = off"))
        plan = conn.execute(text(
            "EXPLAIN (FORMAT JSON) SELECT p.record_id FROM payload_search p WHERE p.record_type = 'audit_entry' "
            "AND p.doc @@ websearch_to_tsquery('simple', 'echidna')")).scalar_one()
        seen.clear()
        page = store.list_audit_entries(conn, first, store.AuditFilters(search="echidna"), None, 10)
        hits = store.search_evidence(conn, first, store.SearchFilters(query="echidna"), None, 10)
    engine.dispose()
    conditions = [n.get("Index Cond", "") for n in nodes(plan[0]["Plan"]) if n["Node Type"] == "Bitmap Index Scan"]
    assert any("@@" in c and "tenant_id" in c and "record_type" in c for c in conditions), conditions
    assert [r["entity_id"] for r in page.rows] == [f"{first}.held"]
    assert [(r["record"]["entity_id"], r["matched_fields"]) for r in hits.rows] == [
        (f"{first}.held", ["action_reason"])]


def test_a_word_in_every_entry_is_a_hashed_semi_join_in_the_ledger_list(databases):
    """The lists' matcher (queries.search_match) with format-2 payloads' keys: a word in every
    entry of the tenant ("actor", from each entry's actor-N) must still be joined to the ledger by
    hashing its keys. As a UNION ALL of the row keys and the payload keys (0034's first form) the
    planner assumed 200 distinct keys and probed every partition's primary key once per key
    (370–480 ms p50 at 10 M entries, BENCHMARKS.md). A tenant of 10,000 entries, as there."""
    url = databases.create()
    bulk.load(url, bulk.Volume(tenants=1, ledger=ENTRIES, traces=0, steps=0, system=0))
    (tenant,) = bulk.tenant_ids(1)
    engine, seen = logs_engine(url)
    with engine.begin() as conn:
        conn.execute(text("SELECT set_config('aos.tenant_id', :t, true)"), {"t": tenant})
        page = store.list_audit_entries(conn, tenant, store.AuditFilters(search="actor"), None, 10)
        assert page.total == ENTRIES and len(page.rows) == 10
        counted = [(s, p) for s, p in seen if "count(" in s and "v.doc @@ " in s]
        plans = [conn.exec_driver_sql("EXPLAIN (FORMAT JSON) " + s, p).scalar_one() for s, p in counted]
    engine.dispose()
    assert plans, "the total is counted with the matcher"
    for plan in plans:
        joins = {(n["Node Type"], n.get("Join Type")) for n in nodes(plan[0]["Plan"]) if "Join Type" in n}
        assert joins & {("Hash Join", "Semi"), ("Hash Join", "Right Semi")}, joins


def plain_logs_engine(url: str):
    """As the logs login, nothing listening to its statements: fetch_rows' own psycopg path (the
    service's), where a statement can be prepared."""
    return create_engine(sync_url(url), connect_args={"options": "-c role=aos_logs"})


def reference(conn, query: str, limit: int) -> tuple[int, list[str]]:
    """The query's exact total and first ``limit`` ids over the four sources, newest first, by
    the views' own condition (custom-planned here: a statement of its own each time)."""
    union = " UNION ALL ".join(
        f"SELECT '{source}' AS source, v.id, v.created_at FROM {view} v "
        "WHERE v.doc @@ websearch_to_tsquery('simple', :q)"
        for source, view in (("AUDIT", "audit_search"), ("TRACE_STEP", "trace_step_search"),
                             ("SYSTEM", "system_search"), ("PLATFORM", "platform_search")))
    rows = conn.execute(text(f"SELECT id FROM ({union}) u ORDER BY created_at DESC, id DESC, source DESC"),
                        {"q": query}).scalars().all()
    return len(rows), list(rows[:limit])


# A rare word, a word in one entry in 30, a word in every entry, phrases (an actor id, a step's
# words), an exclusion: one connection's kept plans must answer each as its own.
QUERIES = ("17", "limitcreated", "actor", '"actor 17"', '"step 3"', "actor -limitcreated", "nosuchword")


def test_search_statements_keep_one_generic_plan_per_connection(loaded):
    """SearchEvidence's keys and count are prepared on their first use and planned once, generically
    (store.generic_plans: planning them over every source's monthly partitions was a third of a
    search at 10 M entries); each later search on the connection runs that plan, whatever its words."""
    tenant = bulk.tenant_ids(2)[0]
    engine = plain_logs_engine(loaded)
    with engine.connect() as conn:
        for query in ("limitcreated", "actor", "limitcreated"):
            with conn.begin():
                conn.execute(text("SELECT set_config('aos.tenant_id', :t, true)"), {"t": tenant})
                store.search_evidence(conn, tenant, store.SearchFilters(query=query), None, 10)
        prepared = conn.execute(text(
            "SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements")).all()
    engine.dispose()
    keys = [p for p in prepared if "UNION ALL" in p.statement and "count(" not in p.statement]
    counts = [p for p in prepared if "count(" in p.statement and "v.doc @@ " in p.statement]
    assert [(p.generic_plans, p.custom_plans) for p in keys] == [(3, 0)], prepared
    assert [(p.generic_plans, p.custom_plans) for p in counts] == [(3, 0)], prepared


def test_a_kept_plan_answers_every_query_as_its_own(loaded):
    """The same prepared statements for a rare word, a word everywhere, phrases and an exclusion, in
    turn, twice, on one connection: each page and total is the query's own (its exact count and
    newest ids by the views' own condition), as when each was planned for its words."""
    tenant = bulk.tenant_ids(2)[0]
    engine = plain_logs_engine(loaded)
    with engine.connect() as conn:
        for query in (*QUERIES, *QUERIES):
            with conn.begin():
                conn.execute(text("SELECT set_config('aos.tenant_id', :t, true)"), {"t": tenant})
                normalised, _ = normalise_query(query)
                page = store.search_evidence(conn, tenant, store.SearchFilters(query=normalised), None, 10)
                total, ids = reference(conn, normalised, 10)
            assert (page.total, page.total_is_estimate) == (total, False), query
            assert [r["id"] for r in page.rows] == ids, query
    engine.dispose()


@pytest.mark.parametrize("per_key", [12, 0.4])
def test_a_source_past_the_exact_total_is_walked_newest_first(loaded, monkeypatch, per_key):
    """A word in more of a source's records than the exact total (here 100: `actor`, in each of the
    tenant's 2,000 entries) has that source's keys from a walk of its newest records, each one's
    document checked (store.SEARCH_WALK_ROWS_PER_KEY); a window too small to fill the page (4 rows
    for a page of 10) falls back to the GIN index. Either way every page is the query's own, newest first, and paging walks
    the matches in the views' order."""
    monkeypatch.setattr(store, "SEARCH_EXACT_TOTAL", 100)
    monkeypatch.setattr(store, "SEARCH_WALK_ROWS_PER_KEY", per_key)
    statements: list[str] = []
    fetch = store.fetch_rows
    monkeypatch.setattr(store, "fetch_rows", lambda conn, sql, *a, **k: (statements.append(sql), fetch(conn, sql, *a, **k))[1])
    tenant = bulk.tenant_ids(2)[0]
    engine = plain_logs_engine(loaded)
    seen, after = [], None
    with engine.connect() as conn:
        for _ in range(3):
            with conn.begin():
                conn.execute(text("SELECT set_config('aos.tenant_id', :t, true)"), {"t": tenant})
                page = store.search_evidence(conn, tenant, store.SearchFilters(query="actor"), after, 10)
                total, ids = reference(conn, "actor", 40)
            assert page.total_is_estimate and page.total > 100 and page.has_more
            seen += [r["id"] for r in page.rows]
            last = page.rows[-1]
            after = [last["created_at"].isoformat(), last["id"], last["source"]]
    engine.dispose()
    assert seen == ids[:30]
    assert any("v.doc FROM audit_search v" in s and ":window" in s for s in statements)
