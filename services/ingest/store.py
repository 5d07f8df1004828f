"""The Ingest service's writes: each batch in the one transaction ``Database.run`` opens.

Almost no SQL here: the recording library's writers (aos_recording.writers, sources) hold
it, so the suite's own tools and the Ingest API write evidence the same way; the two
look-ups a run's retry needs are below. Each function takes
the batch's valid items, in request order, and answers one outcome per item.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection

from aos_recording import erasure, hashing
from aos_recording.sources import SourceWriter
from aos_recording.writers import (
    AuditLedgerWriter,
    EvidenceConflict,
    LedgerEntry,
    LlmRunRecordWriter,
    SystemRecordWriter,
    TraceRecorder,
)


@dataclass(frozen=True)
class Outcome:
    """What became of one item: stored by this call (created), already stored with the same
    content (a retry), or refused because its id holds other content (``conflict``: why)."""
    created: bool
    entry: LedgerEntry | None = None
    content_hash: bytes | None = None
    conflict: str | None = None


def append_audit_events(conn: Connection, tenant_id: str, events: Sequence[Mapping[str, Any]]) -> list[Outcome]:
    """Appends each event (AuditLedgerWriter.append_once's fields) unless its id is recorded."""
    writer = AuditLedgerWriter(conn)
    writer.hold_producer_ids(tenant_id)
    outcomes = []
    # Two statements for the batch (look-up, then one INSERT in order), not two per event: on the
    # shared machine a batch of 500 took 5.6 s one event at a time (bench/ingest_rate.py).
    for answer in writer.append_many_once(events):
        if isinstance(answer, EvidenceConflict):
            outcomes.append(Outcome(created=False, conflict=str(answer)))
            continue
        entry, created = answer
        outcomes.append(Outcome(created=created, entry=entry, content_hash=entry.content_hash))
    return outcomes


def append_system_records(conn: Connection, records: Sequence[Mapping[str, Any]]) -> list[Outcome]:
    """Writes each record (SystemRecordWriter.record's fields) unless its id is recorded in the tenant."""
    writer = SystemRecordWriter(conn)
    outcomes = []
    for fields in records:
        try:
            recorded = writer.record(**fields)
        except EvidenceConflict as exc:
            outcomes.append(Outcome(created=False, conflict=str(exc)))
            continue
        outcomes.append(Outcome(created=recorded.created, content_hash=recorded.content_hash))
    return outcomes


# A finished run's activity row (worker_runs, what the Overview costs sum) from its status.
WORKER_STATUS = {"succeeded": "completed", "failed": "failed", "aborted": "cancelled"}
TRACE_STATUS = {"succeeded": "completed", "failed": "failed", "aborted": "aborted"}


@dataclass(frozen=True)
class RunOutcome:
    """What became of one run: recorded by this call (created), already recorded with the
    same run fields and the same steps (a retry), or refused (``conflict``: why)."""
    created: bool
    run_hash: bytes | None = None
    trace_hash: bytes | None = None
    step_hashes: tuple[bytes, ...] = ()
    conflict: str | None = None


def step_hashes(steps: Sequence[Mapping[str, Any]]) -> list[bytes]:
    """Each step's SPEC §5 content hash (hash format 1), its index being its position."""
    return [hashing.step_content_hash({**step, "step_index": index}) for index, step in enumerate(steps)]


def hold_run_recordings(conn: Connection, tenant_id: str) -> None:
    """Serialises the tenant's run recordings and OTLP staging until the transaction ends (re-entrant)."""
    conn.execute(text("SELECT pg_advisory_xact_lock(hashtextextended('aos_ingest_runs:' || :t, 0))"),
                 {"t": tenant_id})


def record_runs(conn: Connection, tenant_id: str, runs: Sequence[tuple[Mapping[str, Any], Sequence[Mapping[str, Any]]]]
                ) -> list[RunOutcome]:
    """Records each finished run (LlmRunRecordWriter.record's fields, TraceRecorder.add_step's
    step fields) in a savepoint of its own: a refused run leaves nothing and the others stand.

    The tenant's run recordings are serialised (a transaction-scoped advisory lock): each run
    adds to the tenant's cost rollup rows (worker_runs' per-statement trigger, 0005), and two
    batches adding to them statement by statement deadlocked under concurrent exports."""
    hold_run_recordings(conn, tenant_id)
    outcomes = []
    for run, steps in runs:
        try:
            with conn.begin_nested():
                outcomes.append(_record_run(conn, tenant_id, run, steps))
        except EvidenceConflict as exc:
            outcomes.append(RunOutcome(created=False, conflict=str(exc)))
    return outcomes


def _record_run(conn: Connection, tenant_id: str, run: Mapping[str, Any],
                steps: Sequence[Mapping[str, Any]]) -> RunOutcome:
    # The run record first: its unique (tenant, run_id) index makes a concurrent second
    # writer of the same run wait for the first, then find it.
    recorded = LlmRunRecordWriter(conn).record(tenant_id=tenant_id, **run)
    trace_id = run["trace_id"]
    traces = TraceRecorder(conn)
    if not recorded.created:
        # A retry: its steps hashed as stored (v2 steps with their stored salts, docs/ERASURE.md).
        hashes = traces.stored_step_hashes(tenant_id=tenant_id, trace_id=trace_id, steps=steps)
        trace_hash = hashing.trace_content_hash(hashes)
        stored = conn.execute(text("SELECT content_hash FROM aos_traces WHERE tenant_id = :t AND trace_id = :id"),
                              {"t": tenant_id, "id": trace_id}).first()
        if stored is None or stored.content_hash is None or bytes(stored.content_hash) != trace_hash:
            raise EvidenceConflict(f"run {run['run_id']!r}: already recorded with other steps")
        return RunOutcome(False, recorded.content_hash, trace_hash, tuple(hashes))
    taken = conn.execute(text(
        "SELECT (SELECT count(*) FROM aos_traces WHERE tenant_id = :t AND trace_id = :trace) AS traces, "
        "(SELECT count(*) FROM worker_runs WHERE tenant_id = :t AND id = :run) AS runs"),
        {"t": tenant_id, "trace": trace_id, "run": run["run_id"]}).one()
    if taken.traces:
        raise EvidenceConflict(f"trace {trace_id!r}: already recorded for another run")
    if taken.runs:
        raise EvidenceConflict(f"run {run['run_id']!r}: its id is taken by an activity record")
    SourceWriter(conn).worker_run(
        run_id=run["run_id"], tenant_id=tenant_id, status=WORKER_STATUS[run["execution_status"]],
        created_at=run["started_at"], project_id=run.get("project_id"), agent_id=run.get("agent_id"),
        provider=run["provider"], model=run["model"], cost_cents=run["cost_cents"],
        input_tokens=run["input_tokens"], output_tokens=run["output_tokens"], started_at=run["started_at"],
        completed_at=run["completed_at"])
    traces.create_trace(tenant_id=tenant_id, run_id=run["run_id"], trace_id=trace_id, agent_id=run.get("agent_id"),
                        started_at=run["started_at"])
    # One statement for the new trace's steps (add_step takes three round trips a step); the
    # hashes are the writer's: a v2 step's depend on the salts it drew.
    hashes = traces.add_new_steps(tenant_id=tenant_id, trace_id=trace_id, steps=steps)
    trace_hash = hashing.trace_content_hash(hashes)
    sealed = traces.complete_trace(trace_id=trace_id, status=TRACE_STATUS[run["execution_status"]],
                                   completed_at=run["completed_at"], termination_reason=run.get("termination_reason"))
    assert sealed == trace_hash  # the same steps, hashed by the same function
    return RunOutcome(True, recorded.content_hash, trace_hash, tuple(hashes))


def erase_subject(conn: Connection, tenant_id: str, subject_id: str, actor_type: str, actor_id: str,
                  reason: str) -> erasure.ErasureResult:
    """The subject's erasure and its two audit entries (or the refused request's one)."""
    return erasure.erase_subject(conn, tenant_id=tenant_id, subject_id=subject_id, actor_type=actor_type,
                                 actor_id=actor_id, reason=reason)


# OTLP trace stitching (migration 0024, docs/INGEST.md): the spans of a trace whose run is not sealed yet.

@dataclass(frozen=True)
class StagedSpan:
    span: bytes       # opentelemetry.proto.trace.v1.Span
    resource: bytes   # opentelemetry.proto.resource.v1.Resource
    received_at: Any


def stage_spans(conn: Connection, tenant_id: str, otel_trace_id: str,
                spans: Sequence[tuple[str, bytes, bytes]], received_at: Any) -> None:
    """Keeps (span id, span, resource) of the trace; a span id already kept stays as it was (a retry)."""
    conn.execute(text(
        "INSERT INTO otlp_staged_spans (tenant_id, otel_trace_id, span_id, span, resource, received_at) "
        "VALUES (:t, :trace, :span_id, :span, :resource, :at) ON CONFLICT DO NOTHING"),
        [{"t": tenant_id, "trace": otel_trace_id, "span_id": span_id, "span": span, "resource": resource,
          "at": received_at} for span_id, span, resource in spans])


def staged_spans(conn: Connection, tenant_id: str, otel_trace_ids: Sequence[str]
                 ) -> dict[str, dict[str, StagedSpan]]:
    """The kept spans of each of the traces that has any: {trace: {span id: span}} (one statement)."""
    rows = conn.execute(text(
        "SELECT otel_trace_id, span_id, span, resource, received_at FROM otlp_staged_spans "
        "WHERE tenant_id = :t AND otel_trace_id = ANY(:traces)"), {"t": tenant_id, "traces": list(otel_trace_ids)})
    kept: dict[str, dict[str, StagedSpan]] = {}
    for r in rows:
        kept.setdefault(r.otel_trace_id, {})[r.span_id] = StagedSpan(bytes(r.span), bytes(r.resource), r.received_at)
    return kept


def unstage(conn: Connection, tenant_id: str, otel_trace_id: str) -> None:
    """Drops the trace's kept spans (in the transaction that sealed them into its run)."""
    conn.execute(text("DELETE FROM otlp_staged_spans WHERE tenant_id = :t AND otel_trace_id = :trace"),
                 {"t": tenant_id, "trace": otel_trace_id})


def sealed_steps(conn: Connection, tenant_id: str, trace_ids: Sequence[str]
                 ) -> dict[str, dict[str, tuple[int, bytes]]]:
    """Of the traces recorded among ``trace_ids``: {trace: {OTLP span id: (step index, content hash)}}."""
    rows = conn.execute(text(
        "SELECT t.trace_id, s.metadata ->> 'span_id' AS span_id, s.step_index, s.content_hash FROM aos_traces t "
        "LEFT JOIN aos_trace_steps s ON s.tenant_id = t.tenant_id AND s.trace_id = t.trace_id "
        "WHERE t.tenant_id = :t AND t.trace_id = ANY(:traces)"), {"t": tenant_id, "traces": list(trace_ids)})
    sealed: dict[str, dict[str, tuple[int, bytes]]] = {}
    for r in rows:
        steps = sealed.setdefault(r.trace_id, {})
        if r.span_id is not None:
            steps[r.span_id] = (r.step_index, bytes(r.content_hash))
    return sealed


def quiet_traces(conn: Connection, before: Any, limit: int) -> list[tuple[str, str]]:
    """(tenant, OTLP trace id) of the kept traces whose last span came before ``before``, any tenant."""
    rows = conn.execute(text("SELECT tenant_id, otel_trace_id FROM aos_otlp_quiet_traces(:before, :limit)"),
                        {"before": before, "limit": limit})
    return [(r.tenant_id, r.otel_trace_id) for r in rows]
