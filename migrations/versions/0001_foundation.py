"""Foundation schema: every table the suite reads, append-only triggers, chains, roles, RLS.

Revision ID: 0001_foundation
Revises:
Create Date: 2026-11-22

The enum spellings below are frozen copies (a migration must not change when the
application code does); the protos' ``canonical_name`` options name the same strings.
Tables owned by other domains (tenants, incidents, policy_proposals, limits,
limit_breaches, worker_runs) are here because the suite reads them and its tests
and demo need them; the evidence tables (audit_ledger, llm_run_records,
system_records, aos_traces, aos_trace_steps, log_exports) are the Logs domain's.
"""
from alembic import op

revision = "0001_foundation"
down_revision = None
branch_labels = None
depends_on = None

# --- frozen enums -------------------------------------------------------------
AUDIT_EVENTS = (
    # V1 (PIN-413)
    "PolicyRuleCreated", "PolicyRuleModified", "PolicyRuleRetired",
    "PolicyProposalApproved", "PolicyProposalRejected",
    "LimitCreated", "LimitUpdated", "LimitBreached", "LimitOverrideGranted", "LimitOverrideRevoked",
    "IncidentAcknowledged", "IncidentResolved", "IncidentManuallyClosed",
    "EmergencyOverrideActivated", "EmergencyOverrideDeactivated",
    # V2 O1-O3 panels
    "ActorLoggedIn", "ActorLoggedOut", "ApiKeyCreated", "ApiKeyRevoked",
    "AccessGranted", "AccessDenied", "EvidenceExported",
)
AUDIT_ENTITIES = ("POLICY_RULE", "POLICY_PROPOSAL", "LIMIT", "INCIDENT", "ACTOR", "API_KEY", "LOG_EXPORT")
ACTOR_TYPES = ("HUMAN", "AGENT", "SYSTEM")
SEVERITIES = ("critical", "high", "medium", "low")
INCIDENT_STATES = ("ACTIVE", "ACKED", "RESOLVED")
PROPOSAL_STATUSES = ("draft", "approved", "rejected")
LIMIT_CATEGORIES = ("BUDGET", "RATE", "THRESHOLD")
LIMIT_SCOPES = ("TENANT", "PROJECT", "AGENT", "PROVIDER")
RESET_PERIODS = ("DAILY", "WEEKLY", "MONTHLY", "NONE")
LIMIT_STATUSES = ("ACTIVE", "DISABLED")
BREACH_TYPES = ("BREACHED", "EXHAUSTED", "THROTTLED", "VIOLATED")
WORKER_RUN_STATUSES = ("queued", "running", "completed", "failed", "cancelled")
LLM_RUN_STATUSES = ("succeeded", "failed", "aborted")
EXECUTOR_TYPES = ("LLM", "AGENT", "HUMAN")
OUTCOMES = ("success", "failure", "near_threshold", "terminated")
TRACE_STATUSES = ("running", "completed", "failed", "aborted")
STEP_TYPES = ("input", "llm_call", "tool_call", "output", "policy_check", "violation")
STEP_LEVELS = ("info", "warning", "error")
SYSTEM_SEVERITIES = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
SYSTEM_EVENTS = ("STARTUP", "SHUTDOWN", "DEPLOY", "CONFIG_CHANGE", "MIGRATION", "ERROR",
                 "HEALTH_CHECK", "WORKER_EVENT", "AUTH_CHANGE")
CAUSED_BY = ("SYSTEM", "HUMAN", "AUTOMATION")
EXPORT_SCOPES = ("LLM_RUN", "INCIDENT", "AUDIT_SLICE", "SYSTEM_SLICE")
BUNDLE_TYPES = ("EVIDENCE", "SOC2", "EXECUTIVE")
EXPORT_FORMATS = ("JSON", "CSV", "PDF", "ZIP")

OWNER = "aos_owner"
SERVICE_ROLES = ("aos_overview", "aos_logs", "aos_export", "aos_producer")

