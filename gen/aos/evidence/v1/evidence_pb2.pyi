import datetime

from aos.evidence.v1 import options_pb2 as _options_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SourceDomain(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SOURCE_DOMAIN_UNSPECIFIED: _ClassVar[SourceDomain]
    SOURCE_DOMAIN_ACTIVITY: _ClassVar[SourceDomain]
    SOURCE_DOMAIN_POLICY: _ClassVar[SourceDomain]
    SOURCE_DOMAIN_INCIDENTS: _ClassVar[SourceDomain]
    SOURCE_DOMAIN_LOGS: _ClassVar[SourceDomain]
    SOURCE_DOMAIN_SYSTEM: _ClassVar[SourceDomain]

class Origin(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ORIGIN_UNSPECIFIED: _ClassVar[Origin]
    ORIGIN_SYSTEM: _ClassVar[Origin]
    ORIGIN_HUMAN: _ClassVar[Origin]
    ORIGIN_AGENT: _ClassVar[Origin]
    ORIGIN_MIGRATION: _ClassVar[Origin]
    ORIGIN_REPLAY: _ClassVar[Origin]

class ActorType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ACTOR_TYPE_UNSPECIFIED: _ClassVar[ActorType]
    ACTOR_TYPE_HUMAN: _ClassVar[ActorType]
    ACTOR_TYPE_AGENT: _ClassVar[ActorType]
    ACTOR_TYPE_SYSTEM: _ClassVar[ActorType]

class AuditEventType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    AUDIT_EVENT_TYPE_UNSPECIFIED: _ClassVar[AuditEventType]
    AUDIT_EVENT_TYPE_POLICY_RULE_CREATED: _ClassVar[AuditEventType]
    AUDIT_EVENT_TYPE_POLICY_RULE_MODIFIED: _ClassVar[AuditEventType]
    AUDIT_EVENT_TYPE_POLICY_RULE_RETIRED: _ClassVar[AuditEventType]
    AUDIT_EVENT_TYPE_POLICY_PROPOSAL_APPROVED: _ClassVar[AuditEventType]
    AUDIT_EVENT_TYPE_POLICY_PROPOSAL_REJECTED: _ClassVar[AuditEventType]
    AUDIT_EVENT_TYPE_LIMIT_CREATED: _ClassVar[AuditEventType]
    AUDIT_EVENT_TYPE_LIMIT_UPDATED: _ClassVar[AuditEventType]
    AUDIT_EVENT_TYPE_LIMIT_BREACHED: _ClassVar[AuditEventType]
    AUDIT_EVENT_TYPE_LIMIT_OVERRIDE_GRANTED: _ClassVar[AuditEventType]
    AUDIT_EVENT_TYPE_LIMIT_OVERRIDE_REVOKED: _ClassVar[AuditEventType]
    AUDIT_EVENT_TYPE_INCIDENT_ACKNOWLEDGED: _ClassVar[AuditEventType]
    AUDIT_EVENT_TYPE_INCIDENT_RESOLVED: _ClassVar[AuditEventType]
    AUDIT_EVENT_TYPE_INCIDENT_MANUALLY_CLOSED: _ClassVar[AuditEventType]
    AUDIT_EVENT_TYPE_EMERGENCY_OVERRIDE_ACTIVATED: _ClassVar[AuditEventType]
    AUDIT_EVENT_TYPE_EMERGENCY_OVERRIDE_DEACTIVATED: _ClassVar[AuditEventType]
    AUDIT_EVENT_TYPE_ACTOR_LOGGED_IN: _ClassVar[AuditEventType]
    AUDIT_EVENT_TYPE_ACTOR_LOGGED_OUT: _ClassVar[AuditEventType]
    AUDIT_EVENT_TYPE_API_KEY_CREATED: _ClassVar[AuditEventType]
    AUDIT_EVENT_TYPE_API_KEY_REVOKED: _ClassVar[AuditEventType]
    AUDIT_EVENT_TYPE_ACCESS_GRANTED: _ClassVar[AuditEventType]
    AUDIT_EVENT_TYPE_ACCESS_DENIED: _ClassVar[AuditEventType]
    AUDIT_EVENT_TYPE_EVIDENCE_EXPORTED: _ClassVar[AuditEventType]
    AUDIT_EVENT_TYPE_EXPORT_VERIFIED: _ClassVar[AuditEventType]
    AUDIT_EVENT_TYPE_RETENTION_POLICY_CHANGED: _ClassVar[AuditEventType]
    AUDIT_EVENT_TYPE_LEGAL_HOLD_PLACED: _ClassVar[AuditEventType]
    AUDIT_EVENT_TYPE_LEGAL_HOLD_RELEASED: _ClassVar[AuditEventType]
    AUDIT_EVENT_TYPE_EVIDENCE_PARTITION_DROPPED: _ClassVar[AuditEventType]
    AUDIT_EVENT_TYPE_SUBJECT_ERASURE_REQUESTED: _ClassVar[AuditEventType]
    AUDIT_EVENT_TYPE_SUBJECT_ERASED: _ClassVar[AuditEventType]
    AUDIT_EVENT_TYPE_EVIDENCE_ROWS_REMOVED: _ClassVar[AuditEventType]

class AuditEntityType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    AUDIT_ENTITY_TYPE_UNSPECIFIED: _ClassVar[AuditEntityType]
    AUDIT_ENTITY_TYPE_POLICY_RULE: _ClassVar[AuditEntityType]
    AUDIT_ENTITY_TYPE_POLICY_PROPOSAL: _ClassVar[AuditEntityType]
    AUDIT_ENTITY_TYPE_LIMIT: _ClassVar[AuditEntityType]
    AUDIT_ENTITY_TYPE_INCIDENT: _ClassVar[AuditEntityType]
    AUDIT_ENTITY_TYPE_ACTOR: _ClassVar[AuditEntityType]
    AUDIT_ENTITY_TYPE_API_KEY: _ClassVar[AuditEntityType]
    AUDIT_ENTITY_TYPE_LOG_EXPORT: _ClassVar[AuditEntityType]
    AUDIT_ENTITY_TYPE_LLM_RUN: _ClassVar[AuditEntityType]
    AUDIT_ENTITY_TYPE_SYSTEM_RECORD: _ClassVar[AuditEntityType]
    AUDIT_ENTITY_TYPE_AUDIT_ENTRY: _ClassVar[AuditEntityType]
    AUDIT_ENTITY_TYPE_RETENTION_POLICY: _ClassVar[AuditEntityType]
    AUDIT_ENTITY_TYPE_LEGAL_HOLD: _ClassVar[AuditEntityType]
    AUDIT_ENTITY_TYPE_EVIDENCE_PARTITION: _ClassVar[AuditEntityType]
    AUDIT_ENTITY_TYPE_DATA_SUBJECT: _ClassVar[AuditEntityType]

class SortOrder(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SORT_ORDER_UNSPECIFIED: _ClassVar[SortOrder]
    SORT_ORDER_DESCENDING: _ClassVar[SortOrder]
    SORT_ORDER_ASCENDING: _ClassVar[SortOrder]
SOURCE_DOMAIN_UNSPECIFIED: SourceDomain
SOURCE_DOMAIN_ACTIVITY: SourceDomain
SOURCE_DOMAIN_POLICY: SourceDomain
SOURCE_DOMAIN_INCIDENTS: SourceDomain
SOURCE_DOMAIN_LOGS: SourceDomain
SOURCE_DOMAIN_SYSTEM: SourceDomain
ORIGIN_UNSPECIFIED: Origin
ORIGIN_SYSTEM: Origin
ORIGIN_HUMAN: Origin
ORIGIN_AGENT: Origin
ORIGIN_MIGRATION: Origin
ORIGIN_REPLAY: Origin
ACTOR_TYPE_UNSPECIFIED: ActorType
ACTOR_TYPE_HUMAN: ActorType
ACTOR_TYPE_AGENT: ActorType
ACTOR_TYPE_SYSTEM: ActorType
AUDIT_EVENT_TYPE_UNSPECIFIED: AuditEventType
AUDIT_EVENT_TYPE_POLICY_RULE_CREATED: AuditEventType
AUDIT_EVENT_TYPE_POLICY_RULE_MODIFIED: AuditEventType
AUDIT_EVENT_TYPE_POLICY_RULE_RETIRED: AuditEventType
AUDIT_EVENT_TYPE_POLICY_PROPOSAL_APPROVED: AuditEventType
AUDIT_EVENT_TYPE_POLICY_PROPOSAL_REJECTED: AuditEventType
AUDIT_EVENT_TYPE_LIMIT_CREATED: AuditEventType
AUDIT_EVENT_TYPE_LIMIT_UPDATED: AuditEventType
AUDIT_EVENT_TYPE_LIMIT_BREACHED: AuditEventType
AUDIT_EVENT_TYPE_LIMIT_OVERRIDE_GRANTED: AuditEventType
AUDIT_EVENT_TYPE_LIMIT_OVERRIDE_REVOKED: AuditEventType
AUDIT_EVENT_TYPE_INCIDENT_ACKNOWLEDGED: AuditEventType
AUDIT_EVENT_TYPE_INCIDENT_RESOLVED: AuditEventType
AUDIT_EVENT_TYPE_INCIDENT_MANUALLY_CLOSED: AuditEventType
AUDIT_EVENT_TYPE_EMERGENCY_OVERRIDE_ACTIVATED: AuditEventType
AUDIT_EVENT_TYPE_EMERGENCY_OVERRIDE_DEACTIVATED: AuditEventType
AUDIT_EVENT_TYPE_ACTOR_LOGGED_IN: AuditEventType
AUDIT_EVENT_TYPE_ACTOR_LOGGED_OUT: AuditEventType
AUDIT_EVENT_TYPE_API_KEY_CREATED: AuditEventType
AUDIT_EVENT_TYPE_API_KEY_REVOKED: AuditEventType
AUDIT_EVENT_TYPE_ACCESS_GRANTED: AuditEventType
AUDIT_EVENT_TYPE_ACCESS_DENIED: AuditEventType
AUDIT_EVENT_TYPE_EVIDENCE_EXPORTED: AuditEventType
AUDIT_EVENT_TYPE_EXPORT_VERIFIED: AuditEventType
AUDIT_EVENT_TYPE_RETENTION_POLICY_CHANGED: AuditEventType
AUDIT_EVENT_TYPE_LEGAL_HOLD_PLACED: AuditEventType
AUDIT_EVENT_TYPE_LEGAL_HOLD_RELEASED: AuditEventType
AUDIT_EVENT_TYPE_EVIDENCE_PARTITION_DROPPED: AuditEventType
AUDIT_EVENT_TYPE_SUBJECT_ERASURE_REQUESTED: AuditEventType
AUDIT_EVENT_TYPE_SUBJECT_ERASED: AuditEventType
AUDIT_EVENT_TYPE_EVIDENCE_ROWS_REMOVED: AuditEventType
AUDIT_ENTITY_TYPE_UNSPECIFIED: AuditEntityType
AUDIT_ENTITY_TYPE_POLICY_RULE: AuditEntityType
AUDIT_ENTITY_TYPE_POLICY_PROPOSAL: AuditEntityType
AUDIT_ENTITY_TYPE_LIMIT: AuditEntityType
AUDIT_ENTITY_TYPE_INCIDENT: AuditEntityType
AUDIT_ENTITY_TYPE_ACTOR: AuditEntityType
AUDIT_ENTITY_TYPE_API_KEY: AuditEntityType
AUDIT_ENTITY_TYPE_LOG_EXPORT: AuditEntityType
AUDIT_ENTITY_TYPE_LLM_RUN: AuditEntityType
AUDIT_ENTITY_TYPE_SYSTEM_RECORD: AuditEntityType
AUDIT_ENTITY_TYPE_AUDIT_ENTRY: AuditEntityType
AUDIT_ENTITY_TYPE_RETENTION_POLICY: AuditEntityType
AUDIT_ENTITY_TYPE_LEGAL_HOLD: AuditEntityType
AUDIT_ENTITY_TYPE_EVIDENCE_PARTITION: AuditEntityType
AUDIT_ENTITY_TYPE_DATA_SUBJECT: AuditEntityType
SORT_ORDER_UNSPECIFIED: SortOrder
SORT_ORDER_DESCENDING: SortOrder
SORT_ORDER_ASCENDING: SortOrder

class EvidenceMetadata(_message.Message):
    __slots__ = ("tenant_id", "run_id", "human_actor_id", "agent_id", "system_id", "actor_type", "occurred_at", "recorded_at", "timezone", "trace_id", "policy_ids", "incident_ids", "export_id", "correlation_id", "source_domain", "source_component", "origin", "checksum", "immutable")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    HUMAN_ACTOR_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    SYSTEM_ID_FIELD_NUMBER: _ClassVar[int]
    ACTOR_TYPE_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    RECORDED_AT_FIELD_NUMBER: _ClassVar[int]
    TIMEZONE_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    POLICY_IDS_FIELD_NUMBER: _ClassVar[int]
    INCIDENT_IDS_FIELD_NUMBER: _ClassVar[int]
    EXPORT_ID_FIELD_NUMBER: _ClassVar[int]
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_DOMAIN_FIELD_NUMBER: _ClassVar[int]
    SOURCE_COMPONENT_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    CHECKSUM_FIELD_NUMBER: _ClassVar[int]
    IMMUTABLE_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    run_id: str
    human_actor_id: str
    agent_id: str
    system_id: str
    actor_type: ActorType
    occurred_at: _timestamp_pb2.Timestamp
    recorded_at: _timestamp_pb2.Timestamp
    timezone: str
    trace_id: str
    policy_ids: _containers.RepeatedScalarFieldContainer[str]
    incident_ids: _containers.RepeatedScalarFieldContainer[str]
    export_id: str
    correlation_id: str
    source_domain: SourceDomain
    source_component: str
    origin: Origin
    checksum: str
    immutable: bool
    def __init__(self, tenant_id: _Optional[str] = ..., run_id: _Optional[str] = ..., human_actor_id: _Optional[str] = ..., agent_id: _Optional[str] = ..., system_id: _Optional[str] = ..., actor_type: _Optional[_Union[ActorType, str]] = ..., occurred_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., recorded_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., timezone: _Optional[str] = ..., trace_id: _Optional[str] = ..., policy_ids: _Optional[_Iterable[str]] = ..., incident_ids: _Optional[_Iterable[str]] = ..., export_id: _Optional[str] = ..., correlation_id: _Optional[str] = ..., source_domain: _Optional[_Union[SourceDomain, str]] = ..., source_component: _Optional[str] = ..., origin: _Optional[_Union[Origin, str]] = ..., checksum: _Optional[str] = ..., immutable: _Optional[bool] = ...) -> None: ...

class Money(_message.Message):
    __slots__ = ("currency_code", "amount_cents")
    CURRENCY_CODE_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_CENTS_FIELD_NUMBER: _ClassVar[int]
    currency_code: str
    amount_cents: int
    def __init__(self, currency_code: _Optional[str] = ..., amount_cents: _Optional[int] = ...) -> None: ...
