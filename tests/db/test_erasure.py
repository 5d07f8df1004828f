"""Erasure against the real schema (migration 0023_erasure, docs/ERASURE.md): v2 records written through
the producer, a subject erased through aos_erase_subject as the ingest role, then every chain,
Merkle proof (checked with aics-tlog, an RFC 9162 implementation not written here) and held
checkpoint re-verified, the content looked for in every table as the admin, and the guards
tried: another tenant, other roles, a legal hold, a v2 row carrying its payload."""
from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

import psycopg
import pytest
from aics_tlog import tree as aics_tree
from sqlalchemy import create_engine, text

from aos_recording import erasure, hashing, store, tlog, verify
from aos_recording.sources import SourceWriter
from aos_recording.writers import AuditLedgerWriter, Producer, SystemRecordWriter, TraceRecorder
from tests.db.sessions import session
from tests.logins import login_url

pytestmark = pytest.mark.db
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
SECRET = "erasure-subject-7731@example.org"  # the subject's personal data, in every payload kind


@pytest.fixture(scope="module")
def producer(database_url):
    p = Producer(login_url(database_url, "producer"))
    yield p
    p.close()


@pytest.fixture(scope="module")
def ingest(database_url):
    engine = create_engine(login_url(database_url, "ingest").replace("postgresql://", "postgresql+psycopg://", 1))
    yield engine
    engine.dispose()


def as_tenant(engine, tenant):
    conn = engine.connect()
    conn.begin()
    conn.execute(text("SELECT set_config('aos.tenant_id', :t, true)"), {"t": tenant})
    return conn


def erase(ingest, tenant, subject, **kw):
    with ingest.connect() as conn, conn.begin():
        conn.execute(text("SELECT set_config('aos.tenant_id', :t, true)"), {"t": tenant})
        return erasure.erase_subject(conn, tenant_id=tenant, subject_id=subject, actor_type="HUMAN",
                                     actor_id="dpo-1", reason="GDPR Art. 17 request 42", **kw)


def place_hold(conn, tenant: str, hold_id: str, scope: str, target: str) -> None:
    """A legal hold as RetentionService.PlaceLegalHold stores it (migration 0022_retention_policies;
    SUBJECT: 0023_erasure), written as the admin."""
    conn.execute("INSERT INTO legal_holds (tenant_id, id, scope, target_id, reason, placed_by_type, placed_by_id, placed_at) "
                     "VALUES (%s, %s, %s, %s, 'matter', 'HUMAN', 'counsel', now())", (tenant, hold_id, scope, target))


def populate(producer, name: str) -> dict:
    """A tenant with v1 entries, v2 entries of two subjects, a v2 trace and a v2 system record."""
    tenant = f"{name}-{uuid.uuid4().hex[:8]}"
    run = f"run-{uuid.uuid4().hex[:6]}"
    with producer.transaction(tenant) as conn:
        SourceWriter(conn).ensure_tenant(tenant_id=tenant, name=name, created_at=T0)
        ledger = AuditLedgerWriter(conn)
        for i in range(3):
            ledger.append(tenant_id=tenant, event_type="LimitUpdated", entity_type="LIMIT", entity_id=f"lim-{i}",
                          actor_type="HUMAN", actor_id="admin", action_reason=f"v1 change {i}",
                          after_state={"max_value": i}, created_at=T0 + timedelta(seconds=i))
        for i, subject in enumerate(["subj-1", "subj-1", "subj-2"]):
            email = SECRET if subject == "subj-1" else "other@example.com"
            ledger.append(tenant_id=tenant, event_type="ApiKeyCreated", entity_type="API_KEY", entity_id=f"key-{i}",
                          actor_type="HUMAN", actor_id=subject, action_reason=f"key for {email}",
                          correlation_id=run, before_state=None,
                          after_state={"owner_email": email},
                          created_at=T0 + timedelta(seconds=10 + i), data_subject=subject)
        recorder = TraceRecorder(conn)
        trace = recorder.create_trace(tenant_id=tenant, run_id=run, started_at=T0)
        recorder.add_step(tenant_id=tenant, trace_id=trace, step_index=0, step_type="llm_call", timestamp=T0,
                          input_data={"prompt": f"write to {SECRET}"}, output_data="done", data_subject="subj-1")
        recorder.add_step(tenant_id=tenant, trace_id=trace, step_index=1, step_type="tool_call",
                          timestamp=T0 + timedelta(seconds=1), input_data={"tool": "x"}, output_data=None)
        recorder.mark_violation(trace_id=trace, step_index=0, policy_id="pol-1", reason="pii", incident_id="inc-7")
        trace_hash = recorder.complete_trace(trace_id=trace, completed_at=T0 + timedelta(seconds=2))
        record = SystemRecordWriter(conn).record(
            tenant_id=tenant, component="mailer", event_type="ERROR", severity="ERROR",
            summary=f"bounce for {SECRET}", details={"to": SECRET}, run_id=run, created_at=T0,
            data_subject="subj-1")
    return {"tenant": tenant, "run": run, "trace": trace, "trace_hash": trace_hash, "system_record": record.id}


