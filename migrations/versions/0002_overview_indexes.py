"""Indexes for the Overview projection at volume (1M incidents, 1M worker runs per tenant).

Revision ID: 0002_overview_indexes
Revises: 0001_foundation
Create Date: 2026-11-25

Each index serves one Overview query and lets it read the index alone:
- costs: whole UTC days come from the daily rollup (migration 0004); the partial
  days at a window's edges sum worker_runs.cost_cents over a created_at range, for
  the tenant or one project / agent / provider: an index-only scan with the cost and
  the scope columns INCLUDEd, one index for every scope.
- budget violations: breaches in a period with their values INCLUDEd.
- the pulse and the decision queue's priority filter: ACTIVE incidents by severity,
  a partial index as small as the set of open incidents; one pass counts the ACTIVE
  and the critical ones.
- the domain totals of the highlights: a tenant's incidents, proposals and runs,
  counted up to 10,001 (aos_runtime.keyset.count_total). A plain (tenant_id) B-tree
  is deduplicated into posting lists (6 MB per million rows), so the capped count
  reads ~11 index pages: ~0.9 ms at a million rows. Without it the planner
  seq-scans the table (115-230 heap pages through a ring buffer, 2-4 ms), and the
  wide (tenant_id, created_at, ...) indexes would read 200-300 pages (~2 ms).
"""
from alembic import op

revision = "0002_overview_indexes"
down_revision = "0001_foundation"
branch_labels = None
depends_on = None

UPGRADE = """
DROP INDEX ix_worker_runs_tenant_created;
CREATE INDEX ix_worker_runs_tenant_created_cost ON worker_runs (tenant_id, created_at)
    INCLUDE (cost_cents, project_id, agent_id, provider);
DROP INDEX ix_limit_breaches_tenant_breached;
CREATE INDEX ix_limit_breaches_tenant_breached ON limit_breaches (tenant_id, breached_at)
    INCLUDE (limit_id, value_at_breach, limit_value);
CREATE INDEX ix_incidents_tenant_active_severity ON incidents (tenant_id, severity, created_at DESC, id DESC)
    WHERE lifecycle_state = 'ACTIVE';
CREATE INDEX ix_incidents_tenant ON incidents (tenant_id);
CREATE INDEX ix_proposals_tenant ON policy_proposals (tenant_id);
CREATE INDEX ix_worker_runs_tenant ON worker_runs (tenant_id);
"""

DOWNGRADE = """
DROP INDEX ix_worker_runs_tenant, ix_proposals_tenant, ix_incidents_tenant;
DROP INDEX ix_incidents_tenant_active_severity;
DROP INDEX ix_limit_breaches_tenant_breached;
CREATE INDEX ix_limit_breaches_tenant_breached ON limit_breaches (tenant_id, breached_at DESC);
DROP INDEX ix_worker_runs_tenant_created_cost;
CREATE INDEX ix_worker_runs_tenant_created ON worker_runs (tenant_id, created_at DESC);
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
