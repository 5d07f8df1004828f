"""The SQL of RetentionService: a tenant's retention policies and legal holds (migration 0022).

Each write runs in the caller's tenant transaction (``Database.run``) and appends its audit
entry (RetentionPolicyChanged, LegalHoldPlaced, LegalHoldReleased) in that same
transaction: a change without its entry, or an entry without its change, cannot commit.
Row-level security scopes every statement to the tenant as well as the ``tenant_id =``.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection

from aos_recording import retention_policy as rp
from aos_recording.writers import AuditLedgerWriter, new_id
from aos_runtime import faults
from aos_runtime.keyset import Page, keyset_page

POLICY_COLUMNS = ("record_type, level, retention_days, retention_class, compliance_tags, updated_at, "
                  "updated_by_id")
HOLD_SELECT = ("SELECT a.id, a.tenant_id, a.scope, a.target_id, a.reason, a.placed_by_id, a.placed_at, "
               "a.placed_at AS created_at, a.released_at, a.released_by_id, a.release_reason FROM legal_holds a")


def _policy(row: Mapping[str, Any]) -> rp.Policy:
    return rp.Policy(row["record_type"], row["level"], row["retention_days"], row["retention_class"],
                     tuple(row["compliance_tags"]))


def policies(conn: Connection, tenant_id: str) -> list[tuple[rp.Policy, Mapping[str, Any] | None]]:
    """Every key's policy in force, with the tenant's row where it set one (None: default)."""
    rows = {(r["record_type"], r["level"]): dict(r) for r in conn.execute(text(
        f"SELECT {POLICY_COLUMNS} FROM retention_policies WHERE tenant_id = :t"), {"t": tenant_id}).mappings()}
    return [(_policy(rows[key]), rows[key]) if key in rows else (rp.default(*key), None) for key in rp.KEYS]


def set_policy(conn: Connection, tenant_id: str, wanted: rp.Policy, actor_type: str, actor_id: str,
               now: datetime) -> tuple[rp.Policy, Mapping[str, Any] | None, bool]:
    """Sets the tenant's policy for ``wanted.key``: (the policy in force, its row, changed).
    The same policy again changes nothing and records nothing."""
    # One writer of a tenant's policies at a time: the before state is the one replaced.
    conn.execute(text("SELECT pg_advisory_xact_lock(hashtextextended('aos_retention_policies:' || :t, 0))"),
                 {"t": tenant_id})
    current = dict(policies(conn, tenant_id))
    before = next(p for p in current if p.key == wanted.key)
    if (before.days, before.retention_class, before.compliance_tags, before.is_default) == \
            (wanted.days, wanted.retention_class, wanted.compliance_tags, False):
        return before, current[before], False
    row = conn.execute(text(
        "INSERT INTO retention_policies (tenant_id, record_type, level, retention_days, retention_class, "
        "compliance_tags, updated_at, updated_by_type, updated_by_id) VALUES (:t, :rt, :lv, :days, :cls, :tags, "
        ":now, :at, :aid) ON CONFLICT (tenant_id, record_type, level) DO UPDATE SET "
        "retention_days = EXCLUDED.retention_days, retention_class = EXCLUDED.retention_class, "
        "compliance_tags = EXCLUDED.compliance_tags, updated_at = EXCLUDED.updated_at, "
        "updated_by_type = EXCLUDED.updated_by_type, updated_by_id = EXCLUDED.updated_by_id "
        f"RETURNING {POLICY_COLUMNS}"),
        {"t": tenant_id, "rt": wanted.record_type, "lv": wanted.level, "days": wanted.days,
         "cls": wanted.retention_class, "tags": list(wanted.compliance_tags), "now": now, "at": actor_type,
         "aid": actor_id}).mappings().one()
    after = _policy(dict(row))
    label = wanted.record_type + (f"/{wanted.level}" if wanted.level else "")
    AuditLedgerWriter(conn).append(
        tenant_id=tenant_id, event_type="RetentionPolicyChanged", entity_type="RETENTION_POLICY", entity_id=label,
        actor_type=actor_type, actor_id=actor_id,
        action_reason=f"retention of {label}: {_days(before)} -> {_days(after)} ({after.retention_class})",
        before_state=before.as_state(), after_state=after.as_state(), created_at=now)
    return after, dict(row), True


def _days(policy: rp.Policy) -> str:
    return "permanent" if policy.days is None else f"{policy.days} days"


def _hold_state(row: Mapping[str, Any]) -> dict[str, Any]:
    return {"hold_id": row["id"], "scope": row["scope"], "target_id": row["target_id"] or None,
            "reason": row["reason"], "placed_by_id": row["placed_by_id"], "active": row["released_at"] is None,
            "release_reason": row["release_reason"]}


def list_holds(conn: Connection, tenant_id: str, include_released: bool, after: Sequence[Any] | None,
               limit: int) -> Page:
    where = "a.tenant_id = :tenant" + ("" if include_released else " AND a.released_at IS NULL")
    return keyset_page(conn, HOLD_SELECT, where, {"tenant": tenant_id}, "legal_holds a", after, limit,
                       order="a.placed_at DESC, a.id DESC", keyset="(a.placed_at, a.id) < (:after_at, :after_id)")


def _hold(conn: Connection, tenant_id: str, hold_id: str, *, lock: bool = False) -> Mapping[str, Any] | None:
    row = conn.execute(text(HOLD_SELECT + " WHERE a.tenant_id = :t AND a.id = :id" + (" FOR UPDATE" if lock else "")),
                       {"t": tenant_id, "id": hold_id}).mappings().first()
    return dict(row) if row is not None else None


def place_hold(conn: Connection, tenant_id: str, scope: str, target_id: str, reason: str, actor_type: str,
               actor_id: str, now: datetime) -> Mapping[str, Any]:
    hold_id = new_id("hold")
    conn.execute(text(
        "INSERT INTO legal_holds (tenant_id, id, scope, target_id, reason, placed_by_type, placed_by_id, placed_at) "
        "VALUES (:t, :id, :scope, :target, :reason, :at, :aid, :now)"),
        {"t": tenant_id, "id": hold_id, "scope": scope, "target": target_id, "reason": reason, "at": actor_type,
         "aid": actor_id, "now": now})
    row = _hold(conn, tenant_id, hold_id)
    if row is None:  # inserted above, in this transaction
        raise RuntimeError(f"legal hold {hold_id} is not readable after its insert")
    AuditLedgerWriter(conn).append(
        tenant_id=tenant_id, event_type="LegalHoldPlaced", entity_type="LEGAL_HOLD", entity_id=hold_id,
        actor_type=actor_type, actor_id=actor_id, correlation_id=target_id or None,
        action_reason=f"legal hold on {scope.lower()}{' ' + target_id if target_id else ''}: {reason}",
        after_state=_hold_state(row), created_at=now)
    return row


def release_hold(conn: Connection, tenant_id: str, hold_id: str, reason: str, actor_type: str, actor_id: str,
                 now: datetime) -> Mapping[str, Any]:
    before = _hold(conn, tenant_id, hold_id, lock=True)
    if before is None:
        raise faults.RecordNotFound(faults.Resource.LEGAL_HOLD, hold_id)
    if before["released_at"] is not None:
        raise faults.LegalHoldReleased(hold_id)
    conn.execute(text(
        "UPDATE legal_holds SET released_at = :now, released_by_type = :at, released_by_id = :aid, "
        "release_reason = :reason WHERE tenant_id = :t AND id = :id"),
        {"t": tenant_id, "id": hold_id, "now": now, "at": actor_type, "aid": actor_id, "reason": reason})
    after = _hold(conn, tenant_id, hold_id)
    if after is None:
        raise RuntimeError(f"legal hold {hold_id} vanished during its release")
    AuditLedgerWriter(conn).append(
        tenant_id=tenant_id, event_type="LegalHoldReleased", entity_type="LEGAL_HOLD", entity_id=hold_id,
        actor_type=actor_type, actor_id=actor_id, correlation_id=before["target_id"] or None,
        action_reason=f"legal hold released: {reason}", before_state=_hold_state(before),
        after_state=_hold_state(after), created_at=now)
    return after


# The record types (and levels) an export's records come from, by its scope.
_CARRIED = {"LLM_RUN": rp.KEYS, "INCIDENT": rp.KEYS, "AUDIT_SLICE": ((rp.AUDIT_LEDGER, ""),),
            "SYSTEM_SLICE": tuple(k for k in rp.KEYS if k[0] == rp.SYSTEM_RECORDS)}


def manifest_section(conn: Connection, tenant_id: str, scope: str, severity: str | None = None) -> dict[str, Any]:
    """The manifest's ``retention``: the tenant's policies in force for the record types the
    export carries (a system slice of one severity: that level's), the class of the longest-kept
    one (permanent first; ties: the first in record-type order) and the union of their tags."""
    carried = [k for k in _CARRIED[scope] if severity is None or k[0] != rp.SYSTEM_RECORDS or k[1] == severity]
    found = [p for p, _ in policies(conn, tenant_id) if p.key in carried]
    longest = max(found, key=lambda p: (p.days is None, p.days or 0))
    return {"retention_class": longest.retention_class,
            "compliance_tags": sorted({t for p in found for t in p.compliance_tags}),
            "policies": [p.as_state() for p in found]}
