"""The audit ledger partitioned by month of created_at, with checkpoint-gated retention.

Revision ID: 0008_partitioned_audit_ledger
Revises: 0007_tenant_keyed_schema
Create Date: 2026-11-25

Why: an append-only table can never shed a row; a partitioned one sheds a month by
dropping its partition — which aos_drop_ledger_partitions() does only for whole
months that hold exactly the beginning of every tenant's chain, each covered by a
recorded checkpoint that still matches, recording each tenant's retention anchor
first (docs/SCALE.md; the maintenance path is aos_recording.retention). This was
the tested prototype of aos_recording/retention.py, frozen here.

What it does, in one transaction with the ledger locked (nothing is appended while
it runs):
1. the chain trigger names its chain (TG_ARGV: in a partition TG_TABLE_NAME is the
   partition's name) and continues a chain whose beginning was dropped from its
   anchor; ledger_checkpoints and the three owner-only maintenance functions;
2. the ledger steps aside; ``audit_ledger`` is created again with the same columns
   and checks, PARTITION BY RANGE (created_at): one partition per month (UTC) from
   the month of its oldest entry to three months ahead, and a default partition for
   any row no month takes (a missed `ensure` never refuses evidence);
3. the rows are copied before any trigger exists on the new table, so every seq and
   hash stays as the database assigned it;
4. the same indexes, triggers (ENABLE ALWAYS, on every partition too), row-level
   security and grants; the old table is dropped.

Keys: a partitioned table enforces only unique keys that contain the partition key:
the primary key is (tenant_id, id, created_at) and (tenant_id, seq, created_at)
replaces (tenant_id, seq). seq stays unique because the chain trigger assigns it
under the tenant's advisory lock, as it always did.

At volume the copy costs ~19 s of write unavailability per million entries (measured,
docs/SCALE.md). A large live ledger should instead be attached as one legacy
partition (its unique indexes built CONCURRENTLY first, a CHECK on created_at added
NOT VALID and validated): not done here.

Downgrade copies the rows back into an unpartitioned table (the same steps
reversed) and drops ledger_checkpoints and the functions; entries dropped by
retention stay dropped.
"""
from alembic import op

revision = "0008_partitioned_audit_ledger"
down_revision = "0007_tenant_keyed_schema"
branch_labels = None
depends_on = None

MONTHS_AHEAD = 3

# The chain trigger names its chain: in a partition TG_TABLE_NAME is the partition's
# name, and the head lookup and the lock key must be the whole table's. The head
# lookup (ORDER BY seq DESC LIMIT 1) must read each partition's (tenant_id, seq, ...)
# index backwards; on partitions without statistics yet (new months, a fresh
# database) the planner chose scan + sort instead, and a COPY of one tenant's entries
# went quadratic (3,000 entries: 6.9 s, 1.2 s with sorting off; 0.98 s unpartitioned).
ASSIGN_CHAIN = '''
CREATE OR REPLACE FUNCTION aos_assign_chain() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public SET enable_sort = off
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
'''

# 0001's, restored by downgrade.
ASSIGN_CHAIN_0001 = '''
CREATE OR REPLACE FUNCTION aos_assign_chain() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public
AS $$
DECLARE
    head_seq  bigint;
    head_hash bytea;
BEGIN
    IF NEW.content_hash IS NULL OR octet_length(NEW.content_hash) <> 32 THEN
        RAISE EXCEPTION '%.content_hash must be a 32-byte SHA-256', TG_TABLE_NAME USING ERRCODE = '22023';
    END IF;
    PERFORM pg_advisory_xact_lock(aos_chain_lock_key(TG_TABLE_NAME, NEW.tenant_id));
    IF TG_TABLE_NAME = 'audit_ledger' THEN
        SELECT seq, chain_hash INTO head_seq, head_hash
          FROM audit_ledger WHERE tenant_id = NEW.tenant_id ORDER BY seq DESC LIMIT 1;
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
'''

