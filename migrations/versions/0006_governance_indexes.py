"""A run's and an incident's governance entries, found without their exports.

O3 governance and every run or incident export gather the audit entries that name
the run (by correlation id, or the run id in their before/after state) — all but
the EvidenceExported entries, which are access, not governance. Each export of a
run records one such entry correlated to the run, so with the indexes of 0001 that
gathering read every export ever made of the run and dropped them afterwards: the
soak (bench/soak.py, 8 exports/s of one run) showed GetLlmRunGovernance grow from
4 to 18 ms over 1,600 exports, without bound. These partial indexes leave the
access entries out, so the cost follows the run's governance, not its popularity.

The state indexes of 0001 (ix_audit_ledger_after_run, _before_run) served only
this lookup; they are replaced, not doubled (every index is paid by every append).
The correlation index stays: ListAuditEntries' correlation_id filter needs every
event type.
"""
from alembic import op

revision = "0006_governance_indexes"
down_revision = "0005_cost_rollup_per_statement"
branch_labels = None
depends_on = None

UPGRADE = """
CREATE INDEX ix_audit_ledger_governance_correlation ON audit_ledger (tenant_id, correlation_id)
    WHERE correlation_id IS NOT NULL AND event_type <> 'EvidenceExported';
CREATE INDEX ix_audit_ledger_governance_after_run ON audit_ledger (tenant_id, (after_state ->> 'run_id'))
    WHERE after_state ? 'run_id' AND event_type <> 'EvidenceExported';
CREATE INDEX ix_audit_ledger_governance_before_run ON audit_ledger (tenant_id, (before_state ->> 'run_id'))
    WHERE before_state ? 'run_id' AND event_type <> 'EvidenceExported';
DROP INDEX ix_audit_ledger_after_run, ix_audit_ledger_before_run;
"""

DOWNGRADE = """
CREATE INDEX ix_audit_ledger_after_run ON audit_ledger (tenant_id, (after_state ->> 'run_id'))
    WHERE after_state ? 'run_id';
CREATE INDEX ix_audit_ledger_before_run ON audit_ledger (tenant_id, (before_state ->> 'run_id'))
    WHERE before_state ? 'run_id';
DROP INDEX ix_audit_ledger_governance_correlation, ix_audit_ledger_governance_after_run,
    ix_audit_ledger_governance_before_run;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
