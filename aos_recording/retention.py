"""Retention of the evidence: monthly partitions, checkpoints, drops of checkpointed chain beginnings.

Migration 0008 partitions ``audit_ledger`` by month and creates ``ledger_checkpoints``
and the owner-only functions this module calls; migration 0009 partitions
``system_records`` and ``aos_trace_steps`` the same way, their months dropped only
after the ledger's (as whole finished traces for steps). The system-wide records
(``platform_records``, migration 0011) are few, unpartitioned and kept. This module is the
maintenance path's store (its SQL lives here, as the services' lives in their stores)
and its command.

Decisions (docs/SCALE.md gives the measurements behind them):

- Key: ``created_at``, by month (UTC). The lists page on ``(created_at DESC, id DESC)``
  and filter by created_at, so they read the newest partitions first and stop; the
  chain's own order (seq) is not a time. ``recorded_at`` cannot be the key: the
  database stamps it in a BEFORE trigger, which runs after the row was routed to a
  partition, and a trigger may not move a row to another one.
- A backdated entry lands in an old partition (or the default one) with a new seq.
  So the gate below is about the chain, not the calendar: a set of partitions is
  dropped only if, for every tenant, it holds exactly the beginning of the tenant's
  chain (no kept entry has a lower seq than a dropped one) and a recorded checkpoint
  at or after its last entry still matches the ledger. The chain hash of the last
  dropped entry is recorded first (a RETENTION_ANCHOR in ``ledger_checkpoints``):
  verification then starts there (``verify.verify_ledger(anchor=...)``).
- Uniqueness: a partitioned table enforces only keys that contain the partition key,
  so ``(tenant_id, seq)`` is unique per partition; across partitions the chain
  trigger's per-tenant lock is what keeps seq unique (it always did assign it).
- Who may drop: ``aos_drop_ledger_partitions`` and ``aos_ensure_ledger_partitions`` run
  as the owner (SECURITY DEFINER) and EXECUTE is revoked from PUBLIC: the migration
  user (maintenance) calls them, no service role can. Service roles cannot DROP,
  DETACH or TRUNCATE a partition either (they own nothing and hold no privilege on
  the partitions).
- Who creates partitions: this module's ``ensure`` command, run by deploy/cron
  (monthly is enough, it creates months ahead); a default partition catches any row
  no month takes, so a missed run never refuses evidence.

    python -m aos_recording.retention checkpoint              # record each tenant's chain head
    python -m aos_recording.retention ensure --ahead 3         # this month and 3 ahead
    python -m aos_recording.retention drop --before 2026-01    # whole months before, if covered
                                                               # (the ledger's, then the others')
    python -m aos_recording.retention apply [--dry-run] [--now 2027-06-01T00:00:00Z] [--checkpoint]
                                                               # the tenants' policies and holds

``apply`` (``apply_policies``) is the policy-driven path (issue #25; docs/SCALE.md §3c). Monthly
partitions are shared by tenants, so a partition is dropped only when, for every tenant with
rows in it, the tenant's policy for that record type (and, for system records, for each level
it holds) has expired all of them — its month ended at least the policy's days before ``now``
— and no active legal hold of any of those tenants covers a row in it. Only a run of the
oldest partitions goes (the drop functions take every month before a bound), and through the
same gates as ``drop``: the ledger's checkpoints (``aos_drop_ledger_partitions``), whole
finished traces for steps (``aos_drop_expired_partitions``, migration 0022). Policies and holds
are read with ``legal_holds`` and ``retention_policies`` locked SHARE and the candidate
partitions ACCESS EXCLUSIVE, in the transaction that drops them, so a hold placed meanwhile
waits for the drop or blocks it. Each dropped partition is an EvidencePartitionDropped
entry in the ledger of every tenant that had rows in it.

A month that cannot go whole (one row in it must stay: a permanent level, another tenant's
longer policy, a hold) no longer keeps every tenant's rows (migration 0027_retention_rows):
each later candidate partition is then emptied row-set by row-set — one tenant's rows of it
(of one level for system records) whose policy expired — through
``aos_retention_remove_rows``, called as the ``aos_retention`` role: the only path past the
append-only triggers; it refuses a set a hold covers, a ledger set that is not the beginning of
the tenant's chain or that no matching checkpoint covers (recording the tenant's retention
anchor first, as a drop does), steps of an unfinished or straddling trace; it deletes the set's
payloads with it. Each removed set is an EvidenceRowsRemoved entry of its tenant, with counts.
A refused set (AOS02) stays and is reported; the others still go (a savepoint each).
"""
from __future__ import annotations

