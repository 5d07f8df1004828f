"""ExportService: evidence bundles, signed, recorded in append-only log_exports."""
from __future__ import annotations

from aos.export.v1 import export_service_pb2 as pb, export_service_pb2_grpc as pb_grpc
from aos_runtime.server import Servicer, ServiceContext, not_yet_built

DESCRIPTOR = pb.DESCRIPTOR.services_by_name["ExportService"]


class ExportService(not_yet_built(pb_grpc.ExportServiceServicer, DESCRIPTOR, "issue #6")):
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx


def servicers(ctx: ServiceContext) -> list[Servicer]:
    return [Servicer(DESCRIPTOR, pb_grpc.add_ExportServiceServicer_to_server, ExportService(ctx))]
