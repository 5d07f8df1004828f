import datetime

from aos.evidence.v1 import evidence_pb2 as _evidence_pb2
from aos.evidence.v1 import options_pb2 as _options_pb2
from aos.evidence.v1 import sources_pb2 as _sources_pb2
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

class PulseStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PULSE_STATUS_UNSPECIFIED: _ClassVar[PulseStatus]
    PULSE_STATUS_HEALTHY: _ClassVar[PulseStatus]
    PULSE_STATUS_ATTENTION_NEEDED: _ClassVar[PulseStatus]
    PULSE_STATUS_CRITICAL: _ClassVar[PulseStatus]

class BudgetStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BUDGET_STATUS_UNSPECIFIED: _ClassVar[BudgetStatus]
    BUDGET_STATUS_OK: _ClassVar[BudgetStatus]
    BUDGET_STATUS_NEAR_THRESHOLD: _ClassVar[BudgetStatus]
    BUDGET_STATUS_BREACHED: _ClassVar[BudgetStatus]

class DecisionSource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DECISION_SOURCE_UNSPECIFIED: _ClassVar[DecisionSource]
    DECISION_SOURCE_INCIDENT: _ClassVar[DecisionSource]
    DECISION_SOURCE_POLICY: _ClassVar[DecisionSource]

class DecisionType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DECISION_TYPE_UNSPECIFIED: _ClassVar[DecisionType]
    DECISION_TYPE_ACK: _ClassVar[DecisionType]
    DECISION_TYPE_APPROVE: _ClassVar[DecisionType]

