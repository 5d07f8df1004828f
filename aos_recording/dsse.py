"""DSSE v1 envelopes signed with Ed25519: how exports, checkpoints and packages are signed.

The envelope is the standard DSSE JSON form
(https://github.com/secure-systems-lab/dsse, protocol v1), so any DSSE verifier can
check an export given our public key; the signature covers
``PAE(payloadType, payload)``. A key's id is ``hashing.signing_key_id`` of its raw
32-byte public key.

Keys rotate: a ``KeyRing`` holds the one active signing key plus the public halves
of retired keys, which stay listed (``keys_document``) and verifiable for as long as
exports signed with them exist.

A key read from a PEM file has no validity window of its own (file times are not
reproducible), so it is valid from the Unix epoch with no end unless a keys document
says otherwise.
"""
from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_pem_private_key,
    load_pem_public_key,
)

from aos_recording.hashing import canonical_json, rfc3339, signing_key_id

MANIFEST_PAYLOAD_TYPE = "application/vnd.aos.export-manifest+json"
CHECKPOINT_PAYLOAD_TYPE = "application/vnd.aos.ledger-checkpoint+json"
PACKAGE_PAYLOAD_TYPE = "application/vnd.aos.evidence-package+json"

ALGORITHM = "ed25519"
ACTIVE = "ACTIVE"
RETIRED = "RETIRED"
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)  # valid_from of a key nothing dates

# The development key (aos_runtime.local_state, services/export key_ring): AOS_DATA_DIR/secrets/<this>.
DEV_SIGNING_KEY_FILE = "export-signing-key.pem"
DEV_RETIRED_KEYS_DIR = Path("export-signing-keys", "retired")

# DsseError reasons.
MALFORMED_ENVELOPE = "MALFORMED_ENVELOPE"  # not JSON, a field missing or mistyped, bad base64
WRONG_PAYLOAD_TYPE = "WRONG_PAYLOAD_TYPE"  # a valid envelope, but of another kind of document
UNKNOWN_KEY = "UNKNOWN_KEY"                # no signature names (or verifies under) a known key
BAD_SIGNATURE = "BAD_SIGNATURE"            # a known key's signature does not verify
KEY_NOT_VALID_AT = "KEY_NOT_VALID_AT"      # genuine, but the key was not valid at the time asked


class DsseError(Exception):
    """An envelope failed verification; ``reason`` is one of the constants above."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 Pre-Authentication Encoding: what the signature covers."""
    type_bytes = payload_type.encode("utf-8")
    return b"DSSEv1 %d %b %d %b" % (len(type_bytes), type_bytes, len(payload), payload)


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


@dataclass(frozen=True)
class PublicKey:
    """A verification key and its validity window; ``key_id`` must match ``raw``."""
    key_id: str
    raw: bytes
    valid_from: datetime = EPOCH
    valid_until: datetime | None = None
    status: str = ACTIVE

    def __post_init__(self) -> None:
        if not isinstance(self.raw, bytes) or len(self.raw) != 32:
            raise ValueError("an Ed25519 public key is 32 raw bytes")
        if self.key_id != signing_key_id(self.raw):
            raise ValueError(f"key_id {self.key_id!r} does not match the public key "
                             f"(expected {signing_key_id(self.raw)!r})")
        if self.status not in (ACTIVE, RETIRED):
            raise ValueError(f"status must be {ACTIVE} or {RETIRED}, not {self.status!r}")
        # Naive datetimes mean UTC (as in hashing.rfc3339); aware ones keep comparisons safe.
        object.__setattr__(self, "valid_from", _utc(self.valid_from))
        if self.valid_until is not None:
            object.__setattr__(self, "valid_until", _utc(self.valid_until))

    @classmethod
    def from_raw(cls, raw: bytes, valid_from: datetime = EPOCH, valid_until: datetime | None = None,
                 status: str = ACTIVE) -> PublicKey:
        return cls(signing_key_id(raw), raw, valid_from, valid_until, status)

    def valid_at(self, at: datetime) -> bool:
        """Whether ``at`` falls in [valid_from, valid_until)."""
        at = _utc(at)
        return self.valid_from <= at and (self.valid_until is None or at < self.valid_until)

    def verify(self, signature: bytes, data: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(self.raw).verify(signature, data)
        except InvalidSignature:
            return False
        return True


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


@dataclass(frozen=True)
class SigningKey:
    private: Ed25519PrivateKey
    public: PublicKey

    def __post_init__(self) -> None:
        if _raw_public(self.private.public_key()) != self.public.raw:
            raise ValueError("the public key is not the private key's")

    @classmethod
    def from_private(cls, private: Ed25519PrivateKey, valid_from: datetime = EPOCH) -> SigningKey:
        return cls(private, PublicKey.from_raw(_raw_public(private.public_key()), valid_from))

    @classmethod
    def generate(cls) -> SigningKey:
        return cls.from_private(Ed25519PrivateKey.generate())

    def sign(self, data: bytes) -> bytes:
        return self.private.sign(data)

    def private_pem(self) -> bytes:
        """Unencrypted PKCS#8 PEM, the format ``KeyRing.load`` reads."""
        return self.private.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())


