"""Erasure reaches the stored artifacts of earlier exports (issue #25; docs/ERASURE.md §5).

Revision ID: 0026_erasure_exports
Revises: 0025_seedlists
Create Date: 2026-12-07

Why: an export made before an erasure stores its artifact (``log_export_artifacts``) with the
subject's payloads and the salts that open their commitments, so erasing them from
``evidence_payloads`` alone left the content readable through DownloadExport. Now:

- ``export_payload_subjects`` (tenant, export, subject → how many of the subject's payloads
  the artifact carries), written by the Export service when it renders an export (aos_export:
  SELECT, INSERT). Append-only.
- ``erased_export_artifacts`` (tenant, export, subject, erasure → payloads erased, the bytes
  the artifact held, when): one tombstone per export and subject whose artifact an erasure
  deleted. Append-only; Logs, Export and Ingest read it (VerifyExport and DownloadExport
  answer from it: "content erased after export (N payloads)").
- ``log_export_artifacts``' append-only row trigger is replaced by one that still refuses
  every UPDATE, and a DELETE unless a tombstone names the row's export: an artifact is
  removed only where an erasure has recorded why. No role but the owner has DELETE on it.
- ``aos_erase_subject`` (0023) also writes those tombstones and deletes those artifacts, in
  the erasure's transaction, under the same legal-hold lock. Signature, grants and return
  value unchanged.

Exports rendered before this migration have no ``export_payload_subjects`` rows: an erasure
cannot tell whether they carried the subject and leaves their artifacts (docs/ERASURE.md §5).

Downgrade restores 0023's function and the plain append-only trigger and drops both tables
(an artifact already deleted stays deleted).
"""
from alembic import op

revision = "0026_erasure_exports"
down_revision = "0025_seedlists"
branch_labels = None
depends_on = None

PINNED = "pg_catalog, public, pg_temp"

SCHEMA = """
CREATE TABLE export_payload_subjects (
    tenant_id  text    NOT NULL REFERENCES tenants (id),
    export_id  text    NOT NULL,
    subject_id text    NOT NULL CHECK (subject_id <> '' AND length(subject_id) <= 256),
    payloads   integer NOT NULL CHECK (payloads > 0),
    PRIMARY KEY (tenant_id, export_id, subject_id),
    FOREIGN KEY (tenant_id, export_id) REFERENCES log_exports (tenant_id, id) DEFERRABLE INITIALLY DEFERRED
);
CREATE INDEX ix_export_payload_subjects_subject ON export_payload_subjects (tenant_id, subject_id);
CREATE TABLE erased_export_artifacts (
    tenant_id       text        NOT NULL REFERENCES tenants (id),
    export_id       text        NOT NULL,
    subject_id      text        NOT NULL,
    erasure_id      text        NOT NULL,
    payloads_erased integer     NOT NULL CHECK (payloads_erased > 0),
    artifact_bytes  bigint      NOT NULL CHECK (artifact_bytes >= 0),
    erased_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (tenant_id, export_id, subject_id),
    FOREIGN KEY (tenant_id, export_id) REFERENCES log_exports (tenant_id, id)
);
CREATE INDEX ix_erased_export_artifacts_erasure ON erased_export_artifacts (tenant_id, erasure_id);
"""

TABLES = ("export_payload_subjects", "erased_export_artifacts")

ARTIFACT_GUARD = f"""
CREATE FUNCTION aos_guard_export_artifact() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = {PINNED}
AS $$
BEGIN
    -- An artifact chunk goes only when an erasure recorded, in its transaction, that the
    -- export carried the erased subject's payloads (aos_erase_subject); never changed.
    IF TG_OP = 'DELETE' AND EXISTS (SELECT FROM erased_export_artifacts e
                                     WHERE e.tenant_id = OLD.tenant_id AND e.export_id = OLD.export_id) THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'AOS01', HINT = 'evidence rows are never changed or removed (an erasure removes an artifact)';
END $$;
ALTER FUNCTION aos_guard_export_artifact() OWNER TO aos_owner;
DROP TRIGGER log_export_artifacts_append_only ON log_export_artifacts;
CREATE TRIGGER log_export_artifacts_append_only BEFORE UPDATE OR DELETE ON log_export_artifacts
    FOR EACH ROW EXECUTE FUNCTION aos_guard_export_artifact();
ALTER TABLE log_export_artifacts ENABLE ALWAYS TRIGGER log_export_artifacts_append_only;
"""

