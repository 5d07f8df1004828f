"""The Logs service: LlmRuns, SystemLogs, AuditLedger and EvidenceSearch services — read-only raw evidence."""
from __future__ import annotations

from aos.logs.v1 import evidence_search_service_pb2_grpc as search_grpc
from aos_evidence import queries
from aos_runtime import metrics
from aos_runtime.server import ServiceContext, Servicer, preserialized
from services.logs import audit_ledger, llm_runs, search, system_logs


def servicers(ctx: ServiceContext) -> list[Servicer]:
    if ctx.db is not None:  # the ledger's appends and checkpoint age on this service's /metrics
        metrics.ledger.watch(metrics.ledger_reader(ctx.db.engine, queries.ledger_stats))
    return [
        # Their hot reads answer with the answer's wire form (bytes: aos_evidence.wire).
        Servicer(llm_runs.DESCRIPTOR, preserialized(llm_runs.DESCRIPTOR), llm_runs.LlmRunsService(ctx)),
        Servicer(system_logs.DESCRIPTOR, preserialized(system_logs.DESCRIPTOR), system_logs.SystemLogsService(ctx)),
        Servicer(audit_ledger.DESCRIPTOR, preserialized(audit_ledger.DESCRIPTOR), audit_ledger.AuditLedgerService(ctx)),
        Servicer(search.DESCRIPTOR, search_grpc.add_EvidenceSearchServiceServicer_to_server,
                 search.EvidenceSearchService(ctx)),
    ]
