"""system_records and aos_trace_steps partitioned by month of created_at; their retention follows the ledger's.

Revision ID: 0009_partitioned_records_steps
Revises: 0008_partitioned_audit_ledger
Create Date: 2026-11-25

Why: like the audit ledger (0008), the two other append-only evidence tables that grow
with traffic can then shed a month by dropping its partition instead of never shedding
a row. They carry no hash chain of their own, so their gate is the ledger's: a month of
system records or trace steps is dropped only once the audit ledger holds no entry
before it any more — the ledger's months go first, and only when every tenant's chain
segment in them is covered by a checkpoint (aos_drop_ledger_partitions). Trace steps go
only as whole, finished traces. docs/SCALE.md; the maintenance path is
aos_recording.retention.

What it does, per table, in one transaction with the table locked (0008's steps):
the table steps aside; it is created again PARTITION BY RANGE (created_at) with one
partition per month (UTC) from its oldest row's month to three months ahead and a
default partition; the rows are copied before any trigger exists (recorded_at stays as
the database stamped it); then the same indexes, foreign keys, triggers (ENABLE ALWAYS,
statement triggers on every partition too), row-level security and grants.

Keys: a partitioned table enforces only unique keys that contain the partition key.
- system_records: the primary key becomes (id, created_at). That an id is recorded once
  is kept by a trigger (aos_record_once): under a lock on the id's hash bucket it looks
  the id up in every partition; the same content again is skipped (a producer's retry), different
  content under a recorded id is refused (23505), as the unique key refused it before.
- aos_trace_steps: the primary key becomes (tenant_id, id, created_at); UNIQUE
  (tenant_id, trace_id, step_index) cannot stay. The step trigger, which already reads
  the trace, now locks it (FOR NO KEY UPDATE: one trace's steps are appended one at a
  time) and refuses a taken step_index the same way (same content: skipped).
Writers therefore no longer say ON CONFLICT for these two tables (aos_recording.writers).

Downgrade copies the rows back (every id and recorded_at unchanged) and restores the
unique keys and 0007's step trigger; rows dropped by retention stay dropped.
"""
from alembic import op

revision = "0009_partitioned_records_steps"
down_revision = "0008_partitioned_audit_ledger"
branch_labels = None
depends_on = None

MONTHS_AHEAD = 3

# table -> (partitioned keys, the unpartitioned keys downgrade restores)
KEYS = {
    "system_records": (
        ["CONSTRAINT system_records_pkey PRIMARY KEY (id, created_at)"],
        ["CONSTRAINT system_records_pkey PRIMARY KEY (id)"]),
    "aos_trace_steps": (
        ["CONSTRAINT aos_trace_steps_pkey PRIMARY KEY (tenant_id, id, created_at)"],
        ["CONSTRAINT aos_trace_steps_pkey PRIMARY KEY (tenant_id, id)",
         "CONSTRAINT aos_trace_steps_tenant_id_trace_id_step_index_key UNIQUE (tenant_id, trace_id, step_index)"]),
}
# Only while partitioned: the index the dropped unique key gave the step lookups, and
# the trigger that keeps a system record's id unique.
PARTITIONED_ONLY = {
    "aos_trace_steps": ("CREATE INDEX ix_aos_trace_steps_trace_step ON aos_trace_steps (tenant_id, trace_id, step_index)",
                        "ix_aos_trace_steps_trace_step"),
    "system_records": ("CREATE TRIGGER system_records_once BEFORE INSERT ON system_records "
                       "FOR EACH ROW EXECUTE FUNCTION aos_record_once('system_records')", "system_records_once"),
}

