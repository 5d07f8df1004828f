"""Each tenant's ledger and export chain is also an RFC 6962 Merkle tree, kept by the database.

Revision ID: 0013_transparency_log
Revises: 0012_pinned_search_path
Create Date: 2026-12-06

Why (issue #20): proving that an entry is in the ledger, or that today's ledger extends a
checkpoint, took a walk of the whole chain (O(n)). A Merkle tree over the same entries in
seq order answers both in O(log n) hashes (SPEC §5, "Transparency log").

What it adds:
- ``tlog_hashes``: the stored hashes of every tenant's two logs, ``ledger`` (leaf i = the
  audit entry of seq i + 1, leaf data = its 32 raw content_hash bytes) and ``exports`` (the
  log_exports chain, leaf data = the export row's content_hash), in the layout of Go's
  golang.org/x/mod/sumdb/tlog: the hash of the subtree (level L, index n) is stored at
  ``stored_hash_index(L, n)`` (``aos_recording.tlog``; the trigger computes it as 2n - popcount(n)).
  Appending leaf n writes its leaf hash, then one node hash for each trailing 1 bit of n
  (the subtrees it completes), at consecutive indexes; it reads one stored hash per node
  written. So an append costs O(log n) (2 rows on average), a proof or a tree head reads
  O(log n) rows by primary key, and nothing ever reads the whole log.
  Each row keeps ``tree_size``, the size of the tree after the append that wrote it: the
  row with the highest index is the newest, and its tree_size is the log's size (one
  backwards probe of the primary key). Leaf rows (level 0) also keep the entry's id, its
  leaf data and its created_at / recorded_at (a leaf's evidence metadata): retention (aos_recording.retention) drops whole ledger partitions, and
  every later proof still needs the dropped entries' hashes; with the leaf data here,
  ListLedgerLeaves still answers for entries whose rows were dropped. The table is not
  partitioned and retention never touches it (about 2 × 32 bytes of hashes per entry).
- ``aos_tlog_append()``: an AFTER INSERT trigger on audit_ledger (and its partitions) and
  on log_exports. AFTER, not inside the BEFORE chain trigger: a row that ON CONFLICT DO
  NOTHING skips (or that a later BEFORE trigger drops) fires no AFTER trigger, so the tree
  never gets a leaf the table does not hold. It runs in the appending transaction, under
  the tenant's chain lock that aos_assign_chain took (a transaction-level advisory lock,
  held to the commit): appends of one tenant's log are serialised, so the leaves are
  written in seq order, without gaps, and a rollback takes the hashes with it. SECURITY
  DEFINER like the chain trigger: no service role may write the table (no grant), and the
  trigger must read the tenant's hashes whatever the inserting role may read.
- Append-only (UPDATE, DELETE, TRUNCATE refused, ENABLE ALWAYS), row-level security on
  the tenant, SELECT for aos_logs and aos_export only (the services that answer proofs
  and sign checkpoints). No foreign key to tenants: rows come only from the trigger, whose
  row has just passed the ledger's own; an FK check per hash would cost every append.

Backfill: the existing ledgers and export chains, tenant by tenant in seq order, with the
tables locked against appends (SHARE ROW EXCLUSIVE) and before the triggers exist. A
ledger whose beginning retention already dropped cannot be backfilled (its leaves are
gone): the migration refuses, naming the tenant, rather than keep a tree that does not
start at entry 1.

Downgrade drops the triggers, the table and the functions.
"""
from alembic import op

revision = "0013_transparency_log"
down_revision = "0012_pinned_search_path"
branch_labels = None
depends_on = None

OWNER = "aos_owner"
PINNED = "pg_catalog, public, pg_temp"
# The logs and the chained tables they follow (TG_ARGV[0] of the trigger is the log).
LOGS = {"audit_ledger": "ledger", "log_exports": "exports"}

# aos_tlog_add's work, shared with the trigger function (which reads its inputs from NEW):
# the a_* inputs are declared before these.
_TLOG_DECLARE = """\
    n          bigint := a_seq - 1;
    first      bigint := 2 * n - bit_count(n::bit(64));
    h          bytea := sha256('\\x00'::bytea || a_leaf);
    m          integer := 0;
    wanted     bigint[] := '{}';
    lefts      bytea[];
    hashes     bytea[] := '{}';"""
