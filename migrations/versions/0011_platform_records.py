"""System-wide records move to platform_records; system_records is keyed by tenant.

Revision ID: 0011_platform_records
Revises: 0010_export_records_checkpoints
Create Date: 2026-12-06

Why: 0007 put tenant_id in every key of every tenant table, ready for Citus, except
system_records, whose NULL tenant_id marks a system-wide record that every tenant reads:
a distribution column cannot be NULL, and the table's key was (id, created_at), one id
space shared by every tenant (a tenant could learn that an id was taken by another).
Now:
- platform_records holds the system-wide records: the same columns (tenant_id always
  NULL, checked, so that a reader unions the two tables as it unioned the two halves of
  one), key (id), not partitioned — on a sharded cluster a reference table, copied to
  every node (Citus distributes no NULL key and partitions no reference table). Every
  tenant reads it; only a producer acting for no tenant writes it. Append-only like
  every evidence table (triggers ENABLE ALWAYS), recorded_at stamped by the database.
- system_records keeps the tenants' records: tenant_id NOT NULL, primary key
  (tenant_id, id, created_at), its row-level security the tenant's alone, and a record
  id is unique within its tenant (aos_record_once looks it up by tenant and id).

Rows move as they are (ids, content hashes, recorded_at unchanged: platform_records gets
its triggers after the copy, and system_records' append-only trigger is set aside for the
delete of the moved rows only, in this transaction, with the table locked).

Downgrade moves them back (recorded_at kept: the stamping and id-once triggers are set
aside for that insert), restores the nullable tenant_id, the (id, created_at) key, the
system-wide index, 0001's policy and 0009's id-once function. An id that two tenants
recorded apart after this migration stays recorded twice (the restored trigger checks
new rows only).
"""
from alembic import op

revision = "0011_platform_records"
down_revision = "0010_export_records_checkpoints"
branch_labels = None
depends_on = None

BASELINE_EVENTS = "('STARTUP', 'DEPLOY', 'CONFIG_CHANGE')"

def _record_once(bucket: str, lookup: str) -> str:
    """aos_record_once (0009): under one of 64 advisory locks (``bucket``: one per id ran a
    bulk COPY out of lock slots) it looks the id up (``lookup``); the same content again
    is skipped, other content refused with 23505."""
    return f'''
CREATE OR REPLACE FUNCTION aos_record_once() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public
AS $$
DECLARE
    stored bytea;
BEGIN
    PERFORM pg_advisory_xact_lock(aos_chain_lock_key(TG_ARGV[0], {bucket}));
    SELECT content_hash INTO stored FROM system_records WHERE {lookup} LIMIT 1;
    IF NOT FOUND THEN
        RETURN NEW;
    ELSIF stored = NEW.content_hash THEN
        RETURN NULL;
    END IF;
    RAISE EXCEPTION '% %: already recorded with different content', TG_ARGV[0], NEW.id
        USING ERRCODE = '23505';
END $$;
'''


_BUCKET = "(hashtextextended(NEW.id, 0) & 63)::text"
# A record id once per tenant, 64 lock buckets per tenant.
RECORD_ONCE = _record_once(f"NEW.tenant_id || ':' || {_BUCKET}", "tenant_id = NEW.tenant_id AND id = NEW.id")
# 0009's (once across every tenant), restored by downgrade.
RECORD_ONCE_0009 = _record_once(_BUCKET, "id = NEW.id")


def _set_triggers(conn, names: tuple[str, ...], state: str) -> None:
    """DISABLE or ENABLE ALWAYS the named triggers of system_records and of each of its
    partitions (each partition carries its own clone of a row trigger)."""
    for relation, trigger in conn.exec_driver_sql(
            "SELECT t.tgrelid::regclass::text, t.tgname FROM pg_trigger t WHERE NOT t.tgisinternal "
            "AND t.tgname = ANY(%(names)s) AND (t.tgrelid = 'system_records'::regclass OR t.tgrelid IN "
            " (SELECT inhrelid FROM pg_inherits WHERE inhparent = 'system_records'::regclass))",
            {"names": list(names)}).fetchall():
        conn.exec_driver_sql(f'ALTER TABLE {relation} {state} TRIGGER "{trigger}"')


