import datetime

from aos.evidence.v1 import evidence_pb2 as _evidence_pb2
from aos.evidence.v1 import options_pb2 as _options_pb2
from aos.evidence.v1 import records_pb2 as _records_pb2
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

class ItemStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ITEM_STATUS_UNSPECIFIED: _ClassVar[ItemStatus]
    ITEM_STATUS_CREATED: _ClassVar[ItemStatus]
    ITEM_STATUS_ALREADY_PRESENT: _ClassVar[ItemStatus]
    ITEM_STATUS_CONFLICT: _ClassVar[ItemStatus]
    ITEM_STATUS_INVALID: _ClassVar[ItemStatus]
ITEM_STATUS_UNSPECIFIED: ItemStatus
ITEM_STATUS_CREATED: ItemStatus
ITEM_STATUS_ALREADY_PRESENT: ItemStatus
ITEM_STATUS_CONFLICT: ItemStatus
ITEM_STATUS_INVALID: ItemStatus

class EraseDataSubjectRequest(_message.Message):
    __slots__ = ("subject_id", "reason")
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    subject_id: str
    reason: str
    def __init__(self, subject_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class EraseDataSubjectResponse(_message.Message):
    __slots__ = ("erasure_id", "subject_id", "payloads_erased", "request_seq", "executed_seq", "exports_erased")
    ERASURE_ID_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    PAYLOADS_ERASED_FIELD_NUMBER: _ClassVar[int]
    REQUEST_SEQ_FIELD_NUMBER: _ClassVar[int]
    EXECUTED_SEQ_FIELD_NUMBER: _ClassVar[int]
    EXPORTS_ERASED_FIELD_NUMBER: _ClassVar[int]
    erasure_id: str
    subject_id: str
    payloads_erased: int
    request_seq: int
    executed_seq: int
    exports_erased: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, erasure_id: _Optional[str] = ..., subject_id: _Optional[str] = ..., payloads_erased: _Optional[int] = ..., request_seq: _Optional[int] = ..., executed_seq: _Optional[int] = ..., exports_erased: _Optional[_Iterable[str]] = ...) -> None: ...

class ItemViolation(_message.Message):
    __slots__ = ("field", "description")
    FIELD_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    field: str
    description: str
    def __init__(self, field: _Optional[str] = ..., description: _Optional[str] = ...) -> None: ...

class AuditEvent(_message.Message):
    __slots__ = ("event_id", "event_type", "entity_type", "entity_id", "action_reason", "correlation_id", "occurred_at", "before_state", "after_state", "content_hash", "data_subject_id")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    ENTITY_TYPE_FIELD_NUMBER: _ClassVar[int]
    ENTITY_ID_FIELD_NUMBER: _ClassVar[int]
    ACTION_REASON_FIELD_NUMBER: _ClassVar[int]
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    BEFORE_STATE_FIELD_NUMBER: _ClassVar[int]
    AFTER_STATE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_HASH_FIELD_NUMBER: _ClassVar[int]
    DATA_SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    event_type: _evidence_pb2.AuditEventType
    entity_type: _evidence_pb2.AuditEntityType
    entity_id: str
    action_reason: str
    correlation_id: str
    occurred_at: _timestamp_pb2.Timestamp
    before_state: _struct_pb2.Struct
    after_state: _struct_pb2.Struct
    content_hash: str
    data_subject_id: str
    def __init__(self, event_id: _Optional[str] = ..., event_type: _Optional[_Union[_evidence_pb2.AuditEventType, str]] = ..., entity_type: _Optional[_Union[_evidence_pb2.AuditEntityType, str]] = ..., entity_id: _Optional[str] = ..., action_reason: _Optional[str] = ..., correlation_id: _Optional[str] = ..., occurred_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., before_state: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., after_state: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., content_hash: _Optional[str] = ..., data_subject_id: _Optional[str] = ...) -> None: ...

