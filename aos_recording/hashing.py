"""Every hash of the Evidence Plane (SPEC section 5), defined once.

Writers, the verifier, the services and the offline verifier all call these;
nothing else computes an evidence hash. Canonical JSON is RFC 8785 (JCS);
timestamps inside it are RFC 3339 UTC with microseconds and ``Z``.
"""
from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import Any

import rfc8785

GENESIS = bytes(32)  # prev_hash of seq 1

LEDGER_FIELDS = ("id", "tenant_id", "event_type", "entity_type", "entity_id", "actor_type", "actor_id",
                 "action_reason", "correlation_id", "created_at", "before_state", "after_state")
STEP_FIELDS = ("step_index", "step_type", "input_data", "output_data", "timestamp")
LLM_RUN_FIELDS = ("id", "tenant_id", "run_id", "trace_id", "agent_id", "project_id", "provider", "model",
                  "execution_status", "executor_type", "outcome", "termination_reason", "input_tokens",
                  "output_tokens", "cost_cents", "source", "started_at", "completed_at", "created_at")
SYSTEM_RECORD_FIELDS = ("id", "tenant_id", "component", "event_type", "severity", "summary", "details",
                        "caused_by", "actor_id", "correlation_id", "run_id", "environment_id", "created_at")


def rfc3339(value: datetime) -> str:
    """``2026-01-13T12:00:00.000000Z``: UTC, always microseconds (naive means UTC)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    elif value.utcoffset():
        value = value.astimezone(timezone.utc)
    return (f"{value.year:04d}-{value.month:02d}-{value.day:02d}T{value.hour:02d}:{value.minute:02d}:"
            f"{value.second:02d}.{value.microsecond:06d}Z")


# The converters below test exact types first: they run once per field of every
# hashed record, and ABC isinstance checks (Mapping) cost more than the hash itself.

def _plain(value: Any) -> Any:
    kind = type(value)
    if kind is str or kind is int or kind is bool or kind is float or value is None:
        return value
    if kind is dict:
        return {k if type(k) is str else str(k): _plain(v) for k, v in value.items()}
    if kind is list or kind is tuple:
        return [_plain(v) for v in value]
    if isinstance(value, datetime):
        return rfc3339(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


_MAX_SAFE_INT = 2 ** 53 - 1


def _simple(value: Any) -> bool:
    """True when ``json.dumps`` renders ``value`` exactly as RFC 8785 would.

    That holds for strings, bools, null, safe integers, and objects whose keys
    are in the Basic Multilingual Plane (code-point order equals UTF-16 order).
    Floats take the reference path: their ES6 number form is JCS's own.
    """
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return True
    if kind is int:
        return bool(-_MAX_SAFE_INT <= value <= _MAX_SAFE_INT)
    if kind is dict:
        return all((k.isascii() or max(map(ord, k)) < 0x10000) and _simple(v) for k, v in value.items())
    if kind is list:
        return all(_simple(v) for v in value)
    return False


def canonical_json(value: Any) -> bytes:
    """RFC 8785 bytes of ``value`` (datetimes become RFC 3339 strings).

    Hashing millions of ledger entries makes the pure-Python reference the
    bottleneck, so documents without floats go through the C json encoder, whose
    output is identical for them (tests/unit/test_hashing.py checks the two
    agree on generated documents); anything else uses the reference.
    """
    plain = _plain(value)
    if _simple(plain):
        try:
            return json.dumps(plain, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        except UnicodeEncodeError:  # lone surrogates: let the reference decide
            pass
    return rfc8785.dumps(plain)


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _fields_hash(record: Mapping[str, Any], fields: Iterable[str]) -> bytes:
    return sha256(canonical_json({f: record.get(f) for f in fields}))


def ledger_content_hash(entry: Mapping[str, Any]) -> bytes:
    """SHA-256 of JCS of the twelve ledger fields (absent ones hash as null)."""
    return _fields_hash(entry, LEDGER_FIELDS)


# --- Hash format v2 (docs/ERASURE.md): payloads committed by salted digest --------------
#
# A v1 record's content hash covers its payload fields directly (SPEC section 5, unchanged).
# A v2 record's content hash covers, in place of each payload field that is not null, the
# hex of that payload's commitment, and one more member "hash_version": 2 (which no v1
# input has, so no v2 input is ever a v1 input). Payload and salt live apart from the
# append-only row and can be erased; the commitment, and so every hash above it, stays.

HASH_V1 = 1
HASH_V2 = 2
COMMITMENT_TAG = b"aos-evidence/payload-commitment/v2\x00"
SALT_BYTES = 32

LEDGER_PAYLOAD_FIELDS = ("action_reason", "before_state", "after_state")
STEP_PAYLOAD_FIELDS = ("input_data", "output_data")
SYSTEM_RECORD_PAYLOAD_FIELDS = ("summary", "details")


def new_salt() -> bytes:
    """32 bytes from the operating system's CSPRNG: one per committed field."""
    return secrets.token_bytes(SALT_BYTES)


def payload_commitment(salt: bytes, payload: Any) -> bytes:
    """SHA-256(COMMITMENT_TAG ‖ salt ‖ JCS(payload)): hiding while the salt is secret, binding always."""
    if len(salt) != SALT_BYTES:
        raise ValueError(f"a commitment salt is {SALT_BYTES} bytes, got {len(salt)}")
    return sha256(COMMITMENT_TAG + salt + canonical_json(payload))