import argparse
import logging
import sys
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone

import psycopg
import psycopg.sql
from psycopg.types.json import Jsonb

from aos_recording import retention_policy as rp
from aos_recording.verify import Checkpoint

log = logging.getLogger("aos.retention")


def _month(value: date | datetime) -> datetime:
    return datetime(value.year, value.month, 1, tzinfo=timezone.utc)


# Partitioned by month of created_at (migrations 0008, 0009); the ledger's retention
# is gated by checkpoints, the two others' by the ledger's.
LEDGER = "audit_ledger"
FOLLOWERS = ("system_records", "aos_trace_steps")


def partitions(conn: psycopg.Connection, table: str = LEDGER) -> list[tuple[str, int]]:
    """A partitioned table's partitions and their row estimates, oldest first (default last)."""
    return [(name, int(rows)) for name, rows in conn.execute(
        "SELECT c.relname, greatest(c.reltuples, 0) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = %s::regclass ORDER BY c.relname = %s, c.relname", (table, f"{table}_default"))]


def record_checkpoints(conn: psycopg.Connection, tenant_id: str | None = None) -> list[tuple[str, int, bytes]]:
    """Each tenant's chain head (or one tenant's), recorded as a checkpoint."""
    with conn.transaction():
        return [(t, seq, bytes(h)) for t, seq, h in conn.execute(
            "SELECT * FROM aos_record_ledger_checkpoints(%s)", (tenant_id,))]


def ensure_partitions(conn: psycopg.Connection, *, first: date, through: date) -> list[str]:
    """The months from ``first`` through ``through`` of every partitioned evidence table."""
    months = (_month(first), _month(through))
    with conn.transaction():
        created = [r[0] for r in conn.execute("SELECT aos_ensure_ledger_partitions(%s, %s)", months)]
        for table in FOLLOWERS:
            created += [r[0] for r in conn.execute("SELECT aos_ensure_partitions(%s, %s, %s)", (table, *months))]
        return created


def drop_partitions_before(conn: psycopg.Connection, before: date, table: str = LEDGER) -> list[str]:
    """Drops a table's whole months before ``before``: the ledger's if every chain segment
    in them is checkpointed; system_records' and aos_trace_steps' once the ledger holds
    nothing before ``before`` (and, for steps, as whole finished traces).

    Raises psycopg.Error (sqlstate AOS02) when retention is refused; nothing is dropped then.
    """
    with conn.transaction():
        if table == LEDGER:
            return [r[0] for r in conn.execute("SELECT aos_drop_ledger_partitions(%s)", (_month(before),))]
        return [r[0] for r in conn.execute("SELECT aos_drop_partitions(%s, %s)", (table, _month(before)))]


def retention_anchor(conn, tenant_id: str) -> Checkpoint | None:
    """The last dropped entry of a tenant's chain: where verification starts (None: nothing dropped).

    ``conn``: a psycopg or SQLAlchemy connection (the verifier's).
    """
    sql = ("SELECT seq, chain_hash FROM ledger_checkpoints WHERE tenant_id = %(t)s AND kind = 'RETENTION_ANCHOR' "
           "ORDER BY seq DESC LIMIT 1")
    if isinstance(conn, psycopg.Connection):
        row = conn.execute(sql, {"t": tenant_id}).fetchone()
    else:
        row = conn.exec_driver_sql(sql, {"t": tenant_id}).first()
    return Checkpoint(int(row[0]), bytes(row[1])) if row else None


