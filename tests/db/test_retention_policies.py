"""Retention policies and legal holds applied by the maintenance path (aos_recording.retention
apply_policies, migration 0022), with the clock moved: a shared monthly partition goes only
when every tenant with rows in it lets it go and no hold covers a row of it; chains verify
from the anchor after a drop; each drop is an entry in each affected tenant's ledger."""
from __future__ import annotations

from datetime import date, datetime, timezone

import psycopg
import pytest

from aos_recording import retention, verify
from aos_recording.writers import AuditLedgerWriter, Producer, SystemRecordWriter
from tests.db.retention_support import (
    apply,
    at,
    drop_entries,
    exists,
    finished_trace,
    place_hold,
    release_hold,
    set_policy,
)
from tests.db.sessions import append_entries, ledger_report, session
from tests.logins import login_url

pytestmark = pytest.mark.db

JAN, FEB, MAR = (datetime(2025, m, 10, tzinfo=timezone.utc) for m in (1, 2, 3))
A, B, C = "tenant-ret-a", "tenant-ret-b", "tenant-ret-c"


@pytest.fixture
def db(databases):
    """A fresh database with months January-April 2025 and the ledgers of A (January to
    March, 5 a month; its January entries correlated to run-x) and B (January), checkpointed."""
    url = databases.create()
    with session(url) as conn:
        retention.ensure_partitions(conn, first=date(2025, 1, 1), through=date(2025, 4, 1))
    append_entries(url, A, [JAN], 5)
    producer = Producer(login_url(url, "producer"))
    try:
        with producer.transaction(A) as conn:  # one entry of A about run-x, in January (seq 6)
            AuditLedgerWriter(conn).append(tenant_id=A, event_type="LimitBreached", entity_type="LIMIT",
                                           entity_id="lim-1", actor_type="SYSTEM", actor_id="enforcer",
                                           correlation_id="run-x", created_at=JAN)
    finally:
        producer.close()
    append_entries(url, A, [FEB, MAR], 5)
    append_entries(url, B, [JAN], 3)
    append_entries(url, C, [MAR], 1)
    with session(url) as conn:
        retention.record_checkpoints(conn)
    return url


def test_default_policy_keeps_the_ledger_a_year_and_a_tenants_longer_policy_keeps_the_shared_month(db):
    # June 2025: the default 365 days keep everything.
    kept = apply(db, at(2025, 6))["audit_ledger"]
    assert kept.dropped == [] and kept.kept == "audit_ledger_p2025_01" and "365 days" in kept.reason
    # B (rows in January only) keeps its ledger 7 years as SOC2: January stays for A too.
    set_policy(db, B, "AUDIT_LEDGER", 7 * 365, "SOC2")
    kept = apply(db, at(2026, 3, 15))["audit_ledger"]
    assert kept.dropped == [] and f"tenant {B}'s AUDIT_LEDGER policy keeps it 2555 days" in kept.reason
    assert exists(db, "audit_ledger_p2025_01")
    # A dry run with B back at a year says what would go and drops nothing.
    set_policy(db, B, "AUDIT_LEDGER", 365)
    dry = apply(db, at(2026, 3, 15), dry_run=True)["audit_ledger"]
    assert dry.dropped == ["audit_ledger_p2025_01", "audit_ledger_p2025_02"] and exists(db, "audit_ledger_p2025_01")
    assert drop_entries(db, A) == []


def test_a_drop_is_recorded_in_each_tenants_ledger_and_chains_verify_from_the_anchor(db):
    outcome = apply(db, at(2026, 3, 15))["audit_ledger"]  # January and February expired, March not yet
    assert outcome.reason is None or "refused" not in outcome.reason, outcome.reason
    assert outcome.dropped == ["audit_ledger_p2025_01", "audit_ledger_p2025_02"]
    assert outcome.rows == {A: 11, B: 3} and outcome.kept == "audit_ledger_p2025_03"
    assert not exists(db, "audit_ledger_p2025_01") and exists(db, "audit_ledger_p2025_03")
    # C had no row in the dropped months: no entry in its ledger.
    assert [e for e, _ in drop_entries(db, A)] == ["audit_ledger_p2025_01", "audit_ledger_p2025_02"]
    assert [(e, s["rows_of_tenant"]) for e, s in drop_entries(db, B)] == [("audit_ledger_p2025_01", 3)]
    assert drop_entries(db, C) == []
    with session(db) as conn:
        anchor_a, anchor_b = retention.retention_anchor(conn, A), retention.retention_anchor(conn, B)
    assert anchor_a.seq == 11 and anchor_b.seq == 3
    for tenant, anchor in ((A, anchor_a), (B, anchor_b)):
        kept = ledger_report(db, tenant, anchor=anchor)
        assert kept.ok and kept.first_seq == anchor.seq + 1, (tenant, kept)
    # B's whole chain before the drop is gone: its drop entry continues from the anchor.
    assert ledger_report(db, B, anchor=anchor_b).last_seq == 4
    # Without the anchor the cut is flagged (nothing vouches for what went).
    assert ledger_report(db, A).anomalies[0].kind == verify.TRUNCATION


