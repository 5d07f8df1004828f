"""The evidence read model's shared queries: what more than one service reads.

The Logs service lists and shows this evidence; the Export service packs the same
rows into bundles. Both read it here, so an export holds exactly what Logs shows and
no service reaches into another's store. Each service keeps its own queries in its
own store module.

Functions take a connection already scoped to the caller's tenant (row-level
security) and still filter by tenant explicitly: both must agree for a row to
appear. Lists go through aos_runtime.keyset (keyset pages, capped totals).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection

from aos_evidence.kinds import ExportScope
from aos_runtime.db import fetch_rows
from aos_runtime.keyset import Page, SortKey, direction, keyset_page, where
from aos_runtime.rows import all_of, first_of

# The one entry whose action did not succeed: a refused read (aos_runtime.access).
ACCESS_DENIED = "AccessDenied"
ACCESS_EVENTS = ("AccessGranted", ACCESS_DENIED)
# What a read of evidence is about (aos_runtime.access; migration 0019 admits no other).
EVIDENCE_ENTITIES = ("LLM_RUN", "SYSTEM_RECORD", "AUDIT_ENTRY", "LOG_EXPORT")


# An entry's actor as the ledger's actor index holds it (migration 0029_actor_sort): actor_id,
# never NULL (a sort key must not be; an entry without an actor is ''). A CASE, not coalesce():
# under row-level security only a leakproof condition can be an index condition, and the planner
# counts a COALESCE as possibly leaky (a CASE on IS NULL it does not), so a keyset or filter on
# coalesce() was a filter over the tenant's entries (tests/db/test_sort_index.py). The actor_id
# filter is written the same way, so that it is an index condition of that index too (for a
# non-empty id it matches exactly the entries with that actor_id).
ACTOR_KEY = "(CASE WHEN a.actor_id IS NULL THEN '' ELSE a.actor_id END)"


@dataclass(frozen=True)
class AuditFilters:
    event_types: tuple[str, ...] = ()
    entity_type: str | None = None
    actor_type: str | None = None
    actor_id: str | None = None
    correlation_id: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    entity_id: str | None = None
    success: bool | None = None  # False: the refusals (AccessDenied); True: every other entry
    entity_types: tuple[str, ...] = ()
    search: str | None = None  # a full-text query as the search documents are written (services/logs/search.py)
    ascending: bool = False    # oldest first
    sort: str | None = None    # an AUDIT_SORTS name; None: by (created_at, id)

    def where(self) -> tuple[str, dict[str, Any]]:
        clauses, params = where("a.tenant_id = :tenant", [
            ("a.event_type", "= ANY", self.event_types), ("a.entity_type", "=", self.entity_type),
            ("a.entity_id", "=", self.entity_id), ("a.entity_type", "= ANY", self.entity_types),
            ("a.event_type", "<>" if self.success else "=", None if self.success is None else ACCESS_DENIED),
            ("a.actor_type", "=", self.actor_type), (ACTOR_KEY, "=", self.actor_id),
            ("a.correlation_id", "=", self.correlation_id), ("a.created_at", ">=", self.created_after),
            ("a.created_at", "<", self.created_before)])
        if self.search is None:
            return clauses, params
        return f"{clauses} AND {search_match('a.id', 'audit_search')}", {**params, "search": self.search}


# The ledger lists' sort fields (AuditSortField's canonical names), each the leading column of an
# index (tenant_id, field DESC, created_at DESC, id DESC) of migration 0025 (event, entity type) or
# 0029 (the actor, written here as the index's expression).
AUDIT_SORTS = {"event_type": SortKey("a.event_type", "text"), "entity_type": SortKey("a.entity_type", "text"),
               "actor": SortKey(ACTOR_KEY, "text")}


# A full-text search, as a list filter: the keys of the tenant's records whose document (migration
# 0021's aos_search_document, one definition) matches, read from the tenant-scoped search view,
# where `doc @@ query` is an index condition (GIN on (tenant_id, document)); the list itself is
# read from its table under row-level security. The same matcher as SearchEvidence's.
SEARCH_QUERY = "websearch_to_tsquery('simple'::regconfig, :search)"


def search_match(column: str, view: str, key: str = "id") -> str:
    # The matching keys on the view's GIN index, then the list's rows. OFFSET 0 keeps the
    # subquery whole: without it the planner flattens the view into a join and computes the
    # document of every row of the tenant as a filter (tests/db/test_search_index.py). As
    # IN (not = ANY(ARRAY(...)), the first form) the keys are a hashed semi-join: = ANY tested
    # each row against the whole array, and a word matching thousands of a tenant's entries
    # cost a scan of it per row (bench/search_scale.py). With the records whose held format-2
    # payloads match (payload_keys) as a second condition of the same view scan — an array taken
    # once, a bitmap on the key's index OR-ed with the GIN one — not as a UNION ALL of both key
    # lists: the planner knows no distinct count of a UNION's column (it assumes 200), so a very
    # common word's keys went into a nested loop probing every partition once per key (6,897 keys
    # × 15 partitions: 370–480 ms p50 against ~60 at 10 M entries, bench/search_scale.py
    # measure --without-payloads); a plain column of the view keeps the hashed semi-join.
    match = f"v.doc @@ {SEARCH_QUERY}"
    held = payload_keys(view, key)
    if held is not None:
        match = f"({match} OR v.{key} = ANY(ARRAY({held})))"
    return f"{column} IN (SELECT v.{key} FROM {view} v WHERE {match} OFFSET 0)"


# Hash format 2 (docs/ERASURE.md): a record written with a data subject holds its payload fields
# (an entry's reason and states, a step's input and output, a record's summary and details) in
# evidence_payloads, its row holds them empty, so its row's document lacks them. payload_search
# (migration 0034) is the tenant's held payloads, each its own document on a GIN index, with its
# record's key: a record matches a search when its row's document matches the query or one of its
# held payloads does. An erased payload's row is deleted: from then on it matches nothing.
PAYLOAD_RECORDS = {"audit_search": "audit_entry", "trace_step_search": "trace_step", "system_search": "system_record"}


def payload_keys(view: str, key: str = "id", query: str = SEARCH_QUERY) -> str | None:
    """SELECT of the ``key`` (a column of ``view``: id, or a step's trace_id) of the records whose
    held payloads match ``query``; None for a view whose records hold none (platform_search)."""
    kind = PAYLOAD_RECORDS.get(view)
    if kind is None:
        return None
    match = f"p.record_type = '{kind}' AND p.doc @@ {query}"
    if kind != "trace_step":
        if key != "id":
            raise ValueError(f"payload_keys: {view} records are matched by id, not {key}")
        return f"SELECT p.record_id FROM payload_search p WHERE {match}"
    if key == "trace_id":
        return f"SELECT p.trace_id FROM payload_search p WHERE {match}"
    if key != "id":
        raise ValueError(f"payload_keys: steps are matched by id or trace_id, not {key}")
    # A step's payloads are keyed <trace_id>/<step_index>: its id on the (tenant, trace, step) index.
    return ("SELECT st.id FROM payload_search p JOIN aos_trace_steps st ON st.tenant_id = p.tenant_id "
            f"AND st.trace_id = p.trace_id AND st.step_index = p.step_index WHERE {match}")


# An audit entry with its correlation spine: the run it names (in its state, or
# by correlation id), that run's trace, violated policy and incident. The run key is
# computed apart (OFFSET 0 keeps it a subquery of its own): under row-level security a
# join condition holding jsonb operators, which are not leakproof, cannot be an index
# condition, and each entry then read every trace of its tenant (tests/db/test_logs_store.py).
AUDIT_SELECT = """
SELECT a.id, a.tenant_id, a.seq, a.event_type, a.entity_type, a.entity_id, a.actor_type, a.actor_id,
       a.action_reason, a.correlation_id, a.created_at, a.recorded_at, a.content_hash, a.prev_hash,
       a.chain_hash, a.is_synthetic, a.hash_version, a.commitments,
       coalesce(a.after_state ->> 'run_id', a.before_state ->> 'run_id', tr.run_id) AS run_id,
       coalesce(a.after_state ->> 'policy_id', a.before_state ->> 'policy_id') AS state_policy_id,
       coalesce(a.after_state ->> 'incident_id', a.before_state ->> 'incident_id') AS state_incident_id,
       tr.trace_id, tr.violation_policy_id, tr.incident_id AS trace_incident_id,
       a.after_state ->> 'ip_address' AS state_ip_address, a.after_state ->> 'user_agent' AS state_user_agent,
       a.after_state ->> 'failure_reason' AS state_failure_reason, a.after_state ->> 'rpc' AS state_rpc{extra}
FROM audit_ledger a
CROSS JOIN LATERAL (
    SELECT coalesce(a.after_state ->> 'run_id', a.before_state ->> 'run_id', a.correlation_id) AS run_key OFFSET 0) k
LEFT JOIN LATERAL (
    SELECT t.trace_id, t.run_id, t.violation_policy_id, t.incident_id FROM aos_traces t
    WHERE t.tenant_id = a.tenant_id AND t.run_id = k.run_key
    ORDER BY t.started_at LIMIT 1) tr ON true
"""


def ledger_head(conn: Connection, tenant_id: str) -> Mapping[str, Any] | None:
    return first_of(conn.execute(text("SELECT seq, chain_hash, created_at, recorded_at FROM audit_ledger "
                                      "WHERE tenant_id = :t ORDER BY seq DESC LIMIT 1"), {"t": tenant_id}))


def tlog_stored_hashes(conn: Connection, tenant_id: str, log: str, indexes: Sequence[int]
                       ) -> list[dict[str, Any]]:
    """The rows of a transparency log's stored hashes at ``indexes`` (Go sumdb/tlog stored-hash
    indexes, migration 0013) that the log holds, in the order of ``indexes``, with their entry
    columns for leaves: one query.

    One probe of the whole primary key per index (a LATERAL subquery with LIMIT is never
    flattened into a join), not ``hash_index = ANY(:idx)``: with statistics taken while the
    tenant's log was small (after a bulk load, before autovacuum's next analyze; on
    PostgreSQL 15 in the tree trigger) the planner scans the tenant's whole log with the
    array as a filter, O(n) per read (migration 0018).

    Through psycopg directly (``fetch_rows``): a proof's hot read (issue #20), pipelined
    where the caller's work is; SQLAlchemy's per-statement work was a third of a proof
    call's CPU (bench/profile_tlog.py). The indexes go as the text of an array (cast in the
    query): psycopg dumps a list of ints element by element, choosing each one's type (about
    90 µs for a proof's 40 indexes, measured; the text: under 10)."""
    return fetch_rows(conn, TLOG_STORED_HASHES, {"t": tenant_id, "log": log,
                                                 "idx": "{" + ",".join(map(str, map(int, indexes))) + "}"})


