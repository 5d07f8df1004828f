import datetime

from aos.evidence.v1 import bundle_pb2 as _bundle_pb2
from aos.evidence.v1 import evidence_pb2 as _evidence_pb2
from aos.evidence.v1 import options_pb2 as _options_pb2
from aos.evidence.v1 import records_pb2 as _records_pb2
from aos.logs.v1 import audit_ledger_service_pb2 as _audit_ledger_service_pb2
from aos.logs.v1 import records_pb2 as _records_pb2_1
from google.api import annotations_pb2 as _annotations_pb2
from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LlmRunSortField(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LLM_RUN_SORT_FIELD_UNSPECIFIED: _ClassVar[LlmRunSortField]
    LLM_RUN_SORT_FIELD_CREATED_AT: _ClassVar[LlmRunSortField]
    LLM_RUN_SORT_FIELD_STARTED_AT: _ClassVar[LlmRunSortField]
    LLM_RUN_SORT_FIELD_TOTAL_COST_CENTS: _ClassVar[LlmRunSortField]
    LLM_RUN_SORT_FIELD_TOTAL_TOKENS: _ClassVar[LlmRunSortField]
LLM_RUN_SORT_FIELD_UNSPECIFIED: LlmRunSortField
LLM_RUN_SORT_FIELD_CREATED_AT: LlmRunSortField
LLM_RUN_SORT_FIELD_STARTED_AT: LlmRunSortField
LLM_RUN_SORT_FIELD_TOTAL_COST_CENTS: LlmRunSortField
LLM_RUN_SORT_FIELD_TOTAL_TOKENS: LlmRunSortField

class LlmRun(_message.Message):
    __slots__ = ("metadata", "run_id", "trace_id", "agent_id", "project_id", "provider", "model", "status", "executor_type", "outcome", "termination_reason", "input_tokens", "output_tokens", "cost", "started_at", "completed_at", "has_violation", "violation_policy_id", "is_synthetic", "synthetic_scenario_id", "source")
    METADATA_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    PROJECT_ID_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    EXECUTOR_TYPE_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    TERMINATION_REASON_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COST_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_AT_FIELD_NUMBER: _ClassVar[int]
    HAS_VIOLATION_FIELD_NUMBER: _ClassVar[int]
    VIOLATION_POLICY_ID_FIELD_NUMBER: _ClassVar[int]
    IS_SYNTHETIC_FIELD_NUMBER: _ClassVar[int]
    SYNTHETIC_SCENARIO_ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    metadata: _evidence_pb2.EvidenceMetadata
    run_id: str
    trace_id: str
    agent_id: str
    project_id: str
    provider: str
    model: str
    status: _records_pb2.LlmRunStatus
    executor_type: _records_pb2.ExecutorType
    outcome: _records_pb2.RunOutcome
    termination_reason: str
    input_tokens: int
    output_tokens: int
    cost: _evidence_pb2.Money
    started_at: _timestamp_pb2.Timestamp
    completed_at: _timestamp_pb2.Timestamp
    has_violation: bool
    violation_policy_id: str
    is_synthetic: bool
    synthetic_scenario_id: str
    source: str
    def __init__(self, metadata: _Optional[_Union[_evidence_pb2.EvidenceMetadata, _Mapping]] = ..., run_id: _Optional[str] = ..., trace_id: _Optional[str] = ..., agent_id: _Optional[str] = ..., project_id: _Optional[str] = ..., provider: _Optional[str] = ..., model: _Optional[str] = ..., status: _Optional[_Union[_records_pb2.LlmRunStatus, str]] = ..., executor_type: _Optional[_Union[_records_pb2.ExecutorType, str]] = ..., outcome: _Optional[_Union[_records_pb2.RunOutcome, str]] = ..., termination_reason: _Optional[str] = ..., input_tokens: _Optional[int] = ..., output_tokens: _Optional[int] = ..., cost: _Optional[_Union[_evidence_pb2.Money, _Mapping]] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., completed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., has_violation: _Optional[bool] = ..., violation_policy_id: _Optional[str] = ..., is_synthetic: _Optional[bool] = ..., synthetic_scenario_id: _Optional[str] = ..., source: _Optional[str] = ...) -> None: ...

class ListLlmRunsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "run_id", "agent_id", "status", "provider", "model", "has_violation", "policy_id", "is_synthetic", "created_after", "created_before", "search", "order", "sort")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    HAS_VIOLATION_FIELD_NUMBER: _ClassVar[int]
    POLICY_ID_FIELD_NUMBER: _ClassVar[int]
    IS_SYNTHETIC_FIELD_NUMBER: _ClassVar[int]
    CREATED_AFTER_FIELD_NUMBER: _ClassVar[int]
    CREATED_BEFORE_FIELD_NUMBER: _ClassVar[int]
    SEARCH_FIELD_NUMBER: _ClassVar[int]
    ORDER_FIELD_NUMBER: _ClassVar[int]
    SORT_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    run_id: str
    agent_id: str
    status: _records_pb2.LlmRunStatus
    provider: str
    model: str
    has_violation: bool
    policy_id: str
    is_synthetic: bool
    created_after: _timestamp_pb2.Timestamp
    created_before: _timestamp_pb2.Timestamp
    search: str
    order: _evidence_pb2.SortOrder
    sort: LlmRunSortField
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., run_id: _Optional[str] = ..., agent_id: _Optional[str] = ..., status: _Optional[_Union[_records_pb2.LlmRunStatus, str]] = ..., provider: _Optional[str] = ..., model: _Optional[str] = ..., has_violation: _Optional[bool] = ..., policy_id: _Optional[str] = ..., is_synthetic: _Optional[bool] = ..., created_after: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., created_before: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., search: _Optional[str] = ..., order: _Optional[_Union[_evidence_pb2.SortOrder, str]] = ..., sort: _Optional[_Union[LlmRunSortField, str]] = ...) -> None: ...

