"""The Ingest service's writes: each batch in the one transaction ``Database.run`` opens.

No SQL here: the recording library's writers (aos_recording.writers) hold it, so the
suite's own tools and the Ingest API write evidence the same way. Each function takes
the batch's valid items, in request order, and answers one outcome per item.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Connection

from aos_recording.writers import AuditLedgerWriter, EvidenceConflict, LedgerEntry, SystemRecordWriter


@dataclass(frozen=True)
class Outcome:
    """What became of one item: stored by this call (created), already stored with the same
    content (a retry), or refused because its id holds other content (``conflict``: why)."""
    created: bool
    entry: LedgerEntry | None = None
    content_hash: bytes | None = None
    conflict: str | None = None


def append_audit_events(conn: Connection, tenant_id: str, events: Sequence[Mapping[str, Any]]) -> list[Outcome]:
    """Appends each event (AuditLedgerWriter.append_once's fields) unless its id is recorded."""
    writer = AuditLedgerWriter(conn)
    writer.hold_producer_ids(tenant_id)
    outcomes = []
    for fields in events:
        try:
            entry, created = writer.append_once(**fields)
        except EvidenceConflict as exc:
            outcomes.append(Outcome(created=False, conflict=str(exc)))
            continue
        outcomes.append(Outcome(created=created, entry=entry, content_hash=entry.content_hash))
    return outcomes


def append_system_records(conn: Connection, records: Sequence[Mapping[str, Any]]) -> list[Outcome]:
    """Writes each record (SystemRecordWriter.record's fields) unless its id is recorded in the tenant."""
    writer = SystemRecordWriter(conn)
    outcomes = []
    for fields in records:
        try:
            recorded = writer.record(**fields)
        except EvidenceConflict as exc:
            outcomes.append(Outcome(created=False, conflict=str(exc)))
            continue
        outcomes.append(Outcome(created=recorded.created, content_hash=recorded.content_hash))
    return outcomes
