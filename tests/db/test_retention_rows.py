"""Retention row by row (migration 0027_retention_rows, aos_recording.retention): a month that one
row keeps (a permanent CRITICAL record, another tenant's longer policy, a hold) no longer keeps
every tenant's expired rows; they leave it through ``aos_retention_remove_rows`` alone, behind
the tenant's checkpoint, with their payloads, and each removal is an entry of its tenant."""
from __future__ import annotations

from datetime import date, datetime, timezone

import psycopg
import pytest
from aics_tlog import tree as aics_tree

from aos_recording import retention, tlog, verify
from aos_recording.writers import Producer, SystemRecordWriter
from tests.db.retention_support import apply, at, finished_trace, place_hold, release_hold, set_policy
from tests.db.sessions import append_entries, ledger_report, session
from tests.logins import login_url

pytestmark = pytest.mark.db

JAN, FEB = (datetime(2025, m, 10, tzinfo=timezone.utc) for m in (1, 2))
A, B, D = "tenant-rows-a", "tenant-rows-b", "tenant-rows-d"
NOW = at(2026, 3, 15)  # January's and February's rows past 365 days and every system-record level but CRITICAL


def system_record(url: str, tenant: str, severity: str, record_id: str, subject: str | None = None) -> None:
    producer = Producer(login_url(url, "producer"))
    try:
        with producer.transaction(tenant) as conn:
            SystemRecordWriter(conn).record(tenant_id=tenant, component="api", event_type="ERROR", severity=severity,
                                            summary=f"{severity} of {tenant}", details={"who": "alice@example.com"},
                                            created_at=JAN, record_id=record_id, data_subject=subject)
    finally:
        producer.close()


@pytest.fixture
def db(databases):
    """January-April 2025. A keeps its ledger 7 years (SOC2) and has a CRITICAL system record
    (permanent by default) and a DEBUG one in January; B has 3 ledger entries in January and 3 in
    February and two INFO system records in January (one format 2, its payloads under subj-b).
    Every chain checkpointed."""
    url = databases.create()
    with session(url) as conn:
        retention.ensure_partitions(conn, first=date(2025, 1, 1), through=date(2025, 4, 1))
    append_entries(url, A, [JAN], 3)
    append_entries(url, B, [JAN, FEB], 3)
    system_record(url, A, "CRITICAL", "sr-a-critical")
    system_record(url, A, "DEBUG", "sr-a-debug")
    system_record(url, B, "INFO", "sr-b-info")
    system_record(url, B, "INFO", "sr-b-info-v2", subject="subj-b")
    set_policy(url, A, "AUDIT_LEDGER", 7 * 365, "SOC2")
    with session(url) as conn:
        retention.record_checkpoints(conn)
    return url


def rows_of(url: str, table: str, tenant: str) -> list[str]:
    with session(url) as conn:
        return [r[0] for r in conn.execute(f"SELECT id FROM {table} WHERE tenant_id = %s ORDER BY 1", (tenant,))]


def removal_entries(url: str, tenant: str) -> list[tuple[str, dict]]:
    with session(url) as conn:
        return conn.execute("SELECT entity_id, after_state FROM audit_ledger WHERE tenant_id = %s "
                            "AND event_type = 'EvidenceRowsRemoved' ORDER BY seq", (tenant,)).fetchall()


def stored_tree(url: str, tenant: str):
    with session(url) as conn:
        hashes = {i: bytes(h) for i, h in conn.execute(
            "SELECT hash_index, hash FROM tlog_hashes WHERE tenant_id = %s AND log = 'ledger'", (tenant,))}
    return lambda indexes: [hashes[i] for i in indexes]


def leaf_data(url: str, tenant: str, seq: int) -> bytes:
    with session(url) as conn:
        return bytes(conn.execute("SELECT content_hash FROM audit_ledger WHERE tenant_id = %s AND seq = %s",
                                  (tenant, seq)).fetchone()[0])