_TLOG_BODY = """\
    INSERT INTO tlog_hashes (tenant_id, log, hash_index, hash, tree_size, entry_id, leaf_data, created_at,
                             recorded_at)
    VALUES (a_tenant, a_log, first, h, a_seq, a_entry, a_leaf, a_created, a_recorded);
    IF n & 1 = 0 THEN
        RETURN{nothing};  -- half of all appends: a left child completes nothing
    END IF;
    WHILE (n >> m) & 1 = 1 LOOP
        wanted := wanted || (2 * (n - (1::bigint << m)) - bit_count((n - (1::bigint << m))::bit(64)) + m);
        m := m + 1;
    END LOOP;
    -- level 0's left sibling has the highest index, each level up a lower one
    SELECT array_agg(t.hash ORDER BY t.hash_index DESC) INTO lefts FROM tlog_hashes t
     WHERE t.tenant_id = a_tenant AND t.log = a_log AND t.hash_index = ANY(wanted);
    IF coalesce(array_length(lefts, 1), 0) <> m THEN
        RAISE EXCEPTION 'tlog %/%: the tree lacks hashes below leaf %', a_log, a_tenant, n USING ERRCODE = 'AOS03';
    END IF;
    FOR i IN 1..m LOOP
        h := sha256('\\x01'::bytea || lefts[i] || h);
        hashes := hashes || h;
    END LOOP;
    INSERT INTO tlog_hashes (tenant_id, log, hash_index, hash, tree_size)
    SELECT a_tenant, a_log, first + i, x, a_seq FROM unnest(hashes) WITH ORDINALITY AS u(x, i);
    RETURN{nothing};"""

SCHEMA = f"""
CREATE TABLE tlog_hashes (
    tenant_id  text   NOT NULL,
    log        text   NOT NULL CHECK (log IN ('ledger', 'exports')),
    -- Go sumdb/tlog's stored hash index, StoredHashIndex(level, n)
    hash_index bigint NOT NULL CHECK (hash_index >= 0),
    hash       bytea  NOT NULL CHECK (octet_length(hash) = 32),
    -- the log's size after the append that wrote this hash (for a leaf: its seq)
    tree_size  bigint NOT NULL CHECK (tree_size >= 1),
    -- leaf rows only: the entry (audit entry or export id), its leaf data (content hash),
    -- when it happened and when the database recorded it (its row's created_at, recorded_at)
    entry_id    text,
    leaf_data   bytea  CHECK (octet_length(leaf_data) = 32),
    created_at  timestamptz,
    recorded_at timestamptz,
    PRIMARY KEY (tenant_id, log, hash_index),
    CHECK ((entry_id IS NULL) = (leaf_data IS NULL) AND (entry_id IS NULL) = (created_at IS NULL)
           AND (entry_id IS NULL) = (recorded_at IS NULL))
);
ALTER TABLE tlog_hashes OWNER TO {OWNER};
CREATE TRIGGER tlog_hashes_append_only BEFORE UPDATE OR DELETE ON tlog_hashes
    FOR EACH ROW EXECUTE FUNCTION aos_refuse_mutation();
CREATE TRIGGER tlog_hashes_no_truncate BEFORE TRUNCATE ON tlog_hashes
    FOR EACH STATEMENT EXECUTE FUNCTION aos_refuse_mutation();
ALTER TABLE tlog_hashes ENABLE ALWAYS TRIGGER tlog_hashes_append_only;
ALTER TABLE tlog_hashes ENABLE ALWAYS TRIGGER tlog_hashes_no_truncate;
ALTER TABLE tlog_hashes ENABLE ROW LEVEL SECURITY;
CREATE POLICY tlog_hashes_tenant ON tlog_hashes USING (tenant_id = aos_current_tenant())
    WITH CHECK (tenant_id = aos_current_tenant());
GRANT SELECT ON tlog_hashes TO aos_logs, aos_export;

-- Appends leaf data `a_leaf` as leaf n = a_seq - 1 of a tenant's log (Go sumdb/tlog
-- StoredHashes): its leaf hash, then a node hash per subtree it completes (one per trailing
-- 1 bit of n), at consecutive indexes from StoredHashIndex(0, n) = 2n - popcount(n). The
-- left half of the subtree of level k that leaf n completes is stored at
-- StoredHashIndex(k, (n >> k) - 1) = 2(n - 2^k) - popcount(n - 2^k) + k.
-- Callers hold the tenant's chain lock, and the log holds leaves 0 .. n - 1.
-- enable_seqscan off: the lookup is by primary key, always; a table the planner believes
-- empty (analyzed before its first append) got a sequential scan per append (measured:
-- 3,000 appends in one transaction went from 37 to 1,200 µs each).
CREATE FUNCTION aos_tlog_add(a_tenant text, a_log text, a_seq bigint, a_entry text, a_leaf bytea,
                             a_created timestamptz, a_recorded timestamptz) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = {PINNED} SET enable_seqscan = off
AS $$
DECLARE
{_TLOG_DECLARE}
BEGIN
{_TLOG_BODY.format(nothing="")}
END $$;

-- The trigger: the same body inline (one SECURITY DEFINER call per append, not two).
CREATE FUNCTION aos_tlog_append() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = {PINNED} SET enable_seqscan = off
AS $$
DECLARE
    a_tenant   text := NEW.tenant_id;
    a_log      text := TG_ARGV[0];
    a_seq      bigint := NEW.seq;
    a_entry    text := NEW.id;
    a_leaf     bytea := NEW.content_hash;
    a_created  timestamptz := NEW.created_at;
    a_recorded timestamptz := NEW.recorded_at;
{_TLOG_DECLARE}
BEGIN
{_TLOG_BODY.format(nothing=" NULL")}
END $$;

ALTER FUNCTION aos_tlog_add(text, text, bigint, text, bytea, timestamptz, timestamptz) OWNER TO {OWNER};
ALTER FUNCTION aos_tlog_append() OWNER TO {OWNER};
REVOKE EXECUTE ON FUNCTION aos_tlog_add(text, text, bigint, text, bytea, timestamptz, timestamptz),
    aos_tlog_append() FROM PUBLIC;
"""

