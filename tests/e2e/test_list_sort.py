"""`sort` on ListAuditEntries, ListLlmRuns and ListSystemRecords (seed 003 §4.5, issue #25), and
`search` / `order` / `sort` on the O1–O3 category lists (the ledger's identity, authorization and
access views; a run's system records): keyset pages in every sort and order that read exactly the
rows a full sort of the tenant's rows gives, totals the same in every sort, page tokens bound to
the sort. Two tenants of their own, with values chosen so that ties in the sort field occur."""
from __future__ import annotations

from datetime import timedelta

import grpc
import pytest

from aos.evidence.v1 import evidence_pb2
from aos.logs.v1 import (
    audit_ledger_service_pb2 as audit_pb,
    audit_ledger_service_pb2_grpc as audit_grpc,
    llm_runs_service_pb2 as runs_pb,
    llm_runs_service_pb2_grpc as runs_grpc,
    system_logs_service_pb2 as sys_pb,
    system_logs_service_pb2_grpc as sys_grpc,
)
from aos_recording.writers import AuditLedgerWriter, LlmRunRecordWriter, Producer, SystemRecordWriter
from aos_runtime.validation import by_number
from tests.e2e.support import BASE, auth, register_tenants, violations
from tests.logins import login_url

pytestmark = pytest.mark.db

A, B = "tenant-listsort-a", "tenant-listsort-b"
ASC, DESC = evidence_pb2.SORT_ORDER_ASCENDING, evidence_pb2.SORT_ORDER_DESCENDING
START = BASE - timedelta(hours=20)
RUN = f"{A}.run-sorted"
# (event, entity): names whose order is the same in every collation (distinct first letters).
EVENTS = [("LimitUpdated", "LIMIT"), ("PolicyRuleCreated", "POLICY_RULE"), ("IncidentAcknowledged", "INCIDENT"),
          ("ActorLoggedIn", "ACTOR"), ("AccessGranted", "LLM_RUN")]
# Actors of the entries (entry i: ACTORS[i % 4]), ties included; one kind of entry has none (sorts as '').
ACTORS = ["mallory", "bob", None, "ziggy"]
LEVELS = ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
# run index -> (cost_cents, input_tokens, output_tokens, minutes after START it started)
RUNS = {0: (500, 10, 5, 30), 1: (100, 100, 0, 10), 2: (500, 1, 1, 20), 3: (0, 50, 50, 0), 4: (250, 7, 8, 40)}


@pytest.fixture(scope="module")
def seeded(database_url):
    """Tenant A: 15 audit entries (each EVENTS pair three times; 'heron' in the reasons of the
    even ones; ACTORS in turn), 10 system records of the run RUN (each level twice; 'heron' in the first five)
    and 5 runs (RUNS: ties in cost, in started-at order different from created order). Tenant
    B: one of each, so that A's lists show none of them."""
    producer = Producer(login_url(database_url, "producer"), pool_size=1)
    try:
        register_tenants(producer, A, B)
        with producer.transaction(A) as conn:
            ledger = AuditLedgerWriter(conn)
            for i in range(15):
                event, entity = EVENTS[i % len(EVENTS)]
                ledger.append(tenant_id=A, event_type=event, entity_type=entity, entity_id=f"{A}.e-{i}",
                              actor_type="SYSTEM" if ACTORS[i % 4] is None else "HUMAN", actor_id=ACTORS[i % 4],
                              action_reason=f"{'heron' if i % 2 == 0 else 'sparrow'} entry {i}",
                              created_at=START + timedelta(minutes=i))
            records = SystemRecordWriter(conn)
            for i in range(10):
                records.write(tenant_id=A, component="sorter", event_type="CONFIG_CHANGE", severity=LEVELS[i % 5],
                              summary=f"{'heron' if i < 5 else 'sparrow'} record {i}", run_id=RUN,
                              created_at=START + timedelta(minutes=i))
            runs = LlmRunRecordWriter(conn)
            for i, (cost, tokens_in, tokens_out, started) in RUNS.items():
                runs.write(tenant_id=A, run_id=f"{A}.run-{i}", provider="openai", model="gpt",
                           execution_status="succeeded", started_at=START + timedelta(minutes=started),
                           created_at=START + timedelta(minutes=60 + i), cost_cents=cost,
                           input_tokens=tokens_in, output_tokens=tokens_out)
            runs.write(tenant_id=A, run_id=RUN, provider="openai", model="gpt", execution_status="succeeded",
                       started_at=START, created_at=START, cost_cents=0)
        with producer.transaction(B) as conn:
            AuditLedgerWriter(conn).append(tenant_id=B, event_type="LimitUpdated", entity_type="LIMIT",
                                           entity_id=f"{B}.e-0", actor_type="HUMAN", actor_id="user-sorter",
                                           action_reason="heron in b", created_at=START)
            SystemRecordWriter(conn).write(tenant_id=B, component="sorter", event_type="CONFIG_CHANGE",
                                           severity="CRITICAL", summary="heron in b", created_at=START)
            LlmRunRecordWriter(conn).write(tenant_id=B, run_id=f"{B}.run-0", provider="openai", model="gpt",
                                           execution_status="succeeded", started_at=START, created_at=START,
                                           cost_cents=10_000)
    finally:
        producer.close()
    return BASE