class ListLlmRunsResponse(_message.Message):
    __slots__ = ("metadata", "runs", "next_page_token", "total_size", "total_size_is_estimate", "has_more")
    METADATA_FIELD_NUMBER: _ClassVar[int]
    RUNS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_IS_ESTIMATE_FIELD_NUMBER: _ClassVar[int]
    HAS_MORE_FIELD_NUMBER: _ClassVar[int]
    metadata: _evidence_pb2.EvidenceMetadata
    runs: _containers.RepeatedCompositeFieldContainer[LlmRun]
    next_page_token: str
    total_size: int
    total_size_is_estimate: bool
    has_more: bool
    def __init__(self, metadata: _Optional[_Union[_evidence_pb2.EvidenceMetadata, _Mapping]] = ..., runs: _Optional[_Iterable[_Union[LlmRun, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., total_size: _Optional[int] = ..., total_size_is_estimate: _Optional[bool] = ..., has_more: _Optional[bool] = ...) -> None: ...

class GetLlmRunEnvelopeRequest(_message.Message):
    __slots__ = ("run_id",)
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    def __init__(self, run_id: _Optional[str] = ...) -> None: ...

class GetLlmRunEnvelopeResponse(_message.Message):
    __slots__ = ("metadata", "run")
    METADATA_FIELD_NUMBER: _ClassVar[int]
    RUN_FIELD_NUMBER: _ClassVar[int]
    metadata: _evidence_pb2.EvidenceMetadata
    run: LlmRun
    def __init__(self, metadata: _Optional[_Union[_evidence_pb2.EvidenceMetadata, _Mapping]] = ..., run: _Optional[_Union[LlmRun, _Mapping]] = ...) -> None: ...

class GetLlmRunTraceRequest(_message.Message):
    __slots__ = ("run_id", "trace_id", "page_size", "page_token")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    trace_id: str
    page_size: int
    page_token: str
    def __init__(self, run_id: _Optional[str] = ..., trace_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class Trace(_message.Message):
    __slots__ = ("trace_id", "run_id", "agent_id", "status", "started_at", "completed_at", "termination_reason", "step_count", "total_tokens", "total_cost", "total_duration_ms", "content_hash", "policy_snapshot_id", "policy_snapshot", "incident_id", "violation_step_index", "violation_timestamp", "violation_policy_id", "violation_reason", "is_synthetic")
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_AT_FIELD_NUMBER: _ClassVar[int]
    TERMINATION_REASON_FIELD_NUMBER: _ClassVar[int]
    STEP_COUNT_FIELD_NUMBER: _ClassVar[int]
    TOTAL_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_COST_FIELD_NUMBER: _ClassVar[int]
    TOTAL_DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    CONTENT_HASH_FIELD_NUMBER: _ClassVar[int]
    POLICY_SNAPSHOT_ID_FIELD_NUMBER: _ClassVar[int]
    POLICY_SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    INCIDENT_ID_FIELD_NUMBER: _ClassVar[int]
    VIOLATION_STEP_INDEX_FIELD_NUMBER: _ClassVar[int]
    VIOLATION_TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    VIOLATION_POLICY_ID_FIELD_NUMBER: _ClassVar[int]
    VIOLATION_REASON_FIELD_NUMBER: _ClassVar[int]
    IS_SYNTHETIC_FIELD_NUMBER: _ClassVar[int]
    trace_id: str
    run_id: str
    agent_id: str
    status: _records_pb2.TraceStatus
    started_at: _timestamp_pb2.Timestamp
    completed_at: _timestamp_pb2.Timestamp
    termination_reason: str
    step_count: int
    total_tokens: int
    total_cost: _evidence_pb2.Money
    total_duration_ms: int
    content_hash: str
    policy_snapshot_id: str
    policy_snapshot: _struct_pb2.Struct
    incident_id: str
    violation_step_index: int
    violation_timestamp: _timestamp_pb2.Timestamp
    violation_policy_id: str
    violation_reason: str
    is_synthetic: bool
    def __init__(self, trace_id: _Optional[str] = ..., run_id: _Optional[str] = ..., agent_id: _Optional[str] = ..., status: _Optional[_Union[_records_pb2.TraceStatus, str]] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., completed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., termination_reason: _Optional[str] = ..., step_count: _Optional[int] = ..., total_tokens: _Optional[int] = ..., total_cost: _Optional[_Union[_evidence_pb2.Money, _Mapping]] = ..., total_duration_ms: _Optional[int] = ..., content_hash: _Optional[str] = ..., policy_snapshot_id: _Optional[str] = ..., policy_snapshot: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., incident_id: _Optional[str] = ..., violation_step_index: _Optional[int] = ..., violation_timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., violation_policy_id: _Optional[str] = ..., violation_reason: _Optional[str] = ..., is_synthetic: _Optional[bool] = ...) -> None: ...

class GetLlmRunTraceResponse(_message.Message):
    __slots__ = ("metadata", "trace", "steps", "total_steps", "total_duration_ms", "total_tokens", "next_page_token", "has_more")
    METADATA_FIELD_NUMBER: _ClassVar[int]
    TRACE_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_TOKENS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    HAS_MORE_FIELD_NUMBER: _ClassVar[int]
    metadata: _evidence_pb2.EvidenceMetadata
    trace: Trace
    steps: _containers.RepeatedCompositeFieldContainer[_records_pb2_1.TraceStep]
    total_steps: int
    total_duration_ms: int
    total_tokens: int
    next_page_token: str
    has_more: bool
    def __init__(self, metadata: _Optional[_Union[_evidence_pb2.EvidenceMetadata, _Mapping]] = ..., trace: _Optional[_Union[Trace, _Mapping]] = ..., steps: _Optional[_Iterable[_Union[_records_pb2_1.TraceStep, _Mapping]]] = ..., total_steps: _Optional[int] = ..., total_duration_ms: _Optional[int] = ..., total_tokens: _Optional[int] = ..., next_page_token: _Optional[str] = ..., has_more: _Optional[bool] = ...) -> None: ...

class GetLlmRunGovernanceRequest(_message.Message):
    __slots__ = ("run_id", "search", "order", "sort")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    SEARCH_FIELD_NUMBER: _ClassVar[int]
    ORDER_FIELD_NUMBER: _ClassVar[int]
    SORT_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    search: str
    order: _evidence_pb2.SortOrder
    sort: _audit_ledger_service_pb2.AuditSortField
    def __init__(self, run_id: _Optional[str] = ..., search: _Optional[str] = ..., order: _Optional[_Union[_evidence_pb2.SortOrder, str]] = ..., sort: _Optional[_Union[_audit_ledger_service_pb2.AuditSortField, str]] = ...) -> None: ...

class GetLlmRunGovernanceResponse(_message.Message):
    __slots__ = ("metadata", "audit_entries", "limit_breaches", "policy_steps", "overrides")
    METADATA_FIELD_NUMBER: _ClassVar[int]
    AUDIT_ENTRIES_FIELD_NUMBER: _ClassVar[int]
    LIMIT_BREACHES_FIELD_NUMBER: _ClassVar[int]
    POLICY_STEPS_FIELD_NUMBER: _ClassVar[int]
    OVERRIDES_FIELD_NUMBER: _ClassVar[int]
    metadata: _evidence_pb2.EvidenceMetadata
    audit_entries: _containers.RepeatedCompositeFieldContainer[_records_pb2_1.AuditEntry]
    limit_breaches: _containers.RepeatedCompositeFieldContainer[_records_pb2_1.LimitBreach]
    policy_steps: _containers.RepeatedCompositeFieldContainer[_records_pb2_1.TraceStep]
    overrides: _containers.RepeatedCompositeFieldContainer[_records_pb2_1.AuditEntry]
    def __init__(self, metadata: _Optional[_Union[_evidence_pb2.EvidenceMetadata, _Mapping]] = ..., audit_entries: _Optional[_Iterable[_Union[_records_pb2_1.AuditEntry, _Mapping]]] = ..., limit_breaches: _Optional[_Iterable[_Union[_records_pb2_1.LimitBreach, _Mapping]]] = ..., policy_steps: _Optional[_Iterable[_Union[_records_pb2_1.TraceStep, _Mapping]]] = ..., overrides: _Optional[_Iterable[_Union[_records_pb2_1.AuditEntry, _Mapping]]] = ...) -> None: ...

class GetLlmRunReplayRequest(_message.Message):
    __slots__ = ("run_id", "window_seconds", "at_step")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    WINDOW_SECONDS_FIELD_NUMBER: _ClassVar[int]
    AT_STEP_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    window_seconds: int
    at_step: int
    def __init__(self, run_id: _Optional[str] = ..., window_seconds: _Optional[int] = ..., at_step: _Optional[int] = ...) -> None: ...

class GetLlmRunReplayResponse(_message.Message):
    __slots__ = ("metadata", "replay", "state")
    METADATA_FIELD_NUMBER: _ClassVar[int]
    REPLAY_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    metadata: _evidence_pb2.EvidenceMetadata
    replay: _records_pb2_1.ReplayWindow
    state: ReplayState
    def __init__(self, metadata: _Optional[_Union[_evidence_pb2.EvidenceMetadata, _Mapping]] = ..., replay: _Optional[_Union[_records_pb2_1.ReplayWindow, _Mapping]] = ..., state: _Optional[_Union[ReplayState, _Mapping]] = ...) -> None: ...

class ReplayState(_message.Message):
    __slots__ = ("trace_id", "step_index", "last_step_index", "step", "steps_so_far", "tokens", "cost", "duration_ms", "steps_hash", "policy_steps", "audit_entries", "limit_breaches")
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_INDEX_FIELD_NUMBER: _ClassVar[int]
    LAST_STEP_INDEX_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    STEPS_SO_FAR_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    COST_FIELD_NUMBER: _ClassVar[int]
    DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    STEPS_HASH_FIELD_NUMBER: _ClassVar[int]
    POLICY_STEPS_FIELD_NUMBER: _ClassVar[int]
    AUDIT_ENTRIES_FIELD_NUMBER: _ClassVar[int]
    LIMIT_BREACHES_FIELD_NUMBER: _ClassVar[int]
    trace_id: str
    step_index: int
    last_step_index: int
    step: _records_pb2_1.TraceStep
    steps_so_far: int
    tokens: int
    cost: _evidence_pb2.Money
    duration_ms: int
    steps_hash: str
    policy_steps: _containers.RepeatedCompositeFieldContainer[_records_pb2_1.TraceStep]
    audit_entries: _containers.RepeatedCompositeFieldContainer[_records_pb2_1.AuditEntry]
    limit_breaches: _containers.RepeatedCompositeFieldContainer[_records_pb2_1.LimitBreach]
    def __init__(self, trace_id: _Optional[str] = ..., step_index: _Optional[int] = ..., last_step_index: _Optional[int] = ..., step: _Optional[_Union[_records_pb2_1.TraceStep, _Mapping]] = ..., steps_so_far: _Optional[int] = ..., tokens: _Optional[int] = ..., cost: _Optional[_Union[_evidence_pb2.Money, _Mapping]] = ..., duration_ms: _Optional[int] = ..., steps_hash: _Optional[str] = ..., policy_steps: _Optional[_Iterable[_Union[_records_pb2_1.TraceStep, _Mapping]]] = ..., audit_entries: _Optional[_Iterable[_Union[_records_pb2_1.AuditEntry, _Mapping]]] = ..., limit_breaches: _Optional[_Iterable[_Union[_records_pb2_1.LimitBreach, _Mapping]]] = ...) -> None: ...

class GetLlmRunExportRequest(_message.Message):
    __slots__ = ("run_id", "page_size", "page_token")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    page_size: int
    page_token: str
    def __init__(self, run_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class GetLlmRunExportResponse(_message.Message):
    __slots__ = ("metadata", "run_id", "exports", "next_page_token", "total_size", "total_size_is_estimate", "has_more")
    METADATA_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    EXPORTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_IS_ESTIMATE_FIELD_NUMBER: _ClassVar[int]
    HAS_MORE_FIELD_NUMBER: _ClassVar[int]
    metadata: _evidence_pb2.EvidenceMetadata
    run_id: str
    exports: _containers.RepeatedCompositeFieldContainer[_bundle_pb2.Export]
    next_page_token: str
    total_size: int
    total_size_is_estimate: bool
    has_more: bool
    def __init__(self, metadata: _Optional[_Union[_evidence_pb2.EvidenceMetadata, _Mapping]] = ..., run_id: _Optional[str] = ..., exports: _Optional[_Iterable[_Union[_bundle_pb2.Export, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., total_size: _Optional[int] = ..., total_size_is_estimate: _Optional[bool] = ..., has_more: _Optional[bool] = ...) -> None: ...
