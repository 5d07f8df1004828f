"""AuditLedgerService: translates requests into store calls and rows into protos."""
from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any, TypeVar

import grpc

from aos.evidence.v1 import integrity_pb2
from aos.logs.v1 import audit_ledger_service_pb2 as pb, audit_ledger_service_pb2_grpc as pb_grpc
from aos_evidence import queries as evidence, wire
from aos_evidence.messages import audit_entry, export_message, struct
from aos_recording import retention, tlog, verify
from aos_runtime import auth, errors, faults
from aos_runtime.db import cpu_bound, pipelined
from aos_runtime.evidence import timestamp
from aos_runtime.keyset import Page
from aos_runtime.pagination import Listing
from aos_runtime.server import ServiceContext
from aos_runtime.validation import Request
from services.logs import store
from services.logs.messages import answer_metadata, kept_checkpoint, ledger_leaf, list_answer
from services.logs.search import list_search

DESCRIPTOR = pb.DESCRIPTOR.services_by_name["AuditLedgerService"]


# The O1–O3 panels are the ledger restricted to their event categories.
IDENTITY = ("ActorLoggedIn", "ActorLoggedOut", "ApiKeyCreated", "ApiKeyRevoked")
AUTHORIZATION = ("AccessGranted", "AccessDenied")
# O3, "log views and exports": the reads of evidence the services record (aos_runtime.access:
# access decisions about evidence, where O2 has every access decision) and the exports.
ACCESS = (*evidence.ACCESS_EVENTS, "EvidenceExported")
INTEGRITY_DEFAULT, INTEGRITY_MAX = 10_000, 100_000
_SORT_FIELD = pb.ListAuditEntriesRequest.DESCRIPTOR.fields_by_name["sort"].enum_type

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
                    response_cls: type[_ListResponse]) -> wire.Encoded[_ListResponse]:
        """The answer's wire form (aos_evidence.wire): the page read now, its entries' stored encodings."""
        listing = self._listing(list_name, filters)
        page = await listing.fetch(self.ctx.db, request.page_token, store.list_audit_entries, filters, limit=limit)
        return audit_list_answer(listing, page, response_cls)

    async def ListAuditEntries(self, request: pb.ListAuditEntriesRequest,
                               context: grpc.aio.ServicerContext) -> wire.Encoded[pb.ListAuditEntriesResponse]:
        r = Request()
        event = r.enum(request.event_type, pb.ListAuditEntriesRequest.DESCRIPTOR.fields_by_name["event_type"].enum_type,
                       "event_type")
        entity = r.enum(request.entity_type,
                        pb.ListAuditEntriesRequest.DESCRIPTOR.fields_by_name["entity_type"].enum_type, "entity_type")
        actor = r.enum(request.actor_type,
                       pb.ListAuditEntriesRequest.DESCRIPTOR.fields_by_name["actor_type"].enum_type, "actor_type")
        actor_id = r.optional_text(request.actor_id, "actor_id")
        correlation = r.optional_text(request.correlation_id, "correlation_id")
        entity_id = r.optional_text(request.entity_id, "entity_id")
        search, ascending = list_search(r, request.search), r.ascending(request.order)
        sort = r.sort(request.sort, _SORT_FIELD)
        start, end = r.time_range(request)
        limit = r.page_size(request.page_size)
        r.done()
        filters = store.AuditFilters(event_types=(event,) if event else (), entity_type=entity, actor_type=actor,
                                     actor_id=actor_id, correlation_id=correlation, created_after=start,
                                     created_before=end, entity_id=entity_id,
                                     success=request.success if request.HasField("success") else None,
                                     search=search, ascending=ascending, sort=sort)
        return await self._list(request, "audit", filters, limit, pb.ListAuditEntriesResponse)

    async def _category(self, request: _CategoryRequest, list_name: str, events: tuple[str, ...],
                        response_cls: type[_ListResponse], entities: tuple[str, ...] = ()
                        ) -> wire.Encoded[_ListResponse]:
        r = Request()
        actor_id = r.optional_text(request.actor_id, "actor_id")
        # The category's list takes ListAuditEntries' search, order and sort: the same matcher
        # (services/logs/search.py and the search views) within the category's events.
        search, ascending = list_search(r, request.search), r.ascending(request.order)
        sort = r.sort(request.sort, _SORT_FIELD)
        start, end = r.time_range(request)
        limit = r.page_size(request.page_size)
        r.done()
        filters = store.AuditFilters(event_types=events, actor_id=actor_id, created_after=start, created_before=end,
                                     entity_types=entities, search=search, ascending=ascending, sort=sort)
        return await self._list(request, list_name, filters, limit, response_cls)

    async def ListIdentityEvents(self, request: pb.ListIdentityEventsRequest,
                                 context: grpc.aio.ServicerContext) -> wire.Encoded[pb.ListIdentityEventsResponse]:
        return await self._category(request, "audit.identity", IDENTITY, pb.ListIdentityEventsResponse)

    async def ListAuthorizationDecisions(
            self, request: pb.ListAuthorizationDecisionsRequest,
            context: grpc.aio.ServicerContext) -> wire.Encoded[pb.ListAuthorizationDecisionsResponse]:
        return await self._category(request, "audit.authorization", AUTHORIZATION,
                                    pb.ListAuthorizationDecisionsResponse)

    async def ListAccessEvents(self, request: pb.ListAccessEventsRequest,
                               context: grpc.aio.ServicerContext) -> wire.Encoded[pb.ListAccessEventsResponse]:
        return await self._category(request, "audit.access", ACCESS, pb.ListAccessEventsResponse,
                                    evidence.EVIDENCE_ENTITIES)

    async def GetAuditEntry(self, request: pb.GetAuditEntryRequest,
                            context: grpc.aio.ServicerContext) -> wire.Encoded[pb.GetAuditEntryResponse]:
        r = Request()
        entry_id = r.resource_id(request.entry_id, "entry_id")
        r.done()
        tenant = auth.principal().tenant_id
        row = await self.ctx.db.run(tenant, store.get_audit_entry, tenant, entry_id)
        if row is None:
            raise errors.not_found(errors.Resource.AUDIT_ENTRY, entry_id)
        return wire.Encoded[pb.GetAuditEntryResponse](
            wire.forms.encoded("audit.get", tenant, row, get_audit_entry_response))

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

    # --- the ledger's transparency log (SPEC section 5; the tree: migration 0013) -----------
    async def GetInclusionProof(self, request: pb.GetInclusionProofRequest,
                                context: grpc.aio.ServicerContext) -> pb.GetInclusionProofResponse:
        r = Request()
        entry_id = None
        if request.entry_id and request.seq:
            r.violations.add("seq", "give entry_id or seq, not both")
        elif request.entry_id:
            entry_id = r.resource_id(request.entry_id, "entry_id")
        elif request.seq <= 0:
            r.violations.add("seq" if request.seq else "entry_id",
                             "must be at least 1" if request.seq else "entry_id or seq is required")
        if request.tree_size < 0:
            r.violations.add("tree_size", "must not be negative (0 means the current size)")
        log = _log(r, request)
        r.done()
        tenant = auth.principal().tenant_id
        return await self.ctx.db.run(tenant, _inclusion, tenant, log, entry_id, request.seq, request.tree_size)

    async def GetConsistencyProof(self, request: pb.GetConsistencyProofRequest,
                                  context: grpc.aio.ServicerContext) -> pb.GetConsistencyProofResponse:
        r = Request()
        if request.first_tree_size <= 0:
            r.violations.add("first_tree_size", "must be at least 1")
        if request.second_tree_size < 0:
            r.violations.add("second_tree_size", "must not be negative (0 means the current size)")
        elif request.second_tree_size and request.second_tree_size < request.first_tree_size:
            r.violations.add("second_tree_size", "must not be smaller than first_tree_size")
        log = _log(r, request)
        r.done()
        tenant = auth.principal().tenant_id
        return await self.ctx.db.run(tenant, _consistency, tenant, log, request.first_tree_size,
                                     request.second_tree_size)

    async def ListLedgerLeaves(self, request: pb.ListLedgerLeavesRequest,
                               context: grpc.aio.ServicerContext) -> pb.ListLedgerLeavesResponse:
        r = Request()
        if request.from_seq < 0:
            r.violations.add("from_seq", "must not be negative (0 means 1)")
        if request.to_seq < 0:
            r.violations.add("to_seq", "must not be negative (0 means the tree's size)")
        elif request.to_seq and request.to_seq < max(request.from_seq, 1):
            r.violations.add("to_seq", "must not be before from_seq")
        limit = r.page_size(request.page_size)
        log = _log(r, request)
        r.done()
        # A walk in seq order, not a newest-first list: its position is the last seq
        # answered and the range's end as the first page resolved it (the log is a filter:
        # a token of one log's walk is refused for the other's).
        filters: dict[str, Any] = {"from_seq": request.from_seq, "to_seq": request.to_seq}
        if log != store.LEDGER_LOG:
            filters["log"] = log
        listing = self._listing("audit.leaves", filters)
        cursor = listing.after(request.page_token)
        tenant = listing.tenant_id
        return await self.ctx.db.run(tenant, _leaves, listing, log, max(request.from_seq, 1), request.to_seq,
                                     cursor, limit)


