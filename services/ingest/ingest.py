"""IngestService: validates each batch, writes it in one transaction, answers per item.

The tenant and the producer come from the caller's verified token (aos_runtime.auth),
never from the payload; the server computes the content hashes (SPEC §5, through the
recording library's writers) and the database assigns the chains. A whole-request
fault (no items, too many, too large) is INVALID_ARGUMENT; a fault of one item makes
that item INVALID and the others are still written.
"""
from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import grpc
from google.protobuf import struct_pb2

from aos.ingest.v1 import ingest_service_pb2 as pb, ingest_service_pb2_grpc as pb_grpc
from aos_recording import hashing
from aos_recording.writers import AuditLedgerWriter
from aos_runtime import auth, errors, faults
from aos_runtime.server import ServiceContext
from aos_runtime.validation import RESOURCE_ID, Request
from services.ingest import store

log = logging.getLogger(__name__)
DESCRIPTOR = pb.DESCRIPTOR.services_by_name["IngestService"]
MAX_ITEMS = 1000
MAX_REQUEST_BYTES = 4 * 1024 * 1024
MAX_FUTURE = timedelta(minutes=5)   # how far ahead of this server's clock an occurred_at may be
MAX_NAME = 256                      # entity ids, components, correlation/run/environment ids
MAX_TEXT = 4096                     # action reasons, summaries
MAX_SAFE_INTEGER = 2 ** 53 - 1      # the largest integer an IEEE double, hence RFC 8785, holds exactly
# A system record's cause when the producer names none: what its token says it is.
DEFAULT_CAUSE = {"SYSTEM": "SYSTEM", "AGENT": "AUTOMATION"}

_EVENT = pb.AuditEvent.DESCRIPTOR.fields_by_name
_RECORD = pb.SystemRecordInput.DESCRIPTOR.fields_by_name
_RUN = pb.RunInput.DESCRIPTOR.fields_by_name
_STEP = pb.StepInput.DESCRIPTOR.fields_by_name
_STATUS = {True: pb.ITEM_STATUS_CREATED, False: pb.ITEM_STATUS_ALREADY_PRESENT}


def _triage(checked: list[tuple[Any, tuple[dict[str, Any], Any]]]
            ) -> tuple[list[Any], list[tuple[Any, dict[str, Any]]]]:
    """Each item's result in request order, and the (result, fields) of the valid ones to
    write; an item with problems is answered INVALID here and never reaches the database."""
    results, valid = [], []
    for result, (fields, problems) in checked:
        if problems:
            _invalid(result, problems)
        else:
            valid.append((result, fields))
        results.append(result)
    return results, valid


