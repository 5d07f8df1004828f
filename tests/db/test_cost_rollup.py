"""worker_run_cost_daily (migrations 0004, 0005): the database keeps it equal to
worker_runs through every insert, update, delete and truncate, whether a statement
writes one run or many; Overview may read it, no service role may write it; and
spend read through it is exact for any window."""
from __future__ import annotations

import random
from collections import Counter
from datetime import datetime, timedelta, timezone

import psycopg
import pytest
from hypothesis import given, settings, strategies as st
from sqlalchemy import create_engine, text

from aos_runtime import migrate
from aos_runtime.db import sync_url
from services.overview import store
from tests.db.sessions import make_tenant, new_id, session

pytestmark = pytest.mark.db

MIDNIGHT = datetime(2026, 3, 2, tzinfo=timezone.utc)
PROJECTS, AGENTS, PROVIDERS = ("p1", "p2", None), ("a1", "a2", None), ("openai", "anthropic", None)
SCOPES = {"TENANT": None, "PROJECT": "project_id", "AGENT": "agent_id", "PROVIDER": "provider"}
HYPOTHESIS = settings(max_examples=40, deadline=None)

# Instants over three UTC days, their first and last microseconds included.
DAY_US = 86_400_000_000
instants = st.builds(lambda day, us: MIDNIGHT + timedelta(days=day, microseconds=us), st.integers(-1, 1),
                     st.one_of(st.sampled_from([0, 1, DAY_US - 1]), st.integers(0, DAY_US - 1)))
runs = st.fixed_dictionaries({
    "project_id": st.sampled_from(PROJECTS), "agent_id": st.sampled_from(AGENTS),
    "provider": st.sampled_from(PROVIDERS), "cost_cents": st.integers(0, 10_000), "created_at": instants})
changes = st.fixed_dictionaries({}, optional={
    "cost_cents": st.integers(0, 10_000), "created_at": instants, "project_id": st.sampled_from(PROJECTS),
    "agent_id": st.sampled_from(AGENTS), "provider": st.sampled_from(PROVIDERS),
    "status": st.sampled_from(["running", "failed"]), "rename": st.just(True)})
operations = st.lists(st.one_of(
    st.tuples(st.just("insert"), st.integers(0, 1), runs),
    st.tuples(st.just("update"), st.integers(0, 99), changes),
    st.tuples(st.just("delete"), st.integers(0, 99)),
    # statements writing many runs at once: the trigger sums each statement's rows
    st.tuples(st.just("shift"), st.integers(-2, 2)),
    st.tuples(st.just("insert_many"), st.integers(0, 1), st.integers(1, 60), st.integers(0, 10_000)),
    st.tuples(st.just("move"), st.integers(0, 2), st.integers(-1, 1)),
    st.tuples(st.just("delete_many"), st.integers(0, 2)),
    st.tuples(st.just("upsert"), st.integers(0, 1), st.integers(1, 20), st.integers(0, 10_000)),
), max_size=40)

# Runs i = 1..n written by one statement: spread over three UTC days (both midnights
# crossed), every project, agent and provider and none, a cost from i and a seed.
MANY_RUNS = """
    SELECT %(prefix)s || i, %(tenant)s, 'completed', (ARRAY['p1', 'p2', NULL])[1 + i %% 3],
           (ARRAY['a1', 'a2', NULL])[1 + i %% 5 %% 3], (ARRAY['openai', 'anthropic', NULL])[1 + i %% 7 %% 3],
           (i * 7919 + %(seed)s) %% 1000, %(midnight)s + (i * 104729 + %(seed)s) %% 259200 * interval '1 second'
                                                    - interval '1 day'
    FROM generate_series(1, %(n)s) i"""
INSERT_MANY = ("INSERT INTO worker_runs (id, tenant_id, status, project_id, agent_id, provider, cost_cents, "
               "created_at)" + MANY_RUNS)


