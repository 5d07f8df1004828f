import datetime

from aos.evidence.v1 import bundle_pb2 as _bundle_pb2
from aos.evidence.v1 import evidence_pb2 as _evidence_pb2
from aos.evidence.v1 import integrity_pb2 as _integrity_pb2
from aos.evidence.v1 import options_pb2 as _options_pb2
from aos.logs.v1 import records_pb2 as _records_pb2
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

class AuditSortField(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    AUDIT_SORT_FIELD_UNSPECIFIED: _ClassVar[AuditSortField]
    AUDIT_SORT_FIELD_CREATED_AT: _ClassVar[AuditSortField]
    AUDIT_SORT_FIELD_EVENT_TYPE: _ClassVar[AuditSortField]
    AUDIT_SORT_FIELD_ENTITY_TYPE: _ClassVar[AuditSortField]
    AUDIT_SORT_FIELD_ACTOR: _ClassVar[AuditSortField]
AUDIT_SORT_FIELD_UNSPECIFIED: AuditSortField
AUDIT_SORT_FIELD_CREATED_AT: AuditSortField
AUDIT_SORT_FIELD_EVENT_TYPE: AuditSortField
AUDIT_SORT_FIELD_ENTITY_TYPE: AuditSortField
AUDIT_SORT_FIELD_ACTOR: AuditSortField

class ListAuditEntriesRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "event_type", "entity_type", "actor_type", "actor_id", "correlation_id", "created_after", "created_before", "entity_id", "success", "search", "order", "sort")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    ENTITY_TYPE_FIELD_NUMBER: _ClassVar[int]
    ACTOR_TYPE_FIELD_NUMBER: _ClassVar[int]
    ACTOR_ID_FIELD_NUMBER: _ClassVar[int]
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_AFTER_FIELD_NUMBER: _ClassVar[int]
    CREATED_BEFORE_FIELD_NUMBER: _ClassVar[int]
    ENTITY_ID_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    SEARCH_FIELD_NUMBER: _ClassVar[int]
    ORDER_FIELD_NUMBER: _ClassVar[int]
    SORT_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    event_type: _evidence_pb2.AuditEventType
    entity_type: _evidence_pb2.AuditEntityType
    actor_type: _evidence_pb2.ActorType
    actor_id: str
    correlation_id: str
    created_after: _timestamp_pb2.Timestamp
    created_before: _timestamp_pb2.Timestamp
    entity_id: str
    success: bool
    search: str
    order: _evidence_pb2.SortOrder
    sort: AuditSortField
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., event_type: _Optional[_Union[_evidence_pb2.AuditEventType, str]] = ..., entity_type: _Optional[_Union[_evidence_pb2.AuditEntityType, str]] = ..., actor_type: _Optional[_Union[_evidence_pb2.ActorType, str]] = ..., actor_id: _Optional[str] = ..., correlation_id: _Optional[str] = ..., created_after: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., created_before: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., entity_id: _Optional[str] = ..., success: _Optional[bool] = ..., search: _Optional[str] = ..., order: _Optional[_Union[_evidence_pb2.SortOrder, str]] = ..., sort: _Optional[_Union[AuditSortField, str]] = ...) -> None: ...