def ledger_rows(url, tenant):
    with session(url) as conn:
        cur = conn.cursor(row_factory=psycopg.rows.dict_row)
        return cur.execute(f"SELECT {store.LEDGER_COLUMNS} FROM audit_ledger WHERE tenant_id = %s ORDER BY seq",
                           (tenant,)).fetchall()


def stored_tree(url, tenant):
    with session(url) as conn:
        hashes = {i: bytes(h) for i, h in conn.execute(
            "SELECT hash_index, hash FROM tlog_hashes WHERE tenant_id = %s AND log = 'ledger'", (tenant,))}
    return lambda indexes: [hashes[i] for i in indexes]


def content_anywhere(url, tenant, needle: str) -> list[str]:
    """Every table of the schema (as the admin, no row security) whose rows of ``tenant`` hold ``needle``."""
    hits = []
    with session(url) as conn:
        tables = [t for (t,) in conn.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id' "
            "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition")]
        for table in tables:
            if conn.execute(f"SELECT EXISTS (SELECT FROM {table} x WHERE x.tenant_id = %s "
                            "AND strpos(x::text, %s) > 0)", (tenant, needle)).fetchone()[0]:
                hits.append(table)
    return hits


def test_v2_rows_hold_commitments_only_and_reads_open_them(producer, database_url, ingest):
    t = populate(producer, "open")
    rows = ledger_rows(database_url, t["tenant"])
    assert [r["hash_version"] for r in rows] == [1, 1, 1, 2, 2, 2]
    v2 = rows[3]
    assert v2["before_state"] is None and v2["after_state"] is None and v2["action_reason"] is None
    assert set(v2["commitments"]) == {"action_reason", "after_state"}
    # the only copies of the content are in the erasable side table
    assert content_anywhere(database_url, t["tenant"], SECRET) == ["evidence_payloads"]
    with ingest.connect() as conn, conn.begin():
        conn.execute(text("SELECT set_config('aos.tenant_id', :t, true)"), {"t": t["tenant"]})
        payloads = erasure.open_payloads(conn, t["tenant"], "audit_entry", [(r["id"], r) for r in rows])
    filled = erasure.fill(v2, v2["id"], payloads, with_salts=True)
    assert filled["after_state"] == {"owner_email": SECRET} and filled["erased"] == [] and filled["missing"] == []
    assert hashing.openings_match(filled, hashing.LEDGER_PAYLOAD_FIELDS)
    assert erasure.fill(rows[0], rows[0]["id"], payloads) == rows[0]  # v1: untouched