@pytest.fixture()
async def stubs(suite, seeded):
    async with grpc.aio.insecure_channel(suite["logs"]) as channel:
        yield {"audit": audit_grpc.AuditLedgerServiceStub(channel), "system": sys_grpc.SystemLogsServiceStub(channel),
               "runs": runs_grpc.LlmRunsServiceStub(channel)}


async def read_all(call, request_cls, field: str, tenant: str = A, page_size: int = 2, **fields) -> tuple[list, set]:
    """Every page of a list: (its items in order, the totals the pages said)."""
    items: list = []
    totals: set[int] = set()
    token = ""
    while True:
        reply = await call(request_cls(page_size=page_size, page_token=token, **fields), metadata=auth(tenant))
        items += list(getattr(reply, field))
        totals.add(reply.total_size)
        assert not reply.total_size_is_estimate
        if not reply.has_more:
            assert not reply.next_page_token
            return items, totals
        token = reply.next_page_token


def expected(items: list, field_key, ascending: bool, key_id, created=lambda i: i.created_at.ToDatetime()) -> list:
    """The items fully sorted as the list promises: (field, created_at, id), all one direction.
    (Within a list the ids of this file's rows order as their keys do.)"""
    return [key_id(i) for i in sorted(items, key=lambda i: (field_key(i), created(i), key_id(i)),
                                      reverse=not ascending)]


def run_created(run):
    """When the fixture recorded the run (a run message carries started_at, not created_at)."""
    index = _index(run)
    return START + timedelta(minutes=60 + index) if index >= 0 else START


EVENT_NAMES = by_number("aos.evidence.v1.AuditEventType")
ENTITY_NAMES = by_number("aos.evidence.v1.AuditEntityType")
SEVERITY_RANK = {name: rank for rank, name in enumerate(LEVELS, 1)}
SEVERITY_NAMES = by_number("aos.evidence.v1.SystemSeverity")

AUDIT_SORTS = {audit_pb.AUDIT_SORT_FIELD_EVENT_TYPE: lambda e: EVENT_NAMES[e.event_type],
               audit_pb.AUDIT_SORT_FIELD_ENTITY_TYPE: lambda e: ENTITY_NAMES[e.entity_type],
               audit_pb.AUDIT_SORT_FIELD_ACTOR: lambda e: e.actor_id,
               audit_pb.AUDIT_SORT_FIELD_CREATED_AT: lambda e: 0}


