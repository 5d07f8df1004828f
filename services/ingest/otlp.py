"""The OTLP trace receiver: ``opentelemetry.proto.collector.trace.v1.TraceService/Export``.

Spans that follow the OpenTelemetry GenAI semantic conventions (they carry
``gen_ai.operation.name``) become finished runs with their traces and steps, written exactly
as RecordRun writes them (``_fast_run`` builds the fields ``ingest.run_fields`` makes of the
run's RunInput; a trace it cannot vouch for goes through that RunInput and check). The
mapping, one table, is docs/INGEST.md:

- the GenAI spans of one OTLP trace of a tenant are one run, ``otel-<trace id>`` (hex), over any
  number of Export requests (trace stitching): spans of a trace whose root span has not arrived
  are kept (``otlp_staged_spans``, committed before the answer) and sealed with the root, or by
  the background sealer once the trace has been quiet for AOS_OTLP_TRACE_QUIET_S; an exporter's
  retry of spans already in the run is accepted, other spans of a sealed trace are refused;
- each span is one step, in start-time order;
- spans without ``gen_ai.operation.name`` are refused: OTLP partial success counts them in
  ``rejected_spans`` with a message (the suite keeps evidence of agent runs, not general
  tracing), as are the spans of a run that is invalid or conflicts with a recorded one.

Costs: the suite has no price list (no model/pricing table exists), so a span's cost is
recorded only when it carries one (``aos.usage.cost_cents``, integer USD cents); tokens are
always recorded.
"""
from __future__ import annotations

import asyncio
import base64
import json
import logging
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import grpc
from google.protobuf import struct_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as otlp, trace_service_pb2_grpc as otlp_grpc
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2
from sqlalchemy.engine import Connection

from aos.evidence.v1 import records_pb2
from aos.ingest.v1 import ingest_service_pb2 as pb
from aos_recording import hashing
from aos_recording.writers import TraceRecorder
from aos_runtime import auth
from aos_runtime.server import ServiceContext
from aos_runtime.validation import by_number
from services.ingest import ingest, store

log = logging.getLogger(__name__)
DESCRIPTOR = otlp.DESCRIPTOR.services_by_name["TraceService"]
MAX_SAFE_INTEGER = 2 ** 53 - 1
MAX_MESSAGES = 5  # distinct refusal reasons named in partial_success.error_message

# gen_ai.operation.name → the step a span becomes (semantic conventions, gen-ai spans).
MODEL_CALLS = frozenset({"chat", "text_completion", "generate_content", "embeddings"})
AGENT_OPERATIONS = frozenset({"invoke_agent", "create_agent", "invoke_workflow"})
TOOL_OPERATIONS = frozenset({"execute_tool"})
COST_ATTRIBUTE = "aos.usage.cost_cents"  # ours: integer USD cents; GenAI semconv defines no cost
# The data subject of a span's step (hash format v2, erasable: docs/ERASURE.md), first found of
# the OpenTelemetry semantic conventions' end-user ids, on the span then on its resource:
# enduser.pseudo.id (the pseudonymous one, preferred: it stays in the ledger as the erasure's
# entity id), enduser.id, and user.id (which semconv 1.27 named enduser.id's replacement).
SUBJECT_ATTRIBUTES = ("enduser.pseudo.id", "enduser.id", "user.id")
# Attributes that carry the content a step's input/output hold (GenAI semconv, and the older
# gen_ai.prompt / gen_ai.completion): a v2 step's metadata leaves them out, else its erased
# content would stay readable in the (unhashed, not erasable) metadata.
LEGACY_CONTENT = ("gen_ai.prompt", "gen_ai.completion")  # also flattened: gen_ai.prompt.0.content …
CONTENT_ATTRIBUTES = frozenset({"gen_ai.input.messages", "gen_ai.output.messages", "gen_ai.system_instructions",
                                "gen_ai.tool.call.arguments", "gen_ai.tool.call.result", *LEGACY_CONTENT})
CONTENT_PREFIXES = tuple(f"{name}." for name in LEGACY_CONTENT)


@dataclass(frozen=True)
class _Span:
    span: trace_pb2.Span
    attributes: dict[str, Any]
    resource: dict[str, Any]
    resource_pb: resource_pb2.Resource

    @property
    def operation(self) -> str:
        return str(self.attributes.get("gen_ai.operation.name", ""))

    def text(self, *names: str) -> str | None:
        for name in names:
            value = self.attributes.get(name)
            if isinstance(value, str) and value:
                return value
        return None

    def subject(self) -> str | None:
        """The span's data subject (SUBJECT_ATTRIBUTES), on the span, else on its resource."""
        for attributes in (self.attributes, self.resource):
            for name in SUBJECT_ATTRIBUTES:
                value = attributes.get(name)
                if isinstance(value, str) and value:
                    return value
        return None

    def count(self, *names: str) -> int:
        """The first of ``names`` that holds a whole number (older conventions' names after the current);
        a span whose count attribute holds anything else never gets here (``_malformed_count``)."""
        for name in names:
            value = _whole(self.attributes.get(name))
            if value is not None:
                return value
        return 0

    @property
    def input_tokens(self) -> int:
        return self.count("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens")

    @property
    def output_tokens(self) -> int:
        return self.count("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens")


