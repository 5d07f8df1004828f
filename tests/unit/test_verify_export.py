"""The offline export verifier fails closed: trust only from keys the auditor pins, the
key valid at the signed signing time, the artifact's entries as the signed manifest
states them, envelopes checked over PAE whatever their whitespace.

Artifacts are rendered by the export service's own renderers and signed as its builder
signs them; the attacks edit files as an attacker with the artifact in hand would."""
from __future__ import annotations

import base64
import csv
import io
import json
import tracemalloc
import zipfile
from datetime import datetime, timedelta, timezone

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa as rsa_keys
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from securesystemslib.dsse import Envelope
from securesystemslib.signer import CryptoSigner, SSlibKey

from aos_evidence.kinds import ExportFormat
from aos_recording import dsse, hashing, verify_export
from aos_recording.verify_export import Verdict
from services.export import artifacts, bundles
from tests.unit.samples import ledger_entries

SIGNED_AT = datetime(2026, 11, 1, 12, 30, tzinfo=timezone.utc)
TENANT = "tenant-unit"


def ledger(n: int) -> list[dict]:
    return ledger_entries(n, TENANT)


def render(fmt: str, records: list[dict], key: dsse.SigningKey, subject=None) -> tuple[bytes, artifacts.Rendered]:
    head = {"format_version": bundles.FORMAT_VERSION, "tenant_id": TENANT, "scope": "AUDIT_SLICE",
            "subject": subject or {}, "bundle_type": "EVIDENCE"}
    chunks: list[bytes] = []
    sink = artifacts.Sink(lambda n, data: chunks.append(data))
    rendered = artifacts.render_slice(head, "audit_entry", iter([dict(r) for r in records]), ExportFormat(fmt),
                                      bundles.RecordWriter(), key, sink)
    return b"".join(chunks), rendered


def manifest_for(data: bytes, rendered, fmt: str, key: dsse.SigningKey, **changes) -> dict:
    """A manifest as services/export/builder.py writes it."""
    return {"format_version": "aos.export-manifest/v2", "export_id": "exp_unit", "tenant_id": TENANT,
            "scope": "AUDIT_SLICE", "format": fmt, "size": len(data), "checksum": hashing.sha256(data).hex(),
            "records": rendered.records, "created_at": hashing.rfc3339(SIGNED_AT),
            "signed_at": hashing.rfc3339(SIGNED_AT), "signed_by": key.public.key_id,
            "contents": rendered.contents, **changes}


def sign(manifest: dict, key: dsse.SigningKey) -> str:
    return dsse.envelope_json(dsse.sign_envelope(dsse.MANIFEST_PAYLOAD_TYPE, hashing.canonical_json(manifest), key))


@pytest.fixture(scope="module")
def key() -> dsse.SigningKey:
    return dsse.SigningKey.generate()


@pytest.fixture(scope="module")
def attacker() -> dsse.SigningKey:
    return dsse.SigningKey.generate()


@pytest.fixture
def export(key):
    """(artifact, envelope) of a JSON audit slice of 6 entries."""
    data, rendered = render("JSON", ledger(6), key)
    return data, sign(manifest_for(data, rendered, "JSON", key), key)


def files(tmp_path, data: bytes, envelope: str | None, keys=None) -> list[str]:
    (tmp_path / "artifact").write_bytes(data)
    args = [str(tmp_path / "artifact")]
    if envelope is not None:
        (tmp_path / "export.dsse.json").write_text(envelope)
        args += ["--envelope", str(tmp_path / "export.dsse.json")]
    if keys is not None:
        (tmp_path / "keys.json").write_text(json.dumps(dsse.keys_document(keys)))
        args += ["--keys", str(tmp_path / "keys.json")]
    return args


def checks(result) -> dict[str, verify_export.Check]:
    return {c.name: c for c in result.checks}


# --- the verdicts and their exit codes ----------------------------------------------------

def test_every_verdict_has_its_own_exit_code_documented_in_help(capsys):
    codes = [v.exit_code for v in Verdict]
    assert len(set(codes)) == len(codes) and Verdict.VALID.exit_code == 0
    with pytest.raises(SystemExit):
        verify_export.main(["--help"])
    shown = capsys.readouterr().out
    for verdict in Verdict:
        assert f"{verdict.exit_code}  {verdict.name}" in shown


