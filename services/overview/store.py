"""The Overview service's SQL: every query it runs, and nothing else.

Overview owns no table (INV-OVERVIEW-001): each function reads the source tables of
other domains (and the worker_runs cost rollup the database keeps) through a
read-only session scoped to the caller's tenant. Every query names the index or
table that serves it (migrations 0001, 0002 and 0004).
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection

from aos_runtime.keyset import Page, after_clause, count_total, cut
from aos_runtime.pagination import EXACT_TOTAL_LIMIT
from aos_runtime.rows import all_of, one_of

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


# The table each domain's total counts.
_DOMAIN_TABLES = {"Incidents": "incidents", "Policies": "policy_proposals", "Activity": "worker_runs"}


def highlights(conn: Connection, tenant_id: str,
               breaches_since: datetime) -> tuple[Pulse, dict[str, tuple[int, bool]]]:
    """The pulse's exact counts and each domain's total, in one statement (one snapshot,
    one round trip). The pulse counts are partial-index counts over open work, small
    however large the history grows; the ACTIVE and the critical incidents come from
    one pass over the same index. A total is (count, is_estimate): exact up to
    EXACT_TOTAL_LIMIT (an index-only count that stops one row past it, on the
    (tenant_id) indexes of migration 0002), else the planner's estimate, flagged,
    asked for in a second statement only when some count reached the cap."""
    cap = EXACT_TOTAL_LIMIT + 1
    totals = ",".join(f"""
          (SELECT count(*) FROM (SELECT 1 FROM {table} WHERE tenant_id = :t LIMIT :cap) s) AS total_{table}"""
                      for table in _DOMAIN_TABLES.values())
    row = one_of(conn.execute(text(f"""
        SELECT i.active_incidents, i.critical_incidents,
          (SELECT count(*) FROM policy_proposals WHERE tenant_id = :t AND status = 'draft') AS draft_proposals,
          (SELECT count(*) FROM limit_breaches
            WHERE tenant_id = :t AND breached_at >= :since) AS recent_breaches,
          (SELECT count(*) FROM worker_runs
            WHERE tenant_id = :t AND status IN ('queued', 'running')) AS pending_runs,
          (SELECT created_at FROM audit_ledger WHERE tenant_id = :t
            ORDER BY created_at DESC, id DESC LIMIT 1) AS last_activity_at,{totals}
        FROM (SELECT count(*) AS active_incidents,
                     count(*) FILTER (WHERE severity = ANY(:critical)) AS critical_incidents
              FROM incidents WHERE tenant_id = :t AND lifecycle_state = 'ACTIVE') i
    """), {"t": tenant_id, "since": breaches_since, "critical": list(CRITICAL_SEVERITIES),
           "cap": cap}))
    counted = {domain: row[f"total_{table}"] for domain, table in _DOMAIN_TABLES.items()}
    capped = [domain for domain, n in counted.items() if n >= cap]
    estimated = dict(zip(capped, _estimated_rows(conn, tenant_id, [_DOMAIN_TABLES[d] for d in capped]), strict=True))
    pulse = Pulse(**{column: value for column, value in row.items() if not column.startswith("total_")})
    return pulse, {domain: (max(estimated[domain], cap), True) if domain in estimated else (n, False)
                   for domain, n in counted.items()}


def _estimated_rows(conn: Connection, tenant_id: str, tables: Sequence[str]) -> list[int]:
    """The planner's estimate of the tenant's rows in each table, from one EXPLAIN of
    their UNION ALL, whose Append holds a branch per table, in order."""
    if not tables:
        return []
    union = " UNION ALL ".join(f"SELECT 1 FROM {table} WHERE tenant_id = :t" for table in tables)
    plan = conn.execute(text(f"EXPLAIN (FORMAT JSON) {union}"), {"t": tenant_id}).scalar_one()
    top = (plan if isinstance(plan, list) else json.loads(plan))[0]["Plan"]
    if len(tables) == 1:
        return [int(top["Plan Rows"])]
    if top["Node Type"] == "Append" and len(top["Plans"]) == len(tables):
        return [int(branch["Plan Rows"]) for branch in top["Plans"]]
    # Another shape (a parallel plan's branches carry each worker's share): a
    # statement per table, whose top node's rows are the whole estimate.
    return [n for table in tables for n in _estimated_rows(conn, tenant_id, [table])]


@dataclass(frozen=True)
class SpendWindow:
    scope: str                # TENANT, PROJECT, AGENT or PROVIDER
    scope_id: str             # the project, agent or provider; '' for TENANT
    start: datetime | None    # [start, end); None: unbounded
    end: datetime | None


# worker_runs.cost_cents summed over each window w (its scope, scope_id and the
# _DAYS columns): whole UTC days from the daily rollup (worker_run_cost_daily,
# migrations 0004-0005: a row per day and stripe, cost_cents in its primary key's
# index), the partial days at its edges from worker_runs (the (tenant_id,
# created_at) index, which INCLUDEs cost_cents and the scope columns, migration
# 0002), so any timestamps are exact. The one definition of spend.
_SPEND = """
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
                                                                  WHEN 'PROVIDER' THEN r.provider END) e"""
# sum(bigint) is numeric in Postgres: whole cents, returned as ints.
_SPENT = "coalesce(d.cents, 0) + coalesce(e.cents, 0)"
# A window's days (_split_days) as parallel arrays, and their columns.
_DAYS = ("first_day", "last_day", "head_from", "head_to", "tail_from", "tail_to")
_DAY_ARRAYS = ", ".join(f"CAST(:{c} AS {t}[])"
                        for c, t in zip(_DAYS, ("date",) * 2 + ("timestamptz",) * 4, strict=True))


def _day_arrays(spans: Sequence[tuple[datetime | None, datetime | None]]) -> dict[str, list]:
    # Callers pass at least one span (spend_cents returns early without windows).
    return dict(zip(_DAYS, map(list, zip(*(_split_days(*span) for span in spans), strict=True)), strict=True))


def spend_cents(conn: Connection, tenant_id: str, windows: Sequence[SpendWindow]) -> list[int]:
    """worker_runs.cost_cents summed over each window, in one statement (_SPEND)."""
    if not windows:
        return []
    rows = conn.execute(text(f"""
        SELECT {_SPENT}
        FROM unnest(CAST(:scope AS text[]), CAST(:scope_id AS text[]), {_DAY_ARRAYS})
             WITH ORDINALITY AS w (scope, scope_id, {", ".join(_DAYS)}, n)
        {_SPEND}
        ORDER BY w.n
    """), {"t": tenant_id, "scope": [w.scope for w in windows], "scope_id": [w.scope_id for w in windows],
           **_day_arrays([(w.start, w.end) for w in windows])}).scalars()
    return [int(cents) for cents in rows]


@dataclass(frozen=True)
class Costs:
    spent_cents: int                                 # in the requested period
    budgets: list[tuple[Mapping[str, Any], int]]     # (an ACTIVE budget limit, cents spent in its window)
    breach_count: int                                # budget breaches in the period
    overage: Decimal                                 # their summed excess over their limits


def costs(conn: Connection, tenant_id: str, currency: str, start: datetime, end: datetime,
          budget_windows: Mapping[str, tuple[datetime | None, datetime | None]]) -> Costs:
    """Spend in [start, end); each ACTIVE budget limit in ``currency``, by name, with
    the spend in its current window (``budget_windows``: a window per reset period);
    and the budget breaches in [start, end). One statement, one snapshot: its first
    row is the period's, then a row per budget."""
    spans = {"": (start, end), **budget_windows}  # '': the requested period's, no reset period's
    rows = all_of(conn.execute(text(f"""
        WITH span AS (
            SELECT * FROM unnest(CAST(:reset_period AS text[]), {_DAY_ARRAYS}) AS s (reset_period, {", ".join(_DAYS)})),
        budget AS (
            SELECT id, name, scope, coalesce(scope_id, '') AS scope_id, max_value, currency, reset_period,
                   row_number() OVER (ORDER BY name, id) AS n
            FROM limits
            WHERE tenant_id = :t AND limit_category = 'BUDGET' AND status = 'ACTIVE' AND currency = :currency),
        w AS (
            SELECT 0 AS n, 'TENANT' AS scope, '' AS scope_id, {", ".join(_DAYS)} FROM span WHERE reset_period = ''
            UNION ALL
            SELECT b.n, b.scope, b.scope_id, {", ".join(f"s.{c}" for c in _DAYS)}
            FROM budget b LEFT JOIN span s USING (reset_period)),
        violation AS (
            SELECT greatest(b.value_at_breach - b.limit_value, 0) AS overage
            FROM limit_breaches b JOIN limits l ON l.id = b.limit_id AND l.tenant_id = b.tenant_id
            WHERE b.tenant_id = :t AND l.limit_category = 'BUDGET' AND b.breached_at >= :start AND b.breached_at < :end)
        SELECT {_SPENT} AS spent, b.id, b.name, b.scope, b.scope_id, b.max_value, b.currency, b.reset_period,
               (SELECT count(*) FROM violation) AS breach_count,
               (SELECT coalesce(sum(overage), 0) FROM violation) AS overage
        FROM w
        {_SPEND}
        LEFT JOIN budget b ON b.n = w.n
        ORDER BY w.n
    """), {"t": tenant_id, "currency": currency, "start": start, "end": end, "reset_period": list(spans),
           **_day_arrays(list(spans.values()))}))
    period, *budgets = rows
    for row in budgets:  # a reset period without a window would have summed nothing, silently
        if row["reset_period"] not in budget_windows:
            raise ValueError(f"no window for reset period {row['reset_period']!r}")
    return Costs(spent_cents=int(period["spent"]), budgets=[(row, int(row["spent"])) for row in budgets],
                 breach_count=period["breach_count"], overage=period["overage"])


