"""services.ingest.store.record_runs, set-based (issue #21): a batch of runs written in one
statement per table answers each run as the one-run-at-a-time path (``_record_run``, each in
its savepoint) answers it — created, a retry, or refused with the same message — and stores the
same rows with the same hashes; a row written behind the batch's look-up sends the batch back
to that path. As the Ingest login, in its tenant."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import create_engine, text

from aos_runtime.db import sync_url
from services.ingest import store
from tests.db.sessions import make_tenant, session
from tests.logins import login_url

pytestmark = pytest.mark.db
START = datetime(2026, 12, 1, 9, tzinfo=timezone.utc)


def run(run_id: str, *, trace_id: str | None = None, steps: int = 3, model: str = "gpt-4o", odd: bool = False):
    fields = {"run_id": run_id, "trace_id": trace_id or run_id, "provider": "openai", "model": model,
              "execution_status": "succeeded", "executor_type": "LLM", "outcome": None,
              "termination_reason": None, "input_tokens": 10, "output_tokens": 5, "cost_cents": 2,
              "source": "ingest", "started_at": START, "completed_at": START + timedelta(seconds=9),
              "agent_id": "agent-1", "project_id": None}
    if odd:  # run-level values as a batch writes them apart from the others (store._json_rows)
        fields |= {"execution_status": "failed", "executor_type": "AGENT", "outcome": "failure",
                   "termination_reason": 'a "q" \\ ☃ 😀\n', "input_tokens": 2**53 - 1, "output_tokens": 0,
                   "cost_cents": 2**40 + 1, "project_id": "p-ü", "agent_id": None,
                   "started_at": datetime(2026, 12, 1, 10, 0, 0, 123456, tzinfo=timezone(timedelta(hours=2))),
                   "completed_at": datetime(2026, 12, 1, 10, 0, 1, tzinfo=timezone(timedelta(hours=-3, minutes=-30)))}
    return fields, [{"step_type": "llm_call", "timestamp": START + timedelta(seconds=i), "input_data": {"i": i},
                     "output_data": {"text": f"out {i}"}, "metadata": {"span_id": f"s{i}"}, "level": "info",
                     "source": "ingest", "tokens": 3, "cost_cents": 1, "duration_ms": 7} | ODD[i % len(ODD)]
                    for i in range(steps)]


# jsonb columns as a batch writes them apart from the others (store._documents): null columns,
# floats, whole numbers, non-ASCII, quotes and backslashes, nesting — compared as jsonb text.
ODD = [{}, {"output_data": None},
       {"metadata": None, "input_data": {"p": 0.25, "w": 2.0, "n": [1, 1.5, None, True], "s": 'a "q" \\ ☃ 😀'}},
       {"input_data": None, "output_data": None, "metadata": None},
       {"metadata": {"attributes": {"k": {"deep": [{"x": -0.5}]}}, "at": START}},
       {"input_data": {"f": [1e16, 1e-7, 1.7976931348623157e308, 5e-324, 0.1, -0.0, 123456789.12345679],
                       "i": [2**53 - 1, -(2**53 - 1), 0], "u": "\u2028 \x7f é \U0010ffff"}}]


def record(database_url, tenant, runs, *, one_by_one=False, before=None):
    engine = create_engine(sync_url(login_url(database_url, "ingest")))
    try:
        with engine.begin() as conn:
            conn.execute(text("SELECT set_config('aos.tenant_id', :t, true)"), {"t": tenant})
            if before is not None:
                before(conn)
            if not one_by_one:
                return store.record_runs(conn, tenant, runs)
            outcomes = []
            for fields, steps in runs:
                try:
                    with conn.begin_nested():
                        outcomes.append(store._record_run(conn, tenant, fields, steps))
                except store.EvidenceConflict as exc:
                    outcomes.append(store.RunOutcome(created=False, conflict=str(exc)))
            return outcomes
    finally:
        engine.dispose()


def rows(database_url, tenant):
    """Every stored row of the tenant's runs, without the columns the database stamps."""
    with session(database_url) as conn:
        return {
            "runs": conn.execute("SELECT id, run_id, trace_id, model, content_hash, agent_id, project_id, provider, "
                                 "execution_status, executor_type, outcome, termination_reason, input_tokens, "
                                 "output_tokens, cost_cents, source, started_at::text, completed_at::text, "
                                 "created_at::text, is_synthetic, synthetic_scenario_id FROM llm_run_records "
                                 "WHERE tenant_id = %s ORDER BY run_id", (tenant,)).fetchall(),
            "activity": conn.execute("SELECT id, status, cost_cents, input_tokens, output_tokens, model, project_id, "
                                     "agent_id, provider, created_at::text, started_at::text, completed_at::text, "
                                     "is_synthetic, synthetic_scenario_id "
                                     "FROM worker_runs WHERE tenant_id = %s ORDER BY id", (tenant,)).fetchall(),
            "traces": conn.execute("SELECT trace_id, run_id, status, step_count, total_tokens, total_cost_cents, "
                                   "total_duration_ms, content_hash, completed_at::text, agent_id, "
                                   "started_at::text, termination_reason, policy_snapshot_id, "
                                   "policy_snapshot::text, is_synthetic, synthetic_scenario_id FROM aos_traces "
                                   "WHERE tenant_id = %s ORDER BY trace_id", (tenant,)).fetchall(),
            "steps": conn.execute("SELECT trace_id, step_index, step_type, input_data::text, output_data::text, "
                                  "metadata::text, tokens, cost_cents, duration_ms, level, source, \"timestamp\", "
                                  "content_hash FROM aos_trace_steps WHERE tenant_id = %s "
                                  "ORDER BY trace_id, step_index", (tenant,)).fetchall()}


