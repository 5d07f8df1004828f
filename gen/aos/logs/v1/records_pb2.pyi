import datetime

from aos.evidence.v1 import evidence_pb2 as _evidence_pb2
from aos.evidence.v1 import records_pb2 as _records_pb2
from aos.evidence.v1 import sources_pb2 as _sources_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PayloadState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PAYLOAD_STATE_UNSPECIFIED: _ClassVar[PayloadState]
    PAYLOAD_STATE_PRESENT: _ClassVar[PayloadState]
    PAYLOAD_STATE_ERASED: _ClassVar[PayloadState]
    PAYLOAD_STATE_MISSING: _ClassVar[PayloadState]

class ReplayCenter(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REPLAY_CENTER_UNSPECIFIED: _ClassVar[ReplayCenter]
    REPLAY_CENTER_VIOLATION: _ClassVar[ReplayCenter]
    REPLAY_CENTER_COMPLETED: _ClassVar[ReplayCenter]
    REPLAY_CENTER_STARTED: _ClassVar[ReplayCenter]
    REPLAY_CENTER_STEP: _ClassVar[ReplayCenter]

class ReplayEventKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REPLAY_EVENT_KIND_UNSPECIFIED: _ClassVar[ReplayEventKind]
    REPLAY_EVENT_KIND_LLM_STEP: _ClassVar[ReplayEventKind]
    REPLAY_EVENT_KIND_SYSTEM_RECORD: _ClassVar[ReplayEventKind]
    REPLAY_EVENT_KIND_POLICY_EVENT: _ClassVar[ReplayEventKind]
PAYLOAD_STATE_UNSPECIFIED: PayloadState
PAYLOAD_STATE_PRESENT: PayloadState
PAYLOAD_STATE_ERASED: PayloadState
PAYLOAD_STATE_MISSING: PayloadState
REPLAY_CENTER_UNSPECIFIED: ReplayCenter
REPLAY_CENTER_VIOLATION: ReplayCenter
REPLAY_CENTER_COMPLETED: ReplayCenter
REPLAY_CENTER_STARTED: ReplayCenter
REPLAY_CENTER_STEP: ReplayCenter
REPLAY_EVENT_KIND_UNSPECIFIED: ReplayEventKind
REPLAY_EVENT_KIND_LLM_STEP: ReplayEventKind
REPLAY_EVENT_KIND_SYSTEM_RECORD: ReplayEventKind
REPLAY_EVENT_KIND_POLICY_EVENT: ReplayEventKind

class AuditEntry(_message.Message):
    __slots__ = ("metadata", "id", "seq", "event_type", "entity_type", "entity_id", "actor_type", "actor_id", "action_reason", "correlation_id", "created_at", "content_hash", "prev_hash", "chain_hash", "success", "failure_reason", "ip_address", "user_agent", "rpc", "hash_version", "payloads")
    METADATA_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    ENTITY_TYPE_FIELD_NUMBER: _ClassVar[int]
    ENTITY_ID_FIELD_NUMBER: _ClassVar[int]
    ACTOR_TYPE_FIELD_NUMBER: _ClassVar[int]
    ACTOR_ID_FIELD_NUMBER: _ClassVar[int]
    ACTION_REASON_FIELD_NUMBER: _ClassVar[int]
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    CONTENT_HASH_FIELD_NUMBER: _ClassVar[int]
    PREV_HASH_FIELD_NUMBER: _ClassVar[int]
    CHAIN_HASH_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    FAILURE_REASON_FIELD_NUMBER: _ClassVar[int]
    IP_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    USER_AGENT_FIELD_NUMBER: _ClassVar[int]
    RPC_FIELD_NUMBER: _ClassVar[int]
    HASH_VERSION_FIELD_NUMBER: _ClassVar[int]
    PAYLOADS_FIELD_NUMBER: _ClassVar[int]
    metadata: _evidence_pb2.EvidenceMetadata
    id: str
    seq: int
    event_type: _evidence_pb2.AuditEventType
    entity_type: _evidence_pb2.AuditEntityType
    entity_id: str
    actor_type: _evidence_pb2.ActorType
    actor_id: str
    action_reason: str
    correlation_id: str
    created_at: _timestamp_pb2.Timestamp
    content_hash: str
    prev_hash: str
    chain_hash: str
    success: bool
    failure_reason: str
    ip_address: str
    user_agent: str
    rpc: str
    hash_version: int
    payloads: _containers.RepeatedCompositeFieldContainer[PayloadCommitment]
    def __init__(self, metadata: _Optional[_Union[_evidence_pb2.EvidenceMetadata, _Mapping]] = ..., id: _Optional[str] = ..., seq: _Optional[int] = ..., event_type: _Optional[_Union[_evidence_pb2.AuditEventType, str]] = ..., entity_type: _Optional[_Union[_evidence_pb2.AuditEntityType, str]] = ..., entity_id: _Optional[str] = ..., actor_type: _Optional[_Union[_evidence_pb2.ActorType, str]] = ..., actor_id: _Optional[str] = ..., action_reason: _Optional[str] = ..., correlation_id: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., content_hash: _Optional[str] = ..., prev_hash: _Optional[str] = ..., chain_hash: _Optional[str] = ..., success: _Optional[bool] = ..., failure_reason: _Optional[str] = ..., ip_address: _Optional[str] = ..., user_agent: _Optional[str] = ..., rpc: _Optional[str] = ..., hash_version: _Optional[int] = ..., payloads: _Optional[_Iterable[_Union[PayloadCommitment, _Mapping]]] = ...) -> None: ...

class PayloadCommitment(_message.Message):
    __slots__ = ("field", "commitment", "state", "erasure_id")
    FIELD_FIELD_NUMBER: _ClassVar[int]
    COMMITMENT_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ERASURE_ID_FIELD_NUMBER: _ClassVar[int]
    field: str
    commitment: str
    state: PayloadState
    erasure_id: str
    def __init__(self, field: _Optional[str] = ..., commitment: _Optional[str] = ..., state: _Optional[_Union[PayloadState, str]] = ..., erasure_id: _Optional[str] = ...) -> None: ...

class SystemRecord(_message.Message):
    __slots__ = ("metadata", "id", "system_wide", "component", "event_type", "severity", "summary", "details", "caused_by", "actor_id", "correlation_id", "run_id", "environment_id", "created_at", "content_hash", "request_id", "hash_version", "payloads")
    METADATA_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    SYSTEM_WIDE_FIELD_NUMBER: _ClassVar[int]
    COMPONENT_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    SEVERITY_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    CAUSED_BY_FIELD_NUMBER: _ClassVar[int]
    ACTOR_ID_FIELD_NUMBER: _ClassVar[int]
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    CONTENT_HASH_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    HASH_VERSION_FIELD_NUMBER: _ClassVar[int]
    PAYLOADS_FIELD_NUMBER: _ClassVar[int]
    metadata: _evidence_pb2.EvidenceMetadata
    id: str
    system_wide: bool
    component: str
    event_type: _records_pb2.SystemEventType
    severity: _records_pb2.SystemSeverity
    summary: str
    details: _struct_pb2.Struct
    caused_by: _records_pb2.CausedBy
    actor_id: str
    correlation_id: str
    run_id: str
    environment_id: str
    created_at: _timestamp_pb2.Timestamp
    content_hash: str
    request_id: str
    hash_version: int
    payloads: _containers.RepeatedCompositeFieldContainer[PayloadCommitment]
    def __init__(self, metadata: _Optional[_Union[_evidence_pb2.EvidenceMetadata, _Mapping]] = ..., id: _Optional[str] = ..., system_wide: _Optional[bool] = ..., component: _Optional[str] = ..., event_type: _Optional[_Union[_records_pb2.SystemEventType, str]] = ..., severity: _Optional[_Union[_records_pb2.SystemSeverity, str]] = ..., summary: _Optional[str] = ..., details: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., caused_by: _Optional[_Union[_records_pb2.CausedBy, str]] = ..., actor_id: _Optional[str] = ..., correlation_id: _Optional[str] = ..., run_id: _Optional[str] = ..., environment_id: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., content_hash: _Optional[str] = ..., request_id: _Optional[str] = ..., hash_version: _Optional[int] = ..., payloads: _Optional[_Iterable[_Union[PayloadCommitment, _Mapping]]] = ...) -> None: ...

class TraceStep(_message.Message):
    __slots__ = ("step_index", "step_type", "level", "source", "timestamp", "tokens", "cost_cents", "duration_ms", "input_data", "output_data", "metadata", "content_hash", "is_inflection_point", "hash_version", "payloads")
    STEP_INDEX_FIELD_NUMBER: _ClassVar[int]
    STEP_TYPE_FIELD_NUMBER: _ClassVar[int]
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    COST_CENTS_FIELD_NUMBER: _ClassVar[int]
    DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    INPUT_DATA_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_DATA_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    CONTENT_HASH_FIELD_NUMBER: _ClassVar[int]
    IS_INFLECTION_POINT_FIELD_NUMBER: _ClassVar[int]
    HASH_VERSION_FIELD_NUMBER: _ClassVar[int]
    PAYLOADS_FIELD_NUMBER: _ClassVar[int]
    step_index: int
    step_type: _records_pb2.StepType
    level: _records_pb2.StepLevel
    source: str
    timestamp: _timestamp_pb2.Timestamp
    tokens: int
    cost_cents: int
    duration_ms: int
    input_data: _struct_pb2.Value
    output_data: _struct_pb2.Value
    metadata: _struct_pb2.Struct
    content_hash: str
    is_inflection_point: bool
    hash_version: int
    payloads: _containers.RepeatedCompositeFieldContainer[PayloadCommitment]
    def __init__(self, step_index: _Optional[int] = ..., step_type: _Optional[_Union[_records_pb2.StepType, str]] = ..., level: _Optional[_Union[_records_pb2.StepLevel, str]] = ..., source: _Optional[str] = ..., timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., tokens: _Optional[int] = ..., cost_cents: _Optional[int] = ..., duration_ms: _Optional[int] = ..., input_data: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., output_data: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., content_hash: _Optional[str] = ..., is_inflection_point: _Optional[bool] = ..., hash_version: _Optional[int] = ..., payloads: _Optional[_Iterable[_Union[PayloadCommitment, _Mapping]]] = ...) -> None: ...

class LimitBreach(_message.Message):
    __slots__ = ("id", "limit_id", "run_id", "breach_type", "value_at_breach", "limit_value", "breached_at")
    ID_FIELD_NUMBER: _ClassVar[int]
    LIMIT_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    BREACH_TYPE_FIELD_NUMBER: _ClassVar[int]
    VALUE_AT_BREACH_FIELD_NUMBER: _ClassVar[int]
    LIMIT_VALUE_FIELD_NUMBER: _ClassVar[int]
    BREACHED_AT_FIELD_NUMBER: _ClassVar[int]
    id: str
    limit_id: str
    run_id: str
    breach_type: _sources_pb2.BreachType
    value_at_breach: str
    limit_value: str
    breached_at: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., limit_id: _Optional[str] = ..., run_id: _Optional[str] = ..., breach_type: _Optional[_Union[_sources_pb2.BreachType, str]] = ..., value_at_breach: _Optional[str] = ..., limit_value: _Optional[str] = ..., breached_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ReplayEvent(_message.Message):
    __slots__ = ("metadata", "kind", "occurred_at", "step", "system_record", "audit_entry", "limit_breach")
    METADATA_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    SYSTEM_RECORD_FIELD_NUMBER: _ClassVar[int]
    AUDIT_ENTRY_FIELD_NUMBER: _ClassVar[int]
    LIMIT_BREACH_FIELD_NUMBER: _ClassVar[int]
    metadata: _evidence_pb2.EvidenceMetadata
    kind: ReplayEventKind
    occurred_at: _timestamp_pb2.Timestamp
    step: TraceStep
    system_record: SystemRecord
    audit_entry: AuditEntry
    limit_breach: LimitBreach
    def __init__(self, metadata: _Optional[_Union[_evidence_pb2.EvidenceMetadata, _Mapping]] = ..., kind: _Optional[_Union[ReplayEventKind, str]] = ..., occurred_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., step: _Optional[_Union[TraceStep, _Mapping]] = ..., system_record: _Optional[_Union[SystemRecord, _Mapping]] = ..., audit_entry: _Optional[_Union[AuditEntry, _Mapping]] = ..., limit_breach: _Optional[_Union[LimitBreach, _Mapping]] = ...) -> None: ...

class ReplayWindow(_message.Message):
    __slots__ = ("run_id", "center_timestamp", "center", "window_start", "window_end", "window_seconds", "events")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    CENTER_TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    CENTER_FIELD_NUMBER: _ClassVar[int]
    WINDOW_START_FIELD_NUMBER: _ClassVar[int]
    WINDOW_END_FIELD_NUMBER: _ClassVar[int]
    WINDOW_SECONDS_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    center_timestamp: _timestamp_pb2.Timestamp
    center: ReplayCenter
    window_start: _timestamp_pb2.Timestamp
    window_end: _timestamp_pb2.Timestamp
    window_seconds: int
    events: _containers.RepeatedCompositeFieldContainer[ReplayEvent]
    def __init__(self, run_id: _Optional[str] = ..., center_timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., center: _Optional[_Union[ReplayCenter, str]] = ..., window_start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., window_end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., window_seconds: _Optional[int] = ..., events: _Optional[_Iterable[_Union[ReplayEvent, _Mapping]]] = ...) -> None: ...
