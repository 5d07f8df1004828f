"""Retention policies and legal holds; the audit vocabulary of their changes and of drops.

Revision ID: 0022_retention_policies
Revises: 0021_evidence_search
Create Date: 2026-12-07

Why (issue #25, retention policies and legal holds; docs/SCALE.md §3c):

- ``retention_policies``: a tenant's policy per record type (AUDIT_LEDGER, LLM_RUNS,
  SYSTEM_RECORDS — the last per level), days kept (NULL: permanent), the compliance class
  and tags. A tenant without a row for a type has the suite's default (seed 003 §10, in
  aos_recording.retention). Rows change (a policy is configuration, not evidence); every
  change is an audit entry in the tenant's ledger, written in the same transaction by the
  Export service. Row-level security; the Export role reads and writes, nobody deletes.
- ``legal_holds``: a hold on the tenant, a run or an incident. Append-only except its
  release, which sets the four release columns once (a trigger refuses anything else,
  DELETE and TRUNCATE). The Export role places and releases; Logs and Ingest read.
- ``aos_legal_holds_covering(tenant, run_id, incident_id)``: the active holds of a tenant
  that cover the tenant itself, the run or the incident — the one question retention and
  erasure ask. SECURITY DEFINER (it sees the tenant's holds whatever the session's
  row-level security says, so a caller that forgot to scope its transaction gets the
  holds, not an empty answer that would let erasure pass); EXECUTE for the service roles.
- ``aos_drop_expired_partitions(parent, before)``: as 0009's ``aos_drop_partitions`` (trace
  steps only as whole finished traces) without its rule that the audit ledger must hold
  nothing before ``before``: with per-type policies, trace steps (90 days by default) go
  before the ledger (365 days). The ledger keeps its own checkpoint gate
  (``aos_drop_ledger_partitions``); the maintenance path checks policies and holds with
  the partitions locked, in the same transaction, before it calls either.
- The ledger accepts four events (RetentionPolicyChanged, LegalHoldPlaced,
  LegalHoldReleased, EvidencePartitionDropped) and three entity types (RETENTION_POLICY,
  LEGAL_HOLD, EVIDENCE_PARTITION), as 0014 and 0019 widened the CHECKs.

Downgrade drops the tables and functions and restores 0014's and 0019's lists; it fails,
as it must, once an entry with one of the new events is recorded (the ledger is append-only).
"""
from alembic import op

revision = "0022_retention_policies"
down_revision = "0021_evidence_search"
branch_labels = None
depends_on = None

OWNER = "aos_owner"
PINNED = "pg_catalog, public, pg_temp"

# Frozen copies (migrations never import the code they migrate for).
PREVIOUS_EVENTS = (
    "PolicyRuleCreated", "PolicyRuleModified", "PolicyRuleRetired",
    "PolicyProposalApproved", "PolicyProposalRejected",
    "LimitCreated", "LimitUpdated", "LimitBreached", "LimitOverrideGranted", "LimitOverrideRevoked",
    "IncidentAcknowledged", "IncidentResolved", "IncidentManuallyClosed",
    "EmergencyOverrideActivated", "EmergencyOverrideDeactivated",
    "ActorLoggedIn", "ActorLoggedOut", "ApiKeyCreated", "ApiKeyRevoked",
    "AccessGranted", "AccessDenied", "EvidenceExported", "ExportVerified",
)
AUDIT_EVENTS = PREVIOUS_EVENTS + (
    "RetentionPolicyChanged", "LegalHoldPlaced", "LegalHoldReleased", "EvidencePartitionDropped")
PREVIOUS_ENTITIES = ("POLICY_RULE", "POLICY_PROPOSAL", "LIMIT", "INCIDENT", "ACTOR", "API_KEY", "LOG_EXPORT",
                     "LLM_RUN", "SYSTEM_RECORD", "AUDIT_ENTRY")
ENTITIES = PREVIOUS_ENTITIES + ("RETENTION_POLICY", "LEGAL_HOLD", "EVIDENCE_PARTITION")
RECORD_TYPES = ("AUDIT_LEDGER", "LLM_RUNS", "SYSTEM_RECORDS")
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
HOLD_SCOPES = ("TENANT", "RUN", "INCIDENT")
READERS = ("aos_logs", "aos_ingest")


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


