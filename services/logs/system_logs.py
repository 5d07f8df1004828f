"""SystemLogsService (O1–O5): translates requests into store calls and rows into protos."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any, Mapping

from aos.logs.v1 import records_pb2
from aos.logs.v1 import system_logs_service_pb2 as pb, system_logs_service_pb2_grpc as pb_grpc
from aos_runtime import auth, errors
from aos_runtime.evidence import Evidence, metadata, timestamp
from aos_runtime.server import ServiceContext, not_yet_built
from aos_runtime.validation import Request, canonical_names
from services.logs import store

DESCRIPTOR = pb.DESCRIPTOR.services_by_name["SystemLogsService"]
EVENT_TYPES = canonical_names("aos.evidence.v1.SystemEventType")
SEVERITIES = canonical_names("aos.evidence.v1.SystemSeverity")
CAUSES = canonical_names("aos.evidence.v1.CausedBy")
TELEMETRY_GAP = ("no infrastructure telemetry producer exists in the platform yet: CPU, memory and latency "
                 "of the run's hosts were never collected, so none can be shown")
AVAILABLE_INSTEAD = ["events", "snapshot", "replay", "attribution"]


def system_record(row: Mapping[str, Any], viewer: str) -> records_pb2.SystemRecord:
    """A system record as ``viewer`` sees it (a system-wide one belongs to every tenant)."""
    cause, actor = row["caused_by"], row["actor_id"]
    actors = {"human_actor_id": actor} if cause == "HUMAN" and actor else {}
    actors["system_id"] = actor if cause == "AUTOMATION" and actor else row["component"]
    record = records_pb2.SystemRecord(
        metadata=metadata(Evidence(
            tenant_id=viewer, occurred_at=row["created_at"], recorded_at=row["recorded_at"], source_domain="SYSTEM",
            source_component=row["component"], origin="HUMAN" if cause == "HUMAN" else "SYSTEM",
            run_id=row["run_id"], correlation_id=row["correlation_id"], checksum=row["content_hash"], **actors)),
        id=row["id"], system_wide=row["tenant_id"] is None, component=row["component"],
        event_type=EVENT_TYPES[row["event_type"]], severity=SEVERITIES[row["severity"]], summary=row["summary"],
        caused_by=CAUSES[row["caused_by"]], created_at=timestamp(row["created_at"]),
        content_hash=bytes(row["content_hash"]).hex())
    if row["details"] is not None:
        record.details.update(row["details"])
    for name in ("actor_id", "correlation_id", "run_id", "environment_id"):
        if row[name] is not None:
            setattr(record, name, row[name])
    return record


class SystemLogsService(not_yet_built(pb_grpc.SystemLogsServiceServicer, DESCRIPTOR, "issue #4")):
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx

    def _next_token(self, tenant: str, name: str, filters: dict, page: store.Page) -> str:
        if not page.has_more:
            return ""
        last = page.rows[-1]
        return self.ctx.page_tokens.issue(tenant, name, filters, [last["created_at"].isoformat(), last["id"]])

    async def ListSystemRecords(self, request, context):
        r = Request()
        fields = pb.ListSystemRecordsRequest.DESCRIPTOR.fields_by_name
        start, end = r.time_range(request)
        filters = {"component": r.optional_text(request.component, "component"),
                   "event_type": r.enum(request.event_type, fields["event_type"].enum_type, "event_type"),
                   "severity": r.enum(request.severity, fields["severity"].enum_type, "severity"),
                   "created_after": start, "created_before": end}
        limit = r.page_size(request.page_size)
        r.done()
        tenant = auth.principal().tenant_id
        token_filters = {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in filters.items()}
        after = self.ctx.page_tokens.read(request.page_token, tenant, "system", token_filters)
        page = await self.ctx.db.run(tenant, store.list_system_records, tenant, filters, after, limit)
        return pb.ListSystemRecordsResponse(
            metadata=_answer(tenant, "system_records"), records=[system_record(row, tenant) for row in page.rows],
            next_page_token=self._next_token(tenant, "system", token_filters, page), total_size=page.total,
            total_size_is_estimate=page.total_is_estimate, has_more=page.has_more)

    async def GetSystemSnapshot(self, request, context):
        tenant, run_id, _ = _run(request)
        found = await self.ctx.db.run(tenant, _snapshot, tenant, run_id)
        if found is None:
            raise errors.not_found("llm run", run_id)
        row, correlated = found
        if row is None:  # never a made-up placeholder
            raise errors.not_found("system baseline of run", run_id)
        record = system_record(row, tenant)
        return pb.GetSystemSnapshotResponse(
            metadata=record.metadata, run_id=run_id, baseline=record,
            basis=pb.SNAPSHOT_BASIS_CORRELATED if correlated else pb.SNAPSHOT_BASIS_PRECEDING_BASELINE)

    async def GetSystemTelemetry(self, request, context):
        tenant, run_id, _ = _run(request)
        count = await self.ctx.db.run(tenant, _telemetry, tenant, run_id)
        if count is None:
            raise errors.not_found("llm run", run_id)
        return pb.GetSystemTelemetryResponse(
            metadata=_answer(tenant, "telemetry"), run_id=run_id, status=pb.TELEMETRY_STATUS_NOT_COLLECTED,
            reason=TELEMETRY_GAP, available_data=AVAILABLE_INSTEAD, run_event_count=count)

    async def ListSystemRunEvents(self, request, context):
        tenant, run_id, limit = _run(request)
        token_filters = {"run_id": run_id}
        after = self.ctx.page_tokens.read(request.page_token, tenant, "system.run-events", token_filters)
        page = await self.ctx.db.run(tenant, _run_events, tenant, run_id, after, limit)
        if page is None:
            raise errors.not_found("llm run", run_id)
        return pb.ListSystemRunEventsResponse(
            metadata=_answer(tenant, "system_records"), records=[system_record(row, tenant) for row in page.rows],
            next_page_token=self._next_token(tenant, "system.run-events", token_filters, page),
            total_size=page.total, total_size_is_estimate=page.total_is_estimate, has_more=page.has_more)

    async def GetSystemReplay(self, request, context):
        from services.logs.llm_runs import load_replay

        window = await load_replay(self.ctx, request, llm=False, policy=False)
        return pb.GetSystemReplayResponse(metadata=_answer(auth.principal().tenant_id, "replay"), replay=window)

    async def GetSystemAttribution(self, request, context):
        r = Request()
        start, end = r.time_range(request)
        limit = r.page_size(request.page_size)
        r.done()
        end = end or datetime.now(timezone.utc)
        start = start or end - timedelta(hours=24)
        if start >= end:
            r.violations.add("created_after", "must be earlier than created_before (default: now)")
            r.done()
        tenant = auth.principal().tenant_id
        token_filters = {"created_after": start.isoformat(), "created_before": end.isoformat()}
        after = self.ctx.page_tokens.read(request.page_token, tenant, "system.attribution", token_filters)
        rows, page = await self.ctx.db.run(tenant, store.attribution, tenant, start, end, after, limit)
        return pb.GetSystemAttributionResponse(
            metadata=_answer(tenant, "system_records.attribution"), window_start=timestamp(start),
            window_end=timestamp(end),
            rows=[pb.AttributionRow(caused_by=CAUSES[row["caused_by"]], component=row["component"],
                                    event_type=EVENT_TYPES[row["event_type"]], count=row["count"],
                                    actor_ids=sorted(row["actor_ids"])) for row in rows],
            records=[system_record(row, tenant) for row in page.rows],
            next_page_token=self._next_token(tenant, "system.attribution", token_filters, page),
            total_size=page.total, has_more=page.has_more)


def _answer(tenant: str, component: str):
    from services.logs.audit_ledger import answer_metadata

    return answer_metadata(tenant, component)


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


def _run_events(conn, tenant: str, run_id: str, after, limit: int):
    if not store.run_exists(conn, tenant, run_id):
        return None
    return store.run_system_records(conn, tenant, run_id, after, limit)
