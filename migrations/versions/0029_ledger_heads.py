"""Each tenant's ledger head in one row: the chain trigger's lookup no longer reads every month.

Revision ID: 0029_ledger_heads
Revises: 0028_staged_erasure
Create Date: 2026-12-07

Why (issue #20, BENCHMARKS.md "Issue #20's remainder"): ``aos_assign_chain`` (0008) found a
tenant's chain head with ``ORDER BY seq DESC LIMIT 1`` over the partitioned ledger: a Merge
Append reading the newest row of the tenant in every monthly partition (and probing the empty
ones), on every append. Its cost grows with the months kept (15 in the 10 M run, 51 buffers
for a loaded tenant) and made an append to a loaded tenant dearer than to an empty one.

What it adds:
- ``ledger_heads`` (tenant_id PRIMARY KEY, seq, chain_hash, created_at): the newest entry of
  each tenant's ledger — its seq and chain hash, and its created_at, the partition key, so
  the entry can be found in its one partition. Maintained by the chain trigger only, under
  the lock it already takes (the transaction-level advisory lock of the tenant's chain), in
  the appending transaction: a rollback (of the transaction or of a savepoint) takes the
  head's change with it. fillfactor 50: the one row per tenant is updated on every append
  and no indexed column changes, so the updates stay HOT on the row's own page.
- ``aos_assign_chain()`` for the ledger: reads the head row (one primary-key probe), then
  checks that the entry it names is still the ledger's — one probe of the unique
  (tenant_id, seq, created_at) index, pruned to the head's month — with the same chain hash.
  That check is what keeps the old lookup's answer in every case: a row an
  ``INSERT … ON CONFLICT DO NOTHING`` skipped after this BEFORE trigger ran (the head would
  name an entry that was never written), a tail removed behind the triggers' back by a
  superuser, a month retention dropped with the tenant's last entries. When the entry is not
  there (or the tenant has no head row yet) the trigger falls back to 0008's lookup — the
  newest entry over every partition, else the tenant's RETENTION_ANCHOR — and rewrites the
  head. So the head row is a cache the trigger validates, never a second source of truth: seq
  stays gapless and prev_hash chained exactly as before. The export chain (log_exports, not
  partitioned) keeps 0008's lookup.
- Protection: owned by aos_owner, row-level security on the tenant, SELECT for aos_logs and
  aos_export only (no service role may INSERT, UPDATE or DELETE: only the SECURITY DEFINER
  trigger, as the owner, writes it); DELETE and TRUNCATE refused (aos_refuse_mutation, ENABLE
  ALWAYS). UPDATE is the trigger's; the owner could write the row anyway (it owns the
  ledger and its triggers): a wrong head made that way either names no entry (the fallback
  repairs it) or names an older one, which the ledger's unique (tenant_id, seq, created_at)
  index refuses only within one month — as dropping the trigger, it is the owner's power.
- Retention: ``aos_retention_remove_rows`` (0027) and the partition drops remove only a
  chain's beginning, behind a checkpoint; the head does not move. When the removed rows are
  all of a tenant's, the head's entry is gone and the next append takes the fallback: the
  anchor, whose seq and hash are the head's.

Backfill: every tenant's newest entry, with the ledger locked against appends (SHARE ROW
EXCLUSIVE) while the rows are read. Tenants without entries get no row (the fallback makes it
on their first append).

Downgrade: 0008's trigger function (with 0012's pinned search_path) and the table dropped.
"""
from alembic import op

revision = "0029_ledger_heads"
down_revision = "0028_staged_erasure"
branch_labels = None
depends_on = None

OWNER = "aos_owner"
PINNED = "pg_catalog, public, pg_temp"

TABLE = f"""
CREATE TABLE ledger_heads (
    tenant_id  text        PRIMARY KEY,
    seq        bigint      NOT NULL CHECK (seq >= 1),
    chain_hash bytea       NOT NULL CHECK (octet_length(chain_hash) = 32),
    created_at timestamptz NOT NULL
) WITH (fillfactor = 50);
ALTER TABLE ledger_heads OWNER TO {OWNER};
CREATE TRIGGER ledger_heads_no_delete BEFORE DELETE ON ledger_heads
    FOR EACH ROW EXECUTE FUNCTION aos_refuse_mutation();
CREATE TRIGGER ledger_heads_no_truncate BEFORE TRUNCATE ON ledger_heads
    FOR EACH STATEMENT EXECUTE FUNCTION aos_refuse_mutation();
ALTER TABLE ledger_heads ENABLE ALWAYS TRIGGER ledger_heads_no_delete;
ALTER TABLE ledger_heads ENABLE ALWAYS TRIGGER ledger_heads_no_truncate;
ALTER TABLE ledger_heads ENABLE ROW LEVEL SECURITY;
CREATE POLICY ledger_heads_tenant ON ledger_heads
    USING (tenant_id = aos_current_tenant()) WITH CHECK (tenant_id = aos_current_tenant());
REVOKE ALL ON ledger_heads FROM PUBLIC;
GRANT SELECT ON ledger_heads TO aos_logs, aos_export;
"""

