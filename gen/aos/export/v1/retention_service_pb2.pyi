import datetime

from aos.evidence.v1 import options_pb2 as _options_pb2
from aos.evidence.v1 import records_pb2 as _records_pb2
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

class RetentionRecordType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RETENTION_RECORD_TYPE_UNSPECIFIED: _ClassVar[RetentionRecordType]
    RETENTION_RECORD_TYPE_AUDIT_LEDGER: _ClassVar[RetentionRecordType]
    RETENTION_RECORD_TYPE_LLM_RUNS: _ClassVar[RetentionRecordType]
    RETENTION_RECORD_TYPE_SYSTEM_RECORDS: _ClassVar[RetentionRecordType]

class LegalHoldScope(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LEGAL_HOLD_SCOPE_UNSPECIFIED: _ClassVar[LegalHoldScope]
    LEGAL_HOLD_SCOPE_TENANT: _ClassVar[LegalHoldScope]
    LEGAL_HOLD_SCOPE_RUN: _ClassVar[LegalHoldScope]
    LEGAL_HOLD_SCOPE_INCIDENT: _ClassVar[LegalHoldScope]
    LEGAL_HOLD_SCOPE_SUBJECT: _ClassVar[LegalHoldScope]
RETENTION_RECORD_TYPE_UNSPECIFIED: RetentionRecordType
RETENTION_RECORD_TYPE_AUDIT_LEDGER: RetentionRecordType
RETENTION_RECORD_TYPE_LLM_RUNS: RetentionRecordType
RETENTION_RECORD_TYPE_SYSTEM_RECORDS: RetentionRecordType
LEGAL_HOLD_SCOPE_UNSPECIFIED: LegalHoldScope
LEGAL_HOLD_SCOPE_TENANT: LegalHoldScope
LEGAL_HOLD_SCOPE_RUN: LegalHoldScope
LEGAL_HOLD_SCOPE_INCIDENT: LegalHoldScope
LEGAL_HOLD_SCOPE_SUBJECT: LegalHoldScope

class RetentionPolicy(_message.Message):
    __slots__ = ("record_type", "level", "retention_days", "permanent", "retention_class", "compliance_tags", "is_default", "updated_at", "updated_by_id")
    RECORD_TYPE_FIELD_NUMBER: _ClassVar[int]
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    RETENTION_DAYS_FIELD_NUMBER: _ClassVar[int]
    PERMANENT_FIELD_NUMBER: _ClassVar[int]
    RETENTION_CLASS_FIELD_NUMBER: _ClassVar[int]
    COMPLIANCE_TAGS_FIELD_NUMBER: _ClassVar[int]
    IS_DEFAULT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_BY_ID_FIELD_NUMBER: _ClassVar[int]
    record_type: RetentionRecordType
    level: _records_pb2.SystemSeverity
    retention_days: int
    permanent: bool
    retention_class: str
    compliance_tags: _containers.RepeatedScalarFieldContainer[str]
    is_default: bool
    updated_at: _timestamp_pb2.Timestamp
    updated_by_id: str
    def __init__(self, record_type: _Optional[_Union[RetentionRecordType, str]] = ..., level: _Optional[_Union[_records_pb2.SystemSeverity, str]] = ..., retention_days: _Optional[int] = ..., permanent: _Optional[bool] = ..., retention_class: _Optional[str] = ..., compliance_tags: _Optional[_Iterable[str]] = ..., is_default: _Optional[bool] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_by_id: _Optional[str] = ...) -> None: ...

class LegalHold(_message.Message):
    __slots__ = ("hold_id", "scope", "target_id", "reason", "placed_by_id", "placed_at", "active", "released_at", "released_by_id", "release_reason")
    HOLD_ID_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    TARGET_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    PLACED_BY_ID_FIELD_NUMBER: _ClassVar[int]
    PLACED_AT_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    RELEASED_AT_FIELD_NUMBER: _ClassVar[int]
    RELEASED_BY_ID_FIELD_NUMBER: _ClassVar[int]
    RELEASE_REASON_FIELD_NUMBER: _ClassVar[int]
    hold_id: str
    scope: LegalHoldScope
    target_id: str
    reason: str
    placed_by_id: str
    placed_at: _timestamp_pb2.Timestamp
    active: bool
    released_at: _timestamp_pb2.Timestamp
    released_by_id: str
    release_reason: str
    def __init__(self, hold_id: _Optional[str] = ..., scope: _Optional[_Union[LegalHoldScope, str]] = ..., target_id: _Optional[str] = ..., reason: _Optional[str] = ..., placed_by_id: _Optional[str] = ..., placed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., active: _Optional[bool] = ..., released_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., released_by_id: _Optional[str] = ..., release_reason: _Optional[str] = ...) -> None: ...

class GetRetentionPoliciesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetRetentionPoliciesResponse(_message.Message):
    __slots__ = ("policies",)
    POLICIES_FIELD_NUMBER: _ClassVar[int]
    policies: _containers.RepeatedCompositeFieldContainer[RetentionPolicy]
    def __init__(self, policies: _Optional[_Iterable[_Union[RetentionPolicy, _Mapping]]] = ...) -> None: ...

class SetRetentionPolicyRequest(_message.Message):
    __slots__ = ("record_type", "level", "retention_days", "permanent", "retention_class", "compliance_tags")
    RECORD_TYPE_FIELD_NUMBER: _ClassVar[int]
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    RETENTION_DAYS_FIELD_NUMBER: _ClassVar[int]
    PERMANENT_FIELD_NUMBER: _ClassVar[int]
    RETENTION_CLASS_FIELD_NUMBER: _ClassVar[int]
    COMPLIANCE_TAGS_FIELD_NUMBER: _ClassVar[int]
    record_type: RetentionRecordType
    level: _records_pb2.SystemSeverity
    retention_days: int
    permanent: bool
    retention_class: str
    compliance_tags: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, record_type: _Optional[_Union[RetentionRecordType, str]] = ..., level: _Optional[_Union[_records_pb2.SystemSeverity, str]] = ..., retention_days: _Optional[int] = ..., permanent: _Optional[bool] = ..., retention_class: _Optional[str] = ..., compliance_tags: _Optional[_Iterable[str]] = ...) -> None: ...

