"""Indexes for the Overview projection at volume (1M incidents, 1M worker runs per tenant).

Revision ID: 0002_overview_indexes
Revises: 0001_foundation
Create Date: 2026-11-25

Each index serves one Overview query and lets it read the index alone:
- costs: the period's spend and each budget's usage sum worker_runs.cost_cents over
  a created_at range, for the tenant or for one project / agent / provider. With
  cost_cents INCLUDEd the sums are index-only scans of the range, never of the table.
- budget violations: breaches in a period with their values INCLUDEd.
- the pulse and the decision queue's priority filter: ACTIVE incidents by severity,
  a partial index as small as the set of open incidents.
"""
from alembic import op

revision = "0002_overview_indexes"
down_revision = "0001_foundation"
branch_labels = None
depends_on = None

UPGRADE = """
DROP INDEX ix_worker_runs_tenant_created;
CREATE INDEX ix_worker_runs_tenant_created_cost ON worker_runs (tenant_id, created_at) INCLUDE (cost_cents);
CREATE INDEX ix_worker_runs_project_cost ON worker_runs (tenant_id, project_id, created_at) INCLUDE (cost_cents)
    WHERE project_id IS NOT NULL;
CREATE INDEX ix_worker_runs_agent_cost ON worker_runs (tenant_id, agent_id, created_at) INCLUDE (cost_cents)
    WHERE agent_id IS NOT NULL;
CREATE INDEX ix_worker_runs_provider_cost ON worker_runs (tenant_id, provider, created_at) INCLUDE (cost_cents)
    WHERE provider IS NOT NULL;
DROP INDEX ix_limit_breaches_tenant_breached;
CREATE INDEX ix_limit_breaches_tenant_breached ON limit_breaches (tenant_id, breached_at)
    INCLUDE (limit_id, value_at_breach, limit_value);
CREATE INDEX ix_incidents_tenant_active_severity ON incidents (tenant_id, severity, created_at DESC, id DESC)
    WHERE lifecycle_state = 'ACTIVE';
"""

DOWNGRADE = """
DROP INDEX ix_incidents_tenant_active_severity;
DROP INDEX ix_limit_breaches_tenant_breached;
CREATE INDEX ix_limit_breaches_tenant_breached ON limit_breaches (tenant_id, breached_at DESC);
DROP INDEX ix_worker_runs_provider_cost, ix_worker_runs_agent_cost, ix_worker_runs_project_cost,
    ix_worker_runs_tenant_created_cost;
CREATE INDEX ix_worker_runs_tenant_created ON worker_runs (tenant_id, created_at DESC);
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