def _b64encode(data: bytes) -> str:
    return base64.standard_b64encode(data).decode("ascii")


def _b64decode(text: str) -> bytes:
    """DSSE allows standard or URL-safe base64; padding is restored if dropped."""
    text = text.translate(str.maketrans("-_", "+/"))
    padding = len(text) - len(text.rstrip("="))
    # validate=True checks the alphabet but lets excess padding after a full group through.
    if padding > 2 or (padding and len(text) % 4):
        raise binascii.Error("misplaced padding")
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def sign_envelope(payload_type: str, payload: bytes, key: SigningKey) -> dict[str, Any]:
    return {
        "payload": _b64encode(payload),
        "payloadType": payload_type,
        "signatures": [{"keyid": key.public.key_id, "sig": _b64encode(key.sign(pae(payload_type, payload)))}],
    }


def envelope_json(envelope: dict[str, Any]) -> str:
    """The envelope as canonical JSON (RFC 8785): identical envelopes give identical text."""
    return canonical_json(envelope).decode("utf-8")


def _parse(envelope: dict[str, Any] | str | bytes) -> tuple[bytes, str, list[tuple[str, bytes]]]:
    """(payload, payloadType, [(keyid, sig)]), or MALFORMED_ENVELOPE."""
    try:
        doc = envelope if isinstance(envelope, dict) else json.loads(envelope)
    except (ValueError, TypeError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError: ValueErrors
        raise DsseError(MALFORMED_ENVELOPE, f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise DsseError(MALFORMED_ENVELOPE, "the envelope is not a JSON object")
    payload, payload_type, signatures = doc.get("payload"), doc.get("payloadType"), doc.get("signatures")
    if not isinstance(payload, str) or not isinstance(payload_type, str) or not isinstance(signatures, list):
        raise DsseError(MALFORMED_ENVELOPE, "payload and payloadType must be strings, signatures a list")
    parsed: list[tuple[str, bytes]] = []
    for signature in signatures:
        # keyid is optional in DSSE; unset means the same as empty.
        keyid = signature.get("keyid", "") if isinstance(signature, dict) else None
        sig = signature.get("sig") if isinstance(signature, dict) else None
        if not isinstance(keyid, str) or not isinstance(sig, str):
            raise DsseError(MALFORMED_ENVELOPE, "each signature needs a string sig and an optional string keyid")
        try:
            parsed.append((keyid, _b64decode(sig)))
        except ValueError:  # binascii.Error, or non-ASCII text
            raise DsseError(MALFORMED_ENVELOPE, f"signature of key {keyid!r} is not base64") from None
    try:
        return _b64decode(payload), payload_type, parsed
    except ValueError:
        raise DsseError(MALFORMED_ENVELOPE, "payload is not base64") from None


def open_envelope(envelope: dict[str, Any] | str | bytes, keys: Mapping[str, PublicKey] | Iterable[PublicKey],
                  payload_type: str, *, at: datetime | None = None) -> tuple[bytes, PublicKey]:
    """(payload, the key whose signature verified), or ``DsseError``.

    What is checked is the signature over ``PAE(payloadType, payload)`` (DSSE v1),
    never the envelope's JSON text: re-indenting, reordering its members or a
    trailing newline change nothing, while any change to the payload, its type or
    the signature fails. Signatures by keys not in ``keys`` are ignored (an envelope
    may carry others' signatures); a signature without a keyid is tried against
    every key. With ``at`` (the signing time the payload claims), the verifying key
    must also have been valid then.
    """
    payload, actual_type, signatures = _parse(envelope)
    if actual_type != payload_type:
        raise DsseError(WRONG_PAYLOAD_TYPE, f"expected {payload_type!r}, got {actual_type!r}")
    known = {key.key_id: key for key in (keys.values() if isinstance(keys, Mapping) else keys)}
    message = pae(actual_type, payload)
    tried = expired = False
    for keyid, sig in signatures:
        # keyid is only an optional hint in DSSE: without it, try every key.
        candidates = ([known[keyid]] if keyid in known else []) if keyid else list(known.values())
        for key in candidates:
            tried = True
            if key.verify(sig, message):
                if at is None or key.valid_at(at):
                    return payload, key
                expired = True
    if expired and at is not None:
        raise DsseError(KEY_NOT_VALID_AT, f"the signing key was not valid at {rfc3339(at)}")
    if tried:
        raise DsseError(BAD_SIGNATURE, "no signature verifies under a known key")
    named = ", ".join(repr(keyid) for keyid, _ in signatures) or "none"
    raise DsseError(UNKNOWN_KEY, f"no signature by a known key (signed by {named})")


def signature_key_ids(envelope: dict[str, Any] | str | bytes) -> list[str]:
    """The keyids an envelope's signatures name (unsigned hints, for messages only)."""
    return [keyid for keyid, _ in _parse(envelope)[2]]


def verify_envelope(envelope: dict[str, Any] | str | bytes, keys: Mapping[str, PublicKey] | Iterable[PublicKey],
                    payload_type: str, *, at: datetime | None = None) -> bytes:
    """The payload, once a signature by a known key verifies; otherwise ``DsseError``
    (``open_envelope`` without the key)."""
    return open_envelope(envelope, keys, payload_type, at=at)[0]


def keys_document(keys: Iterable[PublicKey]) -> dict[str, Any]:
    """The published key list an auditor saves and later verifies exports with."""
    return {"keys": [{
        "key_id": key.key_id,
        "algorithm": ALGORITHM,
        "public_key": _b64encode(key.raw),
        "valid_from": rfc3339(key.valid_from),
        "valid_until": None if key.valid_until is None else rfc3339(key.valid_until),
        "status": key.status,
    } for key in keys]}


def timestamp(value: Any, name: str) -> datetime:
    if not isinstance(value, str):
        raise ValueError(f"{name} must be an RFC 3339 timestamp")
    parsed = datetime.fromisoformat(value)  # proto3 JSON's nanoseconds are cut to microseconds
    if parsed.tzinfo is None:
        raise ValueError(f"{name} {value!r} has no time zone")
    return parsed


# A keys document is ours (keys_document), or ListSigningKeysResponse as proto3 JSON:
# the REST gateway writes its field names as in the proto, buf curl in lowerCamelCase,
# and the status as the enum's full name.
_FIELD_NAMES = {"key_id": "keyId", "public_key": "publicKey", "valid_from": "validFrom",
                "valid_until": "validUntil", "algorithm": "algorithm", "status": "status"}
_STATUS_NAMES = {"SIGNING_KEY_STATUS_ACTIVE": ACTIVE, "SIGNING_KEY_STATUS_RETIRED": RETIRED}
_MISSING = object()


def key_entries(doc: dict[str, Any] | str | bytes | Path) -> list[dict[str, Any]]:
    """The entries of a keys document, each as a dict keyed by our field names."""
    if isinstance(doc, Path):
        doc = doc.read_text(encoding="utf-8")
    if isinstance(doc, (str, bytes)):
        doc = json.loads(doc)
    entries = doc.get("keys") if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        raise ValueError('a keys document is an object with a "keys" list')
    out = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise ValueError(f"keys[{index}] is not an object")
        fields = {}
        for name, camel in _FIELD_NAMES.items():
            value = entry.get(name, entry.get(camel, _MISSING))
            if value is not _MISSING:
                fields[name] = value
        out.append(fields)
    return out


def key_from_entry(entry: dict[str, Any], where: str, *, validity_required: bool = True) -> PublicKey:
    """One keys-document entry (as ``key_entries`` gives it) as a PublicKey."""
    if entry.get("algorithm", ALGORITHM) != ALGORITHM:
        raise ValueError(f"{where}: algorithm {entry.get('algorithm')!r} is not {ALGORITHM!r}")
    try:
        if not isinstance(entry["public_key"], str):
            raise ValueError("public_key must be base64 text")
        raw = base64.b64decode(entry["public_key"], validate=True)
        if validity_required or "valid_from" in entry:
            valid_from = timestamp(entry["valid_from"], "valid_from")
        else:
            valid_from = EPOCH
        valid_until = entry.get("valid_until")
        status = entry["status"] if validity_required or "status" in entry else ACTIVE
        return PublicKey(
            key_id=entry["key_id"], raw=raw, valid_from=valid_from,
            valid_until=None if valid_until is None else timestamp(valid_until, "valid_until"),
            status=_STATUS_NAMES.get(status, status) if isinstance(status, str) else status)
    except KeyError as exc:
        raise ValueError(f"{where}: missing {exc.args[0]!r}") from None
    except (ValueError, TypeError) as exc:  # binascii.Error is a ValueError
        raise ValueError(f"{where}: {exc}") from None


def load_keys_document(doc: dict[str, Any] | str | Path) -> list[PublicKey]:
    """The keys of a keys document (a dict, its JSON text, or a file holding it): ours
    (``keys_document``), or ListSigningKeys' answer as proto3 JSON (REST or buf curl).

    Raises ValueError when the document is malformed, a key is not Ed25519, or a
    key_id does not match its public key.
    """
    return [key_from_entry(entry, f"keys[{index}]") for index, entry in enumerate(key_entries(doc))]


def write_public_key_pem(key: PublicKey, path: Path) -> None:
    """The key as a SubjectPublicKeyInfo PEM, as ``KeyRing.load`` reads retired keys."""
    path.write_bytes(Ed25519PublicKey.from_public_bytes(key.raw).public_bytes(
        Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ValueError(f"{path}: cannot read the key file: {exc.strerror or exc}") from None


def _load_signing_key(path: Path) -> SigningKey:
    try:
        private = load_pem_private_key(_read(path), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:  # TypeError: the key is encrypted
        raise ValueError(f"{path}: not an unencrypted PKCS#8 PEM private key: {exc}") from None
    if not isinstance(private, Ed25519PrivateKey):
        raise ValueError(f"{path}: the export signing key must be Ed25519, not {type(private).__name__}")
    return SigningKey.from_private(private)


def public_keys_from(data: bytes | str) -> list[PublicKey]:
    """The public keys in a PEM SubjectPublicKeyInfo Ed25519 key (one key) or a JSON keys
    document (``load_keys_document``): the one reader behind ``KeyRing.load``'s verification
    key files, the offline verifier's ``--keys`` files and its PEM ``--key`` pins.

    Raises ValueError saying which of the two the data was taken for and what is wrong;
    callers prefix where it came from (a file, a flag)."""
    text = data.decode("utf-8") if isinstance(data, bytes) else data  # UnicodeDecodeError: a ValueError
    if not text.lstrip().startswith("-----BEGIN"):
        try:
            return load_keys_document(text)
        except ValueError as exc:  # covers bad JSON too
            raise ValueError(f"neither a PEM public key nor a JSON keys document: {exc}") from None
    try:
        public = load_pem_public_key(text.strip().encode())
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise ValueError(f"not a PEM SubjectPublicKeyInfo public key: {exc}") from None
    if not isinstance(public, Ed25519PublicKey):
        raise ValueError(f"an export signing key is Ed25519, not {type(public).__name__}")
    return [PublicKey.from_raw(_raw_public(public))]


def _load_verification_keys(path: Path) -> list[PublicKey]:
    try:
        return public_keys_from(_read(path))
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


class KeyRing:
    """The active signing key and the retired keys that still verify older envelopes."""

    def __init__(self, active: SigningKey, verification_keys: Iterable[PublicKey] = ()) -> None:
        self.active = active
        # Every key but the active one is retired here, whatever an older keys
        # document said; the first listing of a key wins.
        retired: dict[str, PublicKey] = {}
        for key in verification_keys:
            if key.key_id != active.public.key_id and key.key_id not in retired:
                retired[key.key_id] = replace(key, status=RETIRED)
        self._retired = [retired[key_id] for key_id in sorted(retired)]

    def public_keys(self) -> list[PublicKey]:
        """The active key first, then the retired ones by key_id."""
        return [self.active.public, *self._retired]

    def get(self, key_id: str) -> PublicKey | None:
        return next((key for key in self.public_keys() if key.key_id == key_id), None)

    @classmethod
    def load(cls, signing_key_file: Path, verification_key_files: Sequence[Path] = ()) -> KeyRing:
        """Reads a PKCS#8 PEM Ed25519 private key, plus verification keys from
        SubjectPublicKeyInfo PEM files or JSON keys documents. Any unreadable or
        non-Ed25519 key raises ValueError naming its file."""
        active = _load_signing_key(Path(signing_key_file))
        return cls(active, [key for path in verification_key_files for key in _load_verification_keys(Path(path))])
