"""The Logs service's SQL: every query it runs, and nothing else.

Functions take a connection already scoped to the caller's tenant (row-level
security) and still filter by tenant explicitly: both must agree for a row to
appear. Lists go through aos_runtime.keyset (keyset pages, capped totals). The
queries Logs shares with Export (the evidence read model) are in aos_evidence.queries;
handlers call those directly.
"""
from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection

from aos_evidence import queries as evidence
from aos_evidence.queries import (
    AUDIT_SELECT,
    AUDIT_SORTS,
    RUN_FROM,
    RUN_SELECT,
    AuditFilters,
    payload_keys,
    search_match,
    system_clauses,
)
from aos_recording import erasure
from aos_runtime.db import fetch_rows, fetch_value, pipelined
from aos_runtime.keyset import Page, SortKey, after_clause, count_total, cut, direction, keyset_page, position, where
from aos_runtime.pagination import EXACT_TOTAL_LIMIT
from aos_runtime.rows import all_of, first_of, one_of


def custom_plans(conn: Connection, search: str | None) -> None:
    """With a search: plans for its words, every time. psycopg prepares a statement run 5 times
    on a connection, and PostgreSQL then may keep a generic plan, which cannot know how rare the
    words are and walks the tenant's created_at index computing every row's document (a rare
    word: 225-260 ms instead of 25 ms, bench/search.py); planning costs a few ms. Overrides the
    hot reads' generic plans (aos_runtime.db._HOT_SCOPE). set_config(..., true) ends with the transaction; through
    psycopg, as the hot reads' statements are (they may run pipelined)."""
    if search is not None:
        fetch_rows(conn, "SELECT set_config('plan_cache_mode', 'force_custom_plan', true)", {})


def generic_plans(conn: Connection) -> None:
    """SearchEvidence's statements planned once per connection (prepared at their first use,
    ``fetch_rows(prepare=True)``) and that generic plan kept: planning a search's keys and count
    over four sources of ~15 monthly partitions each was a third of a call (35-42 ms at 10 M
    entries, BENCHMARKS.md). What a custom plan learnt from the words (how rare) no longer chose
    the plan: both statements run under ``gin_scans``, where every source's matches are a bitmap
    on its GIN index whatever the words — the plan a custom plan chose for every class measured."""
    fetch_rows(conn, "SELECT set_config('plan_cache_mode', 'force_generic_plan', true)", {})


@contextlib.contextmanager
def gin_scans(conn: Connection, *, index_scans: bool = False) -> Iterator[None]:
    """Within: no plain index scan, no sequential scan (after: the transaction's own settings
    again), so a search's matches are read as a bitmap over its GIN index. The planner charges
    a bitmap heap scan the recheck of every candidate's document, which a query of words never
    needs (GIN answers AND/OR/NOT of words exactly; only phrases are rechecked), so
    for a word in most of a tenant's records it preferred walking the tenant's 10,000 entries
    on a btree, computing each document: the count of `customer` (6,862 of 10,000) took 462 ms
    that way against 15 ms on the GIN index (5 M entries, bench/search_scale.py explain).
    ``index_scans``: plain index scans stay allowed (a search's walk, SEARCH_WALK_ROWS_PER_KEY)."""
    before = fetch_rows(conn, "SELECT current_setting('enable_indexscan') AS i, "
                              "current_setting('enable_seqscan') AS s, set_config('enable_indexscan', :index, true), "
                              "set_config('enable_seqscan', 'off', true)",
                        {"index": "on" if index_scans else "off"})[0]
    yield
    fetch_rows(conn, "SELECT set_config('enable_indexscan', :i, true), set_config('enable_seqscan', :s, true)",
               {"i": before["i"], "s": before["s"]})


@pipelined
def list_audit_entries(conn: Connection, tenant_id: str, filters: AuditFilters, after: Sequence[Any] | None,
                       limit: int) -> Page:
    custom_plans(conn, filters.search)
    clauses, params = filters.where()
    # Neither the order nor the sort changes what matches.
    unfiltered = replace(filters, ascending=False, sort=None) == AuditFilters()
    key = AUDIT_SORTS[filters.sort] if filters.sort else None
    order, keyset = direction(filters.ascending, key=key)
    if filters.search is not None and key is None:
        page = _searched_audit_page(conn, clauses, {**params, "tenant": tenant_id}, after, limit, order, keyset)
    else:
        extra = f", {key.expression} AS sort_key" if key else ""
        page = keyset_page(conn, AUDIT_SELECT.format(extra=extra), clauses, {**params, "tenant": tenant_id},
                           "audit_ledger a", after, limit, order=order, keyset=keyset,
                           known_total=(LEDGER_SIZE, {"t": tenant_id}) if unfiltered else None,
                           binary=True)  # AUDIT_SELECT's columns: text, integers, times, bytea, jsonb, boolean
    # v2 entries (docs/ERASURE.md): their payloads from the erasable side table, or ERASED
    return replace(page, rows=erasure.opened_rows(conn, tenant_id, "audit_entry", page.rows))


def _searched_audit_page(conn: Connection, clauses: str, params: dict[str, Any], after: Sequence[Any] | None,
                         limit: int, order: str, keyset: str) -> Page:
    """A page of the ledger filtered by a search: the page's keys first, on the entries alone
    (the search's matches, the filters, the order, LIMIT), then AUDIT_SELECT's spine (the run's
    trace, its violation and incident) for those keys only. In one statement the planner,
    misjudging how many of a tenant's entries a word matches, joined every match to its trace
    before sorting (6,870 lateral look-ups for the page of a word in 60 % of 10,000 entries:
    123-230 ms against ~30 on a loaded machine). The total as every list's."""
    past, cursor = after_clause(after, keyset)
    params = {**params, **cursor, "limit": limit + 1}
    keys = f"SELECT a.id, a.created_at FROM audit_ledger a WHERE {clauses}{past} ORDER BY {order} LIMIT :limit"
    with gin_scans(conn):
        rows = fetch_rows(conn, f"{AUDIT_SELECT.format(extra='')} WHERE a.tenant_id = :tenant "
                                f"AND (a.id, a.created_at) IN ({keys}) ORDER BY {order}", params,
                          binary=True)
        if after is None and len(rows) <= limit:
            total, estimate = len(rows), False
        else:
            total, estimate = count_total(conn, "audit_ledger a", clauses, params)
    return cut(rows, limit, total, estimate)


