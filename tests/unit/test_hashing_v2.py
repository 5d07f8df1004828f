"""Hash format v2 (docs/ERASURE.md): payloads committed by salted digest.

The expected values are recomputed here from the document's byte recipe with hashlib and the
rfc8785 reference directly, not with aos_recording.hashing, so a drift of either is caught."""
import hashlib
from datetime import datetime, timezone

import pytest
import rfc8785

from aos_recording import hashing, verify

T = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=timezone.utc)
SALT_A, SALT_B, SALT_R = bytes(range(32)), bytes(range(32, 64)), bytes(range(64, 96))
ENTRY = {"id": "aud_1", "tenant_id": "t1", "event_type": "LimitUpdated", "entity_type": "LIMIT",
         "entity_id": "lim-1", "actor_type": "HUMAN", "actor_id": "user-7", "action_reason": "asked by Jane Doe",
         "correlation_id": "run-1", "created_at": T, "before_state": {"owner": "jane@example.com"},
         "after_state": {"owner": "jane@example.com", "max_value": 500}}
SALTS = {"before_state": SALT_A, "after_state": SALT_B, "action_reason": SALT_R}


def outside_commitment(salt: bytes, payload) -> str:
    return hashlib.sha256(b"aos-evidence/payload-commitment/v2\x00" + salt + rfc8785.dumps(payload)).hexdigest()


def outside_ledger_v2(entry: dict, commitments: dict) -> bytes:
    doc = {k: entry[k] for k in hashing.LEDGER_FIELDS}
    doc["created_at"] = "2026-03-01T12:00:00.123456Z"
    for f in ("action_reason", "before_state", "after_state"):
        doc[f] = commitments.get(f)
    doc["hash_version"] = 2
    return hashlib.sha256(rfc8785.dumps(doc)).digest()


def test_commitment_is_the_documented_bytes():
    payload = {"b": [1, "é"], "a": None}
    assert hashing.payload_commitment(SALT_A, payload).hex() == outside_commitment(SALT_A, payload)


def test_the_salt_hides_equal_payloads_and_must_be_32_bytes():
    assert hashing.payload_commitment(SALT_A, "yes") != hashing.payload_commitment(SALT_B, "yes")
    with pytest.raises(ValueError):
        hashing.payload_commitment(b"short", "yes")
    commitments, salts = hashing.commit_payloads(ENTRY, hashing.LEDGER_PAYLOAD_FIELDS)
    assert len({*salts.values()}) == 3 and all(len(s) == 32 for s in salts.values())


def test_v2_ledger_hash_is_the_documented_bytes_and_not_v1():
    commitments, _ = hashing.commit_payloads(ENTRY, hashing.LEDGER_PAYLOAD_FIELDS, SALTS)
    assert commitments == {f: outside_commitment(SALTS[f], ENTRY[f]) for f in SALTS}
    v2 = hashing.ledger_content_hash_v2(ENTRY, commitments)
    assert v2 == outside_ledger_v2(ENTRY, commitments)
    assert v2 != hashing.ledger_content_hash(ENTRY)


def test_v1_rows_hash_exactly_as_before():
    row = dict(ENTRY)
    assert hashing.stored_ledger_content_hash(row) == hashing.ledger_content_hash(ENTRY)
    assert hashing.stored_ledger_content_hash({**row, "hash_version": 1}) == hashing.ledger_content_hash(ENTRY)
    step = {"step_index": 0, "step_type": "llm_call", "input_data": {"q": 1}, "output_data": "x", "timestamp": T}
    assert hashing.stored_step_content_hash(step) == hashing.step_content_hash(step)


def test_erasing_the_payload_leaves_the_v2_hash_and_tampering_changes_it():
    commitments, _ = hashing.commit_payloads(ENTRY, hashing.LEDGER_PAYLOAD_FIELDS, SALTS)
    stored = {**ENTRY, "hash_version": 2, "commitments": commitments}
    erased = {**stored, "action_reason": None, "before_state": None, "after_state": None}
    assert hashing.stored_ledger_content_hash(stored) == hashing.stored_ledger_content_hash(erased)
    forged = dict(commitments, after_state=outside_commitment(SALT_B, {"max_value": 1}))
    assert hashing.stored_ledger_content_hash({**erased, "commitments": forged}) != \
        hashing.stored_ledger_content_hash(erased)
    # a non-payload field is still covered directly
    assert hashing.stored_ledger_content_hash({**erased, "entity_id": "lim-2"}) != \
        hashing.stored_ledger_content_hash(erased)
    # a commitment for a field that is not a payload field is refused, not ignored
    with pytest.raises(ValueError):
        hashing.stored_ledger_content_hash({**erased, "commitments": {**commitments, "entity_id": "00"}})