# The function as 0023_erasure left it (a frozen copy, for the downgrade).
PREVIOUS_ERASE = """
CREATE OR REPLACE FUNCTION aos_erase_subject(a_subject text, a_erasure_id text, a_requested_by text) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    t    text := aos_current_tenant();
    hold text;
    n    integer;
BEGIN
    IF t IS NULL THEN
        RAISE EXCEPTION 'an erasure acts for a tenant: aos.tenant_id is not set' USING ERRCODE = '42501';
    END IF;
    IF coalesce(a_subject, '') = '' OR coalesce(a_erasure_id, '') = '' OR coalesce(a_requested_by, '') = '' THEN
        RAISE EXCEPTION 'subject, erasure id and requester are required' USING ERRCODE = '22023';
    END IF;
    -- One erasure of a subject at a time. A payload committed after this statement's
    -- snapshot is not erased by it (a record written after the erasure); a later one erases it.
    PERFORM pg_advisory_xact_lock(hashtextextended('aos_erasure:' || t || ':' || a_subject, 0));
    -- As retention does (docs/SCALE.md §3c): a hold placed or released concurrently either
    -- committed before this lock (and is seen below) or waits for this transaction's end.
    LOCK TABLE legal_holds IN SHARE MODE;
    hold := aos_legal_hold_covers(t, a_subject, ARRAY(
        SELECT DISTINCT p.run_id FROM evidence_payloads p
         WHERE p.tenant_id = t AND p.subject_id = a_subject AND p.run_id IS NOT NULL));
    IF hold IS NOT NULL THEN
        RAISE EXCEPTION 'legal hold % covers this subject: erasure refused', hold
            USING ERRCODE = 'AOS21', DETAIL = hold;
    END IF;
    WITH gone AS (
        DELETE FROM evidence_payloads p WHERE p.tenant_id = t AND p.subject_id = a_subject
        RETURNING p.record_type, p.record_id, p.field)
    INSERT INTO erased_payloads (tenant_id, record_type, record_id, field, erasure_id)
    SELECT t, g.record_type, g.record_id, g.field, a_erasure_id FROM gone g;
    GET DIAGNOSTICS n = ROW_COUNT;
    INSERT INTO evidence_erasures (tenant_id, erasure_id, subject_id, requested_by, payloads_erased)
    VALUES (t, a_erasure_id, a_subject, a_requested_by, n);
    RETURN n;
END $$;
"""

