"""`search` and `order` on ListAuditEntries, ListSystemRecords and ListLlmRuns (issue #25):
the same matcher as SearchEvidence, keyset pages in both orders with honest totals, page tokens
bound to the order and the search, tenant isolation. Two tenants of their own with known words."""
from __future__ import annotations

from datetime import timedelta

import grpc
import pytest

from aos.evidence.v1 import evidence_pb2
from aos.logs.v1 import (
    audit_ledger_service_pb2 as audit_pb,
    audit_ledger_service_pb2_grpc as audit_grpc,
    evidence_search_service_pb2 as search_pb,
    evidence_search_service_pb2_grpc as search_grpc,
    llm_runs_service_pb2 as runs_pb,
    llm_runs_service_pb2_grpc as runs_grpc,
    system_logs_service_pb2 as sys_pb,
    system_logs_service_pb2_grpc as sys_grpc,
)
from aos_recording.writers import AuditLedgerWriter, LlmRunRecordWriter, Producer, SystemRecordWriter, TraceRecorder
from tests.e2e.support import BASE, DEMO, auth, register_tenants, ts, violations
from tests.logins import login_url

pytestmark = pytest.mark.db

A, B = "tenant-listsearch-a", "tenant-listsearch-b"
ASC, DESC = evidence_pb2.SORT_ORDER_ASCENDING, evidence_pb2.SORT_ORDER_DESCENDING
START = BASE - timedelta(hours=10)
HERON_ENTRIES, HERON_RECORDS = 7, 5


@pytest.fixture(scope="module")
def seeded(database_url):
    """Tenant A: 7 audit entries with 'heron' (one 'grey heron') and 2 without; 5 system records
    with 'heron' and 2 without; runs 0 and 1 with 'heron' in a step, run 2 without.
    Tenant B: 'heron' in 2 entries, a record and a run of its own."""
    producer = Producer(login_url(database_url, "producer"), pool_size=1)
    try:
        register_tenants(producer, A, B)
        with producer.transaction(A) as conn:
            ledger = AuditLedgerWriter(conn)
            for i in range(HERON_ENTRIES + 2):
                reason = ("grey heron landed" if i == 3 else f"heron sighting {i}") if i < HERON_ENTRIES \
                    else f"sparrow count {i}"
                ledger.append(tenant_id=A, event_type="LimitUpdated", entity_type="LIMIT", entity_id=f"{A}.lim-{i}",
                              actor_type="HUMAN", actor_id="user-birder", action_reason=reason,
                              created_at=START + timedelta(minutes=i))
            records = SystemRecordWriter(conn)
            for i in range(HERON_RECORDS + 2):
                records.write(tenant_id=A, component="watcher", event_type="CONFIG_CHANGE", severity="INFO",
                              summary=f"heron nest {i}" if i < HERON_RECORDS else f"sparrow nest {i}",
                              created_at=START + timedelta(minutes=i))
            _runs(conn, A, ["heron wading", "a heron again", "sparrow only"])
        with producer.transaction(B) as conn:
            ledger = AuditLedgerWriter(conn)
            for i in range(2):
                ledger.append(tenant_id=B, event_type="LimitUpdated", entity_type="LIMIT", entity_id=f"{B}.lim-{i}",
                              actor_type="HUMAN", actor_id="user-birder", action_reason=f"heron in b {i}",
                              created_at=START + timedelta(minutes=i))
            SystemRecordWriter(conn).write(tenant_id=B, component="watcher", event_type="CONFIG_CHANGE",
                                           severity="INFO", summary="heron in b", created_at=START)
            _runs(conn, B, ["heron in b"])
    finally:
        producer.close()
    return BASE


