"""Rows to protos: every evidence record kind, with its EvidenceMetadata.

Stores return rows; handlers validate and call stores; this module is the one
place that turns a row (and its joins) into the message a caller sees, whichever
service answers (Logs lists an export; Export creates it).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, overload

from google.protobuf import json_format, struct_pb2

from aos.evidence.v1 import bundle_pb2, evidence_pb2, records_pb2 as evidence_records, sources_pb2
from aos.logs.v1 import llm_runs_service_pb2 as runs_pb, records_pb2
from aos_evidence.kinds import BundleType, ExportFormat, ExportScope
from aos_evidence.queries import ACCESS_DENIED, ACCESS_EVENTS
from aos_recording import dsse
from aos_recording.hashing import canonical_json
from aos_runtime.evidence import Evidence, actor_fields, metadata, timestamp
from aos_runtime.validation import canonical_values

EVENTS = canonical_values(evidence_pb2.AuditEventType)
ENTITIES = canonical_values(evidence_pb2.AuditEntityType)
ACTORS = canonical_values(evidence_pb2.ActorType)
RUN_STATUSES = canonical_values(evidence_records.LlmRunStatus)
EXECUTORS = canonical_values(evidence_records.ExecutorType)
OUTCOMES = canonical_values(evidence_records.RunOutcome)
TRACE_STATUSES = canonical_values(evidence_records.TraceStatus)
STEP_TYPES = canonical_values(evidence_records.StepType)
STEP_LEVELS = canonical_values(evidence_records.StepLevel)
BREACH_TYPES = canonical_values(sources_pb2.BreachType)
SYSTEM_EVENTS = canonical_values(evidence_records.SystemEventType)
SEVERITIES = canonical_values(evidence_records.SystemSeverity)
CAUSES = canonical_values(evidence_records.CausedBy)
ERASURE_BASES = canonical_values(bundle_pb2.ErasureBasis)  # erased_export_artifacts.basis (0030)

DOMAIN_OF_ENTITY = {"POLICY_RULE": "POLICY", "POLICY_PROPOSAL": "POLICY", "LIMIT": "POLICY",
                    "INCIDENT": "INCIDENTS", "ACTOR": "SYSTEM", "API_KEY": "SYSTEM", "LOG_EXPORT": "LOGS",
                    # the resources of access entries: reads of the Logs domain's evidence
                    "LLM_RUN": "LOGS", "SYSTEM_RECORD": "LOGS", "AUDIT_ENTRY": "LOGS",
                    # retention of the evidence (migration 0022): policies, legal holds, dropped partitions
                    "RETENTION_POLICY": "LOGS", "LEGAL_HOLD": "LOGS", "EVIDENCE_PARTITION": "LOGS",
                    # an erasure's data subject (docs/ERASURE.md): the Logs domain's evidence it erased
                    "DATA_SUBJECT": "LOGS"}


def audit_evidence(row: Mapping[str, Any]) -> Evidence:
    """An entry's metadata: its actor, and the spine from its entity, its state and its run's trace."""
    entity, entity_id = row["entity_type"], row["entity_id"]
    policies = {p for p in (row["state_policy_id"], row["violation_policy_id"]) if p}
    if entity == "POLICY_RULE":
        policies.add(entity_id)
    incidents = {i for i in (row["state_incident_id"], row["trace_incident_id"]) if i}
    if entity == "INCIDENT":
        incidents.add(entity_id)
    return Evidence(tenant_id=row["tenant_id"], occurred_at=row["created_at"], recorded_at=row["recorded_at"],
                    source_domain=DOMAIN_OF_ENTITY[entity], source_component="audit_ledger",
                    origin=row["actor_type"],
                    run_id=row["run_id"] or (entity_id if entity == "LLM_RUN" else None), trace_id=row["trace_id"],
                    policy_ids=tuple(policies), incident_ids=tuple(incidents),
                    export_id=entity_id if entity == "LOG_EXPORT" else None,
                    correlation_id=row["correlation_id"], checksum=row["content_hash"],
                    **actor_fields(row["actor_type"], row["actor_id"]))


def audit_entry(row: Mapping[str, Any]) -> records_pb2.AuditEntry:
    optional = {name: row[name] for name in ("actor_id", "action_reason", "correlation_id") if row[name] is not None}
    if row["event_type"] in ACCESS_EVENTS:
        # An access entry's client and outcome, from its after_state (which its content hash covers).
        optional.update({name: row[f"state_{name}"] for name in ("ip_address", "user_agent", "failure_reason", "rpc")
                         if row.get(f"state_{name}") is not None})
    return records_pb2.AuditEntry(
        success=row["event_type"] != ACCESS_DENIED,
        metadata=metadata(audit_evidence(row)), id=row["id"], seq=row["seq"], event_type=EVENTS[row["event_type"]],
        entity_type=ENTITIES[row["entity_type"]], entity_id=row["entity_id"], actor_type=ACTORS[row["actor_type"]],
        created_at=timestamp(row["created_at"]), content_hash=bytes(row["content_hash"]).hex(),
        prev_hash=bytes(row["prev_hash"]).hex(), chain_hash=bytes(row["chain_hash"]).hex(),
        hash_version=row.get("hash_version") or 1, payloads=payload_commitments(row), **optional)


def payload_commitments(row: Mapping[str, Any]) -> list[records_pb2.PayloadCommitment]:
    """A v2 row's commitments with their states (aos_recording.erasure.fill put them in the row)."""
    states = row.get("payload_states") or {}
    return [records_pb2.PayloadCommitment(field=field, commitment=commitment,
                                          state=PAYLOAD_STATES[states.get(field, ("MISSING", None))[0]],
                                          erasure_id=states.get(field, ("MISSING", None))[1] or "")
            for field, commitment in sorted((row.get("commitments") or {}).items())]