@pytest.mark.parametrize("scope,target", [("TENANT", ""), ("RUN", "run-x")])
def test_a_legal_hold_blocks_the_drop_until_released(db, scope, target):
    place_hold(db, A, "hold-1", scope, target)
    place_hold(db, C, "hold-c", "TENANT")  # C has no row in January or February: it blocks nothing there
    kept = apply(db, at(2026, 3, 15))["audit_ledger"]
    assert kept.dropped == [] and kept.kept == "audit_ledger_p2025_01"
    assert kept.reason.startswith(f"legal hold hold-1 of tenant {A} ({scope}")
    assert exists(db, "audit_ledger_p2025_01") and drop_entries(db, A) == []
    with session(db) as conn:  # what erasure asks
        assert [h["id"] for h in retention.legal_holds_covering(conn, A, run_id="run-x")] == ["hold-1"]
        assert retention.legal_holds_covering(conn, A, run_id="run-y") == ([] if scope == "RUN" else
                                                                            retention.legal_holds_covering(conn, A))
        with pytest.raises(retention.LegalHoldActive):
            retention.ensure_no_legal_hold(conn, A, run_id="run-x")
    release_hold(db, A, "hold-1")
    assert apply(db, at(2026, 3, 15))["audit_ledger"].dropped == ["audit_ledger_p2025_01", "audit_ledger_p2025_02"]


def test_a_run_hold_blocks_only_months_holding_that_run(db):
    place_hold(db, A, "hold-y", "RUN", "run-y")  # no entry of run-y anywhere
    assert apply(db, at(2026, 3, 15))["audit_ledger"].dropped == ["audit_ledger_p2025_01", "audit_ledger_p2025_02"]


def test_a_subject_hold_keeps_months_holding_that_subjects_records_and_a_drop_takes_their_payloads(db):
    """SUBJECT (migration 0023_erasure): a month holding a format 2 record whose payloads are kept
    under the subject stays; another subject's hold keeps nothing; once released, the drop also
    deletes the dropped records' payloads and salts (they would otherwise outlive the records)."""
    d = "tenant-ret-d"
    append_entries(db, d, [JAN], 1)
    producer = Producer(login_url(db, "producer"))
    try:
        with producer.transaction(d) as conn:
            AuditLedgerWriter(conn).append(tenant_id=d, event_type="ApiKeyCreated", entity_type="API_KEY",
                                           entity_id="key-s", actor_type="HUMAN", actor_id="admin",
                                           after_state={"owner": "Subject S"}, created_at=JAN,
                                           data_subject="subj-s")
    finally:
        producer.close()
    with session(db) as conn:
        retention.record_checkpoints(conn)
    place_hold(db, d, "hold-a-other", "SUBJECT", "subj-none")  # sorts first: it would be named if it covered
    place_hold(db, d, "hold-s", "SUBJECT", "subj-s")
    kept = apply(db, at(2026, 3, 15))["audit_ledger"]
    assert kept.dropped == [] and kept.kept == "audit_ledger_p2025_01"
    assert kept.reason.startswith(f"legal hold hold-s of tenant {d} (SUBJECT subj-s")
    release_hold(db, d, "hold-s")
    outcome = apply(db, at(2026, 3, 15))["audit_ledger"]
    assert outcome.dropped == ["audit_ledger_p2025_01", "audit_ledger_p2025_02"] and outcome.payloads_purged == 1
    with session(db) as conn:
        assert conn.execute("SELECT count(*) FROM evidence_payloads WHERE tenant_id = %s", (d,)).fetchone()[0] == 0


