"""The chain verifier on in-memory chains: every kind of tampering is caught and located."""
import copy
from datetime import datetime, timedelta, timezone

from aos_recording import hashing
from aos_recording.verify import (
    BROKEN_LINK,
    CHAIN_MISMATCH,
    CHECKPOINT_MISMATCH,
    CONTENT_MISMATCH,
    SEQUENCE_GAP,
    TRUNCATION,
    ChainVerifier,
    Checkpoint,
    ledger_content_hash_of,
    verify_chain,
    verify_trace,
)

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def chain(n: int) -> list[dict]:
    rows, prev = [], hashing.GENESIS
    for seq in range(1, n + 1):
        row = {"id": f"aud-{seq}", "tenant_id": "t", "event_type": "LimitUpdated", "entity_type": "LIMIT",
               "entity_id": "lim", "actor_type": "SYSTEM", "actor_id": None, "action_reason": f"r{seq}",
               "correlation_id": None, "created_at": T0 + timedelta(seconds=seq), "before_state": None,
               "after_state": {"n": seq}, "seq": seq}
        row["content_hash"] = hashing.ledger_content_hash(row)
        row["prev_hash"] = prev
        row["chain_hash"] = prev = hashing.chain_hash(prev, row["content_hash"])
        rows.append(row)
    return rows


def kinds(report):
    return [(a.seq, a.kind) for a in report.anomalies]


def test_clean_chain():
    report = verify_chain(chain(50), ledger_content_hash_of)
    assert report.ok and report.checked == 50 and report.last_seq == 50


def test_changed_field():
    rows = chain(10)
    rows[4]["action_reason"] = "rewritten"
    assert kinds(verify_chain(rows, ledger_content_hash_of)) == [(5, CONTENT_MISMATCH)]


def test_changed_field_with_recomputed_content_hash():
    rows = chain(10)
    rows[4]["action_reason"] = "rewritten"
    rows[4]["content_hash"] = hashing.ledger_content_hash(rows[4])
    assert kinds(verify_chain(rows, ledger_content_hash_of)) == [(5, CHAIN_MISMATCH)]


def test_deleted_middle_entry():
    rows = chain(10)
    del rows[4]
    report = verify_chain(rows, ledger_content_hash_of)
    assert kinds(report) == [(6, SEQUENCE_GAP), (6, BROKEN_LINK)]
    assert "5" in report.anomalies[0].detail


def test_swapped_entries():
    rows = chain(10)
    rows[2], rows[6] = copy.deepcopy(rows[6]), copy.deepcopy(rows[2])
    rows[2]["seq"], rows[6]["seq"] = 3, 7
    found = kinds(verify_chain(rows, ledger_content_hash_of))
    assert {seq for seq, _ in found} == {3, 4, 7, 8}
    assert (3, BROKEN_LINK) in found and (7, BROKEN_LINK) in found


def test_truncation_needs_a_checkpoint():
    rows = chain(10)
    held = Checkpoint(10, rows[-1]["chain_hash"])
    cut = rows[:7]
    assert verify_chain(cut, ledger_content_hash_of).ok  # a cut tail alone is a valid shorter chain
    verifier = ChainVerifier(ledger_content_hash_of)
    for row in cut:
        verifier.feed(row)
    verifier.against_checkpoint(held, None)
    assert kinds(verifier.report) == [(10, TRUNCATION)]


def test_rewrite_before_a_checkpoint():
    rows = chain(5)
    held = Checkpoint(5, rows[-1]["chain_hash"])
    forged = chain(5)
    for row in forged:  # a forger rebuilds a whole, self-consistent chain
        row["after_state"] = {"n": 0}
    prev = hashing.GENESIS
    for row in forged:
        row["content_hash"] = hashing.ledger_content_hash(row)
        row["prev_hash"] = prev
        row["chain_hash"] = prev = hashing.chain_hash(prev, row["content_hash"])
    verifier = ChainVerifier(ledger_content_hash_of)
    for row in forged:
        verifier.feed(row)
    assert verifier.report.ok
    verifier.against_checkpoint(held, forged[-1]["chain_hash"])
    assert kinds(verifier.report) == [(5, CHECKPOINT_MISMATCH)]


def test_range_verification_from_an_anchor():
    rows = chain(20)
    report = verify_chain(rows[9:], ledger_content_hash_of, start_seq=10, prev_hash=rows[8]["chain_hash"])
    assert report.ok and report.first_seq == 10 and report.checked == 11


def test_trace_verification():
    steps = []
    for i in range(4):
        step = {"step_index": i, "step_type": "llm_call", "input_data": {"i": i}, "output_data": None,
                "timestamp": T0 + timedelta(seconds=i)}
        step["content_hash"] = hashing.step_content_hash(step)
        steps.append(step)
    trace = {"content_hash": hashing.trace_content_hash(s["content_hash"] for s in steps),
             "violation_step_index": 2}
    assert verify_trace(trace, steps) == []
    steps[1]["output_data"] = {"tampered": True}
    assert [(a.step_index, a.kind) for a in verify_trace(trace, steps)] == [(1, CONTENT_MISMATCH)]
    del steps[2]
    found = [(a.step_index, a.kind) for a in verify_trace(trace, steps)]
    assert (3, SEQUENCE_GAP) in found and (None, CHAIN_MISMATCH) in found and (2, SEQUENCE_GAP) in found


def test_read_ahead_yields_every_batch_in_order_from_one_helper_thread():
    import contextvars
    import threading

    from aos_recording.verify import _read_ahead

    marker: contextvars.ContextVar[str] = contextvars.ContextVar("marker", default="unset")
    marker.set("caller")
    seen: list[tuple[str, str]] = []

    def batches():
        for n in range(5):
            seen.append((threading.current_thread().name, marker.get()))
            yield [n, n]

    assert list(_read_ahead(batches())) == [[n, n] for n in range(5)]
    assert {name.startswith("ledger-read-ahead") for name, _ in seen} == {True}
    assert {value for _, value in seen} == {"caller"}  # the caller's context goes with each read


def test_read_ahead_passes_a_read_error_on_and_waits_for_the_read_in_flight():
    import threading
    import time

    import pytest

    from aos_recording.verify import _read_ahead

    finished = threading.Event()

    def failing():
        yield [1]
        raise RuntimeError("the database went away")

    with pytest.raises(RuntimeError, match="went away"):
        list(_read_ahead(failing()))

    def slow():
        yield [1]
        time.sleep(0.2)
        finished.set()
        yield [2]

    reader = _read_ahead(slow())
    assert next(reader) == [1]
    reader.close()  # the caller stops early: the second read is in flight
    assert finished.is_set()