class ListAuditEntriesResponse(_message.Message):
    __slots__ = ("metadata", "entries", "next_page_token", "total_size", "total_size_is_estimate", "has_more")
    METADATA_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_IS_ESTIMATE_FIELD_NUMBER: _ClassVar[int]
    HAS_MORE_FIELD_NUMBER: _ClassVar[int]
    metadata: _evidence_pb2.EvidenceMetadata
    entries: _containers.RepeatedCompositeFieldContainer[_records_pb2.AuditEntry]
    next_page_token: str
    total_size: int
    total_size_is_estimate: bool
    has_more: bool
    def __init__(self, metadata: _Optional[_Union[_evidence_pb2.EvidenceMetadata, _Mapping]] = ..., entries: _Optional[_Iterable[_Union[_records_pb2.AuditEntry, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., total_size: _Optional[int] = ..., total_size_is_estimate: _Optional[bool] = ..., has_more: _Optional[bool] = ...) -> None: ...

class GetAuditEntryRequest(_message.Message):
    __slots__ = ("entry_id",)
    ENTRY_ID_FIELD_NUMBER: _ClassVar[int]
    entry_id: str
    def __init__(self, entry_id: _Optional[str] = ...) -> None: ...

class GetAuditEntryResponse(_message.Message):
    __slots__ = ("metadata", "entry", "before_state", "after_state")
    METADATA_FIELD_NUMBER: _ClassVar[int]
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    BEFORE_STATE_FIELD_NUMBER: _ClassVar[int]
    AFTER_STATE_FIELD_NUMBER: _ClassVar[int]
    metadata: _evidence_pb2.EvidenceMetadata
    entry: _records_pb2.AuditEntry
    before_state: _struct_pb2.Struct
    after_state: _struct_pb2.Struct
    def __init__(self, metadata: _Optional[_Union[_evidence_pb2.EvidenceMetadata, _Mapping]] = ..., entry: _Optional[_Union[_records_pb2.AuditEntry, _Mapping]] = ..., before_state: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., after_state: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class ListIdentityEventsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "actor_id", "created_after", "created_before", "search", "order", "sort")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    ACTOR_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_AFTER_FIELD_NUMBER: _ClassVar[int]
    CREATED_BEFORE_FIELD_NUMBER: _ClassVar[int]
    SEARCH_FIELD_NUMBER: _ClassVar[int]
    ORDER_FIELD_NUMBER: _ClassVar[int]
    SORT_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    actor_id: str
    created_after: _timestamp_pb2.Timestamp
    created_before: _timestamp_pb2.Timestamp
    search: str
    order: _evidence_pb2.SortOrder
    sort: AuditSortField
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., actor_id: _Optional[str] = ..., created_after: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., created_before: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., search: _Optional[str] = ..., order: _Optional[_Union[_evidence_pb2.SortOrder, str]] = ..., sort: _Optional[_Union[AuditSortField, str]] = ...) -> None: ...

class ListIdentityEventsResponse(_message.Message):
    __slots__ = ("metadata", "entries", "next_page_token", "total_size", "total_size_is_estimate", "has_more")
    METADATA_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_IS_ESTIMATE_FIELD_NUMBER: _ClassVar[int]
    HAS_MORE_FIELD_NUMBER: _ClassVar[int]
    metadata: _evidence_pb2.EvidenceMetadata
    entries: _containers.RepeatedCompositeFieldContainer[_records_pb2.AuditEntry]
    next_page_token: str
    total_size: int
    total_size_is_estimate: bool
    has_more: bool
    def __init__(self, metadata: _Optional[_Union[_evidence_pb2.EvidenceMetadata, _Mapping]] = ..., entries: _Optional[_Iterable[_Union[_records_pb2.AuditEntry, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., total_size: _Optional[int] = ..., total_size_is_estimate: _Optional[bool] = ..., has_more: _Optional[bool] = ...) -> None: ...

class ListAuthorizationDecisionsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "actor_id", "created_after", "created_before", "search", "order", "sort")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    ACTOR_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_AFTER_FIELD_NUMBER: _ClassVar[int]
    CREATED_BEFORE_FIELD_NUMBER: _ClassVar[int]
    SEARCH_FIELD_NUMBER: _ClassVar[int]
    ORDER_FIELD_NUMBER: _ClassVar[int]
    SORT_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    actor_id: str
    created_after: _timestamp_pb2.Timestamp
    created_before: _timestamp_pb2.Timestamp
    search: str
    order: _evidence_pb2.SortOrder
    sort: AuditSortField
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., actor_id: _Optional[str] = ..., created_after: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., created_before: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., search: _Optional[str] = ..., order: _Optional[_Union[_evidence_pb2.SortOrder, str]] = ..., sort: _Optional[_Union[AuditSortField, str]] = ...) -> None: ...

class ListAuthorizationDecisionsResponse(_message.Message):
    __slots__ = ("metadata", "entries", "next_page_token", "total_size", "total_size_is_estimate", "has_more")
    METADATA_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_IS_ESTIMATE_FIELD_NUMBER: _ClassVar[int]
    HAS_MORE_FIELD_NUMBER: _ClassVar[int]
    metadata: _evidence_pb2.EvidenceMetadata
    entries: _containers.RepeatedCompositeFieldContainer[_records_pb2.AuditEntry]
    next_page_token: str
    total_size: int
    total_size_is_estimate: bool
    has_more: bool
    def __init__(self, metadata: _Optional[_Union[_evidence_pb2.EvidenceMetadata, _Mapping]] = ..., entries: _Optional[_Iterable[_Union[_records_pb2.AuditEntry, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., total_size: _Optional[int] = ..., total_size_is_estimate: _Optional[bool] = ..., has_more: _Optional[bool] = ...) -> None: ...

class ListAccessEventsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "actor_id", "created_after", "created_before", "search", "order", "sort")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    ACTOR_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_AFTER_FIELD_NUMBER: _ClassVar[int]
    CREATED_BEFORE_FIELD_NUMBER: _ClassVar[int]
    SEARCH_FIELD_NUMBER: _ClassVar[int]
    ORDER_FIELD_NUMBER: _ClassVar[int]
    SORT_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    actor_id: str
    created_after: _timestamp_pb2.Timestamp
    created_before: _timestamp_pb2.Timestamp
    search: str
    order: _evidence_pb2.SortOrder
    sort: AuditSortField
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., actor_id: _Optional[str] = ..., created_after: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., created_before: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., search: _Optional[str] = ..., order: _Optional[_Union[_evidence_pb2.SortOrder, str]] = ..., sort: _Optional[_Union[AuditSortField, str]] = ...) -> None: ...

class ListAccessEventsResponse(_message.Message):
    __slots__ = ("metadata", "entries", "next_page_token", "total_size", "total_size_is_estimate", "has_more")
    METADATA_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_IS_ESTIMATE_FIELD_NUMBER: _ClassVar[int]
    HAS_MORE_FIELD_NUMBER: _ClassVar[int]
    metadata: _evidence_pb2.EvidenceMetadata
    entries: _containers.RepeatedCompositeFieldContainer[_records_pb2.AuditEntry]
    next_page_token: str
    total_size: int
    total_size_is_estimate: bool
    has_more: bool
    def __init__(self, metadata: _Optional[_Union[_evidence_pb2.EvidenceMetadata, _Mapping]] = ..., entries: _Optional[_Iterable[_Union[_records_pb2.AuditEntry, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., total_size: _Optional[int] = ..., total_size_is_estimate: _Optional[bool] = ..., has_more: _Optional[bool] = ...) -> None: ...

class GetIntegrityReportRequest(_message.Message):
    __slots__ = ("from_seq", "to_seq", "page_token", "max_entries")
    FROM_SEQ_FIELD_NUMBER: _ClassVar[int]
    TO_SEQ_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    MAX_ENTRIES_FIELD_NUMBER: _ClassVar[int]
    from_seq: int
    to_seq: int
    page_token: str
    max_entries: int
    def __init__(self, from_seq: _Optional[int] = ..., to_seq: _Optional[int] = ..., page_token: _Optional[str] = ..., max_entries: _Optional[int] = ...) -> None: ...

class GetIntegrityReportResponse(_message.Message):
    __slots__ = ("metadata", "status", "head", "verified_from_seq", "verified_to_seq", "entries_checked", "anomalies", "next_page_token", "has_more", "checked_at")
    METADATA_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    HEAD_FIELD_NUMBER: _ClassVar[int]
    VERIFIED_FROM_SEQ_FIELD_NUMBER: _ClassVar[int]
    VERIFIED_TO_SEQ_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_CHECKED_FIELD_NUMBER: _ClassVar[int]
    ANOMALIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    HAS_MORE_FIELD_NUMBER: _ClassVar[int]
    CHECKED_AT_FIELD_NUMBER: _ClassVar[int]
    metadata: _evidence_pb2.EvidenceMetadata
    status: _integrity_pb2.IntegrityStatus
    head: _integrity_pb2.ChainHead
    verified_from_seq: int
    verified_to_seq: int
    entries_checked: int
    anomalies: _containers.RepeatedCompositeFieldContainer[_integrity_pb2.ChainAnomaly]
    next_page_token: str
    has_more: bool
    checked_at: _timestamp_pb2.Timestamp
    def __init__(self, metadata: _Optional[_Union[_evidence_pb2.EvidenceMetadata, _Mapping]] = ..., status: _Optional[_Union[_integrity_pb2.IntegrityStatus, str]] = ..., head: _Optional[_Union[_integrity_pb2.ChainHead, _Mapping]] = ..., verified_from_seq: _Optional[int] = ..., verified_to_seq: _Optional[int] = ..., entries_checked: _Optional[int] = ..., anomalies: _Optional[_Iterable[_Union[_integrity_pb2.ChainAnomaly, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., has_more: _Optional[bool] = ..., checked_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListAuditExportsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "created_after", "created_before")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    CREATED_AFTER_FIELD_NUMBER: _ClassVar[int]
    CREATED_BEFORE_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    created_after: _timestamp_pb2.Timestamp
    created_before: _timestamp_pb2.Timestamp
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., created_after: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., created_before: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListAuditExportsResponse(_message.Message):
    __slots__ = ("metadata", "exports", "next_page_token", "total_size", "total_size_is_estimate", "has_more")
    METADATA_FIELD_NUMBER: _ClassVar[int]
    EXPORTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_IS_ESTIMATE_FIELD_NUMBER: _ClassVar[int]
    HAS_MORE_FIELD_NUMBER: _ClassVar[int]
    metadata: _evidence_pb2.EvidenceMetadata
    exports: _containers.RepeatedCompositeFieldContainer[_bundle_pb2.Export]
    next_page_token: str
    total_size: int
    total_size_is_estimate: bool
    has_more: bool
    def __init__(self, metadata: _Optional[_Union[_evidence_pb2.EvidenceMetadata, _Mapping]] = ..., exports: _Optional[_Iterable[_Union[_bundle_pb2.Export, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., total_size: _Optional[int] = ..., total_size_is_estimate: _Optional[bool] = ..., has_more: _Optional[bool] = ...) -> None: ...

class GetInclusionProofRequest(_message.Message):
    __slots__ = ("entry_id", "seq", "tree_size", "log")
    ENTRY_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TREE_SIZE_FIELD_NUMBER: _ClassVar[int]
    LOG_FIELD_NUMBER: _ClassVar[int]
    entry_id: str
    seq: int
    tree_size: int
    log: _integrity_pb2.TransparencyLog
    def __init__(self, entry_id: _Optional[str] = ..., seq: _Optional[int] = ..., tree_size: _Optional[int] = ..., log: _Optional[_Union[_integrity_pb2.TransparencyLog, str]] = ...) -> None: ...

class GetInclusionProofResponse(_message.Message):
    __slots__ = ("metadata", "entry_id", "seq", "leaf_index", "tree_size", "root_hash", "leaf_data", "leaf_hash", "audit_path", "checkpoint")
    METADATA_FIELD_NUMBER: _ClassVar[int]
    ENTRY_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    LEAF_INDEX_FIELD_NUMBER: _ClassVar[int]
    TREE_SIZE_FIELD_NUMBER: _ClassVar[int]
    ROOT_HASH_FIELD_NUMBER: _ClassVar[int]
    LEAF_DATA_FIELD_NUMBER: _ClassVar[int]
    LEAF_HASH_FIELD_NUMBER: _ClassVar[int]
    AUDIT_PATH_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    metadata: _evidence_pb2.EvidenceMetadata
    entry_id: str
    seq: int
    leaf_index: int
    tree_size: int
    root_hash: bytes
    leaf_data: bytes
    leaf_hash: bytes
    audit_path: _containers.RepeatedScalarFieldContainer[bytes]
    checkpoint: _integrity_pb2.LedgerCheckpoint
    def __init__(self, metadata: _Optional[_Union[_evidence_pb2.EvidenceMetadata, _Mapping]] = ..., entry_id: _Optional[str] = ..., seq: _Optional[int] = ..., leaf_index: _Optional[int] = ..., tree_size: _Optional[int] = ..., root_hash: _Optional[bytes] = ..., leaf_data: _Optional[bytes] = ..., leaf_hash: _Optional[bytes] = ..., audit_path: _Optional[_Iterable[bytes]] = ..., checkpoint: _Optional[_Union[_integrity_pb2.LedgerCheckpoint, _Mapping]] = ...) -> None: ...

class GetConsistencyProofRequest(_message.Message):
    __slots__ = ("first_tree_size", "second_tree_size", "log")
    FIRST_TREE_SIZE_FIELD_NUMBER: _ClassVar[int]
    SECOND_TREE_SIZE_FIELD_NUMBER: _ClassVar[int]
    LOG_FIELD_NUMBER: _ClassVar[int]
    first_tree_size: int
    second_tree_size: int
    log: _integrity_pb2.TransparencyLog
    def __init__(self, first_tree_size: _Optional[int] = ..., second_tree_size: _Optional[int] = ..., log: _Optional[_Union[_integrity_pb2.TransparencyLog, str]] = ...) -> None: ...

class GetConsistencyProofResponse(_message.Message):
    __slots__ = ("metadata", "first_tree_size", "first_root_hash", "second_tree_size", "second_root_hash", "proof")
    METADATA_FIELD_NUMBER: _ClassVar[int]
    FIRST_TREE_SIZE_FIELD_NUMBER: _ClassVar[int]
    FIRST_ROOT_HASH_FIELD_NUMBER: _ClassVar[int]
    SECOND_TREE_SIZE_FIELD_NUMBER: _ClassVar[int]
    SECOND_ROOT_HASH_FIELD_NUMBER: _ClassVar[int]
    PROOF_FIELD_NUMBER: _ClassVar[int]
    metadata: _evidence_pb2.EvidenceMetadata
    first_tree_size: int
    first_root_hash: bytes
    second_tree_size: int
    second_root_hash: bytes
    proof: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, metadata: _Optional[_Union[_evidence_pb2.EvidenceMetadata, _Mapping]] = ..., first_tree_size: _Optional[int] = ..., first_root_hash: _Optional[bytes] = ..., second_tree_size: _Optional[int] = ..., second_root_hash: _Optional[bytes] = ..., proof: _Optional[_Iterable[bytes]] = ...) -> None: ...

class ListLedgerLeavesRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "from_seq", "to_seq", "log")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    FROM_SEQ_FIELD_NUMBER: _ClassVar[int]
    TO_SEQ_FIELD_NUMBER: _ClassVar[int]
    LOG_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    from_seq: int
    to_seq: int
    log: _integrity_pb2.TransparencyLog
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., from_seq: _Optional[int] = ..., to_seq: _Optional[int] = ..., log: _Optional[_Union[_integrity_pb2.TransparencyLog, str]] = ...) -> None: ...

class LedgerLeaf(_message.Message):
    __slots__ = ("metadata", "seq", "leaf_index", "entry_id", "leaf_data", "leaf_hash")
    METADATA_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    LEAF_INDEX_FIELD_NUMBER: _ClassVar[int]
    ENTRY_ID_FIELD_NUMBER: _ClassVar[int]
    LEAF_DATA_FIELD_NUMBER: _ClassVar[int]
    LEAF_HASH_FIELD_NUMBER: _ClassVar[int]
    metadata: _evidence_pb2.EvidenceMetadata
    seq: int
    leaf_index: int
    entry_id: str
    leaf_data: bytes
    leaf_hash: bytes
    def __init__(self, metadata: _Optional[_Union[_evidence_pb2.EvidenceMetadata, _Mapping]] = ..., seq: _Optional[int] = ..., leaf_index: _Optional[int] = ..., entry_id: _Optional[str] = ..., leaf_data: _Optional[bytes] = ..., leaf_hash: _Optional[bytes] = ...) -> None: ...

class ListLedgerLeavesResponse(_message.Message):
    __slots__ = ("metadata", "leaves", "next_page_token", "total_size", "total_size_is_estimate", "has_more", "last_seq")
    METADATA_FIELD_NUMBER: _ClassVar[int]
    LEAVES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_IS_ESTIMATE_FIELD_NUMBER: _ClassVar[int]
    HAS_MORE_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQ_FIELD_NUMBER: _ClassVar[int]
    metadata: _evidence_pb2.EvidenceMetadata
    leaves: _containers.RepeatedCompositeFieldContainer[LedgerLeaf]
    next_page_token: str
    total_size: int
    total_size_is_estimate: bool
    has_more: bool
    last_seq: int
    def __init__(self, metadata: _Optional[_Union[_evidence_pb2.EvidenceMetadata, _Mapping]] = ..., leaves: _Optional[_Iterable[_Union[LedgerLeaf, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., total_size: _Optional[int] = ..., total_size_is_estimate: _Optional[bool] = ..., has_more: _Optional[bool] = ..., last_seq: _Optional[int] = ...) -> None: ...
