"""The Logs service's SQL: every query it runs, and nothing else.

Functions take a connection already scoped to the caller's tenant (row-level
security) and still filter by tenant explicitly: both must agree for a row to
appear. Lists are keyset-paginated on (created_at DESC, id DESC), so page 2,000
costs what page 1 does; totals count at most 10,001 matching rows and fall back
to the planner's estimate (flagged) above that.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Mapping, Sequence

from sqlalchemy import text
from sqlalchemy.engine import Connection

from aos_runtime.pagination import EXACT_TOTAL_LIMIT


@dataclass(frozen=True)
class Page:
    rows: list[Mapping[str, Any]]
    has_more: bool
    total: int
    total_is_estimate: bool


@dataclass(frozen=True)
class AuditFilters:
    event_types: tuple[str, ...] = ()
    entity_type: str | None = None
    actor_type: str | None = None
    actor_id: str | None = None
    correlation_id: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None

    def where(self) -> tuple[str, dict[str, Any]]:
        clauses, params = ["a.tenant_id = :tenant"], {}
        if self.event_types:
            clauses.append("a.event_type = ANY(:event_types)")
            params["event_types"] = list(self.event_types)
        for column in ("entity_type", "actor_type", "actor_id", "correlation_id"):
            value = getattr(self, column)
            if value is not None:
                clauses.append(f"a.{column} = :{column}")
                params[column] = value
        if self.created_after is not None:
            clauses.append("a.created_at >= :created_after")
            params["created_after"] = self.created_after
        if self.created_before is not None:
            clauses.append("a.created_at < :created_before")
            params["created_before"] = self.created_before
        return " AND ".join(clauses), params


# An audit entry with its correlation spine: the run it names (in its state, or
# by correlation id), that run's trace, violated policy and incident.
_AUDIT_SELECT = """
SELECT a.id, a.tenant_id, a.seq, a.event_type, a.entity_type, a.entity_id, a.actor_type, a.actor_id,
       a.action_reason, a.correlation_id, a.created_at, a.recorded_at, a.content_hash, a.prev_hash,
       a.chain_hash, a.is_synthetic,
       coalesce(a.after_state ->> 'run_id', a.before_state ->> 'run_id', tr.run_id) AS run_id,
       coalesce(a.after_state ->> 'policy_id', a.before_state ->> 'policy_id') AS state_policy_id,
       coalesce(a.after_state ->> 'incident_id', a.before_state ->> 'incident_id') AS state_incident_id,
       tr.trace_id, tr.violation_policy_id, tr.incident_id AS trace_incident_id{extra}
FROM audit_ledger a
LEFT JOIN LATERAL (
    SELECT t.trace_id, t.run_id, t.violation_policy_id, t.incident_id FROM aos_traces t
    WHERE t.tenant_id = a.tenant_id
      AND t.run_id = coalesce(a.after_state ->> 'run_id', a.before_state ->> 'run_id', a.correlation_id)
    ORDER BY t.started_at LIMIT 1) tr ON true
"""


def _page(conn: Connection, select: str, where: str, params: dict[str, Any], count_from: str,
          after: Sequence[Any] | None, limit: int, order: str = "a.created_at DESC, a.id DESC",
          keyset: str = "(a.created_at, a.id) < (:after_at, :after_id)") -> Page:
    page_where = where
    if after is not None:
        page_where += f" AND {keyset}"
        params = {**params, "after_at": datetime.fromisoformat(after[0].replace("Z", "+00:00")),
                  "after_id": after[1]}
    rows = conn.execute(text(f"{select} WHERE {page_where} ORDER BY {order} LIMIT :limit"),
                        {**params, "limit": limit + 1}).mappings().all()
    total, estimate = _total(conn, count_from, where, params)
    return Page(rows=list(rows[:limit]), has_more=len(rows) > limit, total=total, total_is_estimate=estimate)


def _total(conn: Connection, count_from: str, where: str, params: dict[str, Any]) -> tuple[int, bool]:
    exact = conn.execute(text(f"SELECT count(*) FROM (SELECT 1 FROM {count_from} WHERE {where} LIMIT :cap) s"),
                         {**params, "cap": EXACT_TOTAL_LIMIT + 1}).scalar_one()
    if exact <= EXACT_TOTAL_LIMIT:
        return exact, False
    plan = conn.execute(text(f"EXPLAIN (FORMAT JSON) SELECT 1 FROM {count_from} WHERE {where}"), params).scalar_one()
    plan = plan if isinstance(plan, list) else json.loads(plan)
    return max(int(plan[0]["Plan"]["Plan Rows"]), EXACT_TOTAL_LIMIT + 1), True


def list_audit_entries(conn: Connection, tenant_id: str, filters: AuditFilters, after: Sequence[Any] | None,
                       limit: int) -> Page:
    where, params = filters.where()
    return _page(conn, _AUDIT_SELECT.format(extra=""), where, {**params, "tenant": tenant_id},
                 "audit_ledger a", after, limit)


def get_audit_entry(conn: Connection, tenant_id: str, entry_id: str) -> Mapping[str, Any] | None:
    return conn.execute(text(_AUDIT_SELECT.format(extra=", a.before_state, a.after_state") +
                             " WHERE a.tenant_id = :tenant AND a.id = :id"),
                        {"tenant": tenant_id, "id": entry_id}).mappings().first()


def ledger_head(conn: Connection, tenant_id: str) -> Mapping[str, Any] | None:
    return conn.execute(text("SELECT seq, chain_hash, created_at FROM audit_ledger WHERE tenant_id = :t "
                             "ORDER BY seq DESC LIMIT 1"), {"t": tenant_id}).mappings().first()


_EXPORT_SELECT = """
SELECT a.id, a.tenant_id, a.seq, a.scope, a.subject_id, a.run_id, a.incident_id, a.slice_filter, a.bundle_type,
       a.format, a.content_type, a.filename, a.size_bytes, a.checksum, a.manifest, a.dsse_envelope,
       a.signing_key_id, a.redaction, a.idempotency_key, a.requested_by_type, a.requested_by_id,
       a.correlation_id, a.created_at, a.recorded_at, a.content_hash, a.prev_hash, a.chain_hash
FROM log_exports a
"""


def list_exports(conn: Connection, tenant_id: str, created_after: datetime | None, created_before: datetime | None,
                 after: Sequence[Any] | None, limit: int, run_id: str | None = None) -> Page:
    clauses, params = ["a.tenant_id = :tenant"], {"tenant": tenant_id}
    for column, op, value in (("created_at", ">=", created_after), ("created_at", "<", created_before),
                              ("run_id", "=", run_id)):
        if value is not None:
            name = f"{column}_{len(params)}"
            clauses.append(f"a.{column} {op} :{name}")
            params[name] = value
    return _page(conn, _EXPORT_SELECT, " AND ".join(clauses), params, "log_exports a", after, limit)