def write_many(conn, op: str, tenants: list[str], *args) -> None:
    """One statement over many runs: ``insert_many`` and ``upsert`` (which also rewrites
    the runs it finds) add runs; ``move`` changes a third of them to other days and
    scopes; ``delete_many`` deletes a third."""
    if op == "insert_many":
        tenant, n, seed = args
        conn.execute(INSERT_MANY, {"prefix": new_id("bulk") + "-", "tenant": tenants[tenant], "n": n, "seed": seed,
                                   "midnight": MIDNIGHT})
    elif op == "upsert":  # ids "<tenant>-up-i": a second upsert meets the runs of the first
        tenant, n, seed = args
        conn.execute(INSERT_MANY + " ON CONFLICT (tenant_id, id) DO UPDATE SET cost_cents = EXCLUDED.cost_cents, "
                     "created_at = EXCLUDED.created_at, project_id = EXCLUDED.agent_id",
                     {"prefix": tenants[tenant] + "-up-", "tenant": tenants[tenant], "n": n, "seed": seed,
                      "midnight": MIDNIGHT})
    elif op == "move":
        third, days = args
        conn.execute("UPDATE worker_runs SET created_at = created_at + %s, project_id = agent_id, "
                     "provider = CASE provider WHEN 'openai' THEN NULL ELSE 'openai' END, cost_cents = cost_cents * 2 "
                     "WHERE tenant_id = ANY(%s) AND abs(hashtext(id)) %% 3 = %s",
                     (timedelta(days=days, hours=5), tenants, third))
    elif op == "delete_many":
        conn.execute("DELETE FROM worker_runs WHERE tenant_id = ANY(%s) AND abs(hashtext(id)) %% 3 = %s",
                     (tenants, args[0]))


def insert_run(conn, tenant: str, run_id: str | None = None, **run) -> str:
    run_id = run_id or new_id("run")
    run = {"project_id": None, "agent_id": None, "provider": None, "cost_cents": 100, "created_at": MIDNIGHT, **run}
    conn.execute("INSERT INTO worker_runs (id, tenant_id, status, project_id, agent_id, provider, cost_cents, "
                 "created_at) VALUES (%s, %s, 'completed', %s, %s, %s, %s, %s)",
                 (run_id, tenant, run["project_id"], run["agent_id"], run["provider"], run["cost_cents"],
                  run["created_at"]))
    return run_id


def expected_rollup(conn, tenants: list[str]) -> dict[tuple, tuple[int, int]]:
    """The rollup recomputed from worker_runs, in Python: a GROUP BY by other means."""
    sums: Counter = Counter()
    counts: Counter = Counter()
    for tenant, created_at, cost, *scope_ids in conn.execute(
            "SELECT tenant_id, created_at, cost_cents, project_id, agent_id, provider FROM worker_runs "
            "WHERE tenant_id = ANY(%s)", (tenants,)):
        day = created_at.astimezone(timezone.utc).date()
        for scope, scope_id in zip(SCOPES, ["", *scope_ids]):
            if scope_id is not None:
                sums[tenant, scope, scope_id, day] += cost
                counts[tenant, scope, scope_id, day] += 1
    return {key: (sums[key], counts[key]) for key in counts}


def rollup(conn, tenants: list[str]) -> dict[tuple, tuple[int, int]]:
    """The rollup summed over stripes; keys whose runs are all gone (zero rows) left out."""
    return {(t, scope, scope_id, day): (int(cost), int(n)) for t, scope, scope_id, day, cost, n in conn.execute(
        "SELECT tenant_id, scope, scope_id, day, sum(cost_cents), sum(runs) FROM worker_run_cost_daily "
        "WHERE tenant_id = ANY(%s) GROUP BY 1, 2, 3, 4 HAVING sum(runs) <> 0 OR sum(cost_cents) <> 0", (tenants,))}