def commit_payloads(record: Mapping[str, Any], payload_fields: Iterable[str],
                    salts: Mapping[str, bytes] | None = None) -> tuple[dict[str, str], dict[str, bytes]]:
    """({field: commitment hex}, {field: salt}) for each payload field of ``record`` that is not null.

    ``salts`` gives the salt of a field (a retry reuses the stored ones, so it writes the same
    content hash); a field without one gets a fresh salt."""
    commitments: dict[str, str] = {}
    used: dict[str, bytes] = {}
    for f in payload_fields:
        value = record.get(f)
        if value is None:
            continue
        salt = (salts or {}).get(f) or new_salt()
        commitments[f] = payload_commitment(salt, value).hex()
        used[f] = salt
    return commitments, used


def _v2_hash(record: Mapping[str, Any], fields: Iterable[str], payload_fields: tuple[str, ...],
             commitments: Mapping[str, str]) -> bytes:
    document: dict[str, Any] = {}
    for f in fields:
        if f in payload_fields:
            document[f] = commitments.get(f)
            if document[f] is None and record.get(f) is not None:
                raise ValueError(f"v2 record has a {f} but no commitment for it")
        else:
            document[f] = record.get(f)
    unknown = set(commitments) - set(payload_fields)
    if unknown:
        raise ValueError(f"commitments for fields that are not payload fields: {sorted(unknown)}")
    document["hash_version"] = HASH_V2
    return sha256(canonical_json(document))


def ledger_content_hash_v2(entry: Mapping[str, Any], commitments: Mapping[str, str]) -> bytes:
    """SHA-256 of JCS of the twelve ledger fields, action_reason / before_state / after_state
    replaced by their commitments' hex (null stays null), plus "hash_version": 2."""
    return _v2_hash(entry, LEDGER_FIELDS, LEDGER_PAYLOAD_FIELDS, commitments)


def step_content_hash_v2(step: Mapping[str, Any], commitments: Mapping[str, str]) -> bytes:
    return _v2_hash(step, STEP_FIELDS, STEP_PAYLOAD_FIELDS, commitments)


def system_record_content_hash_v2(record: Mapping[str, Any], commitments: Mapping[str, str]) -> bytes:
    return _v2_hash(record, SYSTEM_RECORD_FIELDS, SYSTEM_RECORD_PAYLOAD_FIELDS, commitments)


def _stored(row: Mapping[str, Any], v1: Any, v2: Any) -> bytes:
    """A stored row's content hash in the format its ``hash_version`` names (absent: 1)."""
    version = row.get("hash_version") or HASH_V1
    if version == HASH_V1:
        return bytes(v1(row))
    if version == HASH_V2:
        commitments = row.get("commitments") or {}
        if isinstance(commitments, str):
            commitments = json.loads(commitments)
        return bytes(v2(row, commitments))
    raise ValueError(f"unknown hash_version {version!r}")


def stored_ledger_content_hash(row: Mapping[str, Any]) -> bytes:
    """The content hash of a stored (or exported) ledger row: v1 from its fields, v2 from its
    fields and its ``commitments`` (its payload columns are not read: they may be erased)."""
    return _stored(row, ledger_content_hash, ledger_content_hash_v2)


def stored_step_content_hash(row: Mapping[str, Any]) -> bytes:
    return _stored(row, step_content_hash, step_content_hash_v2)


def stored_system_record_content_hash(row: Mapping[str, Any]) -> bytes:
    return _stored(row, system_record_content_hash, system_record_content_hash_v2)


def openings_match(row: Mapping[str, Any], payload_fields: Iterable[str]) -> bool:
    """A v2 row that carries its payloads with their salts (``salts``: {field: hex}) opens each
    commitment: SHA-256(tag ‖ salt ‖ JCS(payload)) equals it. An erased field (no salt, or
    ``erased`` naming it) has nothing to open; a v1 row has no commitments (True)."""
    if (row.get("hash_version") or HASH_V1) != HASH_V2:
        return True
    commitments = row.get("commitments") or {}
    salts = row.get("salts") or {}
    erased = set(row.get("erased") or ())
    for f in payload_fields:
        if f in erased or f not in salts:
            continue
        if f not in commitments or payload_commitment(bytes.fromhex(salts[f]), row.get(f)).hex() != commitments[f]:
            return False
    return True


def chain_hash(prev_hash: bytes, content_hash: bytes) -> bytes:
    """SHA-256(prev_hash ‖ content_hash) over raw bytes: the ledger's and the exports' chain link."""
    return sha256(prev_hash + content_hash)


def step_content_hash(step: Mapping[str, Any]) -> bytes:
    """SHA-256 of JCS({step_index, step_type, input_data, output_data, timestamp})."""
    return _fields_hash(step, STEP_FIELDS)


def trace_content_hash(step_hashes: Iterable[bytes]) -> bytes:
    """SHA-256 of the concatenated hex step hashes (ASCII), in step order (seed 003 section 8.3)."""
    return sha256("".join(h.hex() for h in step_hashes).encode("ascii"))


def llm_run_content_hash(record: Mapping[str, Any]) -> bytes:
    return _fields_hash(record, LLM_RUN_FIELDS)


def system_record_content_hash(record: Mapping[str, Any]) -> bytes:
    return _fields_hash(record, SYSTEM_RECORD_FIELDS)


def manifest_hash(manifest: Mapping[str, Any]) -> bytes:
    """SHA-256 of the canonical export manifest: the content a log_exports chain links."""
    return sha256(canonical_json(manifest))


def artifact_digest() -> hashlib._Hash:
    """An export artifact's checksum, fed chunk by chunk as the artifact is written."""
    return hashlib.sha256()


def artifact_checksum(chunks: Iterable[bytes]) -> bytes:
    """SHA-256 of an export artifact, streamed."""
    digest = artifact_digest()
    for chunk in chunks:
        digest.update(chunk)
    return digest.digest()


def signing_key_id(raw_public_key: bytes) -> str:
    """A signing key's id: the first 16 hex digits of SHA-256 of the raw public key."""
    return sha256(raw_public_key).hex()[:16]
