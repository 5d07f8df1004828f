"""Indexes for the lists' `sort` field (seed 003 §4.5): every sort is a keyset walk of an index.

Revision ID: 0025_seedlists
Revises: 0024_otlp_staging
Create Date: 2026-12-07

Why (issue #25): ListAuditEntries, ListLlmRuns and ListSystemRecords sort by a field, then
(created_at, id), all in one direction (the request's `order`); a page continues after the
last row's (field, created_at, id). Such a page is cheap only when an index holds that key in
that order (read forwards for descending, backwards for ascending): without one, every page
sorts all the tenant's matching rows.

- audit_ledger: ix_audit_ledger_tenant_event and ix_audit_ledger_tenant_entity_type are made
  again with the field descending like the rest of the key. The old ones (field ascending,
  time descending) served the filters only, which the new ones serve the same (an equality on
  the field), so the ledger keeps as many indexes as before.
- llm_run_records: (tenant, started_at | cost_cents | input + output tokens, created_at, id).
- system_records / platform_records: (tenant, severity rank, created_at, id) and
  (severity rank, created_at, id), through ``aos_severity_rank(severity)`` (IMMUTABLE: DEBUG 1
  … CRITICAL 5), the one definition queries and indexes share.

Downgrade restores the ledger's two indexes as they were and drops the rest.
"""
from alembic import op

revision = "0025_seedlists"
down_revision = "0024_otlp_staging"
branch_labels = None
depends_on = None

RANK = """
CREATE FUNCTION aos_severity_rank(severity text) RETURNS smallint
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, public, pg_temp
AS $$ SELECT CASE severity WHEN 'DEBUG' THEN 1 WHEN 'INFO' THEN 2 WHEN 'WARNING' THEN 3
                            WHEN 'ERROR' THEN 4 WHEN 'CRITICAL' THEN 5 END::smallint $$;
ALTER FUNCTION aos_severity_rank(text) OWNER TO aos_owner;
COMMENT ON FUNCTION aos_severity_rank(text) IS
    'A system record level''s rank for sorting (migration 0025): DEBUG 1, INFO 2, WARNING 3, ERROR 4, CRITICAL 5.';
"""

SORT_INDEXES = """
DROP INDEX ix_audit_ledger_tenant_event;
DROP INDEX ix_audit_ledger_tenant_entity_type;
CREATE INDEX ix_audit_ledger_tenant_event ON audit_ledger (tenant_id, event_type DESC, created_at DESC, id DESC);
CREATE INDEX ix_audit_ledger_tenant_entity_type
    ON audit_ledger (tenant_id, entity_type DESC, created_at DESC, id DESC);
CREATE INDEX ix_llm_run_records_tenant_started
    ON llm_run_records (tenant_id, started_at DESC, created_at DESC, id DESC);
CREATE INDEX ix_llm_run_records_tenant_cost
    ON llm_run_records (tenant_id, cost_cents DESC, created_at DESC, id DESC);
CREATE INDEX ix_llm_run_records_tenant_tokens
    ON llm_run_records (tenant_id, (input_tokens + output_tokens) DESC, created_at DESC, id DESC);
CREATE INDEX ix_system_records_tenant_severity
    ON system_records (tenant_id, aos_severity_rank(severity) DESC, created_at DESC, id DESC);
CREATE INDEX ix_platform_records_severity
    ON platform_records (aos_severity_rank(severity) DESC, created_at DESC, id DESC);
"""


def upgrade() -> None:
    op.execute(RANK)
    op.execute(SORT_INDEXES)


def downgrade() -> None:
    op.execute("""
        DROP INDEX IF EXISTS ix_platform_records_severity;
        DROP INDEX IF EXISTS ix_system_records_tenant_severity;
        DROP INDEX IF EXISTS ix_llm_run_records_tenant_tokens;
        DROP INDEX IF EXISTS ix_llm_run_records_tenant_cost;
        DROP INDEX IF EXISTS ix_llm_run_records_tenant_started;
        DROP INDEX ix_audit_ledger_tenant_entity_type;
        DROP INDEX ix_audit_ledger_tenant_event;
        CREATE INDEX ix_audit_ledger_tenant_event ON audit_ledger (tenant_id, event_type, created_at DESC, id DESC);
        CREATE INDEX ix_audit_ledger_tenant_entity_type
            ON audit_ledger (tenant_id, entity_type, created_at DESC, id DESC);""")
    op.execute("DROP FUNCTION IF EXISTS aos_severity_rank(text)")
