"""Every hash of the Evidence Plane (SPEC section 5), defined once.

Writers, the verifier, the services and the offline verifier all call these;
nothing else computes an evidence hash. Canonical JSON is RFC 8785 (JCS);
timestamps inside it are RFC 3339 UTC with microseconds and ``Z``.
"""
from __future__ import annotations

import hashlib
import json
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
