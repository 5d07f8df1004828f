"""GetLlmRunGovernance (a run's O3) takes the O1–O3 category lists' `search`, `order` and `sort`
(issue #25): the search narrows the correlated audit entries (and the overrides among them) and
the policy steps through the lists' one matcher; the order reverses every list of the view (its
own order, oldest first, stays the default); the sort orders the audit entries as ListAuditEntries
does. Bad input is a field violation, as on the lists. A tenant of its own; another tenant's
entries with the same words never show."""
from __future__ import annotations

from datetime import timedelta

import grpc
import pytest

from aos.evidence.v1 import evidence_pb2
from aos.logs.v1 import audit_ledger_service_pb2 as audit_pb, llm_runs_service_pb2 as pb, llm_runs_service_pb2_grpc
from aos_recording.sources import SourceWriter
from aos_recording.writers import AuditLedgerWriter, LlmRunRecordWriter, Producer, TraceRecorder
from tests.e2e.support import BASE, auth, register_tenants, violations
from tests.logins import login_url

pytestmark = pytest.mark.db

A, B = "tenant-govview-a", "tenant-govview-b"
RUN = f"{A}.run-governed"
RUN2 = f"{A}.run-governed-v2"
START = BASE - timedelta(hours=30)
ASC, DESC = evidence_pb2.SORT_ORDER_ASCENDING, evidence_pb2.SORT_ORDER_DESCENDING
# (event, entity, actor, reason) of the run's entries, oldest first (entry i at START + i minutes).
ENTRIES = [("PolicyRuleCreated", "POLICY_RULE", "zoe", "heron rule drafted"),
           ("LimitOverrideGranted", "LIMIT", "adam", "heron override for the budget"),
           ("IncidentAcknowledged", "INCIDENT", "mia", "sparrow acknowledged"),
           ("LimitUpdated", "LIMIT", "adam", "sparrow limit raised"),
           ("EmergencyOverrideActivated", "LIMIT", "zoe", "heron emergency")]
# (step type, input) of the run's trace; the policy steps are 1, 2 and 4.
STEPS = [("llm_call", "heron prompt"), ("policy_check", "heron policy check"),
         ("policy_check", "sparrow policy check"), ("llm_call", "sparrow answer"), ("violation", "heron violation")]


