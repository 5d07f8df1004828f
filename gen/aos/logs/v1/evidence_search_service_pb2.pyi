import datetime

from aos.evidence.v1 import evidence_pb2 as _evidence_pb2
from aos.evidence.v1 import options_pb2 as _options_pb2
from aos.logs.v1 import records_pb2 as _records_pb2
from google.api import annotations_pb2 as _annotations_pb2
from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EvidenceSource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EVIDENCE_SOURCE_UNSPECIFIED: _ClassVar[EvidenceSource]
    EVIDENCE_SOURCE_AUDIT: _ClassVar[EvidenceSource]
    EVIDENCE_SOURCE_TRACE_STEP: _ClassVar[EvidenceSource]
    EVIDENCE_SOURCE_SYSTEM: _ClassVar[EvidenceSource]
EVIDENCE_SOURCE_UNSPECIFIED: EvidenceSource
EVIDENCE_SOURCE_AUDIT: EvidenceSource
EVIDENCE_SOURCE_TRACE_STEP: EvidenceSource
EVIDENCE_SOURCE_SYSTEM: EvidenceSource

class SearchEvidenceRequest(_message.Message):
    __slots__ = ("query", "page_size", "page_token", "sources", "created_after", "created_before", "run_id", "actor_id", "correlation_id")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    SOURCES_FIELD_NUMBER: _ClassVar[int]
    CREATED_AFTER_FIELD_NUMBER: _ClassVar[int]
    CREATED_BEFORE_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    ACTOR_ID_FIELD_NUMBER: _ClassVar[int]
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    query: str
    page_size: int
    page_token: str
    sources: _containers.RepeatedScalarFieldContainer[EvidenceSource]
    created_after: _timestamp_pb2.Timestamp
    created_before: _timestamp_pb2.Timestamp
    run_id: str
    actor_id: str
    correlation_id: str
    def __init__(self, query: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., sources: _Optional[_Iterable[_Union[EvidenceSource, str]]] = ..., created_after: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., created_before: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., run_id: _Optional[str] = ..., actor_id: _Optional[str] = ..., correlation_id: _Optional[str] = ...) -> None: ...

class SearchHit(_message.Message):
    __slots__ = ("metadata", "source", "matched_fields", "created_at", "audit_entry", "trace_step", "system_record")
    METADATA_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    MATCHED_FIELDS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    AUDIT_ENTRY_FIELD_NUMBER: _ClassVar[int]
    TRACE_STEP_FIELD_NUMBER: _ClassVar[int]
    SYSTEM_RECORD_FIELD_NUMBER: _ClassVar[int]
    metadata: _evidence_pb2.EvidenceMetadata
    source: EvidenceSource
    matched_fields: _containers.RepeatedScalarFieldContainer[str]
    created_at: _timestamp_pb2.Timestamp
    audit_entry: _records_pb2.AuditEntry
    trace_step: SearchTraceStep
    system_record: _records_pb2.SystemRecord
    def __init__(self, metadata: _Optional[_Union[_evidence_pb2.EvidenceMetadata, _Mapping]] = ..., source: _Optional[_Union[EvidenceSource, str]] = ..., matched_fields: _Optional[_Iterable[str]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., audit_entry: _Optional[_Union[_records_pb2.AuditEntry, _Mapping]] = ..., trace_step: _Optional[_Union[SearchTraceStep, _Mapping]] = ..., system_record: _Optional[_Union[_records_pb2.SystemRecord, _Mapping]] = ...) -> None: ...

class SearchTraceStep(_message.Message):
    __slots__ = ("trace_id", "run_id", "step")
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    trace_id: str
    run_id: str
    step: _records_pb2.TraceStep
    def __init__(self, trace_id: _Optional[str] = ..., run_id: _Optional[str] = ..., step: _Optional[_Union[_records_pb2.TraceStep, _Mapping]] = ...) -> None: ...

class SearchEvidenceResponse(_message.Message):
    __slots__ = ("metadata", "hits", "next_page_token", "total_size", "total_size_is_estimate", "has_more")
    METADATA_FIELD_NUMBER: _ClassVar[int]
    HITS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_IS_ESTIMATE_FIELD_NUMBER: _ClassVar[int]
    HAS_MORE_FIELD_NUMBER: _ClassVar[int]
    metadata: _evidence_pb2.EvidenceMetadata
    hits: _containers.RepeatedCompositeFieldContainer[SearchHit]
    next_page_token: str
    total_size: int
    total_size_is_estimate: bool
    has_more: bool
    def __init__(self, metadata: _Optional[_Union[_evidence_pb2.EvidenceMetadata, _Mapping]] = ..., hits: _Optional[_Iterable[_Union[SearchHit, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., total_size: _Optional[int] = ..., total_size_is_estimate: _Optional[bool] = ..., has_more: _Optional[bool] = ...) -> None: ...