def test_a_pinned_honest_export_is_valid(tmp_path, key, export):
    data, envelope = export
    result = verify_export.verify(data, envelope, verify_export.trust([key.public.key_id], listed=[key.public]))
    assert result.verdict is Verdict.VALID, [(c.name, c.detail) for c in result.checks if not c.passed]
    assert (result.signed_by, result.signed_at) == (key.public.key_id, hashing.rfc3339(SIGNED_AT))
    assert {"signature", "signing_key", "key_validity", "checksum", "size", "coverage", "ledger"} <= set(
        checks(result))
    assert verify_export.main(files(tmp_path, data, envelope, [key.public]) + ["--key", key.public.key_id]) == 0


# --- an artifact without a signed envelope --------------------------------------------------

@pytest.mark.parametrize("fmt", ["JSON", "ZIP"])
def test_an_unsigned_artifact_is_never_valid(tmp_path, key, fmt):
    data, _ = render(fmt, ledger(4), key)   # a ZIP carries its own package signature: not enough
    result = verify_export.verify(data, None, [key.public])
    assert result.verdict is Verdict.UNSIGNED and not result.ok
    assert "no signed envelope" in checks(result)["signature"].detail
    assert verify_export.main(files(tmp_path, data, None, [key.public]) + ["--key", key.public.key_id]) == 3


# --- trust comes only from pins -------------------------------------------------------------

def test_a_keys_file_alone_grants_no_trust_and_says_what_to_pin(tmp_path, key, export, capsys):
    data, envelope = export
    result = verify_export.verify(data, envelope, verify_export.trust(listed=[key.public]), [key.public])
    assert result.verdict is Verdict.UNTRUSTED_KEY
    assert "--key KEY_ID" in checks(result)["signing_key"].detail and key.public.key_id in \
        checks(result)["signing_key"].detail
    assert verify_export.main(files(tmp_path, data, envelope, [key.public])) == 4
    assert "UNTRUSTED_KEY" in capsys.readouterr().out


def test_an_attackers_manifest_with_the_attackers_key_in_keys_json_fails_unless_pinned(tmp_path, key, attacker):
    """The attacker rewrites the evidence, signs a fresh manifest with their own key and
    ships their key in keys.json: only the auditor pinning that very key accepts it."""
    records = ledger(6)
    records[2]["action_reason"] = "nothing to see"
    forged = dict(records[2], content_hash=hashing.ledger_content_hash(records[2]).hex())
    records[2] = forged   # (its chain no longer links: a real attacker would recompute every hash)
    data, rendered = render("JSON", records, attacker)
    envelope = sign(manifest_for(data, rendered, "JSON", attacker), attacker)
    args = files(tmp_path, data, envelope, [attacker.public])
    assert verify_export.main(args) == Verdict.UNTRUSTED_KEY.exit_code                                 # no pin
    assert verify_export.main(args + ["--key", key.public.key_id]) == Verdict.UNTRUSTED_KEY.exit_code  # ours pinned
    result = verify_export.verify(data, envelope, verify_export.trust([key.public.raw.hex()], listed=[attacker.public]),
                                  [attacker.public])
    assert f"key {attacker.public.key_id} (listed in the keys file)" in checks(result)["signing_key"].detail
    # The attacker's key pinned: the signature is accepted (what remains is the broken chain).
    pinned = verify_export.verify(data, envelope, verify_export.trust([attacker.public.key_id],
                                                                      listed=[attacker.public]))
    assert checks(pinned)["signing_key"].passed and checks(pinned)["signature"].passed


def test_pinning_the_attackers_key_is_what_makes_a_clean_forgery_valid(tmp_path, attacker):
    data, rendered = render("JSON", ledger(3), attacker)
    envelope = sign(manifest_for(data, rendered, "JSON", attacker), attacker)
    args = files(tmp_path, data, envelope, [attacker.public])
    assert verify_export.main(args) == 4
    assert verify_export.main(args + ["--key", attacker.public.key_id]) == 0


