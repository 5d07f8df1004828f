"""EvidenceSearchService and the lookups issue #25 adds (a trace by its id, a long trace's
steps paged, request_id on system records), end to end through real channels over the
suite's database: two tenants of their own with known words, and the demo scenarios."""
from __future__ import annotations

import uuid
from datetime import timedelta

import grpc
import pytest

from aos.evidence.v1 import records_pb2 as vocab_pb2
from aos.ingest.v1 import ingest_service_pb2 as ingest_pb, ingest_service_pb2_grpc as ingest_grpc
from aos.logs.v1 import (
    evidence_search_service_pb2 as pb,
    evidence_search_service_pb2_grpc as pb_grpc,
    llm_runs_service_pb2 as runs_pb,
    llm_runs_service_pb2_grpc as runs_grpc,
    system_logs_service_pb2 as sys_pb,
    system_logs_service_pb2_grpc as sys_grpc,
)
from aos_recording.writers import AuditLedgerWriter, Producer, SystemRecordWriter, TraceRecorder
from services.logs.search import normalise_query
from tests.e2e.support import BASE, auth, register_tenants, token, ts, violations
from tests.logins import login_url

pytestmark = pytest.mark.db

A, B = "tenant-search-a", "tenant-search-b"
RUN_A, TRACE_A, LONG_STEPS = f"{A}.run-zebra-1", f"{A}.trace-zebra-1", 120
RUN_B, TRACE_B = f"{B}.run-okapi-1", f"{B}.trace-okapi-1"
REQUEST_ID = "req-7f3a-zebra"


@pytest.fixture(scope="module")
def seeded(database_url):
    """Tenant A: 'zebra' in an audit reason, a system record, and every step of a 120-step trace;
    'walrus' only in an audit state. Tenant B: 'zebra' and 'okapi' in its own entries."""
    producer = Producer(login_url(database_url, "producer"), pool_size=1)
    try:
        register_tenants(producer, A, B)
        with producer.transaction(A) as conn:
            ledger = AuditLedgerWriter(conn)
            ledger.append(tenant_id=A, event_type="LimitCreated", entity_type="LIMIT", entity_id=f"{A}.lim-zebra-9",
                          actor_type="HUMAN", actor_id="user-keeper", action_reason="quarantined zebra shipment",
                          correlation_id=RUN_A, after_state={"note": "walrus sighted", "run_id": RUN_A},
                          created_at=BASE - timedelta(hours=3))
            ledger.append(tenant_id=A, event_type="ApiKeyCreated", entity_type="API_KEY", entity_id="key-plain",
                          actor_type="HUMAN", actor_id="user-other", action_reason="zebra rotation policy",
                          created_at=BASE - timedelta(hours=2, minutes=30))
            SystemRecordWriter(conn).write(
                tenant_id=A, component="gateway", event_type="CONFIG_CHANGE", severity="INFO",
                summary="zebra gateway restarted", details={"reason": "certificate"}, run_id=RUN_A,
                request_id=REQUEST_ID, created_at=BASE - timedelta(hours=2))
            traces = TraceRecorder(conn)
            traces.create_trace(tenant_id=A, run_id=RUN_A, trace_id=TRACE_A, started_at=BASE - timedelta(hours=1))
            for i in range(LONG_STEPS):
                traces.add_step(tenant_id=A, trace_id=TRACE_A, step_index=i, step_type="llm_call",
                                timestamp=BASE - timedelta(hours=1) + timedelta(seconds=i),
                                input_data={"prompt": f"count zebra number {i}"}, output_data={"answer": i},
                                tokens=10, duration_ms=5)
        with producer.transaction(B) as conn:
            AuditLedgerWriter(conn).append(
                tenant_id=B, event_type="LimitCreated", entity_type="LIMIT", entity_id=f"{B}.lim-okapi",
                actor_type="HUMAN", actor_id="user-keeper", action_reason="okapi and zebra enclosure",
                created_at=BASE - timedelta(hours=3))
            traces = TraceRecorder(conn)
            traces.create_trace(tenant_id=B, run_id=RUN_B, trace_id=TRACE_B, started_at=BASE - timedelta(hours=1))
            traces.add_step(tenant_id=B, trace_id=TRACE_B, step_index=0, step_type="llm_call",
                            timestamp=BASE - timedelta(hours=1), input_data={"prompt": "okapi zebra"})
    finally:
        producer.close()
    return BASE


@pytest.fixture()
async def search(suite, seeded, demo):
    async with grpc.aio.insecure_channel(suite["logs"]) as channel:
        yield pb_grpc.EvidenceSearchServiceStub(channel)


