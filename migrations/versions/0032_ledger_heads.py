"""Each tenant's ledger head in one row: the chain trigger's lookup no longer reads every month.

Revision ID: 0032_ledger_heads
Revises: 0031_severity_sort_key
Create Date: 2026-12-07

Why (issue #20, BENCHMARKS.md "Issue #20's remainder"): ``aos_assign_chain`` (0008) found a
tenant's chain head with ``ORDER BY seq DESC LIMIT 1`` over the partitioned ledger: a Merge
Append reading the newest row of the tenant in every monthly partition (and probing the empty
ones), on every append. Its cost grows with the months kept (15 in the 10 M run, 51 buffers
for a loaded tenant) and made an append to a loaded tenant dearer than to an empty one.

What it adds:
- ``ledger_heads`` (tenant_id PRIMARY KEY, seq, chain_hash, created_at): where each tenant's
  chain head was when the last transaction that appended to it committed — its seq and chain
  hash, and its created_at, the partition key, so the entry can be found in its one month —
  or, all three NULL ("cleared"), that the last such transaction appended more than one entry.
  Written only by the chain trigger, under the lock it already takes (the transaction-level
  advisory lock of the tenant's chain), in the appending transaction: a rollback (of the
  transaction or of a savepoint) takes the change with it. fillfactor 50: the row is updated
  by every appending transaction and no indexed column changes, so the updates stay HOT.
- ``aos_assign_chain()`` for the ledger: the head is this transaction's own (a
  transaction-local setting, after its first append of the tenant) or the head row's; either
  is checked with one probe of the unique (tenant_id, seq, created_at) index, pruned to the
  head's month, which also reads the entry's chain hash. When the entry is not there — a
  cleared row, a row an ``INSERT … ON CONFLICT DO NOTHING`` skipped after this BEFORE trigger
  ran (the head would name an entry never written), a tail removed behind the triggers' back
  by a superuser, a month retention dropped with the tenant's last entries — or the tenant has
  no row yet, it falls back to 0008's lookup (the newest entry over every partition, else the
  tenant's RETENTION_ANCHOR). So the row is a cache the trigger checks, never a second source
  of truth: seq stays gapless and prev_hash chained exactly as 0008 assigned them.
  The first append of a transaction writes the row (it names that entry); the second clears
  it; later ones write nothing. One row per entry would not do: the versions a transaction
  leaves cannot be pruned before it ends, and each look-up of the row would read all of them
  — a COPY of n entries of a tenant in one transaction (aos_recording.bulk) went quadratic:
  one INSERT … SELECT of 5,000 / 10,000 / 20,000 entries took 211 / 275 / 411 µs per entry
  with a row version per entry, 49 / 61 / 61 µs this way (tree trigger off, load 4–6). The
  cost of clearing: the first append after a multi-entry transaction takes the lookup once.
  The probe is ``seq >= … AND created_at = … ORDER BY seq LIMIT 1`` (with enable_sort off),
  not ``seq = …``: with ``seq = …`` the planner took the (tenant_id, created_at DESC, id DESC)
  index, which reads every entry of that instant (a bulk INSERT's now(): 20,000 entries 27 s).
  The setting is a custom placeholder: a session keeps one (empty outside its transaction,
  ~100 bytes) per tenant it has appended to. A session can set it itself: naming an older
  entry of the tenant makes the trigger reuse a seq, which the tree's primary key
  (tlog_hashes, ENABLE ALWAYS) refuses — the same backstop as for a stale REPEATABLE READ
  snapshot (tests/db/test_ledger_heads.py); the append fails, the ledger does not fork. Not
  done: checking that the named entry is this transaction's (xmin) — a subtransaction's rows
  carry another xid. The export chain (log_exports, not partitioned)
  keeps 0008's lookup.
- Protection: owned by aos_owner, row-level security on the tenant, SELECT for aos_logs and
  aos_export only (no service role may INSERT, UPDATE or DELETE: only the SECURITY DEFINER
  trigger, as the owner, writes it); DELETE and TRUNCATE refused (aos_refuse_mutation, ENABLE
  ALWAYS). What the row is trusted for: that the entry it names, if the ledger holds it, is
  the newest. Appends that bypass this trigger (the owner disabling or replacing it) could
  leave a row naming an older entry that is still there: the next append would reuse a seq —
  refused by the tree's primary key (tlog_hashes) while the tree trigger runs. The owner can
  drop the triggers anyway; no service login can do either.
- Retention: ``aos_retention_remove_rows`` (0027) and the partition drops remove only a
  chain's beginning, behind a checkpoint; the head does not move. When the removed rows are
  all of a tenant's, the head's entry is gone and the next append takes the fallback: the
  anchor, whose seq and hash are the head's.
- A REPEATABLE READ appender whose snapshot predates another's committed append now fails at
  the head row (40001, could not serialize) instead of at the tree's primary key.

Backfill: every tenant's newest entry (per tenant, by the (tenant_id, seq, created_at)
indexes), with the ledger locked against appends (SHARE ROW EXCLUSIVE). Tenants without
entries get no row (their first append makes it).

Downgrade: 0008's trigger function (with 0012's pinned search_path) and the table dropped.
"""
from alembic import op

revision = "0032_ledger_heads"
down_revision = "0031_severity_sort_key"
branch_labels = None
depends_on = None

OWNER = "aos_owner"
PINNED = "pg_catalog, public, pg_temp"

