"""DSSE envelopes: the spec's encoding, tamper detection, key rotation, and an
independent cross-check against securesystemslib's DSSE implementation."""
import base64
import copy
import json
from datetime import datetime, timezone

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    BestAvailableEncryption,
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)
from securesystemslib.dsse import Envelope
from securesystemslib.exceptions import VerificationError
from securesystemslib.signer import CryptoSigner, SSlibKey

from aos_recording import dsse, hashing
from aos_recording.dsse import (
    CHECKPOINT_PAYLOAD_TYPE,
    MANIFEST_PAYLOAD_TYPE,
    DsseError,
    KeyRing,
    PublicKey,
    SigningKey,
    envelope_json,
    keys_document,
    load_keys_document,
    pae,
    sign_envelope,
    verify_envelope,
    write_public_key_pem,
)

PAYLOAD = hashing.canonical_json({"export_id": "exp-1", "tenant_id": "t", "checksum": "ab" * 32})
T2026 = datetime(2026, 1, 13, 12, 0, tzinfo=timezone.utc)


def _b64(data: bytes) -> str:
    return base64.standard_b64encode(data).decode()


def _flip(text: str, index: int = 0) -> str:
    """Flip one bit of one byte of base64 ``text``, keeping it valid base64."""
    data = bytearray(base64.b64decode(text))
    data[index] ^= 0x01
    return _b64(bytes(data))


def _reason(envelope, keys, payload_type=MANIFEST_PAYLOAD_TYPE, **kwargs) -> str:
    with pytest.raises(DsseError) as caught:
        verify_envelope(envelope, keys, payload_type, **kwargs)
    return caught.value.reason


@pytest.fixture(scope="module")
def key() -> SigningKey:
    return SigningKey.generate()


@pytest.fixture
def envelope(key) -> dict:
    return sign_envelope(MANIFEST_PAYLOAD_TYPE, PAYLOAD, key)


# --- the encoding --------------------------------------------------------------

def test_pae_matches_the_dsse_spec_vector():
    assert pae("http://example.com/HelloWorld", b"hello world") == \
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"


def test_pae_counts_utf8_bytes_not_characters():
    assert pae("é", b"\x00") == b"DSSEv1 2 \xc3\xa9 1 \x00"


def test_envelope_has_the_standard_dsse_json_shape(key, envelope):
    assert envelope == {
        "payload": _b64(PAYLOAD),
        "payloadType": MANIFEST_PAYLOAD_TYPE,
        "signatures": [{"keyid": key.public.key_id, "sig": envelope["signatures"][0]["sig"]}],
    }
    assert key.public.key_id == hashing.signing_key_id(key.public.raw)
    assert len(base64.b64decode(envelope["signatures"][0]["sig"], validate=True)) == 64
    text = envelope_json(envelope)
    assert json.loads(text) == envelope
    assert text == hashing.canonical_json(envelope).decode()  # sorted keys, no whitespace


def test_sign_verify_roundtrip_from_dict_text_and_bytes(key, envelope):
    text = envelope_json(envelope)
    for form in (envelope, text, text.encode()):
        assert verify_envelope(form, [key.public], MANIFEST_PAYLOAD_TYPE) == PAYLOAD
    assert verify_envelope(envelope, {key.public.key_id: key.public}, MANIFEST_PAYLOAD_TYPE) == PAYLOAD


def test_ed25519_signing_is_deterministic(key):
    first = envelope_json(sign_envelope(MANIFEST_PAYLOAD_TYPE, PAYLOAD, key))
    second = envelope_json(sign_envelope(MANIFEST_PAYLOAD_TYPE, PAYLOAD, key))
    assert first == second
    assert envelope_json(sign_envelope(MANIFEST_PAYLOAD_TYPE, PAYLOAD, SigningKey.generate())) != first


def test_verify_does_not_modify_the_envelope(key, envelope):
    before = copy.deepcopy(envelope)
    verify_envelope(envelope, [key.public], MANIFEST_PAYLOAD_TYPE)
    assert envelope == before


# --- tampering -----------------------------------------------------------------

@pytest.mark.parametrize("index", [0, 17, -1])
def test_a_flipped_payload_byte_is_a_bad_signature(key, envelope, index):
    envelope["payload"] = _flip(envelope["payload"], index)
    assert _reason(envelope, [key.public]) == "BAD_SIGNATURE"


@pytest.mark.parametrize("index", [0, 31, 63])
def test_a_flipped_signature_byte_is_a_bad_signature(key, envelope, index):
    envelope["signatures"][0]["sig"] = _flip(envelope["signatures"][0]["sig"], index)
    assert _reason(envelope, [key.public]) == "BAD_SIGNATURE"


