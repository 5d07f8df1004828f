"""The Logs service: LlmRunsService, SystemLogsService and AuditLedgerService — read-only raw evidence."""
from __future__ import annotations

from aos.logs.v1 import (
    llm_runs_service_pb2_grpc as runs_grpc,
    system_logs_service_pb2_grpc as system_grpc,
)
from aos_evidence import queries
from aos_runtime import metrics
from aos_runtime.server import ServiceContext, Servicer, preserialized
from services.logs import audit_ledger, llm_runs, system_logs


def servicers(ctx: ServiceContext) -> list[Servicer]:
    if ctx.db is not None:  # the ledger's appends and checkpoint age on this service's /metrics
        metrics.ledger.watch(metrics.ledger_reader(ctx.db.engine, queries.ledger_stats))
    return [
        Servicer(llm_runs.DESCRIPTOR, runs_grpc.add_LlmRunsServiceServicer_to_server, llm_runs.LlmRunsService(ctx)),
        Servicer(system_logs.DESCRIPTOR, system_grpc.add_SystemLogsServiceServicer_to_server,
                 system_logs.SystemLogsService(ctx)),
        # Answers some calls with their wire form (bytes: aos_evidence.wire).
        Servicer(audit_ledger.DESCRIPTOR, preserialized(audit_ledger.DESCRIPTOR), audit_ledger.AuditLedgerService(ctx)),
    ]
