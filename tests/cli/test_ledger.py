"""``ledger checkpoint | verify``: a kept checkpoint proves the ledger still extends it."""
from __future__ import annotations

import asyncio
import base64
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


@pytest.fixture
async def active(suite) -> dsse.PublicKey:
    """The service's active signing key, as the auditor obtains it out of band."""
    client = Client(suite, lambda: token(DEMO), 10)
    try:
        (key, *_) = await asyncio.to_thread(server_keys, client)
    finally:
        client.close()
    return key


@pytest.fixture
def pin(active) -> str:
    """--key as the README pins it: ListSigningKeys' public_key (base64 of the raw key)."""
    return base64.b64encode(active.raw).decode()


def forged(tmp_path, *, seq: int, chain_hash: str) -> tuple:
    """A checkpoint signed by a key of our own, and the keys file (a --trust file) that pins it."""
    key = dsse.SigningKey.generate()
    statement = {"tenant_id": DEMO, "seq": seq, "chain_hash": chain_hash,
                 "issued_at": rfc3339(datetime.now(timezone.utc))}
    envelope = dsse.envelope_json(dsse.sign_envelope(dsse.CHECKPOINT_PAYLOAD_TYPE, canonical_json(statement), key))
    checkpoint = integrity_pb2.LedgerCheckpoint(tenant_id=DEMO, seq=seq, chain_hash=chain_hash, dsse_envelope=envelope)
    path, keys = tmp_path / f"forged-{seq}.json", tmp_path / "own-keys.json"
    path.write_text(json_format.MessageToJson(checkpoint, preserving_proto_field_name=True))
    keys.write_text(json.dumps(dsse.keys_document([key.public])))
    return path, keys


async def test_checkpoint_then_verify(cli, checkpoint, pin):
    saved = json.loads(checkpoint.read_text())
    assert saved["tenant_id"] == DEMO and int(saved["seq"]) >= 15 and len(saved["chain_hash"]) == 64
    result = await cli("ledger", "verify", "--checkpoint", checkpoint, "--key", pin)
    assert result.code == 0, result.out + result.err
    assert "VALID" in result.out and "FAIL" not in result.out
    doc = json.loads((await cli("--json", "ledger", "verify", "--checkpoint", checkpoint, "--key", pin)).out)
    assert doc["valid"] and doc["anomalies"] == [] and doc["note"] is None
    assert [c["name"] for c in doc["checks"]] == ["signature", "statement", "chain", "checkpoint", "integrity"]
    assert doc["integrity_report"]["status"] == "INTEGRITY_STATUS_VERIFIED"


async def test_saved_keys_supply_a_pinned_id_but_grant_no_trust(cli, checkpoint, active, tmp_path):
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps(dsse.keys_document([active])))
    by_id = await cli("--json", "ledger", "verify", "--checkpoint", checkpoint, "--keys", keys, "--key", active.key_id)
    assert by_id.code == 0, by_id.out + by_id.err
    assert "64-bit key id only" in json.loads(by_id.out)["note"]
    # The keys file alone: information, not trust.
    alone = await cli("ledger", "verify", "--checkpoint", checkpoint, "--keys", keys)
    assert alone.code == 1 and "UNTRUSTED" in alone.out
    # Trusting another key: the service's checkpoint is not signed by it.
    wrong = forged(tmp_path, seq=1, chain_hash="00" * 32)[1]
    result = await cli("ledger", "verify", "--checkpoint", checkpoint, "--trust", wrong)
    assert result.code == 1 and "UNKNOWN_KEY" in result.out


async def test_an_edited_checkpoint_file_fails(cli, checkpoint, pin):
    saved = json.loads(checkpoint.read_text())
    saved["chain_hash"] = "ab" * 32  # the unsigned copy of a signed field
    checkpoint.write_text(json.dumps(saved))
    result = await cli("--json", "ledger", "verify", "--checkpoint", checkpoint, "--key", pin)
    assert result.code == 1
    checks = {c["name"]: c for c in json.loads(result.out)["checks"]}
    assert checks["signature"]["passed"] and not checks["statement"]["passed"]
    assert checks["checkpoint"]["passed"]  # judged by the signed statement, which still holds