class IngestService(pb_grpc.IngestServiceServicer):
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx

    async def AppendAuditEvents(self, request: pb.AppendAuditEventsRequest,
                                context: grpc.aio.ServicerContext) -> pb.AppendAuditEventsResponse:
        _check_batch(request, len(request.events), "events")
        who = auth.principal()
        now = datetime.now(timezone.utc)
        results, valid = _triage([(pb.AuditEventResult(event_id=e.event_id), _audit_fields(e, who, now))
                                  for e in request.events])
        if valid:
            outcomes = await self.ctx.db.run(who.tenant_id, store.append_audit_events, who.tenant_id,
                                             [fields for _, fields in valid])
            for (result, _), outcome in zip(valid, outcomes, strict=True):
                if outcome.conflict is not None:
                    _conflict(result, outcome.conflict)
                    continue
                assert outcome.entry is not None
                result.status = _STATUS[outcome.created]
                result.seq = outcome.entry.seq
                result.content_hash = outcome.entry.content_hash.hex()
                result.chain_hash = outcome.entry.chain_hash.hex()
        return pb.AppendAuditEventsResponse(results=results, **_counts(results))

    async def AppendSystemRecords(self, request: pb.AppendSystemRecordsRequest,
                                  context: grpc.aio.ServicerContext) -> pb.AppendSystemRecordsResponse:
        _check_batch(request, len(request.records), "records")
        who = auth.principal()
        now = datetime.now(timezone.utc)
        results, valid = _triage([(pb.SystemRecordResult(record_id=r.record_id), _system_fields(r, who, now))
                                  for r in request.records])
        if valid:
            outcomes = await self.ctx.db.run(who.tenant_id, store.append_system_records,
                                             [fields for _, fields in valid])
            for (result, _), outcome in zip(valid, outcomes, strict=True):
                if outcome.conflict is not None:
                    _conflict(result, outcome.conflict)
                    continue
                assert outcome.content_hash is not None
                result.status = _STATUS[outcome.created]
                result.content_hash = outcome.content_hash.hex()
        return pb.AppendSystemRecordsResponse(results=results, **_counts(results))


    async def RecordRun(self, request: pb.RecordRunRequest,
                        context: grpc.aio.ServicerContext) -> pb.RecordRunResponse:
        if request.ByteSize() > MAX_REQUEST_BYTES:
            raise errors.invalid_argument("run", f"a request may hold at most {MAX_REQUEST_BYTES} bytes (4 MiB) "
                                                 f"(got {request.ByteSize()})")
        if not request.HasField("run"):
            r = Request()
            r.violations.add("run", "is required")
            r.done()
        return await self._record(request.run)

    async def RecordRunStream(self, requests: AsyncIterator[pb.RecordRunStreamRequest],
                              context: grpc.aio.ServicerContext) -> pb.RecordRunStreamResponse:
        """The run assembled from its chunks, then recorded as RecordRun records it. Nothing is
        written before the client ends the stream; a stream broken off (the call cancelled) ends
        here, logged, having written nothing."""
        run: pb.RunInput | None = None
        size = chunks = 0
        last = False
        try:
            async for chunk in requests:
                if last:
                    raise errors.invalid_argument("last", f"no chunk may follow the last (chunk {chunks} did)")
                last = chunk.last
                size += chunk.ByteSize()
                if size > MAX_REQUEST_BYTES:
                    raise errors.invalid_argument(
                        "steps", f"a run may hold at most {MAX_REQUEST_BYTES} bytes (4 MiB) over all its chunks "
                                 f"(chunk {chunks} brings it to {size})")
                if run is None:
                    if not chunk.HasField("run"):
                        raise errors.invalid_argument("run", "is required in the first chunk (the run's fields)")
                    run = chunk.run
                elif chunk.HasField("run"):
                    raise errors.invalid_argument("run", f"only in the first chunk (chunk {chunks} holds one)")
                run.steps.extend(chunk.steps)
                if len(run.steps) > MAX_ITEMS:
                    raise errors.invalid_argument("steps", f"at most {MAX_ITEMS} per run (chunk {chunks} brings "
                                                           f"them to {len(run.steps)})")
                chunks += 1
        except asyncio.CancelledError:
            log.info("RecordRunStream broken off before its end: nothing recorded",
                     extra={"chunks": chunks, "steps": len(run.steps) if run is not None else 0})
            raise
        # The end of a stream its client cancelled reads as the end of the stream (grpc.aio):
        # only the producer's last chunk says the run is whole.
        if not last or context.cancelled():
            log.info("RecordRunStream ended before its last chunk: nothing recorded",
                     extra={"chunks": chunks, "steps": len(run.steps) if run is not None else 0})
            raise errors.invalid_argument("last", f"the stream ended after {chunks} chunk(s) without its last "
                                                  "(`last` set): the run may not be whole, nothing was recorded")
        assert run is not None  # a chunk came: the first holds the run
        # The same answer as RecordRun's: its message and this one number their fields alike.
        return pb.RecordRunStreamResponse.FromString((await self._record(run)).SerializeToString())

    async def _record(self, run: pb.RunInput) -> pb.RecordRunResponse:
        """One run checked and recorded in one transaction (RecordRun, RecordRunStream)."""
        who = auth.principal()
        r = Request()
        checked = run_fields(run, who, datetime.now(timezone.utc), "run.")
        for field, description in checked.problems:
            r.violations.add(field, description)
        r.done()
        outcome, = await self.ctx.db.run(who.tenant_id, store.record_runs, who.tenant_id,
                                         [(checked.run, checked.steps)])
        if outcome.conflict is not None:
            raise faults.EvidenceAlreadyRecorded(outcome.conflict)
        assert outcome.run_hash is not None and outcome.trace_hash is not None
        return pb.RecordRunResponse(run_id=run.run_id, status=_STATUS[outcome.created],
                                    trace_id=checked.run["trace_id"], run_content_hash=outcome.run_hash.hex(),
                                    trace_content_hash=outcome.trace_hash.hex(),
                                    step_content_hashes=[h.hex() for h in outcome.step_hashes])

    async def EraseDataSubject(self, request: pb.EraseDataSubjectRequest,
                               context: grpc.aio.ServicerContext) -> pb.EraseDataSubjectResponse:
        """Erases the subject's v2 payloads in the caller's tenant (docs/ERASURE.md). The
        request entry is committed whether or not a legal hold refuses the erasure."""
        who = auth.principal()
        r = Request()
        _text(r, request.subject_id, "subject_id", MAX_NAME, required=True)
        _text(r, request.reason, "reason", MAX_TEXT, required=True)
        r.done()
        result = await self.ctx.db.run(who.tenant_id, store.erase_subject, who.tenant_id, request.subject_id,
                                       who.actor_type, who.actor_id, request.reason)
        if result.executed_seq is None:
            raise faults.LegalHoldBlocksErasure(result.hold_id or "", result.request_seq)
        return pb.EraseDataSubjectResponse(erasure_id=result.erasure_id, subject_id=result.subject_id,
                                           payloads_erased=result.payloads_erased, request_seq=result.request_seq,
                                           executed_seq=result.executed_seq, exports_erased=result.exports_erased)