def audit_list_answer(listing: Listing, page: Page, response_cls: type[_ListResponse],
                      now: datetime | None = None) -> wire.Encoded[_ListResponse]:
    """A ledger list's answer (the full list and the three category views) as bytes."""
    return list_answer(listing, page, response_cls, "entries", "audit", audit_entry, "audit_ledger", now)


def get_audit_entry_response(row: Mapping[str, Any]) -> pb.GetAuditEntryResponse:
    """GetAuditEntry's whole answer: a function of the entry's row alone (kept as a wire form)."""
    entry = audit_entry(row)
    return pb.GetAuditEntryResponse(metadata=entry.metadata, entry=entry, before_state=struct(row["before_state"]),
                                    after_state=struct(row["after_state"]))


@cpu_bound
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


_LogRequest = pb.GetInclusionProofRequest | pb.GetConsistencyProofRequest | pb.ListLedgerLeavesRequest


def _log(r: Request, request: _LogRequest) -> str:
    """The tenant's log a proof request names (SPEC section 5): the ledger unless it says the exports'."""
    return r.enum(request.log, request.DESCRIPTOR.fields_by_name["log"].enum_type, "log") or store.LEDGER_LOG


# --- transparency log jobs: each runs in one transaction of the tenant's -------------------
def _hashes(conn, tenant: str, log: str, indexes: list[int]) -> dict[int, Mapping[str, Any]]:
    """The stored hashes a tlog computation asks for, read in one query; every one must be there."""
    rows = store.tlog_rows(conn, tenant, indexes, log)
    missing = [i for i in indexes if i not in rows]
    if missing:
        raise faults.LogHashesMissing(log, missing)
    return rows