# Tables whose rows, once written, never change and never go away.
APPEND_ONLY = ("audit_ledger", "llm_run_records", "system_records", "aos_trace_steps", "log_exports")
# Tables whose rows carry a per-tenant hash chain assigned by the database.
CHAINED = ("audit_ledger", "log_exports")
TENANT_SCOPED = ("incidents", "policy_proposals", "limits", "limit_breaches", "worker_runs",
                 "audit_ledger", "llm_run_records", "aos_traces", "aos_trace_steps", "log_exports")
ALL_TABLES = ("tenants",) + TENANT_SCOPED + ("system_records",)

GRANTS = {
    # Projection-only (INV-OVERVIEW-001): SELECT on its sources, nothing else.
    "aos_overview": {"SELECT": ("tenants", "incidents", "policy_proposals", "limits", "limit_breaches",
                                "worker_runs", "audit_ledger")},
    # Read-only raw evidence plus the source rows its correlation spine joins.
    "aos_logs": {"SELECT": ("tenants", "audit_ledger", "llm_run_records", "system_records", "aos_traces",
                            "aos_trace_steps", "log_exports", "incidents", "limits", "limit_breaches")},
    # Reads everything a bundle holds; appends exports and their EvidenceExported entries.
    "aos_export": {"SELECT": ALL_TABLES, "INSERT": ("log_exports", "audit_ledger")},
    # Writers of source tables and evidence (the recording library).
    "aos_producer": {"SELECT": ALL_TABLES, "INSERT": ALL_TABLES,
                     "UPDATE": ("tenants", "incidents", "policy_proposals", "limits", "worker_runs", "aos_traces")},
}


def _in(values) -> str:
    return "(" + ", ".join("'" + v + "'" for v in values) + ")"


def _create_role(name: str) -> str:
    # Roles are cluster-wide: another database of the same cluster (a parallel
    # test run, a second environment) may have created them already.
    return f"""
DO $$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{name}') THEN
    CREATE ROLE {name} NOLOGIN NOINHERIT;
  END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END $$;"""