@HYPOTHESIS
@given(operations=operations)
def test_rollup_equals_worker_runs_after_any_writes(database_url, operations):
    tenants = [make_tenant(database_url), make_tenant(database_url)]
    live: list[str] = []
    with session(database_url) as conn:
        for op, *args in operations:
            if op == "insert":
                live.append(insert_run(conn, tenants[args[0]], **args[1]))
            elif op == "update" and live and args[1]:
                i, change = args[0] % len(live), dict(args[1])
                if change.pop("rename", False):  # a new id: the run may move to another stripe
                    change["id"] = new_id("run")
                if change:
                    conn.execute(f"UPDATE worker_runs SET {', '.join(f'{c} = %s' for c in change)} WHERE id = %s",
                                 (*change.values(), live[i]))
                    live[i] = change.get("id", live[i])
            elif op == "delete" and live:
                conn.execute("DELETE FROM worker_runs WHERE id = %s", (live.pop(args[0] % len(live)),))
            elif op == "shift":
                conn.execute("UPDATE worker_runs SET created_at = created_at + %s, cost_cents = cost_cents + 1 "
                             "WHERE tenant_id = ANY(%s)", (timedelta(hours=7 * args[0]), tenants))
            elif op in ("insert_many", "upsert", "move", "delete_many"):
                write_many(conn, op, tenants, *args)
                live = [r[0] for r in conn.execute("SELECT id FROM worker_runs WHERE tenant_id = ANY(%s) ORDER BY id",
                                                   (tenants,))]
        assert rollup(conn, tenants) == expected_rollup(conn, tenants)


def rollup_writes(conn) -> tuple[int, int]:
    """Rollup rows (inserted, updated) so far by this backend. Compare two readings in
    one transaction: Postgres 15 reports counts of earlier transactions not yet flushed."""
    return conn.execute("SELECT n_tup_ins, n_tup_upd FROM pg_stat_xact_user_tables "
                        "WHERE relname = 'worker_run_cost_daily'").fetchone()


def test_one_statement_of_many_runs_writes_each_rollup_row_once(database_url):
    """A statement's runs are summed before the upsert: each rollup row it touches is
    inserted or updated once, not once per run (no dead versions to bloat it)."""
    tenant = make_tenant(database_url)
    with session(database_url) as conn:
        with conn.transaction():
            before = rollup_writes(conn)
            write_many(conn, "insert_many", [tenant], 0, 3000, 1)
            after = rollup_writes(conn)
            rows = conn.execute("SELECT count(*) FROM worker_run_cost_daily WHERE tenant_id = %s",
                                (tenant,)).fetchone()[0]
        assert (after[0] - before[0], after[1] - before[1]) == (rows, 0)
        assert rows <= 3 * 7 * 8  # 3 days x 7 scopes x 8 stripes, for 3000 runs
        with conn.transaction():  # a third of the runs move to other days and scopes
            before = rollup_writes(conn)
            write_many(conn, "move", [tenant], 0, 1)
            after = rollup_writes(conn)
            total = conn.execute("SELECT count(*) FROM worker_run_cost_daily WHERE tenant_id = %s",
                                 (tenant,)).fetchone()[0]
        assert (after[0] - before[0]) + (after[1] - before[1]) <= total
        with conn.transaction():  # a status change moves no money: nothing written
            before = rollup_writes(conn)
            conn.execute("UPDATE worker_runs SET status = 'failed' WHERE tenant_id = %s", (tenant,))
            assert rollup_writes(conn) == before
        assert rollup(conn, [tenant]) == expected_rollup(conn, [tenant])


def test_producer_writes_runs_and_the_rollup_follows(database_url):
    tenant = make_tenant(database_url)
    with session(database_url, "aos_producer", tenant) as conn:
        insert_run(conn, tenant, project_id="p1", cost_cents=250, created_at=MIDNIGHT - timedelta(microseconds=1))
        run = insert_run(conn, tenant, agent_id="a1", provider="openai", cost_cents=100)
        conn.execute("UPDATE worker_runs SET cost_cents = 300, status = 'running' WHERE id = %s", (run,))
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT 1 FROM worker_run_cost_daily")
    with session(database_url, "aos_overview", tenant) as conn:
        assert rollup(conn, [tenant]) == expected_rollup(conn, [tenant]) == {
            (tenant, "TENANT", "", MIDNIGHT.date() - timedelta(days=1)): (250, 1),
            (tenant, "PROJECT", "p1", MIDNIGHT.date() - timedelta(days=1)): (250, 1),
            (tenant, "TENANT", "", MIDNIGHT.date()): (300, 1),
            (tenant, "AGENT", "a1", MIDNIGHT.date()): (300, 1),
            (tenant, "PROVIDER", "openai", MIDNIGHT.date()): (300, 1)}