async def test_rewritten_history_is_located_by_seq(cli, tmp_path):
    path, keys = forged(tmp_path, seq=3, chain_hash="ab" * 32)
    result = await cli("ledger", "verify", "--checkpoint", path, "--trust", keys)
    assert result.code == 1
    row = next(line for line in result.out.splitlines() if "CHECKPOINT_MISMATCH" in line)
    assert "│ 3 " in row and "INVALID" in result.out
    doc = json.loads((await cli("--json", "ledger", "verify", "--checkpoint", path, "--trust", keys)).out)
    (anomaly,) = doc["anomalies"]
    assert (anomaly["seq"], anomaly["expected"]) == ("3", "ab" * 32)
    assert {c["name"]: c["passed"] for c in doc["checks"]} == {
        "signature": True, "statement": True, "chain": True, "checkpoint": False, "integrity": True}


async def test_a_truncated_ledger_is_reported(cli, tmp_path):
    path, keys = forged(tmp_path, seq=10_000, chain_hash="cd" * 32)
    doc = json.loads((await cli("--json", "ledger", "verify", "--checkpoint", path, "--trust", keys)).out)
    assert not doc["valid"]
    assert [(a["found_by"], int(a["seq"]), a["kind"]) for a in doc["anomalies"]] == [
        ("client", 10_000, "ANOMALY_KIND_TRUNCATION")]


async def test_another_tenants_checkpoint_is_an_input_error(cli, checkpoint):
    result = await cli("ledger", "verify", "--checkpoint", checkpoint, tenant="tenant-acme")
    assert result.code == 2 and "tenant" in result.err


async def test_a_reindented_checkpoint_envelope_still_verifies_over_pae(cli, checkpoint, pin):
    """The signature covers PAE(payloadType, payload), not the envelope's text: an auditor's
    tools may re-indent the envelope or add a newline without breaking the checkpoint."""
    saved = json.loads(checkpoint.read_text())
    saved["dsse_envelope"] = json.dumps(json.loads(saved["dsse_envelope"]), indent=4) + "\n"
    checkpoint.write_text(json.dumps(saved, indent=1))
    result = await cli("--json", "ledger", "verify", "--checkpoint", checkpoint, "--key", pin)
    assert result.code == 0, result.out + result.err
    assert json.loads(result.out)["valid"]


async def test_with_no_pin_the_signature_is_untrusted_and_pins_decide(cli, checkpoint, active, pin, tmp_path):
    """The audited service's own ListSigningKeys vouches for nothing: with no --key/--trust the
    signature check fails (exit 1) saying what to pin; a pinned public key is the full pin, a
    pinned key id (its public key from the service) the weaker 64-bit one, and said so."""
    unpinned = await cli("--json", "ledger", "verify", "--checkpoint", checkpoint)
    assert unpinned.code == 1
    signature = {c["name"]: c for c in json.loads(unpinned.out)["checks"]}["signature"]
    assert not signature["passed"] and "UNTRUSTED" in signature["detail"] and "--key PUBLIC_KEY" in signature["detail"]
    assert active.key_id in signature["detail"]   # the key the checkpoint names, to look up out of band
    text = await cli("ledger", "verify", "--checkpoint", checkpoint)
    assert text.code == 1 and "UNTRUSTED" in text.out and "INVALID" in text.out
    by_key = await cli("--json", "ledger", "verify", "--checkpoint", checkpoint, "--key", pin)
    assert by_key.code == 0, by_key.out + by_key.err
    detail = {c["name"]: c for c in json.loads(by_key.out)["checks"]}["signature"]["detail"]
    assert "pinned by its public key" in detail and json.loads(by_key.out)["note"] is None
    by_id = await cli("ledger", "verify", "--checkpoint", checkpoint, "--key", active.key_id)
    assert by_id.code == 0, by_id.out + by_id.err
    assert "note: key" in by_id.out and "64-bit key id only" in by_id.out
    # A checkpoint signed by another key, that key in a keys file beside it: not trusted
    # while the auditor pins the service's key.
    path, keys = forged(tmp_path, seq=1, chain_hash="00" * 32)
    forged_result = await cli("ledger", "verify", "--checkpoint", path, "--keys", keys, "--key", pin)
    assert forged_result.code == 1 and "UNKNOWN_KEY" in forged_result.out