def _runs(conn, tenant: str, prompts: list[str]) -> None:
    traces, runs = TraceRecorder(conn), LlmRunRecordWriter(conn)
    for i, prompt in enumerate(prompts):
        at = START + timedelta(minutes=i)
        run_id, trace_id = f"{tenant}.run-{i}", f"{tenant}.trace-{i}"
        traces.create_trace(tenant_id=tenant, run_id=run_id, trace_id=trace_id, started_at=at)
        traces.add_step(tenant_id=tenant, trace_id=trace_id, step_index=0, step_type="llm_call", timestamp=at,
                        input_data={"prompt": prompt})
        runs.write(tenant_id=tenant, run_id=run_id, trace_id=trace_id, provider="openai", model="gpt",
                   execution_status="succeeded", started_at=at, created_at=at)


@pytest.fixture()
async def stubs(suite, seeded):
    async with grpc.aio.insecure_channel(suite["logs"]) as channel:
        yield {"audit": audit_grpc.AuditLedgerServiceStub(channel), "system": sys_grpc.SystemLogsServiceStub(channel),
               "runs": runs_grpc.LlmRunsServiceStub(channel), "search": search_grpc.EvidenceSearchServiceStub(channel)}


# (stub, rpc, request class, the answer's repeated field, an item's key)
LISTS = {
    "audit": ("audit", "ListAuditEntries", audit_pb.ListAuditEntriesRequest, "entries", lambda e: e.id),
    "system": ("system", "ListSystemRecords", sys_pb.ListSystemRecordsRequest, "records", lambda r: r.id),
    "runs": ("runs", "ListLlmRuns", runs_pb.ListLlmRunsRequest, "runs", lambda r: r.run_id),
}


async def read_all(stubs, name: str, tenant: str = A, page_size: int = 3, **fields) -> tuple[list[str], set[int]]:
    """Every page of a list: (the keys in order, the totals the pages said)."""
    stub, rpc, request_cls, field, key = LISTS[name]
    keys: list[str] = []
    totals: set[int] = set()
    token = ""
    while True:
        reply = await getattr(stubs[stub], rpc)(request_cls(page_size=page_size, page_token=token, **fields),
                                                metadata=auth(tenant))
        items = getattr(reply, field)
        assert all(item.metadata.tenant_id in (tenant, "") for item in items)
        keys += [key(item) for item in items]
        totals.add(reply.total_size)
        assert not reply.total_size_is_estimate
        if not reply.has_more:
            assert not reply.next_page_token
            return keys, totals
        token = reply.next_page_token


async def searched(stubs, query: str, source: int, tenant: str = A) -> list[str]:
    reply = await stubs["search"].SearchEvidence(search_pb.SearchEvidenceRequest(query=query, sources=[source]),
                                                 metadata=auth(tenant))
    return [h.audit_entry.id or h.system_record.id for h in reply.hits]


@pytest.mark.parametrize("name,count,source", [
    ("audit", HERON_ENTRIES, search_pb.EVIDENCE_SOURCE_AUDIT),
    ("system", HERON_RECORDS, search_pb.EVIDENCE_SOURCE_SYSTEM)])
async def test_search_pages_both_orders_as_search_evidence_finds(stubs, name, count, source):
    newest, totals = await read_all(stubs, name, search="heron")
    assert len(newest) == len(set(newest)) == count and totals == {count}
    # The list's matcher is SearchEvidence's: the same records, newest first like its hits.
    assert newest == await searched(stubs, "heron", source)
    oldest, totals = await read_all(stubs, name, search="heron", order=ASC)
    assert oldest == newest[::-1] and totals == {count}
    assert (await read_all(stubs, name, search="heron", order=DESC)) == (newest, {count})
    # Another page size pages the same order.
    assert (await read_all(stubs, name, search="heron", order=ASC, page_size=1))[0] == oldest
    # Tenant B's heron is B's alone, and A's is not B's.
    theirs, _ = await read_all(stubs, name, tenant=B, search="heron")
    assert theirs and not set(theirs) & set(newest)