# What each log's leaves stand for, in errors and in answers' metadata.
_RESOURCE = {store.LEDGER_LOG: errors.Resource.AUDIT_ENTRY, store.EXPORTS_LOG: errors.Resource.EXPORT}
_COMPONENT = {store.LEDGER_LOG: "audit_ledger.tlog", store.EXPORTS_LOG: "log_exports.tlog"}


def _reader(rows: Mapping[int, Mapping[str, Any]]) -> tlog.HashReader:
    return lambda indexes: [bytes(rows[i]["hash"]) for i in indexes]


def _size_check(r: Request, field: str, requested: int, current: int) -> int:
    """The tree size a request names (0: the current one), a violation when past the tree."""
    if requested > current:
        r.violations.add(field, f"is larger than the tree (size {current})")
    return requested or current


# A proof's two statements go through psycopg (fetch_rows), so the transaction runs pipelined:
# BEGIN, the tenant scope and the first statement in one round trip, the hashes in a second,
# the COMMIT with no wait of its own (issue #20: round trips and SQLAlchemy's per-statement
# work were about half of a proof call's service CPU, bench/profile_tlog.py).
@pipelined
def _inclusion(conn, tenant: str, log: str, entry_id: str | None, seq: int,
               tree_size: int) -> pb.GetInclusionProofResponse:
    # Two queries in all (and the transaction's scope): this one, then the hashes.
    resolved = store.tlog_resolve(conn, tenant, log, entry_id, tree_size)
    current = resolved["current"]
    if entry_id is not None:
        if resolved["seq"] is None:
            raise errors.not_found(_RESOURCE[log], entry_id)
        seq = resolved["seq"]
    r = Request()
    size = _size_check(r, "tree_size", tree_size, current)
    if entry_id is None and seq > current:
        r.violations.add("seq", f"is past the tree's last leaf (size {current})")
    elif seq > size:
        r.violations.add("tree_size", f"must be at least the entry's seq ({seq})")
    r.done()
    leaf = tlog.stored_hash_index(0, seq - 1)
    path, root = tlog.record_proof_indexes(size, seq - 1), tlog.tree_hash_indexes(size)
    rows = _hashes(conn, tenant, log, sorted({leaf, *path, *root}))
    read = _reader(rows)  # the index lists are passed on, not computed again
    checkpoint = ({k.removeprefix("checkpoint_"): v for k, v in resolved.items() if k.startswith("checkpoint_")}
                  if resolved["checkpoint_seq"] is not None else None)
    entry = rows[leaf]
    return pb.GetInclusionProofResponse(
        metadata=ledger_leaf(tenant, {**entry, "seq": seq, "leaf_hash": entry["hash"]}, _COMPONENT[log]).metadata,
        entry_id=entry["entry_id"], seq=seq, leaf_index=seq - 1, tree_size=size,
        root_hash=tlog.tree_hash(size, read, root), leaf_data=bytes(entry["leaf_data"]),
        leaf_hash=bytes(entry["hash"]), audit_path=tlog.prove_record(size, seq - 1, read, path),
        checkpoint=kept_checkpoint(checkpoint) if checkpoint else None)


