"""The audit ledger partitioned by month, and retention that drops only checkpointed chain segments.

A prototype of issue #9's time partitioning (docs/SCALE.md): no migration applies it
yet. ``partition_ledger`` converts a database's ``audit_ledger`` in place — what the
migration will do — and ``install`` adds what retention needs. This module is the
maintenance path's store: its SQL lives here, as the services' lives in their stores.

Decisions (docs/SCALE.md gives the measurements behind them):

- Key: ``created_at``, by month (UTC). The lists page on ``(created_at DESC, id DESC)``
  and filter by created_at, so they read the newest partitions first and stop; the
  chain's own order (seq) is not a time. ``recorded_at`` cannot be the key: the
  database stamps it in a BEFORE trigger, which runs after the row was routed to a
  partition, and a trigger may not move a row to another one.
- A backdated entry lands in an old partition (or the default one) with a new seq.
  So the gate below is about the chain, not the calendar: a set of partitions is
  dropped only if, for every tenant, it holds exactly the beginning of the tenant's
  chain (no kept entry has a lower seq than a dropped one) and a recorded checkpoint
  at or after its last entry still matches the ledger. The chain hash of the last
  dropped entry is recorded first (a RETENTION_ANCHOR in ``ledger_checkpoints``):
  verification then starts there (``verify.verify_ledger(anchor=...)``).
- Uniqueness: a partitioned table enforces only keys that contain the partition key,
  so ``(tenant_id, seq)`` is unique per partition; across partitions the chain
  trigger's per-tenant lock is what keeps seq unique (it always did assign it).
- Who may drop: ``aos_drop_ledger_partitions`` and ``aos_ensure_ledger_partitions`` run
  as the owner (SECURITY DEFINER) and EXECUTE is revoked from PUBLIC: the migration
  user (maintenance) calls them, no service role can. Service roles cannot DROP,
  DETACH or TRUNCATE a partition either (they own nothing and hold no privilege on
  the partitions).
- Who creates partitions: this module's ``ensure`` command, run by deploy/cron
  (monthly is enough, it creates months ahead); a default partition catches any row
  no month takes, so a missed run never refuses evidence.

    python -m aos_recording.retention checkpoint              # record each tenant's chain head
    python -m aos_recording.retention ensure --ahead 3         # this month and 3 ahead
    python -m aos_recording.retention drop --before 2026-01    # whole months before, if covered
"""
from __future__ import annotations

import argparse
import sys
from datetime import date, datetime, timezone
from typing import Iterable

import psycopg

from aos_recording.verify import Checkpoint

OWNER = "aos_owner"

# The chain trigger names its chain: in a partition TG_TABLE_NAME is the partition's
# name, and the head lookup and the lock key must be the whole table's.
ASSIGN_CHAIN = """
CREATE OR REPLACE FUNCTION aos_assign_chain() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public
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
"""

CHECKPOINTS = """
CREATE TABLE IF NOT EXISTS ledger_checkpoints (
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
       AND (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'TO \\(''([^'']+)''\\)'))[1]::timestamptz <= before;
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
"""


def _month(value: date | datetime) -> datetime:
    return datetime(value.year, value.month, 1, tzinfo=timezone.utc)


def install(conn: psycopg.Connection) -> None:
    """The checkpoint table and the maintenance functions (idempotent). As the migration user."""
    with conn.transaction():
        conn.execute(ASSIGN_CHAIN)
        conn.execute(CHECKPOINTS)