def test_a_permanent_critical_record_keeps_its_row_not_the_other_tenants_rows(db):
    # Before: B's tree over its 6 entries, and an inclusion proof of its first entry.
    read = stored_tree(db, B)
    root0, first = tlog.tree_hash(6, read), leaf_data(db, B, 1)
    proof0 = tlog.prove_record(6, 0, read)

    out = apply(db, NOW)
    ledger, system = out["audit_ledger"], out["system_records"]
    # The ledger: January stays whole for A's 7 years; B's rows leave January and February.
    assert ledger.dropped == [] and ledger.kept == "audit_ledger_p2025_01" and "2555 days" in ledger.reason
    assert ledger.removed == {"audit_ledger_p2025_01": {B: 3}, "audit_ledger_p2025_02": {B: 3}}
    assert ledger.refused == []
    assert len(rows_of(db, "audit_ledger_p2025_01", A)) == 3 and rows_of(db, "audit_ledger_p2025_01", B) == []
    # System records: January stays for A's CRITICAL record; A's DEBUG and B's INFO records go,
    # B's payloads and salts with them.
    assert system.dropped == [] and system.kept == "system_records_p2025_01"
    assert "SYSTEM_RECORDS/CRITICAL policy keeps it permanently" in system.reason
    assert system.removed == {"system_records_p2025_01": {A: 1, B: 2}} and system.payloads_removed == 2
    assert rows_of(db, "system_records", A) == ["sr-a-critical"] and rows_of(db, "system_records", B) == []
    with session(db) as conn:
        assert conn.execute("SELECT count(*) FROM evidence_payloads WHERE tenant_id = %s", (B,)).fetchone()[0] == 0
    # Each removal is an entry of its tenant, with the counts (and the ledger's anchor).
    assert [(e, s["record_type"], s["rows_removed"], s.get("anchor_seq"), s.get("levels"))
            for e, s in removal_entries(db, B)] == [
        ("audit_ledger_p2025_01", "AUDIT_LEDGER", 3, 3, None),
        ("audit_ledger_p2025_02", "AUDIT_LEDGER", 3, 6, None),
        ("system_records_p2025_01", "SYSTEM_RECORDS", 2, None, {"INFO": 2})]
    assert [(e, s["rows_removed"], s["levels"]) for e, s in removal_entries(db, A)] == [
        ("system_records_p2025_01", 1, {"DEBUG": 1})]
    # Both chains verify: B's from its anchor (the last removed entry, recorded first), A's whole.
    with session(db) as conn:
        anchor_b = retention.retention_anchor(conn, B)
        assert retention.retention_anchor(conn, A) is None
        checkpoints = {t: verify.Checkpoint(seq, bytes(h)) for t, seq, h in conn.execute(
            "SELECT tenant_id, seq, chain_hash FROM ledger_checkpoints WHERE kind = 'CHECKPOINT'")}
    # B's anchor is its checkpointed head: what its verifiers held before is where they start now.
    assert (anchor_b.seq, anchor_b.chain_hash) == (checkpoints[B].seq, checkpoints[B].chain_hash) == \
        (6, anchor_b.chain_hash)
    report_b = ledger_report(db, B, anchor=anchor_b)
    assert report_b.ok and report_b.first_seq == 7 and report_b.last_seq == 9, report_b
    report_a = ledger_report(db, A, checkpoint=checkpoints[A])
    assert report_a.ok and report_a.first_seq == 1 and report_a.last_seq == 4, report_a
    # B's Merkle tree: the proof made before still verifies (aics-tlog), the tree grew consistently.
    assert aics_tree.verify_leaf_inclusion(first, 0, 6, proof0, root0)
    read = stored_tree(db, B)
    root1 = tlog.tree_hash(9, read)
    assert aics_tree.verify_consistency(6, 9, root0, root1, tlog.prove_tree(9, 6, read))
    assert aics_tree.verify_leaf_inclusion(first, 0, 9, tlog.prove_record(9, 0, read), root1)
    # Applied again: nothing more to remove, no new entry.
    again = apply(db, NOW)
    assert again["audit_ledger"].removed == {} and again["system_records"].removed == {}
    assert len(removal_entries(db, B)) == 3


def test_a_dry_run_reports_what_would_go_and_changes_nothing(db):
    dry = apply(db, NOW, dry_run=True)
    assert dry["audit_ledger"].removed == {"audit_ledger_p2025_01": {B: 3}, "audit_ledger_p2025_02": {B: 3}}
    assert dry["system_records"].removed == {"system_records_p2025_01": {A: 1, B: 2}}
    line = retention.describe(dry["system_records"], dry_run=True)
    assert "would remove 3 rows of 2 tenants row by row from system_records_p2025_01" in line
    assert len(rows_of(db, "audit_ledger", B)) == 6 and len(rows_of(db, "system_records", B)) == 2
    assert removal_entries(db, A) == removal_entries(db, B) == []
    with session(db) as conn:
        assert retention.retention_anchor(conn, B) is None
        assert conn.execute("SELECT count(*) FROM evidence_payloads WHERE tenant_id = %s", (B,)).fetchone()[0] == 2


