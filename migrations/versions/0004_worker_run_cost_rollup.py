"""Worker run costs per UTC day, kept by the database on every write to worker_runs.

Revision ID: 0004_worker_run_cost_rollup
Revises: 0003_export_artifacts
Create Date: 2026-11-25

Why it exists: GetCosts sums worker_runs.cost_cents over a period and over each
budget's window (day, week, month or all time). With 1,000,000 runs of one tenant
over 12 months (bench/overview_volume.py) those sums were index-only range scans
and GetCosts still took p50 230 ms / p99 347 ms: a month is ~83,000 rows and an
all-time budget reads every row, once per budget. worker_run_cost_daily holds the
same sums per UTC day: the 17 sums of that call (the month and 16 budgets) read
~12,600 rollup entries, 2.9 ms. Overview adds the partial days at a window's edges
from worker_runs itself, which keeps any timestamps exact.

Why this is not Overview owning a table (INV-OVERVIEW-001 is about the projection
writing nothing): the rollup belongs to the worker_runs domain, like an index. The
database maintains it on every INSERT, UPDATE, DELETE and TRUNCATE of worker_runs,
no service role may write it (the trigger writes it as aos_owner), and it holds no
decision state, only sums derivable from worker_runs at any moment. Overview reads
it under row-level security like any other source.

Rows: one per (tenant, scope, scope id, day, stripe) — the tenant's own (scope
TENANT, scope id '') and, when the run names them, its project's, agent's and
provider's. ``stripe`` spreads one day's sums over 8 rows by a hash of the run id,
so concurrent producers of one tenant do not all queue on one row lock; readers sum
over stripes, so the stripe a run lands in never changes a total. Each write's
upsert takes its rows in key order: two transactions writing a run each cannot
deadlock on them. Rows whose runs were all deleted stay, at zero.

The trigger fires per row: one transaction writing many runs of the same day
updates the same rows once per run, and every update leaves a dead version behind.
The bench's single-statement load of 1,000,000 runs takes ~410 s (under 40 s
without the rollup) and leaves the rollup ~20 times its size until VACUUM FULL.
Producers write a run per transaction, whose dead versions pruning and autovacuum
reclaim as they go.

A logical dump carries the rollup's rows and restoring worker_runs fires the trigger
(ENABLE ALWAYS), so restore one or the other: pg_dump --exclude-table-data
worker_run_cost_daily, and the restore rebuilds it.
"""
from alembic import op

revision = "0004_worker_run_cost_rollup"
down_revision = "0003_export_artifacts"
branch_labels = None
depends_on = None

