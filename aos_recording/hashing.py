"""Every hash of the Evidence Plane (SPEC section 5), defined once.

Writers, the verifier, the services and the offline verifier all call these;
nothing else computes an evidence hash. Canonical JSON is RFC 8785 (JCS);
timestamps inside it are RFC 3339 UTC with microseconds and ``Z``.
"""
from __future__ import annotations

import hashlib
import json
import re
import secrets
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import orjson
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


# The zones a UTC session gives (psycopg: ZoneInfo of the server's TimeZone, "Etc/UTC" by default),
# looked up first; any other zone counts as UTC where its offset at that moment is zero.
_UTC_ZONES = frozenset((timezone.utc, ZoneInfo("UTC"), ZoneInfo("Etc/UTC")))
_ZERO = timedelta(0)
# orjson (C) writes a datetime as RFC 3339: "Z" for an offset of zero (OPT_UTC_Z), naive ones as UTC
# (OPT_NAIVE_UTC), six digits of microseconds when they are not zero and none when they are.
_RFC3339_OPTIONS = orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC


def rfc3339(value: datetime) -> str:
    """``2026-01-13T12:00:00.000000Z``: UTC, always microseconds (naive means UTC)."""
    # One per hashed or exported record: orjson writes a UTC (or naive) datetime in C at a third
    # of isoformat's cost on an aware one; the ".000000" it leaves out is put back. Other zones,
    # and subclasses, take isoformat (tests/unit/test_hashing.py compares the two on generated times).
    if type(value) is datetime:
        zone = value.tzinfo
        if zone is None or zone in _UTC_ZONES or value.utcoffset() == _ZERO:
            text = orjson.dumps(value, option=_RFC3339_OPTIONS)
            return (text[1:-1] if value.microsecond else text[1:-2] + b".000000Z").decode()
    return _rfc3339_isoformat(value)


def _rfc3339_isoformat(value: datetime) -> str:
    if value.tzinfo is None:
        return value.isoformat(timespec="microseconds") + "Z"
    if value.utcoffset():
        value = value.astimezone(timezone.utc)
    return value.isoformat(timespec="microseconds")[:-6] + "Z"


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


# --- the canonicaliser: orjson where it provably writes RFC 8785, the reference elsewhere ----
#
# No compiled RFC 8785 encoder on PyPI fits (checked 2026-12-07): ``rfc8785`` (the reference
# here), ``jcs``, ``json-canonical`` and ``jsoncanon`` are pure Python; ``canonicaljson`` is the
# standard library's encoder with sorted keys (Python's float forms, code-point key order: not
# RFC 8785) and ``canonicaljson-rs`` escapes non-ASCII as \uXXXX (not RFC 8785); ``jcs-admit``
# (Rust, a single 0.1.0 release) re-parses JSON text: 14 us per ledger entry here, more than the
# whole fast path below.
# So: orjson, a compiled encoder, on the documents where its bytes are RFC 8785's, and the
# reference on every other document. orjson with OPT_SORT_KEYS differs from RFC 8785 in:
#   - floats: orjson writes ``1.0``, ``1e16``, ``NaN`` as ``null``; RFC 8785 the ES6 form
#     (``1``, ``10000000000000000``) and refuses NaN/Infinity -> a document with a float
#     is refused by ``_fast`` below (the one walk the fast path keeps);
#   - integers past 2**53 - 1: RFC 8785 refuses them -> OPT_STRICT_INTEGER makes orjson
#     raise on exactly those, and the reference then raises its own error;
#   - key order: orjson sorts by code point, RFC 8785 by UTF-16 code unit; the two orders
#     differ only between a key with a character past U+FFFF (a surrogate pair, D800-DFFF)
#     and one with a character in E000-FFFF -> output with any 4-byte UTF-8 sequence (a
#     character past U+FFFF, in a key or a value) is re-done by the reference;
#   - types orjson knows and RFC 8785 does not (enum members, UUIDs, dataclasses, str/int
#     subclasses): refused by ``_fast``; datetimes (passed through to ``_default``) become
#     RFC 3339 strings, as ``_plain`` makes them for the reference;
#   - lone surrogates: orjson raises (not UTF-8), and the reference raises too.
# Strings are escaped alike (RFC 8785 section 3.2.2.2: the two-character forms for \b \t \n
# \f \r " \\, \u00xx with lowercase hex for the other controls, everything else as UTF-8,
# U+007F and U+2028/2029 included): tests/unit/test_canonical.py checks every character below
# U+0800 and the RFC's own test vectors against both, and generated documents byte for byte.

