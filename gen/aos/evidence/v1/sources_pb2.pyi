from aos.evidence.v1 import options_pb2 as _options_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from typing import ClassVar as _ClassVar

DESCRIPTOR: _descriptor.FileDescriptor

class IncidentSeverity(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    INCIDENT_SEVERITY_UNSPECIFIED: _ClassVar[IncidentSeverity]
    INCIDENT_SEVERITY_CRITICAL: _ClassVar[IncidentSeverity]
    INCIDENT_SEVERITY_HIGH: _ClassVar[IncidentSeverity]
    INCIDENT_SEVERITY_MEDIUM: _ClassVar[IncidentSeverity]
    INCIDENT_SEVERITY_LOW: _ClassVar[IncidentSeverity]

class IncidentState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    INCIDENT_STATE_UNSPECIFIED: _ClassVar[IncidentState]
    INCIDENT_STATE_ACTIVE: _ClassVar[IncidentState]
    INCIDENT_STATE_ACKED: _ClassVar[IncidentState]
    INCIDENT_STATE_RESOLVED: _ClassVar[IncidentState]

class ProposalStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PROPOSAL_STATUS_UNSPECIFIED: _ClassVar[ProposalStatus]
    PROPOSAL_STATUS_DRAFT: _ClassVar[ProposalStatus]
    PROPOSAL_STATUS_APPROVED: _ClassVar[ProposalStatus]
    PROPOSAL_STATUS_REJECTED: _ClassVar[ProposalStatus]

class LimitCategory(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LIMIT_CATEGORY_UNSPECIFIED: _ClassVar[LimitCategory]
    LIMIT_CATEGORY_BUDGET: _ClassVar[LimitCategory]
    LIMIT_CATEGORY_RATE: _ClassVar[LimitCategory]
    LIMIT_CATEGORY_THRESHOLD: _ClassVar[LimitCategory]

class LimitScope(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LIMIT_SCOPE_UNSPECIFIED: _ClassVar[LimitScope]
    LIMIT_SCOPE_TENANT: _ClassVar[LimitScope]
    LIMIT_SCOPE_PROJECT: _ClassVar[LimitScope]
    LIMIT_SCOPE_AGENT: _ClassVar[LimitScope]
    LIMIT_SCOPE_PROVIDER: _ClassVar[LimitScope]

class ResetPeriod(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RESET_PERIOD_UNSPECIFIED: _ClassVar[ResetPeriod]
    RESET_PERIOD_DAILY: _ClassVar[ResetPeriod]
    RESET_PERIOD_WEEKLY: _ClassVar[ResetPeriod]
    RESET_PERIOD_MONTHLY: _ClassVar[ResetPeriod]
    RESET_PERIOD_NONE: _ClassVar[ResetPeriod]

class LimitStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LIMIT_STATUS_UNSPECIFIED: _ClassVar[LimitStatus]
    LIMIT_STATUS_ACTIVE: _ClassVar[LimitStatus]
    LIMIT_STATUS_DISABLED: _ClassVar[LimitStatus]

class BreachType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BREACH_TYPE_UNSPECIFIED: _ClassVar[BreachType]
    BREACH_TYPE_BREACHED: _ClassVar[BreachType]
    BREACH_TYPE_EXHAUSTED: _ClassVar[BreachType]
    BREACH_TYPE_THROTTLED: _ClassVar[BreachType]
    BREACH_TYPE_VIOLATED: _ClassVar[BreachType]

class WorkerRunStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WORKER_RUN_STATUS_UNSPECIFIED: _ClassVar[WorkerRunStatus]
    WORKER_RUN_STATUS_QUEUED: _ClassVar[WorkerRunStatus]
    WORKER_RUN_STATUS_RUNNING: _ClassVar[WorkerRunStatus]
    WORKER_RUN_STATUS_COMPLETED: _ClassVar[WorkerRunStatus]
    WORKER_RUN_STATUS_FAILED: _ClassVar[WorkerRunStatus]
    WORKER_RUN_STATUS_CANCELLED: _ClassVar[WorkerRunStatus]
INCIDENT_SEVERITY_UNSPECIFIED: IncidentSeverity
INCIDENT_SEVERITY_CRITICAL: IncidentSeverity
INCIDENT_SEVERITY_HIGH: IncidentSeverity
INCIDENT_SEVERITY_MEDIUM: IncidentSeverity
INCIDENT_SEVERITY_LOW: IncidentSeverity
INCIDENT_STATE_UNSPECIFIED: IncidentState
INCIDENT_STATE_ACTIVE: IncidentState
INCIDENT_STATE_ACKED: IncidentState
INCIDENT_STATE_RESOLVED: IncidentState
PROPOSAL_STATUS_UNSPECIFIED: ProposalStatus
PROPOSAL_STATUS_DRAFT: ProposalStatus
PROPOSAL_STATUS_APPROVED: ProposalStatus
PROPOSAL_STATUS_REJECTED: ProposalStatus
LIMIT_CATEGORY_UNSPECIFIED: LimitCategory
LIMIT_CATEGORY_BUDGET: LimitCategory
LIMIT_CATEGORY_RATE: LimitCategory
LIMIT_CATEGORY_THRESHOLD: LimitCategory
LIMIT_SCOPE_UNSPECIFIED: LimitScope
LIMIT_SCOPE_TENANT: LimitScope
LIMIT_SCOPE_PROJECT: LimitScope
LIMIT_SCOPE_AGENT: LimitScope
LIMIT_SCOPE_PROVIDER: LimitScope
RESET_PERIOD_UNSPECIFIED: ResetPeriod
RESET_PERIOD_DAILY: ResetPeriod
RESET_PERIOD_WEEKLY: ResetPeriod
RESET_PERIOD_MONTHLY: ResetPeriod
RESET_PERIOD_NONE: ResetPeriod
LIMIT_STATUS_UNSPECIFIED: LimitStatus
LIMIT_STATUS_ACTIVE: LimitStatus
LIMIT_STATUS_DISABLED: LimitStatus
BREACH_TYPE_UNSPECIFIED: BreachType
BREACH_TYPE_BREACHED: BreachType
BREACH_TYPE_EXHAUSTED: BreachType
BREACH_TYPE_THROTTLED: BreachType
BREACH_TYPE_VIOLATED: BreachType
WORKER_RUN_STATUS_UNSPECIFIED: WorkerRunStatus
WORKER_RUN_STATUS_QUEUED: WorkerRunStatus
WORKER_RUN_STATUS_RUNNING: WorkerRunStatus
WORKER_RUN_STATUS_COMPLETED: WorkerRunStatus
WORKER_RUN_STATUS_FAILED: WorkerRunStatus
WORKER_RUN_STATUS_CANCELLED: WorkerRunStatus