# --- policies and legal holds (migration 0022) -------------------------------------------------

STEPS, SYSTEM = "aos_trace_steps", "system_records"
RECORD_TYPE_OF = {LEDGER: rp.AUDIT_LEDGER, STEPS: rp.LLM_RUNS, SYSTEM: rp.SYSTEM_RECORDS}
APPLY_ORDER = (LEDGER, STEPS, SYSTEM)
ACTOR = "aos-retention"

# Which rows of a partition a hold on a run, an incident or a data subject covers (docs/SCALE.md §3c).
_COVERS = {
    (LEDGER, "RUN"): "SELECT FROM {p} x WHERE x.tenant_id = %(t)s AND (x.correlation_id = %(id)s "
                     "OR (x.entity_type = 'LLM_RUN' AND x.entity_id = %(id)s))",
    (LEDGER, "INCIDENT"): "SELECT FROM {p} x WHERE x.tenant_id = %(t)s AND (x.correlation_id = %(id)s "
                          "OR (x.entity_type = 'INCIDENT' AND x.entity_id = %(id)s))",
    (STEPS, "RUN"): "SELECT FROM {p} x JOIN aos_traces r ON r.tenant_id = x.tenant_id AND r.trace_id = x.trace_id "
                    "WHERE x.tenant_id = %(t)s AND r.run_id = %(id)s",
    (STEPS, "INCIDENT"): "SELECT FROM {p} x JOIN aos_traces r ON r.tenant_id = x.tenant_id "
                         "AND r.trace_id = x.trace_id WHERE x.tenant_id = %(t)s AND r.incident_id = %(id)s",
    (SYSTEM, "RUN"): "SELECT FROM {p} x WHERE x.tenant_id = %(t)s AND (x.run_id = %(id)s OR x.correlation_id = %(id)s)",
    (SYSTEM, "INCIDENT"): "SELECT FROM {p} x WHERE x.tenant_id = %(t)s AND x.correlation_id = %(id)s",
    # A data subject (migration 0023_erasure): the hash-format-2 records whose payloads are kept
    # under the subject in evidence_payloads (a v1 record names no subject: not covered).
    (LEDGER, "SUBJECT"): "SELECT FROM {p} x JOIN evidence_payloads e ON e.tenant_id = x.tenant_id "
                         "AND e.record_type = 'audit_entry' AND e.record_id = x.id "
                         "WHERE x.tenant_id = %(t)s AND e.subject_id = %(id)s",
    (STEPS, "SUBJECT"): "SELECT FROM {p} x JOIN evidence_payloads e ON e.tenant_id = x.tenant_id "
                        "AND e.record_type = 'trace_step' AND e.record_id = x.trace_id || '/' || x.step_index "
                        "WHERE x.tenant_id = %(t)s AND e.subject_id = %(id)s",
    (SYSTEM, "SUBJECT"): "SELECT FROM {p} x JOIN evidence_payloads e ON e.tenant_id = x.tenant_id "
                         "AND e.record_type = 'system_record' AND e.record_id = x.id "
                         "WHERE x.tenant_id = %(t)s AND e.subject_id = %(id)s",
}


class LegalHoldActive(Exception):
    """An active legal hold covers what was to be dropped or erased."""

    def __init__(self, holds: list[dict]) -> None:
        self.holds = holds
        super().__init__("legal hold active: " + ", ".join(
            f"{h['id']} ({h['scope']}{' ' + h['target_id'] if h['target_id'] else ''})" for h in holds))


def legal_holds_covering(conn, tenant_id: str, *, run_id: str | None = None,
                         incident_id: str | None = None) -> list[dict]:
    """The tenant's active holds that cover the tenant, ``run_id`` or ``incident_id``: the
    question erasure asks before it erases (``ensure_no_legal_hold``). ``conn``: psycopg or
    SQLAlchemy; any service role may call it (``aos_legal_holds_covering``, migration 0022),
    whatever tenant its transaction is scoped to."""
    sql = "SELECT * FROM aos_legal_holds_covering(%(t)s, %(r)s, %(i)s)"
    params = {"t": tenant_id, "r": run_id, "i": incident_id}
    if isinstance(conn, psycopg.Connection):
        cur = conn.execute(sql, params)
        names = [c.name for c in cur.description or ()]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
    return [dict(r._mapping) for r in conn.exec_driver_sql(sql, params).fetchall()]