# --- the request as a whole ---------------------------------------------------------------
def _check_batch(request: Any, count: int, field: str) -> None:
    """INVALID_ARGUMENT, naming the limit, for an empty, too long or too large batch."""
    r = Request()
    if count == 0:
        r.violations.add(field, "at least one is required")
    elif count > MAX_ITEMS:
        r.violations.add(field, f"at most {MAX_ITEMS} per request (got {count}): split the batch")
    size = request.ByteSize()
    if size > MAX_REQUEST_BYTES:
        r.violations.add(field, f"a request may hold at most {MAX_REQUEST_BYTES} bytes (4 MiB) of items "
                                f"(got {size}): split the batch")
    r.done()


# --- one item -------------------------------------------------------------------------------
def _audit_fields(event: pb.AuditEvent, who: auth.Principal,
                  now: datetime) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """AuditLedgerWriter's fields for the event, with the caller as actor; or its problems."""
    r = Request()
    _producer_id(r, event.event_id, "event_id")
    event_type = _required_enum(r, event.event_type, _EVENT["event_type"], "event_type")
    entity_type = _required_enum(r, event.entity_type, _EVENT["entity_type"], "entity_type")
    _text(r, event.entity_id, "entity_id", MAX_NAME, required=True)
    reason = _text(r, event.action_reason, "action_reason", MAX_TEXT) if event.HasField("action_reason") else None
    correlation = (_text(r, event.correlation_id, "correlation_id", MAX_NAME)
                   if event.HasField("correlation_id") else None)
    occurred = _occurred_at(r, event, now)
    before = _struct(r, event, "before_state")
    after = _struct(r, event, "after_state")
    claimed = event.content_hash.lower()
    if claimed and (len(claimed) != 64 or any(c not in "0123456789abcdef" for c in claimed)):
        r.violations.add("content_hash", "must be a hex SHA-256 (64 hex digits) when set")
    subject = _subject(r, event)
    if subject is not None and claimed:
        r.violations.add("content_hash", "must be empty with data_subject_id: a v2 entry's commitments are salted "
                                         "by the server (docs/ERASURE.md), no producer can compute its hash")
    fields: dict[str, Any] = {"tenant_id": who.tenant_id, "entry_id": event.event_id, "event_type": event_type,
              "entity_type": entity_type, "entity_id": event.entity_id, "actor_type": who.actor_type,
              "actor_id": who.actor_id, "action_reason": reason, "correlation_id": correlation,
              "before_state": before, "after_state": after, "created_at": occurred}
    if subject is not None:
        fields["data_subject"] = subject
    if claimed and not r.violations.items:
        computed = hashing.ledger_content_hash(AuditLedgerWriter.entry(**fields)).hex()
        if computed != claimed:
            r.violations.add("content_hash", f"is not the entry's content hash (SPEC §5): the server computed "
                                              f"{computed}")
    return fields, r.violations.items


