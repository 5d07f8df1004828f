"""Each tenant's stored export bytes in one row: the quota check reads it, not every export.

Revision ID: 0035_export_stored_bytes
Revises: 0034_payload_search
Create Date: 2026-12-07

Why (issue #19, RELIABILITY.md "After the surge: what changes"): the stored-bytes quota
(``AOS_EXPORT_STORED_BYTES_PER_TENANT``, services/export/quotas.py) summed ``size_bytes`` over
every ``log_exports`` row of the tenant, twice per CreateExport (before rendering, and again
under the tenant's export chain lock): O(the tenant's exports), 0.44 → 1.22 ms a statement as a
surge added exports, a sequential scan of the whole table once autoanalyze saw the tenant's
share grow. A covering index (tenant_id) INCLUDE (size_bytes) would make it an index-only scan,
still reading one entry per export (and the heap for rows newer than the last vacuum); chosen
instead (BENCHMARKS.md: both measured): a running total the database keeps, one row per tenant.

What it adds:
- ``export_stored_bytes`` (tenant_id PRIMARY KEY, stored_bytes): the sum of ``size_bytes`` over
  the tenant's ``log_exports`` rows. No row: the tenant has no exports (0 bytes).
- ``aos_count_export_bytes()``, AFTER INSERT / UPDATE / DELETE statement triggers on
  ``log_exports`` with transition tables: one upsert per statement and tenant, adding the
  statement's rows' bytes (less the old rows' for an UPDATE or DELETE; both are refused by the
  append-only trigger, ENABLE ALWAYS, unless the owner disables it — the total follows such an
  edit too). Per statement, not per row: an INSERT … SELECT of n exports writes the row once,
  not n versions one transaction must walk (0032's lesson). SECURITY DEFINER as aos_owner
  (pinned search_path). An INSERT of an export runs 0001's chain trigger first, which takes the
  tenant's chain lock (the transaction-level advisory lock ``store.lock_export_chain`` takes):
  the total moves under that lock, in the appending transaction, and a rollback takes it back.
  So the quota's second check, under the same lock, reads the total every committed export of
  the tenant made, as the sum did. A statement's tenants are upserted in tenant order.
- Protection, as 0032's ``ledger_heads``: owned by aos_owner, row-level security on the tenant,
  SELECT for aos_export only; no service role may INSERT, UPDATE or DELETE it (only the trigger,
  as the owner, writes it); DELETE and TRUNCATE refused (aos_refuse_mutation, ENABLE ALWAYS).
  fillfactor 50: the row is updated by every export of its tenant and no indexed column
  changes, so the updates stay HOT.
- Erasure deletes artifact chunks (``log_export_artifacts``, 0026/0030) but never the export's
  row: its ``size_bytes`` still counts, in the total as in the sum before it (unchanged).

Backfill: the sum per tenant, with log_exports locked against writers (SHARE ROW EXCLUSIVE),
before the triggers exist, in the migration's transaction.

Downgrade drops the triggers, the function and the table (the quota sums again).
"""
from alembic import op

revision = "0035_export_stored_bytes"
down_revision = "0034_payload_search"
branch_labels = None
depends_on = None

OWNER = "aos_owner"
PINNED = "pg_catalog, public, pg_temp"

TABLE = f"""
CREATE TABLE export_stored_bytes (
    tenant_id    text   PRIMARY KEY REFERENCES tenants (id),
    stored_bytes bigint NOT NULL CHECK (stored_bytes >= 0)
) WITH (fillfactor = 50);
ALTER TABLE export_stored_bytes OWNER TO {OWNER};
CREATE TRIGGER export_stored_bytes_no_delete BEFORE DELETE ON export_stored_bytes
    FOR EACH ROW EXECUTE FUNCTION aos_refuse_mutation();
CREATE TRIGGER export_stored_bytes_no_truncate BEFORE TRUNCATE ON export_stored_bytes
    FOR EACH STATEMENT EXECUTE FUNCTION aos_refuse_mutation();
ALTER TABLE export_stored_bytes ENABLE ALWAYS TRIGGER export_stored_bytes_no_delete;
ALTER TABLE export_stored_bytes ENABLE ALWAYS TRIGGER export_stored_bytes_no_truncate;
ALTER TABLE export_stored_bytes ENABLE ROW LEVEL SECURITY;
CREATE POLICY export_stored_bytes_tenant ON export_stored_bytes
    USING (tenant_id = aos_current_tenant()) WITH CHECK (tenant_id = aos_current_tenant());
REVOKE ALL ON export_stored_bytes FROM PUBLIC;
GRANT SELECT ON export_stored_bytes TO aos_export;
"""