def test_a_truncated_signature_is_a_bad_signature(key, envelope):
    envelope["signatures"][0]["sig"] = _b64(base64.b64decode(envelope["signatures"][0]["sig"])[:63])
    assert _reason(envelope, [key.public]) == "BAD_SIGNATURE"


def test_a_changed_payload_type_is_refused(key, envelope):
    assert _reason(envelope, [key.public], CHECKPOINT_PAYLOAD_TYPE) == "WRONG_PAYLOAD_TYPE"
    # Relabelling the envelope itself: the type is signed, so the signature breaks.
    envelope["payloadType"] = CHECKPOINT_PAYLOAD_TYPE
    assert _reason(envelope, [key.public]) == "WRONG_PAYLOAD_TYPE"
    assert _reason(envelope, [key.public], CHECKPOINT_PAYLOAD_TYPE) == "BAD_SIGNATURE"


def test_an_unknown_keyid_is_refused(key, envelope):
    other = SigningKey.generate()
    assert _reason(envelope, [other.public]) == "UNKNOWN_KEY"
    assert _reason(envelope, []) == "UNKNOWN_KEY"
    envelope["signatures"][0]["keyid"] = other.public.key_id
    assert _reason(envelope, [key.public]) == "UNKNOWN_KEY"
    # Naming a known key does not help a signature made by another one.
    assert _reason(envelope, [other.public]) == "BAD_SIGNATURE"


def test_an_envelope_without_signatures_is_refused(key, envelope):
    envelope["signatures"] = []
    assert _reason(envelope, [key.public]) == "UNKNOWN_KEY"


@pytest.mark.parametrize("mangle", [
    lambda e: "{not json",
    lambda e: b"\xff\xfe",
    lambda e: "[]",
    lambda e: {**e, "payload": "not base64!"},
    lambda e: {**e, "payload": "QUJD="},  # misplaced padding
    lambda e: {**e, "payload": "Ã©"},  # non-ASCII
    lambda e: {**e, "signatures": [{"keyid": e["signatures"][0]["keyid"], "sig": "%%%"}]},
    lambda e: {k: v for k, v in e.items() if k != "payload"},
    lambda e: {k: v for k, v in e.items() if k != "payloadType"},
    lambda e: {k: v for k, v in e.items() if k != "signatures"},
    lambda e: {**e, "payload": 5},
    lambda e: {**e, "signatures": {"keyid": "x", "sig": "AA=="}},
    lambda e: {**e, "signatures": ["AA=="]},
    lambda e: {**e, "signatures": [{"keyid": e["signatures"][0]["keyid"]}]},
    lambda e: {**e, "signatures": [{"keyid": 7, "sig": e["signatures"][0]["sig"]}]},
], ids=["bad-json", "bad-utf8", "not-an-object", "payload-alphabet", "payload-padding", "payload-non-ascii",
        "sig-not-base64", "no-payload", "no-type", "no-signatures", "payload-not-string", "signatures-not-list",
        "signature-not-object", "no-sig", "keyid-not-string"])
def test_malformed_envelopes_are_refused(key, envelope, mangle):
    assert _reason(mangle(envelope), [key.public]) == "MALFORMED_ENVELOPE"


def test_a_tampered_envelope_json_text_is_caught(key, envelope):
    text = envelope_json(envelope)
    assert _reason(text.replace(envelope["payload"], _flip(envelope["payload"], 3)), [key.public]) == \
        "BAD_SIGNATURE"
    assert _reason(text[:-1], [key.public]) == "MALFORMED_ENVELOPE"


# --- what DSSE allows ------------------------------------------------------------

def test_unknown_extra_signatures_and_fields_are_ignored(key, envelope):
    stranger = sign_envelope(MANIFEST_PAYLOAD_TYPE, PAYLOAD, SigningKey.generate())["signatures"][0]
    garbage = {"keyid": "feedfacefeedface", "sig": _b64(b"\x00" * 64)}
    envelope["signatures"] = [stranger, garbage, *envelope["signatures"]]
    envelope["comment"] = "producers may add fields"
    assert verify_envelope(envelope, [key.public], MANIFEST_PAYLOAD_TYPE) == PAYLOAD


