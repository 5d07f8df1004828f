"""Rows to protos that only the Logs service answers with: an answer's own metadata, a replay window.

Every evidence record's message (and its EvidenceMetadata) is built in aos_evidence.messages.
"""
from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

from google.protobuf.message import Message

from aos.evidence.v1 import evidence_pb2, integrity_pb2
from aos.logs.v1 import audit_ledger_service_pb2, evidence_search_service_pb2, records_pb2
from aos_evidence import wire
from aos_evidence.messages import audit_entry, breach_message, step_message, system_record, trace_evidence
from aos_runtime.evidence import Evidence, metadata, timestamp
from aos_runtime.keyset import Page
from aos_runtime.pagination import Listing


def answer_metadata(tenant_id: str, component: str, items=(), *, now: datetime | None = None,
                    recorded_at: datetime | None = None, checksum: bytes | None = None
                    ) -> evidence_pb2.EvidenceMetadata:
    """Metadata of an answer as a whole (a list or a report).

    occurred_at is when the answer was computed; recorded_at is when the newest
    evidence it carries was persisted (``items``' metadata, or ``recorded_at``) and
    stays unset when it carries none — never the response time.
    """
    # The newest by (seconds, nanos), converted once: ToDatetime per item is pure Python.
    stamps = [i.metadata.recorded_at for i in items if i.HasField("metadata")]
    newest = [max(stamps, key=lambda t: (t.seconds, t.nanos)).ToDatetime(tzinfo=timezone.utc)] if stamps else []
    if recorded_at is not None:
        newest.append(recorded_at)
    now = now or datetime.now(timezone.utc)
    return metadata(Evidence(tenant_id=tenant_id, occurred_at=now, recorded_at=max(newest, default=None),
                             source_domain="LOGS", source_component=component, origin="SYSTEM",
                             system_id="aos-logs", checksum=checksum))


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def list_answer(listing: Listing, page: Page, response_cls: type[wire.M], field: str, kind: str,
                convert: Callable[[Mapping[str, Any]], Message], component: str,
                now: datetime | None = None) -> wire.Encoded[wire.M]:
    """A list's answer as bytes (issue #22), equal to serializing
    ``listing.answer(response_cls, page, **{field: items}, metadata=answer_metadata(tenant, component, items))``
    with ``items = [convert(row) for row in page.rows]``: the answer's metadata, then the items'
    stored encodings (aos_evidence.wire) as the repeated ``field``, then the page fields.
    Every item's converter sets its metadata; its recorded_at is the row's (unset: the epoch,
    as an unset Timestamp reads), so the answer's recorded_at is read from the rows."""
    items = wire.forms.framed(kind, listing.tenant_id, page.rows, convert,
                              response_cls.DESCRIPTOR.fields_by_name[field].number)
    newest = max((row["recorded_at"] or _EPOCH for row in page.rows), default=None)
    # Every list answer declares metadata (field 1); Message's own constructor type knows no fields.
    head = response_cls(metadata=answer_metadata(listing.tenant_id, component, now=now,  # type: ignore[call-arg]
                                                 recorded_at=newest))
    return wire.answer(head, items, listing.answer(response_cls, page))


def replay_center(trace: Mapping[str, Any]) -> tuple[datetime, records_pb2.ReplayCenter]:
    """The inflection point: the violation, else completion, else start (SPEC section 4, O4)."""
    if trace["violation_timestamp"] is not None:
        return trace["violation_timestamp"], records_pb2.REPLAY_CENTER_VIOLATION
    if trace["completed_at"] is not None:
        return trace["completed_at"], records_pb2.REPLAY_CENTER_COMPLETED
    return trace["started_at"], records_pb2.REPLAY_CENTER_STARTED


