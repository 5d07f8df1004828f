"""aos_recording.intoto: an export manifest as an in-toto Statement v1 in DSSE, parsed and
validated by the in-toto project's own bindings (in-toto-attestation, PyPI)."""
import base64
import hashlib
import json

import pytest
from google.protobuf import json_format
from in_toto_attestation.v1 import statement as ita_statement, statement_pb2

from aos_recording import dsse, intoto

ARTIFACT = b"%PDF-1.7 an export's bytes"
MANIFEST = {
    "format_version": "aos.export-manifest/v2", "export_id": "exp-1", "tenant_id": "tenant-a",
    "scope": "RUN", "subject": {"run_id": "run-1"}, "bundle_type": "EVIDENCE", "format": "PDF",
    "content_type": "application/pdf", "filename": "exp-1.pdf", "size": len(ARTIFACT),
    "checksum": hashlib.sha256(ARTIFACT).hexdigest(), "records": 3,
    "created_at": "2026-12-06T12:00:00.000000Z", "signed_at": "2026-12-06T12:00:00.000000Z",
    "ledger_checkpoint": {"seq": 42, "chain_hash": "ab" * 32}, "previous_export_chain_hash": "00" * 32,
}


def test_statement_shape_and_in_toto_validates_it():
    key = dsse.SigningKey.generate()
    envelope = intoto.sign_export_statement(MANIFEST, key)
    assert envelope["payloadType"] == "application/vnd.in-toto+json"
    payload = base64.b64decode(envelope["payload"])
    # the in-toto project's bindings parse and validate it
    pb = json_format.Parse(payload, statement_pb2.Statement())
    parsed = ita_statement.Statement.copy_from_pb(pb)
    parsed.validate()
    assert parsed.pb.type == "https://in-toto.io/Statement/v1"
    assert parsed.pb.predicate_type == intoto.EXPORT_MANIFEST_PREDICATE_TYPE
    assert [(s.name, dict(s.digest)) for s in parsed.pb.subject] == [("exp-1.pdf", {"sha256": MANIFEST["checksum"]})]
    assert json_format.MessageToDict(parsed.pb.predicate) == json.loads(json.dumps(MANIFEST))
    # and ours opens it under the pinned key, giving the manifest back
    statement = intoto.open_export_statement(envelope, [key.public])
    assert statement["predicate"] == MANIFEST
    # reproducible: the same manifest, the same payload
    assert intoto.sign_export_statement(MANIFEST, key)["payload"] == envelope["payload"]


def test_tampered_or_foreign_statements_are_refused():
    key = dsse.SigningKey.generate()
    envelope = intoto.sign_export_statement(MANIFEST, key)
    with pytest.raises(dsse.DsseError):
        intoto.open_export_statement(envelope, [dsse.SigningKey.generate().public])
    payload = json.loads(base64.b64decode(envelope["payload"]))
    payload["subject"][0]["digest"]["sha256"] = "00" * 32
    forged = {**envelope, "payload": base64.b64encode(json.dumps(payload).encode()).decode()}
    with pytest.raises(dsse.DsseError):
        intoto.open_export_statement(forged, [key.public])
    # signed, but not what it should be: a subject that is not the manifest's artifact,
    # another predicate type, another statement type
    for change in ({"subject": [{"name": "other.pdf", "digest": {"sha256": MANIFEST["checksum"]}}]},
                   {"predicateType": "https://slsa.dev/provenance/v1"}, {"_type": "https://in-toto.io/Statement/v0.1"}):
        signed = dsse.sign_envelope(intoto.PAYLOAD_TYPE, json.dumps({**payload, **change,
                                    "subject": change.get("subject", intoto.export_statement(MANIFEST)["subject"])}).encode(), key)
        with pytest.raises(intoto.StatementError):
            intoto.open_export_statement(signed, [key.public])
    # the manifest's own DSSE type is not an in-toto statement
    manifest_envelope = dsse.sign_envelope(dsse.MANIFEST_PAYLOAD_TYPE, json.dumps(MANIFEST).encode(), key)
    with pytest.raises(dsse.DsseError):
        intoto.open_export_statement(manifest_envelope, [key.public])
    for bad in ({**MANIFEST, "checksum": "ABC"}, {k: v for k, v in MANIFEST.items() if k != "filename"}):
        with pytest.raises(intoto.StatementError):
            intoto.export_statement(bad)