TABLES = f"""
CREATE TABLE tenants (
    id                    text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{{0,127}}$'),
    name                  text NOT NULL,
    status                text NOT NULL DEFAULT 'ACTIVE' CHECK (status IN ('ACTIVE', 'SUSPENDED')),
    is_synthetic          boolean NOT NULL DEFAULT false,
    synthetic_scenario_id text,
    created_at            timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE incidents (
    id                    text PRIMARY KEY,
    tenant_id             text NOT NULL REFERENCES tenants(id),
    title                 text NOT NULL,
    description           text,
    category              text,
    severity              text NOT NULL CHECK (severity IN {_in(SEVERITIES)}),
    lifecycle_state       text NOT NULL DEFAULT 'ACTIVE' CHECK (lifecycle_state IN {_in(INCIDENT_STATES)}),
    source_run_id         text,
    trace_id              text,
    policy_id             text,
    is_synthetic          boolean NOT NULL DEFAULT false,
    synthetic_scenario_id text,
    created_at            timestamptz NOT NULL DEFAULT now(),
    acknowledged_at       timestamptz,
    resolved_at           timestamptz,
    updated_at            timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE policy_proposals (
    id                     text PRIMARY KEY,
    tenant_id              text NOT NULL REFERENCES tenants(id),
    proposal_name          text NOT NULL,
    proposal_type          text,
    rationale              text,
    status                 text NOT NULL DEFAULT 'draft' CHECK (status IN {_in(PROPOSAL_STATUSES)}),
    triggering_incident_id text REFERENCES incidents(id),
    policy_id              text,
    proposed_rule          jsonb,
    is_synthetic           boolean NOT NULL DEFAULT false,
    synthetic_scenario_id  text,
    created_at             timestamptz NOT NULL DEFAULT now(),
    reviewed_at            timestamptz,
    reviewed_by            text
);

CREATE TABLE limits (
    id                    text PRIMARY KEY,
    tenant_id             text NOT NULL REFERENCES tenants(id),
    name                  text NOT NULL,
    limit_category        text NOT NULL CHECK (limit_category IN {_in(LIMIT_CATEGORIES)}),
    scope                 text NOT NULL DEFAULT 'TENANT' CHECK (scope IN {_in(LIMIT_SCOPES)}),
    -- project, agent or provider id; NULL exactly when the limit covers the tenant
    scope_id              text,
    -- BUDGET limits count integer cents of `currency`; numeric, never a binary float
    max_value             numeric(20, 4) NOT NULL CHECK (max_value >= 0),
    currency              text NOT NULL DEFAULT 'USD' CHECK (currency ~ '^[A-Z]{{3}}$'),
    reset_period          text NOT NULL DEFAULT 'MONTHLY' CHECK (reset_period IN {_in(RESET_PERIODS)}),
    status                text NOT NULL DEFAULT 'ACTIVE' CHECK (status IN {_in(LIMIT_STATUSES)}),
    is_synthetic          boolean NOT NULL DEFAULT false,
    synthetic_scenario_id text,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    CHECK ((scope = 'TENANT') = (scope_id IS NULL))
);

CREATE TABLE limit_breaches (
    id                    text PRIMARY KEY,
    tenant_id             text NOT NULL REFERENCES tenants(id),
    limit_id              text NOT NULL REFERENCES limits(id),
    run_id                text,
    breach_type           text NOT NULL DEFAULT 'BREACHED' CHECK (breach_type IN {_in(BREACH_TYPES)}),
    value_at_breach       numeric(20, 4) NOT NULL,
    limit_value           numeric(20, 4) NOT NULL,
    details               jsonb,
    is_synthetic          boolean NOT NULL DEFAULT false,
    synthetic_scenario_id text,
    breached_at           timestamptz NOT NULL,
    created_at            timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE worker_runs (
    id                    text PRIMARY KEY,
    tenant_id             text NOT NULL REFERENCES tenants(id),
    project_id            text,
    agent_id              text,
    provider              text,
    model                 text,
    status                text NOT NULL CHECK (status IN {_in(WORKER_RUN_STATUSES)}),
    cost_cents            bigint NOT NULL DEFAULT 0 CHECK (cost_cents >= 0),
    input_tokens          bigint NOT NULL DEFAULT 0 CHECK (input_tokens >= 0),
    output_tokens         bigint NOT NULL DEFAULT 0 CHECK (output_tokens >= 0),
    is_synthetic          boolean NOT NULL DEFAULT false,
    synthetic_scenario_id text,
    created_at            timestamptz NOT NULL DEFAULT now(),
    started_at            timestamptz,
    completed_at          timestamptz
);

CREATE TABLE audit_ledger (
    id                    text PRIMARY KEY,
    tenant_id             text NOT NULL REFERENCES tenants(id),
    -- chain columns (SPEC section 5): assigned by aos_assign_chain() under a per-tenant lock
    seq                   bigint NOT NULL CHECK (seq >= 1),
    event_type            text NOT NULL CHECK (event_type IN {_in(AUDIT_EVENTS)}),
    entity_type           text NOT NULL CHECK (entity_type IN {_in(AUDIT_ENTITIES)}),
    entity_id             text NOT NULL,
    actor_type            text NOT NULL CHECK (actor_type IN {_in(ACTOR_TYPES)}),
    actor_id              text,
    action_reason         text,
    correlation_id        text,
    created_at            timestamptz NOT NULL,
    before_state          jsonb,
    after_state           jsonb,
    content_hash          bytea NOT NULL CHECK (octet_length(content_hash) = 32),
    prev_hash             bytea NOT NULL CHECK (octet_length(prev_hash) = 32),
    chain_hash            bytea NOT NULL CHECK (octet_length(chain_hash) = 32),
    is_synthetic          boolean NOT NULL DEFAULT false,
    synthetic_scenario_id text,
    recorded_at           timestamptz NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (tenant_id, seq)
);

CREATE TABLE llm_run_records (
    id                    text PRIMARY KEY,
    tenant_id             text NOT NULL REFERENCES tenants(id),
    run_id                text NOT NULL,
    trace_id              text,
    agent_id              text,
    project_id            text,
    provider              text NOT NULL,
    model                 text NOT NULL,
    execution_status      text NOT NULL CHECK (execution_status IN {_in(LLM_RUN_STATUSES)}),
    executor_type         text NOT NULL DEFAULT 'LLM' CHECK (executor_type IN {_in(EXECUTOR_TYPES)}),
    outcome               text CHECK (outcome IN {_in(OUTCOMES)}),
    termination_reason    text,
    input_tokens          bigint NOT NULL DEFAULT 0 CHECK (input_tokens >= 0),
    output_tokens         bigint NOT NULL DEFAULT 0 CHECK (output_tokens >= 0),
    cost_cents            bigint NOT NULL DEFAULT 0 CHECK (cost_cents >= 0),
    source                text NOT NULL,
    started_at            timestamptz NOT NULL,
    completed_at          timestamptz,
    is_synthetic          boolean NOT NULL DEFAULT false,
    synthetic_scenario_id text,
    created_at            timestamptz NOT NULL,
    content_hash          bytea NOT NULL CHECK (octet_length(content_hash) = 32),
    recorded_at           timestamptz NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (tenant_id, run_id),
    CHECK (completed_at IS NULL OR completed_at >= started_at)
);

CREATE TABLE system_records (
    id                    text PRIMARY KEY,
    -- NULL: a system-wide record, visible to every tenant
    tenant_id             text REFERENCES tenants(id),
    component             text NOT NULL,
    event_type            text NOT NULL CHECK (event_type IN {_in(SYSTEM_EVENTS)}),
    severity              text NOT NULL CHECK (severity IN {_in(SYSTEM_SEVERITIES)}),
    summary               text NOT NULL,
    details               jsonb,
    caused_by             text NOT NULL DEFAULT 'SYSTEM' CHECK (caused_by IN {_in(CAUSED_BY)}),
    actor_id              text,
    correlation_id        text,
    run_id                text,
    environment_id        text,
    is_synthetic          boolean NOT NULL DEFAULT false,
    synthetic_scenario_id text,
    created_at            timestamptz NOT NULL,
    content_hash          bytea NOT NULL CHECK (octet_length(content_hash) = 32),
    recorded_at           timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE TABLE aos_traces (
    trace_id              text PRIMARY KEY,
    tenant_id             text NOT NULL REFERENCES tenants(id),
    run_id                text NOT NULL,
    agent_id              text,
    status                text NOT NULL DEFAULT 'running' CHECK (status IN {_in(TRACE_STATUSES)}),
    started_at            timestamptz NOT NULL,
    completed_at          timestamptz,
    termination_reason    text,
    step_count            integer NOT NULL DEFAULT 0 CHECK (step_count >= 0),
    total_tokens          bigint NOT NULL DEFAULT 0 CHECK (total_tokens >= 0),
    total_cost_cents      bigint NOT NULL DEFAULT 0 CHECK (total_cost_cents >= 0),
    total_duration_ms     bigint NOT NULL DEFAULT 0 CHECK (total_duration_ms >= 0),
    -- SHA-256 of the concatenated hex step hashes, set when the trace completes
    content_hash          bytea CHECK (octet_length(content_hash) = 32),
    policy_snapshot_id    text,
    policy_snapshot       jsonb,
    incident_id           text,
    violation_step_index  integer CHECK (violation_step_index >= 0),
    violation_timestamp   timestamptz,
    violation_policy_id   text,
    violation_reason      text,
    is_synthetic          boolean NOT NULL DEFAULT false,
    synthetic_scenario_id text,
    created_at            timestamptz NOT NULL DEFAULT now(),
    recorded_at           timestamptz NOT NULL DEFAULT clock_timestamp(),
    CHECK (status = 'running' OR completed_at IS NOT NULL),
    CHECK ((violation_step_index IS NULL) = (violation_timestamp IS NULL))
);

CREATE TABLE aos_trace_steps (
    id                    text PRIMARY KEY,
    trace_id              text NOT NULL REFERENCES aos_traces(trace_id),
    tenant_id             text NOT NULL REFERENCES tenants(id),
    step_index            integer NOT NULL CHECK (step_index >= 0),
    step_type             text NOT NULL CHECK (step_type IN {_in(STEP_TYPES)}),
    level                 text NOT NULL DEFAULT 'info' CHECK (level IN {_in(STEP_LEVELS)}),
    source                text NOT NULL,
    "timestamp"           timestamptz NOT NULL,
    tokens                bigint NOT NULL DEFAULT 0 CHECK (tokens >= 0),
    cost_cents            bigint NOT NULL DEFAULT 0 CHECK (cost_cents >= 0),
    duration_ms           bigint NOT NULL DEFAULT 0 CHECK (duration_ms >= 0),
    input_data            jsonb,
    output_data           jsonb,
    metadata              jsonb,
    content_hash          bytea NOT NULL CHECK (octet_length(content_hash) = 32),
    created_at            timestamptz NOT NULL DEFAULT now(),
    recorded_at           timestamptz NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (trace_id, step_index)
);

CREATE TABLE log_exports (
    id                     text PRIMARY KEY,
    tenant_id              text NOT NULL REFERENCES tenants(id),
    seq                    bigint NOT NULL CHECK (seq >= 1),
    scope                  text NOT NULL CHECK (scope IN {_in(EXPORT_SCOPES)}),
    subject_id             text,
    run_id                 text,
    incident_id            text,
    slice_filter           jsonb,
    bundle_type            text NOT NULL CHECK (bundle_type IN {_in(BUNDLE_TYPES)}),
    format                 text NOT NULL CHECK (format IN {_in(EXPORT_FORMATS)}),
    content_type           text NOT NULL,
    filename               text NOT NULL,
    size_bytes             bigint NOT NULL CHECK (size_bytes >= 0),
    -- SHA-256 of the artifact bytes
    checksum               bytea NOT NULL CHECK (octet_length(checksum) = 32),
    manifest               jsonb NOT NULL,
    dsse_envelope          jsonb NOT NULL,
    signing_key_id         text NOT NULL,
    redaction              jsonb NOT NULL,
    idempotency_key        text,
    requested_by_type      text NOT NULL CHECK (requested_by_type IN {_in(ACTOR_TYPES)}),
    requested_by_id        text NOT NULL,
    correlation_id         text,
    created_at             timestamptz NOT NULL,
    -- SHA-256 of the canonical manifest; the chain links these
    content_hash           bytea NOT NULL CHECK (octet_length(content_hash) = 32),
    prev_hash              bytea NOT NULL CHECK (octet_length(prev_hash) = 32),
    chain_hash             bytea NOT NULL CHECK (octet_length(chain_hash) = 32),
    recorded_at            timestamptz NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (tenant_id, seq),
    CHECK ((scope = 'LLM_RUN') <= (run_id IS NOT NULL)),
    CHECK ((scope = 'INCIDENT') <= (incident_id IS NOT NULL))
);
"""

