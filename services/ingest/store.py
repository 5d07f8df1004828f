"""The Ingest service's writes: each batch in the one transaction ``Database.run`` opens.

The rows and hashes come from the recording library's writers (aos_recording.writers,
sources), so the suite's own tools and the Ingest API write evidence the same way. The SQL
here is what the Ingest API needs beyond them: the look-ups a retry needs, the multi-row
statements that write many runs at once (``record_runs``: the writers' rows, one statement per
table), and the OTLP spans kept until their trace is whole. Each function takes the batch's
valid items, in request order, and answers one outcome per item.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

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


def record_runs(conn: Connection, tenant_id: str, runs: Sequence[tuple[Mapping[str, Any], Sequence[Mapping[str, Any]]]],
                *, held: bool = False) -> list[RunOutcome]:
    """Records each finished run (LlmRunRecordWriter.record's fields, TraceRecorder.add_step's
    step fields): a refused run leaves nothing and the others stand.

    Set-based (issue #21): one look-up for the whole batch, then one multi-row statement per
    table for all its new runs (run records, activity rows, traces, steps, the seals) — about
    eight round trips for an Export of a hundred runs instead of ten a run. The rows, their
    content hashes and the triggers that fire are those of ``_record_run`` (the one-run-at-a-
    time path): same writers' hashing, same tables, same order of inserts. Whatever the batch
    cannot settle from its look-up (a run or trace id twice in the batch, a row a concurrent
    writer added after the look-up) goes through ``_record_run``, one savepoint each.

    The tenant's run recordings are serialised (a transaction-scoped advisory lock): each run
    adds to the tenant's cost rollup rows (worker_runs' per-statement trigger, 0005), and two
    batches adding to them statement by statement deadlocked under concurrent exports.
    ``held``: the caller holds that lock already in this transaction (a round trip less)."""
    if not held:
        hold_run_recordings(conn, tenant_id)
    prepared = [_Prepared.of(tenant_id, run, steps) for run, steps in runs]
    outcomes: list[RunOutcome | None] = [None] * len(prepared)
    # Ids seen twice: the later ones after the batch, one by one (a retry of the first, or its conflict).
    seen_runs: set[str] = set()
    seen_traces: set[str] = set()
    later: list[int] = []
    first: list[int] = []
    for i, p in enumerate(prepared):
        # A run with a step in hash format 2 (a data subject, docs/ERASURE.md) goes one by one too:
        # its step hashes depend on salts (fresh, or a retry's stored ones), never known beforehand.
        if p.run["run_id"] in seen_runs or p.trace_id in seen_traces or p.erasable:
            later.append(i)
            seen_runs.add(p.run["run_id"])
            seen_traces.add(p.trace_id)
        else:
            first.append(i)
            seen_runs.add(p.run["run_id"])
            seen_traces.add(p.trace_id)
    new = _settle_known(conn, tenant_id, prepared, first, outcomes)
    if new:
        try:
            with conn.begin_nested():
                _insert_new(conn, tenant_id, [prepared[i] for i in new])
        except (_Raced, IntegrityError):
            later = sorted([*new, *later])  # someone else wrote one of them meanwhile: one by one, exactly
        else:
            for i in new:
                outcomes[i] = prepared[i].outcome(created=True)
    for i in later:
        run, steps = runs[i]
        try:
            with conn.begin_nested():
                outcomes[i] = _record_run(conn, tenant_id, run, steps)
        except EvidenceConflict as exc:
            outcomes[i] = RunOutcome(created=False, conflict=str(exc))
    assert all(o is not None for o in outcomes)
    return [o for o in outcomes if o is not None]


class _Raced(Exception):
    """A multi-row write found a row its look-up had not (a writer outside the tenant's run lock)."""


@dataclass(frozen=True)
class _Prepared:
    """One run's rows as ``_record_run`` writes them, hashed once."""
    run: Mapping[str, Any]
    steps: Sequence[Mapping[str, Any]]
    record: dict[str, Any]        # the llm_run_records row (LlmRunRecordWriter.record's)
    content_hash: bytes
    step_hashes: list[bytes]
    trace_hash: bytes

    @property
    def trace_id(self) -> str:
        return str(self.run["trace_id"])

    @property
    def erasable(self) -> bool:
        return any(step.get("data_subject") is not None for step in self.steps)

    @classmethod
    def of(cls, tenant_id: str, run: Mapping[str, Any], steps: Sequence[Mapping[str, Any]]) -> _Prepared:
        record = LlmRunRecordWriter.row(tenant_id=tenant_id, **run)
        hashes = step_hashes(steps)
        return cls(run, steps, record, hashing.llm_run_content_hash(record), hashes,
                   hashing.trace_content_hash(hashes))

    def outcome(self, *, created: bool) -> RunOutcome:
        return RunOutcome(created, self.content_hash, self.trace_hash, tuple(self.step_hashes))


def _settle_known(conn: Connection, tenant_id: str, prepared: Sequence[_Prepared], indices: Sequence[int],
                  outcomes: list[RunOutcome | None]) -> list[int]:
    """Answers the runs the look-up settles (a retry, or a conflict with what is recorded) in
    ``outcomes``; returns the indices of the new runs to insert. One statement."""
    if not indices:
        return []
    rows = conn.execute(text(
        "SELECT 'run' AS kind, run_id AS key, content_hash FROM llm_run_records "
        "WHERE tenant_id = :t AND run_id = ANY(CAST(:runs AS text[])) "
        "UNION ALL SELECT 'trace', trace_id, content_hash FROM aos_traces "
        "WHERE tenant_id = :t AND trace_id = ANY(CAST(:traces AS text[])) "
        "UNION ALL SELECT 'activity', id, NULL FROM worker_runs "
        "WHERE tenant_id = :t AND id = ANY(CAST(:runs AS text[]))"),
        {"t": tenant_id, "runs": [prepared[i].run["run_id"] for i in indices],
         "traces": [prepared[i].trace_id for i in indices]})
    found: dict[tuple[str, str], bytes | None] = {
        (r.kind, r.key): None if r.content_hash is None else bytes(r.content_hash) for r in rows}
    new = []
    for i in indices:
        p = prepared[i]
        run_id = p.run["run_id"]
        if ("run", run_id) in found:
            # The messages _record_run's writers give (LlmRunRecordWriter.record, then the trace check).
            if found["run", run_id] != p.content_hash:
                outcomes[i] = RunOutcome(created=False, conflict=_run_conflict(tenant_id, run_id))
            elif found.get(("trace", p.trace_id)) != p.trace_hash:
                outcomes[i] = RunOutcome(created=False,
                                         conflict=f"run {run_id!r}: already recorded with other steps")
            else:
                outcomes[i] = p.outcome(created=False)
        elif ("trace", p.trace_id) in found:
            outcomes[i] = RunOutcome(created=False, conflict=f"trace {p.trace_id!r}: already recorded for another run")
        elif ("activity", run_id) in found:
            outcomes[i] = RunOutcome(created=False,
                                     conflict=f"run {run_id!r}: its id is taken by an activity record")
        else:
            new.append(i)
    return new


def _run_conflict(tenant_id: str, run_id: str) -> str:
    return str(LlmRunRecordWriter.conflict(tenant_id, run_id))


def _insert_new(conn: Connection, tenant_id: str, runs: Sequence[_Prepared]) -> None:
    """The new runs' rows, one statement per table, in ``_record_run``'s order: run records,
    activity rows (their rollup trigger fires once for the statement), traces created running,
    their steps (the step trigger checks each against its running trace), then the seals.
    Raises _Raced when a statement writes fewer rows than it was given."""
    expect(conn.execute(_RUNS_INSERT_MANY, {"rows": _json_rows(
        [{**p.record, "content_hash": p.content_hash} for p in runs], _RUN_COLUMNS)}), len(runs))
    activity = [{"id": p.run["run_id"], "status": WORKER_STATUS[p.run["execution_status"]],
                 "created_at": p.run["started_at"], "project_id": p.run.get("project_id"),
                 "agent_id": p.run.get("agent_id"), "provider": p.run["provider"], "model": p.run["model"],
                 "cost_cents": p.run["cost_cents"], "input_tokens": p.run["input_tokens"],
                 "output_tokens": p.run["output_tokens"], "started_at": p.run["started_at"],
                 "completed_at": p.run["completed_at"]} for p in runs]
    expect(conn.execute(_ACTIVITY_INSERT_MANY, {"t": tenant_id, "rows": _json_rows(activity)}), len(runs))
    traces = [{"trace_id": p.trace_id, "run_id": p.run["run_id"], "agent_id": p.run.get("agent_id"),
               "started_at": p.run["started_at"]} for p in runs]
    expect(conn.execute(_TRACES_INSERT_MANY, {"t": tenant_id, "rows": _json_rows(traces)}), len(runs))
    steps = [TraceRecorder.step_row(step, index, content_hash) | {"trace_id": p.trace_id}
             for p in runs for index, (step, content_hash) in enumerate(zip(p.steps, p.step_hashes, strict=True))]
    if steps:
        expect(conn.execute(_STEPS_INSERT_MANY, {"t": tenant_id, "steps": _documents(steps)}), len(steps))
    seals = [{"trace_id": p.trace_id, "status": TRACE_STATUS[p.run["execution_status"]],
              "completed_at": p.run["completed_at"], "reason": p.run.get("termination_reason"),
              "n": len(p.steps), "tokens": sum(s.get("tokens", 0) for s in p.steps),
              "cost": sum(s.get("cost_cents", 0) for s in p.steps),
              "duration": sum(s.get("duration_ms", 0) for s in p.steps), "hash": p.trace_hash} for p in runs]
    expect(conn.execute(_SEAL_MANY, {"t": tenant_id, "rows": _json_rows(seals)}), len(runs))


def expect(result: Any, rows: int) -> None:
    if result.rowcount != rows:
        raise _Raced(f"{result.rowcount} of {rows} rows written")


def _scalar(value: Any) -> str:
    """orjson's ``default`` for the statements' JSON rows: a timestamp as its ISO text (psycopg's
    text form of a datetime parameter, which the column's input reads), a hash as hex (decoded
    in the statement)."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError(f"{type(value).__name__} is not a statement row's scalar")


def _dumps(rows: Any, default: Callable[[Any], Any] | None = None) -> str:
    """One JSON text for a statement's rows (issue #21: bound arrays were psycopg adapting every
    value in Python, a tenth of an Export's CPU). orjson where it can write it; jsonb stores the
    values it parses, not the text, so orjson's and json's texts of one value are stored the
    same (tests/db/test_ingest_record_runs.py reads every column back as text). Callers refuse
    non-finite floats (ingest._plain, otlp._json); an integer past 64 bits (orjson refuses it)
    goes through json, as before."""
    try:
        return orjson.dumps(rows, default=default, option=orjson.OPT_PASSTHROUGH_DATETIME).decode()
    except orjson.JSONEncodeError:
        return json.dumps(rows, default=default)  # raises as before for what JSON cannot hold


def _json_rows(rows: Sequence[Mapping[str, Any]], names: Sequence[str] | None = None) -> str:
    """The rows as one JSON array (the run-level statements' one parameter, _recordset)."""
    return _dumps(rows if names is None else [{name: row.get(name) for name in names} for row in rows], _scalar)


def _documents(steps: Sequence[Mapping[str, Any]]) -> str:
    """The steps' rows as one JSON array (_STEPS_INSERT_MANY's one parameter): psycopg escapes
    each element of a text array parameter with a regular expression, quote by quote, which
    was a third of an Export's CPU in the service with the steps' JSON columns as text arrays
    (issue #21). The jsonb columns are parsed by the same jsonb input as the JSON text
    ``writers._json`` makes, so they are stored the same; a null one is left out (SQL NULL, as
    the one-by-one path stores it); the timestamp goes as its ISO text (psycopg's text form of
    it), the content hash as hex."""
    rows = []
    for step in steps:
        row = {name: step[name] for name in _STEP_SCALARS}
        row["timestamp"] = step["timestamp"].isoformat()
        row["content_hash"] = step["content_hash"].hex()
        for key, name in _DOCUMENT_KEYS:
            if (value := step.get(name)) is not None:
                row[key] = hashing._plain(value)
        rows.append(row)
    return _dumps(rows)


_STEP_SCALARS = ("trace_id", "id", "step_index", "step_type", "level", "source", "tokens", "cost_cents",
                 "duration_ms")
_DOCUMENT_KEYS = (("i", "input_data"), ("o", "output_data"), ("m", "metadata"))


def _recordset(names: Sequence[str], types: Sequence[str]) -> str:
    """The rows of the JSON array parameter :rows, typed by the columns' input functions (a
    bytea goes as hex text: decode it), in the array's order (ord)."""
    columns = ", ".join(f"{n} {'text' if t == 'bytea' else t}" for n, t in zip(names, types, strict=True))
    return (f"ROWS FROM (jsonb_to_recordset(CAST(:rows AS jsonb)) AS ({columns})) "
            f"WITH ORDINALITY AS u({', '.join(names)}, ord)")


def _hex(name: str) -> str:
    return f"decode(u.{name}, 'hex')"


_RUN_COLUMNS = ("id", "tenant_id", "run_id", "trace_id", "agent_id", "project_id", "provider", "model",
                "execution_status", "executor_type", "outcome", "termination_reason", "input_tokens",
                "output_tokens", "cost_cents", "source", "started_at", "completed_at", "created_at", "content_hash")
_RUN_TYPES = ("text", "text", "text", "text", "text", "text", "text", "text", "text", "text", "text", "text",
              "bigint", "bigint", "bigint", "text", "timestamptz", "timestamptz", "timestamptz", "bytea")
# ON CONFLICT DO NOTHING as LlmRunRecordWriter.record's: a row the look-up missed shows as a short count.
_RUNS_INSERT_MANY = text(
    f"INSERT INTO llm_run_records ({', '.join(_RUN_COLUMNS)}, is_synthetic, synthetic_scenario_id) "
    f"SELECT {', '.join('u.' + c for c in _RUN_COLUMNS[:-1])}, {_hex('content_hash')}, false, NULL "
    f"FROM {_recordset(_RUN_COLUMNS, _RUN_TYPES)} "
    "ORDER BY u.ord ON CONFLICT DO NOTHING")
_ACTIVITY_COLUMNS = ("id", "project_id", "agent_id", "provider", "model", "status", "cost_cents", "input_tokens",
                     "output_tokens", "created_at", "started_at", "completed_at")
_ACTIVITY_TYPES = ("text", "text", "text", "text", "text", "text", "bigint", "bigint", "bigint", "timestamptz",
                   "timestamptz", "timestamptz")
_ACTIVITY_INSERT_MANY = text(
    f"INSERT INTO worker_runs (tenant_id, {', '.join(_ACTIVITY_COLUMNS)}, is_synthetic, synthetic_scenario_id) "
    f"SELECT :t, {', '.join('u.' + c for c in _ACTIVITY_COLUMNS)}, false, NULL "
    f"FROM {_recordset(_ACTIVITY_COLUMNS, _ACTIVITY_TYPES)} ORDER BY u.ord")
_TRACE_COLUMNS = ("trace_id", "run_id", "agent_id", "started_at")
_TRACES_INSERT_MANY = text(
    "INSERT INTO aos_traces (trace_id, tenant_id, run_id, agent_id, started_at, policy_snapshot_id, "
    "policy_snapshot, is_synthetic, synthetic_scenario_id) "
    f"SELECT u.trace_id, :t, u.run_id, u.agent_id, u.started_at, NULL, NULL, false, NULL "
    f"FROM {_recordset(_TRACE_COLUMNS, ('text', 'text', 'text', 'timestamptz'))} ORDER BY u.ord "
    "ON CONFLICT (tenant_id, trace_id) DO NOTHING")
_STEPS_INSERT_MANY = text(
    "INSERT INTO aos_trace_steps (id, trace_id, tenant_id, step_index, step_type, level, source, \"timestamp\", "
    "tokens, cost_cents, duration_ms, input_data, output_data, metadata, content_hash) "
    "SELECT s ->> 'id', s ->> 'trace_id', :t, CAST(s ->> 'step_index' AS int), s ->> 'step_type', s ->> 'level', "
    "s ->> 'source', CAST(s ->> 'timestamp' AS timestamptz), CAST(s ->> 'tokens' AS bigint), "
    "CAST(s ->> 'cost_cents' AS bigint), CAST(s ->> 'duration_ms' AS bigint), s -> 'i', s -> 'o', s -> 'm', "
    "decode(s ->> 'content_hash', 'hex') "
    "FROM jsonb_array_elements(CAST(:steps AS jsonb)) WITH ORDINALITY AS d(s, ord) ORDER BY d.ord")
# TraceRecorder.complete_trace's UPDATE for many traces; the totals are the sums of the steps just written.
_SEAL_COLUMNS = ("trace_id", "status", "completed_at", "reason", "n", "tokens", "cost", "duration", "hash")
_SEAL_MANY = text(
    "UPDATE aos_traces t SET status = u.status, completed_at = u.completed_at, termination_reason = u.reason, "
    "step_count = u.n, total_tokens = u.tokens, total_cost_cents = u.cost, total_duration_ms = u.duration, "
    "content_hash = decode(u.hash, 'hex') FROM "
    + _recordset(_SEAL_COLUMNS, ("text", "text", "timestamptz", "text", "int", "bigint", "bigint", "bigint", "bytea"))
    + " WHERE t.tenant_id = :t AND t.trace_id = u.trace_id AND t.status = 'running'")


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
    span: bytes       # opentelemetry.proto.trace.v1.Span (of a span naming a subject: without its content)
    resource: bytes   # opentelemetry.proto.resource.v1.Resource
    received_at: Any
    content: bytes | None = None     # the span as it came, while its subject is not erased (0028)
    erasure_id: str | None = None    # the erasure that took its content: its step is born ERASED


@dataclass(frozen=True)
class ToStage:
    """One span to keep: ``span`` without its content when it names ``subject_id`` (then
    ``content`` is the span as it came: an erasure of the subject deletes it, docs/ERASURE.md §3b)."""
    trace_id: str
    span_id: str
    span: bytes
    resource: bytes
    subject_id: str | None = None
    content: bytes | None = None


def stage_spans(conn: Connection, tenant_id: str, spans: Sequence[ToStage], received_at: Any) -> None:
    """Keeps the spans of any traces, in one statement; a span id already kept stays as it was
    (a retry; one whose content an erasure took stays erased)."""
    conn.execute(text(
        "INSERT INTO otlp_staged_spans (tenant_id, otel_trace_id, span_id, span, resource, subject_id, content, "
        "received_at) SELECT :t, u.trace, u.span_id, u.span, u.resource, u.subject_id, u.content, :at "
        "FROM unnest(CAST(:traces AS text[]), CAST(:span_ids AS text[]), CAST(:spans AS bytea[]), "
        "CAST(:resources AS bytea[]), CAST(:subjects AS text[]), CAST(:contents AS bytea[])) "
        "AS u(trace, span_id, span, resource, subject_id, content) ON CONFLICT DO NOTHING"),
        {"t": tenant_id, "at": received_at, "traces": [s.trace_id for s in spans],
         "span_ids": [s.span_id for s in spans], "spans": [s.span for s in spans],
         "resources": [s.resource for s in spans], "subjects": [s.subject_id for s in spans],
         "contents": [s.content for s in spans]})


def staged_spans(conn: Connection, tenant_id: str, otel_trace_ids: Sequence[str]
                 ) -> dict[str, dict[str, StagedSpan]]:
    """The kept spans of each of the traces that has any: {trace: {span id: span}} (one statement)."""
    rows = conn.execute(text(
        "SELECT otel_trace_id, span_id, span, resource, received_at, content, erasure_id FROM otlp_staged_spans "
        "WHERE tenant_id = :t AND otel_trace_id = ANY(:traces)"), {"t": tenant_id, "traces": list(otel_trace_ids)})
    kept: dict[str, dict[str, StagedSpan]] = {}
    for r in rows:
        kept.setdefault(r.otel_trace_id, {})[r.span_id] = StagedSpan(
            bytes(r.span), bytes(r.resource), r.received_at, None if r.content is None else bytes(r.content),
            r.erasure_id)
    return kept


def erase_sealed_spans(conn: Connection, otel_trace_ids: Sequence[str]) -> int:
    """After the traces' runs were recorded and before their kept spans are dropped: the payloads
    of the steps made of spans an erasure reached while kept are erased (tombstones with that
    erasure), in the seal's transaction (aos_erase_sealed_spans, migration 0028). How many fields."""
    return sum(int(conn.execute(text("SELECT aos_erase_sealed_spans(:trace)"), {"trace": trace}).scalar_one())
               for trace in otel_trace_ids)


def unstage(conn: Connection, tenant_id: str, otel_trace_ids: Sequence[str]) -> None:
    """Drops the traces' kept spans (in the transaction that sealed them into their runs)."""
    conn.execute(text("DELETE FROM otlp_staged_spans WHERE tenant_id = :t AND otel_trace_id = ANY(:traces)"),
                 {"t": tenant_id, "traces": list(otel_trace_ids)})


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
