"""The Logs store's totals (exact up to 10,000 matches, a flagged planner estimate above;
the unfiltered ledger's from its chain) and the plans of its lookups."""
import pytest
from sqlalchemy import create_engine, text

from aos_evidence import queries as evidence
from aos_recording import bulk
from aos_runtime.db import sync_url
from services.logs import store
from tests.logins import login_url

pytestmark = pytest.mark.db


def logs_engine(database_url: str):
    """An engine in the Logs role, and the statements it sends (with their parameters)."""
    from sqlalchemy import event

    engine = create_engine(sync_url(database_url), connect_args={"options": "-c role=aos_logs"})
    seen: list[tuple[str, object]] = []
    event.listen(engine, "before_cursor_execute",
                 lambda conn, cursor, statement, params, context, many: seen.append((statement, params)))
    return engine, seen


def test_totals_are_exact_to_ten_thousand_then_a_flagged_estimate(database_url):
    from datetime import datetime, timezone

    bulk.load(database_url, bulk.Volume(tenants=1, ledger=12_000, traces=0, steps=0, system=0))
    (tenant,) = bulk.tenant_ids(1)
    engine, seen = logs_engine(database_url)
    with engine.begin() as conn:
        conn.execute(text("SELECT set_config('aos.tenant_id', :t, true)"), {"t": tenant})
        seen.clear()
        everything = store.list_audit_entries(conn, tenant, store.AuditFilters(), None, 50)
        unfiltered_sql = [statement for statement, _ in seen]
        wide = store.list_audit_entries(conn, tenant, store.AuditFilters(
            created_after=datetime(2000, 1, 1, tzinfo=timezone.utc)), None, 50)
        narrow = store.list_audit_entries(conn, tenant, store.AuditFilters(event_types=("LimitCreated",)), None, 50)
        exact = conn.execute(text("SELECT count(*) FROM audit_ledger WHERE event_type = 'LimitCreated'")).scalar()
        held = conn.execute(text("SELECT count(*) FROM audit_ledger")).scalar()
    engine.dispose()
    # Unfiltered: the chain's span, exact at any size, without counting the rows.
    assert held > 10_000 and everything.total == held and not everything.total_is_estimate
    assert everything.has_more and not any("count(*)" in statement for statement in unfiltered_sql)
    # A filter that matches more than 10,000: the capped count, then a flagged estimate.
    assert wide.total_is_estimate and wide.total > 10_000 and wide.has_more
    assert not narrow.total_is_estimate and narrow.total == exact < 10_000


def test_governance_never_reads_the_runs_access_entries(database_url):
    """A run exported 2,000 times: its governance lookup reads its own entries, not the
    2,000 EvidenceExported ones (the partial indexes of migration 0006). Checked on the
    plan of the very statement the store runs, as the database executed it."""
    from datetime import datetime, timezone

    from aos_recording.sources import SourceWriter
    from aos_recording.writers import AuditLedgerWriter, Producer

    tenant, run = "tenant-governance-cost", "tenant-governance-cost.run-1"
    producer = Producer(login_url(database_url, "producer"))
    with producer.transaction(tenant) as conn:
        SourceWriter(conn).ensure_tenant(tenant_id=tenant, name=tenant, created_at=datetime.now(timezone.utc))
        ledger = AuditLedgerWriter(conn)
        ledger.append(tenant_id=tenant, event_type="LimitBreached", entity_type="LIMIT", entity_id="limit-1",
                      actor_type="SYSTEM", actor_id="enforcer", correlation_id=run)
        ledger.append(tenant_id=tenant, event_type="IncidentAcknowledged", entity_type="INCIDENT", entity_id="inc-1",
                      actor_type="SYSTEM", actor_id="enforcer", after_state={"run_id": run})
        ledger.append(tenant_id=tenant, event_type="IncidentResolved", entity_type="INCIDENT", entity_id="inc-1",
                      actor_type="HUMAN", actor_id="user-1", before_state={"run_id": run})
        for i in range(2000):
            ledger.append(tenant_id=tenant, event_type="EvidenceExported", entity_type="LOG_EXPORT",
                          entity_id=f"exp-{i}", actor_type="HUMAN", actor_id="user-1", correlation_id=run,
                          after_state={"export_id": f"exp-{i}", "run_id": run})
    producer.close()
    # As the migration user: the Logs role may not ANALYZE (skipped with a warning), and
    # a month partition without statistics is planned from guesses (autovacuum would
    # analyze it in service).
    owner = create_engine(sync_url(database_url), isolation_level="AUTOCOMMIT")
    with owner.connect() as conn:
        conn.execute(text("ANALYZE audit_ledger"))
    owner.dispose()
    engine, seen = logs_engine(database_url)
    with engine.begin() as conn:
        conn.execute(text("SELECT set_config('aos.tenant_id', :t, true)"), {"t": tenant})
        entries = evidence.run_audit_entries(conn, tenant, run)
        statement, params = seen[-1]
        plan = conn.exec_driver_sql("EXPLAIN (ANALYZE, FORMAT JSON) " + statement, params).scalar_one()
    engine.dispose()
    assert [e["event_type"] for e in entries] == ["LimitBreached", "IncidentAcknowledged", "IncidentResolved"]

    def rows_read(node) -> int:
        return node.get("Actual Rows", 0) * node.get("Actual Loops", 1) + sum(map(rows_read, node.get("Plans", [])))
    assert rows_read(plan[0]["Plan"]) < 50, plan