_MAX_SAFE_INT = 2 ** 53 - 1
_OPTIONS = (orjson.OPT_SORT_KEYS | orjson.OPT_STRICT_INTEGER | orjson.OPT_PASSTHROUGH_DATETIME
            | orjson.OPT_PASSTHROUGH_SUBCLASS | orjson.OPT_PASSTHROUGH_DATACLASS)
_LEAVES = frozenset((str, int, bool, type(None), datetime))
_NON_BMP = re.compile(rb"[\xf0-\xf4]")  # the lead byte of a 4-byte UTF-8 sequence


def _fast(value: Any, leaves: frozenset[Any] = _LEAVES, sequences: tuple[type, ...] = (list, tuple)) -> bool:
    """Whether every node of ``value`` is one orjson writes as RFC 8785 does: exact str, int,
    bool, None, datetime, and dicts (str keys) and lists/tuples of those — no float, nothing else.
    (``leaves`` and ``sequences`` narrow it for a decoded JSON value: ``_JSON_LEAVES``, lists.)"""
    kind = type(value)
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str or (type(item) not in leaves and not _fast(item, leaves, sequences)):
                return False
        return True
    if kind in sequences:
        for item in value:
            if type(item) not in leaves and not _fast(item, leaves, sequences):
                return False
        return True
    return kind in leaves


def _default(value: Any) -> str:
    if type(value) is datetime:
        return rfc3339(value)
    raise TypeError(f"{type(value).__name__} is not on the fast path")


def _reference(value: Any) -> bytes:
    return rfc8785.dumps(_plain(value))


def canonical_json(value: Any) -> bytes:
    """RFC 8785 bytes of ``value`` (datetimes become RFC 3339 strings).

    Hashing, verifying and exporting millions of ledger entries made the pure-Python
    reference the bottleneck: documents ``_fast`` admits go through orjson (see above for
    why its bytes are RFC 8785's there), anything else through ``rfc8785``.
    """
    if _fast(value):
        try:
            out = orjson.dumps(value, default=_default, option=_OPTIONS)
        except TypeError:  # an integer past 2**53 - 1, a lone surrogate: the reference decides
            return _reference(value)
        if out.isascii() or not _NON_BMP.search(out):
            return out
    return _reference(value)


def json_plain(value: Any) -> bool:
    """Whether ``value`` is made only of exact dict (str keys), list, str, int, bool and None: a
    decoded JSON value with no float (what ``canonical_json`` writes with orjson, when its
    integers are safe and its text has no character past U+FFFF)."""
    return value is None or _fast(value, _JSON_LEAVES, _JSON_SEQUENCES)


_JOINED_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_STRICT_INTEGER


def canonical_json_joined(documents: Sequence[Any], plain: Sequence[bool]) -> bytes:
    """``b",".join(map(canonical_json, documents))``, the documents ``plain`` marks (each one
    ``json_plain``, which the caller vouches for instead of a walk) in one orjson call with the
    others' canonical_json inside it as fragments. A batch holding an integer past 2**53 - 1 or
    a character past U+FFFF is done document by document (canonical_json decides each)."""
    if not documents:
        return b""
    if len(plain) != len(documents):
        raise ValueError("one plain flag per document")
    items = documents if all(plain) else [d if p else orjson.Fragment(canonical_json(d))
                                          for d, p in zip(documents, plain, strict=True)]
    try:
        out = orjson.dumps(items, option=_JOINED_OPTIONS)
    except TypeError:
        out = None
    if out is None or not (out.isascii() or not _NON_BMP.search(out)):
        return b",".join(map(canonical_json, documents))
    return out[1:-1]


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _fields_hash(record: Mapping[str, Any], fields: Iterable[str]) -> bytes:
    # Subscripting first: a database row (SQLAlchemy's RowMapping) has every field, and its
    # .get is the Mapping ABC's, in Python — a third of a verification's own time.
    try:
        document = {f: record[f] for f in fields}
    except KeyError:  # absent fields hash as null
        document = {f: record.get(f) for f in fields}
    return sha256(canonical_json(document))


def ledger_content_hash(entry: Mapping[str, Any]) -> bytes:
    """SHA-256 of JCS of the twelve ledger fields (absent ones hash as null)."""
    return _fields_hash(entry, LEDGER_FIELDS)