@pytest.fixture(scope="module")
def seeded(database_url):
    producer = Producer(login_url(database_url, "producer"), pool_size=1)
    try:
        register_tenants(producer, A, B)
        with producer.transaction(A) as conn:
            LlmRunRecordWriter(conn).write(tenant_id=A, run_id=RUN, provider="openai", model="gpt",
                                           execution_status="succeeded", started_at=START, created_at=START)
            traces = TraceRecorder(conn)
            trace = traces.create_trace(tenant_id=A, run_id=RUN, started_at=START)
            for i, (kind, words) in enumerate(STEPS):
                traces.add_step(tenant_id=A, trace_id=trace, step_index=i, step_type=kind,
                                timestamp=START + timedelta(seconds=i), input_data={"text": words})
            traces.mark_violation(trace_id=trace, step_index=4, policy_id="pol-heron", reason="heron")
            ledger = AuditLedgerWriter(conn)
            for i, (event, entity, actor, reason) in enumerate(ENTRIES):
                ledger.append(tenant_id=A, event_type=event, entity_type=entity, entity_id=f"{A}.e-{i}",
                              actor_type="HUMAN", actor_id=actor, action_reason=reason, correlation_id=RUN,
                              created_at=START + timedelta(minutes=i))
            # Not the run's: the same words, no correlation.
            ledger.append(tenant_id=A, event_type="LimitUpdated", entity_type="LIMIT", entity_id=f"{A}.other",
                          actor_type="HUMAN", actor_id="adam", action_reason="heron elsewhere", created_at=START)
            # RUN2: one entry in hash format 2 (its reason kept erasable under a data subject).
            LlmRunRecordWriter(conn).write(tenant_id=A, run_id=RUN2, provider="openai", model="gpt",
                                           execution_status="succeeded", started_at=START, created_at=START)
            trace2 = traces.create_trace(tenant_id=A, run_id=RUN2, started_at=START)
            traces.add_step(tenant_id=A, trace_id=trace2, step_index=0, step_type="policy_check",
                            timestamp=START + timedelta(minutes=1), input_data={"text": "check"})
            ledger.append(tenant_id=A, event_type="LimitUpdated", entity_type="LIMIT", entity_id=f"{A}.e-v2",
                          actor_type="HUMAN", actor_id="adam", action_reason="heron raised for a subject",
                          correlation_id=RUN2, created_at=START, data_subject="subj-govview")
            sources = SourceWriter(conn)
            sources.limit(limit_id=f"{A}.lim", tenant_id=A, name="budget", category="BUDGET", max_value=100,
                          created_at=START)
            for i in range(2):
                sources.breach(breach_id=f"{A}.breach-{i}", tenant_id=A, limit_id=f"{A}.lim", value_at_breach=101 + i,
                               limit_value=100, breached_at=START + timedelta(minutes=10 + i), run_id=RUN)
        with producer.transaction(B) as conn:
            LlmRunRecordWriter(conn).write(tenant_id=B, run_id=RUN, provider="openai", model="gpt",
                                           execution_status="succeeded", started_at=START, created_at=START)
            AuditLedgerWriter(conn).append(tenant_id=B, event_type="LimitUpdated", entity_type="LIMIT",
                                           entity_id=f"{B}.e", actor_type="HUMAN", actor_id="adam",
                                           action_reason="heron in b", correlation_id=RUN, created_at=START)
    finally:
        producer.close()
    return RUN


@pytest.fixture()
async def runs(suite, seeded):
    async with grpc.aio.insecure_channel(suite["logs"]) as channel:
        yield llm_runs_service_pb2_grpc.LlmRunsServiceStub(channel)


def reasons(entries) -> list[str]:
    return [e.action_reason for e in entries]


async def test_the_view_is_as_before_without_the_new_fields(runs):
    view = await runs.GetLlmRunGovernance(pb.GetLlmRunGovernanceRequest(run_id=RUN), metadata=auth(A))
    assert reasons(view.audit_entries) == [e[3] for e in ENTRIES]  # oldest first, the other entry not in it
    assert reasons(view.overrides) == ["heron override for the budget", "heron emergency"]
    assert [s.step_index for s in view.policy_steps] == [1, 2, 4]
    assert [s.is_inflection_point for s in view.policy_steps] == [False, False, True]
    assert [b.id for b in view.limit_breaches] == [f"{A}.breach-0", f"{A}.breach-1"]


async def test_search_narrows_entries_overrides_and_policy_steps(runs):
    view = await runs.GetLlmRunGovernance(pb.GetLlmRunGovernanceRequest(run_id=RUN, search="heron"),
                                          metadata=auth(A))
    assert reasons(view.audit_entries) == ["heron rule drafted", "heron override for the budget", "heron emergency"]
    assert reasons(view.overrides) == ["heron override for the budget", "heron emergency"]
    assert [s.step_index for s in view.policy_steps] == [1, 4]  # step 0 says heron but is no policy step
    assert len(view.limit_breaches) == 2  # no searchable text: answered whole
    phrase = await runs.GetLlmRunGovernance(pb.GetLlmRunGovernanceRequest(
        run_id=RUN, search='"sparrow limit" or "sparrow policy"'), metadata=auth(A))
    assert reasons(phrase.audit_entries) == ["sparrow limit raised"] and not phrase.overrides
    assert [s.step_index for s in phrase.policy_steps] == [2]
    none = await runs.GetLlmRunGovernance(pb.GetLlmRunGovernanceRequest(run_id=RUN, search="kestrel"),
                                          metadata=auth(A))
    assert not none.audit_entries and not none.policy_steps and not none.overrides
    # Tenant B's entry correlated to a run of the same id says heron too: B sees its own only.
    other = await runs.GetLlmRunGovernance(pb.GetLlmRunGovernanceRequest(run_id=RUN, search="heron"),
                                           metadata=auth(B))
    assert reasons(other.audit_entries) == ["heron in b"] and not other.policy_steps