def _split_days(start: datetime | None, end: datetime | None) -> tuple:
    """[start, end) as the whole UTC days [first_day, last_day) inside it (ISO dates, or
    Postgres' infinities when unbounded: psycopg has no Python value for those) and
    the partial days left at its head and its tail as [from, to) instants (NULL
    bounds, which match no row, when there is none)."""
    first = None if start is None else _midnight(start, up=True)
    last = None if end is None else _midnight(end)
    if first is not None and last is not None and first >= last:  # no whole day inside: all of it is the head
        return first.date().isoformat(), first.date().isoformat(), start, end, None, None
    # first is None exactly when start is, last exactly when end is.
    head = (start, first) if start is not None and first is not None and start < first else (None, None)
    tail = (last, end) if end is not None and last is not None and last < end else (None, None)
    return (first.date().isoformat() if first else "-infinity", last.date().isoformat() if last else "infinity",
            *head, *tail)


def _midnight(instant: datetime, up: bool = False) -> datetime:
    """The UTC midnight at or before ``instant`` (``up``: at or after it)."""
    day = instant.astimezone(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    return day + timedelta(days=1) if up and day < instant else day


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
    keyset, cursor = after_clause(after, "(created_at, id) <= (:after_at, :after_id)")
    params.update(cursor)
    outer = ""
    if after is not None:
        params["after_source"] = after[2]
        outer = "WHERE (created_at, id, source) < (:after_at, :after_id, :after_source)"
    severity = " AND severity = ANY(:severities)" if severities is not None else ""
    branches = [_DECISION_BRANCHES[s].format(severity=severity, keyset=keyset) for s in sources]
    if not branches:
        return Page(rows=[], has_more=False, total=0, total_is_estimate=False)
    union = " UNION ALL ".join(f"({b} ORDER BY created_at DESC, id DESC LIMIT :branch_limit)" for b in branches)
    rows = all_of(conn.execute(text(f"SELECT * FROM ({union}) d {outer} ORDER BY created_at DESC, id DESC, source DESC "
                             "LIMIT :limit"), params))
    counted = " UNION ALL ".join(_DECISION_BRANCHES[s].format(severity=severity, keyset="") for s in sources)
    total, estimate = count_total(conn, f"({counted}) d", "true", params)
    return cut(rows, limit, total, estimate)


@dataclass(frozen=True)
class BudgetHistory:
    costs: Costs                                # GetCosts' answer for the range (budgets in their current window)
    daily: dict[tuple[str, str], dict[date, int]]  # (scope, scope_id) → UTC day → cents spent that day
    carried: list[int]                          # per budget: cents spent in its window before the first day


def budget_history(conn: Connection, tenant_id: str, currency: str, first_day: datetime, end: datetime,
                   budget_windows: Mapping[str, tuple[datetime | None, datetime | None]],
                   first_windows: Mapping[str, tuple[datetime | None, datetime | None]]) -> BudgetHistory:
    """Each ACTIVE budget (``costs``), the spend per UTC day in [first_day, end) of each
    budget's scope and of the tenant, from the daily rollup (worker_run_cost_daily: its
    primary key (tenant_id, scope, scope_id, day, …) INCLUDEs cost_cents, an index-only
    range scan per scope), and the spend each budget's window had before ``first_day``
    (``first_windows``: the window per reset period that holds the first day) — all in
    one session."""
    costs_now = costs(conn, tenant_id, currency, first_day, end, budget_windows)
    scopes = sorted({("TENANT", "")} | {(row["scope"], row["scope_id"]) for row, _ in costs_now.budgets})
    daily: dict[tuple[str, str], dict[date, int]] = {scope: {} for scope in scopes}
    for row in all_of(conn.execute(text("""
        SELECT s.scope, s.scope_id, r.day, sum(r.cost_cents) AS cents
        FROM unnest(CAST(:scope AS text[]), CAST(:scope_id AS text[])) AS s (scope, scope_id)
        JOIN worker_run_cost_daily r ON r.tenant_id = :t AND r.scope = s.scope AND r.scope_id = s.scope_id
                                    AND r.day >= :first AND r.day < :last
        GROUP BY s.scope, s.scope_id, r.day
    """), {"t": tenant_id, "scope": [s for s, _ in scopes], "scope_id": [i for _, i in scopes],
           "first": first_day.date(), "last": end.date()})):
        daily[(row["scope"], row["scope_id"])][row["day"]] = int(row["cents"])
    before = []
    for row, _ in costs_now.budgets:
        start = first_windows[row["reset_period"]][0]
        before.append(SpendWindow(row["scope"], row["scope_id"], start, first_day)
                      if start is None or start < first_day else None)
    carried_windows = [w for w in before if w is not None]
    spent = iter(spend_cents(conn, tenant_id, carried_windows))
    return BudgetHistory(costs=costs_now, daily=daily, carried=[0 if w is None else next(spent) for w in before])