ERASE = """
CREATE OR REPLACE FUNCTION aos_erase_subject(a_subject text, a_erasure_id text, a_requested_by text) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    t    text := aos_current_tenant();
    hold text;
    n    integer;
BEGIN
    IF t IS NULL THEN
        RAISE EXCEPTION 'an erasure acts for a tenant: aos.tenant_id is not set' USING ERRCODE = '42501';
    END IF;
    IF coalesce(a_subject, '') = '' OR coalesce(a_erasure_id, '') = '' OR coalesce(a_requested_by, '') = '' THEN
        RAISE EXCEPTION 'subject, erasure id and requester are required' USING ERRCODE = '22023';
    END IF;
    -- One erasure of a subject at a time. A payload committed after this statement's
    -- snapshot is not erased by it (a record written after the erasure); a later one erases it.
    PERFORM pg_advisory_xact_lock(hashtextextended('aos_erasure:' || t || ':' || a_subject, 0));
    -- As retention does (docs/SCALE.md §3c): a hold placed or released concurrently either
    -- committed before this lock (and is seen below) or waits for this transaction's end.
    LOCK TABLE legal_holds IN SHARE MODE;
    hold := aos_legal_hold_covers(t, a_subject, ARRAY(
        SELECT DISTINCT p.run_id FROM evidence_payloads p
         WHERE p.tenant_id = t AND p.subject_id = a_subject AND p.run_id IS NOT NULL));
    IF hold IS NOT NULL THEN
        RAISE EXCEPTION 'legal hold % covers this subject: erasure refused', hold
            USING ERRCODE = 'AOS21', DETAIL = hold;
    END IF;
    WITH gone AS (
        DELETE FROM evidence_payloads p WHERE p.tenant_id = t AND p.subject_id = a_subject
        RETURNING p.record_type, p.record_id, p.field)
    INSERT INTO erased_payloads (tenant_id, record_type, record_id, field, erasure_id)
    SELECT t, g.record_type, g.record_id, g.field, a_erasure_id FROM gone g;
    GET DIAGNOSTICS n = ROW_COUNT;
    INSERT INTO evidence_erasures (tenant_id, erasure_id, subject_id, requested_by, payloads_erased)
    VALUES (t, a_erasure_id, a_subject, a_requested_by, n);
    -- 0026: the stored artifacts of earlier exports that carried the subject's payloads go too
    -- (the tombstone first: the artifacts' trigger lets a chunk go only under one). The export's
    -- row, manifest and signature stay: the chain and an auditor's copy keep verifying.
    INSERT INTO erased_export_artifacts (tenant_id, export_id, subject_id, erasure_id, payloads_erased,
                                         artifact_bytes)
    SELECT t, s.export_id, a_subject, a_erasure_id, s.payloads,
           (SELECT coalesce(sum(octet_length(a.data)), 0) FROM log_export_artifacts a
             WHERE a.tenant_id = t AND a.export_id = s.export_id)
      FROM export_payload_subjects s
     WHERE s.tenant_id = t AND s.subject_id = a_subject
       AND NOT EXISTS (SELECT FROM erased_export_artifacts e WHERE e.tenant_id = t
                          AND e.export_id = s.export_id AND e.subject_id = a_subject);
    DELETE FROM log_export_artifacts a
     WHERE a.tenant_id = t AND a.export_id IN (SELECT e.export_id FROM erased_export_artifacts e
                                                WHERE e.tenant_id = t AND e.erasure_id = a_erasure_id);
    RETURN n;
END $$;
"""


def upgrade() -> None:
    op.execute(SCHEMA)
    for table in TABLES:
        op.execute(f"""
            CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table}
                FOR EACH ROW EXECUTE FUNCTION aos_refuse_mutation();
            CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table}
                FOR EACH STATEMENT EXECUTE FUNCTION aos_refuse_mutation();
            ALTER TABLE {table} ENABLE ALWAYS TRIGGER {table}_append_only;
            ALTER TABLE {table} ENABLE ALWAYS TRIGGER {table}_no_truncate;
            ALTER TABLE {table} OWNER TO aos_owner;
            ALTER TABLE {table} ENABLE ROW LEVEL SECURITY;
            CREATE POLICY {table}_tenant ON {table} USING (tenant_id = aos_current_tenant())
                WITH CHECK (tenant_id = aos_current_tenant());""")
    op.execute("""
        GRANT SELECT, INSERT ON export_payload_subjects TO aos_export;
        GRANT SELECT ON erased_export_artifacts TO aos_export, aos_logs, aos_ingest;""")
    op.execute(ARTIFACT_GUARD)
    op.execute(ERASE)


def downgrade() -> None:
    op.execute(PREVIOUS_ERASE)
    op.execute("""
        DROP TRIGGER log_export_artifacts_append_only ON log_export_artifacts;
        CREATE TRIGGER log_export_artifacts_append_only BEFORE UPDATE OR DELETE ON log_export_artifacts
            FOR EACH ROW EXECUTE FUNCTION aos_refuse_mutation();
        ALTER TABLE log_export_artifacts ENABLE ALWAYS TRIGGER log_export_artifacts_append_only;
        DROP FUNCTION aos_guard_export_artifact();
        DROP TABLE erased_export_artifacts, export_payload_subjects;""")
