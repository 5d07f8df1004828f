"""The Logs service: LlmRuns, SystemLogs, AuditLedger and EvidenceSearch services — read-only raw evidence."""
from __future__ import annotations

from aos.logs.v1 import (
    audit_ledger_service_pb2_grpc as audit_grpc,
    evidence_search_service_pb2_grpc as search_grpc,
    llm_runs_service_pb2_grpc as runs_grpc,
    system_logs_service_pb2_grpc as system_grpc,
)
from aos_evidence import queries
from aos_runtime import metrics
from aos_runtime.server import ServiceContext, Servicer
from services.logs import audit_ledger, llm_runs, search, system_logs


def servicers(ctx: ServiceContext) -> list[Servicer]:
    if ctx.db is not None:  # the ledger's appends and checkpoint age on this service's /metrics
        metrics.ledger.watch(metrics.ledger_reader(ctx.db.engine, queries.ledger_stats))
    return [
        Servicer(llm_runs.DESCRIPTOR, runs_grpc.add_LlmRunsServiceServicer_to_server, llm_runs.LlmRunsService(ctx)),
        Servicer(system_logs.DESCRIPTOR, system_grpc.add_SystemLogsServiceServicer_to_server,
                 system_logs.SystemLogsService(ctx)),
        Servicer(audit_ledger.DESCRIPTOR, audit_grpc.add_AuditLedgerServiceServicer_to_server,
                 audit_ledger.AuditLedgerService(ctx)),
        Servicer(search.DESCRIPTOR, search_grpc.add_EvidenceSearchServiceServicer_to_server,
                 search.EvidenceSearchService(ctx)),
    ]
