"""Export records the ledger checkpoints it signs.

Revision ID: 0010_export_records_checkpoints
Revises: 0009_partitioned_records_steps
Create Date: 2026-11-25

Why: a checkpoint an auditor holds (GetLedgerCheckpoint's signed statement) is also the
evidence retention needs before it may drop a chain segment (0008). Export records
each one it signs, envelope included, in ``ledger_checkpoints``.

The Export role gets no INSERT on ``ledger_checkpoints``: a role that could write rows
there could forge a RETENTION_ANCHOR (where a chain is said to go on from). It gets
EXECUTE on one owner's function instead, which records a CHECKPOINT of the current
tenant only, and only at a (seq, chain_hash) the ledger holds; the first signed
statement at a seq is kept (ON CONFLICT DO NOTHING), so the table stays append-only.
"""
from alembic import op

revision = "0010_export_records_checkpoints"
down_revision = "0009_partitioned_records_steps"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
        -- True when recorded; NULL when that entry is already checkpointed or the
        -- ledger holds no such (seq, chain_hash) for the current tenant.
        CREATE FUNCTION aos_record_signed_checkpoint(at_seq bigint, at_hash bytea, signed jsonb) RETURNS boolean
        LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, public
        AS $$
            INSERT INTO ledger_checkpoints (tenant_id, kind, seq, chain_hash, envelope)
            SELECT a.tenant_id, 'CHECKPOINT', a.seq, a.chain_hash, signed FROM audit_ledger a
             WHERE a.tenant_id = aos_current_tenant() AND a.seq = at_seq AND a.chain_hash = at_hash
            ON CONFLICT DO NOTHING
            RETURNING true
        $$;
        ALTER FUNCTION aos_record_signed_checkpoint(bigint, bytea, jsonb) OWNER TO aos_owner;
        REVOKE EXECUTE ON FUNCTION aos_record_signed_checkpoint(bigint, bytea, jsonb) FROM PUBLIC;
        GRANT EXECUTE ON FUNCTION aos_record_signed_checkpoint(bigint, bytea, jsonb) TO aos_export;""")


def downgrade() -> None:
    op.execute("DROP FUNCTION aos_record_signed_checkpoint(bigint, bytea, jsonb)")
