from aos.evidence.v1 import options_pb2 as _options_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from typing import ClassVar as _ClassVar

DESCRIPTOR: _descriptor.FileDescriptor

class LlmRunStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LLM_RUN_STATUS_UNSPECIFIED: _ClassVar[LlmRunStatus]
    LLM_RUN_STATUS_SUCCEEDED: _ClassVar[LlmRunStatus]
    LLM_RUN_STATUS_FAILED: _ClassVar[LlmRunStatus]
    LLM_RUN_STATUS_ABORTED: _ClassVar[LlmRunStatus]

class ExecutorType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EXECUTOR_TYPE_UNSPECIFIED: _ClassVar[ExecutorType]
    EXECUTOR_TYPE_LLM: _ClassVar[ExecutorType]
    EXECUTOR_TYPE_AGENT: _ClassVar[ExecutorType]
    EXECUTOR_TYPE_HUMAN: _ClassVar[ExecutorType]

class RunOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RUN_OUTCOME_UNSPECIFIED: _ClassVar[RunOutcome]
    RUN_OUTCOME_SUCCESS: _ClassVar[RunOutcome]
    RUN_OUTCOME_FAILURE: _ClassVar[RunOutcome]
    RUN_OUTCOME_NEAR_THRESHOLD: _ClassVar[RunOutcome]
    RUN_OUTCOME_TERMINATED: _ClassVar[RunOutcome]

class TraceStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TRACE_STATUS_UNSPECIFIED: _ClassVar[TraceStatus]
    TRACE_STATUS_RUNNING: _ClassVar[TraceStatus]
    TRACE_STATUS_COMPLETED: _ClassVar[TraceStatus]
    TRACE_STATUS_FAILED: _ClassVar[TraceStatus]
    TRACE_STATUS_ABORTED: _ClassVar[TraceStatus]

class StepType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STEP_TYPE_UNSPECIFIED: _ClassVar[StepType]
    STEP_TYPE_INPUT: _ClassVar[StepType]
    STEP_TYPE_LLM_CALL: _ClassVar[StepType]
    STEP_TYPE_TOOL_CALL: _ClassVar[StepType]
    STEP_TYPE_OUTPUT: _ClassVar[StepType]
    STEP_TYPE_POLICY_CHECK: _ClassVar[StepType]
    STEP_TYPE_VIOLATION: _ClassVar[StepType]