def test_erasure_keeps_chain_tree_checkpoint_and_trace_valid(producer, database_url, ingest):
    t = populate(producer, "erase")
    tenant = t["tenant"]
    before = ledger_rows(database_url, tenant)
    n0, held = len(before), verify.Checkpoint(before[-1]["seq"], bytes(before[-1]["chain_hash"]))
    read = stored_tree(database_url, tenant)
    root0 = tlog.tree_hash(n0, read)
    leaf = 3  # the first v2 entry (seq 4)
    proof0 = tlog.prove_record(n0, leaf, read)

    result = erase(ingest, tenant, "subj-1")
    assert result.executed_seq is not None and result.payloads_erased == 8  # 2×2 ledger + 2 step + 2 system

    after = ledger_rows(database_url, tenant)
    assert [r["event_type"] for r in after[n0:]] == ["SubjectErasureRequested", "SubjectErased"]
    assert after[-1]["after_state"]["payloads_erased"] == 8
    assert [dict(r) for r in after[:n0]] == [dict(r) for r in before]  # no row changed
    # chain and held checkpoint
    with producer.transaction(tenant) as conn:
        report = verify.verify_ledger(conn, tenant, checkpoint=held)
        trace, steps = store.load_trace(conn, t["trace"])
    assert report.ok and report.checked == n0 + 2, report.anomalies
    assert verify.verify_trace(trace, steps) == []
    assert bytes(trace["content_hash"]) == t["trace_hash"]
    # Merkle: the proof made before verifies after (aics-tlog), and the new tree extends the old
    leaf_data = bytes(after[leaf]["content_hash"])
    assert aics_tree.verify_leaf_inclusion(leaf_data, leaf, n0, proof0, root0)
    read = stored_tree(database_url, tenant)
    n1 = len(after)
    root1 = tlog.tree_hash(n1, read)
    assert aics_tree.verify_consistency(n0, n1, root0, root1, tlog.prove_tree(n1, n0, read))
    assert aics_tree.verify_leaf_inclusion(leaf_data, leaf, n1, tlog.prove_record(n1, leaf, read), root1)
    # the content is gone from every table; subj-2's stays
    assert content_anywhere(database_url, tenant, SECRET) == []
    assert content_anywhere(database_url, tenant, "other@example.com") == ["evidence_payloads"]
    with session(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM evidence_payloads WHERE tenant_id = %s AND subject_id = 'subj-1'",
                            (tenant,)).fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM erased_payloads WHERE tenant_id = %s AND erasure_id = %s",
                            (tenant, result.erasure_id)).fetchone()[0] == 8
    # reads: the record with its commitment and an explicit ERASED marker
    with ingest.connect() as conn, conn.begin():
        conn.execute(text("SELECT set_config('aos.tenant_id', :t, true)"), {"t": tenant})
        payloads = erasure.open_payloads(conn, tenant, "audit_entry", [(r["id"], r) for r in after])
    filled = erasure.fill(after[leaf], after[leaf]["id"], payloads)
    assert filled["erased"] == ["action_reason", "after_state"] and filled["after_state"] is None
    assert filled["commitments"] == before[leaf]["commitments"]
    other = erasure.fill(after[5], after[5]["id"], payloads)
    assert other["after_state"] == {"owner_email": "other@example.com"} and other["erased"] == []


def test_another_tenant_cannot_erase_yours(producer, database_url, ingest):
    mine, theirs = populate(producer, "mine"), populate(producer, "theirs")
    # their session names my subject: the function acts on the session's tenant only
    result = erase(ingest, theirs["tenant"], "subj-1")
    assert result.payloads_erased == 8  # their own subj-1
    assert content_anywhere(database_url, mine["tenant"], SECRET) == ["evidence_payloads"]
    # and a session with no tenant erases nothing
    with ingest.connect() as conn, conn.begin(), pytest.raises(Exception, match="acts for a tenant"):
        conn.execute(text("SELECT aos_erase_subject('subj-1', 'era_x', 'dpo')"))


@pytest.mark.parametrize("role", ["aos_producer", "aos_logs", "aos_export", "aos_overview"])
def test_only_the_ingest_role_erases_and_nobody_deletes_or_updates_directly(producer, database_url, role):
    t = populate(producer, "roles")
    with session(database_url, role, t["tenant"]) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT aos_erase_subject('subj-1', 'era_x', 'dpo')")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DELETE FROM evidence_payloads")
    with session(database_url, "aos_ingest", t["tenant"]) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DELETE FROM evidence_payloads")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("UPDATE evidence_payloads SET payload = '{}'")
    with session(database_url) as conn:  # not even the admin rewrites a payload
        with pytest.raises(psycopg.Error, match="never changed"):
            conn.execute("UPDATE evidence_payloads SET payload = '{}' WHERE tenant_id = %s", (t["tenant"],))
    assert content_anywhere(database_url, t["tenant"], SECRET) == ["evidence_payloads"]