CHECKPOINTS = r'''
CREATE TABLE ledger_checkpoints (
    tenant_id   text        NOT NULL REFERENCES tenants(id),
    -- CHECKPOINT: the chain head at some moment; RETENTION_ANCHOR: the last entry dropped
    kind        text        NOT NULL CHECK (kind IN ('CHECKPOINT', 'RETENTION_ANCHOR')),
    seq         bigint      NOT NULL CHECK (seq >= 1),
    chain_hash  bytea       NOT NULL CHECK (octet_length(chain_hash) = 32),
    -- the DSSE-signed statement, when a service signed this checkpoint for an auditor
    envelope    jsonb,
    recorded_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (tenant_id, kind, seq)
);
ALTER TABLE ledger_checkpoints OWNER TO aos_owner;
DROP TRIGGER IF EXISTS ledger_checkpoints_append_only ON ledger_checkpoints;
DROP TRIGGER IF EXISTS ledger_checkpoints_no_truncate ON ledger_checkpoints;
CREATE TRIGGER ledger_checkpoints_append_only BEFORE UPDATE OR DELETE ON ledger_checkpoints
    FOR EACH ROW EXECUTE FUNCTION aos_refuse_mutation();
CREATE TRIGGER ledger_checkpoints_no_truncate BEFORE TRUNCATE ON ledger_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION aos_refuse_mutation();
ALTER TABLE ledger_checkpoints ENABLE ALWAYS TRIGGER ledger_checkpoints_append_only;
ALTER TABLE ledger_checkpoints ENABLE ALWAYS TRIGGER ledger_checkpoints_no_truncate;
ALTER TABLE ledger_checkpoints ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS ledger_checkpoints_tenant ON ledger_checkpoints;
CREATE POLICY ledger_checkpoints_tenant ON ledger_checkpoints
    USING (tenant_id = aos_current_tenant()) WITH CHECK (tenant_id = aos_current_tenant());
GRANT SELECT ON ledger_checkpoints TO aos_logs, aos_export;

-- Records each tenant's chain head (or one tenant's) as a checkpoint, with the
-- signed statement when there is one. As the owner: it must see every chain.
CREATE OR REPLACE FUNCTION aos_record_ledger_checkpoints(tenant text DEFAULT NULL, envelope jsonb DEFAULT NULL)
RETURNS TABLE (tenant_id text, seq bigint, chain_hash bytea)
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, public
AS $$
    INSERT INTO ledger_checkpoints AS c (tenant_id, kind, seq, chain_hash, envelope)
    SELECT t.id, 'CHECKPOINT', h.seq, h.chain_hash, envelope
      FROM tenants t
      CROSS JOIN LATERAL (SELECT a.seq, a.chain_hash FROM audit_ledger a WHERE a.tenant_id = t.id
                          ORDER BY a.seq DESC LIMIT 1) h
     WHERE tenant IS NULL OR t.id = tenant
    ON CONFLICT DO NOTHING
    RETURNING c.tenant_id, c.seq, c.chain_hash
$$;

-- Monthly partitions (UTC) from `first` through `through`, each refusing TRUNCATE like
-- its parent (a statement trigger is not inherited). A month some row already holds
-- in the default partition is left to it: creating it would have to move evidence.
CREATE OR REPLACE FUNCTION aos_ensure_ledger_partitions(first timestamptz, through timestamptz)
RETURNS SETOF text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public SET timezone = 'UTC'
AS $$
DECLARE
    month timestamptz := date_trunc('month', first);
    part  text;
    trig  text;
BEGIN
    WHILE month <= through LOOP
        part := 'audit_ledger_p' || to_char(month, 'YYYY_MM');
        IF to_regclass(part) IS NULL THEN
            IF EXISTS (SELECT 1 FROM audit_ledger_default
                        WHERE created_at >= month AND created_at < month + interval '1 month') THEN
                RAISE NOTICE 'audit_ledger: rows of % are in the default partition; month left to it', part;
            ELSE
                EXECUTE format('CREATE TABLE public.%I PARTITION OF public.audit_ledger FOR VALUES FROM (%L) TO (%L)',
                               part, month, month + interval '1 month');
                EXECUTE format('CREATE TRIGGER %I BEFORE TRUNCATE ON %I FOR EACH STATEMENT '
                               'EXECUTE FUNCTION public.aos_refuse_mutation()', part || '_no_truncate', part);
                -- cloned row triggers included: replica mode must not silence any of them
                FOR trig IN SELECT tgname FROM pg_trigger WHERE tgrelid = part::regclass AND NOT tgisinternal LOOP
                    EXECUTE format('ALTER TABLE %I ENABLE ALWAYS TRIGGER %I', part, trig);
                END LOOP;
                RETURN NEXT part;
            END IF;
        END IF;
        month := month + interval '1 month';
    END LOOP;
END $$;

-- Drops every monthly partition that ends on or before `before`, as one set, only if
-- for every tenant with entries in it the set is the beginning of its chain and a
-- checkpoint at or after its last entry still matches the ledger. The anchors (the
-- last dropped entry of each tenant) are recorded first. Refuses with AOS02.
CREATE OR REPLACE FUNCTION aos_drop_ledger_partitions(before timestamptz)
RETURNS SETOF text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public SET timezone = 'UTC'
AS $$
DECLARE
    doomed text[];
    part   text;
    gone   text;
    bad    record;
BEGIN
    SELECT array_agg(c.relname::text ORDER BY c.relname) INTO doomed
      FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
     WHERE i.inhparent = 'audit_ledger'::regclass AND c.relname <> 'audit_ledger_default'
       AND (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'TO \(''([^'']+)''\)'))[1]::timestamptz <= before;
    IF doomed IS NULL THEN
        RETURN;
    END IF;
    -- Writers that would route a row into the set wait; new entries get higher seqs
    -- than any dropped one, so the check below cannot go stale before the drop.
    FOREACH part IN ARRAY doomed LOOP
        EXECUTE format('LOCK TABLE %I IN ACCESS EXCLUSIVE MODE', part);
    END LOOP;
    SELECT string_agg(format('SELECT tenant_id, seq, chain_hash FROM %I', p), ' UNION ALL ') INTO gone
      FROM unnest(doomed) p;
    DROP TABLE IF EXISTS aos_retention_gone;
    CREATE TEMP TABLE aos_retention_gone ON COMMIT DROP AS SELECT NULL::text AS tenant_id, 0::bigint AS last_seq,
        0::bigint AS n, NULL::bytea AS last_hash WITH NO DATA;
    EXECUTE 'INSERT INTO aos_retention_gone SELECT DISTINCT ON (tenant_id) tenant_id, seq, '
            'count(*) OVER (PARTITION BY tenant_id), chain_hash FROM (' || gone || ') g '
            'ORDER BY tenant_id, seq DESC';
    FOR bad IN
        SELECT g.tenant_id, g.last_seq, k.n_before, c.seq AS checkpoint_seq, c.matches
          FROM aos_retention_gone g
          -- every entry of the tenant up to the last dropped one, wherever it lives
          CROSS JOIN LATERAL (SELECT count(*) AS n_before FROM audit_ledger a
                              WHERE a.tenant_id = g.tenant_id AND a.seq <= g.last_seq) k
          LEFT JOIN LATERAL (SELECT lc.seq, lc.chain_hash = a.chain_hash AS matches
                               FROM ledger_checkpoints lc
                               LEFT JOIN audit_ledger a ON a.tenant_id = lc.tenant_id AND a.seq = lc.seq
                              WHERE lc.tenant_id = g.tenant_id AND lc.kind = 'CHECKPOINT' AND lc.seq >= g.last_seq
                              ORDER BY lc.seq LIMIT 1) c ON true
         WHERE k.n_before <> g.n OR c.seq IS NULL OR c.matches IS NOT TRUE
         ORDER BY g.tenant_id LIMIT 1
    LOOP
        IF bad.n_before <> (SELECT n FROM aos_retention_gone WHERE tenant_id = bad.tenant_id) THEN
            RAISE EXCEPTION 'retention refused: tenant % has entries before seq % outside %: '
                'not the chain''s beginning', bad.tenant_id, bad.last_seq, doomed USING ERRCODE = 'AOS02';
        ELSIF bad.checkpoint_seq IS NULL THEN
            RAISE EXCEPTION 'retention refused: no checkpoint of tenant % covers seq % (in %)',
                bad.tenant_id, bad.last_seq, doomed USING ERRCODE = 'AOS02',
                HINT = 'record checkpoints first: SELECT * FROM aos_record_ledger_checkpoints()';
        ELSE
            RAISE EXCEPTION 'retention refused: tenant %''s checkpoint at seq % no longer matches the ledger',
                bad.tenant_id, bad.checkpoint_seq USING ERRCODE = 'AOS02';
        END IF;
    END LOOP;
    INSERT INTO ledger_checkpoints (tenant_id, kind, seq, chain_hash)
    SELECT tenant_id, 'RETENTION_ANCHOR', last_seq, last_hash FROM aos_retention_gone;
    FOREACH part IN ARRAY doomed LOOP
        EXECUTE format('DROP TABLE %I', part);
        RETURN NEXT part;
    END LOOP;
END $$;

-- The owner creates the partitions (the schema is closed to everyone else since 0001).
GRANT CREATE ON SCHEMA public TO aos_owner;
ALTER FUNCTION aos_record_ledger_checkpoints(text, jsonb) OWNER TO aos_owner;
ALTER FUNCTION aos_ensure_ledger_partitions(timestamptz, timestamptz) OWNER TO aos_owner;
ALTER FUNCTION aos_drop_ledger_partitions(timestamptz) OWNER TO aos_owner;
REVOKE EXECUTE ON FUNCTION aos_record_ledger_checkpoints(text, jsonb),
    aos_ensure_ledger_partitions(timestamptz, timestamptz), aos_drop_ledger_partitions(timestamptz) FROM PUBLIC;
'''