# Each index names the query that needs it. Lists are keyset-paginated on
# (created_at DESC, id DESC) within a tenant, so every list filter gets an index
# that ends in that order.
INDEXES = """
CREATE INDEX ix_incidents_tenant_active ON incidents (tenant_id, created_at DESC, id DESC) WHERE lifecycle_state = 'ACTIVE';
CREATE INDEX ix_incidents_tenant_created ON incidents (tenant_id, created_at DESC, id DESC);
CREATE INDEX ix_incidents_tenant_run ON incidents (tenant_id, source_run_id) WHERE source_run_id IS NOT NULL;
CREATE INDEX ix_proposals_tenant_draft ON policy_proposals (tenant_id, created_at DESC, id DESC) WHERE status = 'draft';
CREATE INDEX ix_proposals_tenant_created ON policy_proposals (tenant_id, created_at DESC, id DESC);
CREATE INDEX ix_limits_tenant_category ON limits (tenant_id, limit_category, status);
CREATE INDEX ix_limit_breaches_tenant_breached ON limit_breaches (tenant_id, breached_at DESC);
CREATE INDEX ix_limit_breaches_limit_breached ON limit_breaches (limit_id, breached_at DESC);
CREATE INDEX ix_limit_breaches_tenant_run ON limit_breaches (tenant_id, run_id) WHERE run_id IS NOT NULL;
CREATE INDEX ix_worker_runs_tenant_created ON worker_runs (tenant_id, created_at DESC);
CREATE INDEX ix_worker_runs_tenant_pending ON worker_runs (tenant_id) WHERE status IN ('queued', 'running');

CREATE INDEX ix_audit_ledger_tenant_created ON audit_ledger (tenant_id, created_at DESC, id DESC);
CREATE INDEX ix_audit_ledger_tenant_event ON audit_ledger (tenant_id, event_type, created_at DESC, id DESC);
CREATE INDEX ix_audit_ledger_tenant_entity_type ON audit_ledger (tenant_id, entity_type, created_at DESC, id DESC);
CREATE INDEX ix_audit_ledger_tenant_actor ON audit_ledger (tenant_id, actor_id, created_at DESC, id DESC);
CREATE INDEX ix_audit_ledger_tenant_correlation ON audit_ledger (tenant_id, correlation_id) WHERE correlation_id IS NOT NULL;
CREATE INDEX ix_audit_ledger_tenant_entity ON audit_ledger (tenant_id, entity_type, entity_id);
-- O3 governance: a run named in before/after state is found by index, not in memory.
CREATE INDEX ix_audit_ledger_after_run ON audit_ledger (tenant_id, (after_state ->> 'run_id')) WHERE after_state ? 'run_id';
CREATE INDEX ix_audit_ledger_before_run ON audit_ledger (tenant_id, (before_state ->> 'run_id')) WHERE before_state ? 'run_id';

CREATE INDEX ix_llm_run_records_tenant_created ON llm_run_records (tenant_id, created_at DESC, id DESC);
CREATE INDEX ix_llm_run_records_tenant_agent ON llm_run_records (tenant_id, agent_id, created_at DESC, id DESC);
CREATE INDEX ix_llm_run_records_tenant_trace ON llm_run_records (tenant_id, trace_id);

CREATE INDEX ix_system_records_tenant_created ON system_records (tenant_id, created_at DESC, id DESC);
CREATE INDEX ix_system_records_global_created ON system_records (created_at DESC, id DESC) WHERE tenant_id IS NULL;
CREATE INDEX ix_system_records_tenant_run ON system_records (tenant_id, run_id) WHERE run_id IS NOT NULL;
CREATE INDEX ix_system_records_tenant_correlation ON system_records (tenant_id, correlation_id) WHERE correlation_id IS NOT NULL;
-- O1 snapshot: newest STARTUP/DEPLOY/CONFIG_CHANGE before a run began.
CREATE INDEX ix_system_records_baseline ON system_records (tenant_id, created_at DESC) WHERE event_type IN ('STARTUP', 'DEPLOY', 'CONFIG_CHANGE');

CREATE INDEX ix_aos_traces_tenant_run ON aos_traces (tenant_id, run_id);
CREATE INDEX ix_aos_traces_tenant_created ON aos_traces (tenant_id, created_at DESC, trace_id DESC);
CREATE INDEX ix_aos_traces_tenant_policy ON aos_traces (tenant_id, violation_policy_id) WHERE violation_policy_id IS NOT NULL;
-- O4 replay: steps of a tenant by time.
CREATE INDEX ix_aos_trace_steps_tenant_timestamp ON aos_trace_steps (tenant_id, "timestamp");

CREATE INDEX ix_log_exports_tenant_created ON log_exports (tenant_id, created_at DESC, id DESC);
CREATE INDEX ix_log_exports_tenant_run ON log_exports (tenant_id, run_id) WHERE run_id IS NOT NULL;
CREATE INDEX ix_log_exports_tenant_incident ON log_exports (tenant_id, incident_id) WHERE incident_id IS NOT NULL;
CREATE UNIQUE INDEX ux_log_exports_idempotency ON log_exports (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
"""