# --- A ledger row's hashed bytes, built for its fixed shape (issue #22) ---------------------
#
# Verifying a chain hashes every entry; the general path (a dict of the twelve fields, the
# type walk over all of it, orjson calling back into Python for the datetime, rfc3339's
# isoformat of an aware datetime: ~1 us alone) was most of a verification's own CPU. A row
# read from audit_ledger has a fixed shape: nine text columns (str or None), created_at (a
# timestamptz: an aware datetime) and two jsonb states (what json.loads makes: dict, list,
# str, int, float, bool, None). So only the states need the walk (for floats), and created_at
# is written by orjson itself (C) when its zone is UTC: orjson writes an aware UTC datetime as
# RFC 3339 with "Z" (OPT_UTC_Z) and six digits of microseconds when they are not zero; when
# they are, it leaves them out, and the ".000000" is put back by a Fragment (raw JSON bytes).
# Anything else (another zone, a float in a state, a character past U+FFFF, a non-text value
# where text belongs) takes canonical_json, the general path. tests/unit/test_ledger_row_hash.py
# checks the bytes against the general path on generated rows.

# A ledger row as the verifier reads it (aos_recording.store.iter_ledger_rows): these columns,
# in this order.
LEDGER_ROW_COLUMNS = ("seq", "content_hash", "prev_hash", "chain_hash", "hash_version", "commitments",
                      *LEDGER_FIELDS)
_ROW_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_STRICT_INTEGER | orjson.OPT_UTC_Z
_JSON_LEAVES = frozenset((str, int, bool, type(None)))
_JSON_SEQUENCES = (list,)


def ledger_row_hash_input(row: Sequence[Any]) -> bytes:
    """The RFC 8785 bytes SPEC section 5 hashes for a v1 ledger entry, from a row in
    ``LEDGER_ROW_COLUMNS`` order as read from audit_ledger (text columns are str or None):
    canonical_json of the twelve fields, byte for byte."""
    (_seq, _content, _prev, _chain, _version, _commitments, id_, tenant_id, event_type, entity_type, entity_id,
     actor_type, actor_id, action_reason, correlation_id, created_at, before_state, after_state) = row
    created: Any = created_at
    zone = created_at.tzinfo if type(created_at) is datetime else None
    # orjson writes "Z" for an offset of zero (OPT_UTC_Z), the offset itself for any other.
    if zone in _UTC_ZONES or (zone is not None and created_at.utcoffset() == _ZERO):
        if not created_at.microsecond:
            created = orjson.Fragment(orjson.dumps(created_at, option=orjson.OPT_UTC_Z)[:-2] + b'.000000Z"')
        # a decoded JSON value: no datetime (orjson would write one in its own form), no tuple
        fast = ((before_state is None or _fast(before_state, _JSON_LEAVES, _JSON_SEQUENCES))
                and (after_state is None or _fast(after_state, _JSON_LEAVES, _JSON_SEQUENCES)))
    else:
        fast = False
    document = {"id": id_, "tenant_id": tenant_id, "event_type": event_type, "entity_type": entity_type,
                "entity_id": entity_id, "actor_type": actor_type, "actor_id": actor_id,
                "action_reason": action_reason, "correlation_id": correlation_id, "created_at": created,
                "before_state": before_state, "after_state": after_state}
    if fast:
        try:
            out = orjson.dumps(document, option=_ROW_OPTIONS)
        except TypeError:  # an integer past 2**53 - 1, a lone surrogate: the general path decides
            out = None
        if out is not None and (out.isascii() or not _NON_BMP.search(out)):
            return out
    document["created_at"] = created_at
    return canonical_json(document)


def ledger_row_content_hash(row: Sequence[Any]) -> bytes:
    """``stored_ledger_content_hash`` of a row in ``LEDGER_ROW_COLUMNS`` order (v1 through
    ``ledger_row_hash_input``; v2 and anything else through the general path)."""
    if row[4] == HASH_V1:
        return hashlib.sha256(ledger_row_hash_input(row)).digest()
    return stored_ledger_content_hash(dict(zip(LEDGER_ROW_COLUMNS, row, strict=True)))


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
    try:  # subscripting: a RowMapping's .get is the Mapping ABC's, in Python (see _fields_hash)
        version = row["hash_version"] or HASH_V1
    except KeyError:
        version = HASH_V1
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
