"""Search over hash-format-2 payloads (issue #25, migration 0034_payload_search, docs/ERASURE.md):
a record written with a data subject keeps its payload fields in evidence_payloads, not its row.
While held they are found — by GetLlmRunGovernance's `search`, the lists' `search` (the one
matcher) and SearchEvidence, which names them in `matched_fields` — each field on its own; once
the subject is erased nothing finds them and no matched field names them, while the records stay
(found by their other words). Another tenant with the same words and the same subject id never
sees A's records, before or after, and keeps its own through A's erasure."""
from __future__ import annotations

import uuid
from datetime import timedelta

import grpc
import httpx
import pytest

from aos.evidence.v1 import evidence_pb2
from aos.ingest.v1 import ingest_service_pb2 as ingest_pb, ingest_service_pb2_grpc as ingest_grpc
from aos.logs.v1 import (
    audit_ledger_service_pb2 as audit_pb,
    audit_ledger_service_pb2_grpc as audit_grpc,
    evidence_search_service_pb2 as pb,
    evidence_search_service_pb2_grpc as pb_grpc,
    llm_runs_service_pb2 as runs_pb,
    llm_runs_service_pb2_grpc as runs_grpc,
    records_pb2,
    system_logs_service_pb2 as sys_pb,
    system_logs_service_pb2_grpc as sys_grpc,
)
from aos_recording.writers import AuditLedgerWriter, LlmRunRecordWriter, Producer, SystemRecordWriter, TraceRecorder
from gateway import backend_addresses, create_app
from tests.e2e.erasure_support import officer, producer
from tests.e2e.support import BASE, auth, register_tenants, ts
from tests.logins import login_url

pytestmark = pytest.mark.db

A, B = "tenant-search-v2-a", "tenant-search-v2-b"
SUBJECT = "subj-search-v2"  # the same pseudonymous id in both tenants: still two subjects
START = BASE - timedelta(hours=20)


def run_of(tenant: str) -> str:
    return f"{tenant}.run-kiwi"


@pytest.fixture(scope="module")
def seeded(database_url):
    """In each tenant: a run whose trace has a format-2 policy step ("quokka" in its input,
    "bilby" in its output), a format-2 override entry correlated to it ("quokka" in its reason,
    "wombat" in its after state, "numbat" nowhere else), a format-2 system record of the run
    ("quokka" in its summary, "dingo" in its details), and a format-1 entry ("platypus")."""
    producer = Producer(login_url(database_url, "producer"), pool_size=1)
    try:
        for tenant in (A, B):
            register_tenants(producer, tenant)
            with producer.transaction(tenant) as conn:
                run = run_of(tenant)
                LlmRunRecordWriter(conn).write(tenant_id=tenant, run_id=run, provider="openai", model="gpt",
                                               execution_status="succeeded", started_at=START, created_at=START)
                traces = TraceRecorder(conn)
                trace = traces.create_trace(tenant_id=tenant, run_id=run, started_at=START)
                traces.add_step(tenant_id=tenant, trace_id=trace, step_index=0, step_type="llm_call",
                                timestamp=START, input_data={"text": "plain prompt"})
                traces.add_step(tenant_id=tenant, trace_id=trace, step_index=1, step_type="policy_check",
                                timestamp=START + timedelta(seconds=1), input_data={"text": "quokka policy check"},
                                output_data={"verdict": "bilby"}, data_subject=SUBJECT)
                ledger = AuditLedgerWriter(conn)
                ledger.append(tenant_id=tenant, event_type="LimitOverrideGranted", entity_type="LIMIT",
                              entity_id=f"{tenant}.lim-v2", actor_type="HUMAN", actor_id="adam",
                              action_reason="quokka override numbat", after_state={"note": "wombat"},
                              correlation_id=run, created_at=START + timedelta(minutes=1), data_subject=SUBJECT)
                ledger.append(tenant_id=tenant, event_type="LimitUpdated", entity_type="LIMIT",
                              entity_id=f"{tenant}.lim-v1", actor_type="HUMAN", actor_id="adam",
                              action_reason="platypus raised", correlation_id=run,
                              created_at=START + timedelta(minutes=2))
                SystemRecordWriter(conn).record(
                    tenant_id=tenant, component="mailer", event_type="ERROR", severity="ERROR",
                    summary="quokka bounce", details={"to": "dingo"}, run_id=run,
                    created_at=START + timedelta(minutes=3), data_subject=SUBJECT)
    finally:
        producer.close()
    return A