def test_a_signature_without_keyid_is_tried_against_every_key(key, envelope):
    del envelope["signatures"][0]["keyid"]
    others = [SigningKey.generate().public for _ in range(2)]
    assert verify_envelope(envelope, [*others, key.public], MANIFEST_PAYLOAD_TYPE) == PAYLOAD
    envelope["signatures"][0]["keyid"] = ""
    assert verify_envelope(envelope, [*others, key.public], MANIFEST_PAYLOAD_TYPE) == PAYLOAD
    assert _reason(envelope, others) == "BAD_SIGNATURE"


def test_url_safe_and_unpadded_base64_are_accepted(key):
    payload = b"\xfb\xff\xfe" * 7 + b"!"  # encodes with +, / and padding
    envelope = sign_envelope(MANIFEST_PAYLOAD_TYPE, payload, key)
    assert "+" in envelope["payload"] and "/" in envelope["payload"] and envelope["payload"].endswith("=")
    url_safe = {**envelope, "payload": base64.urlsafe_b64encode(payload).decode().rstrip("=")}
    assert verify_envelope(url_safe, [key.public], MANIFEST_PAYLOAD_TYPE) == payload


def test_key_validity_window_is_checked_when_a_time_is_given(key):
    dated = SigningKey.from_private(key.private, valid_from=T2026)
    envelope = sign_envelope(MANIFEST_PAYLOAD_TYPE, PAYLOAD, dated)
    retired = PublicKey.from_raw(key.public.raw, T2026, datetime(2026, 6, 1, tzinfo=timezone.utc), "RETIRED")
    assert verify_envelope(envelope, [retired], MANIFEST_PAYLOAD_TYPE, at=T2026) == PAYLOAD
    assert verify_envelope(envelope, [retired], MANIFEST_PAYLOAD_TYPE) == PAYLOAD  # no time, no window
    assert _reason(envelope, [retired], at=datetime(2025, 12, 31, tzinfo=timezone.utc)) == "KEY_NOT_VALID_AT"
    assert _reason(envelope, [retired], at=retired.valid_until) == "KEY_NOT_VALID_AT"  # end is exclusive
    assert verify_envelope(envelope, [dated.public], MANIFEST_PAYLOAD_TYPE,
                           at=datetime(2100, 1, 1)) == PAYLOAD  # noqa: DTZ001 - a naive time means UTC
    # A forged signature stays BAD_SIGNATURE, whatever the time.
    envelope["payload"] = _flip(envelope["payload"])
    assert _reason(envelope, [retired], at=datetime(2020, 1, 1)) == "BAD_SIGNATURE"  # noqa: DTZ001 - naive: UTC


# --- keys ----------------------------------------------------------------------

def test_public_key_checks_its_id_and_size(key):
    with pytest.raises(ValueError, match="does not match"):
        PublicKey("0123456789abcdef", key.public.raw)
    with pytest.raises(ValueError, match="32"):
        PublicKey.from_raw(b"\x01" * 31)
    with pytest.raises(ValueError, match="status"):
        PublicKey.from_raw(key.public.raw, status="REVOKED")
    assert PublicKey.from_raw(key.public.raw).valid_from == datetime(1970, 1, 1, tzinfo=timezone.utc)
    with pytest.raises(ValueError, match="not the private key"):
        SigningKey(key.private, SigningKey.generate().public)


def test_keys_document_roundtrip(key):
    retired = PublicKey.from_raw(SigningKey.generate().public.raw, T2026,
                                 datetime(2026, 6, 1, 8, 30, tzinfo=timezone.utc), "RETIRED")
    doc = keys_document([key.public, retired])
    assert doc == {"keys": [
        {"key_id": key.public.key_id, "algorithm": "ed25519", "public_key": _b64(key.public.raw),
         "valid_from": "1970-01-01T00:00:00.000000Z", "valid_until": None, "status": "ACTIVE"},
        {"key_id": retired.key_id, "algorithm": "ed25519", "public_key": _b64(retired.raw),
         "valid_from": "2026-01-13T12:00:00.000000Z", "valid_until": "2026-06-01T08:30:00.000000Z",
         "status": "RETIRED"},
    ]}
    assert load_keys_document(doc) == [key.public, retired]
    assert load_keys_document(json.dumps(doc)) == [key.public, retired]


def test_keys_document_from_a_file(tmp_path, key):
    path = tmp_path / "keys.json"
    path.write_text(json.dumps(keys_document([key.public])))
    assert load_keys_document(path) == [key.public]


def test_keys_document_with_a_mismatched_key_id_is_rejected(key):
    doc = keys_document([key.public])
    doc["keys"][0]["key_id"] = SigningKey.generate().public.key_id
    with pytest.raises(ValueError, match=r"keys\[0\].*does not match"):
        load_keys_document(doc)