@pytest.fixture()
async def runs(suite, seeded):
    async with grpc.aio.insecure_channel(suite["logs"]) as channel:
        yield runs_grpc.LlmRunsServiceStub(channel)


async def find(search, query: str, tenant: str = A, **fields) -> pb.SearchEvidenceResponse:
    return await search.SearchEvidence(pb.SearchEvidenceRequest(query=query, **fields), metadata=auth(tenant))


async def every_hit(search, query: str, tenant: str = A, **fields) -> list[pb.SearchHit]:
    hits, token_ = [], ""
    while True:
        reply = await find(search, query, tenant, page_token=token_, **fields)
        hits.extend(reply.hits)
        if not reply.has_more:
            assert not reply.next_page_token
            return hits
        token_ = reply.next_page_token


def kinds(hits) -> dict[str, int]:
    found: dict[str, int] = {}
    for hit in hits:
        found[hit.WhichOneof("record")] = found.get(hit.WhichOneof("record"), 0) + 1
    return found


async def test_one_word_finds_every_source_of_the_tenant_only(search):
    hits = await every_hit(search, "zebra", page_size=1000)
    assert kinds(hits) == {"audit_entry": 2, "system_record": 1, "trace_step": LONG_STEPS}
    assert {h.metadata.tenant_id for h in hits} == {A}
    reply = await find(search, "zebra")
    assert reply.total_size == LONG_STEPS + 3 and not reply.total_size_is_estimate and len(reply.hits) == 50
    # newest first across the sources
    stamps = [(h.created_at.seconds, h.created_at.nanos) for h in hits]
    assert stamps == sorted(stamps, reverse=True)


async def test_another_tenants_words_are_never_found(search):
    assert (await find(search, "okapi", A)).total_size == 0
    assert not (await find(search, "okapi", A)).hits
    okapi = await find(search, "okapi", B)
    assert okapi.total_size == 2 and {h.metadata.tenant_id for h in okapi.hits} == {B}
    # B's zebra: its own two records, none of A's 123
    assert (await find(search, "zebra", B)).total_size == 2
    # the demo tenants share no word of ours
    assert (await find(search, "zebra", "tenant-demo")).total_size == 0


async def test_a_phrase_matches_its_words_adjacent_and_in_order(search):
    (hit,) = (await find(search, '"quarantined zebra"')).hits
    assert hit.audit_entry.action_reason == "quarantined zebra shipment"
    assert list(hit.matched_fields) == ["action_reason"]
    assert not (await find(search, '"zebra quarantined"')).hits
    assert (await find(search, "quarantined zebra")).total_size == 1
    assert (await find(search, "zebra -quarantined", sources=[pb.EVIDENCE_SOURCE_AUDIT])).total_size == 1
    assert (await find(search, "quarantined or rotation")).total_size == 2


async def test_a_hit_carries_its_record_metadata_and_matched_fields(search):
    (audit,) = (await find(search, "walrus")).hits
    assert audit.source == pb.EVIDENCE_SOURCE_AUDIT and list(audit.matched_fields) == ["after_state"]
    assert audit.metadata.run_id == RUN_A and audit.metadata.correlation_id == RUN_A
    assert audit.metadata.checksum == audit.audit_entry.content_hash and audit.metadata.recorded_at.seconds
    (record,) = (await find(search, "restarted")).hits
    assert record.source == pb.EVIDENCE_SOURCE_SYSTEM and record.system_record.request_id == REQUEST_ID
    assert list(record.matched_fields) == ["summary"] and record.metadata.run_id == RUN_A
    step = (await find(search, '"zebra number 7"')).hits[0]
    assert step.source == pb.EVIDENCE_SOURCE_TRACE_STEP and list(step.matched_fields) == ["input_data"]
    assert (step.trace_step.trace_id, step.trace_step.run_id, step.trace_step.step.step_index) == (TRACE_A, RUN_A, 7)
    assert step.metadata.trace_id == TRACE_A and step.metadata.checksum == step.trace_step.step.content_hash


async def test_an_id_is_found_whole_or_by_its_parts(search):
    for query in (f"{A}.lim-zebra-9", "lim-zebra-9", '"lim zebra 9"'):
        reply = await find(search, query)
        assert [h.audit_entry.entity_id for h in reply.hits] == [f"{A}.lim-zebra-9"], query
    assert (await find(search, REQUEST_ID)).hits[0].system_record.request_id == REQUEST_ID
    # system-wide records (the demo's platform story) are found by every tenant, marked so
    (failover,) = (await find(search, "failover", "tenant-demo")).hits
    assert failover.system_record.system_wide and failover.metadata.tenant_id == ""