def test_openings_check_payload_and_salt_against_the_commitment():
    commitments, _ = hashing.commit_payloads(ENTRY, hashing.LEDGER_PAYLOAD_FIELDS, SALTS)
    salts = {f: s.hex() for f, s in SALTS.items()}
    row = {**ENTRY, "hash_version": 2, "commitments": commitments, "salts": salts}
    assert hashing.openings_match(row, hashing.LEDGER_PAYLOAD_FIELDS)
    assert not hashing.openings_match({**row, "after_state": {"max_value": 1}}, hashing.LEDGER_PAYLOAD_FIELDS)
    assert not hashing.openings_match({**row, "salts": {**salts, "before_state": SALT_B.hex()}},
                                      hashing.LEDGER_PAYLOAD_FIELDS)
    erased = {**row, "before_state": None, "erased": ["before_state"],
              "salts": {k: v for k, v in salts.items() if k != "before_state"}}
    assert hashing.openings_match(erased, hashing.LEDGER_PAYLOAD_FIELDS)


def test_a_chain_of_v1_and_v2_entries_verifies_before_and_after_erasure():
    rows, prev = [], hashing.GENESIS
    for seq in range(1, 7):
        entry = {**ENTRY, "id": f"aud_{seq}"}
        if seq % 2:
            content, extra = hashing.ledger_content_hash(entry), {}
        else:
            commitments, _ = hashing.commit_payloads(entry, hashing.LEDGER_PAYLOAD_FIELDS)
            content, extra = hashing.ledger_content_hash_v2(entry, commitments), \
                {"hash_version": 2, "commitments": commitments}
        chain = hashing.chain_hash(prev, content)
        rows.append({**entry, **extra, "seq": seq, "content_hash": content, "prev_hash": prev, "chain_hash": chain})
        prev = chain
    assert verify.verify_chain(rows, verify.ledger_content_hash_of).ok
    erased = [{**r, "action_reason": None, "before_state": None, "after_state": None}
              if r.get("hash_version") == 2 else r for r in rows]
    assert verify.verify_chain(erased, verify.ledger_content_hash_of).ok
    # erasing a v1 entry's payload is not possible without breaking it: that is why v2 exists
    broken = [{**r, "after_state": None} if r["seq"] == 1 else r for r in rows]
    assert [a.kind for a in verify.verify_chain(broken, verify.ledger_content_hash_of).anomalies] == \
        [verify.CONTENT_MISMATCH]


def test_v2_steps_and_system_records():
    step = {"step_index": 0, "step_type": "llm_call", "input_data": {"prompt": "my address is"},
            "output_data": None, "timestamp": T}
    commitments, salts = hashing.commit_payloads(step, hashing.STEP_PAYLOAD_FIELDS)
    assert set(commitments) == {"input_data"}  # null stays null: nothing to erase
    content = hashing.step_content_hash_v2(step, commitments)
    doc = {"step_index": 0, "step_type": "llm_call", "input_data": commitments["input_data"], "output_data": None,
           "timestamp": "2026-03-01T12:00:00.123456Z", "hash_version": 2}
    assert content == hashlib.sha256(rfc8785.dumps(doc)).digest()
    row = {**step, "input_data": None, "hash_version": 2, "commitments": commitments, "content_hash": content}
    assert verify.verify_trace({}, [row]) == []
    record = {"id": "sys_1", "tenant_id": "t1", "component": "c", "event_type": "ERROR", "severity": "ERROR",
              "summary": "user jane failed", "details": {"ip": "1.2.3.4"}, "caused_by": "SYSTEM", "actor_id": None,
              "correlation_id": None, "run_id": "r", "environment_id": None, "created_at": T}
    commitments, _ = hashing.commit_payloads(record, hashing.SYSTEM_RECORD_PAYLOAD_FIELDS)
    content = hashing.system_record_content_hash_v2(record, commitments)
    assert hashing.stored_system_record_content_hash(
        {**record, "summary": "", "details": None, "hash_version": 2, "commitments": commitments}) == content


def test_an_unknown_version_is_refused():
    with pytest.raises(ValueError):
        hashing.stored_ledger_content_hash({**ENTRY, "hash_version": 3})
