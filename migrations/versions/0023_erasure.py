"""Erasure that keeps every proof valid: hash format v2, the erasable payload table, its hold check.

Revision ID: 0023_erasure
Revises: 0022_retention_policies
Create Date: 2026-12-07

Why (issue #25, docs/ERASURE.md): a v1 record's content hash covers its payloads, so erasing
them breaks its chain, its Merkle leaf and every export that carries it. A v2 record's hash
covers a salted commitment of each payload instead; payload and salt live in
``evidence_payloads``, apart from the append-only rows, and erasing a data subject deletes
them there. Every hash above the commitment stays as it was.

- ``hash_version`` (1 or 2, default 1: every existing row is v1, nothing is rewritten) and
  ``commitments`` (jsonb {field: hex}) on audit_ledger, aos_trace_steps and system_records
  (platform_records too, for its shared shape; system-wide records stay v1). A CHECK holds
  a v2 row's payload columns empty (NULL, '' for the NOT NULL summary): its payloads can
  only be in evidence_payloads, never in the append-only row.
- ``evidence_payloads`` (tenant, record type, record id, field, subject, run, 32-byte salt,
  payload): row-level security by tenant; writers (aos_producer, aos_ingest) INSERT and
  SELECT, readers (aos_logs, aos_export) SELECT; nobody UPDATEs (a trigger refuses it even
  for the owner); DELETE only through aos_erase_subject.
- ``evidence_erasures`` (one row per executed erasure) and ``erased_payloads`` (one tombstone
  per erased field, so a read shows ERASED rather than a missing payload): append-only.
- ``legal_holds`` (0022_retention_policies; this migration creates no hold table of its own)
  gains the SUBJECT scope (target_id: the data subject id; PlaceLegalHold accepts it, and
  retention keeps a partition holding a record whose payloads are kept under that subject).
- ``aos_legal_hold_covers(tenant, subject, runs)``, over those holds: the first active hold on
  the TENANT, the SUBJECT, a RUN of one of the subject's payloads, or an INCIDENT of such a
  run's trace, which blocks the erasure.
- ``aos_erase_subject(subject, erasure_id, requested_by)``: SECURITY DEFINER (runs as the
  owner, pinned search_path), acts ONLY on the session's tenant (aos.tenant_id — never a
  parameter), takes ``LOCK TABLE legal_holds IN SHARE MODE`` (docs/SCALE.md §3c: a hold
  placed concurrently waits for the erasure to commit, or the erasure sees it), refuses under
  a legal hold (SQLSTATE AOS21), deletes the subject's payloads and
  salts, writes the tombstones and the erasure row, returns how many fields it erased.
  EXECUTE only for aos_ingest (the service that serves the erasure RPC).
- Audit vocabulary: SubjectErasureRequested, SubjectErased on entity DATA_SUBJECT.

Downgrade drops all of it; with any v2 row or any erasure recorded the append-only ledger
refuses the narrower CHECKs and the downgrade fails, as it must.
"""
from alembic import op

revision = "0023_erasure"
down_revision = "0022_retention_policies"
branch_labels = None
depends_on = None

PINNED = "pg_catalog, public, pg_temp"

# Frozen copies (migrations never import the code they migrate): the lists as
# 0022_retention_policies leaves them, then ours.
PREVIOUS_EVENTS = (
    "PolicyRuleCreated", "PolicyRuleModified", "PolicyRuleRetired",
    "PolicyProposalApproved", "PolicyProposalRejected",
    "LimitCreated", "LimitUpdated", "LimitBreached", "LimitOverrideGranted", "LimitOverrideRevoked",
    "IncidentAcknowledged", "IncidentResolved", "IncidentManuallyClosed",
    "EmergencyOverrideActivated", "EmergencyOverrideDeactivated",
    "ActorLoggedIn", "ActorLoggedOut", "ApiKeyCreated", "ApiKeyRevoked",
    "AccessGranted", "AccessDenied", "EvidenceExported", "ExportVerified",
    "RetentionPolicyChanged", "LegalHoldPlaced", "LegalHoldReleased", "EvidencePartitionDropped",
)
AUDIT_EVENTS = PREVIOUS_EVENTS + ("SubjectErasureRequested", "SubjectErased")
PREVIOUS_ENTITIES = ("POLICY_RULE", "POLICY_PROPOSAL", "LIMIT", "INCIDENT", "ACTOR", "API_KEY", "LOG_EXPORT",
                     "LLM_RUN", "SYSTEM_RECORD", "AUDIT_ENTRY", "RETENTION_POLICY", "LEGAL_HOLD",
                     "EVIDENCE_PARTITION")
ENTITIES = PREVIOUS_ENTITIES + ("DATA_SUBJECT",)

PREVIOUS_HOLD_SCOPES = ("TENANT", "RUN", "INCIDENT")
HOLD_SCOPES = PREVIOUS_HOLD_SCOPES + ("SUBJECT",)