@pytest.mark.parametrize("role", ["aos_overview", "aos_producer", "aos_logs", "aos_export"])
def test_no_service_role_writes_the_rollup(database_url, role):
    tenant = make_tenant(database_url)
    with session(database_url, role, tenant) as conn:
        for statement in ("INSERT INTO worker_run_cost_daily VALUES (%s, 'TENANT', '', '2026-03-01', 0, 1, 1)",
                          "UPDATE worker_run_cost_daily SET cost_cents = 0 WHERE tenant_id = %s",
                          "DELETE FROM worker_run_cost_daily WHERE tenant_id = %s",
                          "TRUNCATE worker_run_cost_daily"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement, (tenant,) if "%s" in statement else ())


def test_row_level_security_hides_other_tenants_rows(database_url):
    mine, theirs = make_tenant(database_url), make_tenant(database_url)
    with session(database_url) as conn:
        insert_run(conn, mine, cost_cents=1)
        insert_run(conn, theirs, cost_cents=2)
    with session(database_url, "aos_overview", mine) as conn:
        assert {r[0] for r in conn.execute("SELECT DISTINCT tenant_id FROM worker_run_cost_daily")} == {mine}
        assert conn.execute("SELECT count(*) FROM worker_run_cost_daily WHERE tenant_id = %s",
                            (theirs,)).fetchone()[0] == 0
    with session(database_url, "aos_overview") as conn:  # no tenant: nothing
        assert conn.execute("SELECT count(*) FROM worker_run_cost_daily").fetchone()[0] == 0


def test_concurrent_producers_of_one_tenant_do_not_queue_on_one_row(database_url):
    """Runs in different stripes take different rollup rows: a writer waits for another
    only when both runs land in the same stripe."""
    tenant = make_tenant(database_url)
    with session(database_url) as conn:
        first, second, same = conn.execute(
            "SELECT (array_agg(id) FILTER (WHERE hashtext(id) & 7 = 0))[1], "
            "(array_agg(id) FILTER (WHERE hashtext(id) & 7 = 1))[1], "
            "(array_agg(id) FILTER (WHERE hashtext(id) & 7 = 0))[2] "
            "FROM (SELECT %s || '-run-' || i AS id FROM generate_series(1, 200) i) ids", (tenant,)).fetchone()
    with psycopg.connect(database_url) as a, psycopg.connect(database_url) as b:
        insert_run(a, tenant, run_id=first)  # a's transaction stays open on its stripe's row
        b.execute("SET lock_timeout = '200ms'")
        insert_run(b, tenant, run_id=second)
        b.commit()
        with pytest.raises(psycopg.errors.LockNotAvailable):
            insert_run(b, tenant, run_id=same)
        b.rollback()
        a.commit()


@pytest.fixture(scope="module")
def spend_data(database_url):
    """One tenant's runs over three days, at random instants, in every scope."""
    rng = random.Random(7)
    tenant = make_tenant(database_url)
    rows = []
    with session(database_url) as conn:
        for _ in range(300):
            run = {"project_id": rng.choice(PROJECTS), "agent_id": rng.choice(AGENTS),
                   "provider": rng.choice(PROVIDERS), "cost_cents": rng.randrange(1000),
                   "created_at": MIDNIGHT + timedelta(microseconds=rng.randrange(-DAY_US, 2 * DAY_US))}
            insert_run(conn, tenant, **run)
            rows.append(run)
    engine = create_engine(sync_url(database_url), connect_args={"options": "-c role=aos_overview"})
    yield tenant, rows, engine
    engine.dispose()


