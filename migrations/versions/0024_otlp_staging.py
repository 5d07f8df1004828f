"""OTLP spans staged until their trace is whole: one run per trace across Export requests.

Revision ID: 0024_otlp_staging
Revises: 0023_erasure
Create Date: 2026-12-07

Why (issue #21, trace stitching; docs/INGEST.md): an OpenTelemetry BatchSpanProcessor splits
one trace over several Export requests, and a sealed run cannot take more steps (a step's
hash covers its index; the trace's hash covers its steps, SPEC §5). So the Ingest service keeps
the GenAI spans of a trace whose root span has not arrived in ``otlp_staged_spans``, committed
before the Export is acknowledged, and seals the run from all of them once the root arrives or
the trace has been quiet for AOS_OTLP_TRACE_QUIET_S (a background task of the Ingest server).

- ``otlp_staged_spans``: one row per span (tenant, OTLP trace id, span id; a retried Export
  adds nothing), the span and its resource as the OTLP protobuf bytes, when it was received.
  Row-level security on the tenant; ``aos_ingest`` alone may SELECT, INSERT and DELETE (the
  seal deletes the rows it turned into the run, in the same transaction). Staged rows are not
  evidence yet (no hash covers them); they are what an acknowledged Export promised to seal.
- ``aos_otlp_quiet_traces(before, max_rows)``: the (tenant, trace) pairs whose last span was
  received before ``before``, across tenants. SECURITY DEFINER (the sealer has no tenant
  scope to read them under row-level security), answering only ids; EXECUTE for aos_ingest.

Downgrade drops both (staged spans not yet sealed are lost with the table: seal them first).
"""
from alembic import op

revision = "0024_otlp_staging"
down_revision = "0023_erasure"
branch_labels = None
depends_on = None

ROLE = "aos_ingest"
OWNER = "aos_owner"
PINNED = "pg_catalog, public, pg_temp"

SCHEMA = f"""
CREATE TABLE otlp_staged_spans (
    tenant_id      text        NOT NULL REFERENCES tenants (id),
    otel_trace_id  text        NOT NULL CHECK (otel_trace_id ~ '^[0-9a-f]{{32}}$'),
    span_id        text        NOT NULL CHECK (span_id ~ '^[0-9a-f]{{16}}$'),
    span           bytea       NOT NULL,
    resource       bytea       NOT NULL,
    received_at    timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, otel_trace_id, span_id)
);
-- Led by the tenant as every index of a tenant table is (tests/db/test_tenant_keys.py: the key a
-- sharded deployment distributes on). The sealer's sweep across tenants reads the table whole:
-- it holds only spans of unfinished traces (at most AOS_OTLP_TRACE_QUIET_S of them), so it stays small.
CREATE INDEX ix_otlp_staged_spans_received ON otlp_staged_spans (tenant_id, received_at);
ALTER TABLE otlp_staged_spans OWNER TO {OWNER};
ALTER TABLE otlp_staged_spans ENABLE ROW LEVEL SECURITY;
CREATE POLICY otlp_staged_spans_tenant ON otlp_staged_spans USING (tenant_id = aos_current_tenant())
    WITH CHECK (tenant_id = aos_current_tenant());
GRANT SELECT, INSERT, DELETE ON otlp_staged_spans TO {ROLE};

CREATE FUNCTION aos_otlp_quiet_traces(p_before timestamptz, p_max integer DEFAULT 100)
RETURNS TABLE (tenant_id text, otel_trace_id text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = {PINNED}
AS $$
    -- Spans received before p_before, of traces with none since (the key).
    SELECT DISTINCT s.tenant_id, s.otel_trace_id FROM otlp_staged_spans s
    WHERE s.received_at < p_before AND NOT EXISTS (
        SELECT 1 FROM otlp_staged_spans n WHERE n.tenant_id = s.tenant_id AND n.otel_trace_id = s.otel_trace_id
        AND n.received_at >= p_before)
    LIMIT p_max
$$;
ALTER FUNCTION aos_otlp_quiet_traces(timestamptz, integer) OWNER TO {OWNER};
REVOKE ALL ON FUNCTION aos_otlp_quiet_traces(timestamptz, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION aos_otlp_quiet_traces(timestamptz, integer) TO {ROLE};
"""


def upgrade() -> None:
    op.execute(SCHEMA)


def downgrade() -> None:
    op.execute("DROP FUNCTION aos_otlp_quiet_traces(timestamptz, integer)")
    op.execute("DROP TABLE otlp_staged_spans")