TABLE = f"""
CREATE TABLE ledger_heads (
    tenant_id  text        PRIMARY KEY,
    -- all three NULL: cleared, the next append looks the head up (see aos_assign_chain)
    seq        bigint      CHECK (seq >= 1),
    chain_hash bytea       CHECK (octet_length(chain_hash) = 32),
    created_at timestamptz,
    CHECK ((seq IS NULL) = (chain_hash IS NULL) AND (seq IS NULL) = (created_at IS NULL))
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
# The transaction's own head of a tenant (after its first append of that tenant) is kept in a
# transaction-local setting, aos.ledger_head_<md5(tenant)> = 'seq|created_at in UTC|state' (ISO:
# read back the same whatever the session's DateStyle or TimeZone): a setting
# reverts with a rolled-back savepoint or transaction, as the rows do.
ASSIGN_CHAIN = f"""
CREATE OR REPLACE FUNCTION aos_assign_chain() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = {PINNED} SET enable_sort = off
AS $$
DECLARE
    chain     text := coalesce(TG_ARGV[0], TG_TABLE_NAME);
    head_seq  bigint;
    head_hash bytea;
    head_at   timestamptz;
    found_seq bigint;
    mine      text;     -- this transaction's setting for the tenant
    pending   text[];   -- its value: seq, created_at, 'row' (the head row names it) or 'cleared'
BEGIN
    IF NEW.content_hash IS NULL OR octet_length(NEW.content_hash) <> 32 THEN
        RAISE EXCEPTION '%.content_hash must be a 32-byte SHA-256', chain USING ERRCODE = '22023';
    END IF;
    PERFORM pg_advisory_xact_lock(aos_chain_lock_key(chain, NEW.tenant_id));
    IF chain <> 'audit_ledger' THEN
        SELECT seq, chain_hash INTO head_seq, head_hash
          FROM log_exports WHERE tenant_id = NEW.tenant_id ORDER BY seq DESC LIMIT 1;
    ELSE
        mine := 'aos.ledger_head_' || md5(NEW.tenant_id);
        pending := string_to_array(nullif(current_setting(mine, true), ''), '|');
        IF pending IS NOT NULL THEN
            head_seq := pending[1]::bigint;
            head_at := pending[2]::timestamp AT TIME ZONE 'UTC';
        ELSE  -- the head row (0032): the newest entry when the last transaction appended it
            SELECT h.seq, h.created_at INTO head_seq, head_at FROM ledger_heads h WHERE h.tenant_id = NEW.tenant_id;
            pending := ARRAY[NULL, NULL, CASE WHEN FOUND THEN 'row' END];
        END IF;
        -- The entry named must be the ledger's (one probe of the head's month), else 0008's
        -- lookup. seq >= … ORDER BY seq, not seq = …: the planner then takes the (tenant_id,
        -- seq, created_at) index for sure (enable_sort is off), never (tenant_id, created_at …),
        -- which reads every entry of that instant (a bulk INSERT's now(): quadratic).
        SELECT a.seq, a.chain_hash INTO found_seq, head_hash FROM audit_ledger a
         WHERE a.tenant_id = NEW.tenant_id AND a.seq >= head_seq AND a.created_at = head_at
         ORDER BY a.seq LIMIT 1;
        IF found_seq IS NULL OR found_seq <> head_seq THEN
            SELECT a.seq, a.chain_hash INTO head_seq, head_hash
              FROM audit_ledger a WHERE a.tenant_id = NEW.tenant_id ORDER BY a.seq DESC LIMIT 1;
            -- a dropped beginning: the chain goes on from its anchor
            IF head_seq IS NULL THEN
                SELECT c.seq, c.chain_hash INTO head_seq, head_hash FROM ledger_checkpoints c
                 WHERE c.tenant_id = NEW.tenant_id AND c.kind = 'RETENTION_ANCHOR' ORDER BY c.seq DESC LIMIT 1;
            END IF;
        END IF;
    END IF;
    NEW.seq := coalesce(head_seq, 0) + 1;
    NEW.prev_hash := coalesce(head_hash, decode(repeat('00', 32), 'hex'));
    NEW.chain_hash := sha256(NEW.prev_hash || NEW.content_hash);
    NEW.recorded_at := clock_timestamp();
    IF chain = 'audit_ledger' THEN
        -- The head row is written by the transaction's first append of the tenant (it then
        -- names that entry) and cleared by its second; later ones only keep the setting. One
        -- row version per transaction or two, never one per entry: the versions a long
        -- transaction leaves cannot be pruned before it ends, and a COPY of n entries would
        -- read all of them n times. A cleared row sends the next transaction to the lookup.
        IF pending[3] IS NULL THEN
            INSERT INTO ledger_heads (tenant_id, seq, chain_hash, created_at)
            VALUES (NEW.tenant_id, NEW.seq, NEW.chain_hash, NEW.created_at)
            ON CONFLICT (tenant_id) DO UPDATE SET seq = EXCLUDED.seq, chain_hash = EXCLUDED.chain_hash,
                                                  created_at = EXCLUDED.created_at;
            pending[3] := 'row';
        ELSIF pending[3] = 'row' AND pending[1] IS NULL THEN
            UPDATE ledger_heads SET seq = NEW.seq, chain_hash = NEW.chain_hash, created_at = NEW.created_at
             WHERE tenant_id = NEW.tenant_id;
        ELSIF pending[3] = 'row' THEN
            UPDATE ledger_heads SET seq = NULL, chain_hash = NULL, created_at = NULL
             WHERE tenant_id = NEW.tenant_id;
            pending[3] := 'cleared';
        END IF;
        PERFORM set_config(mine, NEW.seq || '|' || to_char(NEW.created_at AT TIME ZONE 'UTC',
                                                           'YYYY-MM-DD HH24:MI:SS.US') || '|' || pending[3], true);
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
