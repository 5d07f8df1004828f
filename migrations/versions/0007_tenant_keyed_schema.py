"""Every tenant table keyed by tenant: tenant_id leads each primary key, unique constraint and foreign key.

Revision ID: 0007_tenant_keyed_schema
Revises: 0006_governance_indexes
Create Date: 2026-11-25

Why: past one machine the tables are sharded by tenant (Citus distributes them on
tenant_id, docs/SCALE.md). A distributed table must carry its distribution column
in every primary key and unique constraint, and a foreign key between two
distributed tables must include it on both sides, so that each check stays on one
shard. The same holds for PostgreSQL's own declarative partitioning by tenant. So:

- ``PRIMARY KEY (id)`` becomes ``PRIMARY KEY (tenant_id, id)`` (aos_traces:
  ``(tenant_id, trace_id)``; log_export_artifacts: ``(tenant_id, export_id, chunk_no)``).
  An id is unique within its tenant; every read already names the tenant, or runs
  under row-level security, whose ``tenant_id = aos_current_tenant()`` becomes the
  index's leading condition.
- ``UNIQUE (trace_id, step_index)`` becomes ``UNIQUE (tenant_id, trace_id, step_index)``
  (the producer's idempotent step insert names it in ON CONFLICT).
- foreign keys between tenant tables name the tenant on both sides. This also
  closes a hole: a proposal could name another tenant's incident as its trigger, a
  breach another tenant's limit, an artifact another tenant's export.
- ix_limit_breaches_limit_breached leads with the tenant like every other index.
- aos_check_step_trace() finds the step's trace by (tenant_id, trace_id): it runs as
  the owner, past row-level security, so without the tenant it would scan.

Not changed, and why: ``tenants`` is the tenant itself (its id is the distribution
value; on Citus a reference table). ``system_records`` has a nullable tenant_id (a
NULL row is system-wide, read by every tenant) and a primary key column cannot be
NULL; keying it by tenant means splitting the system-wide rows out (docs/SCALE.md).
``worker_run_cost_daily`` and ``ux_log_exports_idempotency`` already lead with it.

At volume: ADD PRIMARY KEY builds its index under an ACCESS EXCLUSIVE lock on the
table. On a large live database build each ``(tenant_id, id)`` index first with
CREATE UNIQUE INDEX CONCURRENTLY (outside a transaction) and this migration then
adopts it (``ADD PRIMARY KEY USING INDEX``) in a moment; docs/SCALE.md.

Downgrade restores the id keys; it fails (and changes nothing) if two tenants have
meanwhile written the same id, which the old schema could not hold.
"""
from alembic import op

revision = "0007_tenant_keyed_schema"
down_revision = "0006_governance_indexes"
branch_labels = None
depends_on = None

# table -> (old primary key columns, new primary key columns)
PRIMARY_KEYS = {
    "incidents": ("id", "tenant_id, id"),
    "policy_proposals": ("id", "tenant_id, id"),
    "limits": ("id", "tenant_id, id"),
    "limit_breaches": ("id", "tenant_id, id"),
    "worker_runs": ("id", "tenant_id, id"),
    "audit_ledger": ("id", "tenant_id, id"),
    "llm_run_records": ("id", "tenant_id, id"),
    "aos_traces": ("trace_id", "tenant_id, trace_id"),
    "aos_trace_steps": ("id", "tenant_id, id"),
    "log_exports": ("id", "tenant_id, id"),
    "log_export_artifacts": ("export_id, chunk_no", "tenant_id, export_id, chunk_no"),
}

# (table, old constraint, old definition, new constraint, new definition)
FOREIGN_KEYS = (
    ("policy_proposals", "policy_proposals_triggering_incident_id_fkey",
     "FOREIGN KEY (triggering_incident_id) REFERENCES incidents (id)",
     "policy_proposals_triggering_incident_fkey",
     "FOREIGN KEY (tenant_id, triggering_incident_id) REFERENCES incidents (tenant_id, id)"),
    ("limit_breaches", "limit_breaches_limit_id_fkey",
     "FOREIGN KEY (limit_id) REFERENCES limits (id)",
     "limit_breaches_limit_fkey",
     "FOREIGN KEY (tenant_id, limit_id) REFERENCES limits (tenant_id, id)"),
    ("aos_trace_steps", "aos_trace_steps_trace_id_fkey",
     "FOREIGN KEY (trace_id) REFERENCES aos_traces (trace_id)",
     "aos_trace_steps_trace_fkey",
     "FOREIGN KEY (tenant_id, trace_id) REFERENCES aos_traces (tenant_id, trace_id)"),
    ("log_export_artifacts", "log_export_artifacts_export_id_fkey",
     "FOREIGN KEY (export_id) REFERENCES log_exports (id) DEFERRABLE INITIALLY DEFERRED",
     "log_export_artifacts_export_fkey",
     "FOREIGN KEY (tenant_id, export_id) REFERENCES log_exports (tenant_id, id) DEFERRABLE INITIALLY DEFERRED"),
)