class DecisionPriority(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DECISION_PRIORITY_UNSPECIFIED: _ClassVar[DecisionPriority]
    DECISION_PRIORITY_CRITICAL: _ClassVar[DecisionPriority]
    DECISION_PRIORITY_HIGH: _ClassVar[DecisionPriority]
    DECISION_PRIORITY_MEDIUM: _ClassVar[DecisionPriority]
    DECISION_PRIORITY_LOW: _ClassVar[DecisionPriority]
PULSE_STATUS_UNSPECIFIED: PulseStatus
PULSE_STATUS_HEALTHY: PulseStatus
PULSE_STATUS_ATTENTION_NEEDED: PulseStatus
PULSE_STATUS_CRITICAL: PulseStatus
BUDGET_STATUS_UNSPECIFIED: BudgetStatus
BUDGET_STATUS_OK: BudgetStatus
BUDGET_STATUS_NEAR_THRESHOLD: BudgetStatus
BUDGET_STATUS_BREACHED: BudgetStatus
DECISION_SOURCE_UNSPECIFIED: DecisionSource
DECISION_SOURCE_INCIDENT: DecisionSource
DECISION_SOURCE_POLICY: DecisionSource
DECISION_TYPE_UNSPECIFIED: DecisionType
DECISION_TYPE_ACK: DecisionType
DECISION_TYPE_APPROVE: DecisionType
DECISION_PRIORITY_UNSPECIFIED: DecisionPriority
DECISION_PRIORITY_CRITICAL: DecisionPriority
DECISION_PRIORITY_HIGH: DecisionPriority
DECISION_PRIORITY_MEDIUM: DecisionPriority
DECISION_PRIORITY_LOW: DecisionPriority

class GetHighlightsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Pulse(_message.Message):
    __slots__ = ("status", "active_incidents", "pending_decisions", "recent_breaches", "reason", "critical_incidents")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_INCIDENTS_FIELD_NUMBER: _ClassVar[int]
    PENDING_DECISIONS_FIELD_NUMBER: _ClassVar[int]
    RECENT_BREACHES_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    CRITICAL_INCIDENTS_FIELD_NUMBER: _ClassVar[int]
    status: PulseStatus
    active_incidents: int
    pending_decisions: int
    recent_breaches: int
    reason: str
    critical_incidents: int
    def __init__(self, status: _Optional[_Union[PulseStatus, str]] = ..., active_incidents: _Optional[int] = ..., pending_decisions: _Optional[int] = ..., recent_breaches: _Optional[int] = ..., reason: _Optional[str] = ..., critical_incidents: _Optional[int] = ...) -> None: ...

class DomainCount(_message.Message):
    __slots__ = ("domain", "total", "pending", "critical", "total_is_estimate")
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    CRITICAL_FIELD_NUMBER: _ClassVar[int]
    TOTAL_IS_ESTIMATE_FIELD_NUMBER: _ClassVar[int]
    domain: str
    total: int
    pending: int
    critical: int
    total_is_estimate: bool
    def __init__(self, domain: _Optional[str] = ..., total: _Optional[int] = ..., pending: _Optional[int] = ..., critical: _Optional[int] = ..., total_is_estimate: _Optional[bool] = ...) -> None: ...

class GetHighlightsResponse(_message.Message):
    __slots__ = ("pulse", "domain_counts", "last_activity_at", "computed_at")
    PULSE_FIELD_NUMBER: _ClassVar[int]
    DOMAIN_COUNTS_FIELD_NUMBER: _ClassVar[int]
    LAST_ACTIVITY_AT_FIELD_NUMBER: _ClassVar[int]
    COMPUTED_AT_FIELD_NUMBER: _ClassVar[int]
    pulse: Pulse
    domain_counts: _containers.RepeatedCompositeFieldContainer[DomainCount]
    last_activity_at: _timestamp_pb2.Timestamp
    computed_at: _timestamp_pb2.Timestamp
    def __init__(self, pulse: _Optional[_Union[Pulse, _Mapping]] = ..., domain_counts: _Optional[_Iterable[_Union[DomainCount, _Mapping]]] = ..., last_activity_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., computed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetCostsRequest(_message.Message):
    __slots__ = ("period_start", "period_end")
    PERIOD_START_FIELD_NUMBER: _ClassVar[int]
    PERIOD_END_FIELD_NUMBER: _ClassVar[int]
    period_start: _timestamp_pb2.Timestamp
    period_end: _timestamp_pb2.Timestamp
    def __init__(self, period_start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., period_end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Period(_message.Message):
    __slots__ = ("start", "end")
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    start: _timestamp_pb2.Timestamp
    end: _timestamp_pb2.Timestamp
    def __init__(self, start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CostActuals(_message.Message):
    __slots__ = ("llm_run_cost",)
    LLM_RUN_COST_FIELD_NUMBER: _ClassVar[int]
    llm_run_cost: _evidence_pb2.Money
    def __init__(self, llm_run_cost: _Optional[_Union[_evidence_pb2.Money, _Mapping]] = ...) -> None: ...

class BudgetLimit(_message.Message):
    __slots__ = ("limit_id", "name", "category", "scope", "scope_id", "reset_period", "window", "max_value", "used_value", "remaining_value", "utilization_bp", "status")
    LIMIT_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    SCOPE_ID_FIELD_NUMBER: _ClassVar[int]
    RESET_PERIOD_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    MAX_VALUE_FIELD_NUMBER: _ClassVar[int]
    USED_VALUE_FIELD_NUMBER: _ClassVar[int]
    REMAINING_VALUE_FIELD_NUMBER: _ClassVar[int]
    UTILIZATION_BP_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    limit_id: str
    name: str
    category: _sources_pb2.LimitCategory
    scope: _sources_pb2.LimitScope
    scope_id: str
    reset_period: _sources_pb2.ResetPeriod
    window: Period
    max_value: _evidence_pb2.Money
    used_value: _evidence_pb2.Money
    remaining_value: _evidence_pb2.Money
    utilization_bp: int
    status: BudgetStatus
    def __init__(self, limit_id: _Optional[str] = ..., name: _Optional[str] = ..., category: _Optional[_Union[_sources_pb2.LimitCategory, str]] = ..., scope: _Optional[_Union[_sources_pb2.LimitScope, str]] = ..., scope_id: _Optional[str] = ..., reset_period: _Optional[_Union[_sources_pb2.ResetPeriod, str]] = ..., window: _Optional[_Union[Period, _Mapping]] = ..., max_value: _Optional[_Union[_evidence_pb2.Money, _Mapping]] = ..., used_value: _Optional[_Union[_evidence_pb2.Money, _Mapping]] = ..., remaining_value: _Optional[_Union[_evidence_pb2.Money, _Mapping]] = ..., utilization_bp: _Optional[int] = ..., status: _Optional[_Union[BudgetStatus, str]] = ...) -> None: ...

class CostViolations(_message.Message):
    __slots__ = ("breach_count", "total_overage")
    BREACH_COUNT_FIELD_NUMBER: _ClassVar[int]
    TOTAL_OVERAGE_FIELD_NUMBER: _ClassVar[int]
    breach_count: int
    total_overage: _evidence_pb2.Money
    def __init__(self, breach_count: _Optional[int] = ..., total_overage: _Optional[_Union[_evidence_pb2.Money, _Mapping]] = ...) -> None: ...

class GetCostsResponse(_message.Message):
    __slots__ = ("currency", "period", "actuals", "limits", "violations")
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    PERIOD_FIELD_NUMBER: _ClassVar[int]
    ACTUALS_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    VIOLATIONS_FIELD_NUMBER: _ClassVar[int]
    currency: str
    period: Period
    actuals: CostActuals
    limits: _containers.RepeatedCompositeFieldContainer[BudgetLimit]
    violations: CostViolations
    def __init__(self, currency: _Optional[str] = ..., period: _Optional[_Union[Period, _Mapping]] = ..., actuals: _Optional[_Union[CostActuals, _Mapping]] = ..., limits: _Optional[_Iterable[_Union[BudgetLimit, _Mapping]]] = ..., violations: _Optional[_Union[CostViolations, _Mapping]] = ...) -> None: ...

class GetBudgetHistoryRequest(_message.Message):
    __slots__ = ("days", "until")
    DAYS_FIELD_NUMBER: _ClassVar[int]
    UNTIL_FIELD_NUMBER: _ClassVar[int]
    days: int
    until: _timestamp_pb2.Timestamp
    def __init__(self, days: _Optional[int] = ..., until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class BudgetDay(_message.Message):
    __slots__ = ("day", "spent", "window", "window_used", "utilization_bp", "status")
    DAY_FIELD_NUMBER: _ClassVar[int]
    SPENT_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    WINDOW_USED_FIELD_NUMBER: _ClassVar[int]
    UTILIZATION_BP_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    day: _timestamp_pb2.Timestamp
    spent: _evidence_pb2.Money
    window: Period
    window_used: _evidence_pb2.Money
    utilization_bp: int
    status: BudgetStatus
    def __init__(self, day: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., spent: _Optional[_Union[_evidence_pb2.Money, _Mapping]] = ..., window: _Optional[_Union[Period, _Mapping]] = ..., window_used: _Optional[_Union[_evidence_pb2.Money, _Mapping]] = ..., utilization_bp: _Optional[int] = ..., status: _Optional[_Union[BudgetStatus, str]] = ...) -> None: ...

class BudgetHistory(_message.Message):
    __slots__ = ("budget", "days")
    BUDGET_FIELD_NUMBER: _ClassVar[int]
    DAYS_FIELD_NUMBER: _ClassVar[int]
    budget: BudgetLimit
    days: _containers.RepeatedCompositeFieldContainer[BudgetDay]
    def __init__(self, budget: _Optional[_Union[BudgetLimit, _Mapping]] = ..., days: _Optional[_Iterable[_Union[BudgetDay, _Mapping]]] = ...) -> None: ...

class GetBudgetHistoryResponse(_message.Message):
    __slots__ = ("currency", "period", "budgets", "tenant_daily_spend")
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    PERIOD_FIELD_NUMBER: _ClassVar[int]
    BUDGETS_FIELD_NUMBER: _ClassVar[int]
    TENANT_DAILY_SPEND_FIELD_NUMBER: _ClassVar[int]
    currency: str
    period: Period
    budgets: _containers.RepeatedCompositeFieldContainer[BudgetHistory]
    tenant_daily_spend: _containers.RepeatedCompositeFieldContainer[_evidence_pb2.Money]
    def __init__(self, currency: _Optional[str] = ..., period: _Optional[_Union[Period, _Mapping]] = ..., budgets: _Optional[_Iterable[_Union[BudgetHistory, _Mapping]]] = ..., tenant_daily_spend: _Optional[_Iterable[_Union[_evidence_pb2.Money, _Mapping]]] = ...) -> None: ...

class ListDecisionsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "source_domain", "priority")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    SOURCE_DOMAIN_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    source_domain: DecisionSource
    priority: DecisionPriority
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., source_domain: _Optional[_Union[DecisionSource, str]] = ..., priority: _Optional[_Union[DecisionPriority, str]] = ...) -> None: ...

class Decision(_message.Message):
    __slots__ = ("source_domain", "entity_type", "entity_id", "decision_type", "priority", "summary", "created_at")
    SOURCE_DOMAIN_FIELD_NUMBER: _ClassVar[int]
    ENTITY_TYPE_FIELD_NUMBER: _ClassVar[int]
    ENTITY_ID_FIELD_NUMBER: _ClassVar[int]
    DECISION_TYPE_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    source_domain: DecisionSource
    entity_type: _evidence_pb2.AuditEntityType
    entity_id: str
    decision_type: DecisionType
    priority: DecisionPriority
    summary: str
    created_at: _timestamp_pb2.Timestamp
    def __init__(self, source_domain: _Optional[_Union[DecisionSource, str]] = ..., entity_type: _Optional[_Union[_evidence_pb2.AuditEntityType, str]] = ..., entity_id: _Optional[str] = ..., decision_type: _Optional[_Union[DecisionType, str]] = ..., priority: _Optional[_Union[DecisionPriority, str]] = ..., summary: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListDecisionsResponse(_message.Message):
    __slots__ = ("decisions", "next_page_token", "total_size", "total_size_is_estimate", "has_more")
    DECISIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_IS_ESTIMATE_FIELD_NUMBER: _ClassVar[int]
    HAS_MORE_FIELD_NUMBER: _ClassVar[int]
    decisions: _containers.RepeatedCompositeFieldContainer[Decision]
    next_page_token: str
    total_size: int
    total_size_is_estimate: bool
    has_more: bool
    def __init__(self, decisions: _Optional[_Iterable[_Union[Decision, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., total_size: _Optional[int] = ..., total_size_is_estimate: _Optional[bool] = ..., has_more: _Optional[bool] = ...) -> None: ...