def ensure_no_legal_hold(conn, tenant_id: str, *, run_id: str | None = None,
                         incident_id: str | None = None) -> None:
    """Raises LegalHoldActive when a hold covers the tenant, the run or the incident."""
    holds = legal_holds_covering(conn, tenant_id, run_id=run_id, incident_id=incident_id)
    if holds:
        raise LegalHoldActive(holds)


@dataclass
class TableOutcome:
    """What ``apply_policies`` did to one table."""
    table: str
    dropped: list[str] = field(default_factory=list)
    # The oldest partition kept and why (policy not expired, permanent, a hold, a refused gate).
    kept: str | None = None
    reason: str | None = None
    # tenant -> rows of it the dropped partitions held
    rows: dict[str, int] = field(default_factory=dict)
    # format 2 payload fields (evidence_payloads) deleted with the dropped partitions' records
    payloads_purged: int = 0
    # Row by row, in partitions that could not drop whole: partition -> tenant -> rows removed
    removed: dict[str, dict[str, int]] = field(default_factory=dict)
    # payload fields deleted with the removed rows
    payloads_removed: int = 0
    # the row sets whose policy had expired but that stay: "partition tenant[/level]: why"
    refused: list[str] = field(default_factory=list)


def _policies(conn: psycopg.Connection) -> dict[tuple[str, str, str], rp.Policy]:
    return {(t, rt, lv): rp.Policy(rt, lv, days, cls, tuple(tags)) for t, rt, lv, days, cls, tags in conn.execute(
        "SELECT tenant_id, record_type, level, retention_days, retention_class, compliance_tags "
        "FROM retention_policies")}


def _dated_partitions(conn: psycopg.Connection, table: str) -> list[tuple[str, datetime, datetime]]:
    """(name, from, to) of a table's monthly partitions, oldest first; never the default one."""
    return [(name, lo, hi) for name, lo, hi in conn.execute(
        "SELECT c.relname, b[1]::timestamptz, b[2]::timestamptz FROM pg_inherits i "
        "JOIN pg_class c ON c.oid = i.inhrelid, "
        "LATERAL regexp_match(pg_get_expr(c.relpartbound, c.oid), 'FROM \\(''([^'']+)''\\) TO \\(''([^'']+)''\\)') b "
        "WHERE i.inhparent = %s::regclass AND b IS NOT NULL ORDER BY 2", (table,))]


def _policy_keeps(table: str, tenant: str, level: str, end: datetime, now: datetime,
                  policies: dict) -> str | None:
    """Why the tenant's policy keeps its rows of ``table`` (of ``level``) created before ``end``, or None."""
    key = (RECORD_TYPE_OF[table], level)
    policy = policies.get((tenant, *key)) or rp.default(*key)
    label = f"{key[0]}{'/' + level if level else ''}"
    if policy.days is None:
        return f"tenant {tenant}'s {label} policy keeps it permanently"
    if end + timedelta(days=policy.days) > now:
        return (f"tenant {tenant}'s {label} policy keeps it {policy.days} days: "
                f"expires {(end + timedelta(days=policy.days)).isoformat()}")
    return None