STEP_TRACE_CHECK = """
CREATE OR REPLACE FUNCTION aos_check_step_trace() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public
AS $$
DECLARE
    t record;
BEGIN
    SELECT tenant_id, status INTO t FROM aos_traces WHERE tenant_id = NEW.tenant_id AND trace_id = NEW.trace_id;
    IF NOT FOUND {tenant_mismatch}THEN
        RAISE EXCEPTION 'trace % not found for tenant', NEW.trace_id USING ERRCODE = '23503';
    END IF;
    IF t.status <> 'running' THEN
        RAISE EXCEPTION 'trace % is %: steps are accepted only while it runs', NEW.trace_id, t.status
            USING ERRCODE = 'AOS01';
    END IF;
    NEW.recorded_at := clock_timestamp();
    RETURN NEW;
END $$;
"""


def _upgrade_sql() -> list[str]:
    sql = [f"ALTER TABLE {table} DROP CONSTRAINT {old}" for table, old, _, _, _ in FOREIGN_KEYS]
    for table, (_, new) in PRIMARY_KEYS.items():
        sql += [f"ALTER TABLE {table} DROP CONSTRAINT {table}_pkey",
                f"ALTER TABLE {table} ADD CONSTRAINT {table}_pkey PRIMARY KEY ({new})"]
    sql += ["ALTER TABLE aos_trace_steps DROP CONSTRAINT aos_trace_steps_trace_id_step_index_key",
            "ALTER TABLE aos_trace_steps ADD CONSTRAINT aos_trace_steps_tenant_id_trace_id_step_index_key "
            "UNIQUE (tenant_id, trace_id, step_index)"]
    sql += [f"ALTER TABLE {table} ADD CONSTRAINT {new} {definition}"
            for table, _, _, new, definition in FOREIGN_KEYS]
    sql += ["DROP INDEX ix_limit_breaches_limit_breached",
            "CREATE INDEX ix_limit_breaches_limit_breached ON limit_breaches (tenant_id, limit_id, breached_at DESC)",
            STEP_TRACE_CHECK.format(tenant_mismatch="")]
    return sql


def _downgrade_sql() -> list[str]:
    sql = [f"ALTER TABLE {table} DROP CONSTRAINT {new}" for table, _, _, new, _ in FOREIGN_KEYS]
    for table, (old, _) in PRIMARY_KEYS.items():
        sql += [f"ALTER TABLE {table} DROP CONSTRAINT {table}_pkey",
                f"ALTER TABLE {table} ADD CONSTRAINT {table}_pkey PRIMARY KEY ({old})"]
    sql += ["ALTER TABLE aos_trace_steps DROP CONSTRAINT aos_trace_steps_tenant_id_trace_id_step_index_key",
            "ALTER TABLE aos_trace_steps ADD CONSTRAINT aos_trace_steps_trace_id_step_index_key "
            "UNIQUE (trace_id, step_index)"]
    sql += [f"ALTER TABLE {table} ADD CONSTRAINT {old} {definition}"
            for table, old, definition, _, _ in FOREIGN_KEYS]
    sql += ["DROP INDEX ix_limit_breaches_limit_breached",
            "CREATE INDEX ix_limit_breaches_limit_breached ON limit_breaches (limit_id, breached_at DESC)",
            # 0001's body: the trace by id alone, then its tenant compared
            STEP_TRACE_CHECK.replace("WHERE tenant_id = NEW.tenant_id AND trace_id", "WHERE trace_id")
            .format(tenant_mismatch="OR t.tenant_id <> NEW.tenant_id ")]
    return sql


def upgrade() -> None:
    for stmt in _upgrade_sql():
        op.execute(stmt)


def downgrade() -> None:
    for stmt in _downgrade_sql():
        op.execute(stmt)
