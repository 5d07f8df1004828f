"""LlmRunsService (O1–O5): translates requests into store calls and rows into protos."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from aos.evidence.v1 import evidence_pb2
from aos.logs.v1 import llm_runs_service_pb2 as pb, llm_runs_service_pb2_grpc as pb_grpc
from aos_evidence import queries as evidence, wire
from aos_evidence.messages import (
    audit_entry,
    breach_message,
    export_message,
    run_message,
    step_message,
    trace_evidence,
    trace_message,
)
from aos_runtime import auth, errors
from aos_runtime.evidence import metadata
from aos_runtime.pagination import Listing
from aos_runtime.server import ServiceContext
from aos_runtime.validation import Request
from services.logs import store
from services.logs.messages import answer_metadata, list_answer
from services.logs.replay import load_replay
from services.logs.search import list_search

DESCRIPTOR = pb.DESCRIPTOR.services_by_name["LlmRunsService"]
ANY_RUN = "-"  # GetLlmRunTrace's run_id for "whichever run the trace_id belongs to" (AIP-159)
OVERRIDE_EVENTS = {"LimitOverrideGranted", "LimitOverrideRevoked", "EmergencyOverrideActivated",
                   "EmergencyOverrideDeactivated"}


class LlmRunsService(pb_grpc.LlmRunsServiceServicer):
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx

    async def ListLlmRuns(self, request: pb.ListLlmRunsRequest,
                          context: grpc.aio.ServicerContext) -> wire.Encoded[pb.ListLlmRunsResponse]:
        r = Request()
        fields = pb.ListLlmRunsRequest.DESCRIPTOR.fields_by_name
        filters = store.RunFilters(
            run_id=r.optional_text(request.run_id, "run_id"), agent_id=r.optional_text(request.agent_id, "agent_id"),
            status=r.enum(request.status, fields["status"].enum_type, "status"),
            provider=r.optional_text(request.provider, "provider"), model=r.optional_text(request.model, "model"),
            has_violation=request.has_violation if request.HasField("has_violation") else None,
            policy_id=r.optional_text(request.policy_id, "policy_id"),
            is_synthetic=request.is_synthetic if request.HasField("is_synthetic") else None,
            search=list_search(r, request.search), ascending=r.ascending(request.order),
            sort=r.sort(request.sort, fields["sort"].enum_type),
            **dict(zip(("created_after", "created_before"), r.time_range(request), strict=True)))
        limit = r.page_size(request.page_size)
        r.done()
        listing = Listing.of(self.ctx.page_tokens, auth.principal().tenant_id, "llm-runs", filters)
        page = await listing.fetch(self.ctx.db, request.page_token, store.list_runs, filters, limit=limit)
        return list_answer(listing, page, pb.ListLlmRunsResponse, "runs", "run", run_message, "llm_run_records")

    async def _run_id(self, request: pb.GetLlmRunEnvelopeRequest) -> tuple[str, str]:
        r = Request()
        run_id = r.resource_id(request.run_id, "run_id")
        r.done()
        return auth.principal().tenant_id, run_id

    async def GetLlmRunEnvelope(self, request: pb.GetLlmRunEnvelopeRequest,
                                context: grpc.aio.ServicerContext) -> pb.GetLlmRunEnvelopeResponse:
        tenant, run_id = await self._run_id(request)
        row = await self.ctx.db.run(tenant, evidence.get_run, tenant, run_id)
        if row is None:
            raise errors.not_found(errors.Resource.LLM_RUN, run_id)
        run = run_message(row)
        return pb.GetLlmRunEnvelopeResponse(metadata=run.metadata, run=run)

    async def GetLlmRunTrace(self, request: pb.GetLlmRunTraceRequest,
                             context: grpc.aio.ServicerContext) -> wire.Encoded[pb.GetLlmRunTraceResponse]:
        r = Request()
        any_run = request.run_id == ANY_RUN
        run_id = None if any_run else r.resource_id(request.run_id, "run_id")
        trace_id = r.resource_id(request.trace_id, "trace_id") if request.trace_id or any_run else None
        limit = r.page_size(request.page_size)
        r.done()
        tenant = auth.principal().tenant_id
        # The token is bound to the trace asked for; its position is the last step index.
        listing = Listing.of(self.ctx.page_tokens, tenant, "llm-runs.trace", {"run_id": run_id, "trace_id": trace_id})
        after = listing.after(request.page_token)
        found = await self.ctx.db.run(tenant, store.trace_steps, tenant, run_id, trace_id, after, limit)
        if found is None:
            raise errors.not_found(errors.Resource.TRACE, trace_id or request.run_id)
        trace, steps, has_more, totals = found
        return trace_answer(tenant, trace, steps, totals, has_more,
                            listing.issue([steps[-1]["step_index"]]) if has_more else "")

    async def GetLlmRunGovernance(self, request: pb.GetLlmRunGovernanceRequest,
                                  context: grpc.aio.ServicerContext) -> pb.GetLlmRunGovernanceResponse:
        r = Request()
        run_id = r.resource_id(request.run_id, "run_id")
        # The O1–O3 lists' search, order and sort (one reading of each, services/logs/search.py and
        # aos_runtime.validation); the view's own order, oldest first, unless DESCENDING is asked.
        r.ascending(request.order)  # a value of SortOrder
        view = GovernanceView(search=list_search(r, request.search),
                              ascending=request.order != evidence_pb2.SORT_ORDER_DESCENDING,
                              sort=r.sort(request.sort, pb.GetLlmRunGovernanceRequest.DESCRIPTOR
                                          .fields_by_name["sort"].enum_type))
        r.done()
        tenant = auth.principal().tenant_id
        found = await self.ctx.db.run(tenant, _governance, tenant, run_id, view)
        if found is None:
            raise errors.not_found(errors.Resource.LLM_RUN, run_id)
        trace, steps, entries, breaches = found
        audit = [audit_entry(row) for row in entries]
        return pb.GetLlmRunGovernanceResponse(
            metadata=metadata(trace_evidence(trace)) if trace else answer_metadata(tenant, "governance", audit),
            audit_entries=audit,
            limit_breaches=[breach_message(b) for b in breaches],
            policy_steps=[step_message(s, trace["violation_step_index"]) for s in steps],
            overrides=[e for e, row in zip(audit, entries, strict=True) if row["event_type"] in OVERRIDE_EVENTS])

    async def GetLlmRunReplay(self, request: pb.GetLlmRunReplayRequest,
                              context: grpc.aio.ServicerContext) -> pb.GetLlmRunReplayResponse:
        window, state = await load_replay(self.ctx, request, llm=True, policy=True)
        tenant = auth.principal().tenant_id
        return pb.GetLlmRunReplayResponse(metadata=answer_metadata(tenant, "replay", window.events), replay=window,
                                          state=state)

    async def GetLlmRunExport(self, request: pb.GetLlmRunExportRequest,
                              context: grpc.aio.ServicerContext) -> pb.GetLlmRunExportResponse:
        r = Request()
        run_id = r.resource_id(request.run_id, "run_id")
        limit = r.page_size(request.page_size)
        r.done()
        filters = evidence.ExportFilters(run_id=run_id)
        listing = Listing.of(self.ctx.page_tokens, auth.principal().tenant_id, "llm-runs.exports", filters)
        page = await listing.fetch(self.ctx.db, request.page_token, _run_exports, filters, limit=limit)
        if page is None:
            raise errors.not_found(errors.Resource.LLM_RUN, run_id)
        exports = [export_message(row) for row in page.rows]
        return listing.answer(pb.GetLlmRunExportResponse, page, run_id=run_id, exports=exports,
                              metadata=answer_metadata(listing.tenant_id, "log_exports", exports))


def trace_answer(tenant: str, trace: Mapping[str, Any], steps: Sequence[Mapping[str, Any]],
                 totals: Mapping[str, int], has_more: bool = False, next_page_token: str = ""
                 ) -> wire.Encoded[pb.GetLlmRunTraceResponse]:
    """GetLlmRunTrace's answer as bytes (aos_evidence.wire): the trace's header built per call
    (a trace row may still change while its run goes on), each step's stored encoding. A step's
    message depends on the trace's violation index as well as its row: the index is in its kind."""
    violation = trace["violation_step_index"]
    items = wire.forms.framed(f"step.{violation}", tenant, steps, lambda row: step_message(row, violation),
                              pb.GetLlmRunTraceResponse.DESCRIPTOR.fields_by_name["steps"].number)
    return wire.answer(
        pb.GetLlmRunTraceResponse(metadata=metadata(trace_evidence(trace)), trace=trace_message(trace)), items,
        pb.GetLlmRunTraceResponse(total_steps=totals["steps"], total_duration_ms=totals["duration_ms"],
                                  total_tokens=totals["tokens"], next_page_token=next_page_token,
                                  has_more=has_more))


