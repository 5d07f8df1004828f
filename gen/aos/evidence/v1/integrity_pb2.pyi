import datetime

from aos.evidence.v1 import options_pb2 as _options_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class IntegrityStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    INTEGRITY_STATUS_UNSPECIFIED: _ClassVar[IntegrityStatus]
    INTEGRITY_STATUS_VERIFIED: _ClassVar[IntegrityStatus]
    INTEGRITY_STATUS_ANOMALIES_FOUND: _ClassVar[IntegrityStatus]
    INTEGRITY_STATUS_EMPTY: _ClassVar[IntegrityStatus]
    INTEGRITY_STATUS_PARTIAL: _ClassVar[IntegrityStatus]

class AnomalyKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ANOMALY_KIND_UNSPECIFIED: _ClassVar[AnomalyKind]
    ANOMALY_KIND_CONTENT_MISMATCH: _ClassVar[AnomalyKind]
    ANOMALY_KIND_BROKEN_LINK: _ClassVar[AnomalyKind]
    ANOMALY_KIND_CHAIN_MISMATCH: _ClassVar[AnomalyKind]
    ANOMALY_KIND_SEQUENCE_GAP: _ClassVar[AnomalyKind]
    ANOMALY_KIND_SEQUENCE_DISORDER: _ClassVar[AnomalyKind]
    ANOMALY_KIND_TRUNCATION: _ClassVar[AnomalyKind]
    ANOMALY_KIND_CHECKPOINT_MISMATCH: _ClassVar[AnomalyKind]

class TransparencyLog(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TRANSPARENCY_LOG_UNSPECIFIED: _ClassVar[TransparencyLog]
    TRANSPARENCY_LOG_LEDGER: _ClassVar[TransparencyLog]
    TRANSPARENCY_LOG_EXPORTS: _ClassVar[TransparencyLog]
INTEGRITY_STATUS_UNSPECIFIED: IntegrityStatus
INTEGRITY_STATUS_VERIFIED: IntegrityStatus
INTEGRITY_STATUS_ANOMALIES_FOUND: IntegrityStatus
INTEGRITY_STATUS_EMPTY: IntegrityStatus
INTEGRITY_STATUS_PARTIAL: IntegrityStatus
ANOMALY_KIND_UNSPECIFIED: AnomalyKind
ANOMALY_KIND_CONTENT_MISMATCH: AnomalyKind
ANOMALY_KIND_BROKEN_LINK: AnomalyKind
ANOMALY_KIND_CHAIN_MISMATCH: AnomalyKind
ANOMALY_KIND_SEQUENCE_GAP: AnomalyKind
ANOMALY_KIND_SEQUENCE_DISORDER: AnomalyKind
ANOMALY_KIND_TRUNCATION: AnomalyKind
ANOMALY_KIND_CHECKPOINT_MISMATCH: AnomalyKind
TRANSPARENCY_LOG_UNSPECIFIED: TransparencyLog
TRANSPARENCY_LOG_LEDGER: TransparencyLog
TRANSPARENCY_LOG_EXPORTS: TransparencyLog

class ChainAnomaly(_message.Message):
    __slots__ = ("seq", "kind", "expected", "actual", "detail")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_FIELD_NUMBER: _ClassVar[int]
    ACTUAL_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    seq: int
    kind: AnomalyKind
    expected: str
    actual: str
    detail: str
    def __init__(self, seq: _Optional[int] = ..., kind: _Optional[_Union[AnomalyKind, str]] = ..., expected: _Optional[str] = ..., actual: _Optional[str] = ..., detail: _Optional[str] = ...) -> None: ...

class ChainHead(_message.Message):
    __slots__ = ("seq", "chain_hash", "created_at")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    CHAIN_HASH_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    seq: int
    chain_hash: str
    created_at: _timestamp_pb2.Timestamp
    def __init__(self, seq: _Optional[int] = ..., chain_hash: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class LedgerCheckpoint(_message.Message):
    __slots__ = ("tenant_id", "seq", "chain_hash", "issued_at", "dsse_envelope")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    CHAIN_HASH_FIELD_NUMBER: _ClassVar[int]
    ISSUED_AT_FIELD_NUMBER: _ClassVar[int]
    DSSE_ENVELOPE_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    seq: int
    chain_hash: str
    issued_at: _timestamp_pb2.Timestamp
    dsse_envelope: str
    def __init__(self, tenant_id: _Optional[str] = ..., seq: _Optional[int] = ..., chain_hash: _Optional[str] = ..., issued_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., dsse_envelope: _Optional[str] = ...) -> None: ...

class LogCheckpoint(_message.Message):
    __slots__ = ("origin", "log", "tree_size", "root_hash", "signed_note", "log_verifier_key", "signed_at", "cosignature_count")
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    LOG_FIELD_NUMBER: _ClassVar[int]
    TREE_SIZE_FIELD_NUMBER: _ClassVar[int]
    ROOT_HASH_FIELD_NUMBER: _ClassVar[int]
    SIGNED_NOTE_FIELD_NUMBER: _ClassVar[int]
    LOG_VERIFIER_KEY_FIELD_NUMBER: _ClassVar[int]
    SIGNED_AT_FIELD_NUMBER: _ClassVar[int]
    COSIGNATURE_COUNT_FIELD_NUMBER: _ClassVar[int]
    origin: str
    log: TransparencyLog
    tree_size: int
    root_hash: bytes
    signed_note: str
    log_verifier_key: str
    signed_at: _timestamp_pb2.Timestamp
    cosignature_count: int
    def __init__(self, origin: _Optional[str] = ..., log: _Optional[_Union[TransparencyLog, str]] = ..., tree_size: _Optional[int] = ..., root_hash: _Optional[bytes] = ..., signed_note: _Optional[str] = ..., log_verifier_key: _Optional[str] = ..., signed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., cosignature_count: _Optional[int] = ...) -> None: ...
