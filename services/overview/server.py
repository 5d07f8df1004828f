"""OverviewService: a read-only projection over other domains' tables (owns none)."""
from __future__ import annotations

from aos.overview.v1 import overview_service_pb2 as pb, overview_service_pb2_grpc as pb_grpc
from aos_runtime.server import Servicer, ServiceContext, not_yet_built

DESCRIPTOR = pb.DESCRIPTOR.services_by_name["OverviewService"]


class OverviewService(not_yet_built(pb_grpc.OverviewServiceServicer, DESCRIPTOR, "issue #5")):
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx


def servicers(ctx: ServiceContext) -> list[Servicer]:
    return [Servicer(DESCRIPTOR, pb_grpc.add_OverviewServiceServicer_to_server, OverviewService(ctx))]
