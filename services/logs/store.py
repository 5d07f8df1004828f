"""The Logs service's SQL: every query it runs, and nothing else.

Functions take a connection already scoped to the caller's tenant (row-level
security) and still filter by tenant explicitly: both must agree for a row to
appear. Lists go through aos_runtime.keyset (keyset pages, capped totals).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Mapping, Sequence

from sqlalchemy import text
from sqlalchemy.engine import Connection

from aos_runtime.keyset import Page, count_total, keyset_page, position


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
# by correlation id), that run's trace, violated policy and incident. The run key is
# computed apart (OFFSET 0 keeps it a subquery of its own): under row-level security a
# join condition holding jsonb operators, which are not leakproof, cannot be an index
# condition, and each entry then read every trace of its tenant (tests/db/test_logs_store.py).
_AUDIT_SELECT = """
SELECT a.id, a.tenant_id, a.seq, a.event_type, a.entity_type, a.entity_id, a.actor_type, a.actor_id,
       a.action_reason, a.correlation_id, a.created_at, a.recorded_at, a.content_hash, a.prev_hash,
       a.chain_hash, a.is_synthetic,
       coalesce(a.after_state ->> 'run_id', a.before_state ->> 'run_id', tr.run_id) AS run_id,
       coalesce(a.after_state ->> 'policy_id', a.before_state ->> 'policy_id') AS state_policy_id,
       coalesce(a.after_state ->> 'incident_id', a.before_state ->> 'incident_id') AS state_incident_id,
       tr.trace_id, tr.violation_policy_id, tr.incident_id AS trace_incident_id{extra}
FROM audit_ledger a
CROSS JOIN LATERAL (
    SELECT coalesce(a.after_state ->> 'run_id', a.before_state ->> 'run_id', a.correlation_id) AS run_key OFFSET 0) k
LEFT JOIN LATERAL (
    SELECT t.trace_id, t.run_id, t.violation_policy_id, t.incident_id FROM aos_traces t
    WHERE t.tenant_id = a.tenant_id AND t.run_id = k.run_key
    ORDER BY t.started_at LIMIT 1) tr ON true
"""


def list_audit_entries(conn: Connection, tenant_id: str, filters: AuditFilters, after: Sequence[Any] | None,
                       limit: int) -> Page:
    where, params = filters.where()
    unfiltered = filters == AuditFilters()
    return keyset_page(conn, _AUDIT_SELECT.format(extra=""), where, {**params, "tenant": tenant_id},
                       "audit_ledger a", after, limit,
                       known_total=(lambda c: ledger_size(c, tenant_id)) if unfiltered else None)


def ledger_size(conn: Connection, tenant_id: str) -> int:
    """How many entries the tenant's ledger holds: the span of its seqs, read from two
    index probes instead of counting up to a million rows. Exact because the chain
    trigger assigns seq gapless under the tenant's lock, nothing deletes an entry, and
    retention drops only a chain's beginning (below the retention anchor); a gap made
    past those guarantees is what the integrity report exists to show."""
    return conn.execute(text(
        "SELECT coalesce((SELECT seq FROM audit_ledger WHERE tenant_id = :t ORDER BY seq DESC LIMIT 1)"
        " - (SELECT seq FROM audit_ledger WHERE tenant_id = :t ORDER BY seq LIMIT 1) + 1, 0)"),
        {"t": tenant_id}).scalar_one()


def get_audit_entry(conn: Connection, tenant_id: str, entry_id: str) -> Mapping[str, Any] | None:
    return conn.execute(text(_AUDIT_SELECT.format(extra=", a.before_state, a.after_state") +
                             " WHERE a.tenant_id = :tenant AND a.id = :id"),
                        {"tenant": tenant_id, "id": entry_id}).mappings().first()


def ledger_head(conn: Connection, tenant_id: str) -> Mapping[str, Any] | None:
    return conn.execute(text("SELECT seq, chain_hash, created_at, recorded_at FROM audit_ledger WHERE tenant_id = :t "
                             "ORDER BY seq DESC LIMIT 1"), {"t": tenant_id}).mappings().first()


EXPORT_SELECT = """
SELECT a.id, a.tenant_id, a.seq, a.scope, a.subject_id, a.run_id, a.incident_id, a.slice_filter, a.bundle_type,
       a.format, a.content_type, a.filename, a.size_bytes, a.checksum, a.manifest, a.dsse_envelope,
       a.signing_key_id, a.redaction, a.idempotency_key, a.requested_by_type, a.requested_by_id,
       a.correlation_id, a.created_at, a.recorded_at, a.content_hash, a.prev_hash, a.chain_hash