@pytest.fixture()
async def stubs(suite, seeded):
    async with grpc.aio.insecure_channel(suite["logs"]) as logs, \
            grpc.aio.insecure_channel(suite["ingest"]) as ingest:
        yield {"search": pb_grpc.EvidenceSearchServiceStub(logs), "runs": runs_grpc.LlmRunsServiceStub(logs),
               "audit": audit_grpc.AuditLedgerServiceStub(logs), "system": sys_grpc.SystemLogsServiceStub(logs),
               "ingest": ingest_grpc.IngestServiceStub(ingest)}


async def found(stubs, tenant: str, words: str) -> dict[str, object]:
    """What each read finds for ``words`` in ``tenant``: SearchEvidence's hits (source, matched
    fields) and total, the governance view's entries, overrides and policy steps, and the lists'."""
    run = run_of(tenant)
    hits = await stubs["search"].SearchEvidence(pb.SearchEvidenceRequest(query=words), metadata=auth(tenant))
    view = await stubs["runs"].GetLlmRunGovernance(runs_pb.GetLlmRunGovernanceRequest(run_id=run, search=words),
                                                   metadata=auth(tenant))
    audit = await stubs["audit"].ListAuditEntries(audit_pb.ListAuditEntriesRequest(search=words),
                                                  metadata=auth(tenant))
    runs = await stubs["runs"].ListLlmRuns(runs_pb.ListLlmRunsRequest(search=words), metadata=auth(tenant))
    system = await stubs["system"].ListSystemRecords(sys_pb.ListSystemRecordsRequest(search=words),
                                                     metadata=auth(tenant))
    return {
        "hits": sorted((pb.EvidenceSource.Name(h.source), tuple(h.matched_fields)) for h in hits.hits),
        "total": hits.total_size,
        "governance": ([e.entity_id for e in view.audit_entries], [e.entity_id for e in view.overrides],
                       [s.step_index for s in view.policy_steps]),
        "audit": [e.entity_id for e in audit.entries],
        "runs": [r.run_id for r in runs.runs],
        "system": [r.summary or "(erased)" for r in system.records],
    }


AUDIT, STEP, SYSTEM = "EVIDENCE_SOURCE_AUDIT", "EVIDENCE_SOURCE_TRACE_STEP", "EVIDENCE_SOURCE_SYSTEM"


def held(tenant: str) -> dict[str, dict[str, object]]:
    """What the held payloads make each word find in ``tenant``."""
    v2, run = f"{tenant}.lim-v2", run_of(tenant)
    return {
        "quokka": {"hits": [(AUDIT, ("action_reason",)), (SYSTEM, ("summary",)), (STEP, ("input_data",))],
                   "total": 3, "governance": ([v2], [v2], [1]), "audit": [v2], "runs": [run],
                   "system": ["quokka bounce"]},
        "wombat": {"hits": [(AUDIT, ("after_state",))], "total": 1, "governance": ([v2], [v2], []),
                   "audit": [v2], "runs": [], "system": []},
        "bilby": {"hits": [(STEP, ("output_data",))], "total": 1, "governance": ([], [], [1]), "audit": [],
                  "runs": [run], "system": []},
        "dingo": {"hits": [(SYSTEM, ("details",))], "total": 1, "governance": ([], [], []), "audit": [],
                  "runs": [], "system": ["quokka bounce"]},
        # a phrase inside one payload, and words of the row and of a payload each on their own
        '"quokka override"': {"hits": [(AUDIT, ("action_reason",))], "total": 1,
                              "governance": ([v2], [v2], []), "audit": [v2], "runs": [], "system": []},
    }


NOTHING = {"hits": [], "total": 0, "governance": ([], [], []), "audit": [], "runs": [], "system": []}


