"""The recording library against a real database: writers, chains, the verifier, scenarios."""
from __future__ import annotations

import importlib.util
import itertools
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import text

from aos_recording import bulk, hashing, scenarios, verify, vocabulary
from aos_recording.sources import SourceWriter
from aos_recording.store import load_trace
from aos_recording.writers import (
    AuditLedgerWriter,
    EvidenceConflict,
    LlmRunRecordWriter,
    Producer,
    SystemRecordWriter,
    TraceRecorder,
)
from tests.db.sessions import ledger_report
from tests.logins import login_url

pytestmark = pytest.mark.db
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def producer(database_url):
    p = Producer(login_url(database_url, "producer"))
    yield p
    p.close()


def new_tenant(producer, name: str) -> str:
    import uuid

    tenant = f"{name}-{uuid.uuid4().hex[:8]}"
    with producer.transaction(tenant) as conn:
        SourceWriter(conn).ensure_tenant(tenant_id=tenant, name=name, created_at=T0)
    return tenant


def append(producer, tenant, n, *, event="LimitUpdated", start=0):
    entries = []
    with producer.transaction(tenant) as conn:
        writer = AuditLedgerWriter(conn)
        for i in range(start, start + n):
            entries.append(writer.append(tenant_id=tenant, event_type=event, entity_type="LIMIT",
                                         entity_id=f"lim-{i % 3}", actor_type="HUMAN", actor_id=f"user-{i}",
                                         action_reason=f"change {i}", after_state={"max_value": i * 100},
                                         created_at=T0 + timedelta(seconds=i)))
    return entries


def test_migration_checks_and_contract_vocabularies_agree():
    spec = importlib.util.spec_from_file_location(
        "m0001", Path(__file__).resolve().parents[2] / "migrations" / "versions" / "0001_foundation.py")
    m = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(m)
    pairs = {"AUDIT_EVENTS": "AUDIT_EVENTS", "AUDIT_ENTITIES": "AUDIT_ENTITIES", "ACTOR_TYPES": "ACTOR_TYPES",
             "SEVERITIES": "INCIDENT_SEVERITIES", "INCIDENT_STATES": "INCIDENT_STATES",
             "PROPOSAL_STATUSES": "PROPOSAL_STATUSES", "LIMIT_CATEGORIES": "LIMIT_CATEGORIES",
             "LIMIT_SCOPES": "LIMIT_SCOPES", "RESET_PERIODS": "RESET_PERIODS", "LIMIT_STATUSES": "LIMIT_STATUSES",
             "BREACH_TYPES": "BREACH_TYPES", "WORKER_RUN_STATUSES": "WORKER_RUN_STATUSES",
             "LLM_RUN_STATUSES": "LLM_RUN_STATUSES", "EXECUTOR_TYPES": "EXECUTOR_TYPES", "OUTCOMES": "OUTCOMES",
             "TRACE_STATUSES": "TRACE_STATUSES", "STEP_TYPES": "STEP_TYPES", "STEP_LEVELS": "STEP_LEVELS",
             "SYSTEM_SEVERITIES": "SYSTEM_SEVERITIES", "SYSTEM_EVENTS": "SYSTEM_EVENT_TYPES",
             "CAUSED_BY": "CAUSED_BY", "EXPORT_SCOPES": "EXPORT_SCOPES", "BUNDLE_TYPES": "BUNDLE_TYPES",
             "EXPORT_FORMATS": "EXPORT_FORMATS"}
    for migration_name, vocabulary_name in pairs.items():
        frozen = getattr(m, migration_name)
        # widened since, by 0014 (ExportVerified), 0022 (retention), 0023 (erasure) and 0027 (rows removed)
        if migration_name == "AUDIT_EVENTS":
            frozen = _migration("0027_retention_rows").AUDIT_EVENTS
            assert _migration("0022_retention_policies").AUDIT_EVENTS == _migration("0023_erasure").PREVIOUS_EVENTS
            assert _migration("0023_erasure").AUDIT_EVENTS == _migration("0027_retention_rows").PREVIOUS_EVENTS
        # widened since, by 0019 (access resources), 0022 (retention) and 0023 (DATA_SUBJECT)
        if migration_name == "AUDIT_ENTITIES":
            frozen = _migration("0023_erasure").ENTITIES
            assert _migration("0022_retention_policies").ENTITIES == _migration("0023_erasure").PREVIOUS_ENTITIES
        assert set(frozen) == getattr(vocabulary, vocabulary_name), migration_name


