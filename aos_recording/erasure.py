"""Erasure of a data subject's payloads, with every proof left valid (docs/ERASURE.md).

A record written in hash format v2 keeps its payloads (and the salts that commit them) in
``evidence_payloads``, apart from the append-only row that carries only the commitments.
Erasing a subject deletes those payloads and salts through ``aos_erase_subject`` (migration
0023_erasure: SECURITY DEFINER, the session's tenant only, refused under a legal hold) and leaves a
tombstone per field, so a read shows the record with its commitment and an explicit ERASED
marker. The request and its execution are audit entries in the tenant's ledger.

Reads: ``open_payloads`` fetches, for v2 rows, each payload's state (PRESENT with its value
and salt, ERASED with the erasure that took it, or MISSING: neither payload nor tombstone,
which is an anomaly) and ``fill`` puts it back into a row for display or export.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from aos_recording import hashing
from aos_recording.writers import AuditLedgerWriter, new_id
from aos_runtime.db import fetch_rows

PRESENT = "PRESENT"
ERASED = "ERASED"
MISSING = "MISSING"

RECORD_FIELDS = {"audit_entry": hashing.LEDGER_PAYLOAD_FIELDS, "trace_step": hashing.STEP_PAYLOAD_FIELDS,
                 "system_record": hashing.SYSTEM_RECORD_PAYLOAD_FIELDS}

HOLD_SQLSTATE = "AOS21"


@dataclass(frozen=True)
class ErasureResult:
    erasure_id: str
    subject_id: str
    payloads_erased: int
    request_seq: int
    executed_seq: int | None        # None: refused (``hold_id`` says by which hold)
    hold_id: str | None = None
    exports_erased: tuple[str, ...] = ()   # earlier exports whose stored artifacts went with the payloads


def erase_subject(conn: Connection, *, tenant_id: str, subject_id: str, actor_type: str, actor_id: str,
                  reason: str | None = None, erasure_id: str | None = None) -> ErasureResult:
    """Erases ``subject_id``'s payloads in the session's tenant (``conn`` acts for ``tenant_id``,
    as the aos_ingest role: only it may execute aos_erase_subject).

    Records, in the same transaction, a SubjectErasureRequested entry (accepted, or refused
    with the hold that refused it) and, when executed, a SubjectErased entry naming the erasure
    and how many payload fields it erased. A refused erasure returns with ``executed_seq``
    None (the caller commits the request entry and answers FAILED_PRECONDITION)."""
    if not subject_id or len(subject_id) > 256:
        raise ValueError("subject_id must be a non-empty id of at most 256 characters")
    erasure_id = erasure_id or new_id("era")
    ledger = AuditLedgerWriter(conn)
    runs = [r for (r,) in conn.execute(text(
        "SELECT DISTINCT run_id FROM evidence_payloads WHERE tenant_id = :t AND subject_id = :s "
        "AND run_id IS NOT NULL"), {"t": tenant_id, "s": subject_id})]
    hold = conn.execute(text("SELECT aos_legal_hold_covers(:t, :s, CAST(:runs AS text[]))"),
                        {"t": tenant_id, "s": subject_id, "runs": runs}).scalar()
    erased = 0
    if hold is None:
        try:
            with conn.begin_nested():
                erased = int(conn.execute(text("SELECT aos_erase_subject(:s, :e, :a)"),
                                          {"s": subject_id, "e": erasure_id, "a": actor_id}).scalar_one())
        except DBAPIError as err:  # a hold placed between the check and the erasure
            if getattr(err.orig, "sqlstate", None) != HOLD_SQLSTATE:
                raise
            hold = str(getattr(getattr(err.orig, "diag", None), "message_detail", None) or "unknown")
    outcome = {"erasure_id": erasure_id, "status": "ACCEPTED" if hold is None else "REFUSED_LEGAL_HOLD"}
    if hold is not None:
        outcome["legal_hold_id"] = hold
    requested = ledger.append(tenant_id=tenant_id, event_type="SubjectErasureRequested", entity_type="DATA_SUBJECT",
                              entity_id=subject_id, actor_type=actor_type, actor_id=actor_id, action_reason=reason,
                              correlation_id=erasure_id, after_state=outcome)
    if hold is not None:
        return ErasureResult(erasure_id, subject_id, 0, requested.seq, None, hold)
    # Earlier exports whose stored artifacts carried the subject's payloads: deleted by the same
    # function (migration 0026_erasure_exports), their tombstones read back here.
    exports = tuple(e for (e,) in conn.execute(text(
        "SELECT export_id FROM erased_export_artifacts WHERE tenant_id = :t AND erasure_id = :e ORDER BY export_id"),
        {"t": tenant_id, "e": erasure_id}))
    state: dict[str, Any] = {"erasure_id": erasure_id, "payloads_erased": erased, "request_seq": requested.seq}
    if exports:
        state["exports_erased"] = list(exports)
    executed = ledger.append(tenant_id=tenant_id, event_type="SubjectErased", entity_type="DATA_SUBJECT",
                             entity_id=subject_id, actor_type=actor_type, actor_id=actor_id,
                             correlation_id=erasure_id, after_state=state)
    return ErasureResult(erasure_id, subject_id, erased, requested.seq, executed.seq, exports_erased=exports)


@dataclass(frozen=True)
class Payload:
    state: str                  # PRESENT, ERASED or MISSING
    value: Any = None
    salt: bytes | None = None
    erasure_id: str | None = None
    subject_id: str | None = None   # PRESENT only: whose payload it is


def open_payloads(conn: Connection, tenant_id: str, record_type: str,
                  rows: Iterable[tuple[str, Mapping[str, Any]]]) -> dict[tuple[str, str], Payload]:
    """{(record_id, field): Payload} for the committed fields of the v2 ``rows`` ((record id, row)
    pairs; v1 rows are skipped). Two queries, whatever the number of rows."""
    wanted: dict[tuple[str, str], None] = {}
    for record_id, row in rows:
        if (row.get("hash_version") or hashing.HASH_V1) != hashing.HASH_V2:
            continue
        for field in _commitments(row):
            wanted[(record_id, field)] = None
    if not wanted:
        return {}
    ids = sorted({r for r, _ in wanted})
    found: dict[tuple[str, str], Payload] = {}
    # fetch_rows: the hot reads that open payloads (services/logs/store.py) run pipelined.
    for r in fetch_rows(conn,
                        "SELECT record_id, field, salt, payload, subject_id FROM evidence_payloads "
                        "WHERE tenant_id = :t AND record_type = :k AND record_id = ANY(CAST(:ids AS text[]))",
                        {"t": tenant_id, "k": record_type, "ids": ids}):
        found[(r["record_id"], r["field"])] = Payload(PRESENT, r["payload"], bytes(r["salt"]),
                                                       subject_id=r["subject_id"])
    for r in fetch_rows(conn,
                        "SELECT record_id, field, erasure_id FROM erased_payloads WHERE tenant_id = :t "
                        "AND record_type = :k AND record_id = ANY(CAST(:ids AS text[]))",
                        {"t": tenant_id, "k": record_type, "ids": ids}):
        found.setdefault((r["record_id"], r["field"]), Payload(ERASED, erasure_id=r["erasure_id"]))
    return {key: found.get(key, Payload(MISSING)) for key in wanted}


def fill(row: Mapping[str, Any], record_id: str, payloads: Mapping[tuple[str, str], Payload], *,
         with_salts: bool = False) -> dict[str, Any]:
    """The row with its v2 payloads put back where they are present; ``erased`` lists the fields
    erased (their value stays null: the commitment in ``commitments`` is what remains) and
    ``missing`` those with neither payload nor tombstone. ``with_salts`` adds ``salts`` ({field:
    hex}), so a holder can open each commitment (exports made before an erasure), and
    ``payload_subjects`` ({field: subject}: whose payloads the export carries, so that erasing
    that subject later deletes the export's stored artifact too)."""
    out = dict(row)
    if (row.get("hash_version") or hashing.HASH_V1) != hashing.HASH_V2:
        return out
    erased, missing, salts, states, subjects = [], [], {}, {}, {}
    for field in sorted(_commitments(row)):
        p = payloads.get((record_id, field), Payload(MISSING))
        states[field] = (p.state, p.erasure_id)
        if p.state == PRESENT:
            out[field] = p.value
            if with_salts and p.salt is not None:
                salts[field] = p.salt.hex()
                if p.subject_id is not None:
                    subjects[field] = p.subject_id
        elif p.state == ERASED:
            erased.append(field)
        else:
            missing.append(field)
    out["erased"] = erased
    out["missing"] = missing
    out["payload_states"] = states
    if with_salts:
        out["salts"] = salts
        out["payload_subjects"] = subjects
    return out


def record_id_of(record_type: str, row: Mapping[str, Any]) -> str:
    """The id a record's payloads are kept under: its own id; a step's ``<trace_id>/<step_index>``."""
    return f"{row['trace_id']}/{row['step_index']}" if record_type == "trace_step" else str(row["id"])


def opened_rows(conn: Connection, tenant_id: str, record_type: str,
                rows: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """``rows`` with their v2 payloads filled (``fill``), two queries for the lot; v1 rows as they are."""
    rows = list(rows)
    pairs = [(record_id_of(record_type, r), r) for r in rows
             if (r.get("hash_version") or hashing.HASH_V1) == hashing.HASH_V2]
    if not pairs:
        return rows
    payloads = open_payloads(conn, tenant_id, record_type, pairs)
    return [fill(r, record_id_of(record_type, r), payloads)
            if (r.get("hash_version") or hashing.HASH_V1) == hashing.HASH_V2 else r for r in rows]


def opened(conn: Connection, tenant_id: str, record_type: str, row: Mapping[str, Any], *,
           with_salts: bool = False) -> dict[str, Any]:
    """One row through ``open_payloads`` and ``fill`` (a v1 row comes back as it is, no query)."""
    if (row.get("hash_version") or hashing.HASH_V1) != hashing.HASH_V2:
        return dict(row)
    record_id = record_id_of(record_type, row)
    return fill(row, record_id, open_payloads(conn, tenant_id, record_type, [(record_id, row)]),
                with_salts=with_salts)


def _commitments(row: Mapping[str, Any]) -> dict[str, str]:
    value = row.get("commitments") or {}
    return json.loads(value) if isinstance(value, str) else dict(value)