FUNCTIONS = r'''
-- A system record's id is recorded once (the unique key's job before partitioning):
-- the same content again is a producer's retry and is skipped; other content is refused.
CREATE OR REPLACE FUNCTION aos_record_once() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public
AS $$
DECLARE
    stored bytea;
BEGIN
    -- One of 64 locks by the id's hash, not one per id: a bulk COPY would run out of
    -- lock slots ("out of shared memory") with one per row.
    PERFORM pg_advisory_xact_lock(aos_chain_lock_key(TG_ARGV[0], (hashtextextended(NEW.id, 0) & 63)::text));
    SELECT content_hash INTO stored FROM system_records WHERE id = NEW.id LIMIT 1;
    IF NOT FOUND THEN
        RETURN NEW;
    ELSIF stored = NEW.content_hash THEN
        RETURN NULL;
    END IF;
    RAISE EXCEPTION '% %: already recorded with different content', TG_ARGV[0], NEW.id
        USING ERRCODE = '23505';
END $$;

-- A step joins only a running trace of the same tenant, at a step_index not taken.
CREATE OR REPLACE FUNCTION aos_check_step_trace() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public
AS $$
DECLARE
    t record;
    stored bytea;
BEGIN
    -- locked: a trace's steps are appended one at a time, so the check below holds
    SELECT tenant_id, status INTO t FROM aos_traces WHERE tenant_id = NEW.tenant_id AND trace_id = NEW.trace_id
       FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'trace % not found for tenant', NEW.trace_id USING ERRCODE = '23503';
    END IF;
    IF t.status <> 'running' THEN
        RAISE EXCEPTION 'trace % is %: steps are accepted only while it runs', NEW.trace_id, t.status
            USING ERRCODE = 'AOS01';
    END IF;
    SELECT content_hash INTO stored FROM aos_trace_steps
     WHERE tenant_id = NEW.tenant_id AND trace_id = NEW.trace_id AND step_index = NEW.step_index LIMIT 1;
    IF FOUND THEN
        IF stored = NEW.content_hash THEN
            RETURN NULL;
        END IF;
        RAISE EXCEPTION 'trace % step %: already recorded with different content', NEW.trace_id, NEW.step_index
            USING ERRCODE = '23505';
    END IF;
    NEW.recorded_at := clock_timestamp();
    RETURN NEW;
END $$;

-- Monthly partitions (UTC) of a partitioned evidence table from `first` through
-- `through`, each refusing TRUNCATE like its parent. A month some row already holds in
-- the default partition is left to it (creating it would have to move evidence).
CREATE OR REPLACE FUNCTION aos_ensure_partitions(parent text, first timestamptz, through timestamptz)
RETURNS SETOF text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public SET timezone = 'UTC'
AS $$
DECLARE
    month timestamptz := date_trunc('month', first);
    part  text;
    trig  text;
    held  boolean;
BEGIN
    IF parent NOT IN ('system_records', 'aos_trace_steps') THEN
        RAISE EXCEPTION 'aos_ensure_partitions: % is not partitioned by it (the ledger: aos_ensure_ledger_partitions)',
            parent USING ERRCODE = '22023';
    END IF;
    WHILE month <= through LOOP
        part := parent || '_p' || to_char(month, 'YYYY_MM');
        IF to_regclass(part) IS NULL THEN
            EXECUTE format('SELECT EXISTS (SELECT FROM %I WHERE created_at >= $1 AND created_at < $2)',
                           parent || '_default') INTO held USING month, month + interval '1 month';
            IF held THEN
                RAISE NOTICE '%: rows of % are in the default partition; month left to it', parent, part;
            ELSE
                EXECUTE format('CREATE TABLE public.%I PARTITION OF public.%I FOR VALUES FROM (%L) TO (%L)',
                               part, parent, month, month + interval '1 month');
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

-- Drops every monthly partition of system_records or aos_trace_steps that ends on or
-- before `before`, as one set, only if the audit ledger holds no entry before
-- `before` any more (its months went first, each chain segment checkpointed) and, for
-- trace steps, the set holds whole finished traces. Refuses with AOS02.
CREATE OR REPLACE FUNCTION aos_drop_partitions(parent text, before timestamptz)
RETURNS SETOF text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public SET timezone = 'UTC'
AS $$
DECLARE
    doomed oid[];
    part   oid;
    bad    record;
BEGIN
    IF parent NOT IN ('system_records', 'aos_trace_steps') THEN
        RAISE EXCEPTION 'aos_drop_partitions: % is not dropped by it (the ledger: aos_drop_ledger_partitions)',
            parent USING ERRCODE = '22023';
    END IF;
    SELECT array_agg(c.oid ORDER BY c.relname) INTO doomed
      FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
     WHERE i.inhparent = parent::regclass AND c.relname <> parent || '_default'
       AND (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'TO \(''([^'']+)''\)'))[1]::timestamptz <= before;
    IF doomed IS NULL THEN
        RETURN;
    END IF;
    FOREACH part IN ARRAY doomed LOOP
        EXECUTE format('LOCK TABLE %s IN ACCESS EXCLUSIVE MODE', part::regclass);
    END LOOP;
    -- The ledger first: its drop is the one gated by checkpoints.
    IF EXISTS (SELECT FROM audit_ledger WHERE created_at < before) THEN
        RAISE EXCEPTION 'retention refused: the audit ledger still holds entries before %: drop its months first',
            before USING ERRCODE = 'AOS02',
            HINT = 'python -m aos_recording.retention drop drops the ledger''s checkpointed months first';
    END IF;
    IF parent = 'aos_trace_steps' THEN
        FOR bad IN
            SELECT s.tenant_id, s.trace_id, t.status FROM aos_trace_steps s
              JOIN aos_traces t ON t.tenant_id = s.tenant_id AND t.trace_id = s.trace_id
             WHERE s.tableoid = ANY (doomed)
               AND (t.status = 'running' OR EXISTS (
                    SELECT FROM aos_trace_steps k WHERE k.tenant_id = s.tenant_id AND k.trace_id = s.trace_id
                       AND k.tableoid <> ALL (doomed)))
             LIMIT 1
        LOOP
            RAISE EXCEPTION 'retention refused: trace % of tenant % is % with steps outside %', bad.trace_id,
                bad.tenant_id, bad.status, (SELECT array_agg(d::regclass) FROM unnest(doomed) d)
                USING ERRCODE = 'AOS02', HINT = 'a trace''s steps go together, once it has finished';
        END LOOP;
    END IF;
    FOREACH part IN ARRAY doomed LOOP
        RETURN NEXT part::regclass::text;
        EXECUTE format('DROP TABLE %s', part::regclass);
    END LOOP;
END $$;

ALTER FUNCTION aos_record_once() OWNER TO aos_owner;
ALTER FUNCTION aos_ensure_partitions(text, timestamptz, timestamptz) OWNER TO aos_owner;
ALTER FUNCTION aos_drop_partitions(text, timestamptz) OWNER TO aos_owner;
REVOKE EXECUTE ON FUNCTION aos_ensure_partitions(text, timestamptz, timestamptz),
    aos_drop_partitions(text, timestamptz) FROM PUBLIC;
'''