def _system_fields(record: pb.SystemRecordInput, who: auth.Principal,
                   now: datetime) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """SystemRecordWriter.record's fields for the record, with the caller as actor; or its problems."""
    r = Request()
    _producer_id(r, record.record_id, "record_id")
    _text(r, record.component, "component", MAX_NAME, required=True)
    event_type = _required_enum(r, record.event_type, _RECORD["event_type"], "event_type")
    severity = _required_enum(r, record.severity, _RECORD["severity"], "severity")
    _text(r, record.summary, "summary", MAX_TEXT, required=True)
    caused_by = r.enum(record.caused_by, _RECORD["caused_by"].enum_type, "caused_by") \
        or DEFAULT_CAUSE.get(who.actor_type, "SYSTEM")
    optional = {name: _text(r, getattr(record, name), name, MAX_NAME) if record.HasField(name) else None
                for name in ("correlation_id", "run_id", "environment_id", "request_id")}
    occurred = _occurred_at(r, record, now)
    details = _struct(r, record, "details")
    fields: dict[str, Any] = {"tenant_id": who.tenant_id, "record_id": record.record_id, "component": record.component,
              "event_type": event_type, "severity": severity, "summary": record.summary, "details": details,
              "caused_by": caused_by, "actor_id": who.actor_id, "created_at": occurred, **optional}
    subject = _subject(r, record)
    if subject is not None:
        fields["data_subject"] = subject
    return fields, r.violations.items


def _subject(r: Request, item: Any, field: str = "data_subject_id") -> str | None:
    """The item's data_subject_id (hash format v2), checked; None when not set."""
    if not item.HasField("data_subject_id"):
        return None
    return _text(r, item.data_subject_id, field, MAX_NAME, required=True)


@dataclass(frozen=True)
class CheckedRun:
    """A RunInput as the store's fields (LlmRunRecordWriter.record's, TraceRecorder.add_step's),
    or its problems as (field path, description)."""
    run: dict[str, Any]
    steps: list[dict[str, Any]]
    problems: list[tuple[str, str]]


def run_fields(run: pb.RunInput, who: auth.Principal, now: datetime, prefix: str = "", *,
               source: str = "ingest") -> CheckedRun:
    """Checks one run and its steps; ``prefix`` leads each violation's field path (``run.``),
    ``source`` is the run record's (how it came in: ``ingest``, ``otlp``).
    Shared by RecordRun and the OTLP receiver, which builds a RunInput from its spans."""
    r = Request()
    _producer_id(r, run.run_id, "run_id")
    trace_id = run.trace_id or run.run_id
    if run.trace_id:
        _producer_id(r, run.trace_id, "trace_id")
    optional = {name: _text(r, getattr(run, name), name, MAX_NAME) if run.HasField(name) else None
                for name in ("agent_id", "project_id")}
    _text(r, run.provider, "provider", MAX_NAME, required=True)
    _text(r, run.model, "model", MAX_NAME, required=True)
    status = _required_enum(r, run.status, _RUN["status"], "status")
    executor = r.enum(run.executor_type, _RUN["executor_type"].enum_type, "executor_type") or "LLM"
    outcome = r.enum(run.outcome, _RUN["outcome"].enum_type, "outcome")
    reason = _text(r, run.termination_reason, "termination_reason", MAX_TEXT) \
        if run.HasField("termination_reason") else None
    for name in ("input_tokens", "output_tokens", "cost_cents"):
        _count(r, getattr(run, name), name)
    if run.currency not in ("", "USD"):
        r.violations.add("currency", "only USD is accepted (the suite's budgets and costs are USD cents)")
    started = _when(r, run, "started_at", now)
    completed = _when(r, run, "completed_at", now)
    if started and completed and completed < started:
        r.violations.add("completed_at", "must not be before started_at")
    if len(run.steps) > MAX_ITEMS:
        r.violations.add("steps", f"at most {MAX_ITEMS} per run (got {len(run.steps)})")
    run_subject = _subject(r, run)
    steps = [_step_fields(r, step, f"steps[{i}].", now, run_subject) for i, step in enumerate(run.steps)]
    fields: dict[str, Any] = {
        "run_id": run.run_id, "trace_id": trace_id, "provider": run.provider, "model": run.model,
        "execution_status": status, "executor_type": executor, "outcome": outcome, "termination_reason": reason,
        "input_tokens": run.input_tokens, "output_tokens": run.output_tokens, "cost_cents": run.cost_cents,
        "source": source, "started_at": started, "completed_at": completed, **optional}
    erasable = [i for i, step in enumerate(steps) if step.get("data_subject") is not None]
    for i in erasable:
        if run.steps[i].content_hash:
            r.violations.add(f"steps[{i}].content_hash", "must be empty with a data subject: a v2 step's commitments "
                                                          "are salted by the server (docs/ERASURE.md)")
    if erasable and run.trace_content_hash:
        r.violations.add("trace_content_hash", "must be empty when a step has a data subject: its v2 steps' "
                                               "commitments are salted by the server (docs/ERASURE.md)")
    # The hashes are the store's to compute (record_runs); here only to check a producer's own.
    claims = bool(run.trace_content_hash) or any(step.content_hash for step in run.steps)
    if claims and not r.violations.items and not erasable:
        hashes = store.step_hashes(steps)
        for i, (step, computed) in enumerate(zip(run.steps, hashes, strict=True)):
            _claimed_hash(r, step.content_hash, computed, f"steps[{i}].content_hash")
        if run.trace_content_hash:
            _claimed_hash(r, run.trace_content_hash, hashing.trace_content_hash(hashes), "trace_content_hash")
    return CheckedRun(fields, steps, [(prefix + f, d) for f, d in r.violations.items])