FUNCTIONS = """
-- The caller's tenant for this transaction (SET LOCAL aos.tenant_id), or NULL.
-- An unset or reset setting reads as NULL, so row-level security fails closed.
CREATE FUNCTION aos_current_tenant() RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT nullif(current_setting('aos.tenant_id', true), '') $$;

-- The advisory-lock key serialising appends to one tenant's chain in one table.
-- Writers that must read the chain head before inserting (exports sign the
-- previous chain hash) take the same lock first; it is re-entrant.
CREATE FUNCTION aos_chain_lock_key(chain text, tenant text) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT hashtextextended(chain || ':' || tenant, 7316204011) $$;

CREATE FUNCTION aos_refuse_mutation() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'AOS01', HINT = 'evidence rows are never changed or removed';
END $$;

-- Assigns seq, prev_hash and chain_hash (SPEC section 5). SECURITY DEFINER: the
-- head lookup must see every row of the tenant's chain, not only what the
-- inserting role may read.
CREATE FUNCTION aos_assign_chain() RETURNS trigger
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

-- recorded_at means "when the row was persisted": the database says so, not the writer.
CREATE FUNCTION aos_stamp_recorded_at() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    NEW.recorded_at := clock_timestamp();
    RETURN NEW;
END $$;

-- A step joins only a running trace of the same tenant.
CREATE FUNCTION aos_check_step_trace() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public
AS $$
DECLARE
    t record;
BEGIN
    SELECT tenant_id, status INTO t FROM aos_traces WHERE trace_id = NEW.trace_id;
    IF NOT FOUND OR t.tenant_id <> NEW.tenant_id THEN
        RAISE EXCEPTION 'trace % not found for tenant', NEW.trace_id USING ERRCODE = '23503';
    END IF;
    IF t.status <> 'running' THEN
        RAISE EXCEPTION 'trace % is %: steps are accepted only while it runs', NEW.trace_id, t.status
            USING ERRCODE = 'AOS01';
    END IF;
    NEW.recorded_at := clock_timestamp();
    RETURN NEW;
END $$;

-- aos_traces: a running trace may record its violation and its completion;
-- nothing else changes, and a terminal trace never changes again.
CREATE FUNCTION aos_guard_trace_update() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    IF OLD.status <> 'running' THEN
        RAISE EXCEPTION 'aos_traces row % is % (terminal): UPDATE refused', OLD.trace_id, OLD.status
            USING ERRCODE = 'AOS01';
    END IF;
    IF (NEW.trace_id, NEW.tenant_id, NEW.run_id, NEW.agent_id, NEW.started_at, NEW.policy_snapshot_id,
        NEW.policy_snapshot, NEW.is_synthetic, NEW.synthetic_scenario_id, NEW.created_at, NEW.recorded_at)
       IS DISTINCT FROM
       (OLD.trace_id, OLD.tenant_id, OLD.run_id, OLD.agent_id, OLD.started_at, OLD.policy_snapshot_id,
        OLD.policy_snapshot, OLD.is_synthetic, OLD.synthetic_scenario_id, OLD.created_at, OLD.recorded_at) THEN
        RAISE EXCEPTION 'aos_traces row %: only violation and completion fields may change', OLD.trace_id
            USING ERRCODE = 'AOS01';
    END IF;
    -- A recorded violation is evidence: it may be set once, never rewritten.
    IF (OLD.violation_step_index IS NOT NULL AND
        (NEW.violation_step_index, NEW.violation_timestamp, NEW.violation_policy_id, NEW.violation_reason)
        IS DISTINCT FROM
        (OLD.violation_step_index, OLD.violation_timestamp, OLD.violation_policy_id, OLD.violation_reason))
       OR (OLD.incident_id IS NOT NULL AND NEW.incident_id IS DISTINCT FROM OLD.incident_id) THEN
        RAISE EXCEPTION 'aos_traces row %: a recorded violation cannot be rewritten', OLD.trace_id
            USING ERRCODE = 'AOS01';
    END IF;
    RETURN NEW;
END $$;
"""


