"""Stored wire forms (issue #22): every stored form equals the canonical conversion, byte for byte.

Rows are generated over every column the converters read (joins included), with the
values the database can hold; each property compares the bytes served from
aos_evidence.wire (first conversion and stored copy alike) with the deterministic
serialization of the message the converter builds (maps sorted: one canonical form), and
parses them back to the canonical message, and the answers built from stored items with the
answers built the canonical way (one message holding everything).
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from hypothesis import given, settings, strategies as st

from aos.logs.v1 import (
    audit_ledger_service_pb2 as pb,
    llm_runs_service_pb2 as runs_pb,
    system_logs_service_pb2 as sys_pb,
)
from aos_evidence import wire
from aos_evidence.messages import (
    audit_entry,
    run_message,
    system_record,
)
from aos_runtime.keyset import Page
from aos_runtime.pagination import Listing, PageTokens
from services.logs.audit_ledger import audit_list_answer, get_audit_entry_response
from services.logs.messages import answer_metadata, list_answer
from services.logs.store import AuditFilters
from tests.unit.evidence_rows import audit_rows, run_rows, system_rows, times, traces

TOKENS = PageTokens(b"k" * 32)


def canonical_bytes(message) -> bytes:
    """Protobuf's deterministic serialization (map entries sorted): the one canonical form."""
    return message.SerializeToString(deterministic=True)
LIST_RESPONSES = (pb.ListAuditEntriesResponse, pb.ListIdentityEventsResponse, pb.ListAuthorizationDecisionsResponse,
                  pb.ListAccessEventsResponse)

# (rows, response class, repeated field, kind, converter, component) of every list served from stored forms.
OTHER_LISTS = {
    "runs": (run_rows(), runs_pb.ListLlmRunsResponse, "runs", "run", run_message, "llm_run_records"),
    "system": (system_rows(), sys_pb.ListSystemRecordsResponse, "records", "system", system_record,
               "system_records"),
}


@settings(max_examples=150, deadline=None)
@given(data=st.data(), which=st.sampled_from(sorted(OTHER_LISTS)), has_more=st.booleans(),
       total=st.integers(0, 2**40), now=times)
def test_runs_and_system_records_stored_forms_and_answers_are_canonical(data, which, has_more, total, now):
    rows_of, response_cls, field, kind, convert, component = OTHER_LISTS[which]
    rows = data.draw(st.lists(rows_of, max_size=8, unique_by=lambda r: r["id"]))
    wire.forms.clear()
    for row in rows:
        assert wire.forms.encoded(kind, "tenant-a", row, convert) == canonical_bytes(convert(row))
    listing = Listing.of(TOKENS, "tenant-a", which, {"x": None})
    page = Page(rows=rows, has_more=has_more and bool(rows), total=total, total_is_estimate=False)
    items = [convert(r) for r in rows]
    canonical = canonical_bytes(listing.answer(response_cls, page, **{field: items},
                                               metadata=answer_metadata("tenant-a", component, items, now=now)))
    for _ in range(2):
        ours = list_answer(listing, page, response_cls, field, kind, convert, component, now=now)
        assert ours == canonical
        assert response_cls.FromString(ours) == response_cls.FromString(canonical)


def sample_row(ident: str = "entry-1") -> dict:
    """One fixed row (the deterministic tests below)."""
    at = datetime(2026, 11, 1, 12, 0, tzinfo=timezone.utc)
    return {"id": ident, "tenant_id": "tenant-a", "seq": 7, "event_type": "PolicyRuleCreated",
            "entity_type": "POLICY_RULE", "entity_id": "rule-1", "actor_type": "HUMAN", "actor_id": "ann",
            "action_reason": None, "correlation_id": "corr-1", "created_at": at, "recorded_at": at,
            "content_hash": b"\x01" * 32, "prev_hash": b"\x02" * 32, "chain_hash": b"\x03" * 32,
            "is_synthetic": False, "run_id": None, "state_policy_id": "rule-1", "state_incident_id": None,
            "trace_id": None, "violation_policy_id": None, "trace_incident_id": None}


@settings(max_examples=300, deadline=None)
@given(row=audit_rows())
def test_an_entry_stored_form_is_its_canonical_encoding(row):
    forms = wire.WireForms()
    canonical = canonical_bytes(audit_entry(row))
    assert forms.encoded("audit", "tenant-a", row, audit_entry) == canonical  # converted
    assert forms.encoded("audit", "tenant-a", dict(row), audit_entry) == canonical  # stored
    assert forms.hits == 1


@settings(max_examples=200, deadline=None)
@given(row=audit_rows(states_too=True))
def test_get_audit_entry_stored_form_is_its_canonical_answer(row):
    forms = wire.WireForms()
    entry = audit_entry(row)
    canonical = canonical_bytes(get_audit_entry_response(row))
    for _ in range(2):
        data = forms.encoded("audit.get", "tenant-a", row, get_audit_entry_response)
        assert data == canonical
        assert pb.GetAuditEntryResponse.FromString(data).entry == entry


@settings(max_examples=150, deadline=None)
@given(rows=st.lists(audit_rows(), max_size=12, unique_by=lambda r: r["id"]), has_more=st.booleans(),
       total=st.integers(0, 2**40), estimate=st.booleans(), response_cls=st.sampled_from(LIST_RESPONSES),
       now=times, filters=st.sampled_from([AuditFilters(), AuditFilters(actor_id="a", event_types=("X",))]))