# enable_sort = off: 0008's, for the fallback's lookup (see 0008 on cached generic plans).
ASSIGN_CHAIN = f"""
CREATE OR REPLACE FUNCTION aos_assign_chain() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = {PINNED} SET enable_sort = off
AS $$
DECLARE
    chain     text := coalesce(TG_ARGV[0], TG_TABLE_NAME);
    head_seq  bigint;
    head_hash bytea;
    head_at   timestamptz;
    known     boolean := false;
BEGIN
    IF NEW.content_hash IS NULL OR octet_length(NEW.content_hash) <> 32 THEN
        RAISE EXCEPTION '%.content_hash must be a 32-byte SHA-256', chain USING ERRCODE = '22023';
    END IF;
    PERFORM pg_advisory_xact_lock(aos_chain_lock_key(chain, NEW.tenant_id));
    IF chain = 'audit_ledger' THEN
        -- the head row (0029), if the entry it names is still the ledger's newest
        SELECT h.seq, h.chain_hash, h.created_at INTO head_seq, head_hash, head_at
          FROM ledger_heads h WHERE h.tenant_id = NEW.tenant_id;
        known := FOUND;
        IF NOT known OR NOT EXISTS (SELECT FROM audit_ledger a WHERE a.tenant_id = NEW.tenant_id
                                       AND a.seq = head_seq AND a.created_at = head_at
                                       AND a.chain_hash = head_hash) THEN
            SELECT a.seq, a.chain_hash INTO head_seq, head_hash
              FROM audit_ledger a WHERE a.tenant_id = NEW.tenant_id ORDER BY a.seq DESC LIMIT 1;
            -- a dropped beginning: the chain goes on from its anchor
            IF head_seq IS NULL THEN
                SELECT c.seq, c.chain_hash INTO head_seq, head_hash FROM ledger_checkpoints c
                 WHERE c.tenant_id = NEW.tenant_id AND c.kind = 'RETENTION_ANCHOR' ORDER BY c.seq DESC LIMIT 1;
            END IF;
        END IF;
    ELSE
        SELECT seq, chain_hash INTO head_seq, head_hash
          FROM log_exports WHERE tenant_id = NEW.tenant_id ORDER BY seq DESC LIMIT 1;
    END IF;
    NEW.seq := coalesce(head_seq, 0) + 1;
    NEW.prev_hash := coalesce(head_hash, decode(repeat('00', 32), 'hex'));
    NEW.chain_hash := sha256(NEW.prev_hash || NEW.content_hash);
    NEW.recorded_at := clock_timestamp();
    IF chain = 'audit_ledger' THEN
        IF known THEN
            UPDATE ledger_heads SET seq = NEW.seq, chain_hash = NEW.chain_hash, created_at = NEW.created_at
             WHERE tenant_id = NEW.tenant_id;
        ELSE
            INSERT INTO ledger_heads (tenant_id, seq, chain_hash, created_at)
            VALUES (NEW.tenant_id, NEW.seq, NEW.chain_hash, NEW.created_at);
        END IF;
    END IF;
    RETURN NEW;
END $$;
ALTER FUNCTION aos_assign_chain() OWNER TO {OWNER};
"""

# 0008's, as 0012 pinned its search_path: restored by downgrade.
ASSIGN_CHAIN_0008 = f"""
CREATE OR REPLACE FUNCTION aos_assign_chain() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = {PINNED} SET enable_sort = off
AS $$
DECLARE
    chain     text := coalesce(TG_ARGV[0], TG_TABLE_NAME);
    head_seq  bigint;
    head_hash bytea;
BEGIN
    IF NEW.content_hash IS NULL OR octet_length(NEW.content_hash) <> 32 THEN
        RAISE EXCEPTION '%.content_hash must be a 32-byte SHA-256', chain USING ERRCODE = '22023';
    END IF;
    PERFORM pg_advisory_xact_lock(aos_chain_lock_key(chain, NEW.tenant_id));
    IF chain = 'audit_ledger' THEN
        SELECT seq, chain_hash INTO head_seq, head_hash
          FROM audit_ledger WHERE tenant_id = NEW.tenant_id ORDER BY seq DESC LIMIT 1;
        -- a dropped beginning: the chain goes on from its anchor
        IF head_seq IS NULL THEN
            SELECT seq, chain_hash INTO head_seq, head_hash FROM ledger_checkpoints
             WHERE tenant_id = NEW.tenant_id AND kind = 'RETENTION_ANCHOR' ORDER BY seq DESC LIMIT 1;
        END IF;
    ELSE
        SELECT seq, chain_hash INTO head_seq, head_hash
          FROM log_exports WHERE tenant_id = NEW.tenant_id ORDER BY seq DESC LIMIT 1;
    END IF;
    NEW.seq := coalesce(head_seq, 0) + 1;
    NEW.prev_hash := coalesce(head_hash, decode(repeat('00', 32), 'hex'));
    NEW.chain_hash := sha256(NEW.prev_hash || NEW.content_hash);
    NEW.recorded_at := clock_timestamp();
    RETURN NEW;
END $$;
ALTER FUNCTION aos_assign_chain() OWNER TO {OWNER};
"""

# Per tenant, its newest entry by the (tenant_id, seq, created_at) indexes (as
# aos_record_ledger_checkpoints reads heads): O(tenants x months), not a scan of the ledger.
BACKFILL = """
LOCK TABLE audit_ledger IN SHARE ROW EXCLUSIVE MODE;
SET LOCAL enable_sort = off;
INSERT INTO ledger_heads (tenant_id, seq, chain_hash, created_at)
SELECT t.id, h.seq, h.chain_hash, h.created_at
  FROM tenants t
  CROSS JOIN LATERAL (SELECT a.seq, a.chain_hash, a.created_at FROM audit_ledger a WHERE a.tenant_id = t.id
                      ORDER BY a.seq DESC LIMIT 1) h;
RESET enable_sort;
"""


def upgrade() -> None:
    op.execute(TABLE)
    op.execute(BACKFILL)
    op.execute(ASSIGN_CHAIN)


def downgrade() -> None:
    op.execute(ASSIGN_CHAIN_0008)
    op.execute("DROP TABLE ledger_heads")
