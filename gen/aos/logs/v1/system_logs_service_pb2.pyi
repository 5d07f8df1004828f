import datetime

from aos.evidence.v1 import evidence_pb2 as _evidence_pb2
from aos.evidence.v1 import options_pb2 as _options_pb2
from aos.evidence.v1 import records_pb2 as _records_pb2
from aos.logs.v1 import records_pb2 as _records_pb2_1
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

class SystemRecordSortField(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SYSTEM_RECORD_SORT_FIELD_UNSPECIFIED: _ClassVar[SystemRecordSortField]
    SYSTEM_RECORD_SORT_FIELD_CREATED_AT: _ClassVar[SystemRecordSortField]
    SYSTEM_RECORD_SORT_FIELD_SEVERITY: _ClassVar[SystemRecordSortField]

class SnapshotBasis(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SNAPSHOT_BASIS_UNSPECIFIED: _ClassVar[SnapshotBasis]
    SNAPSHOT_BASIS_CORRELATED: _ClassVar[SnapshotBasis]
    SNAPSHOT_BASIS_PRECEDING_BASELINE: _ClassVar[SnapshotBasis]

class TelemetryStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TELEMETRY_STATUS_UNSPECIFIED: _ClassVar[TelemetryStatus]
    TELEMETRY_STATUS_NOT_COLLECTED: _ClassVar[TelemetryStatus]
SYSTEM_RECORD_SORT_FIELD_UNSPECIFIED: SystemRecordSortField
SYSTEM_RECORD_SORT_FIELD_CREATED_AT: SystemRecordSortField
SYSTEM_RECORD_SORT_FIELD_SEVERITY: SystemRecordSortField
SNAPSHOT_BASIS_UNSPECIFIED: SnapshotBasis
SNAPSHOT_BASIS_CORRELATED: SnapshotBasis
SNAPSHOT_BASIS_PRECEDING_BASELINE: SnapshotBasis
TELEMETRY_STATUS_UNSPECIFIED: TelemetryStatus
TELEMETRY_STATUS_NOT_COLLECTED: TelemetryStatus

class ListSystemRecordsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "component", "event_type", "severity", "created_after", "created_before", "request_id", "search", "order", "sort")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    COMPONENT_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    SEVERITY_FIELD_NUMBER: _ClassVar[int]
    CREATED_AFTER_FIELD_NUMBER: _ClassVar[int]
    CREATED_BEFORE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SEARCH_FIELD_NUMBER: _ClassVar[int]
    ORDER_FIELD_NUMBER: _ClassVar[int]
    SORT_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    component: str
    event_type: _records_pb2.SystemEventType
    severity: _records_pb2.SystemSeverity
    created_after: _timestamp_pb2.Timestamp
    created_before: _timestamp_pb2.Timestamp
    request_id: str
    search: str
    order: _evidence_pb2.SortOrder
    sort: SystemRecordSortField
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., component: _Optional[str] = ..., event_type: _Optional[_Union[_records_pb2.SystemEventType, str]] = ..., severity: _Optional[_Union[_records_pb2.SystemSeverity, str]] = ..., created_after: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., created_before: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., request_id: _Optional[str] = ..., search: _Optional[str] = ..., order: _Optional[_Union[_evidence_pb2.SortOrder, str]] = ..., sort: _Optional[_Union[SystemRecordSortField, str]] = ...) -> None: ...

