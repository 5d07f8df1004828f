"""LlmRunsService (O1–O5): translates requests into store calls and rows into protos."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any, Mapping

from google.protobuf import json_format, struct_pb2

from aos.evidence.v1 import evidence_pb2
from aos.logs.v1 import llm_runs_service_pb2 as pb, llm_runs_service_pb2_grpc as pb_grpc
from aos.logs.v1 import records_pb2
from aos_runtime import auth, errors
from aos_runtime.evidence import Evidence, metadata, timestamp
from aos_runtime.server import ServiceContext, not_yet_built
from aos_runtime.validation import Request, canonical_names
from services.logs import store
from services.logs.audit_ledger import answer_metadata, audit_entry, export_message, struct
from services.logs.system_logs import system_record

DESCRIPTOR = pb.DESCRIPTOR.services_by_name["LlmRunsService"]
RUN_STATUSES = canonical_names("aos.evidence.v1.LlmRunStatus")
EXECUTORS = canonical_names("aos.evidence.v1.ExecutorType")
OUTCOMES = canonical_names("aos.evidence.v1.RunOutcome")
TRACE_STATUSES = canonical_names("aos.evidence.v1.TraceStatus")
STEP_TYPES = canonical_names("aos.evidence.v1.StepType")
STEP_LEVELS = canonical_names("aos.evidence.v1.StepLevel")
BREACH_TYPES = canonical_names("aos.evidence.v1.BreachType")
OVERRIDE_EVENTS = {"LimitOverrideGranted", "LimitOverrideRevoked", "EmergencyOverrideActivated",
                   "EmergencyOverrideDeactivated"}
DEFAULT_WINDOW_S, MAX_WINDOW_S = 30, 600


def money(cents: int) -> evidence_pb2.Money:
    return evidence_pb2.Money(currency_code="USD", amount_cents=int(cents))


def run_message(row: Mapping[str, Any]) -> pb.LlmRun:
    trace_id = row["joined_trace_id"] or row["trace_id"]
    run = pb.LlmRun(
        metadata=metadata(Evidence(
            tenant_id=row["tenant_id"], occurred_at=row["started_at"], recorded_at=row["recorded_at"],
            source_domain="ACTIVITY", source_component=row["source"], origin="AGENT" if row["agent_id"] else "SYSTEM",
            run_id=row["run_id"], agent_id=row["agent_id"], system_id=row["source"], trace_id=trace_id,
            policy_ids=(row["violation_policy_id"],) if row["violation_policy_id"] else (),
            incident_ids=(row["trace_incident_id"],) if row["trace_incident_id"] else (),
            checksum=row["content_hash"])),
        run_id=row["run_id"], provider=row["provider"], model=row["model"],
        status=RUN_STATUSES[row["execution_status"]], executor_type=EXECUTORS[row["executor_type"]],
        input_tokens=row["input_tokens"], output_tokens=row["output_tokens"], cost=money(row["cost_cents"]),
        started_at=timestamp(row["started_at"]), has_violation=row["violation_step_index"] is not None,
        is_synthetic=row["is_synthetic"], source=row["source"])
    if row["outcome"]:
        run.outcome = OUTCOMES[row["outcome"]]
    if row["completed_at"]:
        run.completed_at.CopyFrom(timestamp(row["completed_at"]))
    for name, value in (("trace_id", trace_id), ("agent_id", row["agent_id"]), ("project_id", row["project_id"]),
                        ("termination_reason", row["termination_reason"]),
                        ("violation_policy_id", row["violation_policy_id"]),
                        ("synthetic_scenario_id", row["synthetic_scenario_id"])):
        if value is not None:
            setattr(run, name, value)
    return run


def _value(data: Any) -> struct_pb2.Value:
    return json_format.ParseDict(data, struct_pb2.Value())


def step_message(row: Mapping[str, Any], violation_index: int | None) -> records_pb2.TraceStep:
    step = records_pb2.TraceStep(
        step_index=row["step_index"], step_type=STEP_TYPES[row["step_type"]], level=STEP_LEVELS[row["level"]],
        source=row["source"], timestamp=timestamp(row["timestamp"]), tokens=row["tokens"],
        cost_cents=row["cost_cents"], duration_ms=row["duration_ms"], content_hash=bytes(row["content_hash"]).hex(),
        is_inflection_point=row["step_index"] == violation_index)
    if row["input_data"] is not None:
        step.input_data.CopyFrom(_value(row["input_data"]))
    if row["output_data"] is not None:
        step.output_data.CopyFrom(_value(row["output_data"]))
    if row["metadata"] is not None:
        step.metadata.CopyFrom(struct(row["metadata"]))
    return step


def trace_evidence(trace: Mapping[str, Any], occurred_at: datetime | None = None) -> Evidence:
    return Evidence(tenant_id=trace["tenant_id"], occurred_at=occurred_at or trace["started_at"],
                    recorded_at=trace["recorded_at"], source_domain="ACTIVITY", source_component="aos_traces",
                    origin="AGENT" if trace["agent_id"] else "SYSTEM", run_id=trace["run_id"],
                    agent_id=trace["agent_id"], trace_id=trace["trace_id"],
                    policy_ids=(trace["violation_policy_id"],) if trace["violation_policy_id"] else (),
                    incident_ids=(trace["incident_id"],) if trace["incident_id"] else (),
                    checksum=trace["content_hash"])


def trace_message(trace: Mapping[str, Any]) -> pb.Trace:
    message = pb.Trace(
        trace_id=trace["trace_id"], run_id=trace["run_id"], status=TRACE_STATUSES[trace["status"]],
        started_at=timestamp(trace["started_at"]), step_count=trace["step_count"],
        total_tokens=trace["total_tokens"], total_cost=money(trace["total_cost_cents"]),
        total_duration_ms=trace["total_duration_ms"], is_synthetic=trace["is_synthetic"])
    for name in ("agent_id", "termination_reason", "policy_snapshot_id", "incident_id", "violation_step_index",
                 "violation_policy_id", "violation_reason"):
        if trace[name] is not None:
            setattr(message, name, trace[name])
    if trace["content_hash"] is not None:
        message.content_hash = bytes(trace["content_hash"]).hex()
    for name in ("completed_at", "violation_timestamp"):
        if trace[name] is not None:
            getattr(message, name).CopyFrom(timestamp(trace[name]))
    if trace["policy_snapshot"] is not None:
        message.policy_snapshot.CopyFrom(struct(trace["policy_snapshot"]))
    return message


def breach_message(row: Mapping[str, Any]) -> records_pb2.LimitBreach:
    breach = records_pb2.LimitBreach(
        id=row["id"], limit_id=row["limit_id"], breach_type=BREACH_TYPES[row["breach_type"]],
        value_at_breach=_decimal(row["value_at_breach"]), limit_value=_decimal(row["limit_value"]),
        breached_at=timestamp(row["breached_at"]))
    if row["run_id"]:
        breach.run_id = row["run_id"]
    return breach


def _decimal(value) -> str:
    text = format(value, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def replay_center(trace: Mapping[str, Any]) -> tuple[datetime, int]:
    """The inflection point: the violation, else completion, else start (SPEC section 4, O4)."""
    if trace["violation_timestamp"] is not None:
        return trace["violation_timestamp"], records_pb2.REPLAY_CENTER_VIOLATION
    if trace["completed_at"] is not None:
        return trace["completed_at"], records_pb2.REPLAY_CENTER_COMPLETED
    return trace["started_at"], records_pb2.REPLAY_CENTER_STARTED


def replay_window(trace: Mapping[str, Any], seconds: int, found: Mapping[str, list]) -> records_pb2.ReplayWindow:
    """Merge the window's events by time (stable: steps, then system, then policy on ties)."""
    center, kind = replay_center(trace)
    events = []
    for row in found["steps"]:
        events.append((row["timestamp"], 0, records_pb2.ReplayEvent(
            metadata=metadata(trace_evidence(trace, row["timestamp"])), kind=records_pb2.REPLAY_EVENT_KIND_LLM_STEP,
            occurred_at=timestamp(row["timestamp"]), step=step_message(row, trace["violation_step_index"]))))
    for row in found["system"]:
        record = system_record(row, trace["tenant_id"])
        events.append((row["created_at"], 1, records_pb2.ReplayEvent(
            metadata=record.metadata, kind=records_pb2.REPLAY_EVENT_KIND_SYSTEM_RECORD,
            occurred_at=record.created_at, system_record=record)))
    for row in found["audit"]:
        entry = audit_entry(row)
        events.append((row["created_at"], 2, records_pb2.ReplayEvent(
            metadata=entry.metadata, kind=records_pb2.REPLAY_EVENT_KIND_POLICY_EVENT,
            occurred_at=entry.created_at, audit_entry=entry)))
    for row in found["breaches"]:
        breach = breach_message(row)
        events.append((row["breached_at"], 3, records_pb2.ReplayEvent(
            metadata=metadata(Evidence(tenant_id=row["tenant_id"], occurred_at=row["breached_at"],
                                       recorded_at=row["created_at"], source_domain="POLICY",
                                       source_component="limit_breaches", origin="SYSTEM", run_id=row["run_id"])),
            kind=records_pb2.REPLAY_EVENT_KIND_POLICY_EVENT, occurred_at=breach.breached_at, limit_breach=breach)))
    events.sort(key=lambda e: (e[0], e[1]))
    delta = timedelta(seconds=seconds)
    return records_pb2.ReplayWindow(
        run_id=trace["run_id"], center_timestamp=timestamp(center), center=kind,
        window_start=timestamp(center - delta), window_end=timestamp(center + delta), window_seconds=seconds,
        events=[e[2] for e in events])


