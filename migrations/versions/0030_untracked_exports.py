"""Erasure reaches exports that recorded nothing of whose payloads they carry (issue #25;
docs/ERASURE.md §3c).

Revision ID: 0030_untracked_exports
Revises: 0029_actor_sort
Create Date: 2026-12-07

Why: 0026 records, when an export is rendered, whose erasable payloads its stored artifact
carries (``export_payload_subjects``), and an erasure deletes the artifacts that carried the
subject. An export rendered before 0026 has no such rows, so an erasure left its artifact —
with the subject's payloads and the salts that open them — downloadable. Chosen: an erasure
treats such an export as possibly carrying the subject (sound, not tight), rather than deriving
its subjects from the stored artifact (parsing every artifact, ZIPs included, inside the
erasure's transaction or a maintenance pass; and an artifact an earlier erasure already missed
would need its own tombstones) or from its slice re-evaluated (records retention dropped since
cannot be re-read).

- ``export_subjects_tracked`` (tenant, export): the Export service writes one row for every
  export it renders, in the export's transaction, beside its ``export_payload_subjects`` (none
  when it carries no subject's payloads). Append-only, tenant-scoped; aos_export SELECT, INSERT.
  Filled here for every export that has ``export_payload_subjects`` rows (rendered after 0026).
- ``erased_export_artifacts.basis``: RECORDED (0026's: the export recorded that it carried the
  subject) or UNTRACKED (below).
- ``aos_erase_subject``: as 0028's, and then every export of the tenant with no
  ``export_subjects_tracked`` row, whose artifact is still stored, made (``recorded_at``) at or
  after one of the payloads this erasure deleted was stored (``evidence_payloads.created_at``),
  gets a tombstone of basis UNTRACKED (payloads_erased: how many of the deleted payloads were
  stored by then, an upper bound of what it carried) and loses its artifact, in the erasure's
  transaction. An export made before every one of the subject's payloads cannot hold them and
  is left. Exports rendered between 0026 and 0030 that carried no one's payloads cannot be told
  from older ones: they are treated the same (their rows, manifests, signatures and chain
  stay; only the stored bytes go).

Downgrade restores 0028's function and drops the column and the table.
"""
from alembic import op

revision = "0030_untracked_exports"
down_revision = "0029_actor_sort"
branch_labels = None
depends_on = None

SCHEMA = """
CREATE TABLE export_subjects_tracked (
    tenant_id  text NOT NULL REFERENCES tenants (id),
    export_id  text NOT NULL,
    PRIMARY KEY (tenant_id, export_id),
    FOREIGN KEY (tenant_id, export_id) REFERENCES log_exports (tenant_id, id) DEFERRABLE INITIALLY DEFERRED
);
INSERT INTO export_subjects_tracked (tenant_id, export_id)
SELECT DISTINCT tenant_id, export_id FROM export_payload_subjects;
CREATE TRIGGER export_subjects_tracked_append_only BEFORE UPDATE OR DELETE ON export_subjects_tracked
    FOR EACH ROW EXECUTE FUNCTION aos_refuse_mutation();
CREATE TRIGGER export_subjects_tracked_no_truncate BEFORE TRUNCATE ON export_subjects_tracked
    FOR EACH STATEMENT EXECUTE FUNCTION aos_refuse_mutation();
ALTER TABLE export_subjects_tracked ENABLE ALWAYS TRIGGER export_subjects_tracked_append_only;
ALTER TABLE export_subjects_tracked ENABLE ALWAYS TRIGGER export_subjects_tracked_no_truncate;
ALTER TABLE export_subjects_tracked OWNER TO aos_owner;
ALTER TABLE export_subjects_tracked ENABLE ROW LEVEL SECURITY;
CREATE POLICY export_subjects_tracked_tenant ON export_subjects_tracked USING (tenant_id = aos_current_tenant())
    WITH CHECK (tenant_id = aos_current_tenant());
GRANT SELECT, INSERT ON export_subjects_tracked TO aos_export;
ALTER TABLE erased_export_artifacts
    ADD COLUMN basis text NOT NULL DEFAULT 'RECORDED' CHECK (basis IN ('RECORDED', 'UNTRACKED'));
"""

# The function as 0028_staged_erasure left it (a frozen copy, for the downgrade).
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
    -- 0028: the tenant's run-recording lock (services/ingest/store.py hold_run_recordings), which
    -- every OTLP stage and seal takes first: a seal either committed before this (its payloads are
    -- erased below) or starts after the commit and sees the staged spans marked erased.
    PERFORM pg_advisory_xact_lock(hashtextextended('aos_ingest_runs:' || t, 0));
    -- As retention does (docs/SCALE.md §3c): a hold placed or released concurrently either
    -- committed before this lock (and is seen below) or waits for this transaction's end.
    LOCK TABLE legal_holds IN SHARE MODE;
    hold := aos_legal_hold_covers(t, a_subject, ARRAY(
        SELECT DISTINCT p.run_id FROM evidence_payloads p
         WHERE p.tenant_id = t AND p.subject_id = a_subject AND p.run_id IS NOT NULL
        UNION SELECT 'otel-' || s.otel_trace_id FROM otlp_staged_spans s
         WHERE s.tenant_id = t AND s.subject_id = a_subject));
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
    -- 0028: the subject's OTLP spans staged but not sealed yet. Their content (the span as it
    -- came) goes now; the span without its content attributes stays, marked with this erasure,
    -- so the seal still makes its step (acknowledged means durable) with payloads born ERASED.
    UPDATE otlp_staged_spans s SET content = NULL, erasure_id = a_erasure_id
     WHERE s.tenant_id = t AND s.subject_id = a_subject AND s.erasure_id IS NULL;
    RETURN n;