SCHEMA = f"""
CREATE TABLE retention_policies (
    tenant_id        text        NOT NULL REFERENCES tenants (id),
    record_type      text        NOT NULL CHECK (record_type IN {_in(RECORD_TYPES)}),
    level            text        NOT NULL DEFAULT '',
    retention_days   integer     CHECK (retention_days BETWEEN 1 AND 36500),  -- NULL: permanent
    retention_class  text        NOT NULL CHECK (retention_class ~ '^[A-Z][A-Z0-9_]{{0,31}}$'),
    compliance_tags  text[]      NOT NULL DEFAULT '{{}}',
    updated_at       timestamptz NOT NULL,
    updated_by_type  text        NOT NULL,
    updated_by_id    text        NOT NULL,
    PRIMARY KEY (tenant_id, record_type, level),
    CHECK (CASE WHEN record_type = 'SYSTEM_RECORDS' THEN level IN {_in(LEVELS)} ELSE level = '' END)
);

CREATE TABLE legal_holds (
    tenant_id        text        NOT NULL REFERENCES tenants (id),
    id               text        NOT NULL,
    scope            text        NOT NULL CHECK (scope IN {_in(HOLD_SCOPES)}),
    target_id        text        NOT NULL DEFAULT '',
    reason           text        NOT NULL CHECK (reason <> ''),
    placed_by_type   text        NOT NULL,
    placed_by_id     text        NOT NULL,
    placed_at        timestamptz NOT NULL,
    released_at      timestamptz,
    released_by_type text,
    released_by_id   text,
    release_reason   text,
    PRIMARY KEY (tenant_id, id),
    CHECK ((scope = 'TENANT') = (target_id = '')),
    CHECK ((released_at IS NULL) = (release_reason IS NULL) AND (released_at IS NULL) = (released_by_id IS NULL))
);
CREATE INDEX ix_legal_holds_active ON legal_holds (tenant_id, scope, target_id) WHERE released_at IS NULL;
CREATE INDEX ix_legal_holds_placed ON legal_holds (tenant_id, placed_at DESC, id DESC);

-- A hold is evidence of its own: only its release may be written, once.
CREATE FUNCTION aos_guard_legal_hold() RETURNS trigger
LANGUAGE plpgsql SET search_path = {PINNED}
AS $$
BEGIN
    IF TG_OP <> 'UPDATE' THEN
        RAISE EXCEPTION 'legal_holds: % refused (a hold is released, never removed)', TG_OP USING ERRCODE = 'AOS01';
    END IF;
    IF OLD.released_at IS NOT NULL THEN
        RAISE EXCEPTION 'legal hold % is already released', OLD.id USING ERRCODE = 'AOS01';
    END IF;
    IF (NEW.tenant_id, NEW.id, NEW.scope, NEW.target_id, NEW.reason, NEW.placed_by_type, NEW.placed_by_id,
        NEW.placed_at) IS DISTINCT FROM (OLD.tenant_id, OLD.id, OLD.scope, OLD.target_id, OLD.reason,
        OLD.placed_by_type, OLD.placed_by_id, OLD.placed_at) OR NEW.released_at IS NULL THEN
        RAISE EXCEPTION 'legal hold %: only its release may be written', OLD.id USING ERRCODE = 'AOS01';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER legal_holds_guard BEFORE UPDATE OR DELETE ON legal_holds
    FOR EACH ROW EXECUTE FUNCTION aos_guard_legal_hold();
CREATE TRIGGER legal_holds_no_truncate BEFORE TRUNCATE ON legal_holds
    FOR EACH STATEMENT EXECUTE FUNCTION aos_refuse_mutation();
ALTER TABLE legal_holds ENABLE ALWAYS TRIGGER legal_holds_guard;
ALTER TABLE legal_holds ENABLE ALWAYS TRIGGER legal_holds_no_truncate;
CREATE TRIGGER retention_policies_no_delete BEFORE DELETE ON retention_policies
    FOR EACH ROW EXECUTE FUNCTION aos_refuse_mutation();
CREATE TRIGGER retention_policies_no_truncate BEFORE TRUNCATE ON retention_policies
    FOR EACH STATEMENT EXECUTE FUNCTION aos_refuse_mutation();
ALTER TABLE retention_policies ENABLE ALWAYS TRIGGER retention_policies_no_delete;
ALTER TABLE retention_policies ENABLE ALWAYS TRIGGER retention_policies_no_truncate;

ALTER TABLE retention_policies OWNER TO {OWNER};
ALTER TABLE legal_holds OWNER TO {OWNER};
ALTER FUNCTION aos_guard_legal_hold() OWNER TO {OWNER};
ALTER TABLE retention_policies ENABLE ROW LEVEL SECURITY;
ALTER TABLE legal_holds ENABLE ROW LEVEL SECURITY;
CREATE POLICY retention_policies_tenant ON retention_policies USING (tenant_id = aos_current_tenant())
    WITH CHECK (tenant_id = aos_current_tenant());
CREATE POLICY legal_holds_tenant ON legal_holds USING (tenant_id = aos_current_tenant())
    WITH CHECK (tenant_id = aos_current_tenant());
GRANT SELECT, INSERT, UPDATE ON retention_policies TO aos_export;
GRANT SELECT, INSERT ON legal_holds TO aos_export;
GRANT UPDATE (released_at, released_by_type, released_by_id, release_reason) ON legal_holds TO aos_export;
GRANT SELECT ON legal_holds TO {', '.join(READERS)};

-- The active holds of a tenant covering the tenant, the run or the incident (either may be NULL).
CREATE FUNCTION aos_legal_holds_covering(p_tenant text, p_run_id text DEFAULT NULL, p_incident_id text DEFAULT NULL)
RETURNS SETOF legal_holds
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = {PINNED}
AS $$
BEGIN
    IF p_tenant IS NULL THEN
        RAISE EXCEPTION 'aos_legal_holds_covering: a tenant is required' USING ERRCODE = '22023';
    END IF;
    RETURN QUERY SELECT * FROM legal_holds h
      WHERE h.tenant_id = p_tenant AND h.released_at IS NULL
        AND (h.scope = 'TENANT'
             OR (h.scope = 'RUN' AND h.target_id = p_run_id)
             OR (h.scope = 'INCIDENT' AND h.target_id = p_incident_id))
      ORDER BY h.placed_at, h.id;
END $$;
ALTER FUNCTION aos_legal_holds_covering(text, text, text) OWNER TO {OWNER};
REVOKE EXECUTE ON FUNCTION aos_legal_holds_covering(text, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION aos_legal_holds_covering(text, text, text) TO aos_logs, aos_export, aos_ingest, aos_producer;

-- 0009's aos_drop_partitions for system_records and aos_trace_steps, without the rule that
-- the ledger's months go first: each record type has its own policy (the ledger keeps its
-- checkpoint gate). Trace steps still go only as whole, finished traces.
CREATE FUNCTION aos_drop_expired_partitions(parent text, before timestamptz)
RETURNS SETOF text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = {PINNED} SET timezone = 'UTC'
AS $$
DECLARE
    doomed oid[];
    part   oid;
    bad    record;
BEGIN
    IF parent NOT IN ('system_records', 'aos_trace_steps') THEN
        RAISE EXCEPTION 'aos_drop_expired_partitions: % is not dropped by it (the ledger: aos_drop_ledger_partitions)',
            parent USING ERRCODE = '22023';
    END IF;
    SELECT array_agg(c.oid ORDER BY c.relname) INTO doomed
      FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
     WHERE i.inhparent = parent::regclass AND c.relname <> parent || '_default'
       AND (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'TO \\(''([^'']+)''\\)'))[1]::timestamptz <= before;
    IF doomed IS NULL THEN
        RETURN;
    END IF;
    FOREACH part IN ARRAY doomed LOOP
        EXECUTE format('LOCK TABLE %s IN ACCESS EXCLUSIVE MODE', part::regclass);
    END LOOP;
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
ALTER FUNCTION aos_drop_expired_partitions(text, timestamptz) OWNER TO {OWNER};
REVOKE EXECUTE ON FUNCTION aos_drop_expired_partitions(text, timestamptz) FROM PUBLIC;
"""


def upgrade() -> None:
    _replace_check("event_type", "EvidenceExported", AUDIT_EVENTS)
    _replace_check("entity_type", "API_KEY", ENTITIES)
    op.execute(SCHEMA)


def downgrade() -> None:
    op.execute("""
        DROP FUNCTION aos_drop_expired_partitions(text, timestamptz);
        DROP FUNCTION aos_legal_holds_covering(text, text, text);
        DROP TABLE legal_holds;
        DROP TABLE retention_policies;
        DROP FUNCTION aos_guard_legal_hold();""")
    _replace_check("entity_type", "API_KEY", PREVIOUS_ENTITIES)
    _replace_check("event_type", "EvidenceExported", PREVIOUS_EVENTS)
