import datetime

from aos.evidence.v1 import evidence_pb2 as _evidence_pb2
from aos.evidence.v1 import options_pb2 as _options_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ExportScope(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EXPORT_SCOPE_UNSPECIFIED: _ClassVar[ExportScope]
    EXPORT_SCOPE_LLM_RUN: _ClassVar[ExportScope]
    EXPORT_SCOPE_INCIDENT: _ClassVar[ExportScope]
    EXPORT_SCOPE_AUDIT_SLICE: _ClassVar[ExportScope]
    EXPORT_SCOPE_SYSTEM_SLICE: _ClassVar[ExportScope]

class BundleType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BUNDLE_TYPE_UNSPECIFIED: _ClassVar[BundleType]
    BUNDLE_TYPE_EVIDENCE: _ClassVar[BundleType]
    BUNDLE_TYPE_SOC2: _ClassVar[BundleType]
    BUNDLE_TYPE_EXECUTIVE: _ClassVar[BundleType]

class ExportFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EXPORT_FORMAT_UNSPECIFIED: _ClassVar[ExportFormat]
    EXPORT_FORMAT_JSON: _ClassVar[ExportFormat]
    EXPORT_FORMAT_CSV: _ClassVar[ExportFormat]
    EXPORT_FORMAT_PDF: _ClassVar[ExportFormat]
    EXPORT_FORMAT_ZIP: _ClassVar[ExportFormat]

class SigningKeyStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SIGNING_KEY_STATUS_UNSPECIFIED: _ClassVar[SigningKeyStatus]
    SIGNING_KEY_STATUS_ACTIVE: _ClassVar[SigningKeyStatus]
    SIGNING_KEY_STATUS_RETIRED: _ClassVar[SigningKeyStatus]

class ErasureBasis(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ERASURE_BASIS_UNSPECIFIED: _ClassVar[ErasureBasis]
    ERASURE_BASIS_RECORDED: _ClassVar[ErasureBasis]
    ERASURE_BASIS_UNTRACKED: _ClassVar[ErasureBasis]
EXPORT_SCOPE_UNSPECIFIED: ExportScope
EXPORT_SCOPE_LLM_RUN: ExportScope
EXPORT_SCOPE_INCIDENT: ExportScope
EXPORT_SCOPE_AUDIT_SLICE: ExportScope
EXPORT_SCOPE_SYSTEM_SLICE: ExportScope
BUNDLE_TYPE_UNSPECIFIED: BundleType
BUNDLE_TYPE_EVIDENCE: BundleType
BUNDLE_TYPE_SOC2: BundleType
BUNDLE_TYPE_EXECUTIVE: BundleType
EXPORT_FORMAT_UNSPECIFIED: ExportFormat
EXPORT_FORMAT_JSON: ExportFormat
EXPORT_FORMAT_CSV: ExportFormat
EXPORT_FORMAT_PDF: ExportFormat
EXPORT_FORMAT_ZIP: ExportFormat
SIGNING_KEY_STATUS_UNSPECIFIED: SigningKeyStatus
SIGNING_KEY_STATUS_ACTIVE: SigningKeyStatus
SIGNING_KEY_STATUS_RETIRED: SigningKeyStatus
ERASURE_BASIS_UNSPECIFIED: ErasureBasis
ERASURE_BASIS_RECORDED: ErasureBasis
ERASURE_BASIS_UNTRACKED: ErasureBasis

class ExportErasure(_message.Message):
    __slots__ = ("erasure_id", "basis", "payloads_erased", "erased_at")
    ERASURE_ID_FIELD_NUMBER: _ClassVar[int]
    BASIS_FIELD_NUMBER: _ClassVar[int]
    PAYLOADS_ERASED_FIELD_NUMBER: _ClassVar[int]
    ERASED_AT_FIELD_NUMBER: _ClassVar[int]
    erasure_id: str
    basis: ErasureBasis
    payloads_erased: int
    erased_at: _timestamp_pb2.Timestamp
    def __init__(self, erasure_id: _Optional[str] = ..., basis: _Optional[_Union[ErasureBasis, str]] = ..., payloads_erased: _Optional[int] = ..., erased_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class RedactionCount(_message.Message):
    __slots__ = ("kind", "count")
    KIND_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    kind: str
    count: int
    def __init__(self, kind: _Optional[str] = ..., count: _Optional[int] = ...) -> None: ...

class RedactionSummary(_message.Message):
    __slots__ = ("profile", "counts")
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    profile: str
    counts: _containers.RepeatedCompositeFieldContainer[RedactionCount]
    def __init__(self, profile: _Optional[str] = ..., counts: _Optional[_Iterable[_Union[RedactionCount, _Mapping]]] = ...) -> None: ...

class Export(_message.Message):
    __slots__ = ("export_id", "tenant_id", "scope", "run_id", "incident_id", "slice_filter", "bundle_type", "format", "content_type", "filename", "size_bytes", "checksum", "created_at", "requested_by_type", "requested_by_id", "seq", "prev_hash", "chain_hash", "signing_key_id", "redaction", "manifest", "dsse_envelope", "idempotency_key", "metadata", "retention_class", "compliance_tags", "content_erased", "payloads_erased", "erasure_ids", "erasures")
    EXPORT_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    INCIDENT_ID_FIELD_NUMBER: _ClassVar[int]
    SLICE_FILTER_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_TYPE_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    CHECKSUM_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_BY_TYPE_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_BY_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    PREV_HASH_FIELD_NUMBER: _ClassVar[int]
    CHAIN_HASH_FIELD_NUMBER: _ClassVar[int]
    SIGNING_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    REDACTION_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_FIELD_NUMBER: _ClassVar[int]
    DSSE_ENVELOPE_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    RETENTION_CLASS_FIELD_NUMBER: _ClassVar[int]
    COMPLIANCE_TAGS_FIELD_NUMBER: _ClassVar[int]
    CONTENT_ERASED_FIELD_NUMBER: _ClassVar[int]
    PAYLOADS_ERASED_FIELD_NUMBER: _ClassVar[int]
    ERASURE_IDS_FIELD_NUMBER: _ClassVar[int]
    ERASURES_FIELD_NUMBER: _ClassVar[int]
    export_id: str
    tenant_id: str
    scope: ExportScope
    run_id: str
    incident_id: str
    slice_filter: str
    bundle_type: BundleType
    format: ExportFormat
    content_type: str
    filename: str
    size_bytes: int
    checksum: str
    created_at: _timestamp_pb2.Timestamp
    requested_by_type: _evidence_pb2.ActorType
    requested_by_id: str
    seq: int
    prev_hash: str
    chain_hash: str
    signing_key_id: str
    redaction: RedactionSummary
    manifest: str
    dsse_envelope: str
    idempotency_key: str
    metadata: _evidence_pb2.EvidenceMetadata
    retention_class: str
    compliance_tags: _containers.RepeatedScalarFieldContainer[str]
    content_erased: bool
    payloads_erased: int
    erasure_ids: _containers.RepeatedScalarFieldContainer[str]
    erasures: _containers.RepeatedCompositeFieldContainer[ExportErasure]
    def __init__(self, export_id: _Optional[str] = ..., tenant_id: _Optional[str] = ..., scope: _Optional[_Union[ExportScope, str]] = ..., run_id: _Optional[str] = ..., incident_id: _Optional[str] = ..., slice_filter: _Optional[str] = ..., bundle_type: _Optional[_Union[BundleType, str]] = ..., format: _Optional[_Union[ExportFormat, str]] = ..., content_type: _Optional[str] = ..., filename: _Optional[str] = ..., size_bytes: _Optional[int] = ..., checksum: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., requested_by_type: _Optional[_Union[_evidence_pb2.ActorType, str]] = ..., requested_by_id: _Optional[str] = ..., seq: _Optional[int] = ..., prev_hash: _Optional[str] = ..., chain_hash: _Optional[str] = ..., signing_key_id: _Optional[str] = ..., redaction: _Optional[_Union[RedactionSummary, _Mapping]] = ..., manifest: _Optional[str] = ..., dsse_envelope: _Optional[str] = ..., idempotency_key: _Optional[str] = ..., metadata: _Optional[_Union[_evidence_pb2.EvidenceMetadata, _Mapping]] = ..., retention_class: _Optional[str] = ..., compliance_tags: _Optional[_Iterable[str]] = ..., content_erased: _Optional[bool] = ..., payloads_erased: _Optional[int] = ..., erasure_ids: _Optional[_Iterable[str]] = ..., erasures: _Optional[_Iterable[_Union[ExportErasure, _Mapping]]] = ...) -> None: ...

class SigningKey(_message.Message):
    __slots__ = ("key_id", "algorithm", "public_key", "valid_from", "valid_until", "status")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    VALID_FROM_FIELD_NUMBER: _ClassVar[int]
    VALID_UNTIL_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    algorithm: str
    public_key: bytes
    valid_from: _timestamp_pb2.Timestamp
    valid_until: _timestamp_pb2.Timestamp
    status: SigningKeyStatus
    def __init__(self, key_id: _Optional[str] = ..., algorithm: _Optional[str] = ..., public_key: _Optional[bytes] = ..., valid_from: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., valid_until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., status: _Optional[_Union[SigningKeyStatus, str]] = ...) -> None: ...

class ExportCheck(_message.Message):
    __slots__ = ("name", "passed", "detail")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PASSED_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    name: str
    passed: bool
    detail: str
    def __init__(self, name: _Optional[str] = ..., passed: _Optional[bool] = ..., detail: _Optional[str] = ...) -> None: ...