def test_a_keys_file_entry_under_the_pinned_id_with_another_key_is_refused(tmp_path, key, attacker, export):
    data, envelope = export
    doc = dsse.keys_document([attacker.public])
    doc["keys"][0]["key_id"] = key.public.key_id          # the attacker's key under our id
    (tmp_path / "keys.json").write_text(json.dumps(doc))
    args = files(tmp_path, data, envelope) + ["--keys", str(tmp_path / "keys.json"), "--key", key.public.key_id]
    assert verify_export.main(args) == Verdict.UNUSABLE_INPUT.exit_code


def test_a_pinned_id_with_no_public_key_anywhere_is_untrusted(key, export):
    data, envelope = export
    pinned = verify_export.trust([key.public.key_id])
    assert pinned.unresolved == [key.public.key_id]
    result = verify_export.verify(data, envelope, pinned)
    assert result.verdict is Verdict.UNTRUSTED_KEY and "no public key found" in checks(result)["signing_key"].detail


def _pem(key: dsse.SigningKey) -> str:
    return Ed25519PublicKey.from_public_bytes(key.public.raw).public_bytes(
        Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()


def test_every_pin_form(tmp_path, key, export):
    data, envelope = export
    (tmp_path / "pub.pem").write_text(_pem(key))
    for pin in (key.public.raw.hex(), base64.b64encode(key.public.raw).decode(), _pem(key), str(tmp_path / "pub.pem")):
        result = verify_export.verify(data, envelope, verify_export.trust([pin]))   # no keys file at all
        assert result.verdict is Verdict.VALID, pin
    for bad in ("abc", "0123456789ABCDEF", base64.b64encode(b"x" * 31).decode()):
        with pytest.raises(ValueError, match="--key"):
            verify_export.parse_pin(bad)


def test_a_key_id_pin_is_said_to_be_the_weaker_64_bit_pin_and_a_public_key_pin_is_not(tmp_path, key, export, capsys):
    """A key id is 64 bits (SPEC section 5) and its public key then comes from the keys file
    an attacker may have written: VALID, but the check and the VALID line say the pin is weak."""
    data, envelope = export
    by_id = verify_export.verify(data, envelope, verify_export.trust([key.public.key_id], listed=[key.public]),
                                 [key.public])
    assert by_id.verdict is Verdict.VALID
    assert "64-bit key id only" in checks(by_id)["signing_key"].detail and by_id.note
    assert by_id.as_dict()["note"] == by_id.note
    public = base64.b64encode(key.public.raw).decode()
    by_key = verify_export.verify(data, envelope, verify_export.trust([public], listed=[key.public]), [key.public])
    assert by_key.verdict is Verdict.VALID and by_key.note is None
    assert "64-bit" not in checks(by_key)["signing_key"].detail
    # A trust file's entry that carries only a key id is as weak; one with the public key is not.
    id_only = tmp_path / "ids.json"
    id_only.write_text(json.dumps({"keys": [{"key_id": key.public.key_id}]}))
    assert verify_export.verify(data, envelope, verify_export.trust(trust_files=[id_only], listed=[key.public])).note
    full = tmp_path / "full.json"
    full.write_text(json.dumps(dsse.keys_document([key.public])))
    assert verify_export.verify(data, envelope, verify_export.trust(trust_files=[full], listed=[key.public])).note \
        is None
    # The command's last line says it too, and --help says which pin is the weaker one.
    args = files(tmp_path, data, envelope, [key.public])
    assert verify_export.main(args + ["--key", key.public.key_id]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("VALID") and "64-bit key id only" in last
    assert verify_export.main(args + ["--key", public]) == 0
    assert "64-bit" not in capsys.readouterr().out
    with pytest.raises(SystemExit):
        verify_export.main(["--help"])
    assert "64-bit pin" in " ".join(capsys.readouterr().out.split())


def test_one_loader_reads_pem_and_keys_documents_for_every_caller(tmp_path, key, attacker):
    """--keys files, PEM --key pins and the service's verification key files share
    dsse.public_keys_from; each caller still names where the bad input came from."""
    pem, doc = tmp_path / "pub.pem", tmp_path / "keys.json"
    pem.write_text(_pem(key))
    doc.write_text(json.dumps(dsse.keys_document([attacker.public])))
    assert verify_export.load_keys([pem, doc]) == [key.public, attacker.public]
    assert verify_export.parse_pin(_pem(key)) == key.public.raw
    ring = dsse.KeyRing.load(_signing_pem(tmp_path, attacker), [pem])
    assert [k.key_id for k in ring.public_keys()] == [attacker.public.key_id, key.public.key_id]
    rsa = tmp_path / "rsa.pem"
    rsa.write_bytes(rsa_keys.generate_private_key(public_exponent=65537, key_size=2048).public_key().public_bytes(
        Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    with pytest.raises(ValueError, match=r"rsa\.pem: an export signing key is Ed25519, not RSAPublicKey"):
        verify_export.load_keys([rsa])
    with pytest.raises(ValueError, match=r"^--key: an export signing key is Ed25519"):
        verify_export.parse_pin(rsa.read_text())
    with pytest.raises(ValueError, match=r"rsa\.pem: an export signing key is Ed25519"):
        dsse.KeyRing.load(_signing_pem(tmp_path, attacker), [rsa])
    (tmp_path / "junk.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"junk\.json: neither a PEM public key nor a JSON keys document"):
        verify_export.load_keys([tmp_path / "junk.json"])


def _signing_pem(tmp_path, key: dsse.SigningKey):
    path = tmp_path / "signing.pem"
    path.write_bytes(key.private_pem())
    return path


def test_trust_files_ours_proto3_json_and_id_only(tmp_path, key, export):
    data, envelope = export
    ours = tmp_path / "trust.json"
    ours.write_text(json.dumps(dsse.keys_document([key.public])))
    camel = tmp_path / "buf.json"   # ListSigningKeys as buf curl prints it
    camel.write_text(json.dumps({"keys": [{"keyId": key.public.key_id, "algorithm": "ed25519",
                                           "publicKey": base64.b64encode(key.public.raw).decode(),
                                           "validFrom": "1970-01-01T00:00:00Z",
                                           "status": "SIGNING_KEY_STATUS_ACTIVE"}]}))
    id_only = tmp_path / "ids.json"
    id_only.write_text(json.dumps({"keys": [{"key_id": key.public.key_id}]}))
    for trust_file, listed in ((ours, []), (camel, []), (id_only, [key.public])):
        result = verify_export.verify(data, envelope, verify_export.trust(trust_files=[trust_file], listed=listed))
        assert result.verdict is Verdict.VALID, trust_file
    assert verify_export.verify(data, envelope, verify_export.trust(trust_files=[id_only])).verdict \
        is Verdict.UNTRUSTED_KEY   # an id with no key anywhere


# --- key validity at the signed signing time --------------------------------------------------

def _trust_file(tmp_path, key, **window) -> list:
    doc = dsse.keys_document([key.public])
    doc["keys"][0].update(window)
    (tmp_path / "trust.json").write_text(json.dumps(doc))
    return [tmp_path / "trust.json"]


@pytest.mark.parametrize("window", [
    {"valid_until": hashing.rfc3339(SIGNED_AT - timedelta(seconds=1))},   # signed after the key's end
    {"valid_until": hashing.rfc3339(SIGNED_AT)},                           # the end is exclusive
    {"valid_from": hashing.rfc3339(SIGNED_AT + timedelta(days=1))},        # signed before the key began
])
def test_a_signature_outside_the_pinned_keys_validity_fails(tmp_path, key, export, window):
    data, envelope = export
    pinned = verify_export.trust(trust_files=_trust_file(tmp_path, key, **window))
    result = verify_export.verify(data, envelope, pinned)
    assert result.verdict is Verdict.KEY_NOT_VALID_AT_SIGNING_TIME
    assert hashing.rfc3339(SIGNED_AT) in checks(result)["key_validity"].detail


def test_widening_valid_until_in_keys_json_does_not_help(tmp_path, key, export):
    data, envelope = export
    trust_files = _trust_file(tmp_path, key, valid_until=hashing.rfc3339(SIGNED_AT - timedelta(days=1)))
    widened = dsse.PublicKey.from_raw(key.public.raw)      # keys.json edited: no end at all
    args = files(tmp_path, data, envelope, [widened]) + ["--trust", str(trust_files[0])]
    assert verify_export.main(args) == Verdict.KEY_NOT_VALID_AT_SIGNING_TIME.exit_code


def test_a_keys_document_may_narrow_a_pinned_keys_window(tmp_path, key, export):
    """ListSigningKeys says the key retired before the export was signed: a key-id pin fails."""
    data, envelope = export
    retired = dsse.PublicKey.from_raw(key.public.raw, valid_until=SIGNED_AT - timedelta(hours=1), status="RETIRED")
    args = files(tmp_path, data, envelope, [retired]) + ["--key", key.public.key_id]
    assert verify_export.main(args) == Verdict.KEY_NOT_VALID_AT_SIGNING_TIME.exit_code


def test_the_signing_time_is_the_signed_one(tmp_path, key, export):
    """A later time in the envelope's unsigned members is not read; the manifest's is."""
    data, _ = export
    _, rendered = render("JSON", ledger(6), key)
    late = SIGNED_AT + timedelta(days=30)
    envelope = json.loads(sign(manifest_for(data, rendered, "JSON", key, signed_at=hashing.rfc3339(late)), key))
    envelope["signed_at"] = hashing.rfc3339(SIGNED_AT)      # unsigned: ignored
    window = _trust_file(tmp_path, key, valid_until=hashing.rfc3339(SIGNED_AT + timedelta(days=1)))
    result = verify_export.verify(data, json.dumps(envelope), verify_export.trust(trust_files=window))
    assert result.verdict is Verdict.KEY_NOT_VALID_AT_SIGNING_TIME and result.signed_at == hashing.rfc3339(late)


def test_a_manifest_without_a_signing_time_fails(key, export):
    data, _ = export
    _, rendered = render("JSON", ledger(6), key)
    manifest = manifest_for(data, rendered, "JSON", key)
    del manifest["signed_at"], manifest["created_at"]
    result = verify_export.verify(data, sign(manifest, key), [key.public])
    assert result.verdict is Verdict.KEY_NOT_VALID_AT_SIGNING_TIME


# --- slices: the entries the manifest states --------------------------------------------------

def _edits(records: list[dict]):
    dropped = records[:3] + records[4:]                        # seq 4 dropped
    extra = records[:3] + [records[2]] + records[3:]           # seq 3 twice
    reordered = records[:2] + [records[3], records[2]] + records[4:]
    return {"dropped": (dropped, "seq 4 is missing"), "extra": (extra, "seq 3 appears twice"),
            "reordered": (reordered, "seq 3 comes after seq 4")}


@pytest.mark.parametrize("edit", ["dropped", "extra", "reordered"])
@pytest.mark.parametrize("fmt", ["JSON", "CSV"])
def test_a_dropped_extra_or_reordered_ledger_entry_is_tampered_and_named(key, fmt, edit):
    records = ledger(6)
    data, rendered = render(fmt, records, key)
    envelope = sign(manifest_for(data, rendered, fmt, key), key)
    assert rendered.contents == {"audit_entry": {"count": 6, "first_seq": 1, "last_seq": 6, "contiguous": True}}
    assert verify_export.verify(data, envelope, [key.public]).ok
    changed_records, says = _edits(records)[edit]
    changed, _ = render(fmt, changed_records, key)
    result = verify_export.verify(changed, envelope, [key.public])
    assert result.verdict is Verdict.TAMPERED
    coverage = checks(result)["coverage"]
    assert not coverage.passed and says in coverage.detail, coverage.detail


def test_a_filtered_slice_with_a_dropped_entry_fails_on_its_count(key):
    records = ledger(6)[::2]       # seq 1, 3, 5: gaps are the filter's, not an attack
    data, rendered = render("JSON", records, key, subject={"event_type": "PolicyRuleCreated"})
    envelope = sign(manifest_for(data, rendered, "JSON", key), key)
    assert verify_export.verify(data, envelope, [key.public]).ok
    changed, _ = render("JSON", records[:1] + records[2:], key, subject={"event_type": "PolicyRuleCreated"})
    coverage = checks(verify_export.verify(changed, envelope, [key.public]))["coverage"]
    assert not coverage.passed and "2 carried, the manifest states 3" in coverage.detail


# --- ZIP packages -----------------------------------------------------------------------------

def _rezip(data: bytes, add: dict | None = None, drop: str | None = None) -> bytes:
    source = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as target:
        for info in source.infolist():
            if info.filename != drop:
                target.writestr(info, source.read(info))
        for name, content in (add or {}).items():
            target.writestr(name, content)
    return out.getvalue()


def test_an_extra_or_missing_zip_member_fails(key):
    data, rendered = render("ZIP", ledger(4), key)
    envelope = sign(manifest_for(data, rendered, "ZIP", key), key)
    assert verify_export.verify(data, envelope, [key.public]).ok
    extra = _rezip(data, add={"notes.txt": b"trust me"})
    detail = checks(verify_export.verify(extra, envelope, [key.public]))["package_manifest"].detail
    assert "notes.txt: not listed in the signed package manifest" in detail
    missing = _rezip(data, drop="report.pdf")
    result = verify_export.verify(missing, envelope, [key.public])
    assert result.verdict is Verdict.TAMPERED
    assert "report.pdf: listed, missing" in checks(result)["package_manifest"].detail


def test_a_duplicated_zip_member_fails(key):
    data, rendered = render("ZIP", ledger(4), key)
    envelope = sign(manifest_for(data, rendered, "ZIP", key), key)
    source = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as target, pytest.warns(UserWarning, match="Duplicate name"):
        for info in source.infolist():
            target.writestr(info, source.read(info))
        target.writestr("evidence.json", source.read("evidence.json"))   # a second copy, read by some tools
    detail = checks(verify_export.verify(out.getvalue(), envelope, [key.public]))["package_manifest"].detail
    assert "evidence.json: present 2 times" in detail


def _system_records(n: int) -> list[dict]:
    return [{"id": f"sys-{i}", "tenant_id": TENANT, "created_at": f"2026-11-01T12:{i:02d}:00.000000Z",
             "component": "api", "event_type": "DEPLOY", "severity": "INFO", "summary": "s", "details": {},
             "caused_by": "SYSTEM", "actor_id": None, "correlation_id": None, "run_id": None,
             "environment_id": None, "content_hash": "ab" * 32, "redacted": False} for i in range(n)]


@pytest.mark.parametrize("fmt", ["JSON", "CSV"])
def test_a_reordered_or_dropped_system_record_is_named(key, fmt):
    head = {"format_version": bundles.FORMAT_VERSION, "tenant_id": TENANT, "scope": "SYSTEM_SLICE",
            "subject": {}, "bundle_type": "EVIDENCE"}

    def slice_of(records):
        chunks: list[bytes] = []
        rendered = artifacts.render_slice(head, "system_record", iter([dict(r) for r in records]), ExportFormat(fmt),
                                          bundles.RecordWriter(), key, artifacts.Sink(lambda n, d: chunks.append(d)))
        return b"".join(chunks), rendered

    records = _system_records(4)
    data, rendered = slice_of(records)
    assert rendered.contents == {"system_record": {"count": 4}}
    envelope = sign(manifest_for(data, rendered, fmt, key, scope="SYSTEM_SLICE"), key)
    assert verify_export.verify(data, envelope, [key.public]).ok
    swapped, _ = slice_of([records[0], records[2], records[1], records[3]])
    assert "sys-1 comes after sys-2 (reordered)" in checks(verify_export.verify(swapped, envelope,
                                                                                 [key.public]))["coverage"].detail
    dropped, _ = slice_of(records[:3])
    assert "3 carried, the manifest states 4" in checks(verify_export.verify(dropped, envelope,
                                                                              [key.public]))["coverage"].detail


# --- DSSE: PAE, not the envelope's text -------------------------------------------------------

def test_whitespace_and_member_order_of_the_envelope_do_not_matter(tmp_path, key, export):
    data, envelope = export
    parsed = json.loads(envelope)
    variants = [envelope + "\n", json.dumps(parsed, indent=4), json.dumps(dict(reversed(list(parsed.items())))),
                json.dumps(parsed, indent=2).replace("\n", "\r\n") + "\r\n"]
    for text in variants:
        assert verify_export.verify(data, text, [key.public]).ok, text
        args = files(tmp_path, data, text, [key.public]) + ["--key", key.public.key_id]
        assert verify_export.main(args) == 0


def test_a_swapped_payload_type_fails(key, export):
    data, envelope = export
    for payload_type in (dsse.PACKAGE_PAYLOAD_TYPE, "application/json", dsse.MANIFEST_PAYLOAD_TYPE + " "):
        swapped = json.dumps({**json.loads(envelope), "payloadType": payload_type})
        assert verify_export.verify(data, swapped, [key.public]).verdict is Verdict.SIGNATURE_INVALID
    # Re-signed under the other type by the same key, it still is not an export manifest.
    other = dsse.envelope_json(dsse.sign_envelope(dsse.PACKAGE_PAYLOAD_TYPE,
                                                  base64.b64decode(json.loads(envelope)["payload"]), key))
    assert verify_export.verify(data, other, [key.public]).verdict is Verdict.SIGNATURE_INVALID


def test_a_manifest_naming_another_signer_fails(key, export):
    data, _ = export
    _, rendered = render("JSON", ledger(6), key)
    envelope = sign(manifest_for(data, rendered, "JSON", key, signed_by="0123456789abcdef"), key)
    assert verify_export.verify(data, envelope, [key.public]).verdict is Verdict.SIGNATURE_INVALID


def _sslib_key(public: dsse.PublicKey) -> SSlibKey:
    return SSlibKey.from_crypto(Ed25519PublicKey.from_public_bytes(public.raw), keyid=public.key_id)


def test_securesystemslib_signed_manifest_verifies_offline_and_ours_reindented_verifies_there(key, export):
    data, envelope = export
    payload = base64.b64decode(json.loads(envelope)["payload"])
    theirs = Envelope(payload, dsse.MANIFEST_PAYLOAD_TYPE, {})
    theirs.sign(CryptoSigner(key.private, _sslib_key(key.public)))
    assert verify_export.verify(data, json.dumps(theirs.to_dict(), indent=2), [key.public]).ok
    reindented = json.dumps(json.loads(envelope), indent=3, sort_keys=True) + "\n"
    accepted = Envelope.from_dict(json.loads(reindented)).verify([_sslib_key(key.public)], 1)
    assert list(accepted) == [key.public.key_id]


def test_csv_slice_chain_is_rechecked(key):
    records = ledger(5)
    data, rendered = render("CSV", records, key)
    rows = list(csv.reader(io.StringIO(data.decode())))
    rows[3][rows[0].index("chain_hash")] = "00" * 32
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerows(rows)
    envelope = sign(manifest_for(data, rendered, "CSV", key), key)
    result = verify_export.verify(out.getvalue().encode(), envelope, [key.public])
    assert not checks(result)["ledger"].passed and "seq 3: chain hash" in checks(result)["ledger"].detail


# --- hostile files: a verdict and its exit code, never a traceback --------------------------

def _encrypted_flag(data: bytes) -> bytes:
    """The ZIP with its first member marked encrypted (zipfile then raises RuntimeError)."""
    out = bytearray(data)
    out[6] |= 1
    central = out.rfind(b"PK\x01\x02")
    out[central + 8] |= 1
    return bytes(out)


def _corrupt_deflate(data: bytes) -> bytes:
    """The ZIP with its first member's deflate stream garbled (zipfile then raises zlib.error)."""
    out = bytearray(data)
    start = 30 + int.from_bytes(out[26:28], "little") + int.from_bytes(out[28:30], "little")
    for i in range(start, start + 16):
        out[i] ^= 0x55
    return bytes(out)


def test_hostile_inputs_end_in_a_failing_verdict_not_a_traceback(tmp_path, key, export, capsys):
    data, envelope = export
    pin = ["--key", key.public.key_id]
    deep = "[" * 5000 + "]" * 5000
    zipped, rendered = render("ZIP", ledger(3), key)
    zip_envelope = sign(manifest_for(zipped, rendered, "ZIP", key), key)
    csv_data, csv_rendered = render("CSV", ledger(3), key)
    csv_envelope = sign(manifest_for(csv_data, csv_rendered, "CSV", key), key)
    cases = {
        "deep envelope": (data, deep, [key.public]),
        "deep artifact": (deep.encode(), envelope, [key.public]),
        "encrypted zip member": (_encrypted_flag(zipped), zip_envelope, [key.public]),
        "corrupt deflate": (_corrupt_deflate(zipped), zip_envelope, [key.public]),
        "huge csv field": (b"seq,prev_hash\n1," + b"a" * 200_000 + b"\n", csv_envelope, [key.public]),
    }
    for name, (artifact, env, keys) in cases.items():
        case = tmp_path / name.replace(" ", "-")
        case.mkdir()
        code = verify_export.main(files(case, artifact, env, keys) + pin)
        assert code not in (0, None), name
    (tmp_path / "deep-keys.json").write_text(deep)
    for flag in ("--keys", "--trust"):
        case = tmp_path / f"deep{flag}"
        case.mkdir()
        code = verify_export.main(files(case, data, envelope) + pin + [flag, str(tmp_path / "deep-keys.json")])
        assert code == Verdict.UNUSABLE_INPUT.exit_code, flag
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.parametrize("last_seq", [None, "6"])
def test_a_manifest_seq_range_that_is_not_two_numbers_fails_coverage_instead_of_raising(key, last_seq):
    # A hostile manifest's range compared a seq with null or text: a TypeError out of verify().
    from aos_evidence.kinds import ExportFormat

    data, rendered = render(ExportFormat.JSON, ledger(6), key)
    contents = {"audit_entry": {**rendered.contents["audit_entry"], "last_seq": last_seq}}
    envelope = sign(manifest_for(data, rendered, "JSON", key, contents=contents), key)
    result = verify_export.verify(data, envelope, [key.public])
    coverage = checks(result)["coverage"]
    assert not result.ok and not coverage.passed
    assert "is not a range of numbers" in coverage.detail, coverage.detail


@pytest.mark.parametrize("fmt", ["JSON", "CSV", "ZIP"])
def test_a_large_artifact_is_verified_from_its_file_never_held_whole(tmp_path, key, fmt):
    """Issue #19: the verifier reads the artifact in blocks (hashing as it reads, ZIP members as
    they decompress, a slice's records one at a time): its peak memory stays below the size of
    the evidence it checks, where reading it whole held that size and parsing it several times
    more. What it keeps is a few dozen bytes per entry (seq and content hash: the leaves)."""
    data, rendered = render(fmt, ledger(4000), key)
    envelope = sign(manifest_for(data, rendered, fmt, key), key)
    if fmt == "ZIP":
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            evidence = archive.getinfo("evidence.json").file_size
    else:
        evidence = len(data)
    path = tmp_path / "artifact"
    path.write_bytes(data)
    del data
    tracemalloc.start()
    try:
        with path.open("rb") as artifact:
            result = verify_export.verify(artifact, envelope, [key.public])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert result.verdict is Verdict.VALID, [(c.name, c.detail) for c in result.checks if not c.passed]
    assert {c.name for c in result.checks} >= {"checksum", "size", "ledger", "coverage"}
    assert peak < evidence, f"peak {peak / 2**20:.2f} MiB verifying {evidence / 2**20:.2f} MiB of evidence"


@pytest.mark.parametrize("edit", [
    lambda d: d[:-1],                                            # cut short
    lambda d: d + b" {}",                                        # data after the object
    lambda d: d.replace(b'{"', b'{"scope":"AUDIT_SLICE","', 1),  # a member twice
    lambda d: d.replace(b'"records":[', b'"records":{"x":[', 1).replace(b']', b']}', 1),  # records not an array
    lambda d: b"[" + d + b"]",                                   # not an object
], ids=["truncated", "trailing", "duplicate-member", "records-not-array", "not-an-object"])
def test_a_streamed_bundle_that_is_not_one_fails_its_bundle_check(key, export, edit):
    data, envelope = export
    result = verify_export.verify(edit(data), envelope, [key.public])
    assert result.verdict is not Verdict.VALID
    failed = {c.name for c in result.checks if not c.passed}
    assert failed & {"bundle", "coverage", "ledger"}, [(c.name, c.detail) for c in result.checks]