# How many entries the tenant's ledger holds: the span of its seqs, read from two
# index probes instead of counting up to a million rows. Exact because the chain
# trigger assigns seq gapless under the tenant's lock, nothing deletes an entry, and
# retention drops only a chain's beginning (below the retention anchor); a gap made
# past those guarantees is what the integrity report exists to show.
LEDGER_SIZE = ("SELECT coalesce((SELECT seq FROM audit_ledger WHERE tenant_id = :t ORDER BY seq DESC LIMIT 1)"
               " - (SELECT seq FROM audit_ledger WHERE tenant_id = :t ORDER BY seq LIMIT 1) + 1, 0)")


@pipelined
def get_audit_entry(conn: Connection, tenant_id: str, entry_id: str) -> Mapping[str, Any] | None:
    rows = fetch_rows(conn, AUDIT_SELECT.format(extra=", a.before_state, a.after_state") +
                      " WHERE a.tenant_id = :tenant AND a.id = :id", {"tenant": tenant_id, "id": entry_id},
                      binary=True)
    return erasure.opened_rows(conn, tenant_id, "audit_entry", rows)[0] if rows else None


# Hash format 2 rows (docs/ERASURE.md): their payloads put back from the erasable side table,
# or their ERASED / MISSING states, as the audit reads above do (aos_recording.erasure, one
# mechanism for every record type). v1 rows pass as they are, with no query.
def opened_steps(conn: Connection, tenant_id: str, rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return erasure.opened_rows(conn, tenant_id, "trace_step", rows)


def opened_system(conn: Connection, tenant_id: str, rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return erasure.opened_rows(conn, tenant_id, "system_record", rows)


def opened_audit(conn: Connection, tenant_id: str, rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return erasure.opened_rows(conn, tenant_id, "audit_entry", rows)


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
    search: str | None = None  # in the run's trace steps (a query as the search documents are written)
    ascending: bool = False    # oldest first
    sort: str | None = None    # a RUN_SORTS name; None: by (created_at, id)

    def where(self) -> tuple[str, dict[str, Any]]:
        violated = None if self.has_violation is None else not self.has_violation
        clauses, params = where("a.tenant_id = :tenant", [
            ("a.run_id", "=", self.run_id), ("a.agent_id", "=", self.agent_id),
            ("a.execution_status", "=", self.status), ("a.provider", "=", self.provider),
            ("a.model", "=", self.model), ("a.is_synthetic", "=", self.is_synthetic),
            ("tr.violation_step_index", "IS NULL", violated), ("tr.violation_policy_id", "=", self.policy_id),
            ("a.created_at", ">=", self.created_after), ("a.created_at", "<", self.created_before)])
        if self.search is None:
            return clauses, params
        # A run matches when a step of its (joined) trace does.
        return (f"{clauses} AND {search_match('tr.trace_id', 'trace_step_search', key='trace_id')}",
                {**params, "search": self.search})


@pipelined
def list_runs(conn: Connection, tenant_id: str, filters: RunFilters, after: Sequence[Any] | None,
              limit: int) -> Page:
    custom_plans(conn, filters.search)
    clauses, params = filters.where()
    # The total counts the trace join only when a filter is on the trace: the join
    # never changes how many runs there are, and costs a lookup per counted run.
    on_trace = filters.has_violation is not None or filters.policy_id is not None or filters.search is not None
    key = RUN_SORTS[filters.sort] if filters.sort else None
    order, keyset = direction(filters.ascending, key=key)
    select = RUN_SELECT.replace("SELECT a.*", f"SELECT a.*, {key.expression} AS sort_key", 1) if key else RUN_SELECT
    return keyset_page(conn, select, clauses, {**params, "tenant": tenant_id},
                       RUN_FROM if on_trace else "llm_run_records a", after, limit, order=order, keyset=keyset)


# The run list's sort fields (LlmRunSortField's canonical names), each the leading column of an
# index (tenant_id, key DESC, created_at DESC, id DESC) of migration 0025, the tokens' of 0033: the
# stored column total_tokens = input_tokens + output_tokens (0025's key was that sum, whose int8 `+`
# is not leakproof: under row-level security a later page's keyset was a filter from the index's start).
RUN_SORTS = {"started_at": SortKey("a.started_at", "timestamptz"),
             "total_cost_cents": SortKey("a.cost_cents", "bigint"),
             "total_tokens": SortKey("a.total_tokens", "bigint")}
# The system record lists' (SystemRecordSortField): the level's rank, DEBUG 1 … CRITICAL 5, written
# as migration 0031's indexes are (a CASE, not 0025's aos_severity_rank(): under row-level security
# only a leakproof condition is an index condition, and that function is not, so a later page's
# keyset was a filter from the index's start).
SYSTEM_SORTS = {"severity": SortKey("(CASE a.severity WHEN 'DEBUG' THEN 1 WHEN 'INFO' THEN 2 WHEN 'WARNING' THEN 3 "
                                    "WHEN 'ERROR' THEN 4 WHEN 'CRITICAL' THEN 5 END)", "integer")}


def run_exists(conn: Connection, tenant_id: str, run_id: str) -> bool:
    return conn.execute(text(
        "SELECT EXISTS (SELECT 1 FROM llm_run_records WHERE tenant_id = :t AND run_id = :r) "
        "OR EXISTS (SELECT 1 FROM aos_traces WHERE tenant_id = :t AND run_id = :r)"),
        {"t": tenant_id, "r": run_id}).scalar_one()


def replay_events(conn: Connection, tenant_id: str, trace_id: str | None, start: datetime, end: datetime,
                  include_llm: bool = True, include_policy: bool = True) -> dict[str, list]:
    """What happened in [start, end]: the trace's steps, system records (the tenant's and
    system-wide), and policy events (audit entries on policy rules or limits, limit breaches)."""
    window = {"t": tenant_id, "start": start, "end": end}
    found: dict[str, list] = {"steps": [], "system": [], "audit": [], "breaches": []}
    if include_llm and trace_id:
        found["steps"] = opened_steps(conn, tenant_id, all_of(conn.execute(text(
            "SELECT * FROM aos_trace_steps WHERE tenant_id = :t AND trace_id = :trace "
            "AND \"timestamp\" BETWEEN :start AND :end ORDER BY \"timestamp\", step_index"),
            {**window, "trace": trace_id})))
    found["system"] = opened_system(conn, tenant_id, all_of(conn.execute(text(
        "(SELECT * FROM system_records WHERE tenant_id = :t AND created_at BETWEEN :start AND :end) UNION ALL "
        "(SELECT * FROM platform_records WHERE created_at BETWEEN :start AND :end) "
        "ORDER BY created_at, id"), window)))
    if include_policy:
        found["audit"] = opened_audit(conn, tenant_id, all_of(conn.execute(text(
            AUDIT_SELECT.format(extra="") + " WHERE a.tenant_id = :t AND a.entity_type IN ('POLICY_RULE', 'LIMIT') "
            "AND a.created_at BETWEEN :start AND :end ORDER BY a.created_at, a.id"), window)))
        found["breaches"] = list(all_of(conn.execute(text(
            "SELECT * FROM limit_breaches WHERE tenant_id = :t AND breached_at BETWEEN :start AND :end "
            "ORDER BY breached_at, id"), window)))
    return found


def state_at_step(conn: Connection, tenant_id: str, trace_id: str, step_index: int) -> dict[str, Any]:
    """The trace's state at ``step_index``: {last (the last step index, None without steps),
    step (None when there is no such step), and with a step: totals over the steps up to it,
    their content hashes in step order, and its policy_check / violation steps}.

    Every query is on the (tenant_id, trace_id, step_index) index; a 10,000-step trace reads
    its prefix's hashes (32 bytes a step), not its inputs and outputs."""
    params = {"t": tenant_id, "trace": trace_id, "n": step_index}
    scope = "FROM aos_trace_steps WHERE tenant_id = :t AND trace_id = :trace"
    found: dict[str, Any] = {"last": fetch_value(conn, f"SELECT max(step_index) {scope}", params), "step": None}
    step = first_of(conn.execute(text(f"SELECT * {scope} AND step_index = :n"), params))
    if step is None:
        return found
    found["step"] = opened_steps(conn, tenant_id, [step])[0]
    found["totals"] = one_of(conn.execute(text(
        "SELECT count(*) AS steps, coalesce(sum(tokens), 0)::bigint AS tokens, "
        "coalesce(sum(cost_cents), 0)::bigint AS cost_cents, coalesce(sum(duration_ms), 0)::bigint AS duration_ms "
        f"{scope} AND step_index <= :n"), params))
    found["hashes"] = [bytes(row["content_hash"]) for row in all_of(conn.execute(text(
        f"SELECT content_hash {scope} AND step_index <= :n ORDER BY step_index"), params))]
    found["policy_steps"] = opened_steps(conn, tenant_id, all_of(conn.execute(text(
        f"SELECT * {scope} AND step_index <= :n AND step_type IN ('policy_check', 'violation') "
        "ORDER BY step_index"), params)))
    return found


def governance_steps(conn: Connection, tenant_id: str, trace_id: str, search: str | None = None,
                     ascending: bool = True) -> list[Mapping[str, Any]]:
    """The trace's policy_check and violation steps (the run's O3), by step index (last first
    unless ``ascending``), those whose words match ``search`` (the lists' matcher, on the steps'
    search view) when one is given. Only those steps are read, not the whole trace."""
    matched = f" AND {search_match('s.id', 'trace_step_search')}" if search is not None else ""
    return opened_steps(conn, tenant_id, all_of(conn.execute(text(
        "SELECT s.* FROM aos_trace_steps s WHERE s.tenant_id = :t AND s.trace_id = :trace "
        f"AND s.step_type IN ('policy_check', 'violation'){matched} "
        f"ORDER BY s.step_index {'ASC' if ascending else 'DESC'}"),
        {"t": tenant_id, "trace": trace_id, "search": search})))


def find_trace(conn: Connection, tenant_id: str, run_id: str | None, trace_id: str | None
               ) -> Mapping[str, Any] | None:
    """A trace: by its id (within its run when ``run_id`` is given), else the run's first."""
    if trace_id is None:
        return first_of(conn.execute(text(
            "SELECT * FROM aos_traces WHERE tenant_id = :t AND run_id = :r ORDER BY started_at LIMIT 1"),
            {"t": tenant_id, "r": run_id}))
    clauses, params = where("tenant_id = :t AND trace_id = :trace", [("run_id", "=", run_id)])
    return first_of(conn.execute(text(f"SELECT * FROM aos_traces WHERE {clauses}"),
                                 {**params, "t": tenant_id, "trace": trace_id}))


def trace_steps(conn: Connection, tenant_id: str, run_id: str | None, trace_id: str | None,
                after: Sequence[Any] | None, limit: int
                ) -> tuple[Mapping[str, Any], list[Mapping[str, Any]], bool, Mapping[str, Any]] | None:
    """(trace, a page of its steps after step ``after[0]``, has_more, totals over every step) or None.

    Pages in step order on the (tenant_id, trace_id, step_index) index: a 10,000-step
    trace is read a page at a time; its totals are one aggregate on the same index."""
    trace = find_trace(conn, tenant_id, run_id, trace_id)
    if trace is None:
        return None
    params = {"t": tenant_id, "trace": trace["trace_id"], "after": after[0] if after else -1, "limit": limit + 1}
    rows = all_of(conn.execute(text(
        "SELECT * FROM aos_trace_steps WHERE tenant_id = :t AND trace_id = :trace AND step_index > :after "
        "ORDER BY step_index LIMIT :limit"), params))
    totals = one_of(conn.execute(text(
        "SELECT count(*) AS steps, coalesce(sum(duration_ms), 0)::bigint AS duration_ms, "
        "coalesce(sum(tokens), 0)::bigint AS tokens "
        "FROM aos_trace_steps WHERE tenant_id = :t AND trace_id = :trace"), params))
    return trace, opened_steps(conn, tenant_id, rows[:limit]), len(rows) > limit, totals


# --- system records ---------------------------------------------------------------


@pipelined
def list_system_records(conn: Connection, tenant_id: str, filters: Mapping[str, Any], after: Sequence[Any] | None,
                        limit: int) -> Page:
    """The tenant's records and the system-wide ones, newest first.

    Two keyset scans, one per table (the tenant's system_records, platform_records),
    merged: each reads at most a page past the position, so the merge does too.
    """
    custom_plans(conn, filters.get("search"))
    extra, params = system_clauses(filters)
    key = SYSTEM_SORTS[filters["sort"]] if filters.get("sort") else None
    order, past = direction(bool(filters.get("ascending")), "s", key)
    keyset, cursor = after_clause(after, past)
    params = {**params, **cursor, "tenant": tenant_id, "limit": limit + 1}
    own_extra, shared_extra = extra, extra
    if filters.get("search") is not None:  # each table through its own search view
        params["search"] = filters["search"]
        own_extra += f" AND {search_match('s.id', 'system_search')}"
        shared_extra += f" AND {search_match('s.id', 'platform_search')}"
    # Sorted by a field, each branch carries it (the merge's order and the page token's position).
    columns = f"s.*, {key.on('s')} AS sort_key" if key else "s.*"
    order = order.replace(key.on("s"), "sort_key", 1) if key else order
    branch = ("(SELECT " + columns + " FROM {table} s WHERE {scope}{extra}" + keyset +
              f" ORDER BY {order} LIMIT :limit)")
    rows = fetch_rows(conn,
        f"SELECT * FROM ({branch.format(table='system_records', scope='s.tenant_id = :tenant', extra=own_extra)} "
        f"UNION ALL {branch.format(table='platform_records', scope='true', extra=shared_extra)}) s "
        f"ORDER BY {order} LIMIT :limit",
        params)
    own = count_total(conn, "system_records s", "s.tenant_id = :tenant" + own_extra, params)
    shared = count_total(conn, "platform_records s", "true" + shared_extra, params)
    page = cut(rows, limit, own[0] + shared[0], own[1] or shared[1])
    return replace(page, rows=opened_system(conn, tenant_id, page.rows))


def run_system_records(conn: Connection, tenant_id: str, run_id: str, after: Sequence[Any] | None,
                       limit: int, search: str | None = None, ascending: bool = False,
                       sort: str | None = None) -> Page:
    """The run's records (O3), optionally searched (the lists' matcher), in the order and sort asked.
    A run's records are few: a sorted page sorts them, on the run's indexes."""
    custom_plans(conn, search)
    clauses, params = "a.tenant_id = :tenant AND (a.run_id = :run OR a.correlation_id = :run)", {}
    if search is not None:
        clauses, params = f"{clauses} AND {search_match('a.id', 'system_search')}", {"search": search}
    key = SYSTEM_SORTS[sort] if sort else None
    order, keyset = direction(ascending, key=key)
    select = f"SELECT a.*, {key.expression} AS sort_key FROM system_records a" if key else \
        "SELECT a.* FROM system_records a"
    page = keyset_page(conn, select, clauses, {**params, "tenant": tenant_id, "run": run_id}, "system_records a",
                       after, limit, order=order, keyset=keyset)
    return replace(page, rows=opened_system(conn, tenant_id, page.rows))


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
    correlated = first_of(conn.execute(text(
        "SELECT * FROM system_records WHERE tenant_id = :t AND (run_id = :r OR correlation_id = :r) "
        "AND event_type = ANY(:events) ORDER BY created_at, id LIMIT 1"),
        {"t": tenant_id, "r": run_id, "events": list(BASELINE_EVENTS)}))
    if correlated is not None:
        return opened_system(conn, tenant_id, [correlated])[0], True
    preceding = first_of(conn.execute(text(
        "SELECT * FROM ((SELECT * FROM system_records WHERE tenant_id = :t AND event_type = ANY(:events) "
        "  AND created_at <= :start ORDER BY created_at DESC LIMIT 1) UNION ALL "
        " (SELECT * FROM platform_records WHERE event_type = ANY(:events) "
        "  AND created_at <= :start ORDER BY created_at DESC LIMIT 1)) s ORDER BY created_at DESC, id DESC LIMIT 1"),
        {"t": tenant_id, "events": list(BASELINE_EVENTS), "start": started_at}))
    return (opened_system(conn, tenant_id, [preceding])[0] if preceding is not None else None), False


def run_event_count(conn: Connection, tenant_id: str, run_id: str) -> int:
    return conn.execute(text("SELECT count(*) FROM system_records WHERE tenant_id = :t "
                             "AND (run_id = :r OR correlation_id = :r)"), {"t": tenant_id, "r": run_id}).scalar_one()


def attribution(conn: Connection, tenant_id: str, start: datetime, end: datetime, after: Sequence[Any] | None,
                limit: int) -> tuple[list[Mapping[str, Any]], Page]:
    """caused_by × component × event_type counts over [start, end), and that window's records."""
    rows = all_of(conn.execute(text(
        "SELECT caused_by, component, event_type, count(*) AS count, "
        "       array_remove(array_agg(DISTINCT actor_id), NULL) AS actor_ids "
        "FROM (SELECT * FROM system_records WHERE tenant_id = :t AND created_at >= :start AND created_at < :end "
        "      UNION ALL SELECT * FROM platform_records WHERE created_at >= :start AND created_at < :end) s "
        "GROUP BY caused_by, component, event_type ORDER BY count(*) DESC, caused_by, component, event_type"),
        {"t": tenant_id, "start": start, "end": end}))
    page = list_system_records(conn, tenant_id, {"created_after": start, "created_before": end}, after, limit)
    return list(rows), page


# --- the ledger's transparency log (migration 0013) -------------------------------------
# Stored hashes by their Go sumdb/tlog index (aos_recording.tlog computes which); the tree
# the database keeps under the chain lock. ``log`` is 'ledger' or 'exports'.
LEDGER_LOG = "ledger"
EXPORTS_LOG = "exports"  # the export chain's tree (leaf data: each export row's content hash)


def tlog_size(conn: Connection, tenant_id: str, log: str = LEDGER_LOG) -> int:
    """The log's tree size: the newest stored hash (highest index) says how large the tree
    was when it was written. One backwards probe of the primary key."""
    return fetch_value(conn, "SELECT coalesce((SELECT tree_size FROM tlog_hashes WHERE tenant_id = :t AND log = :log "
                             "ORDER BY hash_index DESC LIMIT 1), 0)", {"t": tenant_id, "log": log})


def tlog_rows(conn: Connection, tenant_id: str, indexes: Sequence[int],
              log: str = LEDGER_LOG) -> dict[int, Mapping[str, Any]]:
    """The stored hashes at ``indexes`` (and, for leaves, their entry), by index: one query."""
    return {r["hash_index"]: r for r in evidence.tlog_stored_hashes(conn, tenant_id, log, indexes)}


def tlog_resolve(conn: Connection, tenant_id: str, log: str, entry_id: str | None,
                 tree_size: int) -> Mapping[str, Any]:
    """What an inclusion proof needs before its hashes, in one query: the log's ``current``
    size, the ``seq`` of the leaf of ``entry_id`` (None when not asked or not in the log; the
    tree keeps the ids of entries retention dropped, migration 0018's index finds them), and
    for the ledger the signed DSSE checkpoint kept at exactly the size proved (``tree_size``;
    0: the current size) as ``checkpoint_*`` columns, NULL when none was kept."""
    rows = fetch_rows(conn, (
        "SELECT s.current, (SELECT h.tree_size FROM tlog_hashes h WHERE h.tenant_id = :t AND h.log = :log "
        "                   AND h.entry_id = :id ORDER BY h.hash_index LIMIT 1) AS seq, "
        "c.tenant_id AS checkpoint_tenant_id, c.seq AS checkpoint_seq, c.chain_hash AS checkpoint_chain_hash, "
        "c.envelope AS checkpoint_envelope, c.recorded_at AS checkpoint_recorded_at "
        "FROM (SELECT coalesce((SELECT tree_size FROM tlog_hashes WHERE tenant_id = :t AND log = :log "
        "                       ORDER BY hash_index DESC LIMIT 1), 0) AS current) s "
        "LEFT JOIN ledger_checkpoints c ON :log = 'ledger' AND c.tenant_id = :t AND c.kind = 'CHECKPOINT' "
        "AND c.seq = coalesce(nullif(:size, 0), s.current) AND c.envelope IS NOT NULL"),
        {"t": tenant_id, "log": log, "id": entry_id, "size": tree_size})
    if len(rows) != 1:  # one row by construction (a FROM of one row, a LEFT JOIN on a unique key)
        raise AssertionError(f"tlog_resolve: {len(rows)} rows")
    return rows[0]


def tlog_leaves(conn: Connection, tenant_id: str, first_index: int, last_index: int, limit: int,
                log: str = LEDGER_LOG) -> list[Mapping[str, Any]]:
    """Leaf rows with stored index in [first_index, last_index], in tree order; ``limit``
    rows at most. The interior hashes between them are skipped on the primary key's range."""
    return all_of(conn.execute(text(
        "SELECT hash_index, tree_size AS seq, entry_id, leaf_data, hash AS leaf_hash, created_at, recorded_at "
        "FROM tlog_hashes WHERE tenant_id = :t AND log = :log AND hash_index BETWEEN :lo AND :hi "
        "AND leaf_data IS NOT NULL ORDER BY hash_index LIMIT :limit"),
        {"t": tenant_id, "log": log, "lo": first_index, "hi": last_index, "limit": limit}))


# --- evidence search (migration 0021) ---------------------------------------------------
# Keys come from the tenant-scoped search views (audit_search, trace_step_search,
# system_search, platform_search), where ``doc @@ query`` is an index condition with the
# tenant (GIN on (tenant_id, document)); the records themselves from their tables, under
# row-level security, so a hit appears only when both agree. docs/DATABASE.md "Search".

# The query as the documents are written: config 'simple', no stemming.
TSQUERY = "websearch_to_tsquery('simple'::regconfig, :query)"


def _field_match(column: str) -> str:
    """SQL true when ``column`` matches the query by itself: its own document, made by the
    migration's aos_search_document()."""
    return f"aos_search_document({column}) @@ {TSQUERY}"


@dataclass(frozen=True)
class SearchSource:
    name: str            # EvidenceSource without its prefix; the hit's kind
    view: str            # the tenant-scoped search view
    table: str           # where its records are read, under row-level security
    text_fields: tuple[str, ...]
    json_fields: tuple[str, ...]

    def matched(self, alias: str) -> str:
        """An array of the names of the fields that match the query on their own."""
        cases = [f"CASE WHEN {_field_match(f'{alias}.{f}')} THEN '{f}' END" for f in self.text_fields]
        cases += [f"CASE WHEN {_field_match(f'{alias}.{f}::text')} THEN '{f}' END" for f in self.json_fields]
        return f"array_remove(ARRAY[{', '.join(cases)}]::text[], NULL) AS matched_fields"


_SYSTEM_TEXT = ("component", "event_type", "severity", "summary", "actor_id", "correlation_id", "run_id",
                "request_id", "environment_id")
SEARCH_SOURCES = {s.name: s for s in (
    SearchSource("AUDIT", "audit_search", "audit_ledger",
                 ("event_type", "entity_type", "entity_id", "actor_id", "action_reason", "correlation_id"),
                 ("before_state", "after_state")),
    SearchSource("TRACE_STEP", "trace_step_search", "aos_trace_steps", ("step_type", "source"),
                 ("input_data", "output_data", "metadata")),
    SearchSource("SYSTEM", "system_search", "system_records", _SYSTEM_TEXT, ("details",)),
    SearchSource("PLATFORM", "platform_search", "platform_records", _SYSTEM_TEXT, ("details",)),
)}


@dataclass(frozen=True)
class SearchFilters:
    query: str                      # websearch syntax, already normalised (services/logs/search.py)
    sources: tuple[str, ...] = ()   # SearchSource names; empty: all
    created_after: datetime | None = None
    created_before: datetime | None = None
    run_id: str | None = None
    actor_id: str | None = None
    correlation_id: str | None = None

    def branches(self, words: str | None = TSQUERY,
                 held: bool = False) -> list[tuple[SearchSource, str, dict[str, Any]]]:
        """(source, WHERE on its view ``v``, parameters) for each source the filters leave in;
        ``words``: the tsquery the documents must match (the query's own, or WORDS; None: the
        filters without the words, for a walk that checks each row's document). ``held``: instead,
        the records whose row does not match the query and a held format-2 payload does (migration 0034,
        aos_evidence.queries.payload_keys), for the sources whose records hold payloads: disjoint from
        the row matches, so a record is one hit and the totals add up."""
        found = []
        for source in SEARCH_SOURCES.values():
            kind = "SYSTEM" if source.name == "PLATFORM" else source.name
            if self.sources and kind not in self.sources:
                continue
            base = f"v.doc @@ {words}" if words is not None else "true"
            if held:
                keys = payload_keys(source.view, "id", TSQUERY)
                if keys is None:
                    continue
                # The payloads' keys first, then those records by id (a few: format 2, held, matching).
                base = f"v.id = ANY(ARRAY({keys})) AND NOT (v.doc @@ {TSQUERY})"
            if source.name == "TRACE_STEP" and (self.actor_id or self.correlation_id):
                continue  # steps carry neither
            conditions: list[tuple[str, str, Any]] = [
                ("v.created_at", ">=", self.created_after), ("v.created_at", "<", self.created_before)]
            extra = ""
            if source.name == "AUDIT":
                conditions += [("v.actor_id", "=", self.actor_id), ("v.correlation_id", "=", self.correlation_id),
                               ("v.run_key", "=", self.run_id)]
            elif source.name == "TRACE_STEP":
                if self.run_id:
                    extra = (" AND v.trace_id IN (SELECT t.trace_id FROM aos_traces t"
                             " WHERE t.tenant_id = :tenant AND t.run_id = :run)")
            else:
                conditions += [("v.actor_id", "=", self.actor_id), ("v.correlation_id", "=", self.correlation_id)]
                if self.run_id:
                    extra = " AND (v.run_id = :run OR v.correlation_id = :run)"
            clauses, params = where(base, conditions, prefix=f"{source.name.lower()}_")
            found.append((source, clauses + extra, params))
        return found

    def phrase(self) -> bool:
        """Whether the query holds a phrase (two words or more in quotes, or an id's parts) and
        no exclusion: its keys are then found on its words (see search_evidence)."""
        return '"' in self.query and not any(t.startswith("-") for t in self.query.split())


# Position: [created_at, id, source]; the source breaks a tie between two tables' ids.
_SEARCH_KEYSET = "(v.created_at, v.id, '{source}') < (:after_at, :after_id, :after_source)"

# A phrase's words without their order: the query's tsquery with each phrase operator (<->,
# <N>) made an AND. GIN answers it from the index alone (a phrase it can only narrow down: it
# holds no positions, so each candidate's document is computed again to check the order).
WORDS = f"regexp_replace({TSQUERY}::text, '<(-|[0-9]+)>', '&', 'g')::tsquery"
# A search's total, as every list's (SPEC §3): exact up to EXACT_TOTAL_LIMIT matches of each
# source, then the planner's estimate, flagged (AIP-158).
SEARCH_EXACT_TOTAL = EXACT_TOTAL_LIMIT


# A source with more matches than SEARCH_EXACT_TOTAL (a very common word: `the` in ~20,000 of
# the 100,000 system-wide records at 10 M entries) has its page's keys from a walk of its newest
# records on its (tenant,) created_at, id index, each row's document checked, until the page is
# full: as a bitmap on its GIN index every match (over 10,000) would be fetched and sorted for a
# page of 50. The walk reads at most SEARCH_WALK_ROWS_PER_KEY rows per key of the page (~35 µs a
# document against ~2 µs a match fetched: past that the GIN index's 10,000 fetches cost less);
# a walk that window cuts short (a large source where the word is not that dense) is read from
# the GIN index after all. Its count, read first, says a source is past the exact total.
SEARCH_WALK_ROWS_PER_KEY = 12


def search_evidence(conn: Connection, tenant_id: str, filters: SearchFilters, after: Sequence[Any] | None,
                    limit: int) -> Page:
    """The page's hits, newest first, as rows {source, id, created_at, matched_fields, record[, trace]}.

    Keys: each source's matches newest first (rank-free: the newest evidence is what an auditor
    pages through), LIMIT page + 1, merged. A phrase's keys are its words' matches (exact on
    the GIN index, no document computed), newest first, each checked for the phrase on its own
    row until the page is full: the phrase's document work is the page's, not every
    candidate's. The total: exact when the page holds every match or a source has at most
    SEARCH_EXACT_TOTAL; above that the planner's estimate, flagged. A phrase's total is its
    own (each candidate checked): SPEC §3's exact count is what a phrase costs most. A query of
    words is counted first: a source past SEARCH_EXACT_TOTAL has its keys from a walk
    (SEARCH_WALK_ROWS_PER_KEY)."""
    generic_plans(conn)
    params: dict[str, Any] = {"tenant": tenant_id, "query": filters.query, "run": filters.run_id,
                              "limit": limit + 1, "window": int((limit + 1) * SEARCH_WALK_ROWS_PER_KEY)}
    if after is not None:
        params.update(position(after), after_source=after[2])
    phrase = filters.phrase()
    branches = filters.branches(WORDS if phrase else TSQUERY)
    if not branches:
        return cut([], limit, 0, False)
    held = filters.branches(held=True)  # format-2 records found by a held payload only (migration 0034)
    counted = [*(filters.branches() if phrase else branches), *held]
    for _, _, branch_params in [*branches, *held, *filters.branches(None)]:
        params.update(branch_params)
    over: list[tuple[int, SearchSource, str]] = []
    dense: set[str] = set()
    with gin_scans(conn):
        if not phrase:  # counted first: a source past the exact total has its keys from a walk
            total, over = _search_count(conn, counted, params)
            dense = {source.name for i, source, _ in over if i < len(branches)}
        if phrase or not dense:
            keys = _search_keys(conn, filters, branches, held, params, after, phrase) if phrase or total or over else []
        if phrase and (after is not None or len(keys) > limit):
            total, over = _search_count(conn, counted, params)
        elif phrase:
            total = len(keys)
    if dense:
        keys = _walked_keys(conn, filters, branches, held, params, after, dense, limit)
    estimate = False
    for _, _, select in over:  # a source past SEARCH_EXACT_TOTAL: the planner's estimate of its matches, flagged
        plan = conn.execute(text(f"EXPLAIN (FORMAT JSON) {select}"), params).scalar_one()
        plan = plan if isinstance(plan, list) else json.loads(plan)
        total, estimate = total + max(int(plan[0]["Plan"]["Plan Rows"]), SEARCH_EXACT_TOTAL + 1), True
    page = cut(keys, limit, total, estimate)
    records = _search_records(conn, tenant_id, filters.query, page.rows)
    rows: list[Mapping[str, Any]] = [{**key, **records[(key["source"], key["id"])]} for key in page.rows
            if (key["source"], key["id"]) in records]  # a key row-level security does not show is no hit
    return Page(rows=rows, has_more=page.has_more, total=page.total, total_is_estimate=page.total_is_estimate)


Branch = tuple[SearchSource, str, dict[str, Any]]


def _key_selects(filters: SearchFilters, branches: Sequence[Branch], held: Sequence[Branch],
                 after: Sequence[Any] | None, phrase: bool, walked: frozenset[str] = frozenset()) -> list[str]:
    """Each source's SELECT of its page's keys (``walked``: those sources by a walk, SEARCH_WALK_ROWS_PER_KEY)."""
    selects = []
    bare = {source.name: clauses for source, clauses, _ in filters.branches(None)}
    for (source, clauses, _), by_payload in [*((b, False) for b in branches), *((b, True) for b in held)]:
        past = f" AND {_SEARCH_KEYSET.format(source=source.name)}" if after is not None else ""
        candidates = (f"SELECT v.id, v.created_at FROM {source.view} v WHERE {clauses}{past} "
                      "ORDER BY v.created_at DESC, v.id DESC")
        if source.name in walked and not by_payload:
            # The source's newest rows (the window) on its created_at index, then each one's
            # document checked in that order until the page is full: the LIMIT stops it, and the
            # planner computes an expensive column of a LIMITed sort's input only for the rows
            # the LIMIT takes.
            selects.append(f"(SELECT '{source.name}' AS source, w.id, w.created_at FROM ("
                           f"SELECT v.id, v.created_at, v.doc FROM {source.view} v WHERE {bare[source.name]}{past} "
                           "ORDER BY v.created_at DESC, v.id DESC LIMIT :window) w "
                           f"WHERE w.doc @@ {TSQUERY} ORDER BY w.created_at DESC, w.id DESC LIMIT :limit)")
        elif walked:
            # Beside a walk (plain index scans allowed): all of the source's matches (OFFSET 0: a
            # subquery of its own, with no order to walk for), on its GIN index, then sorted.
            selects.append(f"(SELECT '{source.name}' AS source, k.id, k.created_at FROM ("
                           f"SELECT v.id, v.created_at FROM {source.view} v WHERE {clauses}{past} OFFSET 0) k "
                           "ORDER BY k.created_at DESC, k.id DESC LIMIT :limit)")
        elif phrase and not by_payload:
            # OFFSET 0: the candidates sorted first (no document computed), then the phrase
            # checked on each in that order, the LIMIT stopping it.
            selects.append(f"(SELECT '{source.name}' AS source, k.id, k.created_at FROM ({candidates} OFFSET 0) k "
                           f"WHERE EXISTS (SELECT FROM {source.view} w WHERE w.id = k.id "
                           f"AND w.created_at = k.created_at AND w.doc @@ {TSQUERY} OFFSET 0) "
                           "ORDER BY k.created_at DESC, k.id DESC LIMIT :limit)")
        else:
            selects.append(f"(SELECT '{source.name}' AS source, k.id, k.created_at FROM ({candidates}) k "
                           "LIMIT :limit)")
    return selects


def _search_keys(conn: Connection, filters: SearchFilters, branches: Sequence[Branch], held: Sequence[Branch],
                 params: dict[str, Any], after: Sequence[Any] | None, phrase: bool) -> list[dict[str, Any]]:
    """The page's keys (page + 1), every source on its GIN index: under ``gin_scans``."""
    selects = _key_selects(filters, branches, held, after, phrase)
    return fetch_rows(conn, f"SELECT * FROM ({' UNION ALL '.join(selects)}) u "
                            "ORDER BY created_at DESC, id DESC, source DESC LIMIT :limit", params, prepare=True)


def _walked_keys(conn: Connection, filters: SearchFilters, branches: Sequence[Branch], held: Sequence[Branch],
                 params: dict[str, Any], after: Sequence[Any] | None, dense: set[str], limit: int
                 ) -> list[dict[str, Any]]:
    """The page's keys with the ``dense`` sources walked: plain index scans allowed (the walk is
    one), sequential scans not. Every source's keys come back (not only the page's), so that a
    walk the window cut short is seen: those sources are then read on their GIN index."""
    walked = frozenset(dense)
    while True:
        selects = _key_selects(filters, branches, held, after, False, walked)
        with gin_scans(conn, index_scans=True):
            rows = fetch_rows(conn, f"SELECT * FROM ({' UNION ALL '.join(selects)}) u "
                                    "ORDER BY created_at DESC, id DESC, source DESC", params, prepare=True)
        short = {name for name in walked if sum(1 for r in rows if r["source"] == name) < limit + 1}
        if not short:
            return rows[: limit + 1]
        walked -= short
        if not walked:
            with gin_scans(conn):
                return _search_keys(conn, filters, branches, held, params, after, False)


def _search_count(conn: Connection, branches: Sequence[Branch], params: dict[str, Any]
                  ) -> tuple[int, list[tuple[int, SearchSource, str]]]:
    """(the exact matches of the sources that have at most SEARCH_EXACT_TOTAL, [(its index in
    ``branches``, source, its SELECT) for each source past it: to be estimated]): one statement
    (one round trip, one plan) counting each source's matches up to SEARCH_EXACT_TOTAL + 1, where
    there were four."""
    counts = [f"(SELECT count(*) FROM (SELECT 1 FROM {source.view} v WHERE {clauses} LIMIT :cap) c)"
              for source, clauses, _ in branches]
    found = fetch_rows(conn, f"SELECT ARRAY[{', '.join(counts)}] AS counts", {**params, "cap": SEARCH_EXACT_TOTAL + 1},
                       prepare=True)
    total, over = 0, []
    for i, ((source, clauses, _), count) in enumerate(zip(branches, found[0]["counts"], strict=True)):
        if count <= SEARCH_EXACT_TOTAL:
            total += count
        else:
            over.append((i, source, f"SELECT 1 FROM {source.view} v WHERE {clauses}"))
    return total, over


def _search_records(conn: Connection, tenant_id: str, query: str, keys: Sequence[Mapping[str, Any]]
                    ) -> dict[tuple[str, str], dict[str, Any]]:
    """The records behind the keys, read from their tables (row-level security applies), by (source, id)."""
    ids: dict[str, list[str]] = {}
    for key in keys:
        ids.setdefault(key["source"], []).append(key["id"])
    found: dict[tuple[str, str], dict[str, Any]] = {}
    params = {"tenant": tenant_id, "query": query}
    for name, wanted in ids.items():
        source = SEARCH_SOURCES[name]
        if name == "AUDIT":
            sql = (AUDIT_SELECT.format(extra=", " + source.matched("a")) +
                   " WHERE a.tenant_id = :tenant AND a.id = ANY(:ids)")
        elif name == "TRACE_STEP":
            sql = (f"SELECT s.*, {source.matched('s')} FROM aos_trace_steps s "
                   "WHERE s.tenant_id = :tenant AND s.id = ANY(:ids)")
        else:
            scope = "s.tenant_id = :tenant" if name == "SYSTEM" else "true"
            sql = f"SELECT s.*, {source.matched('s')} FROM {source.table} s WHERE {scope} AND s.id = ANY(:ids)"
        rows = all_of(conn.execute(text(sql), {**params, "ids": wanted}))
        kind = {"AUDIT": "audit_entry", "TRACE_STEP": "trace_step"}.get(name, "system_record")
        held = _held_matches(conn, kind, query, rows) if name != "PLATFORM" else {}
        rows = erasure.opened_rows(conn, tenant_id, kind, rows)  # v2 payloads or their ERASED states
        traces: dict[str, Mapping[str, Any]] = {}
        if name == "TRACE_STEP" and rows:
            traces = {t["trace_id"]: t for t in all_of(conn.execute(text(
                "SELECT * FROM aos_traces WHERE tenant_id = :tenant AND trace_id = ANY(:traces)"),
                {"tenant": tenant_id, "traces": sorted({r["trace_id"] for r in rows})}))}
        fields = (*source.text_fields, *source.json_fields)
        for row in rows:
            matched = set(row["matched_fields"]) | held.get(erasure.record_id_of(kind, row), set())
            found[(name, row["id"])] = {"matched_fields": [f for f in fields if f in matched], "record": row,
                                        "trace": traces.get(row["trace_id"]) if traces else None}
    return found


def _held_matches(conn: Connection, kind: str, query: str, rows: Sequence[Mapping[str, Any]]
                  ) -> dict[str, set[str]]:
    """{record id: its payload fields that match the query on their own} for the format-2 ``rows``
    (a row's own matched fields cannot say: its payload columns are empty). Only payloads still held
    (payload_search, migration 0034): an erased one is never a matched field."""
    ids = [erasure.record_id_of(kind, r) for r in rows if (r.get("hash_version") or 1) == 2]
    if not ids:
        return {}
    found: dict[str, set[str]] = {}
    for r in all_of(conn.execute(text(
            f"SELECT p.record_id, p.field FROM payload_search p WHERE p.record_type = :kind "
            f"AND p.record_id = ANY(:ids) AND p.doc @@ {TSQUERY}"), {"kind": kind, "ids": ids, "query": query})):
        found.setdefault(r["record_id"], set()).add(r["field"])
    return found