class StepLevel(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STEP_LEVEL_UNSPECIFIED: _ClassVar[StepLevel]
    STEP_LEVEL_INFO: _ClassVar[StepLevel]
    STEP_LEVEL_WARNING: _ClassVar[StepLevel]
    STEP_LEVEL_ERROR: _ClassVar[StepLevel]

class SystemEventType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SYSTEM_EVENT_TYPE_UNSPECIFIED: _ClassVar[SystemEventType]
    SYSTEM_EVENT_TYPE_STARTUP: _ClassVar[SystemEventType]
    SYSTEM_EVENT_TYPE_SHUTDOWN: _ClassVar[SystemEventType]
    SYSTEM_EVENT_TYPE_DEPLOY: _ClassVar[SystemEventType]
    SYSTEM_EVENT_TYPE_CONFIG_CHANGE: _ClassVar[SystemEventType]
    SYSTEM_EVENT_TYPE_MIGRATION: _ClassVar[SystemEventType]
    SYSTEM_EVENT_TYPE_ERROR: _ClassVar[SystemEventType]
    SYSTEM_EVENT_TYPE_HEALTH_CHECK: _ClassVar[SystemEventType]
    SYSTEM_EVENT_TYPE_WORKER_EVENT: _ClassVar[SystemEventType]
    SYSTEM_EVENT_TYPE_AUTH_CHANGE: _ClassVar[SystemEventType]

class SystemSeverity(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SYSTEM_SEVERITY_UNSPECIFIED: _ClassVar[SystemSeverity]
    SYSTEM_SEVERITY_DEBUG: _ClassVar[SystemSeverity]
    SYSTEM_SEVERITY_INFO: _ClassVar[SystemSeverity]
    SYSTEM_SEVERITY_WARNING: _ClassVar[SystemSeverity]
    SYSTEM_SEVERITY_ERROR: _ClassVar[SystemSeverity]
    SYSTEM_SEVERITY_CRITICAL: _ClassVar[SystemSeverity]

class CausedBy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CAUSED_BY_UNSPECIFIED: _ClassVar[CausedBy]
    CAUSED_BY_SYSTEM: _ClassVar[CausedBy]
    CAUSED_BY_HUMAN: _ClassVar[CausedBy]
    CAUSED_BY_AUTOMATION: _ClassVar[CausedBy]
LLM_RUN_STATUS_UNSPECIFIED: LlmRunStatus
LLM_RUN_STATUS_SUCCEEDED: LlmRunStatus
LLM_RUN_STATUS_FAILED: LlmRunStatus
LLM_RUN_STATUS_ABORTED: LlmRunStatus
EXECUTOR_TYPE_UNSPECIFIED: ExecutorType
EXECUTOR_TYPE_LLM: ExecutorType
EXECUTOR_TYPE_AGENT: ExecutorType
EXECUTOR_TYPE_HUMAN: ExecutorType
RUN_OUTCOME_UNSPECIFIED: RunOutcome
RUN_OUTCOME_SUCCESS: RunOutcome
RUN_OUTCOME_FAILURE: RunOutcome
RUN_OUTCOME_NEAR_THRESHOLD: RunOutcome
RUN_OUTCOME_TERMINATED: RunOutcome
TRACE_STATUS_UNSPECIFIED: TraceStatus
TRACE_STATUS_RUNNING: TraceStatus
TRACE_STATUS_COMPLETED: TraceStatus
TRACE_STATUS_FAILED: TraceStatus
TRACE_STATUS_ABORTED: TraceStatus
STEP_TYPE_UNSPECIFIED: StepType
STEP_TYPE_INPUT: StepType
STEP_TYPE_LLM_CALL: StepType
STEP_TYPE_TOOL_CALL: StepType
STEP_TYPE_OUTPUT: StepType
STEP_TYPE_POLICY_CHECK: StepType
STEP_TYPE_VIOLATION: StepType
STEP_LEVEL_UNSPECIFIED: StepLevel
STEP_LEVEL_INFO: StepLevel
STEP_LEVEL_WARNING: StepLevel
STEP_LEVEL_ERROR: StepLevel
SYSTEM_EVENT_TYPE_UNSPECIFIED: SystemEventType
SYSTEM_EVENT_TYPE_STARTUP: SystemEventType
SYSTEM_EVENT_TYPE_SHUTDOWN: SystemEventType
SYSTEM_EVENT_TYPE_DEPLOY: SystemEventType
SYSTEM_EVENT_TYPE_CONFIG_CHANGE: SystemEventType
SYSTEM_EVENT_TYPE_MIGRATION: SystemEventType
SYSTEM_EVENT_TYPE_ERROR: SystemEventType
SYSTEM_EVENT_TYPE_HEALTH_CHECK: SystemEventType
SYSTEM_EVENT_TYPE_WORKER_EVENT: SystemEventType
SYSTEM_EVENT_TYPE_AUTH_CHANGE: SystemEventType
SYSTEM_SEVERITY_UNSPECIFIED: SystemSeverity
SYSTEM_SEVERITY_DEBUG: SystemSeverity
SYSTEM_SEVERITY_INFO: SystemSeverity
SYSTEM_SEVERITY_WARNING: SystemSeverity
SYSTEM_SEVERITY_ERROR: SystemSeverity
SYSTEM_SEVERITY_CRITICAL: SystemSeverity
CAUSED_BY_UNSPECIFIED: CausedBy
CAUSED_BY_SYSTEM: CausedBy
CAUSED_BY_HUMAN: CausedBy
CAUSED_BY_AUTOMATION: CausedBy
