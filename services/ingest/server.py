"""The Ingest service: IngestService, how producers write evidence (SPEC §2)."""
from __future__ import annotations

from aos.ingest.v1 import ingest_service_pb2_grpc as pb_grpc
from aos_runtime.server import ServiceContext, Servicer
from services.ingest import ingest


def servicers(ctx: ServiceContext) -> list[Servicer]:
    return [Servicer(ingest.DESCRIPTOR, pb_grpc.add_IngestServiceServicer_to_server, ingest.IngestService(ctx))]