def test_a_first_page_holding_every_match_counts_itself_and_agrees_with_the_count(databases):
    # A first page that is not full is its own total (no count query); it must say
    # what the count says, at every page size around the number of matches, and on
    # later pages (which always count).
    database_url = databases.create()
    bulk.load(database_url, bulk.Volume(tenants=1, ledger=300, traces=0, steps=0, system=0))
    (tenant,) = bulk.tenant_ids(1)
    engine = create_engine(sync_url(database_url), connect_args={"options": "-c role=aos_logs"})
    with engine.begin() as conn:
        conn.execute(text("SELECT set_config('aos.tenant_id', :t, true)"), {"t": tenant})
        exact = conn.execute(text("SELECT count(*) FROM audit_ledger")).scalar()
        for limit in (exact - 1, exact, exact + 1, 1):
            first = store.list_audit_entries(conn, tenant, store.AuditFilters(), None, limit)
            assert (first.total, first.total_is_estimate, first.has_more) == (exact, False, limit < exact)
            if first.has_more:
                last = first.rows[-1]
                after = [last["created_at"].isoformat(), last["id"]]
                rest = store.list_audit_entries(conn, tenant, store.AuditFilters(), after, exact)
                assert (rest.total, len(rest.rows), rest.has_more) == (exact, exact - limit, False)
        none = store.list_audit_entries(conn, tenant, store.AuditFilters(actor_id="nobody"), None, 50)
        assert (none.total, none.total_is_estimate, none.rows) == (0, False, [])
    engine.dispose()


def test_each_listed_entry_reads_only_its_own_runs_trace(databases):
    # The correlation spine looks each entry's run up by (tenant_id, run_id). Under the
    # Logs role's row-level security a jsonb expression in that join condition kept
    # run_id out of the index condition: every entry read all of its tenant's traces
    # (10 ms for a first page against 1,000 traces; linear in them).
    database_url = databases.create()
    bulk.load(database_url, bulk.Volume(tenants=1, ledger=400, traces=2_000, steps=1, system=0))
    (tenant,) = bulk.tenant_ids(1)
    engine, seen = logs_engine(database_url)
    with engine.begin() as conn:
        conn.execute(text("SELECT set_config('aos.tenant_id', :t, true)"), {"t": tenant})
        page = store.list_audit_entries(conn, tenant, store.AuditFilters(), None, 50)
        statement, params = next((s, p) for s, p in seen if "aos_traces" in s)
        plan = conn.exec_driver_sql("EXPLAIN (ANALYZE, FORMAT JSON) " + statement, params).scalar_one()
    engine.dispose()
    assert len(page.rows) == 50 and any(row["trace_id"] for row in page.rows)

    def nodes(node):
        yield node
        for child in node.get("Plans", []):
            yield from nodes(child)
    traces = [n for n in nodes(plan[0]["Plan"]) if n.get("Relation Name") == "aos_traces"
              or n.get("Index Name") == "ix_aos_traces_tenant_run"]
    assert traces and all("run_id" in n.get("Index Cond", "run_id") for n in traces), traces
    assert sum(n.get("Rows Removed by Filter", 0) * n.get("Actual Loops", 1) for n in traces) < 50, traces


def test_the_runs_total_joins_traces_only_for_a_filter_on_them(databases):
    # The trace join costs a lookup per counted run (up to 10,001): 19.7 ms for a page
    # of a tenant with 4,000 runs, 1.8 ms without it. It never changes how many runs
    # there are, so only a filter on the trace keeps it in the count.
    from datetime import datetime, timedelta, timezone

    from aos_recording.sources import SourceWriter
    from aos_recording.writers import LlmRunRecordWriter, Producer, TraceRecorder

    database_url, tenant = databases.create(), "tenant-runs-total"
    t0 = datetime(2026, 3, 1, tzinfo=timezone.utc)
    producer = Producer(login_url(database_url, "producer"))
    with producer.transaction(tenant) as conn:
        SourceWriter(conn).ensure_tenant(tenant_id=tenant, name=tenant, created_at=t0)
        for i in range(60):
            LlmRunRecordWriter(conn).write(tenant_id=tenant, run_id=f"run-{i}", provider="openai", model="gpt-4o",
                                           execution_status="succeeded", started_at=t0 + timedelta(minutes=i))
        recorder = TraceRecorder(conn)
        trace = recorder.create_trace(tenant_id=tenant, run_id="run-7", started_at=t0)
        recorder.add_step(tenant_id=tenant, trace_id=trace, step_index=0, step_type="policy_check", timestamp=t0)
        recorder.mark_violation(trace_id=trace, step_index=0, policy_id="pol-1", reason="over budget")
    producer.close()
    engine, seen = logs_engine(database_url)
    with engine.begin() as conn:
        conn.execute(text("SELECT set_config('aos.tenant_id', :t, true)"), {"t": tenant})
        everything = store.list_runs(conn, tenant, store.RunFilters(), None, 50)
        count_all = seen[-1][0]
        clean = store.list_runs(conn, tenant, store.RunFilters(has_violation=False), None, 50)
        count_clean = seen[-1][0]
        flagged = store.list_runs(conn, tenant, store.RunFilters(has_violation=True), None, 50)
    engine.dispose()
    assert "count(*)" in count_all and "aos_traces" not in count_all
    assert "count(*)" in count_clean and "aos_traces" in count_clean
    assert (everything.total, clean.total, flagged.total) == (60, 59, 1)
    assert [r["run_id"] for r in flagged.rows] == ["run-7"]
