"""SystemLogsService (O1–O5): translates requests into store calls and rows into protos."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import grpc

from aos.logs.v1 import system_logs_service_pb2 as pb, system_logs_service_pb2_grpc as pb_grpc
from aos_evidence import wire
from aos_evidence.messages import CAUSES, SYSTEM_EVENTS, system_record
from aos_runtime import auth, errors
from aos_runtime.evidence import timestamp
from aos_runtime.pagination import Listing
from aos_runtime.server import ServiceContext
from aos_runtime.validation import Request
from services.logs import store
from services.logs.messages import answer_metadata, list_answer
from services.logs.replay import load_replay
from services.logs.search import list_search

DESCRIPTOR = pb.DESCRIPTOR.services_by_name["SystemLogsService"]
TELEMETRY_GAP = ("no infrastructure telemetry producer exists in the platform yet: CPU, memory and latency "
                 "of the run's hosts were never collected, so none can be shown")
AVAILABLE_INSTEAD = ["events", "snapshot", "replay", "attribution"]


class SystemLogsService(pb_grpc.SystemLogsServiceServicer):
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx

    def _listing(self, name: str, filters) -> Listing:
        return Listing.of(self.ctx.page_tokens, auth.principal().tenant_id, name, filters)

    async def ListSystemRecords(self, request: pb.ListSystemRecordsRequest,
                                context: grpc.aio.ServicerContext) -> wire.Encoded[pb.ListSystemRecordsResponse]:
        r = Request()
        fields = pb.ListSystemRecordsRequest.DESCRIPTOR.fields_by_name
        start, end = r.time_range(request)
        filters = {"component": r.optional_text(request.component, "component"),
                   "event_type": r.enum(request.event_type, fields["event_type"].enum_type, "event_type"),
                   "severity": r.enum(request.severity, fields["severity"].enum_type, "severity"),
                   "request_id": r.optional_text(request.request_id, "request_id"),
                   "created_after": start, "created_before": end,
                   "search": list_search(r, request.search), "ascending": r.ascending(request.order),
                   "sort": r.sort(request.sort, fields["sort"].enum_type)}
        limit = r.page_size(request.page_size)
        r.done()
        listing = self._listing("system", filters)
        page = await listing.fetch(self.ctx.db, request.page_token, store.list_system_records, filters, limit=limit)
        return list_answer(listing, page, pb.ListSystemRecordsResponse, "records", "system", system_record,
                           "system_records")

    async def GetSystemSnapshot(self, request: pb.GetSystemSnapshotRequest,
                                context: grpc.aio.ServicerContext) -> pb.GetSystemSnapshotResponse:
        tenant, run_id, _ = _run(request)
        found = await self.ctx.db.run(tenant, _snapshot, tenant, run_id)
        if found is None:
            raise errors.not_found(errors.Resource.LLM_RUN, run_id)
        row, correlated = found
        if row is None:  # never a made-up placeholder
            raise errors.not_found(errors.Resource.SYSTEM_BASELINE, run_id)
        record = system_record(row)
        return pb.GetSystemSnapshotResponse(
            metadata=record.metadata, run_id=run_id, baseline=record,
            basis=pb.SNAPSHOT_BASIS_CORRELATED if correlated else pb.SNAPSHOT_BASIS_PRECEDING_BASELINE)

    async def GetSystemTelemetry(self, request: pb.GetSystemTelemetryRequest,
                                 context: grpc.aio.ServicerContext) -> pb.GetSystemTelemetryResponse:
        tenant, run_id, _ = _run(request)
        count = await self.ctx.db.run(tenant, _telemetry, tenant, run_id)
        if count is None:
            raise errors.not_found(errors.Resource.LLM_RUN, run_id)
        return pb.GetSystemTelemetryResponse(
            metadata=answer_metadata(tenant, "telemetry"), run_id=run_id, status=pb.TELEMETRY_STATUS_NOT_COLLECTED,
            reason=TELEMETRY_GAP, available_data=AVAILABLE_INSTEAD, run_event_count=count)

    async def ListSystemRunEvents(self, request: pb.ListSystemRunEventsRequest,
                                  context: grpc.aio.ServicerContext) -> pb.ListSystemRunEventsResponse:
        r = Request()
        # ListSystemRecords' search, order and sort, within the run's records.
        view = {"search": list_search(r, request.search), "ascending": r.ascending(request.order),
                "sort": r.sort(request.sort, pb.ListSystemRunEventsRequest.DESCRIPTOR.fields_by_name["sort"].enum_type)}
        r.done()
        tenant, run_id, limit = _run(request)
        listing = self._listing("system.run-events", {"run_id": run_id, **view})
        page = await listing.fetch(self.ctx.db, request.page_token, _run_events, run_id, view, limit=limit)
        if page is None:
            raise errors.not_found(errors.Resource.LLM_RUN, run_id)
        records = [system_record(row) for row in page.rows]
        return listing.answer(pb.ListSystemRunEventsResponse, page, records=records,
                              metadata=answer_metadata(tenant, "system_records", records))

    async def GetSystemReplay(self, request: pb.GetSystemReplayRequest,
                              context: grpc.aio.ServicerContext) -> pb.GetSystemReplayResponse:
        window, _ = await load_replay(self.ctx, request, llm=False, policy=False)
        return pb.GetSystemReplayResponse(
            metadata=answer_metadata(auth.principal().tenant_id, "replay", window.events), replay=window)

    async def GetSystemAttribution(self, request: pb.GetSystemAttributionRequest,
                                   context: grpc.aio.ServicerContext) -> pb.GetSystemAttributionResponse:
        r = Request()
        start, end = r.time_range(request)
        limit = r.page_size(request.page_size)
        r.done()
        tenant = auth.principal().tenant_id
        # The token binds the window as asked; a default end ("now") is resolved on the
        # first page and carried in the token, so later pages read the same window.
        listing = self._listing("system.attribution", {"created_after": start, "created_before": end})
        after = listing.after(request.page_token)
        if end is None:
            end = datetime.fromisoformat(after[2]) if after else datetime.now(timezone.utc)
        start = start or end - timedelta(hours=24)
        if start >= end:
            r.violations.add("created_after", "must be earlier than created_before (default: now)")
            r.done()
        rows, page = await self.ctx.db.run(tenant, store.attribution, tenant, start, end, after, limit)
        records = [system_record(row) for row in page.rows]
        return listing.answer(
            pb.GetSystemAttributionResponse, page, end.isoformat(),
            metadata=answer_metadata(tenant, "system_records.attribution", records), window_start=timestamp(start),
            window_end=timestamp(end),
            rows=[pb.AttributionRow(caused_by=CAUSES[row["caused_by"]], component=row["component"],
                                    event_type=SYSTEM_EVENTS[row["event_type"]], count=row["count"],
                                    actor_ids=sorted(row["actor_ids"])) for row in rows],
            records=records)


def _run(request) -> tuple[str, str, int]:
    """(tenant, run id, page size) of a per-run request."""
    r = Request()
    run_id = r.resource_id(request.run_id, "run_id")
    limit = r.page_size(getattr(request, "page_size", 0))
    r.done()
    return auth.principal().tenant_id, run_id, limit


def _snapshot(conn, tenant: str, run_id: str):
    started = store.run_started_at(conn, tenant, run_id)
    if started is None:
        return None
    return store.system_baseline(conn, tenant, run_id, started)


def _telemetry(conn, tenant: str, run_id: str):
    if not store.run_exists(conn, tenant, run_id):
        return None
    return store.run_event_count(conn, tenant, run_id)


def _run_events(conn, tenant: str, run_id: str, view: dict, after, limit: int):
    if not store.run_exists(conn, tenant, run_id):
        return None
    return store.run_system_records(conn, tenant, run_id, after, limit, **view)