def scenario(database_url, one_by_one: bool):
    """The same history in a new tenant: a first batch, then a batch of every kind of outcome."""
    tenant = make_tenant(database_url)
    first = record(database_url, tenant, [run("r-old"), run("r-other-trace", trace_id="t-taken")],
                   one_by_one=one_by_one)
    with session(database_url, "aos_producer", tenant) as conn:  # an activity row under a run's id
        conn.execute("INSERT INTO worker_runs (id, tenant_id, status, created_at) VALUES ('r-busy', %s, "
                     "'completed', %s)", (tenant, START))
    second = record(database_url, tenant, [
        run("r-new-1"),
        run("r-old"),                               # a retry: the same run
        run("r-old", model="gpt-5"),                # a retry with other run fields: a conflict
        run("r-new-2", steps=0),                    # no steps
        run("r-uses-taken", trace_id="t-taken"),    # its trace is another run's
        run("r-busy"),                              # its id is an activity record's
        run("r-new-1"),                             # twice in the batch: the first's retry
        run("r-new-3", steps=40),
        run("r-new-3", steps=2),                    # twice, other steps: a conflict
        run("r-odd", steps=6, odd=True),            # every run-level column's odd values
    ], one_by_one=one_by_one)
    return tenant, first, second


def test_a_batch_answers_and_stores_what_the_one_by_one_path_does(database_url):
    batched_tenant, batched_first, batched = scenario(database_url, one_by_one=False)
    single_tenant, single_first, single = scenario(database_url, one_by_one=True)

    def comparable(outcomes, tenant):  # the tenant is in the run hash and in the messages
        return [(o.created, o.trace_hash, o.step_hashes, o.conflict and o.conflict.replace(tenant, "T"),
                 o.run_hash is None) for o in outcomes]
    assert comparable(batched_first, batched_tenant) == comparable(single_first, single_tenant)
    assert comparable(batched, batched_tenant) == comparable(single, single_tenant)
    assert [(o.created, o.conflict is None) for o in batched] == [
        (True, True), (False, True), (False, False), (True, True), (False, False), (False, False), (False, True),
        (True, True), (False, False), (True, True)]
    assert "already recorded with different content" in batched[2].conflict
    assert batched[4].conflict == "trace 't-taken': already recorded for another run"
    assert batched[5].conflict == "run 'r-busy': its id is taken by an activity record"
    assert batched[8].conflict == "run 'r-new-3': already recorded with other steps"
    a, b = rows(database_url, batched_tenant), rows(database_url, single_tenant)

    for table in ("activity", "traces", "steps"):
        assert a[table] == b[table], table
    # id and content_hash depend on the tenant
    assert [r[1:4] + r[5:] for r in a["runs"]] == [r[1:4] + r[5:] for r in b["runs"]]
    assert len(a["steps"]) == 3 + 3 + 3 + 40 + 6 and {r[2] for r in a["traces"]} == {"completed", "failed"}


def test_a_row_written_behind_the_look_up_sends_the_batch_one_by_one(database_url, monkeypatch):
    """A writer outside the run lock (the suite's own tools) adds a run between the batch's
    look-up and its insert: the batch is rolled back to its savepoint and each run goes through
    ``_record_run``, which finds it — nothing is written twice, the others are recorded."""
    tenant = make_tenant(database_url)
    looked_up = store._settle_known

    def settle_then_race(conn, tenant_id, prepared, indices, outcomes):
        new = looked_up(conn, tenant_id, prepared, indices, outcomes)
        fields, steps = run("r-raced")
        store._record_run(conn, tenant_id, fields, steps)  # as if another writer had just committed it
        return new

    monkeypatch.setattr(store, "_settle_known", settle_then_race)  # a real row, written at that moment
    outcomes = record(database_url, tenant, [run("r-a"), run("r-raced"), run("r-b")])
    assert [(o.created, o.conflict) for o in outcomes] == [(True, None), (False, None), (True, None)]
    stored = rows(database_url, tenant)
    assert [r[1] for r in stored["runs"]] == ["r-a", "r-b", "r-raced"]
    assert len(stored["steps"]) == 9