@pytest.mark.parametrize("scope", ["TENANT", "SUBJECT", "RUN", "INCIDENT"])
def test_a_legal_hold_blocks_the_erasure_and_the_refusal_is_recorded(producer, database_url, ingest, scope):
    t = populate(producer, "hold")
    tenant = t["tenant"]
    target = {"TENANT": "", "SUBJECT": "subj-1", "RUN": t["run"], "INCIDENT": "inc-7"}[scope]
    with session(database_url) as conn:
        # (INCIDENT: the trace of the subject's run was marked with incident inc-7 by populate)
        place_hold(conn, tenant, "hold-1", scope, target)
    result = erase(ingest, tenant, "subj-1")
    assert result.executed_seq is None and result.hold_id == "hold-1" and result.payloads_erased == 0
    rows = ledger_rows(database_url, tenant)
    assert rows[-1]["event_type"] == "SubjectErasureRequested"
    assert rows[-1]["after_state"] == {"erasure_id": result.erasure_id, "status": "REFUSED_LEGAL_HOLD",
                                       "legal_hold_id": "hold-1"}
    assert content_anywhere(database_url, tenant, SECRET) == ["evidence_payloads"]
    # the function refuses on its own too (no path around the check)
    with ingest.connect() as conn, conn.begin():
        conn.execute(text("SELECT set_config('aos.tenant_id', :t, true)"), {"t": tenant})
        with pytest.raises(Exception, match="legal hold hold-1"):
            conn.execute(text("SELECT aos_erase_subject('subj-1', 'era_y', 'dpo')"))
    # released: the erasure goes through
    with session(database_url) as conn:
        conn.execute("UPDATE legal_holds SET released_at = now(), released_by_type = 'HUMAN', "
                     "released_by_id = 'counsel', release_reason = 'settled' WHERE tenant_id = %s", (tenant,))
    assert erase(ingest, tenant, "subj-1").payloads_erased == 8


def test_a_hold_placed_while_the_erasure_runs_is_not_missed(producer, database_url, ingest):
    """aos_erase_subject locks legal_holds SHARE before its check (docs/SCALE.md §3c): a hold whose
    transaction is still open when the erasure starts makes the erasure wait, then refuse. Without
    the lock the erasure would not see the uncommitted hold and would erase."""
    t = populate(producer, "hold-race")
    with session(database_url) as conn, ThreadPoolExecutor(1) as pool:
        with conn.transaction():
            place_hold(conn, t["tenant"], "hold-late", "SUBJECT", "subj-1")
            running = pool.submit(erase, ingest, t["tenant"], "subj-1")
            time.sleep(1.0)
            assert not running.done()  # waiting for the hold's transaction
        result = running.result(timeout=30)
    assert result.executed_seq is None and result.hold_id == "hold-late" and result.payloads_erased == 0
    assert content_anywhere(database_url, t["tenant"], SECRET) == ["evidence_payloads"]


def test_a_hold_on_another_subject_or_run_does_not_block(producer, database_url, ingest):
    t = populate(producer, "hold-other")
    with session(database_url) as conn:
        for hold, scope, target in (("h1", "SUBJECT", "subj-9"), ("h2", "RUN", "run-other"),
                                    ("h3", "INCIDENT", "inc-other")):
            place_hold(conn, t["tenant"], hold, scope, target)
    assert erase(ingest, t["tenant"], "subj-1").payloads_erased == 8


def test_a_v2_row_cannot_carry_its_payload(producer, database_url):
    t = populate(producer, "check")
    with session(database_url, "aos_producer", t["tenant"]) as conn:
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute(
                "INSERT INTO audit_ledger (id, tenant_id, event_type, entity_type, entity_id, actor_type, "
                "created_at, after_state, content_hash, hash_version, commitments) VALUES ('aud_x', %s, "
                "'LimitUpdated', 'LIMIT', 'l', 'HUMAN', now(), '{\"a\": 1}', %s, 2, '{}')", (t["tenant"], bytes(32)))
        with pytest.raises(psycopg.errors.CheckViolation):  # v1 with commitments: no such thing
            conn.execute(
                "INSERT INTO audit_ledger (id, tenant_id, event_type, entity_type, entity_id, actor_type, "
                "created_at, content_hash, commitments) VALUES ('aud_y', %s, 'LimitUpdated', 'LIMIT', 'l', "
                "'HUMAN', now(), %s, '{}')", (t["tenant"], bytes(32)))