PAYLOAD_STATES = {"PRESENT": records_pb2.PAYLOAD_STATE_PRESENT, "ERASED": records_pb2.PAYLOAD_STATE_ERASED,
                  "MISSING": records_pb2.PAYLOAD_STATE_MISSING}


def export_message(row: Mapping[str, Any]) -> bundle_pb2.Export:
    """A log_exports row as clients see it (shared by the Logs O5 lists)."""
    redaction = row["redaction"] or {}
    message = bundle_pb2.Export(
        metadata=metadata(Evidence(
            tenant_id=row["tenant_id"], occurred_at=row["created_at"], recorded_at=row["recorded_at"],
            source_domain="LOGS", source_component="log_exports", origin=row["requested_by_type"],
            run_id=row["run_id"], incident_ids=(row["incident_id"],) if row["incident_id"] else (),
            export_id=row["id"], correlation_id=row["correlation_id"], checksum=row["content_hash"],
            **actor_fields(row["requested_by_type"], row["requested_by_id"]))),
        export_id=row["id"], tenant_id=row["tenant_id"], scope=ExportScope(row["scope"]).proto,
        bundle_type=BundleType(row["bundle_type"]).proto, format=ExportFormat(row["format"]).proto,
        content_type=row["content_type"],
        filename=row["filename"], size_bytes=row["size_bytes"], checksum=bytes(row["checksum"]).hex(),
        created_at=timestamp(row["created_at"]), requested_by_type=ACTORS[row["requested_by_type"]],
        requested_by_id=row["requested_by_id"], seq=row["seq"], prev_hash=bytes(row["prev_hash"]).hex(),
        chain_hash=bytes(row["chain_hash"]).hex(), signing_key_id=row["signing_key_id"],
        redaction=bundle_pb2.RedactionSummary(
            profile=redaction.get("profile", ""),
            counts=[bundle_pb2.RedactionCount(kind=k, count=v)
                    for k, v in sorted(redaction.get("counts", {}).items())]),
        manifest=_canonical(row["manifest"]), dsse_envelope=dsse.envelope_json(row["dsse_envelope"]))
    for name in ("run_id", "incident_id", "idempotency_key"):
        if row[name] is not None:
            setattr(message, name, row[name])
    if row["slice_filter"] is not None:
        message.slice_filter = _canonical(row["slice_filter"])
    retention = (row["manifest"] or {}).get("retention") or {}
    message.retention_class = retention.get("retention_class", "")
    message.compliance_tags.extend(retention.get("compliance_tags", ()))
    # Erased after it was made (docs/ERASURE.md §3a): EXPORT_SELECT's tombstone columns; a row
    # read without them (one just inserted) has had nothing erased.
    if row.get("payloads_erased"):
        message.content_erased = True
        message.payloads_erased = row["payloads_erased"]
        message.erasure_ids.extend(row["erasure_ids"] or ())
        message.erasures.extend(export_erasures(row.get("erasures") or ()))
    return message