END $$;
"""

ERASE = """
CREATE OR REPLACE FUNCTION aos_erase_subject(a_subject text, a_erasure_id text, a_requested_by text) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    t    text := aos_current_tenant();
    hold   text;
    n      integer;
    stored timestamptz[];  -- 0030: when each payload this erasure deleted was stored
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
    -- 0028: the tenant's run-recording lock (services/ingest/store.py hold_run_recordings), which
    -- every OTLP stage and seal takes first: a seal either committed before this (its payloads are
    -- erased below) or starts after the commit and sees the staged spans marked erased.
    PERFORM pg_advisory_xact_lock(hashtextextended('aos_ingest_runs:' || t, 0));
    -- As retention does (docs/SCALE.md §3c): a hold placed or released concurrently either
    -- committed before this lock (and is seen below) or waits for this transaction's end.
    LOCK TABLE legal_holds IN SHARE MODE;
    hold := aos_legal_hold_covers(t, a_subject, ARRAY(
        SELECT DISTINCT p.run_id FROM evidence_payloads p
         WHERE p.tenant_id = t AND p.subject_id = a_subject AND p.run_id IS NOT NULL
        UNION SELECT 'otel-' || s.otel_trace_id FROM otlp_staged_spans s
         WHERE s.tenant_id = t AND s.subject_id = a_subject));
    IF hold IS NOT NULL THEN
        RAISE EXCEPTION 'legal hold % covers this subject: erasure refused', hold
            USING ERRCODE = 'AOS21', DETAIL = hold;
    END IF;
    -- 0030: when each erased payload was stored, kept for the untracked exports below (the
    -- same statement as the deletion: exactly the payloads it deleted).
    WITH gone AS (
        DELETE FROM evidence_payloads p WHERE p.tenant_id = t AND p.subject_id = a_subject
        RETURNING p.record_type, p.record_id, p.field, p.created_at),
    logged AS (
        INSERT INTO erased_payloads (tenant_id, record_type, record_id, field, erasure_id)
        SELECT t, g.record_type, g.record_id, g.field, a_erasure_id FROM gone g)
    SELECT count(*)::integer, coalesce(array_agg(g.created_at), '{}') INTO n, stored FROM gone g;
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
    -- 0030: exports that recorded nothing of whose payloads they carry (rendered before 0026, or
    -- between 0026 and 0030 carrying none: not told apart) may hold the subject's. Conservatively,
    -- each one made after one of the deleted payloads was stored (so its artifact may hold it)
    -- whose artifact is still stored loses it too, under a tombstone of basis UNTRACKED whose
    -- payloads_erased is how many of the deleted payloads were stored by then (an upper bound).
    INSERT INTO erased_export_artifacts (tenant_id, export_id, subject_id, erasure_id, payloads_erased,
                                         artifact_bytes, basis)
    SELECT t, x.id, a_subject, a_erasure_id, c.possible,
           (SELECT coalesce(sum(octet_length(a.data)), 0) FROM log_export_artifacts a
             WHERE a.tenant_id = t AND a.export_id = x.id), 'UNTRACKED'
      FROM log_exports x
     CROSS JOIN LATERAL (SELECT count(*)::integer AS possible FROM unnest(stored) AS p(at)
                          WHERE p.at <= x.recorded_at) c
     WHERE x.tenant_id = t AND c.possible > 0
       AND NOT EXISTS (SELECT FROM export_subjects_tracked k WHERE k.tenant_id = t AND k.export_id = x.id)
       AND EXISTS (SELECT FROM log_export_artifacts a WHERE a.tenant_id = t AND a.export_id = x.id)
       AND NOT EXISTS (SELECT FROM erased_export_artifacts e WHERE e.tenant_id = t
                          AND e.export_id = x.id AND e.subject_id = a_subject);
    DELETE FROM log_export_artifacts a
     WHERE a.tenant_id = t AND a.export_id IN (SELECT e.export_id FROM erased_export_artifacts e
                                                WHERE e.tenant_id = t AND e.erasure_id = a_erasure_id);
    -- 0028: the subject's OTLP spans staged but not sealed yet. Their content (the span as it
    -- came) goes now; the span without its content attributes stays, marked with this erasure,
    -- so the seal still makes its step (acknowledged means durable) with payloads born ERASED.
    UPDATE otlp_staged_spans s SET content = NULL, erasure_id = a_erasure_id
     WHERE s.tenant_id = t AND s.subject_id = a_subject AND s.erasure_id IS NULL;
    RETURN n;
END $$;
"""


def upgrade() -> None:
    op.execute(SCHEMA)
    op.execute(ERASE)


def downgrade() -> None:
    op.execute(PREVIOUS_ERASE)
    op.execute("""
        ALTER TABLE erased_export_artifacts DROP COLUMN basis;
        DROP TABLE export_subjects_tracked;""")