@dataclass(frozen=True)
class GovernanceView:
    """GetLlmRunGovernance's search (a query as the search documents are written), order and
    sort (an AUDIT_SORTS name; None: by time)."""
    search: str | None = None
    ascending: bool = True
    sort: str | None = None


def _governance(conn, tenant: str, run_id: str, view: GovernanceView = GovernanceView()):
    if not store.run_exists(conn, tenant, run_id):
        return None
    store.custom_plans(conn, view.search)
    trace = store.find_trace(conn, tenant, run_id, None)
    steps = store.governance_steps(conn, tenant, trace["trace_id"], view.search, view.ascending) if trace else []
    breaches = evidence.run_breaches(conn, tenant, run_id)
    return (trace, steps,
            # v2 entries (docs/ERASURE.md): their payloads put back, or their ERASED states
            store.opened_audit(conn, tenant, evidence.run_audit_entries(
                conn, tenant, run_id, search=view.search, ascending=view.ascending, sort=view.sort)),
            breaches if view.ascending else breaches[::-1])


def _run_exports(conn, tenant: str, filters: evidence.ExportFilters, after, limit: int):
    # GetLlmRunExport's filter always names its run; a filter without one has no run to find.
    if filters.run_id is None or not store.run_exists(conn, tenant, filters.run_id):
        return None
    return evidence.list_exports(conn, tenant, filters, after, limit)