@pytest.mark.parametrize("change, message", [
    ({"algorithm": "rsa"}, "algorithm"),
    ({"public_key": "%%%"}, "keys"),
    ({"public_key": _b64(b"\x01" * 33)}, "32"),
    ({"valid_from": "yesterday"}, "keys"),
    ({"valid_from": "2026-01-13T12:00:00"}, "time zone"),
    ({"valid_until": 5}, "valid_until"),
    ({"status": "LOST"}, "status"),
])
def test_keys_document_entries_are_validated(key, change, message):
    doc = keys_document([key.public])
    doc["keys"][0].update(change)
    with pytest.raises(ValueError, match=message):
        load_keys_document(doc)


def test_keys_document_needs_every_field_and_a_key_list(key):
    doc = keys_document([key.public])
    del doc["keys"][0]["valid_from"]
    with pytest.raises(ValueError, match="valid_from"):
        load_keys_document(doc)
    with pytest.raises(ValueError, match="keys"):
        load_keys_document({"key": []})


# --- the key ring and rotation -------------------------------------------------

def _write_private(path, private) -> None:
    path.write_bytes(private.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))


def test_rotation_keeps_retired_keys_listed_and_verifiable(tmp_path):
    old, new = SigningKey.generate(), SigningKey.generate()
    old_envelope = sign_envelope(MANIFEST_PAYLOAD_TYPE, PAYLOAD, old)
    _write_private(tmp_path / "signing.pem", new.private)
    write_public_key_pem(old.public, tmp_path / "old.pem")

    ring = KeyRing.load(tmp_path / "signing.pem", [tmp_path / "old.pem"])

    assert ring.active.public == new.public
    assert [(k.key_id, k.status) for k in ring.public_keys()] == \
        [(new.public.key_id, "ACTIVE"), (old.public.key_id, "RETIRED")]
    assert ring.get(old.public.key_id).raw == old.public.raw
    assert ring.get("0000000000000000") is None
    assert verify_envelope(old_envelope, ring.public_keys(), MANIFEST_PAYLOAD_TYPE) == PAYLOAD
    new_envelope = sign_envelope(MANIFEST_PAYLOAD_TYPE, PAYLOAD, ring.active)
    assert verify_envelope(new_envelope, ring.public_keys(), MANIFEST_PAYLOAD_TYPE) == PAYLOAD
    # What an auditor saved lists both keys and still verifies the old export.
    saved = load_keys_document(json.dumps(keys_document(ring.public_keys())))
    assert verify_envelope(old_envelope, saved, MANIFEST_PAYLOAD_TYPE) == PAYLOAD


def test_ring_lists_active_first_then_retired_by_key_id_without_duplicates(tmp_path):
    active = SigningKey.generate()
    retired = [SigningKey.generate().public for _ in range(4)]
    ring = KeyRing(active, [*retired, retired[0], active.public])
    keys = ring.public_keys()
    assert keys[0] == active.public
    assert [k.key_id for k in keys[1:]] == sorted(k.key_id for k in retired)
    assert all(k.status == "RETIRED" for k in keys[1:])


def test_ring_loads_verification_keys_from_a_json_keys_document(tmp_path):
    old, older, new = SigningKey.generate(), SigningKey.generate(), SigningKey.generate()
    window = PublicKey.from_raw(older.public.raw, T2026, datetime(2026, 3, 1, tzinfo=timezone.utc), "RETIRED")
    # A document published while ``old`` was active: it says ACTIVE, but it is retired now.
    (tmp_path / "keys.json").write_text(json.dumps(keys_document([old.public, window, new.public])))
    _write_private(tmp_path / "signing.pem", new.private)

    ring = KeyRing.load(tmp_path / "signing.pem", [tmp_path / "keys.json"])

    assert ring.get(new.public.key_id).status == "ACTIVE"
    assert ring.get(old.public.key_id).status == "RETIRED"
    assert ring.get(older.public.key_id) == window
    assert len(ring.public_keys()) == 3


def _rsa_private():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.mark.parametrize("make", [
    lambda: _rsa_private().private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()),
    lambda: ec.generate_private_key(ec.SECP256R1()).private_bytes(Encoding.PEM, PrivateFormat.PKCS8,
                                                                   NoEncryption()),
    lambda: b"not a key",
    lambda: Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.PEM,
                                                                   PublicFormat.SubjectPublicKeyInfo),
], ids=["rsa", "ecdsa", "garbage", "public-key"])
def test_load_rejects_a_signing_key_that_is_not_an_ed25519_private_key(tmp_path, make):
    path = tmp_path / "odd-signing-key.pem"
    path.write_bytes(make())
    with pytest.raises(ValueError, match=r"odd-signing-key\.pem"):
        KeyRing.load(path)