def window_seconds(r: Request, requested: int) -> int:
    if requested == 0:
        return DEFAULT_WINDOW_S
    if not 1 <= requested <= MAX_WINDOW_S:
        r.violations.add("window_seconds", f"must be between 1 and {MAX_WINDOW_S} (0 means {DEFAULT_WINDOW_S})")
    return requested


def _replay(conn, tenant: str, run_id: str, seconds: int, llm: bool, policy: bool):
    trace, _ = store.get_trace(conn, tenant, run_id)
    if trace is None:
        return None, None
    center, _ = replay_center(trace)
    delta = timedelta(seconds=seconds)
    return trace, store.replay_events(conn, tenant, trace["trace_id"], center - delta, center + delta,
                                      include_llm=llm, include_policy=policy)


async def load_replay(ctx: ServiceContext, request, *, llm: bool, policy: bool) -> records_pb2.ReplayWindow:
    """The replay of a run (LLM replay: everything; system replay: system records only)."""
    r = Request()
    run_id = r.resource_id(request.run_id, "run_id")
    seconds = window_seconds(r, request.window_seconds)
    r.done()
    tenant = auth.principal().tenant_id
    trace, found = await ctx.db.run(tenant, _replay, tenant, run_id, seconds, llm, policy)
    if trace is None:
        raise errors.not_found("trace of run", run_id)
    return replay_window(trace, seconds, found)


