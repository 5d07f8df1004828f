"""An export's manifest as an in-toto Statement v1 in a DSSE envelope (SPEC §5), so that
in-toto / SLSA tooling consumes our exports.

The statement (https://github.com/in-toto/attestation, spec/v1/statement.md) names the
artifact as its one subject (the manifest's ``filename`` and its SHA-256 ``checksum``),
carries the whole export manifest as the predicate, under predicate type
``EXPORT_MANIFEST_PREDICATE_TYPE``, and is signed like the manifest itself
(``aos_recording.dsse``, Ed25519, payloadType ``application/vnd.in-toto+json``). The
payload is the statement's RFC 8785 canonical JSON, so the same manifest always yields
the same bytes. Nothing here imports the server.
"""
from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from aos_recording import dsse
from aos_recording.hashing import canonical_json

PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
EXPORT_MANIFEST_PREDICATE_TYPE = "https://aos-evidence.dev/export-manifest/v2"
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


class StatementError(ValueError):
    """A payload that verified is no export statement of ours (shape, type, or a subject
    that disagrees with its manifest)."""


def export_statement(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """The in-toto Statement v1 of an export manifest: subject = the artifact
    (``filename``, ``sha256`` = ``checksum``), predicate = the manifest."""
    filename, checksum = manifest.get("filename"), manifest.get("checksum")
    if not isinstance(filename, str) or not filename:
        raise StatementError("the manifest names no artifact filename")
    if not isinstance(checksum, str) or not _SHA256_HEX.fullmatch(checksum):
        raise StatementError("the manifest's checksum is not a lowercase hex SHA-256")
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": filename, "digest": {"sha256": checksum}}],
        "predicateType": EXPORT_MANIFEST_PREDICATE_TYPE,
        "predicate": dict(manifest),
    }


def sign_export_statement(manifest: Mapping[str, Any], key: dsse.SigningKey) -> dict[str, Any]:
    """The DSSE envelope (standard JSON form) of the manifest's statement, signed by ``key``."""
    return dsse.sign_envelope(PAYLOAD_TYPE, canonical_json(export_statement(manifest)), key)


def open_export_statement(envelope: dict[str, Any] | str | bytes,
                          keys: Mapping[str, dsse.PublicKey] | Iterable[dsse.PublicKey],
                          *, at: datetime | None = None) -> dict[str, Any]:
    """The statement of an export, once the envelope's signature verifies under a pinned
    key (``dsse.DsseError`` otherwise) and the statement is ours: statement and predicate
    types, exactly one subject whose name and sha256 are the manifest's filename and
    checksum (``StatementError`` otherwise). The manifest is ``statement["predicate"]``."""
    payload = dsse.verify_envelope(envelope, keys, PAYLOAD_TYPE, at=at)
    try:
        statement = json.loads(payload)
    except ValueError:
        raise StatementError("the payload is not JSON") from None
    if not isinstance(statement, dict) or statement.get("_type") != STATEMENT_TYPE:
        raise StatementError(f"not an in-toto Statement v1 ({STATEMENT_TYPE})")
    if statement.get("predicateType") != EXPORT_MANIFEST_PREDICATE_TYPE:
        raise StatementError(f"predicate type {statement.get('predicateType')!r} is not an export manifest")
    manifest = statement.get("predicate")
    if not isinstance(manifest, dict) or statement.get("subject") != export_statement(manifest)["subject"]:
        raise StatementError("the subject is not the artifact its manifest names")
    return statement
