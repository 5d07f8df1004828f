"""OTLP spans staged when their subject is erased (issue #25; docs/ERASURE.md §3b).

Revision ID: 0028_staged_erasure
Revises: 0027_retention_rows
Create Date: 2026-12-07

Why: a span of a trace whose root had not arrived waits in ``otlp_staged_spans`` (0024) until
the trace is sealed. It is not evidence yet and named no subject, so an erasure of its end user
did not reach it: sealed after the erasure, its content became a step of the erased subject.
Now:

- ``otlp_staged_spans`` gains ``subject_id`` (the span's end user, docs/INGEST.md), ``content``
  and ``erasure_id``. A span naming a subject is kept twice over: ``span`` without its content
  attributes (prompts, completions, tool arguments and results, events) and ``content`` as it
  came; a span naming none keeps ``span`` alone, as before.
- ``aos_erase_subject`` also takes the tenant's run-recording lock (the one every stage and seal
  takes first), counts the staged spans' runs in its legal-hold check, and sets ``content`` to
  NULL and ``erasure_id`` on the subject's staged spans. The spans stay: an acknowledged Export
  is still sealed into its run, from the span without its content.
- ``aos_erase_sealed_spans(otel_trace_id)``: called by the seal, in its transaction, after it
  recorded the run and before it drops the staged spans. Deletes the payloads (and salts) of
  the steps made of that trace's erased staged spans and writes their tombstones with the
  erasure that reached them: the steps are born ERASED. SECURITY DEFINER (only the erasure may
  delete payloads), the session's tenant only, only steps of that trace's run whose span was
  marked by an erasure of that subject; EXECUTE for aos_ingest.

Downgrade restores 0026's function and drops the function and columns (a staged span's
content already erased stays erased).
"""
from alembic import op

revision = "0028_staged_erasure"
down_revision = "0027_retention_rows"
branch_labels = None
depends_on = None

PINNED = "pg_catalog, public, pg_temp"

SCHEMA = f"""
ALTER TABLE otlp_staged_spans
    ADD COLUMN subject_id text CHECK (subject_id <> '' AND length(subject_id) <= 256),
    ADD COLUMN content    bytea,
    ADD COLUMN erasure_id text,
    -- content only beside a subject (the span without it is in ``span``); erased: no content left.
    ADD CONSTRAINT otlp_staged_spans_content CHECK (content IS NULL OR subject_id IS NOT NULL),
    ADD CONSTRAINT otlp_staged_spans_erased CHECK (erasure_id IS NULL OR (subject_id IS NOT NULL AND content IS NULL));
CREATE INDEX ix_otlp_staged_spans_subject ON otlp_staged_spans (tenant_id, subject_id) WHERE subject_id IS NOT NULL;

CREATE FUNCTION aos_erase_sealed_spans(a_otel_trace_id text) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = {PINNED}
AS $$
DECLARE
    t text := aos_current_tenant();
    n integer;
BEGIN
    IF t IS NULL THEN
        RAISE EXCEPTION 'a seal acts for a tenant: aos.tenant_id is not set' USING ERRCODE = '42501';
    END IF;
    WITH erased AS (
        SELECT s.span_id, s.subject_id, s.erasure_id FROM otlp_staged_spans s
         WHERE s.tenant_id = t AND s.otel_trace_id = a_otel_trace_id AND s.erasure_id IS NOT NULL),
    steps AS (
        SELECT st.trace_id || '/' || st.step_index AS record_id, e.subject_id, e.erasure_id
          FROM aos_traces tr
          JOIN aos_trace_steps st ON st.tenant_id = tr.tenant_id AND st.trace_id = tr.trace_id
          JOIN erased e ON e.span_id = st.metadata ->> 'span_id'
         WHERE tr.tenant_id = t AND tr.run_id = 'otel-' || a_otel_trace_id),
    gone AS (
        DELETE FROM evidence_payloads p USING steps x
         WHERE p.tenant_id = t AND p.record_type = 'trace_step' AND p.record_id = x.record_id
           AND p.subject_id = x.subject_id
        RETURNING p.record_type, p.record_id, p.field, x.erasure_id)
    INSERT INTO erased_payloads (tenant_id, record_type, record_id, field, erasure_id)
    SELECT t, g.record_type, g.record_id, g.field, g.erasure_id FROM gone g;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END $$;
ALTER FUNCTION aos_erase_sealed_spans(text) OWNER TO aos_owner;
REVOKE ALL ON FUNCTION aos_erase_sealed_spans(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION aos_erase_sealed_spans(text) TO aos_ingest;
"""

# aos_erase_subject as 0026_erasure_exports left it (a frozen copy, for the downgrade).
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


def upgrade() -> None:
    op.execute(SCHEMA)
    op.execute(ERASE)


def downgrade() -> None:
    op.execute(PREVIOUS_ERASE)
    op.execute("""
        DROP FUNCTION aos_erase_sealed_spans(text);
        DROP INDEX ix_otlp_staged_spans_subject;
        ALTER TABLE otlp_staged_spans DROP CONSTRAINT otlp_staged_spans_erased,
            DROP CONSTRAINT otlp_staged_spans_content, DROP COLUMN erasure_id, DROP COLUMN content,
            DROP COLUMN subject_id;""")