async def test_held_payloads_are_found_and_erased_ones_never(stubs, suite):
    for words, expected in held(A).items():
        assert await found(stubs, A, words) == expected, words
        assert await found(stubs, B, words) == held(B)[words], words  # B: its own records only
    # Another tenant's payloads are not A's: a word only B holds is not found in A.
    # (Same words, same subject id: every hit above is the tenant's own; checked by ids below.)
    b_hits = await stubs["search"].SearchEvidence(pb.SearchEvidenceRequest(query="quokka"), metadata=auth(B))
    assert {h.metadata.tenant_id for h in b_hits.hits} == {B}

    erased = await stubs["ingest"].EraseDataSubject(
        ingest_pb.EraseDataSubjectRequest(subject_id=SUBJECT, reason="DSR-search"), metadata=officer(A))
    assert erased.payloads_erased == 6  # a step's input and output, an entry's reason and after state, a summary and details

    for words in held(A):
        assert await found(stubs, A, words) == NOTHING, words
        assert await found(stubs, B, words) == held(B)[words], words  # B's subject is not A's: kept
    # The records stay, found by their other words; no matched field names an erased payload.
    v2 = f"{A}.lim-v2"
    hits = await stubs["search"].SearchEvidence(pb.SearchEvidenceRequest(query="lim-v2"), metadata=auth(A))
    ((hit,),) = [[h for h in hits.hits if h.metadata.tenant_id == A]]
    assert list(hit.matched_fields) == ["entity_id"] and hit.audit_entry.entity_id == v2
    assert [(p.field, p.state) for p in hit.audit_entry.payloads] == [
        ("action_reason", records_pb2.PAYLOAD_STATE_ERASED), ("after_state", records_pb2.PAYLOAD_STATE_ERASED)]
    step = await stubs["search"].SearchEvidence(pb.SearchEvidenceRequest(query="policy_check"), metadata=auth(A))
    assert [tuple(h.matched_fields) for h in step.hits] == [("step_type",)]
    view = await stubs["runs"].GetLlmRunGovernance(
        runs_pb.GetLlmRunGovernanceRequest(run_id=run_of(A), search="platypus or lim-v2"), metadata=auth(A))
    assert sorted(e.entity_id for e in view.audit_entries) == [f"{A}.lim-v1", v2]

    # Over REST (the gateway's transcoding of the same calls): nothing of the erased words in A, B's kept.
    app = create_app(backend_addresses(suite))
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://gateway") as http:
        def headers(tenant: str) -> dict[str, str]:
            return {"Authorization": auth(tenant)[0][1]}
        a_view = await http.get(f"/api/v1/logs/llm-runs/{run_of(A)}/governance", params={"search": "quokka"},
                                headers=headers(A))
        b_view = await http.get(f"/api/v1/logs/llm-runs/{run_of(B)}/governance", params={"search": "quokka"},
                                headers=headers(B))
        a_search = await http.get("/api/v1/logs/search", params={"query": "wombat"}, headers=headers(A))
        b_search = await http.get("/api/v1/logs/search", params={"query": "wombat"}, headers=headers(B))
    assert a_view.status_code == b_view.status_code == a_search.status_code == b_search.status_code == 200
    assert not a_view.json().get("audit_entries") and not a_view.json().get("policy_steps")
    assert [e["entity_id"] for e in b_view.json()["audit_entries"]] == [f"{B}.lim-v2"]
    assert [s["step_index"] for s in b_view.json()["policy_steps"]] == [1]
    assert not a_search.json().get("hits") and int(a_search.json().get("total_size", 0)) == 0
    assert [h["matched_fields"] for h in b_search.json()["hits"]] == [["after_state"]]

    # The erasure took those payloads, not the words: another subject's, written later, are found.
    later = ingest_pb.AuditEvent(
        event_id=f"evt-{uuid.uuid4().hex}", event_type=evidence_pb2.AUDIT_EVENT_TYPE_API_KEY_CREATED,
        entity_type=evidence_pb2.AUDIT_ENTITY_TYPE_API_KEY, entity_id=f"{A}.later", action_reason="quokka again",
        occurred_at=ts(START + timedelta(minutes=5)), data_subject_id=f"subj-{uuid.uuid4().hex[:8]}")
    reply = await stubs["ingest"].AppendAuditEvents(ingest_pb.AppendAuditEventsRequest(events=[later]),
                                                    metadata=producer(A))
    assert reply.results[0].status == ingest_pb.ITEM_STATUS_CREATED, reply
    hits = await stubs["search"].SearchEvidence(pb.SearchEvidenceRequest(query="quokka"), metadata=auth(A))
    assert [(h.audit_entry.entity_id, tuple(h.matched_fields)) for h in hits.hits] == [
        (f"{A}.later", ("action_reason",))]