_TRIGGERS = """
CREATE TRIGGER audit_ledger_append_only BEFORE UPDATE OR DELETE ON audit_ledger
    FOR EACH ROW EXECUTE FUNCTION aos_refuse_mutation();
CREATE TRIGGER audit_ledger_no_truncate BEFORE TRUNCATE ON audit_ledger
    FOR EACH STATEMENT EXECUTE FUNCTION aos_refuse_mutation();
CREATE TRIGGER audit_ledger_chain BEFORE INSERT ON audit_ledger
    FOR EACH ROW EXECUTE FUNCTION aos_assign_chain({chain_argument});
ALTER TABLE audit_ledger ENABLE ROW LEVEL SECURITY;
CREATE POLICY audit_ledger_tenant ON audit_ledger USING (tenant_id = aos_current_tenant())
    WITH CHECK (tenant_id = aos_current_tenant());
"""


def _step_aside(conn, new_name: str) -> tuple[list[str], list[tuple[str, str]]]:
    """Locks the ledger and renames it (and its indexes) to ``new_name``; returns the
    definitions of its plain indexes and its grants, to give the new table."""
    conn.exec_driver_sql("LOCK TABLE audit_ledger IN ACCESS EXCLUSIVE MODE")
    indexes = [r[0] for r in conn.exec_driver_sql(
        "SELECT pg_get_indexdef(i.indexrelid) FROM pg_index i LEFT JOIN pg_constraint c "
        "ON c.conindid = i.indexrelid AND c.conrelid = i.indrelid "
        "WHERE i.indrelid = 'audit_ledger'::regclass AND c.oid IS NULL ORDER BY 1")]
    grants = [tuple(r) for r in conn.exec_driver_sql(
        "SELECT a.grantee::regrole::text, a.privilege_type FROM pg_class c, aclexplode(c.relacl) a "
        "WHERE c.oid = 'audit_ledger'::regclass AND a.grantee <> c.relowner AND a.grantee <> 0 ORDER BY 1, 2")]
    conn.exec_driver_sql(f"ALTER TABLE audit_ledger RENAME TO {new_name}")
    for (index,) in conn.exec_driver_sql(
            f"SELECT indexrelid::regclass::text FROM pg_index WHERE indrelid = '{new_name}'::regclass").fetchall():
        conn.exec_driver_sql(f'ALTER INDEX {index} RENAME TO "{("old_" + index)[:63]}"')
    return indexes, grants


