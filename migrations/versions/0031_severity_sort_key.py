"""The system record lists sorted by severity on a key the planner may use under row-level
security (issue #25; found by tests/db/test_sort_index.py's keyset check).

Revision ID: 0031_severity_sort_key
Revises: 0030_untracked_exports
Create Date: 2026-12-07

Why: 0025 sorts system records by ``aos_severity_rank(severity)``. Under row-level security
only a leakproof condition becomes an index condition, and a function is leakproof only when a
superuser marks it so; aos_severity_rank, with its SET search_path, is also never inlined. So a
later page's keyset ``(rank, created_at, id) < (…)`` was a filter: the page walked the index from
its start, costing its position. The key is now the rank written as a CASE on the level (a CASE
with text equalities is leakproof to the planner), aos_logs' SYSTEM_SORTS the same expression:

    CASE severity WHEN 'DEBUG' THEN 1 WHEN 'INFO' THEN 2 WHEN 'WARNING' THEN 3
                  WHEN 'ERROR' THEN 4 WHEN 'CRITICAL' THEN 5 END

(never NULL: the column is NOT NULL and CHECKed to those five). ix_system_records_tenant_severity
and ix_platform_records_severity are made again on it; aos_severity_rank stays (unused by the
service). Downgrade restores 0025's two indexes.
"""
from alembic import op

revision = "0031_severity_sort_key"
down_revision = "0030_untracked_exports"
branch_labels = None
depends_on = None

RANK = ("(CASE severity WHEN 'DEBUG' THEN 1 WHEN 'INFO' THEN 2 WHEN 'WARNING' THEN 3 "
        "WHEN 'ERROR' THEN 4 WHEN 'CRITICAL' THEN 5 END)")


def upgrade() -> None:
    op.execute(f"""
        DROP INDEX ix_system_records_tenant_severity;
        DROP INDEX ix_platform_records_severity;
        CREATE INDEX ix_system_records_tenant_severity
            ON system_records (tenant_id, {RANK} DESC, created_at DESC, id DESC);
        CREATE INDEX ix_platform_records_severity ON platform_records ({RANK} DESC, created_at DESC, id DESC);""")


def downgrade() -> None:
    op.execute("""
        DROP INDEX ix_platform_records_severity;
        DROP INDEX ix_system_records_tenant_severity;
        CREATE INDEX ix_system_records_tenant_severity
            ON system_records (tenant_id, aos_severity_rank(severity) DESC, created_at DESC, id DESC);
        CREATE INDEX ix_platform_records_severity
            ON platform_records (aos_severity_rank(severity) DESC, created_at DESC, id DESC);""")