def partition_ledger(conn: psycopg.Connection, *, first_month: date, ahead: int = 3,
                     keep_unpartitioned: bool = False) -> dict[str, float]:
    """Converts ``audit_ledger`` into a table partitioned by month of created_at, in one transaction.

    The old table steps aside (renamed, its index names too), the new one is created
    with the same columns, checks, indexes, row-level security and grants; rows are
    copied before the triggers exist, so every seq and hash is kept as it was; then
    the same triggers are created. Months from ``first_month`` to ``ahead`` months
    after the current one get partitions, anything else the default partition.
    ``keep_unpartitioned`` keeps the old table (as audit_ledger_unpartitioned, no
    privileges left) for comparison; otherwise it is dropped. Returns seconds per step.
    """
    import time

    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(step: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[step] = now - clock
        clock = now

    install(conn)
    with conn.transaction():
        # Exclusive: nothing is appended while the rows move.
        conn.execute("LOCK TABLE audit_ledger IN ACCESS EXCLUSIVE MODE")
        indexes = [r[0] for r in conn.execute(
            "SELECT pg_get_indexdef(i.indexrelid) FROM pg_index i "
            "LEFT JOIN pg_constraint c ON c.conindid = i.indexrelid AND c.conrelid = i.indrelid WHERE i.indrelid = 'audit_ledger'::regclass AND c.oid IS NULL")]
        grants = conn.execute(
            "SELECT a.grantee::regrole::text, a.privilege_type FROM pg_class c, aclexplode(c.relacl) a "
            "WHERE c.oid = 'audit_ledger'::regclass AND a.grantee <> c.relowner AND a.grantee <> 0").fetchall()
        conn.execute("ALTER TABLE audit_ledger RENAME TO audit_ledger_unpartitioned")
        for (index,) in conn.execute("SELECT indexrelid::regclass::text FROM pg_index "
                                     "WHERE indrelid = 'audit_ledger_unpartitioned'::regclass").fetchall():
            conn.execute(f'ALTER INDEX {index} RENAME TO "{("u_" + index)[:63]}"')
        conn.execute("""
            CREATE TABLE audit_ledger (LIKE audit_ledger_unpartitioned INCLUDING DEFAULTS INCLUDING CONSTRAINTS)
                PARTITION BY RANGE (created_at);
            ALTER TABLE audit_ledger ADD CONSTRAINT audit_ledger_pkey PRIMARY KEY (tenant_id, id, created_at);
            ALTER TABLE audit_ledger ADD CONSTRAINT audit_ledger_tenant_id_seq_key UNIQUE (tenant_id, seq, created_at);
            ALTER TABLE audit_ledger ADD CONSTRAINT audit_ledger_tenant_id_fkey
                FOREIGN KEY (tenant_id) REFERENCES tenants (id);
            ALTER TABLE audit_ledger OWNER TO aos_owner;
            CREATE TABLE audit_ledger_default PARTITION OF audit_ledger DEFAULT;
            CREATE TRIGGER audit_ledger_default_no_truncate BEFORE TRUNCATE ON audit_ledger_default
                FOR EACH STATEMENT EXECUTE FUNCTION aos_refuse_mutation();
            ALTER TABLE audit_ledger_default OWNER TO aos_owner;""")
        through = _month(datetime.now(timezone.utc))
        through = through.replace(year=through.year + (through.month - 1 + ahead) // 12,
                                  month=(through.month - 1 + ahead) % 12 + 1)
        conn.execute("SELECT aos_ensure_ledger_partitions(%s, %s)", (_month(first_month), through)).fetchall()
        lap("create")
        conn.execute("INSERT INTO audit_ledger SELECT * FROM audit_ledger_unpartitioned")
        lap("copy")
        for definition in indexes:
            conn.execute(definition)
        lap("indexes")
        conn.execute("""
            CREATE TRIGGER audit_ledger_append_only BEFORE UPDATE OR DELETE ON audit_ledger
                FOR EACH ROW EXECUTE FUNCTION aos_refuse_mutation();
            CREATE TRIGGER audit_ledger_no_truncate BEFORE TRUNCATE ON audit_ledger
                FOR EACH STATEMENT EXECUTE FUNCTION aos_refuse_mutation();
            CREATE TRIGGER audit_ledger_chain BEFORE INSERT ON audit_ledger
                FOR EACH ROW EXECUTE FUNCTION aos_assign_chain('audit_ledger');
            ALTER TABLE audit_ledger ENABLE ROW LEVEL SECURITY;
            CREATE POLICY audit_ledger_tenant ON audit_ledger USING (tenant_id = aos_current_tenant())
                WITH CHECK (tenant_id = aos_current_tenant());""")
        # ENABLE ALWAYS on the parent and on every partition's clone and own trigger.
        for table, trigger in conn.execute(
                "SELECT t.tgrelid::regclass::text, t.tgname FROM pg_trigger t WHERE NOT t.tgisinternal AND "
                "(t.tgrelid = 'audit_ledger'::regclass OR t.tgrelid IN "
                " (SELECT inhrelid FROM pg_inherits WHERE inhparent = 'audit_ledger'::regclass))").fetchall():
            conn.execute(f'ALTER TABLE {table} ENABLE ALWAYS TRIGGER "{trigger}"')
        for grantee, privilege in grants:
            conn.execute(f"GRANT {privilege} ON audit_ledger TO {grantee}")
        if keep_unpartitioned:
            conn.execute("REVOKE ALL ON audit_ledger_unpartitioned FROM " + ", ".join(sorted({g for g, _ in grants})))
        else:
            conn.execute("DROP TABLE audit_ledger_unpartitioned")
    conn.execute("ANALYZE audit_ledger")
    lap("triggers_and_analyze")
    return timings


def partitions(conn: psycopg.Connection) -> list[tuple[str, int]]:
    """The ledger's partitions and their row estimates, oldest first (default last)."""
    return [(name, int(rows)) for name, rows in conn.execute(
        "SELECT c.relname, greatest(c.reltuples, 0) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'audit_ledger'::regclass ORDER BY c.relname = 'audit_ledger_default', c.relname")]


def record_checkpoints(conn: psycopg.Connection, tenant_id: str | None = None) -> list[tuple[str, int, bytes]]:
    """Each tenant's chain head (or one tenant's), recorded as a checkpoint."""
    with conn.transaction():
        return [(t, seq, bytes(h)) for t, seq, h in conn.execute(
            "SELECT * FROM aos_record_ledger_checkpoints(%s)", (tenant_id,))]


def ensure_partitions(conn: psycopg.Connection, *, first: date, through: date) -> list[str]:
    with conn.transaction():
        return [r[0] for r in conn.execute("SELECT aos_ensure_ledger_partitions(%s, %s)",
                                           (_month(first), _month(through)))]


def drop_partitions_before(conn: psycopg.Connection, before: date) -> list[str]:
    """Drops the whole months before ``before`` if every chain segment in them is checkpointed.

    Raises psycopg.Error (sqlstate AOS02) when retention is refused; nothing is dropped then.
    """
    with conn.transaction():
        return [r[0] for r in conn.execute("SELECT aos_drop_ledger_partitions(%s)", (_month(before),))]


def retention_anchor(conn, tenant_id: str) -> Checkpoint | None:
    """The last dropped entry of a tenant's chain: where verification starts (None: nothing dropped).

    ``conn``: a psycopg or SQLAlchemy connection (the verifier's).
    """
    sql = ("SELECT seq, chain_hash FROM ledger_checkpoints WHERE tenant_id = %(t)s AND kind = 'RETENTION_ANCHOR' "
           "ORDER BY seq DESC LIMIT 1")
    if isinstance(conn, psycopg.Connection):
        row = conn.execute(sql, {"t": tenant_id}).fetchone()
    else:
        row = conn.exec_driver_sql(sql, {"t": tenant_id}).first()
    return Checkpoint(int(row[0]), bytes(row[1])) if row else None


def _parse_month(value: str) -> date:
    return datetime.strptime(value, "%Y-%m").date()


def main(argv: Iterable[str]) -> int:
    from aos_runtime.config import Settings
    from aos_runtime.db import libpq_url
    from aos_runtime.embedded import database_url_for

    parser = argparse.ArgumentParser(prog="python -m aos_recording.retention", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("checkpoint", help="record every tenant's chain head as a checkpoint")
    ensure = commands.add_parser("ensure", help="create monthly partitions from this month on")
    ensure.add_argument("--ahead", type=int, default=3, help="months after the current one (default 3)")
    drop = commands.add_parser("drop", help="drop whole months before a month, if checkpointed")
    drop.add_argument("--before", type=_parse_month, required=True, help="YYYY-MM: months before it go")
    args = parser.parse_args(list(argv))

    with database_url_for(Settings.from_env()) as url, \
            psycopg.connect(libpq_url(url), autocommit=True) as conn:
        try:
            if args.command == "checkpoint":
                for tenant, seq, chain in record_checkpoints(conn):
                    print(f"{tenant}\t{seq}\t{chain.hex()}")
            elif args.command == "ensure":
                today = date.today()
                total = today.year * 12 + today.month - 1 + args.ahead
                for name in ensure_partitions(conn, first=today, through=date(total // 12, total % 12 + 1, 1)):
                    print(f"created {name}")
            else:
                for name in drop_partitions_before(conn, args.before):
                    print(f"dropped {name}")
        except psycopg.Error as err:
            print(f"refused: {err.diag.message_primary or err}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