@pipelined
def _consistency(conn, tenant: str, log: str, first: int, second: int) -> pb.GetConsistencyProofResponse:
    current = store.tlog_size(conn, tenant, log)
    r = Request()
    _size_check(r, "first_tree_size", first, current)
    # the handler checked an explicit second size against the first; 0 is the current size
    second = _size_check(r, "second_tree_size", second, current)
    r.done()
    proof, first_root = tlog.tree_proof_indexes(second, first), tlog.tree_hash_indexes(first)
    second_root = tlog.tree_hash_indexes(second)
    read = _reader(_hashes(conn, tenant, log, sorted({*proof, *first_root, *second_root})))
    return pb.GetConsistencyProofResponse(
        metadata=answer_metadata(tenant, _COMPONENT[log]), first_tree_size=first,
        first_root_hash=tlog.tree_hash(first, read, first_root), second_tree_size=second,
        second_root_hash=tlog.tree_hash(second, read, second_root),
        proof=tlog.prove_tree(second, first, read, proof))


def _leaves(conn, listing: Listing, log: str, first: int, to_seq: int, cursor: list[Any] | None,
            limit: int) -> pb.ListLedgerLeavesResponse:
    tenant = listing.tenant_id
    if cursor:
        after, end = int(cursor[0]), int(cursor[1])
    else:
        current = store.tlog_size(conn, tenant, log)
        r = Request()
        if first > max(current, 1):
            r.violations.add("from_seq", f"is past the tree's last leaf (size {current})")
        end = _size_check(r, "to_seq", to_seq, current)
        r.done()
        after = first - 1
    rows = store.tlog_leaves(conn, tenant, tlog.stored_hash_index(0, after), tlog.stored_hash_index(0, end - 1),
                             limit + 1, log) if end > after else []
    page, more = rows[:limit], len(rows) > limit
    leaves = [ledger_leaf(tenant, row, _COMPONENT[log]) for row in page]
    return pb.ListLedgerLeavesResponse(
        metadata=answer_metadata(tenant, _COMPONENT[log], leaves), leaves=leaves,
        next_page_token=listing.issue([page[-1]["seq"], end]) if more else "",
        total_size=max(end - first + 1, 0), has_more=more, last_seq=end)
