"""aos_ledger_stats(): the audit ledger's size and the newest checkpoint's time, for the metrics.

Revision ID: 0015_ledger_stats
Revises: 0014_export_verified
Create Date: 2026-12-06

Why (issue #23, metrics): the Logs service exports the ledger's appends and the age of
the newest signed checkpoint (aos_runtime/metrics.py). Both are facts over every tenant,
and a service session sees no tenant's rows without its tenant set (row-level security):
this function, SECURITY DEFINER as the owner, answers the two numbers and nothing else —
no tenant id, no row. Only aos_logs may execute it.

- ``entries``: the sum of every tenant's chain head seq (seq starts at 1 per tenant and
  never goes back, retention included): every entry ever appended, one index probe per
  tenant on (tenant_id, seq), not a count of the table.
- ``newest_checkpoint_at``: the newest CHECKPOINT's recorded_at (NULL: none yet).

Downgrade drops the function.
"""
from alembic import op

revision = "0015_ledger_stats"
down_revision = "0014_export_verified"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
CREATE FUNCTION aos_ledger_stats(OUT entries bigint, OUT newest_checkpoint_at timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
    SELECT (SELECT coalesce(sum(h.seq), 0)::bigint
              FROM tenants t
              CROSS JOIN LATERAL (SELECT a.seq FROM audit_ledger a WHERE a.tenant_id = t.id
                                  ORDER BY a.seq DESC LIMIT 1) h),
           (SELECT max(c.recorded_at) FROM ledger_checkpoints c WHERE c.kind = 'CHECKPOINT')
$$;
ALTER FUNCTION aos_ledger_stats() OWNER TO aos_owner;
REVOKE EXECUTE ON FUNCTION aos_ledger_stats() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION aos_ledger_stats() TO aos_logs;
""")


def downgrade() -> None:
    op.execute("DROP FUNCTION aos_ledger_stats()")