def _step_fields(r: Request, step: pb.StepInput, path: str, now: datetime,
                 run_subject: str | None = None) -> dict[str, Any]:
    step_type = _required_enum(r, step.step_type, _STEP["step_type"], path + "step_type")
    level = r.enum(step.level, _STEP["level"].enum_type, path + "level") or "info"
    source = _text(r, step.source, path + "source", MAX_NAME) or "agent"
    for name in ("tokens", "cost_cents", "duration_ms"):
        _count(r, getattr(step, name), path + name)
    fields = {"step_type": step_type, "timestamp": _when(r, step, "timestamp", now, path + "timestamp"),
              "input_data": _value(r, step, "input_data", path), "output_data": _value(r, step, "output_data", path),
              "metadata": _struct(r, step, "metadata", path + "metadata"), "level": level, "source": source,
              "tokens": step.tokens, "cost_cents": step.cost_cents, "duration_ms": step.duration_ms}
    # The step's own subject, else the run's: with one the step is written in hash format v2.
    subject = _subject(r, step, path + "data_subject_id")
    if subject is None:
        subject = run_subject
    if subject is not None:
        fields["data_subject"] = subject
    return fields


def _count(r: Request, value: int, field: str) -> None:
    if value < 0:
        r.violations.add(field, "must not be negative")
    elif value > MAX_SAFE_INTEGER:
        r.violations.add(field, f"must be at most {MAX_SAFE_INTEGER}")


def _when(r: Request, message: Any, field: str, now: datetime, name: str | None = None) -> datetime | None:
    name = name or field
    if not message.HasField(field):
        r.violations.add(name, "is required")
        return None
    value = r.timestamp(message, field, name)
    if value is not None and value > now + MAX_FUTURE:
        r.violations.add(name, f"is more than {int(MAX_FUTURE.total_seconds() // 60)} minutes ahead of "
                               "the server's clock")
    return value


def _value(r: Request, message: Any, field: str, path: str) -> Any:
    """A google.protobuf.Value field as plain JSON (None when unset)."""
    if not message.HasField(field):
        return None
    problems: list[str] = []
    plain = _plain(getattr(message, field), problems.append)
    for problem in problems[:1]:
        r.violations.add(path + field, problem)
    return plain


def _claimed_hash(r: Request, claimed: str, computed: bytes, field: str) -> None:
    """A producer's own hash, checked: it must be the server's (SPEC §5)."""
    if not claimed:
        return
    if claimed.lower() != computed.hex():
        r.violations.add(field, f"is not the content hash (SPEC §5): the server computed {computed.hex()}")