def test_a_list_answer_from_stored_items_is_the_canonical_answer(rows, has_more, total, estimate, response_cls,
                                                                  now, filters):
    wire.forms.clear()
    listing = Listing.of(TOKENS, "tenant-a", "audit", filters)
    page = Page(rows=rows, has_more=has_more and bool(rows), total=total, total_is_estimate=estimate)
    entries = [audit_entry(r) for r in rows]
    canonical = listing.answer(response_cls, page, entries=entries,
                               metadata=answer_metadata("tenant-a", "audit_ledger", entries, now=now))
    for _ in range(2):  # converted, then from the stored items
        assert audit_list_answer(listing, page, response_cls, now=now) == canonical_bytes(canonical)


def test_a_row_that_changed_is_converted_again_and_tenants_never_share_an_item():
    """The whole row is the stored form's key: a trace written after the entry (its join) changes
    the entry's metadata, and the stored form follows; the same id under another tenant is its own."""
    forms = wire.WireForms()
    row = sample_row()
    first = forms.encoded("audit", "tenant-a", row, audit_entry)
    joined = {**row, "trace_id": "trace-later", "run_id": "run-later"}
    assert forms.encoded("audit", "tenant-a", joined, audit_entry) == canonical_bytes(audit_entry(joined)) != first
    other = {**row, "tenant_id": "tenant-b"}
    assert forms.encoded("audit", "tenant-b", other, audit_entry) == canonical_bytes(audit_entry(other))
    assert forms.hits == 0 and len(forms) == 2


def test_the_store_is_bounded_least_recently_used_first():
    forms = wire.WireForms(max_items=3)
    rows = [sample_row(f"e{i}") for i in range(4)]
    for row in rows[:3]:
        forms.encoded("audit", "tenant-a", row, audit_entry)
    forms.encoded("audit", "tenant-a", rows[0], audit_entry)  # e0 used again: e1 is now the oldest
    forms.encoded("audit", "tenant-a", rows[3], audit_entry)
    assert len(forms) == 3 and forms.hits == 1
    forms.encoded("audit", "tenant-a", rows[1], audit_entry)
    assert forms.hits == 1  # e1 was dropped: converted again
    off = wire.WireForms(max_items=0)
    assert off.encoded("audit", "tenant-a", rows[0], audit_entry) == canonical_bytes(audit_entry(rows[0]))
    assert len(off) == 0


@given(st.integers(0, 2**63))
def test_varint_is_protobufs(value):
    from google.protobuf.internal import encoder

    assert wire.varint(value) == encoder._VarintBytes(value)


def test_empty_and_one_item_pages():
    listing = Listing.of(TOKENS, "tenant-a", "audit", AuditFilters())
    now = datetime(2026, 12, 7, tzinfo=timezone.utc)
    empty = Page(rows=[], has_more=False, total=0, total_is_estimate=False)
    assert audit_list_answer(listing, empty, pb.ListAuditEntriesResponse, now=now) == canonical_bytes(listing.answer(
        pb.ListAuditEntriesResponse, empty, entries=[],
        metadata=answer_metadata("tenant-a", "audit_ledger", [], now=now)))
    row = {**sample_row(), "recorded_at": now - timedelta(days=1)}
    one = Page(rows=[row], has_more=True, total=7, total_is_estimate=False)
    parsed = pb.ListAuditEntriesResponse.FromString(audit_list_answer(listing, one, pb.ListAuditEntriesResponse,
                                                                      now=now))
    assert parsed.entries[0] == audit_entry(row) and parsed.total_size == 7 and parsed.next_page_token
    assert parsed.metadata.recorded_at.ToDatetime(tzinfo=timezone.utc) == now - timedelta(days=1)


@settings(max_examples=150, deadline=None)
@given(found=traces(), other_violation=st.none() | st.integers(0, 6), has_more=st.booleans(),
       token=st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_", max_size=40))
def test_a_trace_answer_from_stored_steps_is_the_canonical_answer(found, other_violation, has_more, token):
    """GetLlmRunTrace: the same bytes as the message built whole, also after the trace's violation
    index changed (a step's is_inflection_point follows it: never a stale stored step)."""
    from aos.logs.v1 import llm_runs_service_pb2 as runs
    from aos_evidence.messages import step_message, trace_evidence, trace_message
    from aos_runtime.evidence import metadata
    from services.logs.llm_runs import trace_answer

    wire.forms.clear()
    trace, steps = found
    # A page of a longer trace: the totals are the whole trace's (the store sums them).
    totals = {"steps": len(steps) + has_more, "duration_ms": sum(s["duration_ms"] for s in steps),
              "tokens": sum(s["tokens"] for s in steps)}
    for violation in (trace["violation_step_index"], other_violation):
        trace = {**trace, "violation_step_index": violation}
        canonical = canonical_bytes(runs.GetLlmRunTraceResponse(
            metadata=metadata(trace_evidence(trace)), trace=trace_message(trace),
            steps=[step_message(s, violation) for s in steps], total_steps=totals["steps"],
            total_duration_ms=totals["duration_ms"], total_tokens=totals["tokens"], next_page_token=token,
            has_more=has_more))
        for _ in range(2):
            assert trace_answer("tenant-a", trace, steps, totals, has_more, token) == canonical
