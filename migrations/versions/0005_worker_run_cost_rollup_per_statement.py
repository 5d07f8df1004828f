"""The worker run cost rollup follows each statement on worker_runs, not each row.

Revision ID: 0005_cost_rollup_per_statement
Revises: 0004_worker_run_cost_rollup
Create Date: 2026-11-25

Why: 0004's trigger fired per row, so one statement writing many runs of one day
upserted the same rollup rows once per run, each update leaving a dead version
behind. The single-statement load of 1,000,000 runs in bench/overview_volume.py
took ~403 s and left worker_run_cost_daily ~700 MB (~31 MB when compact) until
VACUUM FULL, and GetCosts read that bloat. Here AFTER ... FOR EACH STATEMENT
triggers read the statement's transition tables (every row it inserted, deleted or
changed), sum them per rollup row, and upsert each rollup row once: the bench's
whole load (VACUUM ANALYZE included) took 74 s on the shared 2-core machine while
other work ran on it, and leaves the rollup compact: 32 MB for 216,411 rows. A
single-row statement (what producers write) still upserts the run's rows once.

Postgres allows transition tables only on a single-event trigger, hence three
triggers (INSERT, UPDATE, DELETE) on one function. TRUNCATE keeps 0004's trigger.

Kept from 0004, and why:
- the stripes: a producer writes one run per transaction and holds its rollup
  rows' locks until it commits; a statement-level trigger changes nothing about
  that, so without the 8 stripes every concurrent producer of one tenant would
  queue on that day's TENANT row (tests/db/test_cost_rollup.py checks they don't).
  A multi-row statement spreads its runs over the stripes by the same hash, so the
  stripe of a run never depends on how it was written.
- key order: each upsert takes its rows sorted by key, so two statements writing
  runs cannot deadlock on the rollup.
- aos_worker_run_cost_keys() is still the one definition of the rows a run counts
  in; the transition rows are passed to it as worker_runs rows.
- an UPDATE that moves no money (status, tokens, times other than created_at)
  nets to zero per rollup row and writes nothing (HAVING).
- SECURITY DEFINER as aos_owner and ENABLE ALWAYS, for the reasons 0004 gives.

Downgrade restores 0004's row trigger; both keep the same sums, so no rebuild.
"""
from alembic import op

revision = "0005_cost_rollup_per_statement"
down_revision = "0004_worker_run_cost_rollup"
branch_labels = None
depends_on = None

# The upsert each trigger event runs, over its delta rows d(run, cost_cents, runs).
_UPSERT = """
        INSERT INTO worker_run_cost_daily AS r (tenant_id, scope, scope_id, day, stripe, cost_cents, runs)
        SELECT k.tenant_id, k.scope, k.scope_id, k.day, k.stripe, sum(d.cost_cents), sum(d.runs)
        FROM ({delta}) AS d
        CROSS JOIN LATERAL aos_worker_run_cost_keys(d.run) AS k
        GROUP BY 1, 2, 3, 4, 5
        HAVING sum(d.cost_cents) <> 0 OR sum(d.runs) <> 0
        ORDER BY 1, 2, 3, 4, 5
        ON CONFLICT (tenant_id, scope, scope_id, day, stripe) DO UPDATE
            SET cost_cents = r.cost_cents + EXCLUDED.cost_cents, runs = r.runs + EXCLUDED.runs;"""
_ADDED = "SELECT n::worker_runs AS run, n.cost_cents::bigint AS cost_cents, 1::bigint AS runs FROM new_runs n"
_REMOVED = "SELECT o::worker_runs AS run, -o.cost_cents::bigint AS cost_cents, -1::bigint AS runs FROM old_runs o"

UPGRADE = f"""
-- The statement's rows leave (old_runs) and join (new_runs) their rollup rows: one
-- upsert of the net deltas, in key order.
CREATE FUNCTION aos_worker_run_cost_rollup_statement() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public
AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN{_UPSERT.format(delta=_ADDED)}
    ELSIF TG_OP = 'DELETE' THEN{_UPSERT.format(delta=_REMOVED)}
    ELSE{_UPSERT.format(delta=f"{_REMOVED} UNION ALL {_ADDED}")}
    END IF;
    RETURN NULL;
END $$;
ALTER FUNCTION aos_worker_run_cost_rollup_statement() OWNER TO aos_owner;

DROP TRIGGER worker_runs_cost_rollup ON worker_runs;
CREATE TRIGGER worker_runs_cost_rollup_insert AFTER INSERT ON worker_runs
    REFERENCING NEW TABLE AS new_runs
    FOR EACH STATEMENT EXECUTE FUNCTION aos_worker_run_cost_rollup_statement();
CREATE TRIGGER worker_runs_cost_rollup_update AFTER UPDATE ON worker_runs
    REFERENCING OLD TABLE AS old_runs NEW TABLE AS new_runs
    FOR EACH STATEMENT EXECUTE FUNCTION aos_worker_run_cost_rollup_statement();
CREATE TRIGGER worker_runs_cost_rollup_delete AFTER DELETE ON worker_runs
    REFERENCING OLD TABLE AS old_runs
    FOR EACH STATEMENT EXECUTE FUNCTION aos_worker_run_cost_rollup_statement();
ALTER TABLE worker_runs ENABLE ALWAYS TRIGGER worker_runs_cost_rollup_insert;
ALTER TABLE worker_runs ENABLE ALWAYS TRIGGER worker_runs_cost_rollup_update;
ALTER TABLE worker_runs ENABLE ALWAYS TRIGGER worker_runs_cost_rollup_delete;
"""

DOWNGRADE = """
DROP TRIGGER worker_runs_cost_rollup_delete ON worker_runs;
DROP TRIGGER worker_runs_cost_rollup_update ON worker_runs;
DROP TRIGGER worker_runs_cost_rollup_insert ON worker_runs;
DROP FUNCTION aos_worker_run_cost_rollup_statement();
-- 0004's row trigger (its function is still there): the sums it finds are the same.
CREATE TRIGGER worker_runs_cost_rollup AFTER INSERT OR UPDATE OR DELETE ON worker_runs
    FOR EACH ROW EXECUTE FUNCTION aos_worker_run_cost_rollup();
ALTER TABLE worker_runs ENABLE ALWAYS TRIGGER worker_runs_cost_rollup;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