def _finish(conn, old_name: str, indexes: list[str], grants: list[tuple[str, str]], chain_argument: str) -> None:
    """Copies the rows (no trigger yet: seq and hashes as they were), then the indexes,
    triggers (ENABLE ALWAYS on the table and every partition), row-level security and grants."""
    conn.exec_driver_sql(f"INSERT INTO audit_ledger SELECT * FROM {old_name}")
    for definition in indexes:
        conn.exec_driver_sql(definition)
    op.execute(_TRIGGERS.format(chain_argument=chain_argument))
    for table, trigger in conn.exec_driver_sql(
            "SELECT t.tgrelid::regclass::text, t.tgname FROM pg_trigger t WHERE NOT t.tgisinternal AND "
            "(t.tgrelid = 'audit_ledger'::regclass OR t.tgrelid IN "
            " (SELECT inhrelid FROM pg_inherits WHERE inhparent = 'audit_ledger'::regclass))").fetchall():
        conn.exec_driver_sql(f'ALTER TABLE {table} ENABLE ALWAYS TRIGGER "{trigger}"')
    for grantee, privilege in grants:
        conn.exec_driver_sql(f"GRANT {privilege} ON audit_ledger TO {grantee}")
    conn.exec_driver_sql(f"DROP TABLE {old_name}")