# 0007's step trigger (the unique key refuses a taken step_index), restored by downgrade.
STEP_TRACE_CHECK_0007 = '''
CREATE OR REPLACE FUNCTION aos_check_step_trace() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public
AS $$
DECLARE
    t record;
BEGIN
    SELECT tenant_id, status INTO t FROM aos_traces WHERE tenant_id = NEW.tenant_id AND trace_id = NEW.trace_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'trace % not found for tenant', NEW.trace_id USING ERRCODE = '23503';
    END IF;
    IF t.status <> 'running' THEN
        RAISE EXCEPTION 'trace % is %: steps are accepted only while it runs', NEW.trace_id, t.status
            USING ERRCODE = 'AOS01';
    END IF;
    NEW.recorded_at := clock_timestamp();
    RETURN NEW;
END $$;
'''


def _catalog(conn, table: str) -> dict[str, list]:
    """What the new table must get again: plain indexes, foreign keys, triggers, policies, grants."""
    oid = f"'{table}'::regclass"
    return {
        "indexes": [r[0] for r in conn.exec_driver_sql(
            "SELECT pg_get_indexdef(i.indexrelid) FROM pg_index i LEFT JOIN pg_constraint c "
            f"ON c.conindid = i.indexrelid AND c.conrelid = i.indrelid WHERE i.indrelid = {oid} AND c.oid IS NULL "
            "ORDER BY 1")],
        "foreign_keys": [tuple(r) for r in conn.exec_driver_sql(
            f"SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = {oid} AND contype = 'f' "
            "ORDER BY 1")],
        "triggers": [tuple(r) for r in conn.exec_driver_sql(
            f"SELECT tgname, pg_get_triggerdef(oid) FROM pg_trigger WHERE tgrelid = {oid} AND NOT tgisinternal "
            "ORDER BY 1")],
        "policies": [r[0] for r in conn.exec_driver_sql(
            # %% : psycopg's placeholders
            "SELECT format('CREATE POLICY %%I ON %%I AS %%s FOR %%s TO %%s USING (%%s) WITH CHECK (%%s)', policyname, "
            "tablename, permissive, cmd, array_to_string(roles, ', '), qual, with_check) "
            f"FROM pg_policies WHERE schemaname = 'public' AND tablename = '{table}' ORDER BY 1")],
        "grants": [tuple(r) for r in conn.exec_driver_sql(
            "SELECT a.grantee::regrole::text, a.privilege_type FROM pg_class c, aclexplode(c.relacl) a "
            f"WHERE c.oid = {oid} AND a.grantee <> c.relowner AND a.grantee <> 0 ORDER BY 1, 2")],
    }