UPGRADE = """
CREATE TABLE worker_run_cost_daily (
    tenant_id   text     NOT NULL,
    scope       text     NOT NULL CHECK (scope IN ('TENANT', 'PROJECT', 'AGENT', 'PROVIDER')),
    scope_id    text     NOT NULL,
    day         date     NOT NULL,  -- UTC
    stripe      smallint NOT NULL CHECK (stripe BETWEEN 0 AND 7),
    cost_cents  bigint   NOT NULL,
    runs        bigint   NOT NULL,
    -- cost_cents INCLUDEd: a window's sum is an index-only scan (updates are not HOT, a
    -- price paid per run written, against a heap visit per row read)
    PRIMARY KEY (tenant_id, scope, scope_id, day, stripe) INCLUDE (cost_cents),
    CHECK ((scope = 'TENANT') = (scope_id = ''))
);
ALTER TABLE worker_run_cost_daily OWNER TO aos_owner;
ALTER TABLE worker_run_cost_daily ENABLE ROW LEVEL SECURITY;
CREATE POLICY worker_run_cost_daily_tenant ON worker_run_cost_daily FOR SELECT
    USING (tenant_id = aos_current_tenant());
GRANT SELECT ON worker_run_cost_daily TO aos_overview;

-- The rollup rows a run counts in: the one definition, for the trigger and the backfill.
CREATE FUNCTION aos_worker_run_cost_keys(run worker_runs)
RETURNS TABLE (tenant_id text, scope text, scope_id text, day date, stripe smallint)
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT run.tenant_id, s.scope, s.scope_id, (run.created_at AT TIME ZONE 'UTC')::date,
           (hashtext(run.id) & 7)::smallint
    FROM (VALUES ('TENANT', ''), ('PROJECT', run.project_id), ('AGENT', run.agent_id),
                 ('PROVIDER', run.provider)) AS s (scope, scope_id)
    WHERE s.scope_id IS NOT NULL
$$;

-- The old row's cost leaves its rows, the new row's joins its own: one upsert of the
-- net deltas, in key order. SECURITY DEFINER: the writer of worker_runs may not write
-- the rollup, its owner does.
CREATE FUNCTION aos_worker_run_cost_rollup() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public
AS $$
BEGIN
    -- Most updates (status, tokens, start and end) move no money.
    IF TG_OP = 'UPDATE' AND (NEW.id, NEW.tenant_id, NEW.created_at, NEW.cost_cents, NEW.project_id,
                             NEW.agent_id, NEW.provider)
                            IS NOT DISTINCT FROM
                            (OLD.id, OLD.tenant_id, OLD.created_at, OLD.cost_cents, OLD.project_id,
                             OLD.agent_id, OLD.provider) THEN
        RETURN NULL;
    END IF;
    INSERT INTO worker_run_cost_daily AS r (tenant_id, scope, scope_id, day, stripe, cost_cents, runs)
    SELECT k.tenant_id, k.scope, k.scope_id, k.day, k.stripe, sum(d.cost_cents), sum(d.runs)
    FROM (SELECT OLD AS run, -OLD.cost_cents AS cost_cents, -1 AS runs WHERE TG_OP <> 'INSERT'
          UNION ALL
          SELECT NEW, NEW.cost_cents, 1 WHERE TG_OP <> 'DELETE') AS d
    CROSS JOIN LATERAL aos_worker_run_cost_keys(d.run) AS k
    GROUP BY 1, 2, 3, 4, 5
    HAVING sum(d.cost_cents) <> 0 OR sum(d.runs) <> 0
    ORDER BY 1, 2, 3, 4, 5
    ON CONFLICT (tenant_id, scope, scope_id, day, stripe) DO UPDATE
        SET cost_cents = r.cost_cents + EXCLUDED.cost_cents, runs = r.runs + EXCLUDED.runs;
    RETURN NULL;
END $$;

CREATE FUNCTION aos_worker_run_cost_truncate() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public
AS $$
BEGIN
    TRUNCATE worker_run_cost_daily;
    RETURN NULL;
END $$;

ALTER FUNCTION aos_worker_run_cost_keys(worker_runs) OWNER TO aos_owner;
ALTER FUNCTION aos_worker_run_cost_rollup() OWNER TO aos_owner;
ALTER FUNCTION aos_worker_run_cost_truncate() OWNER TO aos_owner;

-- The triggers lock worker_runs against writes until this migration commits, so the
-- backfill below sees every committed run and no run is counted twice.
CREATE TRIGGER worker_runs_cost_rollup AFTER INSERT OR UPDATE OR DELETE ON worker_runs
    FOR EACH ROW EXECUTE FUNCTION aos_worker_run_cost_rollup();
CREATE TRIGGER worker_runs_cost_truncate AFTER TRUNCATE ON worker_runs
    FOR EACH STATEMENT EXECUTE FUNCTION aos_worker_run_cost_truncate();
ALTER TABLE worker_runs ENABLE ALWAYS TRIGGER worker_runs_cost_rollup;
ALTER TABLE worker_runs ENABLE ALWAYS TRIGGER worker_runs_cost_truncate;

INSERT INTO worker_run_cost_daily (tenant_id, scope, scope_id, day, stripe, cost_cents, runs)
SELECT k.tenant_id, k.scope, k.scope_id, k.day, k.stripe, sum(w.cost_cents), count(*)
FROM worker_runs w CROSS JOIN LATERAL aos_worker_run_cost_keys(w) AS k
GROUP BY 1, 2, 3, 4, 5;
"""

DOWNGRADE = """
DROP TRIGGER worker_runs_cost_truncate ON worker_runs;
DROP TRIGGER worker_runs_cost_rollup ON worker_runs;
DROP FUNCTION aos_worker_run_cost_truncate(), aos_worker_run_cost_rollup(), aos_worker_run_cost_keys(worker_runs);
DROP TABLE worker_run_cost_daily;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