def _migration(name: str):
    spec = importlib.util.spec_from_file_location(
        name, Path(__file__).resolve().parents[2] / "migrations" / "versions" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ledger_writer_appends_a_valid_chain(producer, database_url):
    tenant = new_tenant(producer, "ledger")
    entries = append(producer, tenant, 5)
    assert [e.seq for e in entries] == [1, 2, 3, 4, 5]
    assert entries[0].prev_hash == hashing.GENESIS
    assert all(b.prev_hash == a.chain_hash for a, b in itertools.pairwise(entries))
    report = ledger_report(database_url, tenant)
    assert report.ok and report.checked == 5 and report.head_hash == entries[-1].chain_hash


def test_non_canonical_events_never_reach_the_database(producer):
    tenant = new_tenant(producer, "strict")
    with producer.transaction(tenant) as conn, pytest.raises(ValueError, match="event_type"):
        AuditLedgerWriter(conn).append(tenant_id=tenant, event_type="PolicyDeleted", entity_type="POLICY_RULE",
                                       entity_id="p", actor_type="HUMAN")


def test_new_steps_in_one_statement_are_add_steps_and_refuse_a_trace_that_has_steps(producer):
    tenant = new_tenant(producer, "steps")
    steps = [{"step_type": kind, "timestamp": T0 + timedelta(seconds=i), "input_data": {"i": i}, "tokens": 10,
              "metadata": {"span_id": f"s{i}"}} for i, kind in enumerate(["input", "llm_call", "output"])]
    with producer.transaction(tenant) as conn:
        rec = TraceRecorder(conn)
        one = rec.create_trace(tenant_id=tenant, run_id="run-many", started_at=T0)
        other = rec.create_trace(tenant_id=tenant, run_id="run-single", started_at=T0)
        many = rec.add_new_steps(tenant_id=tenant, trace_id=one, steps=steps)
        single = [rec.add_step(tenant_id=tenant, trace_id=other, step_index=i, **step) for i, step in enumerate(steps)]
        assert many == single  # the same SPEC §5 hashes
        assert rec.complete_trace(trace_id=one) == rec.complete_trace(trace_id=other) == \
            hashing.trace_content_hash(many)
        row, stored = load_trace(conn, one)
        assert (row["step_count"], row["total_tokens"]) == (3, 30)
        assert [s["step_index"] for s in stored] == [0, 1, 2]
    with producer.transaction(tenant) as conn:
        rec = TraceRecorder(conn)
        again = rec.create_trace(tenant_id=tenant, run_id="run-again", started_at=T0)
        rec.add_step(tenant_id=tenant, trace_id=again, step_index=0, **steps[0])
        with pytest.raises(EvidenceConflict):  # not a new trace's steps: one is there (the trigger skips it)
            rec.add_new_steps(tenant_id=tenant, trace_id=again, steps=steps)


def test_trace_lifecycle_idempotency_and_conflicts(producer):
    tenant = new_tenant(producer, "trace")
    with producer.transaction(tenant) as conn:
        rec = TraceRecorder(conn)
        trace = rec.create_trace(tenant_id=tenant, run_id="run-1", started_at=T0)
        assert rec.create_trace(tenant_id=tenant, run_id="run-1", trace_id=trace, started_at=T0) == trace
        hashes = [rec.add_step(tenant_id=tenant, trace_id=trace, step_index=i, step_type=kind,
                               timestamp=T0 + timedelta(seconds=i), input_data={"i": i}, tokens=10)
                  for i, kind in enumerate(["input", "llm_call", "policy_check"])]
        # A retry of the same step is a no-op; different content under the same index is refused.
        assert rec.add_step(tenant_id=tenant, trace_id=trace, step_index=1, step_type="llm_call",
                            timestamp=T0 + timedelta(seconds=1), input_data={"i": 1}, tokens=10) == hashes[1]
        with pytest.raises(EvidenceConflict):
            rec.add_step(tenant_id=tenant, trace_id=trace, step_index=1, step_type="llm_call",
                         timestamp=T0 + timedelta(seconds=1), input_data={"i": "forged"})
    with producer.transaction(tenant) as conn:
        rec = TraceRecorder(conn)
        rec.mark_violation(trace_id=trace, step_index=2, policy_id="pol-1", reason="over budget")
        rec.mark_violation(trace_id=trace, step_index=2, policy_id="pol-1", reason="over budget")  # idempotent
        with pytest.raises(EvidenceConflict):
            rec.mark_violation(trace_id=trace, step_index=1, policy_id="pol-2", reason="other")
    with producer.transaction(tenant) as conn:
        sealed = TraceRecorder(conn).complete_trace(trace_id=trace, status="aborted", completed_at=T0 + timedelta(1))
        assert sealed == hashing.trace_content_hash(hashes)
        row, steps = load_trace(conn, trace)
        assert row["violation_timestamp"] == T0 + timedelta(seconds=2)
        assert (row["step_count"], row["total_tokens"], row["status"]) == (3, 30, "aborted")
        assert verify.verify_trace(row, steps) == []
    with producer.transaction(tenant) as conn, pytest.raises(EvidenceConflict):
        TraceRecorder(conn).complete_trace(trace_id=trace)


def test_run_and_system_records_are_written_once(producer):
    tenant = new_tenant(producer, "runs")
    args = dict(tenant_id=tenant, run_id="run-9", provider="openai", model="gpt-4o", execution_status="succeeded",
                started_at=T0, completed_at=T0 + timedelta(seconds=5), cost_cents=12)
    with producer.transaction(tenant) as conn:
        first = LlmRunRecordWriter(conn).write(**args)
        assert LlmRunRecordWriter(conn).write(**args) == first
        with pytest.raises(EvidenceConflict):
            LlmRunRecordWriter(conn).write(**{**args, "cost_cents": 1})
        record = SystemRecordWriter(conn).write(tenant_id=tenant, component="api", event_type="ERROR",
                                                severity="ERROR", summary="boom", created_at=T0, record_id="sys-x-1")
        assert SystemRecordWriter(conn).write(tenant_id=tenant, component="api", event_type="ERROR",
                                              severity="ERROR", summary="boom", created_at=T0,
                                              record_id="sys-x-1") == record
        stored = conn.execute(text("SELECT content_hash FROM llm_run_records WHERE id = :id"), {"id": first}).scalar()
        assert bytes(stored) == hashing.llm_run_content_hash(
            {**args, "id": first, "trace_id": None, "agent_id": None, "project_id": None, "executor_type": "LLM",
             "outcome": None, "termination_reason": None, "input_tokens": 0, "output_tokens": 0, "source": "worker",
             "created_at": args["completed_at"]})


def test_concurrent_appenders_leave_a_gapless_valid_chain(database_url, producer):
    """Eight connections appending to one tenant at once."""
    tenant = new_tenant(producer, "busy")
    writers = [Producer(login_url(database_url, "producer"), pool_size=1) for _ in range(8)]
    errors = []

    def work(p, k):
        try:
            for i in range(25):
                append(p, tenant, 1, start=k * 100 + i)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(p, k)) for k, p in enumerate(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for p in writers:
        p.close()
    assert not errors
    report = ledger_report(database_url, tenant)
    assert report.ok and report.checked == 200 and report.last_seq == 200


@pytest.fixture(scope="module")
def url(databases):
    """A database of its own: these tests switch triggers off."""
    return databases.create()


class TestTampering:
    """A superuser changes the ledger behind the triggers' back; the verifier finds and locates it."""

    @pytest.fixture()
    def chain(self, url):
        p = Producer(login_url(url, "producer"))
        tenant = new_tenant(p, "victim")
        entries = append(p, tenant, 10)
        p.close()
        return tenant, entries

    @staticmethod
    def behind_the_triggers(url, sql, params, *more):
        with psycopg.connect(url, autocommit=True) as conn, conn.transaction():
            conn.execute("ALTER TABLE audit_ledger DISABLE TRIGGER audit_ledger_append_only")
            for statement in (sql, *more):
                conn.execute(statement, params)
            conn.execute("ALTER TABLE audit_ledger ENABLE ALWAYS TRIGGER audit_ledger_append_only")

    def kinds(self, report):
        return [(a.seq, a.kind) for a in report.anomalies]

    def test_one_changed_field(self, url, chain):
        tenant, _ = chain
        self.behind_the_triggers(url, "UPDATE audit_ledger SET actor_id = 'someone-else' "
                                      "WHERE tenant_id = %s AND seq = 4", (tenant,))
        assert self.kinds(ledger_report(url, tenant)) == [(4, verify.CONTENT_MISMATCH)]

    def test_deleted_middle_entry(self, url, chain):
        tenant, _ = chain
        self.behind_the_triggers(url, "DELETE FROM audit_ledger WHERE tenant_id = %s AND seq = 6", (tenant,))
        assert self.kinds(ledger_report(url, tenant)) == [(7, verify.SEQUENCE_GAP), (7, verify.BROKEN_LINK)]

    def test_deleted_tail_against_a_held_checkpoint(self, url, chain):
        tenant, entries = chain
        held = verify.Checkpoint(10, entries[-1].chain_hash)
        assert ledger_report(url, tenant, checkpoint=held).ok
        self.behind_the_triggers(url, "DELETE FROM audit_ledger WHERE tenant_id = %s AND seq > 7", (tenant,))
        assert self.kinds(ledger_report(url, tenant, checkpoint=held)) == [(10, verify.TRUNCATION)]

    def test_swapped_entries(self, url, chain):
        tenant, _ = chain
        self.behind_the_triggers(url, "UPDATE audit_ledger SET seq = 1000 WHERE tenant_id = %s AND seq = 3", (tenant,),
                                 "UPDATE audit_ledger SET seq = 3 WHERE tenant_id = %s AND seq = 8",
                                 "UPDATE audit_ledger SET seq = 8 WHERE tenant_id = %s AND seq = 1000")
        found = self.kinds(ledger_report(url, tenant))
        assert {seq for seq, _ in found} == {3, 4, 8, 9}
        assert (3, verify.BROKEN_LINK) in found and (8, verify.BROKEN_LINK) in found

    def test_range_verification(self, url, chain):
        tenant, _ = chain
        self.behind_the_triggers(url, "UPDATE audit_ledger SET action_reason = 'x' "
                                      "WHERE tenant_id = %s AND seq = 9", (tenant,))
        assert ledger_report(url, tenant, from_seq=2, to_seq=8).ok
        assert self.kinds(ledger_report(url, tenant, from_seq=5)) == [(9, verify.CONTENT_MISMATCH)]


def test_scenarios_load_for_two_tenants(databases):
    url = databases.create()
    p = Producer(login_url(url, "producer"))
    base = datetime(2026, 11, 1, 12, 0, tzinfo=timezone.utc)
    loaded = scenarios.load_demo(p, base=base)
    assert loaded == 2 * len(scenarios.demo_scenarios()) >= 8
    assert scenarios.load_demo(p, base=base) == 0  # never twice
    for tenant in scenarios.DEMO_TENANTS:
        with p.transaction(tenant) as conn:
            counts = dict(conn.execute(text(
                "SELECT 'ledger', count(*) FROM audit_ledger UNION ALL SELECT 'traces', count(*) FROM aos_traces "
                "UNION ALL SELECT 'runs', count(*) FROM llm_run_records UNION ALL "
                "SELECT 'synthetic', count(*) FROM audit_ledger WHERE is_synthetic "
                "AND synthetic_scenario_id LIKE 'SDSR-%'")).all())
            assert counts["ledger"] == counts["synthetic"] >= 15 and counts["traces"] == 2 and counts["runs"] == 2
            assert verify.verify_ledger(conn, tenant).ok
            for (trace_id,) in conn.execute(text("SELECT trace_id FROM aos_traces")).all():
                row, steps = load_trace(conn, trace_id)
                assert verify.verify_trace(row, steps) == []
            violated = conn.execute(text(
                "SELECT violation_step_index, violation_policy_id, status FROM aos_traces "
                "WHERE trace_id = :t"), {"t": f"{tenant}.trace-support-103"}).one()
            assert tuple(violated) == (3, "pol-budget-guard", "aborted")
            approved = conn.execute(text("SELECT status, reviewed_by FROM policy_proposals WHERE id = :p"),
                                    {"p": f"{tenant}.prop-pii-strict"}).one()
            assert tuple(approved) == ("approved", "user-policy-owner")
            system_wide = conn.execute(text("SELECT count(*) FROM platform_records")).scalar()
            assert system_wide == 4  # written once, seen by both tenants
    p.close()


def test_bulk_loader_writes_valid_chains_and_100k_entries_verify(databases):
    url = databases.create()
    rates = bulk.load(url, bulk.Volume(tenants=2, ledger=100_000, traces=50, steps=5, system=500))
    assert set(rates) == {"audit_ledger", "aos_trace_steps", "system_records"}
    for tenant in bulk.tenant_ids(2):
        report = ledger_report(url, tenant)
        assert report.ok and report.checked == 50_000 and report.last_seq == 50_000
    p = Producer(login_url(url, "producer"))
    with p.transaction("bulk-00001") as conn:
        row, steps = load_trace(conn, "bulk-00001.trace-1")
        assert len(steps) == 5 and verify.verify_trace(row, steps) == []
    p.close()


def test_export_chain_verifies_and_a_changed_manifest_is_located(url):
    import json as _json

    p = Producer(login_url(url, "producer"))
    tenant = new_tenant(p, "exports")
    p.close()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET ROLE aos_export")
        conn.execute("SELECT set_config('aos.tenant_id', %s, false)", (tenant,))
        for i in range(3):
            manifest = {"export_id": f"exp-{i}", "tenant_id": tenant, "checksum": "00" * 32}
            conn.execute(
                "INSERT INTO log_exports (id, tenant_id, scope, bundle_type, format, content_type, filename, "
                "size_bytes, checksum, manifest, dsse_envelope, signing_key_id, redaction, requested_by_type, "
                "requested_by_id, created_at, content_hash) VALUES (%s, %s, 'AUDIT_SLICE', 'EVIDENCE', 'JSON', "
                "'application/json', 'x.json', 1, %s, %s, '{}', 'k', '{}', 'HUMAN', 'u', now(), %s)",
                (f"{tenant}.exp-{i}", tenant, bytes(32), _json.dumps(manifest), hashing.manifest_hash(manifest)))

    def report():
        q = Producer(login_url(url, "producer"))
        try:
            with q.transaction(tenant) as conn:
                return verify.verify_exports(conn, tenant)
        finally:
            q.close()

    assert report().ok and report().checked == 3
    with psycopg.connect(url, autocommit=True) as conn, conn.transaction():
        conn.execute("ALTER TABLE log_exports DISABLE TRIGGER log_exports_append_only")
        conn.execute("UPDATE log_exports SET manifest = jsonb_set(manifest, '{checksum}', '\"ff\"') "
                     "WHERE tenant_id = %s AND seq = 2", (tenant,))
        conn.execute("ALTER TABLE log_exports ENABLE ALWAYS TRIGGER log_exports_append_only")
    assert [(a.seq, a.kind) for a in report().anomalies] == [(2, verify.CONTENT_MISMATCH)]