def test_holds_are_append_only_but_for_their_release_and_tenant_scoped(db):
    place_hold(db, A, "hold-1", "TENANT")
    with session(db, "aos_export", A) as conn:
        for statement in ("DELETE FROM legal_holds", "UPDATE legal_holds SET reason = 'other'",
                          "TRUNCATE legal_holds"):
            with pytest.raises(psycopg.Error) as err:
                conn.execute(statement)
            assert err.value.sqlstate in ("AOS01", "42501"), statement
    with session(db, "aos_export", B) as conn:  # B's session sees and releases nothing of A's
        assert conn.execute("SELECT count(*) FROM legal_holds").fetchone()[0] == 0
        assert conn.execute("UPDATE legal_holds SET released_at = now(), released_by_id = 'x', "
                            "release_reason = 'x' WHERE id = 'hold-1'").rowcount == 0
    with session(db, "aos_logs", B) as conn:  # the covering function answers for the tenant named
        assert [h["id"] for h in retention.legal_holds_covering(conn, A)] == ["hold-1"]
    release_hold(db, A, "hold-1")
    with pytest.raises(psycopg.Error) as err:  # released once
        release_hold(db, A, "hold-1")
    assert err.value.sqlstate == "AOS01"


def test_system_records_by_level_and_trace_steps_go_by_their_own_policy(db):
    producer = Producer(login_url(db, "producer"))
    try:
        with producer.transaction(A) as conn:
            SystemRecordWriter(conn).write(tenant_id=A, component="api", event_type="ERROR", severity="ERROR",
                                           summary="boom", created_at=JAN, record_id="sr-error")
            SystemRecordWriter(conn).write(tenant_id=A, component="db", event_type="ERROR", severity="CRITICAL",
                                           summary="disk", created_at=FEB, record_id="sr-critical")
    finally:
        producer.close()
    set_policy(db, A, "SYSTEM_RECORDS", 1, level="ERROR")
    finished_trace(db, A, "tr-done", JAN, 2)
    out = apply(db, at(2025, 6))
    # steps: 90 days after January's end, and the empty months after it (nobody's rows); the
    # ledger (a year) still holds January
    assert out["aos_trace_steps"].dropped == [f"aos_trace_steps_p2025_0{m}" for m in (1, 2, 3, 4)]
    assert out["aos_trace_steps"].rows == {A: 2} and exists(db, "audit_ledger_p2025_01")
    # system records: January's ERROR record at A's 1 day goes; February's CRITICAL is permanent
    assert out["system_records"].dropped == ["system_records_p2025_01"]
    assert out["system_records"].kept == "system_records_p2025_02"
    assert "SYSTEM_RECORDS/CRITICAL policy keeps it permanently" in out["system_records"].reason
    assert [e for e, s in drop_entries(db, A)] == ["aos_trace_steps_p2025_01", "system_records_p2025_01"]
    assert ledger_report(db, A).ok


def test_the_schedule_records_checkpoints_then_applies_at_its_clock_and_is_off_at_zero(db):
    append_entries(db, A, [MAR], 1)  # after the fixture's checkpoint: the round records a new one
    schedule = retention.Schedule(db, 0, clock=lambda: at(2026, 3, 15))
    assert schedule.start() is False  # 0: off, no thread
    outcome = {o.table: o for o in schedule.round()}["audit_ledger"]
    assert outcome.dropped == ["audit_ledger_p2025_01", "audit_ledger_p2025_02"]
    schedule.stop()


def test_the_apply_command_dry_run_at_a_given_time(db, monkeypatch, capsys):
    monkeypatch.setenv("DATABASE_URL", db)
    assert retention.main(["apply", "--dry-run", "--now", "2026-03-15T00:00:00Z"]) == 0
    out = capsys.readouterr().out
    assert "audit_ledger: would drop audit_ledger_p2025_01, audit_ledger_p2025_02 (14 rows of 2 tenants)" in out
    assert exists(db, "audit_ledger_p2025_01")
    with pytest.raises(SystemExit):
        retention.main(["apply", "--now", "2026-03-15"])  # no zone: refused
    assert retention.main(["apply", "--now", "2026-03-15T00:00:00Z"]) == 0
    assert "audit_ledger: dropped audit_ledger_p2025_01" in capsys.readouterr().out
    assert not exists(db, "audit_ledger_p2025_01")