def upgrade() -> None:
    op.execute(ASSIGN_CHAIN)
    op.execute(CHECKPOINTS)
    conn = op.get_bind()
    indexes, grants = _step_aside(conn, "audit_ledger_unpartitioned")
    op.execute("""
        CREATE TABLE audit_ledger (LIKE audit_ledger_unpartitioned INCLUDING DEFAULTS INCLUDING CONSTRAINTS)
            PARTITION BY RANGE (created_at);
        ALTER TABLE audit_ledger ADD CONSTRAINT audit_ledger_pkey PRIMARY KEY (tenant_id, id, created_at);
        ALTER TABLE audit_ledger ADD CONSTRAINT audit_ledger_tenant_id_seq_key UNIQUE (tenant_id, seq, created_at);
        ALTER TABLE audit_ledger ADD CONSTRAINT audit_ledger_tenant_id_fkey FOREIGN KEY (tenant_id) REFERENCES tenants (id);
        ALTER TABLE audit_ledger OWNER TO aos_owner;
        CREATE TABLE audit_ledger_default PARTITION OF audit_ledger DEFAULT;
        CREATE TRIGGER audit_ledger_default_no_truncate BEFORE TRUNCATE ON audit_ledger_default
            FOR EACH STATEMENT EXECUTE FUNCTION aos_refuse_mutation();
        ALTER TABLE audit_ledger_default OWNER TO aos_owner;""")
    # Months from the oldest entry's (or this one) to MONTHS_AHEAD after this one.
    op.execute(f"""
        SELECT aos_ensure_ledger_partitions(
            coalesce((SELECT min(created_at) FROM audit_ledger_unpartitioned), now()),
            date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' + interval '{MONTHS_AHEAD} months')""")
    copied = conn.exec_driver_sql("SELECT EXISTS (SELECT FROM audit_ledger_unpartitioned)").scalar()
    _finish(conn, "audit_ledger_unpartitioned", indexes, grants, "'audit_ledger'")
    # Only with rows: ANALYZE of empty partitions records them as empty for sure
    # (reltuples 0), and the chain trigger's cached generic head lookup then sorts a
    # sequential scan of the default partition for every row of a long COPY (quadratic;
    # never-analyzed partitions are assumed non-empty and get the index scan).
    if copied:
        op.execute("ANALYZE audit_ledger")


def downgrade() -> None:
    conn = op.get_bind()
    indexes, grants = _step_aside(conn, "audit_ledger_partitioned")
    op.execute("""
        CREATE TABLE audit_ledger (LIKE audit_ledger_partitioned INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
        ALTER TABLE audit_ledger ADD CONSTRAINT audit_ledger_pkey PRIMARY KEY (tenant_id, id);
        ALTER TABLE audit_ledger ADD CONSTRAINT audit_ledger_tenant_id_seq_key UNIQUE (tenant_id, seq);
        ALTER TABLE audit_ledger ADD CONSTRAINT audit_ledger_tenant_id_fkey FOREIGN KEY (tenant_id) REFERENCES tenants (id);
        ALTER TABLE audit_ledger OWNER TO aos_owner;""")
    _finish(conn, "audit_ledger_partitioned", indexes, grants, "")
    op.execute("""
        DROP FUNCTION aos_drop_ledger_partitions(timestamptz);
        DROP FUNCTION aos_ensure_ledger_partitions(timestamptz, timestamptz);
        DROP FUNCTION aos_record_ledger_checkpoints(text, jsonb);
        DROP TABLE ledger_checkpoints;
        REVOKE CREATE ON SCHEMA public FROM aos_owner;""")
    op.execute(ASSIGN_CHAIN_0001)
