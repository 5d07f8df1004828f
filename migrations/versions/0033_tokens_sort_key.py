"""The run list sorted by total tokens on a key the planner may use under row-level security
(issue #25; found by tests/db/test_sort_index.py's keyset check).

Revision ID: 0033_tokens_sort_key
Revises: 0032_ledger_heads
Create Date: 2026-12-07

Why: 0025 sorts ListLlmRuns by ``input_tokens + output_tokens`` on an expression index. Under
row-level security only a leakproof condition becomes an index condition, and int8 ``+``
(int8pl) is not leakproof (it can raise an overflow error, which could tell a row's values).
So a later page's keyset ``(input_tokens + output_tokens, created_at, id) < (…)`` was a filter:
the page walked the index from its start, costing its position. Unlike 0029's actor key and
0031's severity rank, no CASE can write a sum. The sum is now a stored generated column,

    total_tokens bigint GENERATED ALWAYS AS (input_tokens + output_tokens) STORED

and the sort key that column (aos_logs' RUN_SORTS): a comparison of plain bigint, timestamptz
and text columns is leakproof. Same values as before (both terms NOT NULL and CHECKed >= 0, so
the sum is never NULL; an overflowing sum already failed the row's INSERT through 0025's
expression index and fails it the same way now), so the order, its ties (broken by
created_at, id) and page tokens issued before are unchanged.

- ix_llm_run_records_tenant_tokens is made again on (tenant_id, total_tokens DESC,
  created_at DESC, id DESC).
- Cost: adding a stored column rewrites llm_run_records once (ACCESS EXCLUSIVE for the
  rewrite; no trigger fires: the append-only triggers are row triggers on UPDATE/DELETE) and
  adds 8 bytes a row. Writers list their columns (COPY and INSERT leave a generated column
  out), so none changes; ``SELECT *`` of a run gains the column.

Downgrade restores 0025's expression index and drops the column.
"""
from alembic import op

revision = "0033_tokens_sort_key"
down_revision = "0032_ledger_heads"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
        DROP INDEX ix_llm_run_records_tenant_tokens;
        ALTER TABLE llm_run_records
            ADD COLUMN total_tokens bigint GENERATED ALWAYS AS (input_tokens + output_tokens) STORED;
        CREATE INDEX ix_llm_run_records_tenant_tokens
            ON llm_run_records (tenant_id, total_tokens DESC, created_at DESC, id DESC);""")


def downgrade() -> None:
    op.execute("""
        DROP INDEX ix_llm_run_records_tenant_tokens;
        ALTER TABLE llm_run_records DROP COLUMN total_tokens;
        CREATE INDEX ix_llm_run_records_tenant_tokens
            ON llm_run_records (tenant_id, (input_tokens + output_tokens) DESC, created_at DESC, id DESC);""")