FROM log_exports a
"""


def list_exports(conn: Connection, tenant_id: str, created_after: datetime | None, created_before: datetime | None,
                 after: Sequence[Any] | None, limit: int, run_id: str | None = None, scope: str | None = None,
                 incident_id: str | None = None) -> Page:
    clauses, params = ["a.tenant_id = :tenant"], {"tenant": tenant_id}
    for column, op, value in (("created_at", ">=", created_after), ("created_at", "<", created_before),
                              ("run_id", "=", run_id), ("scope", "=", scope), ("incident_id", "=", incident_id)):
        if value is not None:
            name = f"{column}_{len(params)}"
            clauses.append(f"a.{column} {op} :{name}")
            params[name] = value
    return keyset_page(conn, EXPORT_SELECT, " AND ".join(clauses), params, "log_exports a", after, limit)


# --- LLM runs ---------------------------------------------------------------------

@dataclass(frozen=True)
class RunFilters:
    run_id: str | None = None
    agent_id: str | None = None
    status: str | None = None
    provider: str | None = None
    model: str | None = None
    has_violation: bool | None = None
    policy_id: str | None = None
    is_synthetic: bool | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None

    def where(self) -> tuple[str, dict[str, Any]]:
        clauses, params = ["a.tenant_id = :tenant"], {}
        for column, attr in (("run_id", "run_id"), ("agent_id", "agent_id"), ("execution_status", "status"),
                             ("provider", "provider"), ("model", "model"), ("is_synthetic", "is_synthetic")):
            value = getattr(self, attr)
            if value is not None:
                clauses.append(f"a.{column} = :{attr}")
                params[attr] = value
        if self.has_violation is not None:
            clauses.append("tr.violation_step_index IS " + ("NOT NULL" if self.has_violation else "NULL"))
        if self.policy_id is not None:
            clauses.append("tr.violation_policy_id = :policy_id")
            params["policy_id"] = self.policy_id
        if self.created_after is not None:
            clauses.append("a.created_at >= :created_after")
            params["created_after"] = self.created_after
        if self.created_before is not None:
            clauses.append("a.created_at < :created_before")
            params["created_before"] = self.created_before
        return " AND ".join(clauses), params


# A run's record joined with its trace (by trace id, else by run id).
_RUN_FROM = """llm_run_records a
LEFT JOIN LATERAL (
    SELECT t.trace_id, t.violation_step_index, t.violation_policy_id, t.incident_id FROM aos_traces t
    WHERE t.tenant_id = a.tenant_id AND (t.trace_id = a.trace_id OR (a.trace_id IS NULL AND t.run_id = a.run_id))
    ORDER BY t.started_at LIMIT 1) tr ON true"""
_RUN_SELECT = f"""
SELECT a.*, tr.trace_id AS joined_trace_id, tr.violation_step_index, tr.violation_policy_id,
       tr.incident_id AS trace_incident_id
