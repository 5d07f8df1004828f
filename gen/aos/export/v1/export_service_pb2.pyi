import datetime

from aos.evidence.v1 import bundle_pb2 as _bundle_pb2
from aos.evidence.v1 import evidence_pb2 as _evidence_pb2
from aos.evidence.v1 import integrity_pb2 as _integrity_pb2
from aos.evidence.v1 import options_pb2 as _options_pb2
from aos.evidence.v1 import records_pb2 as _records_pb2
from google.api import annotations_pb2 as _annotations_pb2
from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AuditSlice(_message.Message):
    __slots__ = ("event_type", "entity_type", "actor_type", "actor_id", "correlation_id", "created_after", "created_before")
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    ENTITY_TYPE_FIELD_NUMBER: _ClassVar[int]
    ACTOR_TYPE_FIELD_NUMBER: _ClassVar[int]
    ACTOR_ID_FIELD_NUMBER: _ClassVar[int]
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_AFTER_FIELD_NUMBER: _ClassVar[int]
    CREATED_BEFORE_FIELD_NUMBER: _ClassVar[int]
    event_type: _evidence_pb2.AuditEventType
    entity_type: _evidence_pb2.AuditEntityType
    actor_type: _evidence_pb2.ActorType
    actor_id: str
    correlation_id: str
    created_after: _timestamp_pb2.Timestamp
    created_before: _timestamp_pb2.Timestamp
    def __init__(self, event_type: _Optional[_Union[_evidence_pb2.AuditEventType, str]] = ..., entity_type: _Optional[_Union[_evidence_pb2.AuditEntityType, str]] = ..., actor_type: _Optional[_Union[_evidence_pb2.ActorType, str]] = ..., actor_id: _Optional[str] = ..., correlation_id: _Optional[str] = ..., created_after: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., created_before: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class SystemSlice(_message.Message):
    __slots__ = ("component", "event_type", "severity", "created_after", "created_before")
    COMPONENT_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    SEVERITY_FIELD_NUMBER: _ClassVar[int]
    CREATED_AFTER_FIELD_NUMBER: _ClassVar[int]
    CREATED_BEFORE_FIELD_NUMBER: _ClassVar[int]
    component: str
    event_type: _records_pb2.SystemEventType
    severity: _records_pb2.SystemSeverity
    created_after: _timestamp_pb2.Timestamp
    created_before: _timestamp_pb2.Timestamp
    def __init__(self, component: _Optional[str] = ..., event_type: _Optional[_Union[_records_pb2.SystemEventType, str]] = ..., severity: _Optional[_Union[_records_pb2.SystemSeverity, str]] = ..., created_after: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., created_before: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreateExportRequest(_message.Message):
    __slots__ = ("run_id", "incident_id", "audit_slice", "system_slice", "bundle_type", "format", "idempotency_key")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    INCIDENT_ID_FIELD_NUMBER: _ClassVar[int]
    AUDIT_SLICE_FIELD_NUMBER: _ClassVar[int]
    SYSTEM_SLICE_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_TYPE_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    incident_id: str
    audit_slice: AuditSlice
    system_slice: SystemSlice
    bundle_type: _bundle_pb2.BundleType
    format: _bundle_pb2.ExportFormat
    idempotency_key: str
    def __init__(self, run_id: _Optional[str] = ..., incident_id: _Optional[str] = ..., audit_slice: _Optional[_Union[AuditSlice, _Mapping]] = ..., system_slice: _Optional[_Union[SystemSlice, _Mapping]] = ..., bundle_type: _Optional[_Union[_bundle_pb2.BundleType, str]] = ..., format: _Optional[_Union[_bundle_pb2.ExportFormat, str]] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class CreateExportResponse(_message.Message):
    __slots__ = ("export",)
    EXPORT_FIELD_NUMBER: _ClassVar[int]
    export: _bundle_pb2.Export
    def __init__(self, export: _Optional[_Union[_bundle_pb2.Export, _Mapping]] = ...) -> None: ...

class GetExportRequest(_message.Message):
    __slots__ = ("export_id",)
    EXPORT_ID_FIELD_NUMBER: _ClassVar[int]
    export_id: str
    def __init__(self, export_id: _Optional[str] = ...) -> None: ...

class GetExportResponse(_message.Message):
    __slots__ = ("export", "intoto_envelope")
    EXPORT_FIELD_NUMBER: _ClassVar[int]
    INTOTO_ENVELOPE_FIELD_NUMBER: _ClassVar[int]
    export: _bundle_pb2.Export
    intoto_envelope: str
    def __init__(self, export: _Optional[_Union[_bundle_pb2.Export, _Mapping]] = ..., intoto_envelope: _Optional[str] = ...) -> None: ...

class ListExportsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "scope", "run_id", "incident_id", "created_after", "created_before")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    INCIDENT_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_AFTER_FIELD_NUMBER: _ClassVar[int]
    CREATED_BEFORE_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    scope: _bundle_pb2.ExportScope
    run_id: str
    incident_id: str
    created_after: _timestamp_pb2.Timestamp
    created_before: _timestamp_pb2.Timestamp
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., scope: _Optional[_Union[_bundle_pb2.ExportScope, str]] = ..., run_id: _Optional[str] = ..., incident_id: _Optional[str] = ..., created_after: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., created_before: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListExportsResponse(_message.Message):
    __slots__ = ("exports", "next_page_token", "total_size", "total_size_is_estimate", "has_more")
    EXPORTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_IS_ESTIMATE_FIELD_NUMBER: _ClassVar[int]
    HAS_MORE_FIELD_NUMBER: _ClassVar[int]
    exports: _containers.RepeatedCompositeFieldContainer[_bundle_pb2.Export]
    next_page_token: str
    total_size: int
    total_size_is_estimate: bool
    has_more: bool
    def __init__(self, exports: _Optional[_Iterable[_Union[_bundle_pb2.Export, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., total_size: _Optional[int] = ..., total_size_is_estimate: _Optional[bool] = ..., has_more: _Optional[bool] = ...) -> None: ...

class DownloadExportRequest(_message.Message):
    __slots__ = ("export_id",)
    EXPORT_ID_FIELD_NUMBER: _ClassVar[int]
    export_id: str
    def __init__(self, export_id: _Optional[str] = ...) -> None: ...

class DownloadExportResponse(_message.Message):
    __slots__ = ("data", "content_type", "filename", "size_bytes", "checksum")
    DATA_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    CHECKSUM_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    content_type: str
    filename: str
    size_bytes: int
    checksum: str
    def __init__(self, data: _Optional[bytes] = ..., content_type: _Optional[str] = ..., filename: _Optional[str] = ..., size_bytes: _Optional[int] = ..., checksum: _Optional[str] = ...) -> None: ...

class VerifyExportRequest(_message.Message):
    __slots__ = ("export_id", "recompute")
    EXPORT_ID_FIELD_NUMBER: _ClassVar[int]
    RECOMPUTE_FIELD_NUMBER: _ClassVar[int]
    export_id: str
    recompute: bool
    def __init__(self, export_id: _Optional[str] = ..., recompute: _Optional[bool] = ...) -> None: ...

class VerifyExportResponse(_message.Message):
    __slots__ = ("valid", "checks", "verified_at", "recorded", "verifier_version", "audit_entry_id", "audit_entry_seq", "payloads_erased", "erasure_ids", "erasures")
    VALID_FIELD_NUMBER: _ClassVar[int]
    CHECKS_FIELD_NUMBER: _ClassVar[int]
    VERIFIED_AT_FIELD_NUMBER: _ClassVar[int]
    RECORDED_FIELD_NUMBER: _ClassVar[int]
    VERIFIER_VERSION_FIELD_NUMBER: _ClassVar[int]
    AUDIT_ENTRY_ID_FIELD_NUMBER: _ClassVar[int]
    AUDIT_ENTRY_SEQ_FIELD_NUMBER: _ClassVar[int]
    PAYLOADS_ERASED_FIELD_NUMBER: _ClassVar[int]
    ERASURE_IDS_FIELD_NUMBER: _ClassVar[int]
    ERASURES_FIELD_NUMBER: _ClassVar[int]
    valid: bool
    checks: _containers.RepeatedCompositeFieldContainer[_bundle_pb2.ExportCheck]
    verified_at: _timestamp_pb2.Timestamp
    recorded: bool
    verifier_version: str
    audit_entry_id: str
    audit_entry_seq: int
    payloads_erased: int
    erasure_ids: _containers.RepeatedScalarFieldContainer[str]
    erasures: _containers.RepeatedCompositeFieldContainer[_bundle_pb2.ExportErasure]
    def __init__(self, valid: _Optional[bool] = ..., checks: _Optional[_Iterable[_Union[_bundle_pb2.ExportCheck, _Mapping]]] = ..., verified_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., recorded: _Optional[bool] = ..., verifier_version: _Optional[str] = ..., audit_entry_id: _Optional[str] = ..., audit_entry_seq: _Optional[int] = ..., payloads_erased: _Optional[int] = ..., erasure_ids: _Optional[_Iterable[str]] = ..., erasures: _Optional[_Iterable[_Union[_bundle_pb2.ExportErasure, _Mapping]]] = ...) -> None: ...

class ListSigningKeysRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListSigningKeysResponse(_message.Message):
    __slots__ = ("keys",)
    KEYS_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedCompositeFieldContainer[_bundle_pb2.SigningKey]
    def __init__(self, keys: _Optional[_Iterable[_Union[_bundle_pb2.SigningKey, _Mapping]]] = ...) -> None: ...

class GetLedgerCheckpointRequest(_message.Message):
    __slots__ = ("log", "tree_size")
    LOG_FIELD_NUMBER: _ClassVar[int]
    TREE_SIZE_FIELD_NUMBER: _ClassVar[int]
    log: _integrity_pb2.TransparencyLog
    tree_size: int
    def __init__(self, log: _Optional[_Union[_integrity_pb2.TransparencyLog, str]] = ..., tree_size: _Optional[int] = ...) -> None: ...

class GetLedgerCheckpointResponse(_message.Message):
    __slots__ = ("checkpoint", "log_checkpoint")
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    LOG_CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    checkpoint: _integrity_pb2.LedgerCheckpoint
    log_checkpoint: _integrity_pb2.LogCheckpoint
    def __init__(self, checkpoint: _Optional[_Union[_integrity_pb2.LedgerCheckpoint, _Mapping]] = ..., log_checkpoint: _Optional[_Union[_integrity_pb2.LogCheckpoint, _Mapping]] = ...) -> None: ...

class AddCheckpointCosignatureRequest(_message.Message):
    __slots__ = ("log", "tree_size", "checkpoint_note", "cosignature")
    LOG_FIELD_NUMBER: _ClassVar[int]
    TREE_SIZE_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_NOTE_FIELD_NUMBER: _ClassVar[int]
    COSIGNATURE_FIELD_NUMBER: _ClassVar[int]
    log: _integrity_pb2.TransparencyLog
    tree_size: int
    checkpoint_note: str
    cosignature: str
    def __init__(self, log: _Optional[_Union[_integrity_pb2.TransparencyLog, str]] = ..., tree_size: _Optional[int] = ..., checkpoint_note: _Optional[str] = ..., cosignature: _Optional[str] = ...) -> None: ...

class AddCheckpointCosignatureResponse(_message.Message):
    __slots__ = ("checkpoint", "added")
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    ADDED_FIELD_NUMBER: _ClassVar[int]
    checkpoint: _integrity_pb2.LogCheckpoint
    added: bool
    def __init__(self, checkpoint: _Optional[_Union[_integrity_pb2.LogCheckpoint, _Mapping]] = ..., added: _Optional[bool] = ...) -> None: ...