class LlmRunsService(not_yet_built(pb_grpc.LlmRunsServiceServicer, DESCRIPTOR, "issue #4")):
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx

    async def ListLlmRuns(self, request, context):
        r = Request()
        fields = pb.ListLlmRunsRequest.DESCRIPTOR.fields_by_name
        filters = store.RunFilters(
            run_id=r.optional_text(request.run_id, "run_id"), agent_id=r.optional_text(request.agent_id, "agent_id"),
            status=r.enum(request.status, fields["status"].enum_type, "status"),
            provider=r.optional_text(request.provider, "provider"), model=r.optional_text(request.model, "model"),
            has_violation=request.has_violation if request.HasField("has_violation") else None,
            policy_id=r.optional_text(request.policy_id, "policy_id"),
            is_synthetic=request.is_synthetic if request.HasField("is_synthetic") else None,
            **dict(zip(("created_after", "created_before"), r.time_range(request))))
        limit = r.page_size(request.page_size)
        r.done()
        tenant = auth.principal().tenant_id
        token_filters = {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in vars(filters).items()}
        after = self.ctx.page_tokens.read(request.page_token, tenant, "llm-runs", token_filters)
        page = await self.ctx.db.run(tenant, store.list_runs, tenant, filters, after, limit)
        next_token = ""
        if page.has_more:
            last = page.rows[-1]
            next_token = self.ctx.page_tokens.issue(tenant, "llm-runs", token_filters,
                                                    [last["created_at"].isoformat(), last["id"]])
        return pb.ListLlmRunsResponse(
            metadata=answer_metadata(tenant, "llm_run_records"), runs=[run_message(row) for row in page.rows],
            next_page_token=next_token, total_size=page.total, total_size_is_estimate=page.total_is_estimate,
            has_more=page.has_more)

    async def _run_id(self, request) -> tuple[str, str]:
        r = Request()
        run_id = r.resource_id(request.run_id, "run_id")
        r.done()
        return auth.principal().tenant_id, run_id

    async def GetLlmRunEnvelope(self, request, context):
        tenant, run_id = await self._run_id(request)
        row = await self.ctx.db.run(tenant, store.get_run, tenant, run_id)
        if row is None:
            raise errors.not_found("llm run", run_id)
        run = run_message(row)
        return pb.GetLlmRunEnvelopeResponse(metadata=run.metadata, run=run)

    async def GetLlmRunTrace(self, request, context):
        tenant, run_id = await self._run_id(request)
        trace, steps = await self.ctx.db.run(tenant, store.get_trace, tenant, run_id)
        if trace is None:
            raise errors.not_found("trace of run", run_id)
        return pb.GetLlmRunTraceResponse(
            metadata=metadata(trace_evidence(trace)), trace=trace_message(trace),
            steps=[step_message(s, trace["violation_step_index"]) for s in steps], total_steps=len(steps),
            total_duration_ms=sum(s["duration_ms"] for s in steps), total_tokens=sum(s["tokens"] for s in steps))

    async def GetLlmRunGovernance(self, request, context):
        tenant, run_id = await self._run_id(request)
        found = await self.ctx.db.run(tenant, _governance, tenant, run_id)
        if found is None:
            raise errors.not_found("llm run", run_id)
        trace, steps, entries, breaches = found
        audit = [audit_entry(row) for row in entries]
        evidence = trace_evidence(trace) if trace else Evidence(
            tenant_id=tenant, occurred_at=datetime.now(timezone.utc), recorded_at=datetime.now(timezone.utc),
            source_domain="POLICY", source_component="governance", origin="SYSTEM", run_id=run_id)
        return pb.GetLlmRunGovernanceResponse(
            metadata=metadata(evidence), audit_entries=audit,
            limit_breaches=[breach_message(b) for b in breaches],
            policy_steps=[step_message(s, trace["violation_step_index"]) for s in steps
                          if s["step_type"] in ("policy_check", "violation")],
            overrides=[e for e, row in zip(audit, entries) if row["event_type"] in OVERRIDE_EVENTS])

    async def GetLlmRunReplay(self, request, context):
        window = await load_replay(self.ctx, request, llm=True, policy=True)
        tenant = auth.principal().tenant_id
        return pb.GetLlmRunReplayResponse(metadata=answer_metadata(tenant, "replay"), replay=window)

    async def GetLlmRunExport(self, request, context):
        tenant, run_id = await self._run_id(request)
        page = await self.ctx.db.run(tenant, _run_exports, tenant, run_id)
        if page is None:
            raise errors.not_found("llm run", run_id)
        return pb.GetLlmRunExportResponse(metadata=answer_metadata(tenant, "log_exports"), run_id=run_id,
                                          exports=[export_message(row) for row in page.rows])


def _governance(conn, tenant: str, run_id: str):
    if not store.run_exists(conn, tenant, run_id):
        return None
    trace, steps = store.get_trace(conn, tenant, run_id)
    return trace, steps, store.run_audit_entries(conn, tenant, run_id), store.run_breaches(conn, tenant, run_id)


def _run_exports(conn, tenant: str, run_id: str):
    if not store.run_exists(conn, tenant, run_id):
        return None
    return store.list_exports(conn, tenant, None, None, None, 1000, run_id=run_id)