TLOG_STORED_HASHES = (
    "SELECT t.hash_index, t.hash, t.tree_size, t.entry_id, t.leaf_data, t.created_at, t.recorded_at "
    "FROM unnest(CAST(:idx AS bigint[])) WITH ORDINALITY AS w(i, k) CROSS JOIN LATERAL ("
    "SELECT * FROM tlog_hashes h WHERE h.tenant_id = :t AND h.log = :log AND h.hash_index = w.i LIMIT 1) t "
    "ORDER BY w.k")


def ledger_stats(conn: Connection) -> tuple[int, float | None]:
    """(entries appended to every tenant's ledger, seconds since the newest signed checkpoint or
    None): totals over tenants, through the owner's ``aos_ledger_stats()`` (migration 0015) —
    a session sees no tenant's rows by itself."""
    entries, age = conn.execute(text(
        "SELECT entries, extract(epoch FROM clock_timestamp() - newest_checkpoint_at)::float8 "
        "FROM aos_ledger_stats()")).one()
    return int(entries), age


EXPORT_SELECT = """
SELECT a.id, a.tenant_id, a.seq, a.scope, a.subject_id, a.run_id, a.incident_id, a.slice_filter, a.bundle_type,
       a.format, a.content_type, a.filename, a.size_bytes, a.checksum, a.manifest, a.dsse_envelope,
       a.signing_key_id, a.redaction, a.idempotency_key, a.requested_by_type, a.requested_by_id,
       a.correlation_id, a.created_at, a.recorded_at, a.content_hash, a.prev_hash, a.chain_hash,
       er.payloads_erased, er.erasure_ids, er.erasures
FROM log_exports a
LEFT JOIN LATERAL (
    -- What erasures took from the export after it was made (migration 0026's tombstones), in the
    -- same statement as the export (a page of them included): no query per export. Each with its
    -- basis (0030: RECORDED, or UNTRACKED whose count is an upper bound), by erasure id.
    SELECT sum(e.payloads_erased)::int AS payloads_erased,
           array_agg(DISTINCT e.erasure_id ORDER BY e.erasure_id) AS erasure_ids,
           jsonb_agg(jsonb_build_object('erasure_id', e.erasure_id, 'basis', e.basis,
                                        'payloads_erased', e.payloads_erased, 'erased_at', e.erased_at)
                     ORDER BY e.erasure_id, e.subject_id) AS erasures
    FROM erased_export_artifacts e WHERE e.tenant_id = a.tenant_id AND e.export_id = a.id) er ON true
"""


