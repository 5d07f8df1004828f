"""LlmRunsService, SystemLogsService and AuditLedgerService: read-only raw evidence."""
from __future__ import annotations

from aos.logs.v1 import audit_ledger_service_pb2 as audit_pb, audit_ledger_service_pb2_grpc as audit_grpc
from aos.logs.v1 import llm_runs_service_pb2 as runs_pb, llm_runs_service_pb2_grpc as runs_grpc
from aos.logs.v1 import system_logs_service_pb2 as system_pb, system_logs_service_pb2_grpc as system_grpc
from aos_runtime.server import Servicer, ServiceContext, not_yet_built
from services.logs.audit_ledger import AuditLedgerService

LLM_RUNS = runs_pb.DESCRIPTOR.services_by_name["LlmRunsService"]
SYSTEM_LOGS = system_pb.DESCRIPTOR.services_by_name["SystemLogsService"]
AUDIT_LEDGER = audit_pb.DESCRIPTOR.services_by_name["AuditLedgerService"]


class LlmRunsService(not_yet_built(runs_grpc.LlmRunsServiceServicer, LLM_RUNS, "issue #4")):
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx


class SystemLogsService(not_yet_built(system_grpc.SystemLogsServiceServicer, SYSTEM_LOGS, "issue #4")):
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx


def servicers(ctx: ServiceContext) -> list[Servicer]:
    return [
        Servicer(LLM_RUNS, runs_grpc.add_LlmRunsServiceServicer_to_server, LlmRunsService(ctx)),
        Servicer(SYSTEM_LOGS, system_grpc.add_SystemLogsServiceServicer_to_server, SystemLogsService(ctx)),
        Servicer(AUDIT_LEDGER, audit_grpc.add_AuditLedgerServiceServicer_to_server, AuditLedgerService(ctx)),
    ]