def _blocker(conn: psycopg.Connection, table: str, name: str, end: datetime, now: datetime,
             policies: dict, holds: list[tuple[str, str, str, str]]
             ) -> tuple[str | None, dict[str, int], list[tuple[str, str, int]]]:
    """Why partition ``name`` (rows created before ``end``) must stay whole, or None; its rows
    per tenant; its row sets (tenant, level, rows)."""
    part = psycopg.sql.Identifier(name).as_string(conn)
    level = "x.severity" if table == SYSTEM else "''"
    groups = [(t, lv, int(n)) for t, lv, n in conn.execute(
        f"SELECT x.tenant_id, {level}, count(*) FROM {part} x GROUP BY 1, 2 ORDER BY 1, 2")]
    rows: dict[str, int] = {}
    for tenant, _, n in groups:
        rows[tenant] = rows.get(tenant, 0) + n
    for tenant, lv, _ in groups:
        why = _policy_keeps(table, tenant, lv, end, now, policies)
        if why is not None:
            return why, rows, groups
    for hold_id, tenant, scope, target in holds:
        if tenant not in rows:
            continue
        if scope == "TENANT" or _covers(conn, table, scope, part, tenant, target):
            return f"legal hold {hold_id} of tenant {tenant} ({scope}{' ' + target if target else ''})", rows, groups
    return None, rows, groups


# The record id a format 2 record's payloads are kept under (migration 0023_erasure), per table.
_PAYLOAD_RECORD = {LEDGER: ("audit_entry", "x.id"), STEPS: ("trace_step", "x.trace_id || '/' || x.step_index"),
                   SYSTEM: ("system_record", "x.id")}


def _purge_payloads(conn: psycopg.Connection, table: str, partitions: list[str]) -> int:
    """Deletes the payloads and salts (evidence_payloads, docs/ERASURE.md) of the format 2 records
    in ``partitions``, in the transaction that drops them: a dropped record's content does not
    outlive it. (Their erasure tombstones, which hold no content, stay: append-only.)"""
    record_type, record_id = _PAYLOAD_RECORD[table]
    purged = 0
    for name in partitions:
        part = psycopg.sql.Identifier(name).as_string(conn)
        purged += conn.execute(
            f"DELETE FROM evidence_payloads e USING {part} x WHERE e.tenant_id = x.tenant_id "
            f"AND e.record_type = %(k)s AND e.record_id = {record_id}", {"k": record_type}).rowcount
    return purged


def _covers(conn: psycopg.Connection, table: str, scope: str, part: str, tenant: str, target: str) -> bool:
    row = conn.execute(f"SELECT EXISTS ({_COVERS[(table, scope)].format(p=part)})",
                       {"t": tenant, "id": target}).fetchone()
    return bool(row and row[0])


def _append_entry(conn: psycopg.Connection, tenant: str, event: str, partition: str, reason: str,
                  after: dict, now: datetime) -> None:
    """One retention entry (entity: the partition) in the tenant's ledger, in the caller's transaction."""
    from aos_recording.hashing import ledger_content_hash
    from aos_recording.writers import AuditLedgerWriter
    entry = AuditLedgerWriter.entry(
        tenant_id=tenant, event_type=event, entity_type="EVIDENCE_PARTITION", entity_id=partition,
        actor_type="SYSTEM", actor_id=ACTOR, action_reason=reason, after_state=after, created_at=now)
    conn.execute(
        "INSERT INTO audit_ledger (id, tenant_id, event_type, entity_type, entity_id, actor_type, actor_id, "
        "action_reason, correlation_id, created_at, before_state, after_state, content_hash) "
        "VALUES (%(id)s, %(tenant_id)s, %(event_type)s, %(entity_type)s, %(entity_id)s, %(actor_type)s, "
        "%(actor_id)s, %(action_reason)s, %(correlation_id)s, %(created_at)s, NULL, %(after)s, %(hash)s)",
        {**entry, "after": Jsonb(entry["after_state"]), "hash": ledger_content_hash(entry)})


def _append_drop_entries(conn: psycopg.Connection, table: str, dropped: list[tuple[str, datetime, datetime]],
                         per_partition: dict[str, dict[str, int]], now: datetime) -> None:
    for name, lo, hi in dropped:
        for tenant, n in sorted(per_partition[name].items()):
            _append_entry(conn, tenant, "EvidencePartitionDropped", name,
                          f"retention: {RECORD_TYPE_OF[table]} partition {name} expired under every "
                          "tenant's policy, no legal hold",
                          {"table": table, "partition": name, "record_type": RECORD_TYPE_OF[table],
                           "from": lo.isoformat(), "to": hi.isoformat(), "rows_of_tenant": n}, now)