class ListSystemRecordsResponse(_message.Message):
    __slots__ = ("metadata", "records", "next_page_token", "total_size", "total_size_is_estimate", "has_more")
    METADATA_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_IS_ESTIMATE_FIELD_NUMBER: _ClassVar[int]
    HAS_MORE_FIELD_NUMBER: _ClassVar[int]
    metadata: _evidence_pb2.EvidenceMetadata
    records: _containers.RepeatedCompositeFieldContainer[_records_pb2_1.SystemRecord]
    next_page_token: str
    total_size: int
    total_size_is_estimate: bool
    has_more: bool
    def __init__(self, metadata: _Optional[_Union[_evidence_pb2.EvidenceMetadata, _Mapping]] = ..., records: _Optional[_Iterable[_Union[_records_pb2_1.SystemRecord, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., total_size: _Optional[int] = ..., total_size_is_estimate: _Optional[bool] = ..., has_more: _Optional[bool] = ...) -> None: ...

class GetSystemSnapshotRequest(_message.Message):
    __slots__ = ("run_id",)
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    def __init__(self, run_id: _Optional[str] = ...) -> None: ...

class GetSystemSnapshotResponse(_message.Message):
    __slots__ = ("metadata", "run_id", "baseline", "basis")
    METADATA_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    BASELINE_FIELD_NUMBER: _ClassVar[int]
    BASIS_FIELD_NUMBER: _ClassVar[int]
    metadata: _evidence_pb2.EvidenceMetadata
    run_id: str
    baseline: _records_pb2_1.SystemRecord
    basis: SnapshotBasis
    def __init__(self, metadata: _Optional[_Union[_evidence_pb2.EvidenceMetadata, _Mapping]] = ..., run_id: _Optional[str] = ..., baseline: _Optional[_Union[_records_pb2_1.SystemRecord, _Mapping]] = ..., basis: _Optional[_Union[SnapshotBasis, str]] = ...) -> None: ...

class GetSystemTelemetryRequest(_message.Message):
    __slots__ = ("run_id",)
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    def __init__(self, run_id: _Optional[str] = ...) -> None: ...

class GetSystemTelemetryResponse(_message.Message):
    __slots__ = ("metadata", "run_id", "status", "reason", "available_data", "run_event_count")
    METADATA_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_DATA_FIELD_NUMBER: _ClassVar[int]
    RUN_EVENT_COUNT_FIELD_NUMBER: _ClassVar[int]
    metadata: _evidence_pb2.EvidenceMetadata
    run_id: str
    status: TelemetryStatus
    reason: str
    available_data: _containers.RepeatedScalarFieldContainer[str]
    run_event_count: int
    def __init__(self, metadata: _Optional[_Union[_evidence_pb2.EvidenceMetadata, _Mapping]] = ..., run_id: _Optional[str] = ..., status: _Optional[_Union[TelemetryStatus, str]] = ..., reason: _Optional[str] = ..., available_data: _Optional[_Iterable[str]] = ..., run_event_count: _Optional[int] = ...) -> None: ...

class ListSystemRunEventsRequest(_message.Message):
    __slots__ = ("run_id", "page_size", "page_token", "search", "order", "sort")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    SEARCH_FIELD_NUMBER: _ClassVar[int]
    ORDER_FIELD_NUMBER: _ClassVar[int]
    SORT_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    page_size: int
    page_token: str
    search: str
    order: _evidence_pb2.SortOrder
    sort: SystemRecordSortField
    def __init__(self, run_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., search: _Optional[str] = ..., order: _Optional[_Union[_evidence_pb2.SortOrder, str]] = ..., sort: _Optional[_Union[SystemRecordSortField, str]] = ...) -> None: ...

class ListSystemRunEventsResponse(_message.Message):
    __slots__ = ("metadata", "records", "next_page_token", "total_size", "total_size_is_estimate", "has_more")
    METADATA_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_IS_ESTIMATE_FIELD_NUMBER: _ClassVar[int]
    HAS_MORE_FIELD_NUMBER: _ClassVar[int]
    metadata: _evidence_pb2.EvidenceMetadata
    records: _containers.RepeatedCompositeFieldContainer[_records_pb2_1.SystemRecord]
    next_page_token: str
    total_size: int
    total_size_is_estimate: bool
    has_more: bool
    def __init__(self, metadata: _Optional[_Union[_evidence_pb2.EvidenceMetadata, _Mapping]] = ..., records: _Optional[_Iterable[_Union[_records_pb2_1.SystemRecord, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., total_size: _Optional[int] = ..., total_size_is_estimate: _Optional[bool] = ..., has_more: _Optional[bool] = ...) -> None: ...

class GetSystemReplayRequest(_message.Message):
    __slots__ = ("run_id", "window_seconds")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    WINDOW_SECONDS_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    window_seconds: int
    def __init__(self, run_id: _Optional[str] = ..., window_seconds: _Optional[int] = ...) -> None: ...

class GetSystemReplayResponse(_message.Message):
    __slots__ = ("metadata", "replay")
    METADATA_FIELD_NUMBER: _ClassVar[int]
    REPLAY_FIELD_NUMBER: _ClassVar[int]
    metadata: _evidence_pb2.EvidenceMetadata
    replay: _records_pb2_1.ReplayWindow
    def __init__(self, metadata: _Optional[_Union[_evidence_pb2.EvidenceMetadata, _Mapping]] = ..., replay: _Optional[_Union[_records_pb2_1.ReplayWindow, _Mapping]] = ...) -> None: ...

class GetSystemAttributionRequest(_message.Message):
    __slots__ = ("created_after", "created_before", "page_size", "page_token")
    CREATED_AFTER_FIELD_NUMBER: _ClassVar[int]
    CREATED_BEFORE_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    created_after: _timestamp_pb2.Timestamp
    created_before: _timestamp_pb2.Timestamp
    page_size: int
    page_token: str
    def __init__(self, created_after: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., created_before: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class AttributionRow(_message.Message):
    __slots__ = ("caused_by", "component", "event_type", "count", "actor_ids")
    CAUSED_BY_FIELD_NUMBER: _ClassVar[int]
    COMPONENT_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    ACTOR_IDS_FIELD_NUMBER: _ClassVar[int]
    caused_by: _records_pb2.CausedBy
    component: str
    event_type: _records_pb2.SystemEventType
    count: int
    actor_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, caused_by: _Optional[_Union[_records_pb2.CausedBy, str]] = ..., component: _Optional[str] = ..., event_type: _Optional[_Union[_records_pb2.SystemEventType, str]] = ..., count: _Optional[int] = ..., actor_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class GetSystemAttributionResponse(_message.Message):
    __slots__ = ("metadata", "window_start", "window_end", "rows", "records", "next_page_token", "total_size", "has_more")
    METADATA_FIELD_NUMBER: _ClassVar[int]
    WINDOW_START_FIELD_NUMBER: _ClassVar[int]
    WINDOW_END_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    HAS_MORE_FIELD_NUMBER: _ClassVar[int]
    metadata: _evidence_pb2.EvidenceMetadata
    window_start: _timestamp_pb2.Timestamp
    window_end: _timestamp_pb2.Timestamp
    rows: _containers.RepeatedCompositeFieldContainer[AttributionRow]
    records: _containers.RepeatedCompositeFieldContainer[_records_pb2_1.SystemRecord]
    next_page_token: str
    total_size: int
    has_more: bool
    def __init__(self, metadata: _Optional[_Union[_evidence_pb2.EvidenceMetadata, _Mapping]] = ..., window_start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., window_end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., rows: _Optional[_Iterable[_Union[AttributionRow, _Mapping]]] = ..., records: _Optional[_Iterable[_Union[_records_pb2_1.SystemRecord, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., total_size: _Optional[int] = ..., has_more: _Optional[bool] = ...) -> None: ...