windows = st.builds(
    lambda scope, scope_id, start, end: store.SpendWindow(scope, "" if scope == "TENANT" else scope_id, start, end),
    st.sampled_from(list(SCOPES)), st.sampled_from(["p1", "a2", "openai", "nobody"]),
    st.one_of(st.none(), instants), st.one_of(st.none(), instants))


@HYPOTHESIS
@given(windows=st.lists(windows, max_size=6))
def test_spend_is_exact_for_any_window(spend_data, windows):
    tenant, rows, engine = spend_data
    with engine.begin() as conn:
        conn.execute(text("SELECT set_config('aos.tenant_id', :t, true)"), {"t": tenant})
        spent = store.spend_cents(conn, tenant, windows)
    assert spent == [sum(r["cost_cents"] for r in rows
                         if (w.scope == "TENANT" or r[SCOPES[w.scope]] == w.scope_id)
                         and (w.start is None or r["created_at"] >= w.start)
                         and (w.end is None or r["created_at"] < w.end)) for w in windows]


def test_truncate_empties_the_rollup(databases):
    url = databases.create()
    tenant = make_tenant(url)
    with session(url) as conn:
        insert_run(conn, tenant)
        conn.execute("TRUNCATE worker_runs")
        assert conn.execute("SELECT count(*) FROM worker_run_cost_daily").fetchone()[0] == 0
        insert_run(conn, tenant, cost_cents=7)
        assert rollup(conn, [tenant]) == expected_rollup(conn, [tenant])


def test_downgrade_to_the_row_trigger_keeps_the_same_sums(databases):
    """0005 down to 0004's row trigger and up again: both keep the rollup exact."""
    url = databases.create()
    tenant = make_tenant(url)
    with session(url) as conn:
        write_many(conn, "insert_many", [tenant], 0, 200, 3)
    migrate.downgrade(url, "0004_worker_run_cost_rollup")
    with session(url) as conn:
        triggers = {r[0] for r in conn.execute("SELECT tgname FROM pg_trigger WHERE tgrelid = 'worker_runs'::regclass "
                                               "AND NOT tgisinternal")}
        assert triggers == {"worker_runs_cost_rollup", "worker_runs_cost_truncate"}
        write_many(conn, "move", [tenant], 1, 1)
        insert_run(conn, tenant, project_id="p2", cost_cents=5)
        assert rollup(conn, [tenant]) == expected_rollup(conn, [tenant])
    migrate.upgrade(url)
    with session(url) as conn:
        write_many(conn, "delete_many", [tenant], 2)
        write_many(conn, "insert_many", [tenant], 0, 50, 4)
        assert rollup(conn, [tenant]) == expected_rollup(conn, [tenant])


def test_migration_backfills_then_downgrades_and_upgrades_again(databases):
    url = databases.create(migrated=False)
    migrate.upgrade(url, "0003_export_artifacts")
    tenant = make_tenant(url)
    with session(url) as conn:
        for day in range(3):
            insert_run(conn, tenant, project_id="p1", cost_cents=10 + day, created_at=MIDNIGHT + timedelta(days=day))
    migrate.upgrade(url)
    with session(url) as conn:
        assert rollup(conn, [tenant]) == expected_rollup(conn, [tenant])
        assert len(rollup(conn, [tenant])) == 6
    migrate.downgrade(url, "0003_export_artifacts")
    with session(url) as conn:
        assert conn.execute("SELECT to_regclass('worker_run_cost_daily')").fetchone()[0] is None
        insert_run(conn, tenant, agent_id="a1", cost_cents=1)  # no trigger left behind
    migrate.upgrade(url)
    with session(url) as conn:  # the backfill counts the run written meanwhile
        assert rollup(conn, [tenant]) == expected_rollup(conn, [tenant])
        assert len(rollup(conn, [tenant])) == 7