def upgrade() -> None:
    conn = op.get_bind()
    op.execute("LOCK TABLE system_records IN ACCESS EXCLUSIVE MODE")
    grants = conn.exec_driver_sql(
        "SELECT a.grantee::regrole::text, a.privilege_type FROM pg_class c, aclexplode(c.relacl) a "
        "WHERE c.oid = 'system_records'::regclass AND a.grantee <> c.relowner AND a.grantee <> 0 "
        "ORDER BY 1, 2").fetchall()
    op.execute("""
        CREATE TABLE platform_records (
            LIKE system_records INCLUDING DEFAULTS INCLUDING CONSTRAINTS,
            CONSTRAINT platform_records_pkey PRIMARY KEY (id),
            CONSTRAINT platform_records_system_wide CHECK (tenant_id IS NULL));
        ALTER TABLE platform_records OWNER TO aos_owner;
        -- before any trigger exists on it: recorded_at stays as the database stamped it
        INSERT INTO platform_records SELECT * FROM system_records WHERE tenant_id IS NULL;""")
    _set_triggers(conn, ("system_records_append_only",), "DISABLE")
    op.execute("DELETE FROM system_records WHERE tenant_id IS NULL")
    _set_triggers(conn, ("system_records_append_only",), "ENABLE ALWAYS")
    op.execute(f"""
        ALTER TABLE system_records ALTER COLUMN tenant_id SET NOT NULL;
        ALTER TABLE system_records DROP CONSTRAINT system_records_pkey;
        ALTER TABLE system_records ADD CONSTRAINT system_records_pkey PRIMARY KEY (tenant_id, id, created_at);
        DROP INDEX ix_system_records_global_created;
        DROP POLICY system_records_tenant ON system_records;
        CREATE POLICY system_records_tenant ON system_records USING (tenant_id = aos_current_tenant())
            WITH CHECK (tenant_id = aos_current_tenant());

        CREATE INDEX ix_platform_records_created ON platform_records (created_at DESC, id DESC);
        CREATE INDEX ix_platform_records_baseline ON platform_records (created_at DESC)
            WHERE event_type IN {BASELINE_EVENTS};
        CREATE TRIGGER platform_records_append_only BEFORE UPDATE OR DELETE ON platform_records
            FOR EACH ROW EXECUTE FUNCTION aos_refuse_mutation();
        CREATE TRIGGER platform_records_no_truncate BEFORE TRUNCATE ON platform_records
            FOR EACH STATEMENT EXECUTE FUNCTION aos_refuse_mutation();
        CREATE TRIGGER platform_records_recorded_at BEFORE INSERT ON platform_records
            FOR EACH ROW EXECUTE FUNCTION aos_stamp_recorded_at();
        ALTER TABLE platform_records ENABLE ALWAYS TRIGGER platform_records_append_only;
        ALTER TABLE platform_records ENABLE ALWAYS TRIGGER platform_records_no_truncate;
        ALTER TABLE platform_records ENABLE ALWAYS TRIGGER platform_records_recorded_at;
        -- every tenant reads the system-wide records; only a producer acting for no tenant writes them
        ALTER TABLE platform_records ENABLE ROW LEVEL SECURITY;
        CREATE POLICY platform_records_read ON platform_records FOR SELECT USING (true);
        CREATE POLICY platform_records_write ON platform_records FOR INSERT
            WITH CHECK (aos_current_tenant() IS NULL);""")
    op.execute(RECORD_ONCE)
    for grantee, privilege in grants:
        op.execute(f"GRANT {privilege} ON platform_records TO {grantee}")
    op.execute("ANALYZE platform_records")


def downgrade() -> None:
    conn = op.get_bind()
    op.execute("LOCK TABLE system_records, platform_records IN ACCESS EXCLUSIVE MODE")
    op.execute("""
        DROP POLICY system_records_tenant ON system_records;
        CREATE POLICY system_records_tenant ON system_records
            USING (tenant_id IS NULL OR tenant_id = aos_current_tenant())
            WITH CHECK (tenant_id IS NOT DISTINCT FROM aos_current_tenant());
        ALTER TABLE system_records DROP CONSTRAINT system_records_pkey;
        ALTER TABLE system_records ADD CONSTRAINT system_records_pkey PRIMARY KEY (id, created_at);
        ALTER TABLE system_records ALTER COLUMN tenant_id DROP NOT NULL;
        CREATE INDEX ix_system_records_global_created ON system_records (created_at DESC, id DESC)
            WHERE tenant_id IS NULL;""")
    op.execute(RECORD_ONCE_0009)
    # recorded_at as stamped, ids as recorded: the stamping and id-once triggers stand aside
    aside = ("system_records_recorded_at", "system_records_once")
    _set_triggers(conn, aside, "DISABLE")
    op.execute("INSERT INTO system_records SELECT * FROM platform_records")
    _set_triggers(conn, aside, "ENABLE ALWAYS")
    op.execute("DROP TABLE platform_records")
