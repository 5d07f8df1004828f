"""Which gRPC server serves which service.

Importing the generated modules registers every descriptor in the default pool,
which is where the route table and the OpenAPI document read them from.
"""
from __future__ import annotations

from collections.abc import Mapping

from google.protobuf import descriptor_pool
from google.protobuf.descriptor import ServiceDescriptor
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2  # noqa: F401 - OTLP's TraceService

from aos.export.v1 import (
    export_service_pb2,  # noqa: F401 - registers the descriptors
    retention_service_pb2,  # noqa: F401
)
from aos.ingest.v1 import ingest_service_pb2  # noqa: F401
from aos.logs.v1 import (  # noqa: F401
    audit_ledger_service_pb2,
    evidence_search_service_pb2,
    llm_runs_service_pb2,
    system_logs_service_pb2,
)
from aos.overview.v1 import overview_service_pb2  # noqa: F401

# Service full name → the server process (a key of Settings.ports) that hosts it.
SERVICE_BACKENDS: Mapping[str, str] = {
    "aos.overview.v1.OverviewService": "overview",
    "aos.logs.v1.LlmRunsService": "logs",
    "aos.logs.v1.SystemLogsService": "logs",
    "aos.logs.v1.AuditLedgerService": "logs",
    "aos.logs.v1.EvidenceSearchService": "logs",
    "aos.export.v1.ExportService": "export",
    "aos.export.v1.RetentionService": "export",
    "aos.ingest.v1.IngestService": "ingest",
}
# OTLP's own service: no REST rules, the gateway serves it as OTLP/HTTP at POST /v1/traces.
OTLP_BACKENDS: Mapping[str, str] = {"opentelemetry.proto.collector.trace.v1.TraceService": "ingest"}


def backend_addresses(servers: Mapping[str, str]) -> dict[str, str]:
    """{service full name: "host:port"} from {server name: "host:port"} (e.g. the suite's)."""
    return {service: servers[server] for service, server in {**SERVICE_BACKENDS, **OTLP_BACKENDS}.items()}


def service_descriptor(full_name: str) -> ServiceDescriptor:
    return descriptor_pool.Default().FindServiceByName(full_name)