def _producer_id(r: Request, value: str, field: str) -> None:
    if not value:
        r.violations.add(field, "is required: the producer's id for the item, which makes a retry idempotent")
    elif not RESOURCE_ID.fullmatch(value):
        r.violations.add(field, "is not a valid id (letters, digits and _.:@- ; at most 200)")


def _required_enum(r: Request, number: int, field_descriptor: Any, field: str) -> str | None:
    if number == 0:
        r.violations.add(field, "is required")
        return None
    return r.enum(number, field_descriptor.enum_type, field)


def _text(r: Request, value: str, field: str, limit: int, *, required: bool = False) -> str:
    if required and not value.strip():
        r.violations.add(field, "is required")
    elif len(value) > limit:
        r.violations.add(field, f"is longer than {limit} characters")
    elif "\x00" in value:  # PostgreSQL text holds no NUL
        r.violations.add(field, "must not contain NUL characters")
    return value


def _occurred_at(r: Request, message: Any, now: datetime) -> datetime | None:
    if not message.HasField("occurred_at"):
        r.violations.add("occurred_at", "is required: when it happened, so that a retry carries the same content")
        return None
    value = r.timestamp(message, "occurred_at")
    if value is not None and value > now + MAX_FUTURE:
        r.violations.add("occurred_at", f"is more than {int(MAX_FUTURE.total_seconds() // 60)} minutes ahead of "
                                        "the server's clock")
    return value


def _struct(r: Request, message: Any, field: str, name: str | None = None) -> dict[str, Any] | None:
    """A Struct field as the JSON object the database stores (None when unset). Whole numbers
    become integers (a Struct holds only doubles; the stored jsonb and the hash then agree)."""
    if not message.HasField(field):
        return None
    problems: list[str] = []
    plain = {key: _plain(value, problems.append, key) for key, value in getattr(message, field).fields.items()}
    for problem in problems[:1]:
        r.violations.add(name or field, problem)
    return plain


def _plain(value: struct_pb2.Value, problem: Callable[[str], None], key: str = "") -> Any:
    """One Struct value as plain JSON; ``problem`` hears of what JSON or jsonb cannot hold."""
    if "\x00" in key:
        problem("holds a key with a NUL character (PostgreSQL jsonb refuses it)")
    kind = value.WhichOneof("kind")
    if kind == "number_value":
        number = value.number_value
        if not math.isfinite(number):
            problem("holds a number that is not finite (JSON has no NaN or Infinity)")
            return None
        if abs(number) > MAX_SAFE_INTEGER:  # RFC 8785 (the content hash's JSON) has no exact form for it
            problem(f"holds a number beyond ±{MAX_SAFE_INTEGER} (2^53 - 1), which JSON numbers do not hold "
                    "exactly; send it as a string")
            return None
        return int(number) if number.is_integer() else number
    if kind == "string_value":
        if "\x00" in value.string_value:
            problem("holds a string with a NUL character (PostgreSQL jsonb refuses it)")
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "struct_value":
        return {k: _plain(v, problem, k) for k, v in value.struct_value.fields.items()}
    if kind == "list_value":
        return [_plain(v, problem) for v in value.list_value.values]
    return None  # null_value, or unset


# --- answers --------------------------------------------------------------------------------
def _invalid(result: Any, problems: list[tuple[str, str]]) -> None:
    result.status = pb.ITEM_STATUS_INVALID
    result.violations.extend(pb.ItemViolation(field=f, description=d) for f, d in problems)
    result.message = "not written: " + "; ".join(f"{f} {d}" for f, d in problems)


def _conflict(result: Any, message: str) -> None:
    result.status = pb.ITEM_STATUS_CONFLICT
    result.message = f"not written: {message} (ALREADY_EXISTS; evidence is never overwritten)"


def _counts(results: list[Any]) -> dict[str, int]:
    statuses = [r.status for r in results]
    return {"created": statuses.count(pb.ITEM_STATUS_CREATED),
            "already_present": statuses.count(pb.ITEM_STATUS_ALREADY_PRESENT),
            "conflicts": statuses.count(pb.ITEM_STATUS_CONFLICT),
            "invalid": statuses.count(pb.ITEM_STATUS_INVALID)}