# The attributes read as counts: a value of another type would otherwise be left out of the run's
# tokens or cost without a word, so a trace carrying one is refused, naming it.
COUNT_ATTRIBUTES = ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens", "gen_ai.usage.output_tokens",
                    "gen_ai.usage.completion_tokens", COST_ATTRIBUTE)


def _whole(value: Any) -> int | None:
    """``value`` as a whole number: an integer, or a double holding one (some SDKs send numbers as
    doubles); None for anything else (a negative one is the run's check to name)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _malformed_count(spans: list[_Span]) -> str | None:
    """Why the first span holding a count attribute that is not a whole number is refused, or None."""
    for s in spans:
        for name in COUNT_ATTRIBUTES:
            value = s.attributes.get(name)
            if value is not None and _whole(value) is None:
                return f"{name} of span {s.span.span_id.hex()} must be a whole number, got {value!r}"
    return None


class TraceReceiver(otlp_grpc.TraceServiceServicer):
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        settings = ctx.settings
        self.quiet_s = settings.otlp_trace_quiet_s if settings is not None else 30.0
        self._stuck: set[tuple[str, str]] = set()  # quiet traces whose seal was refused (logged once)

    async def Export(self, request: otlp.ExportTraceServiceRequest,
                     context: grpc.aio.ServicerContext) -> otlp.ExportTraceServiceResponse:
        who = auth.principal()
        now = datetime.now(timezone.utc)
        groups, roots, rejected, reasons = _groups(request)
        # A trace's root span came (a non-GenAI one too, which is refused): its kept spans are sealed.
        parts = [_Part(trace_id, [], [], root=True) for trace_id in sorted(roots - groups.keys())]
        for trace_id, spans in sorted(groups.items()):
            malformed = _malformed_count(spans)
            if malformed:
                rejected += len(spans)
                reasons.append(f"trace {trace_id}: {len(spans)} span(s) refused: {malformed}")
                continue
            # The request's part of the trace must make a valid run on its own (its spans' checks).
            checked = _checked_run(trace_id, spans, now)
            if checked.problems:
                rejected += len(spans)
                field, problem = checked.problems[0]
                reasons.append(f"trace {trace_id}: {len(spans)} span(s) refused: {field} {problem}")
                continue
            parts.append(_Part(trace_id, spans, checked.steps, root=trace_id in roots, run=checked.run))
        if parts:
            # One transaction: what is acknowledged (sealed runs and kept spans) is committed.
            refusals = await self.ctx.db.run(who.tenant_id, _settle, who.tenant_id, parts, now)
            for part, refusal in zip(parts, refusals, strict=True):
                if refusal is not None:
                    rejected += len(part.spans)
                    reasons.append(f"trace {part.trace_id}: {len(part.spans)} span(s) refused: {refusal}")
        response = otlp.ExportTraceServiceResponse()
        if rejected:
            response.partial_success.rejected_spans = rejected
            shown = list(dict.fromkeys(reasons))
            more = f" (and {len(shown) - MAX_MESSAGES} more)" if len(shown) > MAX_MESSAGES else ""
            response.partial_success.error_message = "; ".join(shown[:MAX_MESSAGES]) + more
        return response

    async def seal_quiet_traces(self) -> None:
        """The Ingest server's background task: seals the kept traces that have been quiet for
        AOS_OTLP_TRACE_QUIET_S. Cancelled on drain (a seal is one transaction: done or not); the
        kept spans are in the database, so the next start seals them."""
        interval = min(5.0, max(0.05, self.quiet_s / 4))
        while True:
            try:
                await self.seal_quiet(datetime.now(timezone.utc))
            except asyncio.CancelledError:
                raise
            except Exception:  # the database away, say: the spans stay kept; try again
                log.exception("sealing quiet OTLP traces failed")
            await asyncio.sleep(interval)

    async def seal_quiet(self, now: datetime) -> int:
        """Seals every kept trace whose last span came more than the quiet window before ``now``;
        answers how many runs it sealed. A trace whose run is refused (it conflicts with a recorded
        one) stays kept and is logged, once per process."""
        before = now - timedelta(seconds=self.quiet_s)
        sealed = 0
        for tenant_id, trace_id in await self.ctx.db.run(None, store.quiet_traces, before, QUIET_BATCH):
            if (tenant_id, trace_id) in self._stuck:
                continue
            refusal = await self.ctx.db.run(tenant_id, _seal_quiet, tenant_id, trace_id, before, now)
            if refusal == "":
                sealed += 1
            elif refusal is not None:
                self._stuck.add((tenant_id, trace_id))
                log.error("kept OTLP spans cannot be sealed into a run", extra={
                    "tenant_id": tenant_id, "otel_trace_id": trace_id, "reason": refusal})
        return sealed


QUIET_BATCH = 100  # quiet traces sealed per sweep


@dataclass(frozen=True)
class _Part:
    """One trace's GenAI spans in one request, and their steps (checked, in the spans' order)."""
    trace_id: str
    spans: list[_Span]
    steps: list[dict[str, Any]]
    root: bool  # the trace's root span is in the request (then the trace is whole: it ends last)
    run: dict[str, Any] | None = None  # the run of these spans alone (checked), sealed as is when nothing is kept


def run_id(trace_id: str) -> str:
    """The run (and its trace) one OTLP trace becomes."""
    return f"otel-{trace_id}"


def _settle(conn: Connection, tenant_id: str, parts: list[_Part], now: datetime) -> list[str | None]:
    """Each part sealed into its trace's run (its root span is here), kept until it is (no root
    yet), or found in the run already sealed (a retry); None, or why its spans are refused.
    Under the tenant's run-recording lock: a part kept and a seal of the same trace never cross.

    Set-based (issue #21): two look-ups for the whole request, one statement for all the spans
    it keeps, one ``store.record_runs`` for all the runs it seals (a few statements for all of
    them) and one statement dropping the kept spans those runs took. Each part is another trace,
    so none changes another's outcome; a refused run leaves nothing (record_runs)."""
    store.hold_run_recordings(conn, tenant_id)
    sealed = store.sealed_steps(conn, tenant_id, [run_id(part.trace_id) for part in parts])
    kept = store.staged_spans(conn, tenant_id, [part.trace_id for part in parts])
    refusals: list[str | None] = [None] * len(parts)
    erased_kept: set[str] = set()  # traces sealed from kept spans an erasure reached (their steps born ERASED)
    to_keep: list[store.ToStage] = []
    # (part index, run, steps, the trace whose kept spans the run takes, or None)
    to_seal: list[tuple[int, Mapping[str, Any], list[dict[str, Any]], str | None]] = []
    for i, part in enumerate(parts):
        in_run = sealed.get(run_id(part.trace_id))
        kept_spans = kept.get(part.trace_id, {})
        if in_run is not None:
            refusals[i] = _in_sealed(conn, tenant_id, part, in_run)
        elif not part.root:
            new = {s.span.span_id.hex() for s in part.spans} - kept_spans.keys()
            if len(kept_spans) + len(new) > ingest.MAX_ITEMS:
                refusals[i] = (f"a run holds at most {ingest.MAX_ITEMS} spans (steps); this trace would hold "
                               f"{len(kept_spans) + len(new)}")
                continue
            to_keep.extend(_to_stage(part.trace_id, s) for s in part.spans)
        elif not kept_spans:
            if part.run is not None:  # else a root alone (not a GenAI span) of a trace with nothing kept
                # The whole trace in one request (the usual case): the run checked in Export, as is.
                to_seal.append((i, part.run, part.steps, None))
        else:
            checked = _checked_seal(part.trace_id, _merged(kept_spans, part.spans), now)
            if isinstance(checked, str):
                refusals[i] = _kept_refusal(tenant_id, part, checked)
            else:
                to_seal.append((i, checked[0], checked[1], part.trace_id))
                if any(k.erasure_id is not None for k in kept_spans.values()):
                    erased_kept.add(part.trace_id)
    if to_keep:
        store.stage_spans(conn, tenant_id, to_keep, now)
    taken = []
    if to_seal:
        outcomes = store.record_runs(conn, tenant_id, [(run, steps) for _, run, steps, _ in to_seal], held=True)
        for (i, _, _, trace_id), outcome in zip(to_seal, outcomes, strict=True):
            if outcome.conflict is None:
                if trace_id is not None:
                    taken.append(trace_id)
            elif trace_id is not None:
                refusals[i] = _kept_refusal(tenant_id, parts[i], outcome.conflict)
            else:
                refusals[i] = outcome.conflict
    if taken:
        store.erase_sealed_spans(conn, [t for t in taken if t in erased_kept])
        store.unstage(conn, tenant_id, taken)
    return refusals


def _sealed_hash(conn: Connection, tenant_id: str, trace_id: str, index: int, step: Mapping[str, Any]) -> bytes:
    """The content hash ``step`` has if it is the one recorded at ``index`` (a v2 step's with its stored salts)."""
    if step.get("data_subject") is None:
        return hashing.step_content_hash({**step, "step_index": index})
    # stored_step_hashes hashes steps by position: the steps before index are placeholders (v1, not used).
    placeholder = {"step_type": step["step_type"], "timestamp": step["timestamp"]}
    return TraceRecorder(conn).stored_step_hashes(tenant_id=tenant_id, trace_id=trace_id,
                                                  steps=[*([placeholder] * index), step])[index]


def _kept_refusal(tenant_id: str, part: _Part, refusal: str) -> str | None:
    """Why a kept trace's run is refused; when the request brought only its root (not a GenAI
    span), the kept spans, already acknowledged, stay kept: logged, nothing refused (the quiet
    sweep logs them again)."""
    if part.spans:
        return refusal
    log.warning("kept OTLP spans cannot be sealed into a run", extra={
        "tenant_id": tenant_id, "otel_trace_id": part.trace_id, "reason": refusal})
    return None


def _in_sealed(conn: Connection, tenant_id: str, part: _Part, sealed: dict[str, tuple[int, bytes]]) -> str | None:
    """A part of a trace whose run is sealed: accepted when each span is in it with the same
    content (an exporter's retry), else refused — a sealed run takes no more steps (SPEC §5)."""
    for s, step in zip(part.spans, part.steps, strict=True):
        found = sealed.get(s.span.span_id.hex())
        if found is None:
            return (f"run {run_id(part.trace_id)!r} is already sealed without span {s.span.span_id.hex()} "
                    "(a span arriving after its trace's run was sealed cannot be added to it)")
        index, content_hash = found
        if _sealed_hash(conn, tenant_id, run_id(part.trace_id), index, step) != content_hash:
            return f"run {run_id(part.trace_id)!r}: already recorded with other steps"
    return None


def _unkept(kept: Mapping[str, store.StagedSpan], given: list[_Span]) -> list[_Span]:
    """The kept spans not in ``given`` (a span sent again is taken as sent last), each as it came,
    or without its content when an erasure of its subject took that (docs/ERASURE.md §3b)."""
    ids = {s.span.span_id.hex() for s in given}
    out = []
    for span_id, row in kept.items():
        if span_id in ids:
            continue
        span = trace_pb2.Span.FromString(row.content if row.content is not None else row.span)
        resource = resource_pb2.Resource.FromString(row.resource)
        out.append(_Span(span, _attributes(span.attributes), _attributes(resource.attributes), resource))
    return out


def _merged(kept: Mapping[str, store.StagedSpan], given: list[_Span]) -> list[_Span]:
    """All of a trace's spans for its seal: ``given`` taken as sent last, except a span whose kept
    copy an erasure reached: the erasure wins (its content is not brought back by a resend)."""
    given = [s for s in given if getattr(kept.get(s.span.span_id.hex()), "erasure_id", None) is None]
    return [*_unkept(kept, given), *given]


def _to_stage(trace_id: str, s: _Span) -> store.ToStage:
    """A span to keep: one naming a subject is kept without its content beside the span as it came,
    so an erasure can delete the content in SQL and leave what the seal needs (migration 0028)."""
    whole = s.span.SerializeToString()
    subject = s.subject()
    if subject is None:
        return store.ToStage(trace_id, s.span.span_id.hex(), whole, s.resource_pb.SerializeToString())
    bare = trace_pb2.Span()
    bare.CopyFrom(s.span)
    del bare.attributes[:]
    bare.attributes.extend(kv for kv in s.span.attributes if not _is_content(kv.key))
    del bare.events[:]  # GenAI content events (gen_ai.*.message) and any other event: never read by a step
    return store.ToStage(trace_id, s.span.span_id.hex(), bare.SerializeToString(), s.resource_pb.SerializeToString(),
                         subject, whole)


def _is_content(name: str) -> bool:
    return name in CONTENT_ATTRIBUTES or name.startswith(CONTENT_PREFIXES)


def _checked_seal(trace_id: str, spans: list[_Span], now: datetime
                  ) -> str | tuple[dict[str, Any], list[dict[str, Any]]]:
    """The run (fields, steps) all the trace's spans make, checked; or why it cannot be."""
    spans = sorted(spans, key=lambda s: (s.span.start_time_unix_nano, s.span.span_id))
    malformed = _malformed_count(spans)
    if malformed:
        return malformed
    checked = _checked_run(trace_id, spans, now)
    if checked.problems:
        field, problem = checked.problems[0]
        return f"{field} {problem}"
    return checked.run, checked.steps


def _seal(conn: Connection, tenant_id: str, trace_id: str, spans: list[_Span], now: datetime, *,
          erased: bool = False) -> str | None:
    """Records the run of all the trace's spans and drops its kept ones; None, or why it cannot.
    ``erased``: some kept span was reached by an erasure (its step's payloads are erased at once)."""
    checked = _checked_seal(trace_id, spans, now)
    if isinstance(checked, str):
        return checked
    outcome, = store.record_runs(conn, tenant_id, [checked])
    if outcome.conflict is not None:
        return outcome.conflict
    if erased:
        store.erase_sealed_spans(conn, [trace_id])
    store.unstage(conn, tenant_id, [trace_id])
    return None


# run_fields takes a principal (it does not use it): a run's fields come from its spans, not from who sends them.
SEALER = auth.Principal(tenant_id="", actor_id="otlp-sealer", actor_type="SYSTEM", scopes=frozenset())


def _seal_quiet(conn: Connection, tenant_id: str, trace_id: str, before: datetime, now: datetime) -> str | None:
    """Seals a quiet kept trace: "" when sealed, None when there is nothing to do (sealed by another
    process, or a span came since), else why its run is refused."""
    store.hold_run_recordings(conn, tenant_id)
    kept = store.staged_spans(conn, tenant_id, [trace_id]).get(trace_id, {})
    if not kept or max(k.received_at for k in kept.values()) >= before:
        return None
    refusal = _seal(conn, tenant_id, trace_id, _unkept(kept, []), now,
                    erased=any(k.erasure_id is not None for k in kept.values()))
    return "" if refusal is None else refusal


def _groups(request: otlp.ExportTraceServiceRequest) -> tuple[dict[str, list[_Span]], set[str], int, list[str]]:
    """The GenAI spans by OTLP trace id (hex); the traces whose root span (no parent) is in the
    request, GenAI or not; the count of other spans and why they were refused."""
    groups: dict[str, list[_Span]] = defaultdict(list)
    roots: set[str] = set()
    rejected, reasons = 0, []
    for resource_spans in request.resource_spans:
        resource = _attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                if not span.parent_span_id and len(span.trace_id) == 16 and any(span.trace_id):
                    roots.add(span.trace_id.hex())
                attributes = _attributes(span.attributes)
                if not isinstance(attributes.get("gen_ai.operation.name"), str) or \
                        not attributes["gen_ai.operation.name"]:
                    rejected += 1
                    reasons.append("spans without gen_ai.operation.name are not GenAI spans (OpenTelemetry GenAI "
                                   "semantic conventions) and are not kept")
                    continue
                if len(span.trace_id) != 16 or not any(span.trace_id) or len(span.span_id) != 8:
                    rejected += 1
                    reasons.append("a span needs a 16-byte trace_id and an 8-byte span_id")
                    continue
                groups[span.trace_id.hex()].append(_Span(span, attributes, resource, resource_spans.resource))
    for spans in groups.values():
        spans.sort(key=lambda s: (s.span.start_time_unix_nano, s.span.span_id))
    return groups, roots, rejected, reasons


def _checked_run(trace_id: str, spans: list[_Span], now: datetime) -> ingest.CheckedRun:
    """The run the spans of one trace make (docs/INGEST.md's table), checked as RecordRun checks
    a run: ``_fast_run``'s fields, the same as ``ingest.run_fields(_run_input(...))``'s; and when
    the spans hold anything that check could refuse or change, that check itself (its refusals
    and messages are the only ones there are)."""
    try:
        return _fast_run(trace_id, spans, now)
    except _Slow:
        return ingest.run_fields(_run_input(trace_id, spans), SEALER, now, source="otlp")


class _Slow(Exception):
    """The spans hold something only ``ingest.run_fields`` may judge (a problem, or a value its
    protobuf round trip could change): the run goes the RunInput way."""


# The database's spellings of the enum values the mapping uses (as ingest.run_fields spells them).
def _names(message: Any, field: str) -> dict[int, str]:
    enum = message.DESCRIPTOR.fields_by_name[field].enum_type
    assert enum is not None  # an enum field
    return by_number(enum.full_name)


_STATUS_NAMES = _names(pb.RunInput, "status")
_EXECUTOR_NAMES = _names(pb.RunInput, "executor_type")
_OUTCOME_NAMES = _names(pb.RunInput, "outcome")
_STEP_TYPE_NAMES = _names(pb.StepInput, "step_type")
_LEVEL_NAMES = _names(pb.StepInput, "level")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _run_sources(spans: list[_Span]) -> tuple[list[_Span], _Span, _Span, list[_Span], str | None]:
    """Which spans a trace's run takes its fields from (docs/INGEST.md's table), for both ways of
    building it: the model calls (else every span: tokens and cost add up over them); the call
    naming the model and the one naming the provider (else the first span); the failed spans;
    the first agent named."""
    first = spans[0]
    calls = [s for s in spans if s.operation in MODEL_CALLS] or spans
    model_span = next((s for s in calls if s.text("gen_ai.response.model", "gen_ai.request.model")), first)
    provider_span = next((s for s in calls if s.text("gen_ai.provider.name", "gen_ai.system")), first)
    failed = [s for s in spans if s.span.status.code == trace_pb2.Status.STATUS_CODE_ERROR]
    agent = next((a for s in spans if (a := s.text("gen_ai.agent.id", "gen_ai.agent.name"))), None)
    return calls, model_span, provider_span, failed, agent


def _fast_run(trace_id: str, spans: list[_Span], now: datetime) -> ingest.CheckedRun:
    """``ingest.run_fields(_run_input(trace_id, spans))``'s run and steps, built from the spans
    without the RunInput (and its Struct values) in between, which was most of an Export's own
    CPU (issue #21); raises _Slow wherever that check could find a problem or its round trip
    change a value, so a run this answers is one it accepts, field for field (tests/unit/
    test_otlp_fast.py compares the two)."""
    calls, model_span, provider_span, failed, agent = _run_sources(spans)
    provider = _name(provider_span.text("gen_ai.provider.name", "gen_ai.system") or "unknown", required=True)
    model = _name(model_span.text("gen_ai.response.model", "gen_ai.request.model") or "unknown", required=True)
    reason = None
    if failed:
        reason = _name(failed[0].span.status.message or f"span {failed[0].span.name!r} failed", ingest.MAX_TEXT)
    if len(spans) > ingest.MAX_ITEMS:
        raise _Slow
    started = _time(min(s.span.start_time_unix_nano for s in spans), now)
    completed = _time(max(s.span.end_time_unix_nano or s.span.start_time_unix_nano for s in spans), now)
    if completed < started:
        raise _Slow
    steps = [_fast_step(s, trace_id, now) for s in spans]
    run = {
        "run_id": run_id(trace_id), "trace_id": run_id(trace_id), "provider": provider, "model": model,
        "execution_status": _STATUS_NAMES[records_pb2.LLM_RUN_STATUS_FAILED if failed
                                          else records_pb2.LLM_RUN_STATUS_SUCCEEDED],
        "executor_type": _EXECUTOR_NAMES[records_pb2.EXECUTOR_TYPE_AGENT
                                         if any(s.operation in AGENT_OPERATIONS for s in spans)
                                         else records_pb2.EXECUTOR_TYPE_LLM],
        "outcome": _OUTCOME_NAMES[records_pb2.RUN_OUTCOME_FAILURE if failed else records_pb2.RUN_OUTCOME_SUCCESS],
        "termination_reason": reason,
        "input_tokens": _amount(sum(s.input_tokens for s in calls)),
        "output_tokens": _amount(sum(s.output_tokens for s in calls)),
        "cost_cents": _amount(sum(s.count(COST_ATTRIBUTE) for s in calls)),
        "source": "otlp", "started_at": started, "completed_at": completed,
        "agent_id": _name(agent) if agent else None, "project_id": None}
    return ingest.CheckedRun(run, steps, [])


def _fast_step(s: _Span, trace_id: str, now: datetime) -> dict[str, Any]:
    """``_step``'s StepInput as ``ingest.run_fields`` makes it a step's fields (see _fast_run)."""
    span, a = s.span, s.attributes
    given, taken, step_type = _step_data(s)
    error = span.status.code == trace_pb2.Status.STATUS_CODE_ERROR
    if error:
        taken["error"] = span.status.message or a.get("error.type") or "error"
    subject = s.subject()
    if subject is not None:
        _name(subject, required=True)
        a = {k: v for k, v in a.items() if k not in CONTENT_ATTRIBUTES and not k.startswith(CONTENT_PREFIXES)}
    metadata = {"otel_trace_id": trace_id, "span_id": span.span_id.hex(), "name": span.name,
                "kind": trace_pb2.Span.SpanKind.Name(span.kind),
                "conversation_id": a.get("gen_ai.conversation.id"),
                "parent_span_id": span.parent_span_id.hex() or None,
                "attributes": a, "resource": s.resource}
    fields = {"step_type": _STEP_TYPE_NAMES[step_type], "timestamp": _time(span.start_time_unix_nano, now),
              "input_data": _json_object(given, present=True), "output_data": _json_object(taken, present=True),
              "metadata": _json_object(metadata, present=True),
              "level": _LEVEL_NAMES[records_pb2.STEP_LEVEL_ERROR if error else records_pb2.STEP_LEVEL_INFO],
              "source": "otlp", "tokens": _amount(s.input_tokens + s.output_tokens),
              "cost_cents": _amount(s.count(COST_ATTRIBUTE)),
              "duration_ms": _amount(max(0, span.end_time_unix_nano - span.start_time_unix_nano) // 1_000_000)}
    if subject is not None:
        fields["data_subject"] = subject
    return fields


def _name(value: str, limit: int = ingest.MAX_NAME, *, required: bool = False) -> str:
    """``value`` when ingest's text check passes it, else _Slow."""
    if (required and not value.strip()) or len(value) > limit or "\x00" in value:
        raise _Slow
    return value


def _amount(value: int) -> int:
    """``value`` when ingest's count check passes it (0 to 2^53 - 1), else _Slow."""
    if not 0 <= value <= MAX_SAFE_INTEGER:
        raise _Slow
    return value


def _time(unix_nano: int, now: datetime) -> datetime:
    """Timestamp.FromNanoseconds(...).ToDatetime(utc) (microseconds, truncated), when ingest's
    timestamp check passes it (set, not more than MAX_FUTURE ahead), else _Slow."""
    if unix_nano <= 0:
        raise _Slow
    value = _EPOCH + timedelta(microseconds=unix_nano // 1000)
    if value > now + ingest.MAX_FUTURE:
        raise _Slow
    return value


_LEAVES = (str, bool, type(None))


def _json(value: Any) -> Any:
    """``value`` as it comes back from a protobuf Struct through ingest's ``_plain`` (whole
    numbers as integers, other numbers as floats), when it comes back without a problem and
    unchanged otherwise; else _Slow (a NUL, a number JSON does not hold exactly, a lone surrogate)."""
    kind = type(value)
    if kind is str:
        if "\x00" in value or (not value.isascii() and not _utf8(value)):
            raise _Slow
        return value
    if kind is bool or value is None:
        return value
    if kind is int:
        if -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            return value
        raise _Slow
    if kind is float:
        if not math.isfinite(value) or abs(value) > MAX_SAFE_INTEGER:
            raise _Slow
        return int(value) if value.is_integer() else value
    if kind is dict:
        return _json_object(value)
    if kind is list or kind is tuple:
        return [_json(item) for item in value]
    raise _Slow


def _json_object(value: dict[Any, Any], present: bool = False) -> dict[str, Any]:
    """_json of a dict; ``present``: its None values left out (``_json(_present(value))`` in one walk)."""
    out = {}
    for key, item in value.items():
        if present and item is None:
            continue
        if type(key) is not str or "\x00" in key or (not key.isascii() and not _utf8(key)):
            raise _Slow
        # The usual leaves inline (most of the nodes; a call each was most of this walk's time).
        leaf = type(item)
        if leaf is str:
            if "\x00" in item or (not item.isascii() and not _utf8(item)):
                raise _Slow
            out[key] = item
        elif (leaf is int and -MAX_SAFE_INTEGER <= item <= MAX_SAFE_INTEGER) or leaf is bool or item is None:
            out[key] = item
        else:
            out[key] = _json(item)
    return out


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate (JSON text's \ud800): protobuf refuses it
        return False
    return True


def _step_data(s: _Span) -> tuple[dict[str, Any], dict[str, Any], records_pb2.StepType]:
    """A span's step input and output (before error), and its step type (docs/INGEST.md's table)."""
    a, operation = s.attributes, s.operation
    if operation in MODEL_CALLS:
        given = {"operation": operation, "model": a.get("gen_ai.request.model"),
                 "messages": _json_text(a.get("gen_ai.input.messages")),
                 "system_instructions": _json_text(a.get("gen_ai.system_instructions"))}
        taken = {"model": a.get("gen_ai.response.model"), "response_id": a.get("gen_ai.response.id"),
                 "finish_reasons": a.get("gen_ai.response.finish_reasons"),
                 "messages": _json_text(a.get("gen_ai.output.messages"))}
        return given, taken, records_pb2.STEP_TYPE_LLM_CALL
    if operation in TOOL_OPERATIONS:
        given = {"tool": a.get("gen_ai.tool.name"), "call_id": a.get("gen_ai.tool.call.id"),
                 "type": a.get("gen_ai.tool.type"), "arguments": _json_text(a.get("gen_ai.tool.call.arguments"))}
        return given, {"result": _json_text(a.get("gen_ai.tool.call.result"))}, records_pb2.STEP_TYPE_TOOL_CALL
    # an agent's invocation, or an operation the conventions add later: the run's input
    given = {"operation": operation, "agent": a.get("gen_ai.agent.name"),
             "agent_id": a.get("gen_ai.agent.id"), "messages": _json_text(a.get("gen_ai.input.messages"))}
    return given, {"messages": _json_text(a.get("gen_ai.output.messages"))}, records_pb2.STEP_TYPE_INPUT


def _run_input(trace_id: str, spans: list[_Span]) -> pb.RunInput:
    """The run the spans of one trace make (docs/INGEST.md's table)."""
    calls, model_span, provider_span, failed, agent = _run_sources(spans)
    run = pb.RunInput(
        run_id=run_id(trace_id),
        provider=provider_span.text("gen_ai.provider.name", "gen_ai.system") or "unknown",
        model=model_span.text("gen_ai.response.model", "gen_ai.request.model") or "unknown",
        status=records_pb2.LLM_RUN_STATUS_FAILED if failed else records_pb2.LLM_RUN_STATUS_SUCCEEDED,
        outcome=records_pb2.RUN_OUTCOME_FAILURE if failed else records_pb2.RUN_OUTCOME_SUCCESS,
        executor_type=(records_pb2.EXECUTOR_TYPE_AGENT if any(s.operation in AGENT_OPERATIONS for s in spans)
                       else records_pb2.EXECUTOR_TYPE_LLM),
        input_tokens=sum(s.input_tokens for s in calls),
        output_tokens=sum(s.output_tokens for s in calls),
        cost_cents=sum(s.count(COST_ATTRIBUTE) for s in calls),
        steps=[_step(s, trace_id) for s in spans])
    if agent:
        run.agent_id = agent
    if failed:
        run.termination_reason = failed[0].span.status.message or f"span {failed[0].span.name!r} failed"
    _set_time(run.started_at, min(s.span.start_time_unix_nano for s in spans))
    _set_time(run.completed_at, max(s.span.end_time_unix_nano or s.span.start_time_unix_nano for s in spans))
    return run


def _step(s: _Span, trace_id: str) -> pb.StepInput:
    span, a = s.span, s.attributes
    given, taken, step_type = _step_data(s)
    error = span.status.code == trace_pb2.Status.STATUS_CODE_ERROR
    if error:
        taken["error"] = span.status.message or a.get("error.type") or "error"
    step = pb.StepInput(
        step_type=step_type, source="otlp",
        level=records_pb2.STEP_LEVEL_ERROR if error else records_pb2.STEP_LEVEL_INFO,
        tokens=s.input_tokens + s.output_tokens,
        cost_cents=s.count(COST_ATTRIBUTE),
        duration_ms=max(0, span.end_time_unix_nano - span.start_time_unix_nano) // 1_000_000)
    _set_time(step.timestamp, span.start_time_unix_nano)
    _set_value(step.input_data, _present(given))
    _set_value(step.output_data, _present(taken))
    subject = s.subject()
    if subject is not None:
        step.data_subject_id = subject
        a = {k: v for k, v in a.items() if not _is_content(k)}
    metadata = {"otel_trace_id": trace_id, "span_id": span.span_id.hex(), "name": span.name,
                "kind": trace_pb2.Span.SpanKind.Name(span.kind),
                "conversation_id": a.get("gen_ai.conversation.id"),
                "parent_span_id": span.parent_span_id.hex() or None,
                "attributes": a, "resource": s.resource}
    step.metadata.update(_present(metadata))
    return step


def _present(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def _json_text(value: Any) -> Any:
    """GenAI messages travel as JSON text in span attributes: kept as JSON when they parse."""
    if isinstance(value, str) and value[:1] in ("[", "{"):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _set_time(target: Any, unix_nano: int) -> None:
    if unix_nano > 0:  # unset (0) stays unset: the run's check names it
        target.FromNanoseconds(unix_nano)


def _set_value(target: struct_pb2.Value, plain: dict[str, Any]) -> None:
    # Struct.update, not json_format.ParseDict: the same Value (numbers as doubles, as ParseDict
    # makes them) at a fifth of the CPU, which was a fifth of the Export path's (issue #21).
    target.struct_value.SetInParent()  # an empty object stays an object (ParseDict's), not unset
    target.struct_value.update(plain)


def _attributes(pairs: Iterable[common_pb2.KeyValue]) -> dict[str, Any]:
    return {kv.key: _any(kv.value) for kv in pairs}


def _any(value: common_pb2.AnyValue) -> Any:
    """An OTLP AnyValue as JSON the steps can hold exactly (RFC 8785 numbers, no NaN)."""
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "int_value":
        number = value.int_value
        return number if abs(number) <= MAX_SAFE_INTEGER else str(number)
    if kind == "double_value":
        return value.double_value if math.isfinite(value.double_value) else str(value.double_value)
    if kind == "array_value":
        return [_any(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return _attributes(value.kvlist_value.values)
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode("ascii")
    return None