# (table, its payload columns' "empty" condition for a v2 row)
V2_TABLES = {
    "audit_ledger": "action_reason IS NULL AND before_state IS NULL AND after_state IS NULL",
    "aos_trace_steps": "input_data IS NULL AND output_data IS NULL",
    "system_records": "summary = '' AND details IS NULL",
}
PAYLOAD_FIELDS = {
    "audit_entry": ("action_reason", "before_state", "after_state"),
    "trace_step": ("input_data", "output_data"),
    "system_record": ("summary", "details"),
}


def _in(values: tuple[str, ...]) -> str:
    return "(" + ", ".join(f"'{v}'" for v in values) + ")"


def _replace_check(column: str, marker: str, values: tuple[str, ...]) -> None:
    conn = op.get_bind()
    # The ledger's own CHECK and any local copy a partition holds (as 0014 and 0019 do).
    for relation, name in conn.exec_driver_sql(
            "SELECT c.conrelid::regclass::text, c.conname FROM pg_constraint c "
            "WHERE c.contype = 'c' AND c.conislocal "
            "AND c.conrelid IN (SELECT relid FROM pg_partition_tree('audit_ledger'::regclass)) "
            f"AND pg_get_constraintdef(c.oid) LIKE '%%{column}%%' "
            f"AND pg_get_constraintdef(c.oid) LIKE '%%{marker}%%' "
            "ORDER BY c.conrelid = 'audit_ledger'::regclass DESC").fetchall():
        conn.exec_driver_sql(f'ALTER TABLE {relation} DROP CONSTRAINT IF EXISTS "{name}"')
    conn.exec_driver_sql(f"ALTER TABLE audit_ledger ADD CONSTRAINT audit_ledger_{column}_check "
                         f"CHECK ({column} IN {_in(values)})")