@pytest.mark.parametrize("fields,expected", [
    (dict(sources=[pb.EVIDENCE_SOURCE_SYSTEM]), {"system_record": 1}),
    (dict(sources=[pb.EVIDENCE_SOURCE_AUDIT, pb.EVIDENCE_SOURCE_SYSTEM]), {"audit_entry": 2, "system_record": 1}),
    (dict(actor_id="user-keeper"), {"audit_entry": 1}),
    (dict(correlation_id=RUN_A), {"audit_entry": 1}),
    (dict(run_id=RUN_A), {"audit_entry": 1, "system_record": 1, "trace_step": LONG_STEPS}),
    (dict(created_before=ts(BASE - timedelta(hours=2, minutes=15))), {"audit_entry": 2}),
    # a step is dated by when it was recorded (its created_at, as every list): not in this window
    (dict(created_after=ts(BASE - timedelta(hours=2)), created_before=ts(BASE)), {"system_record": 1}),
])
async def test_filters_combine_with_the_query(search, fields, expected):
    hits = await every_hit(search, "zebra", page_size=1000, **fields)
    assert kinds(hits) == expected
    assert (await find(search, "zebra", **fields)).total_size == sum(expected.values())


async def test_pages_walk_every_hit_once_and_tokens_are_bound(search):
    hits = await every_hit(search, "zebra", page_size=7)
    keys = [(h.source, h.metadata.checksum, h.created_at.seconds) for h in hits]
    assert len(hits) == LONG_STEPS + 3 and len(set(keys)) == len(keys)
    first = await find(search, "zebra", page_size=7)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await find(search, "walrus", page_size=7, page_token=first.next_page_token)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "page_token" in violations(err.value)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await find(search, "zebra", B, page_size=7, page_token=first.next_page_token)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize("fields,field", [
    (dict(query=""), "query"),
    (dict(query="   "), "query"),
    (dict(query="-zebra"), "query"),
    (dict(query="!!! ..."), "query"),
    (dict(query="z" * 257), "query"),
    (dict(query="zebra\x00"), "query"),
    (dict(query="zebra", sources=[9]), "sources"),
    (dict(query="zebra", page_size=-1), "page_size"),
    (dict(query="zebra", created_after=ts(BASE), created_before=ts(BASE)), "created_before"),
    (dict(query="zebra", run_id="x" * 300), "run_id"),
])
async def test_bad_requests_name_their_field(search, fields, field):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await search.SearchEvidence(pb.SearchEvidenceRequest(**fields), metadata=auth(A))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and field in violations(err.value)


async def test_search_needs_logs_read(search):
    md = (("authorization", f"Bearer {token(A, scopes=('exports.read',))}"),)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await search.SearchEvidence(pb.SearchEvidenceRequest(query="zebra"), metadata=md)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


@pytest.mark.parametrize("query,normalised,positive", [
    ("zebra", "zebra", True),
    ("run-support-103", '"run support 103"', True),
    ('"budget exceeded" -refund or x', '"budget exceeded" -refund or x', True),
    ("-tenant-demo.run", '-"tenant demo run"', False),
    ('"unclosed phrase', '"unclosed phrase"', True),
    ("--- ...", "", False),
])
def test_query_terms_are_written_as_the_documents(query, normalised, positive):
    assert normalise_query(query) == (normalised, positive)


# --- lookups ----------------------------------------------------------------------------


async def test_a_long_trace_is_read_a_page_at_a_time(runs):
    pages, token_ = [], ""
    while True:
        reply = await runs.GetLlmRunTrace(runs_pb.GetLlmRunTraceRequest(run_id=RUN_A, page_token=token_),
                                          metadata=auth(A))
        assert (reply.total_steps, reply.total_tokens, reply.total_duration_ms) == \
            (LONG_STEPS, 10 * LONG_STEPS, 5 * LONG_STEPS)
        pages.append([s.step_index for s in reply.steps])
        if not reply.has_more:
            break
        token_ = reply.next_page_token
    assert [len(p) for p in pages] == [50, 50, 20]
    assert [i for p in pages for i in p] == list(range(LONG_STEPS))
    # page_size above 1,000 is coerced to 1,000 (this trace has fewer)
    big = await runs.GetLlmRunTrace(runs_pb.GetLlmRunTraceRequest(run_id=RUN_A, page_size=5000), metadata=auth(A))
    assert len(big.steps) == LONG_STEPS and not big.has_more