@pytest.mark.parametrize("sort", AUDIT_SORTS)
@pytest.mark.parametrize("order", [ASC, DESC])
async def test_audit_sorts_page_as_a_full_sort(stubs, sort, order):
    call = stubs["audit"].ListAuditEntries
    every, _ = await read_all(call, audit_pb.ListAuditEntriesRequest, "entries", page_size=1000)
    assert len(every) == 15
    for page_size in (1, 2, 4):
        items, totals = await read_all(call, audit_pb.ListAuditEntriesRequest, "entries", page_size=page_size,
                                       sort=sort, order=order)
        assert [e.id for e in items] == expected(every, AUDIT_SORTS[sort], order == ASC, lambda e: e.id)
        assert totals == {15}
    # Filters and the search combine with the sort; the total is what matches, in every sort.
    heron, totals = await read_all(call, audit_pb.ListAuditEntriesRequest, "entries", search="heron",
                                   sort=sort, order=order, page_size=3)
    assert totals == {8} and [e.id for e in heron] == expected(
        [e for e in every if "heron" in e.action_reason], AUDIT_SORTS[sort], order == ASC, lambda e: e.id)


async def test_audit_by_actor_with_the_actor_filter(stubs):
    """Sorted by actor, DESCENDING: ziggy's entries first, the entries without an actor last
    (their key is ''); with the actor_id filter (the same index, migration 0029) one actor's
    entries, newest first within it, in pages."""
    call = stubs["audit"].ListAuditEntries
    items, totals = await read_all(call, audit_pb.ListAuditEntriesRequest, "entries", page_size=4,
                                   sort=audit_pb.AUDIT_SORT_FIELD_ACTOR)
    assert totals == {15}
    assert [e.actor_id for e in items] == ["ziggy"] * 3 + ["mallory"] * 4 + ["bob"] * 4 + [""] * 4
    bob, totals = await read_all(call, audit_pb.ListAuditEntriesRequest, "entries", page_size=1, actor_id="bob",
                                 sort=audit_pb.AUDIT_SORT_FIELD_ACTOR, order=ASC)
    assert [e.entity_id for e in bob] == [f"{A}.e-{i}" for i in (1, 5, 9, 13)] and totals == {4}


RUN_SORTS = {runs_pb.LLM_RUN_SORT_FIELD_STARTED_AT: lambda r: r.started_at.ToDatetime(),
             runs_pb.LLM_RUN_SORT_FIELD_TOTAL_COST_CENTS: lambda r: RUNS.get(_index(r), (0,))[0],
             runs_pb.LLM_RUN_SORT_FIELD_TOTAL_TOKENS: lambda r: r.input_tokens + r.output_tokens}


def _index(run) -> int:
    tail = run.run_id.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else -1


@pytest.mark.parametrize("sort", RUN_SORTS)
@pytest.mark.parametrize("order", [ASC, DESC])
async def test_run_sorts_page_as_a_full_sort(stubs, sort, order):
    call = stubs["runs"].ListLlmRuns
    every, _ = await read_all(call, runs_pb.ListLlmRunsRequest, "runs", page_size=1000)
    assert len(every) == 6
    items, totals = await read_all(call, runs_pb.ListLlmRunsRequest, "runs", sort=sort, order=order)
    assert [r.run_id for r in items] == expected(every, RUN_SORTS[sort], order == ASC, lambda r: r.run_id,
                                                 run_created)
    assert totals == {6}


async def test_runs_by_cost_most_expensive_first(stubs):
    items, _ = await read_all(stubs["runs"].ListLlmRuns, runs_pb.ListLlmRunsRequest, "runs", page_size=1,
                              sort=runs_pb.LLM_RUN_SORT_FIELD_TOTAL_COST_CENTS)
    # 500 twice (run 2 recorded after run 0: newest first within the tie), 250, 100, then 0 twice
    # (run 3 recorded after RUN).
    assert [r.run_id for r in items] == [f"{A}.run-{i}" for i in (2, 0, 4, 1, 3)] + [RUN]