class AppendAuditEventsRequest(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[AuditEvent]
    def __init__(self, events: _Optional[_Iterable[_Union[AuditEvent, _Mapping]]] = ...) -> None: ...

class AuditEventResult(_message.Message):
    __slots__ = ("event_id", "status", "seq", "content_hash", "chain_hash", "violations", "message")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    CONTENT_HASH_FIELD_NUMBER: _ClassVar[int]
    CHAIN_HASH_FIELD_NUMBER: _ClassVar[int]
    VIOLATIONS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    status: ItemStatus
    seq: int
    content_hash: str
    chain_hash: str
    violations: _containers.RepeatedCompositeFieldContainer[ItemViolation]
    message: str
    def __init__(self, event_id: _Optional[str] = ..., status: _Optional[_Union[ItemStatus, str]] = ..., seq: _Optional[int] = ..., content_hash: _Optional[str] = ..., chain_hash: _Optional[str] = ..., violations: _Optional[_Iterable[_Union[ItemViolation, _Mapping]]] = ..., message: _Optional[str] = ...) -> None: ...

class AppendAuditEventsResponse(_message.Message):
    __slots__ = ("results", "created", "already_present", "conflicts", "invalid")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    ALREADY_PRESENT_FIELD_NUMBER: _ClassVar[int]
    CONFLICTS_FIELD_NUMBER: _ClassVar[int]
    INVALID_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[AuditEventResult]
    created: int
    already_present: int
    conflicts: int
    invalid: int
    def __init__(self, results: _Optional[_Iterable[_Union[AuditEventResult, _Mapping]]] = ..., created: _Optional[int] = ..., already_present: _Optional[int] = ..., conflicts: _Optional[int] = ..., invalid: _Optional[int] = ...) -> None: ...

class SystemRecordInput(_message.Message):
    __slots__ = ("record_id", "component", "event_type", "severity", "summary", "details", "caused_by", "correlation_id", "run_id", "environment_id", "occurred_at", "request_id", "data_subject_id")
    RECORD_ID_FIELD_NUMBER: _ClassVar[int]
    COMPONENT_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    SEVERITY_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    CAUSED_BY_FIELD_NUMBER: _ClassVar[int]
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_ID_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    DATA_SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    record_id: str
    component: str
    event_type: _records_pb2.SystemEventType
    severity: _records_pb2.SystemSeverity
    summary: str
    details: _struct_pb2.Struct
    caused_by: _records_pb2.CausedBy
    correlation_id: str
    run_id: str
    environment_id: str
    occurred_at: _timestamp_pb2.Timestamp
    request_id: str
    data_subject_id: str
    def __init__(self, record_id: _Optional[str] = ..., component: _Optional[str] = ..., event_type: _Optional[_Union[_records_pb2.SystemEventType, str]] = ..., severity: _Optional[_Union[_records_pb2.SystemSeverity, str]] = ..., summary: _Optional[str] = ..., details: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., caused_by: _Optional[_Union[_records_pb2.CausedBy, str]] = ..., correlation_id: _Optional[str] = ..., run_id: _Optional[str] = ..., environment_id: _Optional[str] = ..., occurred_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., request_id: _Optional[str] = ..., data_subject_id: _Optional[str] = ...) -> None: ...

class AppendSystemRecordsRequest(_message.Message):
    __slots__ = ("records",)
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[SystemRecordInput]
    def __init__(self, records: _Optional[_Iterable[_Union[SystemRecordInput, _Mapping]]] = ...) -> None: ...

class SystemRecordResult(_message.Message):
    __slots__ = ("record_id", "status", "content_hash", "violations", "message")
    RECORD_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CONTENT_HASH_FIELD_NUMBER: _ClassVar[int]
    VIOLATIONS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    record_id: str
    status: ItemStatus
    content_hash: str
    violations: _containers.RepeatedCompositeFieldContainer[ItemViolation]
    message: str
    def __init__(self, record_id: _Optional[str] = ..., status: _Optional[_Union[ItemStatus, str]] = ..., content_hash: _Optional[str] = ..., violations: _Optional[_Iterable[_Union[ItemViolation, _Mapping]]] = ..., message: _Optional[str] = ...) -> None: ...

class AppendSystemRecordsResponse(_message.Message):
    __slots__ = ("results", "created", "already_present", "conflicts", "invalid")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    ALREADY_PRESENT_FIELD_NUMBER: _ClassVar[int]
    CONFLICTS_FIELD_NUMBER: _ClassVar[int]
    INVALID_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[SystemRecordResult]
    created: int
    already_present: int
    conflicts: int
    invalid: int
    def __init__(self, results: _Optional[_Iterable[_Union[SystemRecordResult, _Mapping]]] = ..., created: _Optional[int] = ..., already_present: _Optional[int] = ..., conflicts: _Optional[int] = ..., invalid: _Optional[int] = ...) -> None: ...

class StepInput(_message.Message):
    __slots__ = ("step_type", "timestamp", "input_data", "output_data", "metadata", "level", "source", "tokens", "cost_cents", "duration_ms", "content_hash", "data_subject_id")
    STEP_TYPE_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    INPUT_DATA_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_DATA_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    COST_CENTS_FIELD_NUMBER: _ClassVar[int]
    DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    CONTENT_HASH_FIELD_NUMBER: _ClassVar[int]
    DATA_SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    step_type: _records_pb2.StepType
    timestamp: _timestamp_pb2.Timestamp
    input_data: _struct_pb2.Value
    output_data: _struct_pb2.Value
    metadata: _struct_pb2.Struct
    level: _records_pb2.StepLevel
    source: str
    tokens: int
    cost_cents: int
    duration_ms: int
    content_hash: str
    data_subject_id: str
    def __init__(self, step_type: _Optional[_Union[_records_pb2.StepType, str]] = ..., timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., input_data: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., output_data: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., level: _Optional[_Union[_records_pb2.StepLevel, str]] = ..., source: _Optional[str] = ..., tokens: _Optional[int] = ..., cost_cents: _Optional[int] = ..., duration_ms: _Optional[int] = ..., content_hash: _Optional[str] = ..., data_subject_id: _Optional[str] = ...) -> None: ...

class RunInput(_message.Message):
    __slots__ = ("run_id", "trace_id", "agent_id", "project_id", "provider", "model", "status", "executor_type", "outcome", "termination_reason", "input_tokens", "output_tokens", "cost_cents", "currency", "started_at", "completed_at", "steps", "trace_content_hash", "data_subject_id")
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
    COST_CENTS_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_AT_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    TRACE_CONTENT_HASH_FIELD_NUMBER: _ClassVar[int]
    DATA_SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
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
    cost_cents: int
    currency: str
    started_at: _timestamp_pb2.Timestamp
    completed_at: _timestamp_pb2.Timestamp
    steps: _containers.RepeatedCompositeFieldContainer[StepInput]
    trace_content_hash: str
    data_subject_id: str
    def __init__(self, run_id: _Optional[str] = ..., trace_id: _Optional[str] = ..., agent_id: _Optional[str] = ..., project_id: _Optional[str] = ..., provider: _Optional[str] = ..., model: _Optional[str] = ..., status: _Optional[_Union[_records_pb2.LlmRunStatus, str]] = ..., executor_type: _Optional[_Union[_records_pb2.ExecutorType, str]] = ..., outcome: _Optional[_Union[_records_pb2.RunOutcome, str]] = ..., termination_reason: _Optional[str] = ..., input_tokens: _Optional[int] = ..., output_tokens: _Optional[int] = ..., cost_cents: _Optional[int] = ..., currency: _Optional[str] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., completed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., steps: _Optional[_Iterable[_Union[StepInput, _Mapping]]] = ..., trace_content_hash: _Optional[str] = ..., data_subject_id: _Optional[str] = ...) -> None: ...

class RecordRunRequest(_message.Message):
    __slots__ = ("run",)
    RUN_FIELD_NUMBER: _ClassVar[int]
    run: RunInput
    def __init__(self, run: _Optional[_Union[RunInput, _Mapping]] = ...) -> None: ...

class RecordRunStreamRequest(_message.Message):
    __slots__ = ("run", "steps", "last")
    RUN_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    run: RunInput
    steps: _containers.RepeatedCompositeFieldContainer[StepInput]
    last: bool
    def __init__(self, run: _Optional[_Union[RunInput, _Mapping]] = ..., steps: _Optional[_Iterable[_Union[StepInput, _Mapping]]] = ..., last: _Optional[bool] = ...) -> None: ...

class RecordRunResponse(_message.Message):
    __slots__ = ("run_id", "status", "trace_id", "run_content_hash", "trace_content_hash", "step_content_hashes")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_CONTENT_HASH_FIELD_NUMBER: _ClassVar[int]
    TRACE_CONTENT_HASH_FIELD_NUMBER: _ClassVar[int]
    STEP_CONTENT_HASHES_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    status: ItemStatus
    trace_id: str
    run_content_hash: str
    trace_content_hash: str
    step_content_hashes: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, run_id: _Optional[str] = ..., status: _Optional[_Union[ItemStatus, str]] = ..., trace_id: _Optional[str] = ..., run_content_hash: _Optional[str] = ..., trace_content_hash: _Optional[str] = ..., step_content_hashes: _Optional[_Iterable[str]] = ...) -> None: ...

class RecordRunStreamResponse(_message.Message):
    __slots__ = ("run_id", "status", "trace_id", "run_content_hash", "trace_content_hash", "step_content_hashes")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_CONTENT_HASH_FIELD_NUMBER: _ClassVar[int]
    TRACE_CONTENT_HASH_FIELD_NUMBER: _ClassVar[int]
    STEP_CONTENT_HASHES_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    status: ItemStatus
    trace_id: str
    run_content_hash: str
    trace_content_hash: str
    step_content_hashes: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, run_id: _Optional[str] = ..., status: _Optional[_Union[ItemStatus, str]] = ..., trace_id: _Optional[str] = ..., run_content_hash: _Optional[str] = ..., trace_content_hash: _Optional[str] = ..., step_content_hashes: _Optional[_Iterable[str]] = ...) -> None: ...
