"""The closed vocabularies of the evidence tables, read from the contract.

Each value's database spelling is its ``(aos.evidence.v1.canonical_name)`` enum
value option in the protos, so the protos stay the one list; the migration's
CHECK constraints carry a frozen copy and tests/db/test_recording.py proves the
two agree.
"""
from __future__ import annotations

from google.protobuf import descriptor_pool

# Imported for their enums, which register in the default descriptor pool.
from aos.evidence.v1 import bundle_pb2, evidence_pb2, options_pb2, records_pb2, sources_pb2  # noqa: F401


def canonical_names(enum_full_name: str) -> dict[str, int]:
    """``{"PolicyRuleCreated": 1, ...}``: an enum's database spellings (its canonical_name options).

    Here, in the recording library, rather than in the server runtime: the writers check
    against these sets and the library's core imports nothing of the runtime (nor grpc);
    aos_runtime.validation hands the same function on to the services."""
    enum = descriptor_pool.Default().FindEnumTypeByName(enum_full_name)
    names = {}
    for value in enum.values:
        if value.number == 0:
            continue
        name: str = value.GetOptions().Extensions[options_pb2.canonical_name]  # type: ignore[index]  # protoc's .pyi types an extension as a plain FieldDescriptor
        if not name:
            raise ValueError(f"{enum_full_name}.{value.name} has no canonical_name option")
        names[name] = value.number
    return names


_E = "aos.evidence.v1."
AUDIT_EVENTS = frozenset(canonical_names(_E + "AuditEventType"))
AUDIT_ENTITIES = frozenset(canonical_names(_E + "AuditEntityType"))
ACTOR_TYPES = frozenset(canonical_names(_E + "ActorType"))
LLM_RUN_STATUSES = frozenset(canonical_names(_E + "LlmRunStatus"))
EXECUTOR_TYPES = frozenset(canonical_names(_E + "ExecutorType"))
OUTCOMES = frozenset(canonical_names(_E + "RunOutcome"))
TRACE_STATUSES = frozenset(canonical_names(_E + "TraceStatus"))
STEP_TYPES = frozenset(canonical_names(_E + "StepType"))
STEP_LEVELS = frozenset(canonical_names(_E + "StepLevel"))
SYSTEM_EVENT_TYPES = frozenset(canonical_names(_E + "SystemEventType"))
SYSTEM_SEVERITIES = frozenset(canonical_names(_E + "SystemSeverity"))
CAUSED_BY = frozenset(canonical_names(_E + "CausedBy"))
INCIDENT_SEVERITIES = frozenset(canonical_names(_E + "IncidentSeverity"))
INCIDENT_STATES = frozenset(canonical_names(_E + "IncidentState"))
PROPOSAL_STATUSES = frozenset(canonical_names(_E + "ProposalStatus"))
LIMIT_CATEGORIES = frozenset(canonical_names(_E + "LimitCategory"))
LIMIT_SCOPES = frozenset(canonical_names(_E + "LimitScope"))
RESET_PERIODS = frozenset(canonical_names(_E + "ResetPeriod"))
LIMIT_STATUSES = frozenset(canonical_names(_E + "LimitStatus"))
BREACH_TYPES = frozenset(canonical_names(_E + "BreachType"))
WORKER_RUN_STATUSES = frozenset(canonical_names(_E + "WorkerRunStatus"))
EXPORT_SCOPES = frozenset(canonical_names(_E + "ExportScope"))
BUNDLE_TYPES = frozenset(canonical_names(_E + "BundleType"))
EXPORT_FORMATS = frozenset(canonical_names(_E + "ExportFormat"))