async def test_search_syntax_is_search_evidences(stubs):
    assert len((await read_all(stubs, "audit", search='"grey heron"'))[0]) == 1
    assert len((await read_all(stubs, "audit", search="heron -grey"))[0]) == HERON_ENTRIES - 1
    assert len((await read_all(stubs, "audit", search="sparrow or grey"))[0]) == 3
    # An id is found by itself (its separators read as in SearchEvidence).
    assert len((await read_all(stubs, "audit", search=f"{A}.lim-3"))[0]) == 1
    assert (await read_all(stubs, "audit", search="kingfisher")) == ([], {0})


async def test_search_combines_with_the_other_filters(stubs):
    window = dict(created_after=ts(START + timedelta(minutes=2)), created_before=ts(START + timedelta(minutes=5)))
    keys, totals = await read_all(stubs, "audit", search="heron", order=ASC, page_size=2, **window)
    assert len(keys) == 3 and totals == {3}
    keys, totals = await read_all(stubs, "system", search="nest", component="watcher", page_size=2)
    assert len(keys) == HERON_RECORDS + 2 and totals == {HERON_RECORDS + 2}


async def test_runs_match_by_their_traces_steps(stubs):
    newest, totals = await read_all(stubs, "runs", search="heron", page_size=1)
    assert newest == [f"{A}.run-1", f"{A}.run-0"] and totals == {2}
    assert (await read_all(stubs, "runs", search="heron", order=ASC, page_size=1)) == (newest[::-1], {2})
    every, _ = await read_all(stubs, "runs", order=ASC, page_size=2)
    assert every == [f"{A}.run-{i}" for i in range(3)]
    assert (await read_all(stubs, "runs", tenant=B, search="heron"))[0] == [f"{B}.run-0"]


async def test_ascending_whole_ledger_counts_exactly(stubs, demo):
    """Unfiltered, oldest first: the newest-first pages reversed, (created_at, id) ascending, and
    on every page the total the chain's span gives (15 entries in the demo ledger)."""
    oldest, totals = await read_all(stubs, "audit", tenant=DEMO, page_size=4, order=ASC)
    newest, _ = await read_all(stubs, "audit", tenant=DEMO, page_size=4)
    assert len(oldest) == 15 and oldest == newest[::-1] and totals == {15}
    first = await stubs["audit"].ListAuditEntries(audit_pb.ListAuditEntriesRequest(order=ASC), metadata=auth(DEMO))
    keys = [(e.created_at.ToDatetime(), e.id) for e in first.entries]
    assert keys == sorted(keys)


@pytest.mark.parametrize("name", LISTS)
async def test_a_token_is_bound_to_its_order_and_search(stubs, name):
    stub, rpc, request_cls, _, _ = LISTS[name]
    call = getattr(stubs[stub], rpc)
    first = await call(request_cls(page_size=1, search="heron"), metadata=auth(A))
    assert first.next_page_token
    for other, tenant in ((dict(search="heron", order=ASC), A), (dict(search="heron wading"), A), ({}, A),
                          (dict(search="heron"), B)):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call(request_cls(page_size=1, page_token=first.next_page_token, **other), metadata=auth(tenant))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and set(violations(err.value)) == {"page_token"}
    # DESCENDING is the unset order: its token continues the unset order's pages.
    again = await call(request_cls(page_size=1, search="heron", order=DESC, page_token=first.next_page_token),
                       metadata=auth(A))
    assert again.total_size == first.total_size


@pytest.mark.parametrize("name", LISTS)
@pytest.mark.parametrize("fields,bad", [
    (dict(search="-heron"), {"search"}), (dict(search="  "), {"search"}), (dict(search="!!"), {"search"}),
    (dict(search="x" * 257), {"search"}), (dict(search="heron\x00"), {"search"}), (dict(order=7), {"order"})])
async def test_a_bad_search_or_order_is_invalid_argument(stubs, name, fields, bad):
    stub, rpc, request_cls, _, _ = LISTS[name]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await getattr(stubs[stub], rpc)(request_cls(**fields), metadata=auth(A))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and set(violations(err.value)) == bad