def _triggers() -> list[str]:
    sql = []
    for table in APPEND_ONLY:
        sql.append(f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                   f"FOR EACH ROW EXECUTE FUNCTION aos_refuse_mutation()")
        sql.append(f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                   f"FOR EACH STATEMENT EXECUTE FUNCTION aos_refuse_mutation()")
    for table in CHAINED:
        sql.append(f"CREATE TRIGGER {table}_chain BEFORE INSERT ON {table} "
                   f"FOR EACH ROW EXECUTE FUNCTION aos_assign_chain()")
    for table in ("llm_run_records", "system_records", "aos_traces"):
        sql.append(f"CREATE TRIGGER {table}_recorded_at BEFORE INSERT ON {table} "
                   f"FOR EACH ROW EXECUTE FUNCTION aos_stamp_recorded_at()")
    sql.append("CREATE TRIGGER aos_trace_steps_trace BEFORE INSERT ON aos_trace_steps "
               "FOR EACH ROW EXECUTE FUNCTION aos_check_step_trace()")
    sql.append("CREATE TRIGGER aos_traces_guard BEFORE UPDATE ON aos_traces "
               "FOR EACH ROW EXECUTE FUNCTION aos_guard_trace_update()")
    sql.append("CREATE TRIGGER aos_traces_no_delete BEFORE DELETE ON aos_traces "
               "FOR EACH ROW EXECUTE FUNCTION aos_refuse_mutation()")
    sql.append("CREATE TRIGGER aos_traces_no_truncate BEFORE TRUNCATE ON aos_traces "
               "FOR EACH STATEMENT EXECUTE FUNCTION aos_refuse_mutation()")
    # ENABLE ALWAYS: session_replication_role = replica must not silence them.
    always = []
    for stmt in sql:
        name, table = stmt.split()[2], stmt.split(" ON ")[1].split()[0]
        always.append(f"ALTER TABLE {table} ENABLE ALWAYS TRIGGER {name}")
    return sql + always