BACKFILL = """
LOCK TABLE log_exports IN SHARE ROW EXCLUSIVE MODE;
INSERT INTO export_stored_bytes (tenant_id, stored_bytes)
SELECT tenant_id, sum(size_bytes) FROM log_exports GROUP BY tenant_id;
"""

# The transition tables are named alike in the three triggers (added: the statement's new
# rows, removed: its old ones); each branch reads only those its event has (PL/pgSQL plans a
# statement when it first runs it).
FUNCTION = f"""
CREATE FUNCTION aos_count_export_bytes() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = {PINNED}
AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO export_stored_bytes AS s (tenant_id, stored_bytes)
        SELECT a.tenant_id, sum(a.size_bytes) FROM added a GROUP BY a.tenant_id ORDER BY a.tenant_id
        ON CONFLICT (tenant_id) DO UPDATE SET stored_bytes = s.stored_bytes + EXCLUDED.stored_bytes;
    -- Only past the append-only trigger (the owner disabled it): the total follows the edit.
    -- The tenant's row exists: its exports' first INSERT (or the backfill) wrote it.
    ELSIF TG_OP = 'UPDATE' THEN
        UPDATE export_stored_bytes s SET stored_bytes = s.stored_bytes + d.delta
          FROM (SELECT e.tenant_id, sum(e.bytes) AS delta FROM (
                    SELECT a.tenant_id, a.size_bytes AS bytes FROM added a
                    UNION ALL SELECT r.tenant_id, -r.size_bytes FROM removed r) e
                GROUP BY e.tenant_id) d
         WHERE s.tenant_id = d.tenant_id AND d.delta <> 0;
    ELSE
        UPDATE export_stored_bytes s SET stored_bytes = s.stored_bytes - d.bytes
          FROM (SELECT r.tenant_id, sum(r.size_bytes) AS bytes FROM removed r GROUP BY r.tenant_id) d
         WHERE s.tenant_id = d.tenant_id AND d.bytes <> 0;
    END IF;
    RETURN NULL;
END $$;
ALTER FUNCTION aos_count_export_bytes() OWNER TO {OWNER};
CREATE TRIGGER log_exports_stored_bytes AFTER INSERT ON log_exports
    REFERENCING NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION aos_count_export_bytes();
CREATE TRIGGER log_exports_stored_bytes_update AFTER UPDATE ON log_exports
    REFERENCING OLD TABLE AS removed NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION aos_count_export_bytes();
CREATE TRIGGER log_exports_stored_bytes_delete AFTER DELETE ON log_exports
    REFERENCING OLD TABLE AS removed FOR EACH STATEMENT EXECUTE FUNCTION aos_count_export_bytes();
ALTER TABLE log_exports ENABLE ALWAYS TRIGGER log_exports_stored_bytes;
ALTER TABLE log_exports ENABLE ALWAYS TRIGGER log_exports_stored_bytes_update;
ALTER TABLE log_exports ENABLE ALWAYS TRIGGER log_exports_stored_bytes_delete;
"""


def upgrade() -> None:
    op.execute(TABLE)
    op.execute(BACKFILL)
    op.execute(FUNCTION)


def downgrade() -> None:
    op.execute("DROP TRIGGER log_exports_stored_bytes ON log_exports; "
               "DROP TRIGGER log_exports_stored_bytes_update ON log_exports; "
               "DROP TRIGGER log_exports_stored_bytes_delete ON log_exports; "
               "DROP FUNCTION aos_count_export_bytes(); "
               "DROP TABLE export_stored_bytes")
