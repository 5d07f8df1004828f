"""The Overview service's SQL: every query it runs, and nothing else.

Overview owns no table (INV-OVERVIEW-001): each function reads the source tables of
other domains (and the worker_runs cost rollup the database keeps) through a
read-only session scoped to the caller's tenant. Every query names the index or
table that serves it (migrations 0001, 0002 and 0004).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
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
    partial-index count over open work, small however large the history grows; the
    ACTIVE and the critical incidents come from one pass over the same index."""
    row = conn.execute(text("""
        SELECT i.active_incidents, i.critical_incidents,
          (SELECT count(*) FROM policy_proposals WHERE tenant_id = :t AND status = 'draft') AS draft_proposals,
          (SELECT count(*) FROM limit_breaches
            WHERE tenant_id = :t AND breached_at >= :since) AS recent_breaches,
          (SELECT count(*) FROM worker_runs
            WHERE tenant_id = :t AND status IN ('queued', 'running')) AS pending_runs,
          (SELECT created_at FROM audit_ledger WHERE tenant_id = :t
            ORDER BY created_at DESC, id DESC LIMIT 1) AS last_activity_at
        FROM (SELECT count(*) AS active_incidents,
                     count(*) FILTER (WHERE severity = ANY(:critical)) AS critical_incidents
              FROM incidents WHERE tenant_id = :t AND lifecycle_state = 'ACTIVE') i
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


@dataclass(frozen=True)
class SpendWindow:
    scope: str                # TENANT, PROJECT, AGENT or PROVIDER
    scope_id: str             # the project, agent or provider; '' for TENANT
    start: datetime | None    # [start, end); None: unbounded
    end: datetime | None


def spend_cents(conn: Connection, tenant_id: str, windows: Sequence[SpendWindow]) -> list[int]:
    """worker_runs.cost_cents summed over each window, in one statement. Whole UTC days
    are read from the daily rollup (worker_run_cost_daily, migration 0004: a row per
    day and stripe, cost_cents in its primary key's index), the partial days at a
    window's edges from worker_runs (the (tenant_id, created_at) index, which INCLUDEs
    cost_cents and the scope columns, migration 0002), so any timestamps are exact."""
    if not windows:
        return []
    columns = zip(*((w.scope, w.scope_id, *_split_days(w.start, w.end)) for w in windows))
    params = dict(zip(("scope", "scope_id", "first_day", "last_day", "head_from", "head_to", "tail_from", "tail_to"),
                      map(list, columns)))
    rows = conn.execute(text("""
        SELECT coalesce(d.cents, 0) + coalesce(e.cents, 0)
        FROM unnest(CAST(:scope AS text[]), CAST(:scope_id AS text[]), CAST(:first_day AS date[]),
                    CAST(:last_day AS date[]), CAST(:head_from AS timestamptz[]), CAST(:head_to AS timestamptz[]),
                    CAST(:tail_from AS timestamptz[]), CAST(:tail_to AS timestamptz[]))
             WITH ORDINALITY AS w (scope, scope_id, first_day, last_day, head_from, head_to, tail_from, tail_to, n)
        CROSS JOIN LATERAL (
            SELECT sum(cost_cents) AS cents FROM worker_run_cost_daily
            WHERE tenant_id = :t AND scope = w.scope AND scope_id = w.scope_id
              AND day >= w.first_day AND day < w.last_day) d
        CROSS JOIN LATERAL (
            SELECT sum(r.cost_cents) AS cents
            FROM unnest(ARRAY[w.head_from, w.tail_from], ARRAY[w.head_to, w.tail_to]) AS edge (start, stop)
            JOIN worker_runs r ON r.tenant_id = :t AND r.created_at >= edge.start AND r.created_at < edge.stop
            WHERE w.scope = 'TENANT' OR w.scope_id = CASE w.scope WHEN 'PROJECT' THEN r.project_id
                                                                  WHEN 'AGENT' THEN r.agent_id
                                                                  WHEN 'PROVIDER' THEN r.provider END) e
        ORDER BY w.n
    """), {"t": tenant_id, **params}).scalars()
    # sum(bigint) is numeric in Postgres: whole cents, returned as ints.
    return [int(cents) for cents in rows]


def _split_days(start: datetime | None, end: datetime | None) -> tuple:
    """[start, end) as the whole UTC days [first_day, last_day) inside it (ISO dates, or
    Postgres' infinities when unbounded: psycopg has no Python value for those) and
    the partial days left at its head and its tail as [from, to) instants (NULL
    bounds, which match no row, when there is none)."""
    first = None if start is None else _midnight(start, up=True)
    last = None if end is None else _midnight(end)
    if first is not None and last is not None and first >= last:  # no whole day inside: all of it is the head
        return first.date().isoformat(), first.date().isoformat(), start, end, None, None
    head = (start, first) if start is not None and start < first else (None, None)
    tail = (last, end) if end is not None and last < end else (None, None)
    return (first.date().isoformat() if first else "-infinity", last.date().isoformat() if last else "infinity",
            *head, *tail)


def _midnight(instant: datetime, up: bool = False) -> datetime:
    """The UTC midnight at or before ``instant`` (``up``: at or after it)."""
    day = instant.astimezone(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    return day + timedelta(days=1) if up and day < instant else day


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