def _rebuild(conn, table: str, *, partitioned: bool) -> None:
    """Moves ``table`` aside and creates it again (partitioned by month, or not), copies
    the rows before any trigger exists, then restores everything ``_catalog`` found."""
    conn.exec_driver_sql(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
    found = _catalog(conn, table)
    old = f"{table}_before_0009"
    conn.exec_driver_sql(f"ALTER TABLE {table} RENAME TO {old}")
    for (index,) in conn.exec_driver_sql(
            f"SELECT indexrelid::regclass::text FROM pg_index WHERE indrelid = '{old}'::regclass").fetchall():
        conn.exec_driver_sql(f'ALTER INDEX {index} RENAME TO "{("old_" + index)[:63]}"')
    keys = KEYS[table][0 if partitioned else 1]
    conn.exec_driver_sql(
        f"CREATE TABLE {table} (LIKE {old} INCLUDING DEFAULTS INCLUDING CONSTRAINTS, {', '.join(keys)})"
        + (" PARTITION BY RANGE (created_at)" if partitioned else ""))
    conn.exec_driver_sql(f"ALTER TABLE {table} OWNER TO aos_owner")
    if partitioned:
        conn.exec_driver_sql(f"CREATE TABLE {table}_default PARTITION OF {table} DEFAULT")
        conn.exec_driver_sql(f"ALTER TABLE {table}_default OWNER TO aos_owner")
        conn.exec_driver_sql(f"CREATE TRIGGER {table}_default_no_truncate BEFORE TRUNCATE ON {table}_default "
                             "FOR EACH STATEMENT EXECUTE FUNCTION aos_refuse_mutation()")
        # Months from the oldest row's (or this one) to MONTHS_AHEAD after this one.
        conn.exec_driver_sql(f"""
            SELECT aos_ensure_partitions('{table}', coalesce((SELECT min(created_at) FROM {old}), now()),
                date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' + interval '{MONTHS_AHEAD} months')""")
    conn.exec_driver_sql(f"INSERT INTO {table} SELECT * FROM {old}")
    copied = conn.exec_driver_sql(f"SELECT EXISTS (SELECT FROM {old})").scalar()
    extra, extra_name = PARTITIONED_ONLY[table]
    for definition in found["indexes"]:
        if f" {extra_name} " not in definition:
            conn.exec_driver_sql(definition)
    for name, definition in found["foreign_keys"]:
        conn.exec_driver_sql(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}')
    for name, definition in found["triggers"]:
        if name != extra_name:
            conn.exec_driver_sql(definition)
    if partitioned:
        conn.exec_driver_sql(extra)
    for relation, trigger in conn.exec_driver_sql(
            "SELECT t.tgrelid::regclass::text, t.tgname FROM pg_trigger t WHERE NOT t.tgisinternal AND "
            f"(t.tgrelid = '{table}'::regclass OR t.tgrelid IN "
            f" (SELECT inhrelid FROM pg_inherits WHERE inhparent = '{table}'::regclass))").fetchall():
        conn.exec_driver_sql(f'ALTER TABLE {relation} ENABLE ALWAYS TRIGGER "{trigger}"')
    conn.exec_driver_sql(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
    for policy in found["policies"]:
        conn.exec_driver_sql(policy)
    for grantee, privilege in found["grants"]:
        conn.exec_driver_sql(f"GRANT {privilege} ON {table} TO {grantee}")
    conn.exec_driver_sql(f"DROP TABLE {old}")
    # Only with rows: ANALYZE of empty partitions records them as empty for sure, and
    # cached generic plans then prefer sequential scans of them as they grow (0008).
    if copied:
        conn.exec_driver_sql(f"ANALYZE {table}")


def upgrade() -> None:
    op.execute(FUNCTIONS)
    conn = op.get_bind()
    for table in KEYS:
        _rebuild(conn, table, partitioned=True)


def downgrade() -> None:
    conn = op.get_bind()
    for table in KEYS:
        _rebuild(conn, table, partitioned=False)
    op.execute(STEP_TRACE_CHECK_0007)
    op.execute("""
        DROP FUNCTION aos_drop_partitions(text, timestamptz);
        DROP FUNCTION aos_ensure_partitions(text, timestamptz, timestamptz);
        DROP FUNCTION aos_record_once();""")