def test_load_rejects_an_encrypted_signing_key(tmp_path):
    path = tmp_path / "locked.pem"
    path.write_bytes(Ed25519PrivateKey.generate().private_bytes(
        Encoding.PEM, PrivateFormat.PKCS8, BestAvailableEncryption(b"secret")))
    with pytest.raises(ValueError, match=r"locked\.pem"):
        KeyRing.load(path)


@pytest.mark.parametrize("make", [
    lambda: _rsa_private().public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo),
    lambda: b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
    lambda: b'{"keys": [{"algorithm": "rsa"}]}',
    lambda: b"plain text",
], ids=["rsa", "bad-pem", "json-not-ed25519", "garbage"])
def test_load_rejects_a_verification_key_that_is_not_ed25519(tmp_path, make):
    _write_private(tmp_path / "signing.pem", Ed25519PrivateKey.generate())
    path = tmp_path / "odd-verification-key.pem"
    path.write_bytes(make())
    with pytest.raises(ValueError, match=r"odd-verification-key\.pem"):
        KeyRing.load(tmp_path / "signing.pem", [path])


def test_load_names_a_missing_file(tmp_path):
    with pytest.raises(ValueError, match=r"missing\.pem"):
        KeyRing.load(tmp_path / "missing.pem")


# --- independent cross-check with securesystemslib --------------------------------

def _sslib_key(public: PublicKey) -> SSlibKey:
    # securesystemslib's keyid is free-form: give it ours so signatures match up.
    return SSlibKey.from_crypto(Ed25519PublicKey.from_public_bytes(public.raw), keyid=public.key_id)


def test_securesystemslib_verifies_our_envelopes(key, envelope):
    parsed = Envelope.from_dict(json.loads(envelope_json(envelope)))  # from_dict mutates its input
    assert parsed.payload == PAYLOAD and parsed.payload_type == MANIFEST_PAYLOAD_TYPE
    assert parsed.pae() == pae(MANIFEST_PAYLOAD_TYPE, PAYLOAD)
    accepted = parsed.verify(keys=[_sslib_key(key.public)], threshold=1)
    assert list(accepted) == [key.public.key_id]


def test_securesystemslib_rejects_our_tampered_envelopes(key, envelope):
    envelope["payload"] = _flip(envelope["payload"])
    with pytest.raises(VerificationError):
        Envelope.from_dict(envelope).verify(keys=[_sslib_key(key.public)], threshold=1)


def test_we_verify_securesystemslib_envelopes(key):
    signer = CryptoSigner(key.private, _sslib_key(key.public))
    theirs = Envelope(PAYLOAD, MANIFEST_PAYLOAD_TYPE, {})
    theirs.sign(signer)
    as_dict = theirs.to_dict()
    assert verify_envelope(as_dict, [key.public], MANIFEST_PAYLOAD_TYPE) == PAYLOAD
    assert verify_envelope(json.dumps(as_dict, indent=2), [key.public], MANIFEST_PAYLOAD_TYPE) == PAYLOAD
    # Ed25519 is deterministic, so both implementations produce the very same envelope.
    assert as_dict == sign_envelope(MANIFEST_PAYLOAD_TYPE, PAYLOAD, key)


def test_we_reject_securesystemslib_envelopes_by_other_keys():
    signer = CryptoSigner.generate_ed25519()  # securesystemslib's own key and keyid
    theirs = Envelope(PAYLOAD, MANIFEST_PAYLOAD_TYPE, {})
    theirs.sign(signer)
    assert _reason(theirs.to_dict(), [SigningKey.generate().public]) == "UNKNOWN_KEY"


def test_what_dsse_does_not_sign_does_not_matter():
    """Verifiers check PAE(payloadType, payload) (SPEC §5): a dropped keyid, extra members and
    whitespace leave the signature valid; the payload and its type are what is signed."""
    key = dsse.SigningKey.generate()
    envelope = dsse.sign_envelope(dsse.MANIFEST_PAYLOAD_TYPE, b'{"size":1}', key)
    tolerated = [
        json.dumps(envelope, indent=3) + "\n",
        dsse.envelope_json({**envelope, "extra": 1}),
        dsse.envelope_json({**envelope, "signatures": [{"sig": envelope["signatures"][0]["sig"]}]}),
    ]
    for variant in tolerated:
        assert dsse.verify_envelope(variant, [key.public], dsse.MANIFEST_PAYLOAD_TYPE) == b'{"size":1}'