@pytest.mark.parametrize("order", [ASC, DESC])
async def test_system_records_by_severity(stubs, order):
    call = stubs["system"].ListSystemRecords
    request_cls = sys_pb.ListSystemRecordsRequest
    every, _ = await read_all(call, request_cls, "records", page_size=1000, component="sorter")
    assert len(every) == 10
    rank = lambda r: SEVERITY_RANK[SEVERITY_NAMES[r.severity]]  # noqa: E731
    items, totals = await read_all(call, request_cls, "records", page_size=3, component="sorter",
                                   sort=sys_pb.SYSTEM_RECORD_SORT_FIELD_SEVERITY, order=order)
    assert [r.id for r in items] == expected(every, rank, order == ASC, lambda r: r.id) and totals == {10}
    if order == DESC:
        assert [SEVERITY_NAMES[r.severity] for r in items[:2]] == ["CRITICAL", "CRITICAL"]
    # Without the component filter the list merges the tenant's records and the system-wide ones:
    # the merge keeps the sort across pages.
    merged, totals = await read_all(call, request_cls, "records", page_size=7,
                                    sort=sys_pb.SYSTEM_RECORD_SORT_FIELD_SEVERITY, order=order)
    whole, _ = await read_all(call, request_cls, "records", page_size=1000)
    assert [r.id for r in merged] == expected(whole, rank, order == ASC, lambda r: r.id)
    assert totals == {len(whole)}


LISTS = {
    "audit": ("audit", "ListAuditEntries", audit_pb.ListAuditEntriesRequest, audit_pb.AUDIT_SORT_FIELD_EVENT_TYPE,
              audit_pb.AUDIT_SORT_FIELD_ENTITY_TYPE, audit_pb.AUDIT_SORT_FIELD_CREATED_AT),
    "audit-actor": ("audit", "ListAuditEntries", audit_pb.ListAuditEntriesRequest, audit_pb.AUDIT_SORT_FIELD_ACTOR,
                    audit_pb.AUDIT_SORT_FIELD_EVENT_TYPE, audit_pb.AUDIT_SORT_FIELD_CREATED_AT),
    "runs": ("runs", "ListLlmRuns", runs_pb.ListLlmRunsRequest, runs_pb.LLM_RUN_SORT_FIELD_TOTAL_COST_CENTS,
             runs_pb.LLM_RUN_SORT_FIELD_STARTED_AT, runs_pb.LLM_RUN_SORT_FIELD_CREATED_AT),
    "system": ("system", "ListSystemRecords", sys_pb.ListSystemRecordsRequest,
               sys_pb.SYSTEM_RECORD_SORT_FIELD_SEVERITY, None, sys_pb.SYSTEM_RECORD_SORT_FIELD_CREATED_AT),
}


@pytest.mark.parametrize("name", LISTS)
async def test_a_token_is_bound_to_its_sort(stubs, name):
    stub, rpc, request_cls, sort, other_sort, created = LISTS[name]
    call = getattr(stubs[stub], rpc)
    first = await call(request_cls(page_size=1, sort=sort), metadata=auth(A))
    assert first.next_page_token
    others = [dict(), dict(sort=created), dict(sort=sort, order=ASC)] + ([dict(sort=other_sort)] if other_sort else [])
    for other in others:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call(request_cls(page_size=1, page_token=first.next_page_token, **other), metadata=auth(A))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and set(violations(err.value)) == {"page_token"}
    with pytest.raises(grpc.aio.AioRpcError) as err:  # another tenant
        await call(request_cls(page_size=1, page_token=first.next_page_token, sort=sort), metadata=auth(B))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # CREATED_AT is the unset sort: the unset sort's token continues its pages.
    plain = await call(request_cls(page_size=1), metadata=auth(A))
    again = await call(request_cls(page_size=1, sort=created, page_token=plain.next_page_token), metadata=auth(A))
    assert again.total_size == plain.total_size
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call(request_cls(sort=99), metadata=auth(A))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and set(violations(err.value)) == {"sort"}


# --- the O1–O3 category lists: search, order and sort ---------------------------------------

