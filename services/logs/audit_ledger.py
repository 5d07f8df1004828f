"""AuditLedgerService: translates requests into store calls and rows into protos."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import TypeVar

import grpc

from aos.evidence.v1 import integrity_pb2
from aos.logs.v1 import audit_ledger_service_pb2 as pb, audit_ledger_service_pb2_grpc as pb_grpc
from aos_evidence import queries as evidence
from aos_evidence.messages import audit_entry, export_message, struct
from aos_recording import retention, verify
from aos_runtime import auth, errors
from aos_runtime.evidence import timestamp
from aos_runtime.pagination import Listing
from aos_runtime.server import ServiceContext
from aos_runtime.validation import Request
from services.logs import store
from services.logs.messages import answer_metadata

DESCRIPTOR = pb.DESCRIPTOR.services_by_name["AuditLedgerService"]


# The O1–O3 panels are the ledger restricted to their event categories.
IDENTITY = ("ActorLoggedIn", "ActorLoggedOut", "ApiKeyCreated", "ApiKeyRevoked")
AUTHORIZATION = ("AccessGranted", "AccessDenied")
ACCESS = ("EvidenceExported",)
INTEGRITY_DEFAULT, INTEGRITY_MAX = 10_000, 100_000

# The ledger's lists: the full one and the three category views share one page walk.
_CategoryRequest = pb.ListIdentityEventsRequest | pb.ListAuthorizationDecisionsRequest | pb.ListAccessEventsRequest
_ListRequest = pb.ListAuditEntriesRequest | _CategoryRequest
_ListResponse = TypeVar("_ListResponse", pb.ListAuditEntriesResponse, pb.ListIdentityEventsResponse,
                        pb.ListAuthorizationDecisionsResponse, pb.ListAccessEventsResponse)


class AuditLedgerService(pb_grpc.AuditLedgerServiceServicer):
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx

    def _listing(self, list_name: str, filters) -> Listing:
        return Listing.of(self.ctx.page_tokens, auth.principal().tenant_id, list_name, filters)

    async def _list(self, request: _ListRequest, list_name: str, filters: store.AuditFilters, limit: int,
                    response_cls: type[_ListResponse]) -> _ListResponse:
        listing = self._listing(list_name, filters)
        page = await listing.fetch(self.ctx.db, request.page_token, store.list_audit_entries, filters, limit=limit)
        entries = [audit_entry(r) for r in page.rows]
        return listing.answer(response_cls, page, entries=entries,
                              metadata=answer_metadata(listing.tenant_id, "audit_ledger", entries))

    async def ListAuditEntries(self, request: pb.ListAuditEntriesRequest,
                               context: grpc.aio.ServicerContext) -> pb.ListAuditEntriesResponse:
        r = Request()
        event = r.enum(request.event_type, pb.ListAuditEntriesRequest.DESCRIPTOR.fields_by_name["event_type"].enum_type,
                       "event_type")
        entity = r.enum(request.entity_type,
                        pb.ListAuditEntriesRequest.DESCRIPTOR.fields_by_name["entity_type"].enum_type, "entity_type")
        actor = r.enum(request.actor_type,
                       pb.ListAuditEntriesRequest.DESCRIPTOR.fields_by_name["actor_type"].enum_type, "actor_type")
        actor_id = r.optional_text(request.actor_id, "actor_id")
        correlation = r.optional_text(request.correlation_id, "correlation_id")
        start, end = r.time_range(request)
        limit = r.page_size(request.page_size)
        r.done()
        filters = store.AuditFilters(event_types=(event,) if event else (), entity_type=entity, actor_type=actor,
                                     actor_id=actor_id, correlation_id=correlation, created_after=start,
                                     created_before=end)
        return await self._list(request, "audit", filters, limit, pb.ListAuditEntriesResponse)

    async def _category(self, request: _CategoryRequest, list_name: str, events: tuple[str, ...],
                        response_cls: type[_ListResponse]) -> _ListResponse:
        r = Request()
        actor_id = r.optional_text(request.actor_id, "actor_id")
        start, end = r.time_range(request)
        limit = r.page_size(request.page_size)
        r.done()
        filters = store.AuditFilters(event_types=events, actor_id=actor_id, created_after=start, created_before=end)
        return await self._list(request, list_name, filters, limit, response_cls)

    async def ListIdentityEvents(self, request: pb.ListIdentityEventsRequest,
                                 context: grpc.aio.ServicerContext) -> pb.ListIdentityEventsResponse:
        return await self._category(request, "audit.identity", IDENTITY, pb.ListIdentityEventsResponse)

    async def ListAuthorizationDecisions(self, request: pb.ListAuthorizationDecisionsRequest,
                                         context: grpc.aio.ServicerContext) -> pb.ListAuthorizationDecisionsResponse:
        return await self._category(request, "audit.authorization", AUTHORIZATION,
                                    pb.ListAuthorizationDecisionsResponse)

    async def ListAccessEvents(self, request: pb.ListAccessEventsRequest,
                               context: grpc.aio.ServicerContext) -> pb.ListAccessEventsResponse:
        return await self._category(request, "audit.access", ACCESS, pb.ListAccessEventsResponse)

    async def GetAuditEntry(self, request: pb.GetAuditEntryRequest,
                            context: grpc.aio.ServicerContext) -> pb.GetAuditEntryResponse:
        r = Request()
        entry_id = r.resource_id(request.entry_id, "entry_id")
        r.done()
        tenant = auth.principal().tenant_id
        row = await self.ctx.db.run(tenant, store.get_audit_entry, tenant, entry_id)
        if row is None:
            raise errors.not_found(errors.Resource.AUDIT_ENTRY, entry_id)
        entry = audit_entry(row)
        return pb.GetAuditEntryResponse(metadata=entry.metadata, entry=entry, before_state=struct(row["before_state"]),
                                        after_state=struct(row["after_state"]))

    async def GetIntegrityReport(self, request: pb.GetIntegrityReportRequest,
                                 context: grpc.aio.ServicerContext) -> pb.GetIntegrityReportResponse:
        r = Request()
        if request.from_seq < 0:
            r.violations.add("from_seq", "must not be negative")
        if request.to_seq < 0:
            r.violations.add("to_seq", "must not be negative")
        if request.from_seq and request.to_seq and request.to_seq < request.from_seq:
            r.violations.add("to_seq", "must not be before from_seq")
        if request.max_entries < 0:
            r.violations.add("max_entries", "must not be negative")
        r.done()
        tenant = auth.principal().tenant_id
        first = max(1, request.from_seq)
        # A walk along the chain, not a newest-first list: its position is the next seq.
        listing = self._listing("audit.integrity", {"from_seq": first, "to_seq": request.to_seq})
        cursor = listing.after(request.page_token)
        start = int(cursor[0]) if cursor else first
        budget = min(request.max_entries or INTEGRITY_DEFAULT, INTEGRITY_MAX)
        head, report = await self.ctx.db.run(tenant, _verify_range, tenant, start, request.to_seq or None, budget)
        now = datetime.now(timezone.utc)
        response = pb.GetIntegrityReportResponse(
            metadata=answer_metadata(tenant, "audit_ledger.integrity", now=now,
                                     recorded_at=head["recorded_at"] if head else None,
                                     checksum=bytes(head["chain_hash"]) if head else None),
            checked_at=timestamp(now), entries_checked=report.checked,
            anomalies=[integrity_pb2.ChainAnomaly(seq=a.seq, kind=f"ANOMALY_KIND_{a.kind}",
                                                  expected=a.expected, actual=a.actual, detail=a.detail)
                       for a in report.anomalies])
        if head is None:
            response.status = integrity_pb2.INTEGRITY_STATUS_EMPTY
            return response
        response.head.CopyFrom(integrity_pb2.ChainHead(seq=head["seq"], chain_hash=bytes(head["chain_hash"]).hex(),
                                                       created_at=timestamp(head["created_at"])))
        if report.checked:
            response.verified_from_seq, response.verified_to_seq = report.first_seq, report.last_seq
        end = min(request.to_seq or head["seq"], head["seq"])
        last = report.last_seq or start - 1
        if last < end and report.checked:
            response.has_more = True
            response.next_page_token = listing.issue([last + 1])
        if report.anomalies:
            response.status = integrity_pb2.INTEGRITY_STATUS_ANOMALIES_FOUND
        elif response.has_more:
            response.status = integrity_pb2.INTEGRITY_STATUS_PARTIAL
        else:
            response.status = integrity_pb2.INTEGRITY_STATUS_VERIFIED
        return response

    async def ListAuditExports(self, request: pb.ListAuditExportsRequest,
                               context: grpc.aio.ServicerContext) -> pb.ListAuditExportsResponse:
        r = Request()
        start, end = r.time_range(request)
        limit = r.page_size(request.page_size)
        r.done()
        filters = evidence.ExportFilters(created_after=start, created_before=end)
        listing = self._listing("audit.exports", filters)
        page = await listing.fetch(self.ctx.db, request.page_token, evidence.list_exports, filters, limit=limit)
        exports = [export_message(r) for r in page.rows]
        return listing.answer(pb.ListAuditExportsResponse, page, exports=exports,
                              metadata=answer_metadata(listing.tenant_id, "log_exports", exports))


def _verify_range(conn, tenant: str, start: int, to_seq: int | None, budget: int):
    """The head and a verification of at most ``budget`` entries from ``start`` (one transaction).

    Where retention dropped the chain's beginning, verification starts after the
    tenant's retention anchor, linked to its chain hash (recorded before the drop):
    the kept chain is verified, not reported as truncated.
    """
    head = evidence.ledger_head(conn, tenant)
    if head is None:
        return None, verify.ChainReport()
    anchor = retention.retention_anchor(conn, tenant)
    if anchor is not None:
        start = max(start, anchor.seq + 1)
    end = min(to_seq or head["seq"], head["seq"], start + budget - 1)
    return head, verify.verify_ledger(conn, tenant, from_seq=start, to_seq=end, anchor=anchor)
