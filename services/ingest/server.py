"""The Ingest service: IngestService and the OTLP trace receiver, how producers write evidence (SPEC §2)."""
from __future__ import annotations

from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as otlp_grpc

from aos.ingest.v1 import ingest_service_pb2_grpc as pb_grpc
from aos_runtime.server import ServiceContext, Servicer
from services.ingest import ingest, otlp


def servicers(ctx: ServiceContext) -> list[Servicer]:
    receiver = otlp.TraceReceiver(ctx)  # also seals the OTLP traces kept until they are whole
    return [Servicer(ingest.DESCRIPTOR, pb_grpc.add_IngestServiceServicer_to_server, ingest.IngestService(ctx),
                     bound_bytes=True),
            # OTLP's own protos carry no required_scope option: the scope is given here.
            Servicer(otlp.DESCRIPTOR, otlp_grpc.add_TraceServiceServicer_to_server, receiver,
                     scope="evidence.write", bound_bytes=True, background=receiver.seal_quiet_traces)]