def apply_policies(conn: psycopg.Connection, now: datetime, *, dry_run: bool = False,
                   tables: Iterable[str] = APPLY_ORDER, row_wise: bool = True) -> list[TableOutcome]:
    """Applies every tenant's retention policies and legal holds as of ``now`` (the clock is
    the caller's: tests move it). Per table, in its own transaction: the oldest run of
    partitions that every tenant's policy lets go and no hold covers is dropped through the
    table's gate; a refused gate (AOS02) keeps them all and is reported. Then (``row_wise``)
    from the first partition that stays on, each expired row set (a tenant's rows of a
    partition, of one level for system records) is removed through the row gate
    (``_remove_rows``). ``dry_run``: all of it, in a transaction rolled back, so the gates'
    answers are reported and nothing changes. ``conn``: the owner's (migration user's)
    connection, autocommit, which may assume the ``aos_retention`` role (migration 0026)."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    outcomes = []
    for table in tables:
        outcome = TableOutcome(table)
        outcomes.append(outcome)
        doomed: list[tuple[str, datetime, datetime]] = []
        try:
            with conn.transaction() as tx:
                conn.execute("SET LOCAL timezone = 'UTC'")
                conn.execute("LOCK TABLE legal_holds, retention_policies IN SHARE MODE")
                policies = _policies(conn)
                holds = [tuple(h) for h in conn.execute(
                    "SELECT id, tenant_id, scope, target_id FROM legal_holds WHERE released_at IS NULL ORDER BY 1")]
                candidates = [p for p in _dated_partitions(conn, table) if p[2] + timedelta(days=1) <= now]
                for name, _, _ in sorted(candidates):  # the drop functions' lock order (by name)
                    conn.execute(f"LOCK TABLE {psycopg.sql.Identifier(name).as_string(conn)} IN ACCESS EXCLUSIVE MODE")
                per_partition: dict[str, dict[str, int]] = {}
                # the partitions from the first one that stays whole: (name, from, to, row sets)
                staying: list[tuple[str, datetime, datetime, list[tuple[str, str, int]]]] = []
                for name, lo, hi in candidates:
                    why, rows, groups = _blocker(conn, table, name, hi, now, policies, holds)
                    if why is None and not staying:
                        doomed.append((name, lo, hi))
                        per_partition[name] = rows
                        continue
                    if not staying:
                        outcome.kept, outcome.reason = name, why
                    staying.append((name, lo, hi, groups))
                if doomed:
                    outcome.payloads_purged = _purge_payloads(conn, table, [n for n, _, _ in doomed])
                    before = doomed[-1][2]
                    if table == LEDGER:
                        gone = [r[0] for r in conn.execute("SELECT aos_drop_ledger_partitions(%s)", (before,))]
                    else:
                        gone = [r[0] for r in conn.execute(
                            "SELECT aos_drop_expired_partitions(%s, %s)", (table, before))]
                    if sorted(gone) != sorted(n for n, _, _ in doomed):  # the same set, or nothing
                        raise RuntimeError(f"{table}: dropped {gone}, expected {[n for n, _, _ in doomed]}")
                    _append_drop_entries(conn, table, doomed, per_partition, now)
                outcome.dropped = [n for n, _, _ in doomed]
                for rows in per_partition.values():
                    for tenant, n in rows.items():
                        outcome.rows[tenant] = outcome.rows.get(tenant, 0) + n
                if row_wise and staying:
                    _remove_rows(conn, table, staying, now, policies, outcome)
                if dry_run:
                    raise psycopg.Rollback(tx)  # nothing was dropped or removed; leave no lock behind either
        except psycopg.Error as err:
            if err.sqlstate != "AOS02":
                raise
            outcome.dropped, outcome.rows, outcome.payloads_purged = [], {}, 0
            outcome.removed, outcome.payloads_removed, outcome.refused = {}, 0, []
            outcome.kept, outcome.reason = (doomed[0][0] if doomed else None), \
                f"refused: {err.diag.message_primary or err}"
    return outcomes


def _remove_rows(conn: psycopg.Connection, table: str,
                 staying: list[tuple[str, datetime, datetime, list[tuple[str, str, int]]]],
                 now: datetime, policies: dict, outcome: TableOutcome) -> None:
    """Removes, oldest partition first, each row set whose tenant's policy let it go, through
    ``aos_retention_remove_rows`` as the ``aos_retention`` role (migration 0026), each in a
    savepoint: a refused set (AOS02: a hold, the ledger's chain-beginning or checkpoint rule, a
    trace's steps elsewhere) stays and is reported, the others go. Then one EvidenceRowsRemoved
    entry per tenant and partition, with the counts (and, for the ledger, the anchor)."""
    for name, lo, hi, groups in staying:
        done: dict[str, dict[str, int]] = {}
        payloads: dict[str, int] = {}
        for tenant, level, _ in groups:
            if _policy_keeps(table, tenant, level, hi, now, policies) is not None:
                continue
            try:
                with conn.transaction():
                    conn.execute("SET LOCAL ROLE aos_retention")
                    row = conn.execute("SELECT rows_removed, payloads_removed FROM aos_retention_remove_rows("
                                       "%s, %s, %s, %s)", (table, name, tenant, level or None)).fetchone()
                    conn.execute("RESET ROLE")
            except psycopg.Error as err:
                if err.sqlstate != "AOS02":
                    raise
                outcome.refused.append(f"{name} {tenant}{'/' + level if level else ''}: "
                                       f"{err.diag.message_primary or err}")
                continue
            n, k = (int(row[0]), int(row[1])) if row else (0, 0)
            if n:
                done.setdefault(tenant, {})[level] = n
                payloads[tenant] = payloads.get(tenant, 0) + k
        for tenant, levels in sorted(done.items()):
            n = sum(levels.values())
            outcome.removed.setdefault(name, {})[tenant] = n
            outcome.payloads_removed += payloads[tenant]
            state: dict[str, object] = {
                "table": table, "partition": name, "record_type": RECORD_TYPE_OF[table],
                "from": lo.isoformat(), "to": hi.isoformat(), "rows_removed": n,
                "payloads_removed": payloads[tenant]}
            if table == SYSTEM:
                state["levels"] = dict(sorted(levels.items()))
            if table == LEDGER:
                anchor = retention_anchor(conn, tenant)
                state["anchor_seq"] = anchor.seq if anchor else None
            _append_entry(conn, tenant, "EvidenceRowsRemoved", name,
                          f"retention: {RECORD_TYPE_OF[table]} rows of the tenant expired under its policy, "
                          f"removed from partition {name}, which other rows keep", state, now)


class Schedule:
    """Retention rounds on a daemon thread, every ``interval_s`` (the first one interval after
    ``start``): each tenant's chain head recorded as a checkpoint, then ``apply_policies`` at
    the clock's time. ``url``: the owner's (migration user's) libpq URL. The suite launcher
    runs one (AOS_RETENTION_INTERVAL_S); a deployment may run the same two commands from cron.
    A failed round is logged and the next one runs."""

    def __init__(self, url: str, interval_s: float, *,
                 clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> None:
        self.url, self.interval_s, self.clock = url, interval_s, clock
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="aos-retention", daemon=True)

    def start(self) -> bool:
        """Starts the rounds; False (nothing started) when the interval is 0 (off)."""
        if self.interval_s <= 0:
            return False
        self._thread.start()
        return True

    def stop(self, timeout_s: float = 30) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def round(self) -> list[TableOutcome]:
        with psycopg.connect(self.url, autocommit=True) as conn:
            record_checkpoints(conn)
            return apply_policies(conn, self.clock())

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                for outcome in self.round():
                    log.info("retention: %s", describe(outcome))
            except Exception:  # the schedule outlives one failed round (the database may be away)
                log.exception("retention round failed; retried next round")


def describe(outcome: TableOutcome, *, dry_run: bool = False) -> str:
    """One line per table: what went (or would), what stays and why."""
    went = ", ".join(outcome.dropped) or "nothing"
    line = f"{outcome.table}: {'would drop' if dry_run else 'dropped'} {went}"
    if outcome.rows:
        line += f" ({sum(outcome.rows.values())} rows of {len(outcome.rows)} tenants)"
    if outcome.payloads_purged:
        line += f", their {outcome.payloads_purged} format 2 payload fields deleted"
    if outcome.removed:
        tenants = {t for rows in outcome.removed.values() for t in rows}
        line += (f"; {'would remove' if dry_run else 'removed'} "
                 f"{sum(n for rows in outcome.removed.values() for n in rows.values())} rows of {len(tenants)} "
                 f"tenants row by row from {', '.join(outcome.removed)}")
        if outcome.payloads_removed:
            line += f" (and {outcome.payloads_removed} payload fields)"
    if outcome.kept:
        line += f"; kept from {outcome.kept}: {outcome.reason}"
    elif outcome.reason:
        line += f"; {outcome.reason}"
    for refused in outcome.refused:
        line += f"; kept {refused}"
    return line


def _parse_instant(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an RFC 3339 time: {value!r}") from None
    if parsed.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{value!r} names no zone (say Z or +00:00)")
    return parsed


def _parse_month(value: str) -> date:
    return datetime.strptime(value, "%Y-%m").date()  # noqa: DTZ007 - only the calendar month is kept


def main(argv: Iterable[str]) -> int:
    from aos_runtime.config import Settings
    from aos_runtime.db import libpq_url
    from aos_runtime.embedded import database_url_for

    parser = argparse.ArgumentParser(prog="python -m aos_recording.retention", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("checkpoint", help="record every tenant's chain head as a checkpoint")
    ensure = commands.add_parser("ensure", help="create monthly partitions from this month on")
    ensure.add_argument("--ahead", type=int, default=3, help="months after the current one (default 3)")
    drop = commands.add_parser("drop", help="drop whole months before a month, if checkpointed")
    drop.add_argument("--before", type=_parse_month, required=True, help="YYYY-MM: months before it go")
    apply = commands.add_parser("apply", help="apply every tenant's retention policies and legal holds")
    apply.add_argument("--now", type=_parse_instant, default=None,
                       help="the clock to apply them at (RFC 3339; default: now, UTC)")
    apply.add_argument("--dry-run", action="store_true", help="say what would go; drop nothing")
    apply.add_argument("--checkpoint", action="store_true",
                       help="record every tenant's chain head first (the ledger's gate needs a checkpoint)")
    args = parser.parse_args(list(argv))

    with database_url_for(Settings.from_env()) as url, \
            psycopg.connect(libpq_url(url), autocommit=True) as conn:
        try:
            if args.command == "checkpoint":
                for tenant, seq, chain in record_checkpoints(conn):
                    print(f"{tenant}\t{seq}\t{chain.hex()}")
            elif args.command == "ensure":
                today = datetime.now(timezone.utc).date()  # partitions are UTC months, the host's zone is not
                total = today.year * 12 + today.month - 1 + args.ahead
                for name in ensure_partitions(conn, first=today, through=date(total // 12, total % 12 + 1, 1)):
                    print(f"created {name}")
            elif args.command == "apply":
                if args.checkpoint and not args.dry_run:
                    record_checkpoints(conn)
                for outcome in apply_policies(conn, args.now or datetime.now(timezone.utc), dry_run=args.dry_run):
                    print(describe(outcome, dry_run=args.dry_run))
            else:
                # the ledger first: the others follow it
                for table in (LEDGER, *FOLLOWERS):
                    for name in drop_partitions_before(conn, args.before, table):
                        print(f"dropped {name}")
        except psycopg.Error as err:
            print(f"refused: {err.diag.message_primary or err}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