async def test_a_trace_is_found_by_its_id(runs):
    by_id = await runs.GetLlmRunTrace(runs_pb.GetLlmRunTraceRequest(run_id="-", trace_id=TRACE_A, page_size=3),
                                      metadata=auth(A))
    assert (by_id.trace.trace_id, by_id.trace.run_id, len(by_id.steps), by_id.has_more) == (TRACE_A, RUN_A, 3, True)
    again = await runs.GetLlmRunTrace(runs_pb.GetLlmRunTraceRequest(run_id=RUN_A, trace_id=TRACE_A), metadata=auth(A))
    assert again.trace.trace_id == TRACE_A
    # the token is bound to the lookup it was issued for
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await runs.GetLlmRunTrace(runs_pb.GetLlmRunTraceRequest(run_id=RUN_A, page_token=by_id.next_page_token),
                                  metadata=auth(A))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    for request, tenant in ((runs_pb.GetLlmRunTraceRequest(run_id="-", trace_id=TRACE_B), A),   # another tenant's
                            (runs_pb.GetLlmRunTraceRequest(run_id=RUN_B, trace_id=TRACE_A), A),  # not that run's
                            (runs_pb.GetLlmRunTraceRequest(run_id="-", trace_id=TRACE_A), B)):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await runs.GetLlmRunTrace(request, metadata=auth(tenant))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await runs.GetLlmRunTrace(runs_pb.GetLlmRunTraceRequest(run_id="-"), metadata=auth(A))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "trace_id" in violations(err.value)


async def test_request_id_is_written_through_ingest_and_filtered_on(suite, seeded):
    rid, request_id = f"sys-{uuid.uuid4().hex}", f"req-{uuid.uuid4().hex[:12]}"
    writer = (("authorization", f"Bearer {token(A, scopes=('evidence.write',), actor_type='SYSTEM')}"),)
    async with grpc.aio.insecure_channel(suite["ingest"]) as channel:
        reply = await ingest_grpc.IngestServiceStub(channel).AppendSystemRecords(ingest_pb.AppendSystemRecordsRequest(
            records=[ingest_pb.SystemRecordInput(
                record_id=rid, component="api", event_type=vocab_pb2.SYSTEM_EVENT_TYPE_ERROR,
                severity=vocab_pb2.SYSTEM_SEVERITY_ERROR, summary="upstream refused", request_id=request_id,
                occurred_at=ts(BASE))]), metadata=writer)
        assert reply.results[0].status == ingest_pb.ITEM_STATUS_CREATED
    async with grpc.aio.insecure_channel(suite["logs"]) as channel:
        system = sys_grpc.SystemLogsServiceStub(channel)
        found = await system.ListSystemRecords(sys_pb.ListSystemRecordsRequest(request_id=request_id), metadata=auth(A))
        assert [(r.id, r.request_id) for r in found.records] == [(rid, request_id)] and found.total_size == 1
        assert not (await system.ListSystemRecords(sys_pb.ListSystemRecordsRequest(request_id=request_id),
                                                   metadata=auth(B))).records
        hits = await pb_grpc.EvidenceSearchServiceStub(channel).SearchEvidence(
            pb.SearchEvidenceRequest(query=request_id), metadata=auth(A))
        assert [h.system_record.id for h in hits.hits] == [rid]


async def test_a_record_too_large_for_one_tsvector_is_recorded_and_found_by_its_beginning(search, database_url):
    # A tsvector holds at most 1 MB: a document of every word would refuse the INSERT of the evidence.
    words = " ".join(f"w{i}" for i in range(300_000))  # ~2.3 MB of distinct words
    producer = Producer(login_url(database_url, "producer"), pool_size=1)
    try:
        with producer.transaction(B) as conn:
            traces = TraceRecorder(conn)
            traces.create_trace(tenant_id=B, run_id=f"{B}.run-big", trace_id=f"{B}.trace-big", started_at=BASE)
            traces.add_step(tenant_id=B, trace_id=f"{B}.trace-big", step_index=0, step_type="input", timestamp=BASE,
                            input_data={"text": f"giraffe {words} hippopotamus"})
    finally:
        producer.close()
    (hit,) = (await find(search, "giraffe", B)).hits
    assert hit.trace_step.trace_id == f"{B}.trace-big" and list(hit.matched_fields) == ["input_data"]
    assert not (await find(search, "hippopotamus", B)).hits  # past the first 100,000 characters