# Before 0013 retention dropped only with a RETENTION_ANCHOR recorded first.
REFUSE_DROPPED = """
DO $$
DECLARE t text;
BEGIN
    SELECT string_agg(DISTINCT tenant_id, ', ') INTO t FROM ledger_checkpoints WHERE kind = 'RETENTION_ANCHOR';
    IF t IS NOT NULL THEN
        RAISE EXCEPTION 'migration 0013: the ledgers of % lost their beginning to retention; their '
            'Merkle trees cannot be built without those entries', t USING ERRCODE = 'AOS03';
    END IF;
END $$;"""

# Tenant by tenant (a transaction-local cursor per log), in seq order.
BACKFILL = """
DO $$
DECLARE r record;
BEGIN
    FOR r IN SELECT tenant_id, seq, id, content_hash, created_at, recorded_at FROM {table}
             ORDER BY tenant_id, seq LOOP
        PERFORM aos_tlog_add(r.tenant_id, '{log}', r.seq, r.id, r.content_hash, r.created_at, r.recorded_at);
    END LOOP;
END $$;"""


def upgrade() -> None:
    conn = op.get_bind()
    # No append until the triggers exist (they follow the backfill).
    op.execute("LOCK TABLE audit_ledger, log_exports IN SHARE ROW EXCLUSIVE MODE")
    op.execute(REFUSE_DROPPED)
    op.execute(SCHEMA)
    for table, log in LOGS.items():
        op.execute(BACKFILL.format(table=table, log=log))
        op.execute(f"CREATE TRIGGER {table}_tlog AFTER INSERT ON {table} "
                   f"FOR EACH ROW EXECUTE FUNCTION aos_tlog_append('{log}')")
    # ENABLE ALWAYS on the tables and on every ledger partition's clone of the row trigger
    # (new months get theirs from aos_ensure_ledger_partitions, which enables all).
    for relation, trigger in conn.exec_driver_sql(
            "SELECT t.tgrelid::regclass::text, t.tgname FROM pg_trigger t WHERE NOT t.tgisinternal "
            "AND t.tgname IN ('audit_ledger_tlog', 'log_exports_tlog')").fetchall():
        conn.exec_driver_sql(f'ALTER TABLE {relation} ENABLE ALWAYS TRIGGER "{trigger}"')
    # Only with rows: analyzed empty, the table is planned as empty for sure until the
    # next autovacuum analyze (aos_tlog_add's lookups are pinned to the index anyway).
    if conn.exec_driver_sql("SELECT EXISTS (SELECT FROM tlog_hashes)").scalar():
        op.execute("ANALYZE tlog_hashes")


def downgrade() -> None:
    op.execute("""
        DROP TRIGGER audit_ledger_tlog ON audit_ledger;
        DROP TRIGGER log_exports_tlog ON log_exports;
        DROP TABLE tlog_hashes;
        DROP FUNCTION aos_tlog_append();
        DROP FUNCTION aos_tlog_add(text, text, bigint, text, bytea, timestamptz, timestamptz);""")
