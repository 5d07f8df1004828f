"""The ledger lists sorted by actor (issue #25; seed 003 §4.5's `sort`, seed 000's actor_id).

Revision ID: 0029_actor_sort
Revises: 0028_staged_erasure
Create Date: 2026-12-07

Why: ListAuditEntries (and the O1–O3 category lists) take `sort` = AUDIT_SORT_FIELD_ACTOR,
ordered on (actor, created_at, id) in the request's `order` and paged by keyset after the last
row's (actor, created_at, id), as 0025's sorts are. A keyset needs a key that is never NULL,
and ``actor_id`` may be: the key is ``CASE WHEN actor_id IS NULL THEN '' ELSE actor_id END``
(aos_evidence.queries.ACTOR_KEY). Not coalesce(): under row-level security only a leakproof
condition becomes an index condition, and the planner takes a COALESCE for possibly leaky (a
CASE on IS NULL, with text comparisons, it does not): the keyset and the filter on coalesce()
were filters over the tenant's whole ledger.

- ix_audit_ledger_tenant_actor is made again on (tenant_id, <that key> DESC, created_at DESC,
  id DESC): read forwards for DESCENDING, backwards for ASCENDING. The old one
  (tenant_id, actor_id, created_at DESC, id DESC) served the actor_id filter only; the filter
  is now written on the same expression (an equality on it, for the non-empty ids a filter
  takes, matches the same entries), so the new index serves it the same and the ledger keeps
  as many indexes as before (every append maintains each one).

Downgrade restores the index as it was.
"""
from alembic import op

revision = "0029_actor_sort"
down_revision = "0028_staged_erasure"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
        DROP INDEX ix_audit_ledger_tenant_actor;
        CREATE INDEX ix_audit_ledger_tenant_actor
            ON audit_ledger (tenant_id, (CASE WHEN actor_id IS NULL THEN '' ELSE actor_id END) DESC,
                             created_at DESC, id DESC);""")


def downgrade() -> None:
    op.execute("""
        DROP INDEX ix_audit_ledger_tenant_actor;
        CREATE INDEX ix_audit_ledger_tenant_actor ON audit_ledger (tenant_id, actor_id, created_at DESC, id DESC);""")