def test_the_batch_path_writes_v2_entries_as_append_once_does(producer, database_url):
    """append_many_once (Ingest's batch path): a v2 item's row carries commitments only, its payloads
    go to evidence_payloads; the same id twice in a batch, or in a later batch, is a retry with the
    same content hash (the first's salts); other content under the id is a conflict."""
    from aos_recording.writers import EvidenceConflict
    t = populate(producer, "batch")
    v2 = dict(tenant_id=t["tenant"], event_type="ApiKeyRevoked", entity_type="API_KEY", entity_id="key-b",
              actor_type="SYSTEM", actor_id="idp", after_state={"email": SECRET}, created_at=T0,
              entry_id="aud_batch_v2", data_subject="subj-1")
    v1 = {k: v for k, v in v2.items() if k != "data_subject"} | {"entry_id": "aud_batch_v1"}
    with producer.transaction(t["tenant"]) as conn:
        writer = AuditLedgerWriter(conn)
        writer.hold_producer_ids(t["tenant"])
        answers = writer.append_many_once([v2, v2, v1, {**v2, "after_state": {"email": "x@example.com"}}])
    (first, created), (again, created_again), (plain, plain_created) = answers[:3]
    assert created and not created_again and again.content_hash == first.content_hash and plain_created
    assert isinstance(answers[3], EvidenceConflict)
    with producer.transaction(t["tenant"]) as conn:
        writer = AuditLedgerWriter(conn)
        writer.hold_producer_ids(t["tenant"])
        (later, later_created), = writer.append_many_once([v2])
    assert not later_created and later.content_hash == first.content_hash
    with session(database_url) as conn:
        rows = {r[0]: r[1:] for r in conn.execute(
            "SELECT id, hash_version, after_state FROM audit_ledger WHERE tenant_id = %s AND id LIKE 'aud_batch%%'",
            (t["tenant"],))}
        kept = conn.execute("SELECT field, subject_id FROM evidence_payloads WHERE tenant_id = %s "
                            "AND record_id = 'aud_batch_v2'", (t["tenant"],)).fetchall()
    assert rows == {"aud_batch_v2": (2, None), "aud_batch_v1": (1, {"email": SECRET})}
    assert kept == [("after_state", "subj-1")]
    with producer.transaction(t["tenant"]) as conn:  # the batch's v2 entry verifies from its commitments
        report = verify.verify_ledger(conn, t["tenant"])
    assert report.ok, report.anomalies


def test_v2_retries_are_idempotent_and_other_content_conflicts(producer, database_url):
    t = populate(producer, "retry")
    fields = dict(tenant_id=t["tenant"], event_type="ApiKeyRevoked", entity_type="API_KEY", entity_id="key-9",
                  actor_type="HUMAN", actor_id="subj-1", after_state={"email": SECRET}, created_at=T0,
                  entry_id="aud_fixed", data_subject="subj-1")
    with producer.transaction(t["tenant"]) as conn:
        writer = AuditLedgerWriter(conn)
        writer.hold_producer_ids(t["tenant"])
        first, created = writer.append_once(**fields)
        again, created_again = writer.append_once(**fields)
    assert created and not created_again and again.content_hash == first.content_hash
    from aos_recording.writers import EvidenceConflict
    with producer.transaction(t["tenant"]) as conn, pytest.raises(EvidenceConflict):
        writer = AuditLedgerWriter(conn)
        writer.hold_producer_ids(t["tenant"])
        writer.append_once(**{**fields, "after_state": {"email": "x@example.com"}})
    with producer.transaction(t["tenant"]) as conn:  # a step retry too (its trace still running)
        recorder = TraceRecorder(conn)
        trace = recorder.create_trace(tenant_id=t["tenant"], run_id="run-retry", started_at=T0)
        step = dict(tenant_id=t["tenant"], trace_id=trace, step_index=0, step_type="llm_call", timestamp=T0,
                    input_data={"prompt": f"write to {SECRET}"}, output_data="done", data_subject="subj-1")
        assert recorder.add_step(**step) == recorder.add_step(**step)
        with pytest.raises(EvidenceConflict):
            recorder.add_step(**{**step, "output_data": "other"})


def test_a_system_wide_record_has_no_subject(producer):
    with producer.transaction(None) as conn, pytest.raises(ValueError, match="system-wide"):
        SystemRecordWriter(conn).record(tenant_id=None, component="c", event_type="ERROR", severity="ERROR",
                                        summary="s", data_subject="subj-1")