@dataclass(frozen=True)
class ExportFilters:
    created_after: datetime | None = None
    created_before: datetime | None = None
    run_id: str | None = None
    scope: ExportScope | None = None
    incident_id: str | None = None

    def where(self) -> tuple[str, dict[str, Any]]:
        return where("a.tenant_id = :tenant", [
            ("a.created_at", ">=", self.created_after), ("a.created_at", "<", self.created_before),
            ("a.run_id", "=", self.run_id), ("a.scope", "=", self.scope), ("a.incident_id", "=", self.incident_id)])


def list_exports(conn: Connection, tenant_id: str, filters: ExportFilters, after: Sequence[Any] | None,
                 limit: int) -> Page:
    clauses, params = filters.where()
    return keyset_page(conn, EXPORT_SELECT, clauses, {**params, "tenant": tenant_id}, "log_exports a", after, limit)


# A run's record joined with its trace (by trace id, else by run id).
RUN_FROM = """llm_run_records a
LEFT JOIN LATERAL (
    SELECT t.trace_id, t.violation_step_index, t.violation_policy_id, t.incident_id FROM aos_traces t
    WHERE t.tenant_id = a.tenant_id AND (t.trace_id = a.trace_id OR (a.trace_id IS NULL AND t.run_id = a.run_id))
    ORDER BY t.started_at LIMIT 1) tr ON true"""
