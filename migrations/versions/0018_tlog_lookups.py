"""The tree trigger probes each stored hash it needs by its primary key; a leaf is found by its entry id.

Revision ID: 0018_tlog_lookups
Revises: 0017_ingest_role
Create Date: 2026-12-07

Why (issue #20): ``make test-db`` against PostgreSQL 15 went from 2.5 to 16 minutes when
0013's tree trigger landed. EXPLAIN ANALYZE of the trigger's statements (auto_explain,
log_nested_statements) showed 0013's one lookup of the left siblings,
``hash_index = ANY(wanted)``, planned on PG 15 as an index scan on (tenant_id, log) only,
with the array as a *filter*: every stored hash of the tenant's log was read on each append
that completes a subtree ("Rows Removed by Filter: 10003" at 5,000 entries), so a bulk load
was O(n²) (measured on PG 15, one 5,000-row INSERT of one tenant: 13.4 s with the trigger,
1.4 s without). The planner costs a scalar-array index qual as one descent per element, and
``tlog_hashes``'s statistics (taken while it was small) make the whole-prefix scan look
cheaper; PG 17+ cost such quals differently, so the embedded PostgreSQL (18) got the index
condition and the tests there stayed fast. ``SET enable_seqscan = off`` did not help: the
slow plan is an index scan.

What changes: ``aos_tlog_add`` and ``aos_tlog_append`` (the trigger) keep 0013's contract
and stored-hash layout, but look each left sibling up alone, by the whole primary key
(tenant_id, log, hash_index = StoredHashIndex(m, (n >> m) - 1)), bottom up; an equality on
every key column is planned as a unique probe whatever the statistics say. That is one probe
per subtree the leaf completes (on average one, none for half of all appends) and one INSERT
of the leaf hash and the completed subtrees' hashes together (0013 issued two). The same
5,000 rows: 2.0 s with the trigger, 1.1 s without (the machine loaded by other work).

Kept from 0013: SECURITY DEFINER with the pinned search_path (the trigger writes a table no
service role may), and enable_seqscan off (a table the planner believes empty would still
get a sequential scan for a primary-key probe). A function with SET clauses is never
inlined and sets and resets both per call; that per-row cost (tens of µs) stays, and a
statement-level trigger over the transition table would pay it once per statement instead:
not done here (a statement trigger on the partitioned ledger does not fire for rows
inserted into a partition directly, which the row trigger covers).

A leaf by its entry id: ``tlog_hashes_entry``, a partial index on (tenant_id, log, entry_id)
over the leaf rows. GetInclusionProof by entry_id looked the seq up in audit_ledger, so an
entry whose month retention dropped was NOT_FOUND although its leaf (with its id) is kept;
and the export log's leaves had no id lookup at all. With the index both are one probe of
the tree itself. It costs one more index entry per append (leaf rows only).

Downgrade restores 0013's function bodies and drops the index.
"""
import importlib.util
from pathlib import Path

from alembic import op

revision = "0018_tlog_lookups"
down_revision = "0017_ingest_role"
branch_labels = None
depends_on = None

PINNED = "pg_catalog, public, pg_temp"

_TLOG_DECLARE = """\
    n          bigint := a_seq - 1;
    first      bigint := 2 * n - bit_count(n::bit(64));
    h          bytea := sha256('\\x00'::bytea || a_leaf);
    hashes     bytea[] := ARRAY[h];
    lower      bigint;
    left_hash  bytea;
    m          integer := 0;"""
_TLOG_BODY = """\
    -- One primary-key probe per subtree leaf n completes (one per trailing 1 bit of n; none
    -- for half of all appends), bottom up: level m's left half is the stored hash
    -- StoredHashIndex(m, (n >> m) - 1) = 2(n - 2^m) - popcount(n - 2^m) + m.
    WHILE (n >> m) & 1 = 1 LOOP
        lower := n - (1::bigint << m);
        SELECT t.hash INTO left_hash FROM tlog_hashes t
         WHERE t.tenant_id = a_tenant AND t.log = a_log AND t.hash_index = 2 * lower - bit_count(lower::bit(64)) + m;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'tlog %/%: the tree lacks hashes below leaf %', a_log, a_tenant, n USING ERRCODE = 'AOS03';
        END IF;
        h := sha256('\\x01'::bytea || left_hash || h);
        hashes := hashes || h;
        m := m + 1;
    END LOOP;
    -- the leaf hash (with its entry) and the completed subtrees' hashes, at consecutive indexes
    INSERT INTO tlog_hashes (tenant_id, log, hash_index, hash, tree_size, entry_id, leaf_data, created_at,
                             recorded_at)
    SELECT a_tenant, a_log, first + u.i - 1, u.x, a_seq, CASE WHEN u.i = 1 THEN a_entry END,
           CASE WHEN u.i = 1 THEN a_leaf END, CASE WHEN u.i = 1 THEN a_created END,
           CASE WHEN u.i = 1 THEN a_recorded END
      FROM unnest(hashes) WITH ORDINALITY AS u(x, i);
    RETURN{nothing};"""


def functions(declare: str, body: str) -> str:
    """Both functions over one body (CREATE OR REPLACE keeps their owner and grants)."""
    return f"""
CREATE OR REPLACE FUNCTION aos_tlog_add(a_tenant text, a_log text, a_seq bigint, a_entry text, a_leaf bytea,
                                        a_created timestamptz, a_recorded timestamptz) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = {PINNED} SET enable_seqscan = off
AS $$
DECLARE
{declare}
BEGIN
{body.format(nothing="")}
END $$;

CREATE OR REPLACE FUNCTION aos_tlog_append() RETURNS trigger
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
{declare}
BEGIN
{body.format(nothing=" NULL")}
END $$;
"""


def upgrade() -> None:
    op.execute(functions(_TLOG_DECLARE, _TLOG_BODY))
    op.execute("CREATE INDEX tlog_hashes_entry ON tlog_hashes (tenant_id, log, entry_id) WHERE entry_id IS NOT NULL")


def downgrade() -> None:
    # 0013's bodies, from 0013 itself (frozen), rather than a second copy here.
    spec = importlib.util.spec_from_file_location("m0013", Path(__file__).with_name("0013_transparency_log.py"))
    m0013 = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(m0013)
    op.execute(functions(m0013._TLOG_DECLARE, m0013._TLOG_BODY))
    op.execute("DROP INDEX tlog_hashes_entry")