def _row_security() -> list[str]:
    sql = []
    for table in TENANT_SCOPED:
        sql += [f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY",
                f"CREATE POLICY {table}_tenant ON {table} USING (tenant_id = aos_current_tenant()) "
                f"WITH CHECK (tenant_id = aos_current_tenant())"]
    sql += ["ALTER TABLE tenants ENABLE ROW LEVEL SECURITY",
            "CREATE POLICY tenants_self ON tenants USING (id = aos_current_tenant()) "
            "WITH CHECK (id = aos_current_tenant())",
            "ALTER TABLE system_records ENABLE ROW LEVEL SECURITY",
            # System-wide rows (NULL tenant) are readable by every tenant, and by a producer
            # acting for no tenant (which writes them); a tenant's rows only by that tenant.
            "CREATE POLICY system_records_tenant ON system_records "
            "USING (tenant_id IS NULL OR tenant_id = aos_current_tenant()) "
            "WITH CHECK (tenant_id IS NOT DISTINCT FROM aos_current_tenant())"]
    return sql


def _ownership_and_grants() -> list[str]:
    sql = [f"ALTER TABLE {t} OWNER TO {OWNER}" for t in ALL_TABLES]
    sql += [f"ALTER FUNCTION {f} OWNER TO {OWNER}" for f in (
        "aos_current_tenant()", "aos_chain_lock_key(text, text)", "aos_refuse_mutation()",
        "aos_assign_chain()", "aos_stamp_recorded_at()", "aos_check_step_trace()", "aos_guard_trace_update()")]
    sql.append("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    for role, privileges in GRANTS.items():
        sql.append(f"GRANT USAGE ON SCHEMA public TO {role}")
        for privilege, tables in privileges.items():
            sql.append(f"GRANT {privilege} ON {', '.join(tables)} TO {role}")
    # The connecting user assumes a service role per session (SET ROLE); it needs membership.
    sql.append(f"GRANT {', '.join(SERVICE_ROLES)} TO CURRENT_USER")
    return sql


def upgrade() -> None:
    for role in (OWNER,) + SERVICE_ROLES:
        op.execute(_create_role(role))
    op.execute(TABLES)
    op.execute(INDEXES)
    op.execute(FUNCTIONS)
    for stmt in _triggers() + _row_security() + _ownership_and_grants():
        op.execute(stmt)


def downgrade() -> None:
    # Roles are cluster-wide and may serve other databases of the cluster: they stay.
    for role in SERVICE_ROLES:
        op.execute(f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {role}")
        op.execute(f"REVOKE USAGE ON SCHEMA public FROM {role}")
    op.execute("DROP TABLE log_exports, aos_trace_steps, aos_traces, system_records, llm_run_records, "
               "audit_ledger, worker_runs, limit_breaches, limits, policy_proposals, incidents, tenants")
    op.execute("DROP FUNCTION aos_guard_trace_update(), aos_check_step_trace(), aos_stamp_recorded_at(), "
               "aos_assign_chain(), aos_refuse_mutation(), aos_chain_lock_key(text, text), aos_current_tenant()")