async def test_order_and_sort(runs):
    newest = await runs.GetLlmRunGovernance(pb.GetLlmRunGovernanceRequest(run_id=RUN, order=DESC), metadata=auth(A))
    assert reasons(newest.audit_entries) == [e[3] for e in ENTRIES][::-1]
    assert [s.step_index for s in newest.policy_steps] == [4, 2, 1]
    assert [b.id for b in newest.limit_breaches] == [f"{A}.breach-1", f"{A}.breach-0"]
    assert reasons(newest.overrides) == ["heron emergency", "heron override for the budget"]
    oldest = await runs.GetLlmRunGovernance(pb.GetLlmRunGovernanceRequest(run_id=RUN, order=ASC), metadata=auth(A))
    assert reasons(oldest.audit_entries) == [e[3] for e in ENTRIES]
    for order in (ASC, DESC):
        by_actor = await runs.GetLlmRunGovernance(pb.GetLlmRunGovernanceRequest(
            run_id=RUN, order=order, sort=audit_pb.AUDIT_SORT_FIELD_ACTOR), metadata=auth(A))
        keys = [(e.actor_id, e.created_at.ToDatetime(), e.id) for e in by_actor.audit_entries]
        assert keys == sorted(keys, reverse=order == DESC) and len(keys) == 5
    by_event = await runs.GetLlmRunGovernance(pb.GetLlmRunGovernanceRequest(
        run_id=RUN, search="heron", sort=audit_pb.AUDIT_SORT_FIELD_EVENT_TYPE, order=DESC), metadata=auth(A))
    assert reasons(by_event.audit_entries) == ["heron rule drafted", "heron override for the budget",
                                               "heron emergency"]  # PolicyRule… > LimitOverride… > Emergency…


async def test_bad_input_is_a_field_violation(runs):
    for fields, bad in ((dict(search="-heron"), {"search"}), (dict(search="x" * 300), {"search"}),
                        (dict(order=7), {"order"}), (dict(sort=42), {"sort"})):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await runs.GetLlmRunGovernance(pb.GetLlmRunGovernanceRequest(run_id=RUN, **fields), metadata=auth(A))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and set(violations(err.value)) == bad
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await runs.GetLlmRunGovernance(pb.GetLlmRunGovernanceRequest(run_id=f"{A}.no-such-run", search="heron"),
                                       metadata=auth(A))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_a_format_2_entry_reads_with_its_payload(runs):
    """The view's (and the replay state's) audit entries are opened as the lists' are: a hash
    format 2 entry shows its reason with its payload PRESENT (it read MISSING, reason empty, before)."""
    from aos.logs.v1 import records_pb2

    view = await runs.GetLlmRunGovernance(pb.GetLlmRunGovernanceRequest(run_id=RUN2),
                                          metadata=auth(A))
    (entry,) = view.audit_entries
    assert entry.action_reason == "heron raised for a subject"
    assert [(p.field, p.state) for p in entry.payloads] == [("action_reason", records_pb2.PAYLOAD_STATE_PRESENT)]
    replay = await runs.GetLlmRunReplay(pb.GetLlmRunReplayRequest(run_id=RUN2, at_step=0), metadata=auth(A))
    (state_entry,) = replay.state.audit_entries
    assert state_entry.action_reason == "heron raised for a subject"
    assert [p.state for p in state_entry.payloads] == [records_pb2.PAYLOAD_STATE_PRESENT]