RUN_SELECT = f"""
SELECT a.*, tr.trace_id AS joined_trace_id, tr.violation_step_index, tr.violation_policy_id,
       tr.incident_id AS trace_incident_id
FROM {RUN_FROM}
"""



def get_run(conn: Connection, tenant_id: str, run_id: str) -> Mapping[str, Any] | None:
    return first_of(conn.execute(text(RUN_SELECT + " WHERE a.tenant_id = :tenant AND a.run_id = :run"),
                        {"tenant": tenant_id, "run": run_id}))


def get_trace(conn: Connection, tenant_id: str, run_id: str) -> tuple[Mapping[str, Any] | None, list]:
    trace = trace_of_run(conn, tenant_id, run_id)
    if trace is None:
        return None, []
    steps = all_of(conn.execute(text(TRACE_STEPS_SELECT), {"tenant": tenant_id, "trace": trace["trace_id"]}))
    return trace, list(steps)


def trace_of_run(conn: Connection, tenant_id: str, run_id: str) -> Mapping[str, Any] | None:
    """A run's trace row, without its steps (TRACE_STEPS_SELECT reads them, :tenant and :trace)."""
    return first_of(conn.execute(text("SELECT * FROM aos_traces WHERE tenant_id = :tenant AND run_id = :run "
                                      "ORDER BY started_at LIMIT 1"), {"tenant": tenant_id, "run": run_id}))