class SetRetentionPolicyResponse(_message.Message):
    __slots__ = ("policy", "changed")
    POLICY_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    policy: RetentionPolicy
    changed: bool
    def __init__(self, policy: _Optional[_Union[RetentionPolicy, _Mapping]] = ..., changed: _Optional[bool] = ...) -> None: ...

class ListLegalHoldsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "include_released")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_RELEASED_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    include_released: bool
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., include_released: _Optional[bool] = ...) -> None: ...

class ListLegalHoldsResponse(_message.Message):
    __slots__ = ("holds", "next_page_token", "total_size", "has_more", "total_size_is_estimate")
    HOLDS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    HAS_MORE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_IS_ESTIMATE_FIELD_NUMBER: _ClassVar[int]
    holds: _containers.RepeatedCompositeFieldContainer[LegalHold]
    next_page_token: str
    total_size: int
    has_more: bool
    total_size_is_estimate: bool
    def __init__(self, holds: _Optional[_Iterable[_Union[LegalHold, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., total_size: _Optional[int] = ..., has_more: _Optional[bool] = ..., total_size_is_estimate: _Optional[bool] = ...) -> None: ...

class PlaceLegalHoldRequest(_message.Message):
    __slots__ = ("scope", "target_id", "reason")
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    TARGET_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    scope: LegalHoldScope
    target_id: str
    reason: str
    def __init__(self, scope: _Optional[_Union[LegalHoldScope, str]] = ..., target_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class PlaceLegalHoldResponse(_message.Message):
    __slots__ = ("hold",)
    HOLD_FIELD_NUMBER: _ClassVar[int]
    hold: LegalHold
    def __init__(self, hold: _Optional[_Union[LegalHold, _Mapping]] = ...) -> None: ...

class ReleaseLegalHoldRequest(_message.Message):
    __slots__ = ("hold_id", "reason")
    HOLD_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    hold_id: str
    reason: str
    def __init__(self, hold_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class ReleaseLegalHoldResponse(_message.Message):
    __slots__ = ("hold",)
    HOLD_FIELD_NUMBER: _ClassVar[int]
    hold: LegalHold
    def __init__(self, hold: _Optional[_Union[LegalHold, _Mapping]] = ...) -> None: ...
