"""Migrations apply, roll back and apply again on an empty database."""
import psycopg
import pytest

from aos_runtime import migrate

pytestmark = pytest.mark.db

TABLES = {"tenants", "incidents", "policy_proposals", "limits", "limit_breaches", "worker_runs", "audit_ledger",
          "llm_run_records", "system_records", "aos_traces", "aos_trace_steps", "log_exports",
          "log_export_artifacts", "worker_run_cost_daily", "ledger_checkpoints", "platform_records", "tlog_hashes",
          "checkpoint_notes", "checkpoint_cosignatures", "retention_policies", "legal_holds",
          # 0023 (docs/ERASURE.md)
          "evidence_payloads", "evidence_erasures", "erased_payloads",
          "otlp_staged_spans",
          # 0026 (docs/ERASURE.md §3a)
          "export_payload_subjects", "erased_export_artifacts",
          # 0030 (docs/ERASURE.md §3c)
          "export_subjects_tracked",
          # 0032 (issue #20: each tenant's ledger head)
          "ledger_heads",
          # 0035 (issue #19: each tenant's stored export bytes)
          "export_stored_bytes"}


def tables(url: str) -> set[str]:
    """The schema's tables (a partitioned table once, not its partitions)."""
    with psycopg.connect(url) as conn:
        return {r[0] for r in conn.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition "
            "AND c.relname <> 'alembic_version'")}


def test_upgrade_downgrade_upgrade(databases):
    url = databases.create(migrated=False)
    migrate.upgrade(url)
    assert tables(url) == TABLES
    migrate.downgrade(url, "base")
    assert tables(url) == set()
    migrate.upgrade(url)
    assert tables(url) == TABLES


def test_upgrade_is_idempotent(database_url):
    migrate.upgrade(database_url)  # already at head: nothing to do, nothing fails
    assert TABLES <= tables(database_url)


def test_every_trigger_fires_always(database_url):
    """ENABLE ALWAYS ('A'): session_replication_role = replica cannot skip them."""
    with psycopg.connect(database_url) as conn:
        modes = conn.execute("SELECT tgrelid::regclass::text, tgname, tgenabled FROM pg_trigger "
                             "WHERE NOT tgisinternal").fetchall()
    assert modes, "no triggers found"
    assert {m for _, _, m in modes} == {"A"}, [row for row in modes if row[2] != "A"]


def test_row_level_security_on_every_tenant_table(database_url):
    with psycopg.connect(database_url) as conn:
        rows = dict(conn.execute("SELECT relname, relrowsecurity FROM pg_class WHERE relname = ANY(%s)",
                                 (list(TABLES),)).fetchall())
    assert rows == {t: True for t in TABLES}