TRACE_STEPS_SELECT = "SELECT * FROM aos_trace_steps WHERE tenant_id = :tenant AND trace_id = :trace ORDER BY step_index"


# Governance leaves out access entries; written as the partial indexes' predicate
# (migration 0006) so that the planner can use them.
NOT_ACCESS = "event_type <> 'EvidenceExported'"


def run_audit_entries(conn: Connection, tenant_id: str, run_id: str, *, states: bool = False,
                      search: str | None = None, ascending: bool = True, sort: str | None = None
                      ) -> list[Mapping[str, Any]]:
    """Entries correlated to a run: by correlation id or the run id in their state
    (with their before and after states when ``states``). Not the EvidenceExported
    entries of the run's exports: access, not governance (O5 lists the exports), and
    a run exported a thousand times must not carry a thousand entries in its O3.

    Three lookups on the partial indexes that leave the access entries out
    (ix_audit_ledger_governance_*, migration 0006), united in SQL: the cost follows
    the run's governance, not how often it was exported. ``search`` (a query as the search
    documents are written) keeps the entries the lists' matcher (search_match) finds; oldest
    first unless ``ascending`` is False; ``sort`` an AUDIT_SORTS name, as the lists sort (a
    run's entries are few: sorted in memory of the database, not walked on an index).
    """
    order, _ = direction(ascending, key=AUDIT_SORTS[sort] if sort else None)
    matched = f" AND {search_match('a.id', 'audit_search')}" if search is not None else ""
    return list(all_of(conn.execute(text(
        AUDIT_SELECT.format(extra=", a.before_state, a.after_state" if states else "") +
        # = ANY(ARRAY(...)): the ids first, then the rows by primary key; as IN (...) the
        # planner may hash-join against the tenant's whole ledger instead.
        f" WHERE a.id = ANY(ARRAY(SELECT id FROM audit_ledger WHERE tenant_id = :tenant AND correlation_id = :run"
        f"     AND {NOT_ACCESS}"
        f"   UNION SELECT id FROM audit_ledger WHERE tenant_id = :tenant AND after_state ? 'run_id'"
        f"     AND after_state ->> 'run_id' = :run AND {NOT_ACCESS}"
        f"   UNION SELECT id FROM audit_ledger WHERE tenant_id = :tenant AND before_state ? 'run_id'"
        f"     AND before_state ->> 'run_id' = :run AND {NOT_ACCESS})){matched}"
        f" ORDER BY {order}"), {"tenant": tenant_id, "run": run_id, "search": search})))


def run_breaches(conn: Connection, tenant_id: str, run_id: str) -> list[Mapping[str, Any]]:
    return list(all_of(conn.execute(text("SELECT * FROM limit_breaches WHERE tenant_id = :t AND run_id = :r "
                                  "ORDER BY breached_at, id"), {"t": tenant_id, "r": run_id})))


def system_clauses(filters: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """" AND …" for the system record filters set (component, event_type, severity, request_id, a
    created_at range), to follow each table's own scope (the tenant's, or system-wide)."""
    clauses, params = where("", [
        ("s.component", "=", filters.get("component")), ("s.event_type", "=", filters.get("event_type")),
        ("s.severity", "=", filters.get("severity")), ("s.request_id", "=", filters.get("request_id")),
        ("s.created_at", ">=", filters.get("created_after")),
        ("s.created_at", "<", filters.get("created_before"))], prefix="s")
    return (f" AND {clauses}" if clauses else ""), params