def export_erasures(tombstones: Iterable[Mapping[str, Any]]) -> list[bundle_pb2.ExportErasure]:
    """An export's tombstones (erased_export_artifacts rows, or EXPORT_SELECT's JSON of them: the
    time as text), one ExportErasure per erasure, with its basis, by erasure id."""
    found: dict[str, bundle_pb2.ExportErasure] = {}
    for t in tombstones:
        at = t["erased_at"]
        at = datetime.fromisoformat(at) if isinstance(at, str) else at
        erasure = found.get(t["erasure_id"])
        if erasure is None:  # one tombstone per erasure (each erasure is of one subject): this is the rule
            erasure = found[t["erasure_id"]] = bundle_pb2.ExportErasure(
                erasure_id=t["erasure_id"], basis=ERASURE_BASES[t["basis"]], erased_at=timestamp(at))
        erasure.payloads_erased += t["payloads_erased"]
    return [found[k] for k in sorted(found)]


def _canonical(value: Any) -> str:
    return canonical_json(value).decode()


@overload
def struct(value: Mapping[str, Any]) -> struct_pb2.Struct: ...
@overload
def struct(value: None) -> None: ...


def struct(value: Mapping[str, Any] | None) -> struct_pb2.Struct | None:
    if value is None:
        return None
    message = struct_pb2.Struct()
    message.update(value)
    return message


def money(cents: int) -> evidence_pb2.Money:
    return evidence_pb2.Money(currency_code="USD", amount_cents=int(cents))


def run_message(row: Mapping[str, Any]) -> runs_pb.LlmRun:
    trace_id = row["joined_trace_id"] or row["trace_id"]
    run = runs_pb.LlmRun(
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
        is_inflection_point=row["step_index"] == violation_index,
        hash_version=row.get("hash_version") or 1, payloads=payload_commitments(row))
    # A v2 step's erased field stays unset: its payloads entry says ERASED (never empty content).
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


def trace_message(trace: Mapping[str, Any]) -> runs_pb.Trace:
    message = runs_pb.Trace(
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


def system_record(row: Mapping[str, Any]) -> records_pb2.SystemRecord:
    """A system record. A system-wide one (platform_records) is shown to every tenant but belongs
    to none: its metadata names no tenant (tenant_id empty, ``system_wide`` set), rather than
    claiming to be the viewer's evidence."""
    cause, actor = row["caused_by"], row["actor_id"]
    actors = {"human_actor_id": actor} if cause == "HUMAN" and actor else {}
    actors["system_id"] = actor if cause == "AUTOMATION" and actor else row["component"]
    record = records_pb2.SystemRecord(
        metadata=metadata(Evidence(
            tenant_id=row["tenant_id"] or "", occurred_at=row["created_at"], recorded_at=row["recorded_at"],
            source_domain="SYSTEM",
            source_component=row["component"], origin="HUMAN" if cause == "HUMAN" else "SYSTEM",
            run_id=row["run_id"], correlation_id=row["correlation_id"], checksum=row["content_hash"], **actors)),
        id=row["id"], system_wide=row["tenant_id"] is None, component=row["component"],
        event_type=SYSTEM_EVENTS[row["event_type"]], severity=SEVERITIES[row["severity"]], summary=row["summary"],
        caused_by=CAUSES[row["caused_by"]], created_at=timestamp(row["created_at"]),
        content_hash=bytes(row["content_hash"]).hex(),
        # v2 (docs/ERASURE.md): an erased summary reads '' and details unset; payloads says ERASED.
        hash_version=row.get("hash_version") or 1, payloads=payload_commitments(row))
    if row["details"] is not None:
        record.details.update(row["details"])
    for name in ("actor_id", "correlation_id", "run_id", "environment_id", "request_id"):
        if row.get(name) is not None:
            setattr(record, name, row[name])
    return record
