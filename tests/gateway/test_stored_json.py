"""REST answers from stored JSON (gateway.stored_json, issue #22): the body equals what
``JSONResponse(transcode.to_json(message))`` sends, byte for byte, for every list answer the
Logs service builds from stored items (generated rows), first rendering and stored alike."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest
from hypothesis import given, settings, strategies as st
from starlette.responses import JSONResponse

from aos.logs.v1 import (
    audit_ledger_service_pb2 as au_pb,
    llm_runs_service_pb2 as runs_pb,
    system_logs_service_pb2 as sys_pb,
)
from aos_evidence import wire
from aos_evidence.messages import audit_entry, run_message, system_record
from aos_runtime.keyset import Page
from aos_runtime.pagination import Listing, PageTokens
from gateway import stored_json, transcode
from services.logs.llm_runs import trace_answer
from services.logs.messages import list_answer
from tests.unit.evidence_rows import audit_rows, run_rows, system_rows, times, traces

TOKENS = PageTokens(b"k" * 32)
LISTS = {
    "audit": (audit_rows(), au_pb.ListAuditEntriesResponse, "entries", audit_entry, "audit_ledger",
              au_pb.DESCRIPTOR.services_by_name["AuditLedgerService"].methods_by_name["ListAuditEntries"]),
    "runs": (run_rows(), runs_pb.ListLlmRunsResponse, "runs", run_message, "llm_run_records",
             runs_pb.DESCRIPTOR.services_by_name["LlmRunsService"].methods_by_name["ListLlmRuns"]),
    "system": (system_rows(), sys_pb.ListSystemRecordsResponse, "records", system_record, "system_records",
               sys_pb.DESCRIPTOR.services_by_name["SystemLogsService"].methods_by_name["ListSystemRecords"]),
}
TRACE = runs_pb.DESCRIPTOR.services_by_name["LlmRunsService"].methods_by_name["GetLlmRunTrace"]


def canonical_body(response_cls, data: bytes) -> bytes:
    return JSONResponse(transcode.to_json(response_cls.FromString(data))).body


@settings(max_examples=150, deadline=None)
@given(data=st.data(), which=st.sampled_from(sorted(LISTS)), has_more=st.booleans(), total=st.integers(0, 2**40),
       estimate=st.booleans(), now=times)
def test_a_list_body_from_stored_json_is_jsonresponses(data, which, has_more, total, estimate, now):
    rows_of, response_cls, field, convert, component, method = LISTS[which]
    rows = data.draw(st.lists(rows_of, max_size=6, unique_by=lambda r: r["id"]))
    page = Page(rows=rows, has_more=has_more and bool(rows), total=total, total_is_estimate=estimate)
    answer = list_answer(Listing.of(TOKENS, "tenant-a", which, {}), page, response_cls, field, which, convert,
                         component, now=now)
    renderer = stored_json.Renderer(method, stored_json.ItemJson())
    for _ in range(2):  # rendered, then from the stored item texts
        assert renderer.body(answer) == canonical_body(response_cls, answer)
    assert renderer.store.hits == len(rows)


@settings(max_examples=80, deadline=None)
@given(found=traces())
def test_a_trace_body_from_stored_json_is_jsonresponses(found):
    wire.forms.clear()
    trace, steps = found
    totals = {"steps": len(steps), "duration_ms": sum(s["duration_ms"] for s in steps),
              "tokens": sum(s["tokens"] for s in steps)}
    answer = trace_answer("tenant-a", trace, steps, totals, True, "next-page")
    renderer = stored_json.Renderer(TRACE, stored_json.ItemJson())
    for _ in range(2):
        assert renderer.body(answer) == canonical_body(runs_pb.GetLlmRunTraceResponse, answer)


def test_which_methods_render_from_stored_json_and_bad_bytes_are_refused():
    assert stored_json.renders(LISTS["audit"][5]) and stored_json.renders(TRACE)
    get = au_pb.DESCRIPTOR.services_by_name["AuditLedgerService"].methods_by_name["GetAuditEntry"]
    assert not stored_json.renders(get)  # one entry, no list
    renderer = stored_json.Renderer(LISTS["audit"][5], stored_json.ItemJson(max_items=1))
    with pytest.raises(ValueError):
        renderer.split(b"\x12\x05ab")  # a length past the end
    at = datetime(2026, 1, 1, tzinfo=timezone.utc)
    empty = list_answer(Listing.of(TOKENS, "t", "audit", {}), Page([], False, 0, False), au_pb.ListAuditEntriesResponse,
                        "entries", "audit", audit_entry, "audit_ledger", now=at)
    assert renderer.body(empty) == canonical_body(au_pb.ListAuditEntriesResponse, empty)