async def test_category_lists_take_search_order_and_sort(stubs):
    call = stubs["audit"].ListIdentityEvents
    every, totals = await read_all(call, audit_pb.ListIdentityEventsRequest, "entries", page_size=1000)
    assert {EVENT_NAMES[e.event_type] for e in every} == {"ActorLoggedIn"} and totals == {3}
    heron, totals = await read_all(call, audit_pb.ListIdentityEventsRequest, "entries", page_size=1, search="heron")
    # entries 3, 8, 13 are ActorLoggedIn; 8 has 'heron' (even)
    assert [e.entity_id for e in heron] == [f"{A}.e-8"] and totals == {1}
    oldest, _ = await read_all(call, audit_pb.ListIdentityEventsRequest, "entries", page_size=1, order=ASC)
    assert [e.id for e in oldest] == [e.id for e in every][::-1]
    # The access view (O3): AccessGranted on evidence entities; 'sparrow' in entries 9 (odd) only.
    access = stubs["audit"].ListAccessEvents
    found, totals = await read_all(access, audit_pb.ListAccessEventsRequest, "entries", search="sparrow -heron")
    assert [e.entity_id for e in found] == [f"{A}.e-9"] and totals == {1}
    # The authorization view (O2) sorted by event type, both orders: a full sort's order.
    authz = stubs["audit"].ListAuthorizationDecisions
    whole, _ = await read_all(authz, audit_pb.ListAuthorizationDecisionsRequest, "entries", page_size=1000)
    for order in (ASC, DESC):
        items, totals = await read_all(authz, audit_pb.ListAuthorizationDecisionsRequest, "entries", page_size=1,
                                       sort=audit_pb.AUDIT_SORT_FIELD_EVENT_TYPE, order=order)
        assert [e.id for e in items] == expected(whole, AUDIT_SORTS[audit_pb.AUDIT_SORT_FIELD_EVENT_TYPE],
                                                 order == ASC, lambda e: e.id)
        assert totals == {len(whole)}
    # The same bad input as the full list's, the same answer.
    for fields, bad in ((dict(search="-heron"), {"search"}), (dict(order=7), {"order"}), (dict(sort=42), {"sort"})):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call(audit_pb.ListIdentityEventsRequest(**fields), metadata=auth(A))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and set(violations(err.value)) == bad
    # Tenant B sees its own only.
    assert (await read_all(call, audit_pb.ListIdentityEventsRequest, "entries", tenant=B, search="heron"))[0] == []


async def test_run_events_take_search_order_and_sort(stubs):
    call = stubs["system"].ListSystemRunEvents
    request_cls = sys_pb.ListSystemRunEventsRequest
    every, totals = await read_all(call, request_cls, "records", run_id=RUN, page_size=1000)
    assert len(every) == 10 and totals == {10}
    heron, totals = await read_all(call, request_cls, "records", run_id=RUN, search="heron", page_size=2)
    assert sorted(r.summary for r in heron) == [f"heron record {i}" for i in range(5)] and totals == {5}
    assert [r.id for r in heron] == [r.id for r in every if r.summary.startswith("heron")]
    oldest, _ = await read_all(call, request_cls, "records", run_id=RUN, search="heron", order=ASC, page_size=2)
    assert [r.id for r in oldest] == [r.id for r in heron][::-1]
    rank = lambda r: SEVERITY_RANK[SEVERITY_NAMES[r.severity]]  # noqa: E731
    ranked, totals = await read_all(call, request_cls, "records", run_id=RUN, page_size=3,
                                    sort=sys_pb.SYSTEM_RECORD_SORT_FIELD_SEVERITY)
    assert [r.id for r in ranked] == expected(every, rank, False, lambda r: r.id) and totals == {10}
    first = await call(request_cls(run_id=RUN, page_size=1, search="heron"), metadata=auth(A))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call(request_cls(run_id=RUN, page_size=1, page_token=first.next_page_token), metadata=auth(A))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and set(violations(err.value)) == {"page_token"}
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call(request_cls(run_id=RUN, search="!!"), metadata=auth(A))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and set(violations(err.value)) == {"search"}


def test_every_sort_value_of_the_contract_has_its_key():
    """A value added to a sort enum without its SQL key would fail at run time: each has one."""
    from aos_evidence.queries import AUDIT_SORTS
    from aos_runtime.validation import canonical_names
    from services.logs.store import RUN_SORTS, SYSTEM_SORTS

    for enum, keys in (("aos.logs.v1.AuditSortField", AUDIT_SORTS), ("aos.logs.v1.LlmRunSortField", RUN_SORTS),
                       ("aos.logs.v1.SystemRecordSortField", SYSTEM_SORTS)):
        assert set(canonical_names(enum)) - {"created_at"} == set(keys), enum
