"""``ledger checkpoint | verify``: a kept checkpoint proves the ledger still extends it."""
from __future__ import annotations

import asyncio
import json
from datetime import datetime, timezone

import pytest
from google.protobuf import json_format

from aos.evidence.v1 import integrity_pb2
from aos_cli.client import Client
from aos_cli.keys import server_keys
from aos_recording import dsse
from aos_recording.hashing import canonical_json, rfc3339
from tests.e2e.support import DEMO, token

pytestmark = pytest.mark.db


@pytest.fixture
async def checkpoint(cli, tmp_path):
    path = tmp_path / "cp.json"
    result = await cli("ledger", "checkpoint", "-o", path)
    assert result.code == 0, result.err
    assert str(path) in result.out
    return path


def forged(tmp_path, *, seq: int, chain_hash: str) -> tuple:
    """A checkpoint signed by a key of our own, and the keys file that trusts it."""
    key = dsse.SigningKey.generate()
    statement = {"tenant_id": DEMO, "seq": seq, "chain_hash": chain_hash,
                 "issued_at": rfc3339(datetime.now(timezone.utc))}
    envelope = dsse.envelope_json(dsse.sign_envelope(dsse.CHECKPOINT_PAYLOAD_TYPE, canonical_json(statement), key))
    checkpoint = integrity_pb2.LedgerCheckpoint(tenant_id=DEMO, seq=seq, chain_hash=chain_hash, dsse_envelope=envelope)
    path, keys = tmp_path / f"forged-{seq}.json", tmp_path / "own-keys.json"
    path.write_text(json_format.MessageToJson(checkpoint, preserving_proto_field_name=True))
    keys.write_text(json.dumps(dsse.keys_document([key.public])))
    return path, keys


async def test_checkpoint_then_verify(cli, checkpoint):
    saved = json.loads(checkpoint.read_text())
    assert saved["tenant_id"] == DEMO and int(saved["seq"]) >= 15 and len(saved["chain_hash"]) == 64
    result = await cli("ledger", "verify", "--checkpoint", checkpoint)
    assert result.code == 0, result.out + result.err
    assert "VALID" in result.out and "FAIL" not in result.out
    doc = json.loads((await cli("--json", "ledger", "verify", "--checkpoint", checkpoint)).out)
    assert doc["valid"] and doc["anomalies"] == []
    assert [c["name"] for c in doc["checks"]] == ["signature", "statement", "chain", "checkpoint", "integrity"]
    assert doc["integrity_report"]["status"] == "INTEGRITY_STATUS_VERIFIED"


async def test_saved_keys_verify_the_checkpoint_too(cli, suite, checkpoint, tmp_path):
    client = Client(suite, lambda: token(DEMO), 10)
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps(dsse.keys_document(await asyncio.to_thread(server_keys, client))))
    client.close()
    assert (await cli("ledger", "verify", "--checkpoint", checkpoint, "--keys", keys)).code == 0
    wrong = forged(tmp_path, seq=1, chain_hash="00" * 32)[1]
    result = await cli("ledger", "verify", "--checkpoint", checkpoint, "--keys", wrong)
    assert result.code == 1 and "UNKNOWN_KEY" in result.out


async def test_an_edited_checkpoint_file_fails(cli, checkpoint):
    saved = json.loads(checkpoint.read_text())
    saved["chain_hash"] = "ab" * 32  # the unsigned copy of a signed field
    checkpoint.write_text(json.dumps(saved))
    result = await cli("--json", "ledger", "verify", "--checkpoint", checkpoint)
    assert result.code == 1
    checks = {c["name"]: c for c in json.loads(result.out)["checks"]}
    assert checks["signature"]["passed"] and not checks["statement"]["passed"]
    assert checks["checkpoint"]["passed"]  # judged by the signed statement, which still holds


async def test_rewritten_history_is_located_by_seq(cli, tmp_path):
    path, keys = forged(tmp_path, seq=3, chain_hash="ab" * 32)
    result = await cli("ledger", "verify", "--checkpoint", path, "--keys", keys)
    assert result.code == 1
    row = next(line for line in result.out.splitlines() if "CHECKPOINT_MISMATCH" in line)
    assert "│ 3 " in row and "INVALID" in result.out
    doc = json.loads((await cli("--json", "ledger", "verify", "--checkpoint", path, "--keys", keys)).out)
    (anomaly,) = doc["anomalies"]
    assert (anomaly["seq"], anomaly["expected"]) == ("3", "ab" * 32)
    assert {c["name"]: c["passed"] for c in doc["checks"]} == {
        "signature": True, "statement": True, "chain": True, "checkpoint": False, "integrity": True}


async def test_a_truncated_ledger_is_reported(cli, tmp_path):
    path, keys = forged(tmp_path, seq=10_000, chain_hash="cd" * 32)
    doc = json.loads((await cli("--json", "ledger", "verify", "--checkpoint", path, "--keys", keys)).out)
    assert not doc["valid"]
    assert [(a["found_by"], int(a["seq"]), a["kind"]) for a in doc["anomalies"]] == [
        ("client", 10_000, "ANOMALY_KIND_TRUNCATION")]


async def test_another_tenants_checkpoint_is_an_input_error(cli, checkpoint):
    result = await cli("ledger", "verify", "--checkpoint", checkpoint, tenant="tenant-acme")
    assert result.code == 2 and "tenant" in result.err


async def test_a_reindented_checkpoint_envelope_still_verifies_over_pae(cli, checkpoint):
    """The signature covers PAE(payloadType, payload), not the envelope's text: an auditor's
    tools may re-indent the envelope or add a newline without breaking the checkpoint."""
    saved = json.loads(checkpoint.read_text())
    saved["dsse_envelope"] = json.dumps(json.loads(saved["dsse_envelope"]), indent=4) + "\n"
    checkpoint.write_text(json.dumps(saved, indent=1))
    result = await cli("--json", "ledger", "verify", "--checkpoint", checkpoint)
    assert result.code == 0, result.out + result.err
    assert json.loads(result.out)["valid"]


async def test_pinned_keys_decide_and_the_source_of_trust_is_said(cli, suite, checkpoint, tmp_path):
    client = Client(suite, lambda: token(DEMO), 10)
    (active, *_) = await asyncio.to_thread(server_keys, client)
    client.close()
    unpinned = json.loads((await cli("--json", "ledger", "verify", "--checkpoint", checkpoint)).out)
    assert "not pinned" in {c["name"]: c for c in unpinned["checks"]}["signature"]["detail"]
    pinned = await cli("--json", "ledger", "verify", "--checkpoint", checkpoint, "--key", active.key_id)
    assert pinned.code == 0, pinned.out + pinned.err
    assert "(pinned)" in {c["name"]: c for c in json.loads(pinned.out)["checks"]}["signature"]["detail"]
    # A checkpoint signed by another key, that key in a keys file beside it: not trusted
    # while the auditor pins the service's key.
    path, keys = forged(tmp_path, seq=1, chain_hash="00" * 32)
    forged_result = await cli("ledger", "verify", "--checkpoint", path, "--keys", keys, "--key", active.key_id)
    assert forged_result.code == 1 and "UNKNOWN_KEY" in forged_result.out