FROM {_RUN_FROM}
"""


def list_runs(conn: Connection, tenant_id: str, filters: RunFilters, after: Sequence[Any] | None,
              limit: int) -> Page:
    where, params = filters.where()
    # The total counts the trace join only when a filter is on the trace: the join
    # never changes how many runs there are, and costs a lookup per counted run.
    on_trace = filters.has_violation is not None or filters.policy_id is not None
    return keyset_page(conn, _RUN_SELECT, where, {**params, "tenant": tenant_id},
                       _RUN_FROM if on_trace else "llm_run_records a", after, limit)


def get_run(conn: Connection, tenant_id: str, run_id: str) -> Mapping[str, Any] | None:
    return conn.execute(text(_RUN_SELECT + " WHERE a.tenant_id = :tenant AND a.run_id = :run"),
                        {"tenant": tenant_id, "run": run_id}).mappings().first()


def get_trace(conn: Connection, tenant_id: str, run_id: str) -> tuple[Mapping[str, Any] | None, list]:
    trace = conn.execute(text("SELECT * FROM aos_traces WHERE tenant_id = :tenant AND run_id = :run "
                              "ORDER BY started_at LIMIT 1"), {"tenant": tenant_id, "run": run_id}).mappings().first()
    if trace is None:
        return None, []
    steps = conn.execute(text("SELECT * FROM aos_trace_steps WHERE tenant_id = :tenant AND trace_id = :trace "
                              "ORDER BY step_index"), {"tenant": tenant_id, "trace": trace["trace_id"]}).mappings().all()
    return trace, list(steps)


def run_exists(conn: Connection, tenant_id: str, run_id: str) -> bool:
    return conn.execute(text(
        "SELECT EXISTS (SELECT 1 FROM llm_run_records WHERE tenant_id = :t AND run_id = :r) "
        "OR EXISTS (SELECT 1 FROM aos_traces WHERE tenant_id = :t AND run_id = :r)"),
        {"t": tenant_id, "r": run_id}).scalar_one()


# Governance leaves out access entries; written as the partial indexes' predicate
# (migration 0006) so that the planner can use them.
NOT_ACCESS = "event_type <> 'EvidenceExported'"


def run_audit_entries(conn: Connection, tenant_id: str, run_id: str, *, states: bool = False
                      ) -> list[Mapping[str, Any]]:
    """Entries correlated to a run: by correlation id or the run id in their state
    (with their before and after states when ``states``). Not the EvidenceExported
    entries of the run's exports: access, not governance (O5 lists the exports), and
    a run exported a thousand times must not carry a thousand entries in its O3.

    Three lookups on the partial indexes that leave the access entries out
    (ix_audit_ledger_governance_*, migration 0006), united in SQL: the cost follows
    the run's governance, not how often it was exported.
    """
    return list(conn.execute(text(
        _AUDIT_SELECT.format(extra=", a.before_state, a.after_state" if states else "") +
        # = ANY(ARRAY(...)): the ids first, then the rows by primary key; as IN (...) the
        # planner may hash-join against the tenant's whole ledger instead.
        f" WHERE a.id = ANY(ARRAY(SELECT id FROM audit_ledger WHERE tenant_id = :tenant AND correlation_id = :run"
        f"     AND {NOT_ACCESS}"
        f"   UNION SELECT id FROM audit_ledger WHERE tenant_id = :tenant AND after_state ? 'run_id'"
        f"     AND after_state ->> 'run_id' = :run AND {NOT_ACCESS}"
        f"   UNION SELECT id FROM audit_ledger WHERE tenant_id = :tenant AND before_state ? 'run_id'"
        f"     AND before_state ->> 'run_id' = :run AND {NOT_ACCESS}))"
        " ORDER BY a.created_at, a.id"), {"tenant": tenant_id, "run": run_id}).mappings().all())


def run_breaches(conn: Connection, tenant_id: str, run_id: str) -> list[Mapping[str, Any]]:
    return list(conn.execute(text("SELECT * FROM limit_breaches WHERE tenant_id = :t AND run_id = :r "
                                  "ORDER BY breached_at, id"), {"t": tenant_id, "r": run_id}).mappings().all())


def replay_events(conn: Connection, tenant_id: str, trace_id: str | None, start: datetime, end: datetime,
                  include_llm: bool = True, include_policy: bool = True) -> dict[str, list]:
    """What happened in [start, end]: the trace's steps, system records (the tenant's and
    system-wide), and policy events (audit entries on policy rules or limits, limit breaches)."""
    window = {"t": tenant_id, "start": start, "end": end}
    found: dict[str, list] = {"steps": [], "system": [], "audit": [], "breaches": []}
    if include_llm and trace_id:
        found["steps"] = list(conn.execute(text(
            "SELECT * FROM aos_trace_steps WHERE tenant_id = :t AND trace_id = :trace "
            "AND \"timestamp\" BETWEEN :start AND :end ORDER BY \"timestamp\", step_index"),
            {**window, "trace": trace_id}).mappings().all())
    found["system"] = list(conn.execute(text(
        "(SELECT * FROM system_records WHERE tenant_id = :t AND created_at BETWEEN :start AND :end) UNION ALL "
        "(SELECT * FROM platform_records WHERE created_at BETWEEN :start AND :end) "
        "ORDER BY created_at, id"), window).mappings().all())
    if include_policy:
        found["audit"] = list(conn.execute(text(
            _AUDIT_SELECT.format(extra="") + " WHERE a.tenant_id = :t AND a.entity_type IN ('POLICY_RULE', 'LIMIT') "
            "AND a.created_at BETWEEN :start AND :end ORDER BY a.created_at, a.id"), window).mappings().all())
        found["breaches"] = list(conn.execute(text(
            "SELECT * FROM limit_breaches WHERE tenant_id = :t AND breached_at BETWEEN :start AND :end "
            "ORDER BY breached_at, id"), window).mappings().all())
    return found


# --- system records ---------------------------------------------------------------

def system_clauses(filters: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    clauses, params = [], {}
    for column in ("component", "event_type", "severity"):
        if filters.get(column) is not None:
            clauses.append(f"s.{column} = :{column}")
            params[column] = filters[column]
    if filters.get("created_after") is not None:
        clauses.append("s.created_at >= :created_after")
        params["created_after"] = filters["created_after"]
    if filters.get("created_before") is not None:
        clauses.append("s.created_at < :created_before")
        params["created_before"] = filters["created_before"]
    return "".join(f" AND {c}" for c in clauses), params


def list_system_records(conn: Connection, tenant_id: str, filters: Mapping[str, Any], after: Sequence[Any] | None,
                        limit: int) -> Page:
    """The tenant's records and the system-wide ones, newest first.

    Two keyset scans, one per table (the tenant's system_records, platform_records),
    merged.
    """
    extra, params = system_clauses(filters)
    params = {**params, "tenant": tenant_id, "limit": limit + 1}
    keyset = ""
    if after is not None:
        keyset = " AND (s.created_at, s.id) < (:after_at, :after_id)"
        params.update(position(after))
    branch = "(SELECT s.* FROM {table} s WHERE {scope}" + extra + keyset + \
             " ORDER BY s.created_at DESC, s.id DESC LIMIT :limit)"
    rows = conn.execute(text(
        f"SELECT * FROM ({branch.format(table='system_records', scope='s.tenant_id = :tenant')} UNION ALL "
        f"{branch.format(table='platform_records', scope='true')}) u ORDER BY created_at DESC, id DESC LIMIT :limit"),
        params).mappings().all()
    own = count_total(conn, "system_records s", "s.tenant_id = :tenant" + extra, params)
    shared = count_total(conn, "platform_records s", "true" + extra, params)
    return Page(rows=list(rows[:limit]), has_more=len(rows) > limit, total=own[0] + shared[0],
                total_is_estimate=own[1] or shared[1])


def run_system_records(conn: Connection, tenant_id: str, run_id: str, after: Sequence[Any] | None,
                       limit: int) -> Page:
    return keyset_page(conn, "SELECT a.* FROM system_records a",
                 "a.tenant_id = :tenant AND (a.run_id = :run OR a.correlation_id = :run)",
                 {"tenant": tenant_id, "run": run_id}, "system_records a", after, limit)


def run_started_at(conn: Connection, tenant_id: str, run_id: str) -> datetime | None:
    return conn.execute(text(
        "SELECT min(started_at) FROM (SELECT started_at FROM llm_run_records WHERE tenant_id = :t AND run_id = :r "
        "UNION ALL SELECT started_at FROM aos_traces WHERE tenant_id = :t AND run_id = :r) s"),
        {"t": tenant_id, "r": run_id}).scalar()


BASELINE_EVENTS = ("STARTUP", "DEPLOY", "CONFIG_CHANGE")


def system_baseline(conn: Connection, tenant_id: str, run_id: str, started_at: datetime
                    ) -> tuple[Mapping[str, Any] | None, bool]:
    """(record, correlated): a baseline record correlated to the run, else the newest
    STARTUP/DEPLOY/CONFIG_CHANGE (the tenant's or system-wide) before the run began."""
    correlated = conn.execute(text(
        "SELECT * FROM system_records WHERE tenant_id = :t AND (run_id = :r OR correlation_id = :r) "
        "AND event_type = ANY(:events) ORDER BY created_at, id LIMIT 1"),
        {"t": tenant_id, "r": run_id, "events": list(BASELINE_EVENTS)}).mappings().first()
    if correlated is not None:
        return correlated, True
    preceding = conn.execute(text(
        "SELECT * FROM ((SELECT * FROM system_records WHERE tenant_id = :t AND event_type = ANY(:events) "
        "  AND created_at <= :start ORDER BY created_at DESC LIMIT 1) UNION ALL "
        " (SELECT * FROM platform_records WHERE event_type = ANY(:events) "
        "  AND created_at <= :start ORDER BY created_at DESC LIMIT 1)) s ORDER BY created_at DESC, id DESC LIMIT 1"),
        {"t": tenant_id, "events": list(BASELINE_EVENTS), "start": started_at}).mappings().first()
    return preceding, False


def run_event_count(conn: Connection, tenant_id: str, run_id: str) -> int:
    return conn.execute(text("SELECT count(*) FROM system_records WHERE tenant_id = :t "
                             "AND (run_id = :r OR correlation_id = :r)"), {"t": tenant_id, "r": run_id}).scalar_one()


def attribution(conn: Connection, tenant_id: str, start: datetime, end: datetime, after: Sequence[Any] | None,
                limit: int) -> tuple[list[Mapping[str, Any]], Page]:
    """caused_by × component × event_type counts over [start, end), and that window's records."""
    rows = conn.execute(text(
        "SELECT caused_by, component, event_type, count(*) AS count, "
        "       array_remove(array_agg(DISTINCT actor_id), NULL) AS actor_ids "
        "FROM (SELECT * FROM system_records WHERE tenant_id = :t AND created_at >= :start AND created_at < :end "
        "      UNION ALL SELECT * FROM platform_records WHERE created_at >= :start AND created_at < :end) s "
        "GROUP BY caused_by, component, event_type ORDER BY count(*) DESC, caused_by, component, event_type"),
        {"t": tenant_id, "start": start, "end": end}).mappings().all()
    page = list_system_records(conn, tenant_id, {"created_after": start, "created_before": end}, after, limit)
    return list(rows), page
