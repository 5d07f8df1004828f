"""The Overview service's SQL: every query it runs, and nothing else.

Overview owns no table (INV-OVERVIEW-001): each function reads the source tables of
other domains through a read-only session scoped to the caller's tenant. Every
query names the index that serves it (migrations 0001 and 0002).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Mapping, Sequence

from sqlalchemy import text
from sqlalchemy.engine import Connection

from aos_runtime.keyset import Page, count_total, position

# The one definition of a critical incident: what turns the pulse CRITICAL and
# what the Incidents domain counts as critical.
CRITICAL_SEVERITIES = ("critical", "high")


@dataclass(frozen=True)
class Pulse:
    active_incidents: int
    critical_incidents: int
    draft_proposals: int
    recent_breaches: int
    pending_runs: int
    last_activity_at: datetime | None


def pulse(conn: Connection, tenant_id: str, breaches_since: datetime) -> Pulse:
    """The exact counts behind the pulse, in one statement (one snapshot). Each is a
    partial-index count over open work, small however large the history grows."""
    row = conn.execute(text("""
        SELECT
          (SELECT count(*) FROM incidents
            WHERE tenant_id = :t AND lifecycle_state = 'ACTIVE') AS active_incidents,
          (SELECT count(*) FROM incidents
            WHERE tenant_id = :t AND lifecycle_state = 'ACTIVE' AND severity = ANY(:critical)) AS critical_incidents,
          (SELECT count(*) FROM policy_proposals WHERE tenant_id = :t AND status = 'draft') AS draft_proposals,
          (SELECT count(*) FROM limit_breaches
            WHERE tenant_id = :t AND breached_at >= :since) AS recent_breaches,
          (SELECT count(*) FROM worker_runs
            WHERE tenant_id = :t AND status IN ('queued', 'running')) AS pending_runs,
          (SELECT created_at FROM audit_ledger WHERE tenant_id = :t
            ORDER BY created_at DESC, id DESC LIMIT 1) AS last_activity_at
    """), {"t": tenant_id, "since": breaches_since, "critical": list(CRITICAL_SEVERITIES)}).mappings().one()
    return Pulse(**row)


def domain_totals(conn: Connection, tenant_id: str) -> dict[str, tuple[int, bool]]:
    """Every record per domain: exact up to 10,000, else a flagged estimate."""
    params = {"tenant": tenant_id}
    return {
        "Incidents": count_total(conn, "incidents", "tenant_id = :tenant", params),
        "Policies": count_total(conn, "policy_proposals", "tenant_id = :tenant", params),
        "Activity": count_total(conn, "worker_runs", "tenant_id = :tenant", params),
    }


def spend_cents(conn: Connection, tenant_id: str, start: datetime | None, end: datetime | None,
                scope_column: str | None = None, scope_id: str | None = None) -> int:
    """Sum of worker_runs.cost_cents created in [start, end), for the tenant or one
    project / agent / provider (an index-only range scan, migration 0002)."""
    clauses, params = ["tenant_id = :t"], {"t": tenant_id}
    if scope_column is not None:
        if scope_column not in ("project_id", "agent_id", "provider"):
            raise ValueError(f"not a budget scope column: {scope_column}")
        clauses.append(f"{scope_column} = :scope_id")
        params["scope_id"] = scope_id
    if start is not None:
        clauses.append("created_at >= :start")
        params["start"] = start
    if end is not None:
        clauses.append("created_at < :end")
        params["end"] = end
    # sum(bigint) is numeric in Postgres: whole cents, returned as an int.
    return int(conn.execute(text(f"SELECT coalesce(sum(cost_cents), 0) FROM worker_runs "
                                 f"WHERE {' AND '.join(clauses)}"), params).scalar_one())


def active_budget_limits(conn: Connection, tenant_id: str) -> list[Mapping[str, Any]]:
    return list(conn.execute(text("""
        SELECT id, name, scope, scope_id, max_value, currency, reset_period
        FROM limits
        WHERE tenant_id = :t AND limit_category = 'BUDGET' AND status = 'ACTIVE'
        ORDER BY name, id
    """), {"t": tenant_id}).mappings())


def budget_violations(conn: Connection, tenant_id: str, start: datetime, end: datetime) -> tuple[int, Decimal]:
    """Breaches of BUDGET limits in [start, end) and their summed overage."""
    row = conn.execute(text("""
        SELECT count(*) AS n, coalesce(sum(greatest(b.value_at_breach - b.limit_value, 0)), 0) AS overage
        FROM limit_breaches b JOIN limits l ON l.id = b.limit_id AND l.tenant_id = b.tenant_id
        WHERE b.tenant_id = :t AND l.limit_category = 'BUDGET' AND b.breached_at >= :start AND b.breached_at < :end
    """), {"t": tenant_id, "start": start, "end": end}).one()
    return row.n, row.overage


# The decision queue is the union of two partial indexes, merged newest first. The
# sort key is (created_at, id, source) so that an incident and a proposal sharing
# a timestamp and an id still have one order. Each branch reads at most limit + 2
# rows from its index (<= keeps the row tied with the cursor; the outer filter
# drops it).
_DECISION_BRANCHES = {
    "INCIDENT": """
        SELECT 'INCIDENT' AS source, id, title AS summary, severity, created_at FROM incidents
        WHERE tenant_id = :tenant AND lifecycle_state = 'ACTIVE'{severity}{keyset}""",
    "POLICY": """
        SELECT 'POLICY' AS source, id, proposal_name AS summary, NULL AS severity, created_at FROM policy_proposals
        WHERE tenant_id = :tenant AND status = 'draft'{keyset}""",
}


def list_decisions(conn: Connection, tenant_id: str, sources: Sequence[str], severities: Sequence[str] | None,
                   after: Sequence[Any] | None, limit: int) -> Page:
    """ACTIVE incidents and draft proposals, newest first. ``severities`` narrows the
    incidents (None: all); ``sources`` names the branches to read."""
    params: dict[str, Any] = {"tenant": tenant_id, "severities": list(severities or ()), "limit": limit + 1,
                              "branch_limit": limit + 2}
    keyset, outer = "", ""
    if after is not None:
        params.update(position(after), after_source=after[2])
        keyset = " AND (created_at, id) <= (:after_at, :after_id)"
        outer = "WHERE (created_at, id, source) < (:after_at, :after_id, :after_source)"
    severity = " AND severity = ANY(:severities)" if severities is not None else ""
    branches = [_DECISION_BRANCHES[s].format(severity=severity, keyset=keyset) for s in sources]
    if not branches:
        return Page(rows=[], has_more=False, total=0, total_is_estimate=False)
    union = " UNION ALL ".join(f"({b} ORDER BY created_at DESC, id DESC LIMIT :branch_limit)" for b in branches)
    rows = conn.execute(text(f"SELECT * FROM ({union}) d {outer} ORDER BY created_at DESC, id DESC, source DESC "
                             "LIMIT :limit"), params).mappings().all()
    counted = " UNION ALL ".join(_DECISION_BRANCHES[s].format(severity=severity, keyset="") for s in sources)
    total, estimate = count_total(conn, f"({counted}) d", "true", params)
    return Page(rows=list(rows[:limit]), has_more=len(rows) > limit, total=total, total_is_estimate=estimate)