@pytest.mark.parametrize("scope,target", [("TENANT", ""), ("SUBJECT", "subj-b")])
def test_a_hold_keeps_the_tenants_rows_and_is_reported(db, scope, target):
    place_hold(db, B, "hold-b", scope, target)
    out = apply(db, NOW)
    system = out["system_records"]
    assert system.removed == {"system_records_p2025_01": {A: 1}}  # A's DEBUG record still goes
    assert system.refused == [f"system_records_p2025_01 {B}/INFO: retention refused: legal hold hold-b of tenant {B} covers its rows "
                              "in system_records_p2025_01"]
    assert len(rows_of(db, "system_records", B)) == 2
    if scope == "TENANT":
        assert out["audit_ledger"].removed == {} and len(out["audit_ledger"].refused) == 2
        assert len(rows_of(db, "audit_ledger", B)) == 6
    assert "kept system_records_p2025_01 tenant-rows-b/INFO: retention refused: legal hold hold-b" in retention.describe(system)
    release_hold(db, B, "hold-b")
    assert apply(db, NOW)["system_records"].removed == {"system_records_p2025_01": {B: 2}}


def test_ledger_rows_go_only_behind_a_checkpoint_and_as_the_chains_beginning(db):
    append_entries(db, D, [JAN, FEB], 2)  # after the fixture's checkpoints: none covers them
    ledger = apply(db, NOW)["audit_ledger"]
    assert ledger.removed == {"audit_ledger_p2025_01": {B: 3}, "audit_ledger_p2025_02": {B: 3}}
    assert ledger.refused[0] == (f"audit_ledger_p2025_01 {D}: retention refused: no checkpoint of tenant {D} covers "
                                 "seq 2 (in audit_ledger_p2025_01)")
    # February's entries of D are not its chain's beginning while January's stay
    assert ledger.refused[1].startswith(f"audit_ledger_p2025_02 {D}: retention refused: tenant {D} has entries "
                                        "before seq 4 outside")
    assert len(rows_of(db, "audit_ledger", D)) == 4 and ledger_report(db, D).ok
    with session(db) as conn:
        retention.record_checkpoints(conn, D)
    assert apply(db, NOW)["audit_ledger"].removed == {"audit_ledger_p2025_01": {D: 2},
                                                      "audit_ledger_p2025_02": {D: 2}}
    with session(db) as conn:
        anchor = retention.retention_anchor(conn, D)
    assert anchor.seq == 4 and ledger_report(db, D, anchor=anchor).ok


def test_trace_steps_go_as_whole_finished_traces_of_the_tenant(db):
    set_policy(db, A, "LLM_RUNS", 365, "SOC2")  # A's steps keep January; B's (90 days) go
    finished_trace(db, A, "tr-a", JAN, 2)
    finished_trace(db, B, "tr-b", JAN, 3)
    steps = apply(db, at(2025, 7))["aos_trace_steps"]
    assert steps.dropped == [] and steps.kept == "aos_trace_steps_p2025_01"
    assert steps.removed == {"aos_trace_steps_p2025_01": {B: 3}}
    assert rows_of(db, "aos_trace_steps", B) == [] and len(rows_of(db, "aos_trace_steps", A)) == 2


def test_only_the_retention_function_gets_past_the_append_only_triggers(db):
    with session(db) as conn:  # the owner's (superuser's) session: the trigger refuses
        for statement in ("DELETE FROM audit_ledger WHERE tenant_id = 'tenant-rows-b'",
                          "DELETE FROM system_records_p2025_01 WHERE tenant_id = 'tenant-rows-b'"):
            with pytest.raises(psycopg.Error) as err:
                conn.execute(statement)
            assert err.value.sqlstate == "AOS01", statement
        # raising the function's flag by hand is not enough: the trigger wants the function's definer
        with conn.transaction():
            conn.execute("SET LOCAL aos.retention_rows = 'on'")
            with pytest.raises(psycopg.Error) as err:
                conn.execute("DELETE FROM system_records_p2025_01 WHERE tenant_id = 'tenant-rows-b'")
            assert err.value.sqlstate == "AOS01"
            raise psycopg.Rollback()
        for bad in (("tenants", "tenants", None), ("audit_ledger", "audit_ledger_default", None),
                    ("system_records", "system_records_p2025_01", None), ("audit_ledger", "audit_ledger_p2025_01", "INFO")):
            with pytest.raises(psycopg.Error) as err:  # arguments checked: never the default partition
                with conn.transaction():
                    conn.execute("SET LOCAL ROLE aos_retention")
                    conn.execute("SELECT * FROM aos_retention_remove_rows(%s, %s, %s, %s)", (bad[0], bad[1], B, bad[2]))
            assert err.value.sqlstate == "22023", bad
    for role in ("aos_producer", "aos_ingest", "aos_export", "aos_logs"):
        with session(db, role, B) as conn:
            with pytest.raises(psycopg.Error) as err:
                conn.execute("SELECT * FROM aos_retention_remove_rows('system_records', 'system_records_p2025_01', "
                             "%s, 'INFO')", (B,))
            assert err.value.sqlstate == "42501", role
    assert len(rows_of(db, "system_records", B)) == 2