def replay_window(trace: Mapping[str, Any], seconds: int, found: Mapping[str, list],
                  centred: tuple[datetime, records_pb2.ReplayCenter] | None = None
                  ) -> records_pb2.ReplayWindow:
    """Merge the window's events by time (stable: steps, then system, then policy on ties),
    around ``centred`` (time, ReplayCenter), by default the trace's inflection point."""
    center, kind = centred or replay_center(trace)
    events = []
    for row in found["steps"]:
        events.append((row["timestamp"], 0, records_pb2.ReplayEvent(
            metadata=metadata(trace_evidence(trace, row["timestamp"])), kind=records_pb2.REPLAY_EVENT_KIND_LLM_STEP,
            occurred_at=timestamp(row["timestamp"]), step=step_message(row, trace["violation_step_index"]))))
    for row in found["system"]:
        record = system_record(row)
        events.append((row["created_at"], 1, records_pb2.ReplayEvent(
            metadata=record.metadata, kind=records_pb2.REPLAY_EVENT_KIND_SYSTEM_RECORD,
            occurred_at=record.created_at, system_record=record)))
    for row in found["audit"]:
        entry = audit_entry(row)
        events.append((row["created_at"], 2, records_pb2.ReplayEvent(
            metadata=entry.metadata, kind=records_pb2.REPLAY_EVENT_KIND_POLICY_EVENT,
            occurred_at=entry.created_at, audit_entry=entry)))
    for row in found["breaches"]:
        breach = breach_message(row)
        events.append((row["breached_at"], 3, records_pb2.ReplayEvent(
            metadata=metadata(Evidence(tenant_id=row["tenant_id"], occurred_at=row["breached_at"],
                                       recorded_at=row["created_at"], source_domain="POLICY",
                                       source_component="limit_breaches", origin="SYSTEM", run_id=row["run_id"])),
            kind=records_pb2.REPLAY_EVENT_KIND_POLICY_EVENT, occurred_at=breach.breached_at, limit_breach=breach)))
    events.sort(key=lambda e: (e[0], e[1]))
    delta = timedelta(seconds=seconds)
    return records_pb2.ReplayWindow(
        run_id=trace["run_id"], center_timestamp=timestamp(center), center=kind,
        window_start=timestamp(center - delta), window_end=timestamp(center + delta), window_seconds=seconds,
        events=[e[2] for e in events])


def ledger_leaf(tenant_id: str, row: Mapping[str, Any],
                component: str = "audit_ledger.tlog") -> audit_ledger_service_pb2.LedgerLeaf:
    """A leaf of one of the tenant's trees (a tlog_hashes leaf row): the entry (or export) it
    stands for, its leaf data (the content hash) and leaf hash, with the entry's times as metadata."""
    return audit_ledger_service_pb2.LedgerLeaf(
        metadata=metadata(Evidence(tenant_id=tenant_id, occurred_at=row["created_at"], recorded_at=row["recorded_at"],
                                   source_domain="LOGS", source_component=component, origin="SYSTEM",
                                   system_id="aos-logs", checksum=bytes(row["leaf_data"]))),
        seq=row["seq"], leaf_index=row["seq"] - 1, entry_id=row["entry_id"], leaf_data=bytes(row["leaf_data"]),
        leaf_hash=bytes(row["leaf_hash"]))


def kept_checkpoint(row: Mapping[str, Any]) -> integrity_pb2.LedgerCheckpoint:
    """A signed checkpoint as ledger_checkpoints keeps it: the DSSE envelope as recorded, the
    issue time read from its (signed) statement; the signature is for the caller to check."""
    envelope = row["envelope"]
    try:
        issued = json.loads(base64.b64decode(envelope["payload"]))["issued_at"]
        issued_at = timestamp(datetime.fromisoformat(issued.replace("Z", "+00:00")))
    except (KeyError, TypeError, ValueError):
        issued_at = None
    return integrity_pb2.LedgerCheckpoint(tenant_id=row["tenant_id"], seq=row["seq"],
                                          chain_hash=bytes(row["chain_hash"]).hex(), issued_at=issued_at,
                                          dsse_envelope=json.dumps(envelope, separators=(",", ":")))


def search_hit(hit: Mapping[str, Any]) -> evidence_search_service_pb2.SearchHit:
    """A search hit: its record's own message and metadata (as its list gives them), the matched fields."""
    row, source = hit["record"], hit["source"]
    message = evidence_search_service_pb2.SearchHit(
        source=_HIT_SOURCES[source], created_at=timestamp(row["created_at"]), matched_fields=hit["matched_fields"])
    if source == "AUDIT":
        message.audit_entry.CopyFrom(audit_entry(row))
        message.metadata.CopyFrom(message.audit_entry.metadata)
    elif source == "TRACE_STEP":
        trace = hit["trace"]
        message.trace_step.CopyFrom(evidence_search_service_pb2.SearchTraceStep(
            trace_id=row["trace_id"], run_id=trace["run_id"], step=step_message(row, trace["violation_step_index"])))
        # the trace's spine, at the step's time, with the step's own hash
        message.metadata.CopyFrom(metadata(trace_evidence(trace, row["timestamp"])._replace(
            checksum=row["content_hash"])))
    else:
        message.system_record.CopyFrom(system_record(row))
        message.metadata.CopyFrom(message.system_record.metadata)
    return message


_HIT_SOURCES = {"AUDIT": evidence_search_service_pb2.EVIDENCE_SOURCE_AUDIT,
                "TRACE_STEP": evidence_search_service_pb2.EVIDENCE_SOURCE_TRACE_STEP,
                "SYSTEM": evidence_search_service_pb2.EVIDENCE_SOURCE_SYSTEM,
                "PLATFORM": evidence_search_service_pb2.EVIDENCE_SOURCE_SYSTEM}