def upgrade() -> None:
    _replace_check("event_type", "EvidenceExported", AUDIT_EVENTS)
    _replace_check("entity_type", "API_KEY", ENTITIES)
    op.execute(f"""
        ALTER TABLE legal_holds DROP CONSTRAINT legal_holds_scope_check,
            ADD CONSTRAINT legal_holds_scope_check CHECK (scope IN {_in(HOLD_SCOPES)})""")
    for table, empty in V2_TABLES.items():
        op.execute(f"""
            ALTER TABLE {table} ADD COLUMN hash_version smallint NOT NULL DEFAULT 1,
                                ADD COLUMN commitments jsonb;
            ALTER TABLE {table} ADD CONSTRAINT {table}_hash_version CHECK (
                (hash_version = 1 AND commitments IS NULL)
                OR (hash_version = 2 AND jsonb_typeof(commitments) = 'object' AND {empty}))""")
    op.execute("""
        ALTER TABLE platform_records ADD COLUMN hash_version smallint NOT NULL DEFAULT 1,
                                     ADD COLUMN commitments jsonb;
        ALTER TABLE platform_records ADD CONSTRAINT platform_records_v1 CHECK (hash_version = 1 AND commitments IS NULL)""")
    pairs = " OR ".join(f"(record_type = '{t}' AND field IN {_in(f)})" for t, f in PAYLOAD_FIELDS.items())
    op.execute(f"""
        CREATE TABLE evidence_payloads (
            tenant_id   text NOT NULL REFERENCES tenants(id),
            record_type text NOT NULL,
            record_id   text NOT NULL,
            field       text NOT NULL,
            subject_id  text NOT NULL CHECK (subject_id <> '' AND length(subject_id) <= 256),
            run_id      text,
            salt        bytea NOT NULL CHECK (octet_length(salt) = 32),
            payload     jsonb NOT NULL,
            created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
            PRIMARY KEY (tenant_id, record_type, record_id, field),
            CHECK ({pairs})
        );
        CREATE INDEX ix_evidence_payloads_subject ON evidence_payloads (tenant_id, subject_id);
        CREATE TABLE evidence_erasures (
            tenant_id       text NOT NULL REFERENCES tenants(id),
            erasure_id      text NOT NULL,
            subject_id      text NOT NULL,
            requested_by    text NOT NULL,
            payloads_erased integer NOT NULL CHECK (payloads_erased >= 0),
            erased_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
            PRIMARY KEY (tenant_id, erasure_id)
        );
        CREATE TABLE erased_payloads (
            tenant_id   text NOT NULL REFERENCES tenants(id),
            record_type text NOT NULL,
            record_id   text NOT NULL,
            field       text NOT NULL,
            erasure_id  text NOT NULL,
            PRIMARY KEY (tenant_id, record_type, record_id, field)
        );

        CREATE FUNCTION aos_refuse_payload_update() RETURNS trigger LANGUAGE plpgsql
            SET search_path = {PINNED} AS $$
        BEGIN
            RAISE EXCEPTION 'evidence_payloads: a payload is never changed, only erased'
                USING ERRCODE = 'AOS01';
        END $$;
        CREATE TRIGGER evidence_payloads_no_update BEFORE UPDATE ON evidence_payloads
            FOR EACH ROW EXECUTE FUNCTION aos_refuse_payload_update();
        CREATE TRIGGER evidence_payloads_no_truncate BEFORE TRUNCATE ON evidence_payloads
            FOR EACH STATEMENT EXECUTE FUNCTION aos_refuse_mutation();
        ALTER TABLE evidence_payloads ENABLE ALWAYS TRIGGER evidence_payloads_no_update;
        ALTER TABLE evidence_payloads ENABLE ALWAYS TRIGGER evidence_payloads_no_truncate;""")
    for table in ("evidence_erasures", "erased_payloads"):
        op.execute(f"""
            CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table}
                FOR EACH ROW EXECUTE FUNCTION aos_refuse_mutation();
            CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table}
                FOR EACH STATEMENT EXECUTE FUNCTION aos_refuse_mutation();
            ALTER TABLE {table} ENABLE ALWAYS TRIGGER {table}_append_only;
            ALTER TABLE {table} ENABLE ALWAYS TRIGGER {table}_no_truncate;""")
    for table in ("evidence_payloads", "evidence_erasures", "erased_payloads"):
        op.execute(f"""
            ALTER TABLE {table} OWNER TO aos_owner;
            ALTER TABLE {table} ENABLE ROW LEVEL SECURITY;
            CREATE POLICY {table}_tenant ON {table} USING (tenant_id = aos_current_tenant())
                WITH CHECK (tenant_id = aos_current_tenant());""")
    op.execute(f"""
        CREATE FUNCTION aos_legal_hold_covers(a_tenant text, a_subject text, a_runs text[]) RETURNS text
        LANGUAGE sql STABLE SECURITY DEFINER SET search_path = {PINNED}
        AS $$
            -- 0022_retention_policies' holds, with this migration's SUBJECT scope.
            SELECT h.id FROM legal_holds h
             WHERE h.tenant_id = a_tenant AND h.released_at IS NULL
               AND (h.scope = 'TENANT'
                    OR (h.scope = 'SUBJECT' AND h.target_id = a_subject)
                    OR (h.scope = 'RUN' AND h.target_id = ANY (a_runs))
                    OR (h.scope = 'INCIDENT' AND EXISTS (
                          SELECT FROM aos_traces t WHERE t.tenant_id = a_tenant AND t.run_id = ANY (a_runs)
                             AND t.incident_id = h.target_id)))
             ORDER BY h.placed_at, h.id LIMIT 1
        $$;

        CREATE FUNCTION aos_erase_subject(a_subject text, a_erasure_id text, a_requested_by text) RETURNS integer
        LANGUAGE plpgsql SECURITY DEFINER SET search_path = {PINNED}
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
        ALTER FUNCTION aos_legal_hold_covers(text, text, text[]) OWNER TO aos_owner;
        ALTER FUNCTION aos_erase_subject(text, text, text) OWNER TO aos_owner;
        REVOKE ALL ON FUNCTION aos_legal_hold_covers(text, text, text[]) FROM PUBLIC;
        REVOKE ALL ON FUNCTION aos_erase_subject(text, text, text) FROM PUBLIC;
        GRANT EXECUTE ON FUNCTION aos_erase_subject(text, text, text) TO aos_ingest;
        GRANT EXECUTE ON FUNCTION aos_legal_hold_covers(text, text, text[]) TO aos_ingest;

        GRANT SELECT, INSERT ON evidence_payloads TO aos_producer, aos_ingest;
        GRANT SELECT ON evidence_payloads, evidence_erasures, erased_payloads
            TO aos_logs, aos_export, aos_producer, aos_ingest;""")


def downgrade() -> None:
    op.execute("""
        DROP FUNCTION aos_erase_subject(text, text, text);
        DROP FUNCTION aos_legal_hold_covers(text, text, text[]);
        DROP TABLE erased_payloads, evidence_erasures, evidence_payloads;
        DROP FUNCTION aos_refuse_payload_update();
        ALTER TABLE platform_records DROP CONSTRAINT platform_records_v1,
                                     DROP COLUMN commitments, DROP COLUMN hash_version;""")
    for table in V2_TABLES:
        op.execute(f"ALTER TABLE {table} DROP CONSTRAINT {table}_hash_version, DROP COLUMN commitments, "
                   "DROP COLUMN hash_version")
    op.execute(f"""
        ALTER TABLE legal_holds DROP CONSTRAINT legal_holds_scope_check,
            ADD CONSTRAINT legal_holds_scope_check CHECK (scope IN {_in(PREVIOUS_HOLD_SCOPES)})""")
    _replace_check("entity_type", "API_KEY", PREVIOUS_ENTITIES)
    _replace_check("event_type", "EvidenceExported", PREVIOUS_EVENTS)
