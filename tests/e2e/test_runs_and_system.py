"""LlmRunsService and SystemLogsService end to end over the demo scenarios, field by field."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import grpc
import pytest
from google.protobuf import json_format

from aos.evidence.v1 import evidence_pb2, records_pb2 as vocab_pb2
from aos.logs.v1 import (
    llm_runs_service_pb2 as runs_pb,
    llm_runs_service_pb2_grpc as runs_grpc,
    records_pb2,
    system_logs_service_pb2 as sys_pb,
    system_logs_service_pb2_grpc as sys_grpc,
)
from aos_recording import hashing
from tests.e2e.support import ACME, BASE, DEMO, auth, ts, violations

pytestmark = pytest.mark.db
SUPPORT, RESEARCH = f"{DEMO}.run-support-103", f"{DEMO}.run-research-7"


@pytest.fixture()
async def runs(suite, demo):
    async with grpc.aio.insecure_channel(suite["logs"]) as channel:
        yield runs_grpc.LlmRunsServiceStub(channel)


@pytest.fixture()
async def system(suite, demo):
    async with grpc.aio.insecure_channel(suite["logs"]) as channel:
        yield sys_grpc.SystemLogsServiceStub(channel)


def at(message_ts) -> datetime:
    return message_ts.ToDatetime(tzinfo=timezone.utc)


@pytest.mark.parametrize("fields,expected", [
    ({}, {SUPPORT, RESEARCH}),
    (dict(provider="openai"), {SUPPORT}),
    (dict(status=vocab_pb2.LLM_RUN_STATUS_ABORTED), {SUPPORT}),
    (dict(agent_id="agent-research"), {RESEARCH}),
    (dict(has_violation=True), {SUPPORT, RESEARCH}),
    (dict(has_violation=False), set()),
    (dict(policy_id="pol-pii-egress"), {RESEARCH}),
    (dict(is_synthetic=False), set()),
    (dict(run_id=SUPPORT, model="gpt-4o"), {SUPPORT}),
    (dict(created_after=ts(BASE - timedelta(hours=3))), {SUPPORT}),
])
async def test_list_runs_filters(runs, fields, expected):
    reply = await runs.ListLlmRuns(runs_pb.ListLlmRunsRequest(**fields), metadata=auth())
    assert {r.run_id for r in reply.runs} == expected and reply.total_size == len(expected)


async def test_envelope_field_by_field(runs):
    reply = await runs.GetLlmRunEnvelope(runs_pb.GetLlmRunEnvelopeRequest(run_id=SUPPORT), metadata=auth())
    run = reply.run
    assert (run.provider, run.model, run.agent_id, run.project_id) == ("openai", "gpt-4o", "agent-support",
                                                                      "proj-support")
    assert (run.status, run.outcome, run.termination_reason) == \
        (vocab_pb2.LLM_RUN_STATUS_ABORTED, vocab_pb2.RUN_OUTCOME_TERMINATED, "budget exhausted")
    assert (run.input_tokens, run.output_tokens, run.cost.amount_cents, run.cost.currency_code) == \
        (61000, 12000, 5200, "USD")
    assert at(run.started_at) == BASE - timedelta(hours=2)
    assert at(run.completed_at) == BASE - timedelta(hours=2) + timedelta(seconds=9)
    assert (run.has_violation, run.violation_policy_id, run.trace_id) == \
        (True, "pol-budget-guard", f"{DEMO}.trace-support-103")
    assert run.is_synthetic and run.synthetic_scenario_id == "SDSR-BUDGET-BREACH-001"
    m = reply.metadata
    assert (m.run_id, m.agent_id, m.trace_id, list(m.policy_ids)) == \
        (SUPPORT, "agent-support", f"{DEMO}.trace-support-103", ["pol-budget-guard"])
    assert m.actor_type == evidence_pb2.ACTOR_TYPE_AGENT and m.source_domain == evidence_pb2.SOURCE_DOMAIN_ACTIVITY
    expected = hashing.llm_run_content_hash({
        "id": "llm_" + hashing.sha256(f"{DEMO}:{SUPPORT}".encode()).hex()[:32], "tenant_id": DEMO, "run_id": SUPPORT,
        "trace_id": f"{DEMO}.trace-support-103", "agent_id": "agent-support", "project_id": "proj-support",
        "provider": "openai", "model": "gpt-4o", "execution_status": "aborted", "executor_type": "LLM",
        "outcome": "terminated", "termination_reason": "budget exhausted", "input_tokens": 61000,
        "output_tokens": 12000, "cost_cents": 5200, "source": "worker", "started_at": BASE - timedelta(hours=2),
        "completed_at": BASE - timedelta(hours=2, seconds=-9), "created_at": BASE - timedelta(hours=2, seconds=-9)})
    assert m.checksum == expected.hex()


async def test_trace_with_its_inflection_point_and_hashes(runs):
    reply = await runs.GetLlmRunTrace(runs_pb.GetLlmRunTraceRequest(run_id=SUPPORT), metadata=auth())
    steps = reply.steps
    assert [s.step_index for s in steps] == [0, 1, 2, 3]
    assert [s.is_inflection_point for s in steps] == [False, False, False, True]
    assert steps[3].step_type == vocab_pb2.STEP_TYPE_POLICY_CHECK and steps[3].level == vocab_pb2.STEP_LEVEL_WARNING
    assert json_format.MessageToDict(steps[3].output_data) == {"verdict": "BLOCK"}
    hashes = []
    for s in steps:
        doc = {"step_index": s.step_index, "step_type": vocab_pb2.StepType.Name(s.step_type).removeprefix(
            "STEP_TYPE_").lower(), "input_data": json_format.MessageToDict(s.input_data) if s.HasField("input_data")
            else None, "output_data": json_format.MessageToDict(s.output_data) if s.HasField("output_data") else None,
            "timestamp": at(s.timestamp)}
        doc = {k: ({kk: (int(vv) if isinstance(vv, float) and vv.is_integer() else vv) for kk, vv in v.items()}
                   if isinstance(v, dict) else v) for k, v in doc.items()}
        assert s.content_hash == hashing.step_content_hash(doc).hex()
        hashes.append(bytes.fromhex(s.content_hash))
    trace = reply.trace
    assert trace.content_hash == hashing.trace_content_hash(hashes).hex() == reply.metadata.checksum
    assert (trace.violation_step_index, trace.violation_policy_id, trace.status) == \
        (3, "pol-budget-guard", vocab_pb2.TRACE_STATUS_ABORTED)
    assert at(trace.violation_timestamp) == BASE - timedelta(hours=2) + timedelta(seconds=6)
    assert (reply.total_steps, reply.total_tokens, trace.total_cost.amount_cents) == (4, 35000, 2600)
    assert dict(trace.policy_snapshot)["policies"] == ["pol-budget-guard"]


async def test_governance_of_a_run(runs):
    reply = await runs.GetLlmRunGovernance(runs_pb.GetLlmRunGovernanceRequest(run_id=SUPPORT), metadata=auth())
    assert [e.event_type for e in reply.audit_entries] == [evidence_pb2.AUDIT_EVENT_TYPE_LIMIT_BREACHED]
    (breach,) = reply.limit_breaches
    assert (breach.limit_id, breach.value_at_breach, breach.limit_value, breach.run_id) == \
        (f"{DEMO}.lim-support-budget", "51700", "50000", SUPPORT)
    assert [s.step_index for s in reply.policy_steps] == [3] and reply.policy_steps[0].is_inflection_point
    assert list(reply.overrides) == []
    research = await runs.GetLlmRunGovernance(runs_pb.GetLlmRunGovernanceRequest(run_id=RESEARCH), metadata=auth())
    assert [e.event_type for e in research.audit_entries] == [evidence_pb2.AUDIT_EVENT_TYPE_INCIDENT_ACKNOWLEDGED]
    assert [s.step_type for s in research.policy_steps] == [vocab_pb2.STEP_TYPE_VIOLATION]
    assert list(research.metadata.incident_ids) == [f"{DEMO}.inc-pii-7"]


async def test_replay_merges_by_time_around_the_violation(runs):
    reply = await runs.GetLlmRunReplay(runs_pb.GetLlmRunReplayRequest(run_id=SUPPORT), metadata=auth())
    window = reply.replay
    center = BASE - timedelta(hours=2) + timedelta(seconds=6)
    assert (window.center, at(window.center_timestamp), window.window_seconds) == \
        (records_pb2.REPLAY_CENTER_VIOLATION, center, 30)
    assert (at(window.window_start), at(window.window_end)) == (center - timedelta(seconds=30),
                                                                center + timedelta(seconds=30))
    kinds = [(e.kind, e.WhichOneof("payload")) for e in window.events]
    assert kinds == [(records_pb2.REPLAY_EVENT_KIND_LLM_STEP, "step"),
                     (records_pb2.REPLAY_EVENT_KIND_SYSTEM_RECORD, "system_record"),
                     (records_pb2.REPLAY_EVENT_KIND_POLICY_EVENT, "audit_entry"),
                     (records_pb2.REPLAY_EVENT_KIND_POLICY_EVENT, "limit_breach")] + \
        [(records_pb2.REPLAY_EVENT_KIND_LLM_STEP, "step")] * 3
    times = [at(e.occurred_at) for e in window.events]
    assert times == sorted(times) and all(e.metadata.tenant_id == DEMO for e in window.events)
    narrow = await runs.GetLlmRunReplay(runs_pb.GetLlmRunReplayRequest(run_id=SUPPORT, window_seconds=5),
                                        metadata=auth())
    assert [e.step.step_index for e in narrow.replay.events] == [1, 2, 3]


async def test_replay_state_at_the_violation_step(runs):
    """Standing at step 3 (the violation): its input and output, everything so far, each hash."""
    reply = await runs.GetLlmRunReplay(runs_pb.GetLlmRunReplayRequest(run_id=SUPPORT, at_step=3), metadata=auth())
    trace = await runs.GetLlmRunTrace(runs_pb.GetLlmRunTraceRequest(run_id=SUPPORT), metadata=auth())
    governance = await runs.GetLlmRunGovernance(runs_pb.GetLlmRunGovernanceRequest(run_id=SUPPORT), metadata=auth())
    state, steps = reply.state, trace.steps
    assert (state.trace_id, state.step_index, state.last_step_index, state.steps_so_far) == \
        (trace.trace.trace_id, 3, 3, 4)
    assert state.step == steps[3] and state.step.is_inflection_point
    assert state.step.input_data.struct_value["policy"] == "pol-budget-guard"
    assert state.step.output_data.struct_value["verdict"] == "BLOCK"
    assert (state.tokens, state.cost.amount_cents, state.cost.currency_code, state.duration_ms) == \
        (sum(s.tokens for s in steps), sum(s.cost_cents for s in steps), "USD", sum(s.duration_ms for s in steps))
    # The prefix hash at the last step is the sealed trace's own hash (SPEC section 5).
    assert state.steps_hash == trace.trace.content_hash == \
        hashing.trace_content_hash(bytes.fromhex(s.content_hash) for s in steps).hex()
    assert [s.step_index for s in state.policy_steps] == [3]
    step_time = at(state.step.timestamp)
    assert list(state.audit_entries) == [e for e in governance.audit_entries if at(e.created_at) <= step_time]
    assert state.audit_entries and all(e.content_hash and e.chain_hash for e in state.audit_entries)
    assert [b.id for b in state.limit_breaches] == [b.id for b in governance.limit_breaches] == [f"{DEMO}.br-support-1"]
    window = reply.replay
    assert (window.center, window.center_timestamp) == (records_pb2.REPLAY_CENTER_STEP, state.step.timestamp)


async def test_replay_state_before_the_violation(runs):
    """At step 1: two steps so far, hashed as their own prefix; no policy step yet; the
    window centres on step 1, not on the violation."""
    reply = await runs.GetLlmRunReplay(runs_pb.GetLlmRunReplayRequest(run_id=SUPPORT, at_step=1, window_seconds=1),
                                       metadata=auth())
    trace = await runs.GetLlmRunTrace(runs_pb.GetLlmRunTraceRequest(run_id=SUPPORT), metadata=auth())
    state, steps = reply.state, trace.steps[:2]
    assert (state.step_index, state.steps_so_far, state.tokens, state.cost.amount_cents) == \
        (1, 2, sum(s.tokens for s in steps), sum(s.cost_cents for s in steps))
    assert state.step == steps[1] and not state.step.is_inflection_point
    assert state.steps_hash == hashing.trace_content_hash(bytes.fromhex(s.content_hash) for s in steps).hex()
    assert state.steps_hash != trace.trace.content_hash and not state.policy_steps
    assert reply.replay.center == records_pb2.REPLAY_CENTER_STEP
    assert [e.step.step_index for e in reply.replay.events if e.HasField("step")] == [1]
    # Without at_step there is no state, and the window is the inflection point's as before.
    plain = await runs.GetLlmRunReplay(runs_pb.GetLlmRunReplayRequest(run_id=SUPPORT), metadata=auth())
    assert not plain.HasField("state") and plain.replay.center == records_pb2.REPLAY_CENTER_VIOLATION


async def test_replay_state_beyond_the_last_step_is_out_of_range(runs):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await runs.GetLlmRunReplay(runs_pb.GetLlmRunReplayRequest(run_id=SUPPORT, at_step=4), metadata=auth())
    assert err.value.code() == grpc.StatusCode.OUT_OF_RANGE
    assert set(violations(err.value)) == {"at_step"} and "ends at step 3" in violations(err.value)["at_step"]


async def test_replay_state_of_another_tenants_run_is_not_found(runs):
    for step in (0, 3, 4):  # in range or not: the run does not exist for this tenant
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await runs.GetLlmRunReplay(runs_pb.GetLlmRunReplayRequest(run_id=SUPPORT, at_step=step),
                                       metadata=auth(ACME))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_run_exports_before_any_export(runs):
    reply = await runs.GetLlmRunExport(runs_pb.GetLlmRunExportRequest(run_id=SUPPORT), metadata=auth())
    assert (reply.run_id, len(reply.exports)) == (SUPPORT, 0)


@pytest.mark.parametrize("rpc,request_cls", [
    ("GetLlmRunEnvelope", runs_pb.GetLlmRunEnvelopeRequest), ("GetLlmRunTrace", runs_pb.GetLlmRunTraceRequest),
    ("GetLlmRunGovernance", runs_pb.GetLlmRunGovernanceRequest), ("GetLlmRunReplay", runs_pb.GetLlmRunReplayRequest),
    ("GetLlmRunExport", runs_pb.GetLlmRunExportRequest)])
async def test_another_tenants_run_is_not_found(runs, rpc, request_cls):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await getattr(runs, rpc)(request_cls(run_id=SUPPORT), metadata=auth(ACME))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("rpc,request_message,fields", [
    ("ListLlmRuns", runs_pb.ListLlmRunsRequest(page_size=-1, status=42), {"page_size", "status"}),
    ("ListLlmRuns", runs_pb.ListLlmRunsRequest(created_after=ts(BASE), created_before=ts(BASE)), {"created_before"}),
    ("GetLlmRunEnvelope", runs_pb.GetLlmRunEnvelopeRequest(run_id="bad id!"), {"run_id"}),
    ("GetLlmRunTrace", runs_pb.GetLlmRunTraceRequest(), {"run_id"}),
    ("GetLlmRunReplay", runs_pb.GetLlmRunReplayRequest(run_id=SUPPORT, window_seconds=601), {"window_seconds"}),
    ("GetLlmRunReplay", runs_pb.GetLlmRunReplayRequest(run_id=SUPPORT, window_seconds=-1), {"window_seconds"}),
    ("GetLlmRunReplay", runs_pb.GetLlmRunReplayRequest(run_id=SUPPORT, at_step=-1), {"at_step"}),
])
async def test_runs_bad_input(runs, rpc, request_message, fields):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await getattr(runs, rpc)(request_message, metadata=auth())
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and set(violations(err.value)) == fields


@pytest.mark.parametrize("fields,expected", [
    ({}, 9), (dict(severity=vocab_pb2.SYSTEM_SEVERITY_CRITICAL), 1), (dict(component="worker"), 3),
    (dict(event_type=vocab_pb2.SYSTEM_EVENT_TYPE_STARTUP), 2),
    (dict(created_after=ts(BASE - timedelta(hours=1))), 3),
])
async def test_system_records_include_system_wide_ones(system, fields, expected):
    reply = await system.ListSystemRecords(sys_pb.ListSystemRecordsRequest(**fields), metadata=auth())
    assert len(reply.records) == reply.total_size == expected
    keys = [(r.created_at.ToDatetime(), r.id) for r in reply.records]
    assert keys == sorted(keys, reverse=True)


async def test_system_record_pages_and_fields(system):
    everything = await system.ListSystemRecords(sys_pb.ListSystemRecordsRequest(), metadata=auth())
    seen, page_token = [], ""
    while True:
        page = await system.ListSystemRecords(sys_pb.ListSystemRecordsRequest(page_size=4, page_token=page_token),
                                              metadata=auth())
        seen += [r.id for r in page.records]
        if not page.has_more:
            break
        page_token = page.next_page_token
    assert seen == [r.id for r in everything.records]
    deploy = next(r for r in everything.records if r.event_type == vocab_pb2.SYSTEM_EVENT_TYPE_DEPLOY)
    assert (deploy.system_wide, deploy.component, deploy.caused_by, deploy.actor_id, deploy.environment_id) == \
        (True, "platform", vocab_pb2.CAUSED_BY_HUMAN, "user-sre", "prod-eu")
    # A system-wide record belongs to no tenant: its metadata does not claim the caller's.
    assert (deploy.metadata.human_actor_id, deploy.metadata.actor_type, deploy.metadata.tenant_id) == \
        ("user-sre", evidence_pb2.ACTOR_TYPE_HUMAN, "")
    error = next(r for r in everything.records if r.event_type == vocab_pb2.SYSTEM_EVENT_TYPE_ERROR
                 and not r.system_wide)
    assert dict(error.details) == {"provider": "openai", "attempt": 2}


async def test_snapshot_is_the_preceding_baseline_never_a_placeholder(system):
    reply = await system.GetSystemSnapshot(sys_pb.GetSystemSnapshotRequest(run_id=SUPPORT), metadata=auth())
    assert reply.basis == sys_pb.SNAPSHOT_BASIS_PRECEDING_BASELINE
    assert (reply.baseline.summary, reply.baseline.system_wide) == ("api started (v2.5.0)", True)
    assert at(reply.baseline.created_at) == BASE - timedelta(hours=5, minutes=59)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await system.GetSystemSnapshot(sys_pb.GetSystemSnapshotRequest(run_id=f"{DEMO}.no-such-run"),
                                       metadata=auth())
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_telemetry_is_a_declared_gap(system):
    reply = await system.GetSystemTelemetry(sys_pb.GetSystemTelemetryRequest(run_id=SUPPORT), metadata=auth())
    assert reply.status == sys_pb.TELEMETRY_STATUS_NOT_COLLECTED and "never collected" in reply.reason
    assert list(reply.available_data) == ["events", "snapshot", "replay", "attribution"]
    assert reply.run_event_count == 1


async def test_run_events_and_system_replay(system):
    events = await system.ListSystemRunEvents(sys_pb.ListSystemRunEventsRequest(run_id=SUPPORT), metadata=auth())
    assert [r.summary for r in events.records] == ["run terminated by enforcement"] and events.total_size == 1
    replay = await system.GetSystemReplay(sys_pb.GetSystemReplayRequest(run_id=SUPPORT), metadata=auth())
    assert [e.system_record.summary for e in replay.replay.events] == ["run terminated by enforcement"]


async def test_attribution_counts_causes_over_a_window(system):
    reply = await system.GetSystemAttribution(sys_pb.GetSystemAttributionRequest(
        created_after=ts(BASE - timedelta(hours=7)), created_before=ts(BASE)), metadata=auth())
    rows = {(r.caused_by, r.component, r.event_type): (r.count, list(r.actor_ids)) for r in reply.rows}
    assert len(rows) == 8 and sum(c for c, _ in rows.values()) == reply.total_size == 8
    assert rows[(vocab_pb2.CAUSED_BY_HUMAN, "platform", vocab_pb2.SYSTEM_EVENT_TYPE_DEPLOY)] == (1, ["user-sre"])
    assert rows[(vocab_pb2.CAUSED_BY_AUTOMATION, "policy-engine", vocab_pb2.SYSTEM_EVENT_TYPE_CONFIG_CHANGE)] == \
        (1, [])
    assert len(reply.records) == 8


@pytest.mark.parametrize("rpc,request_message,fields", [
    ("ListSystemRecords", sys_pb.ListSystemRecordsRequest(severity=99, page_size=-2), {"severity", "page_size"}),
    ("GetSystemSnapshot", sys_pb.GetSystemSnapshotRequest(run_id=""), {"run_id"}),
    ("GetSystemTelemetry", sys_pb.GetSystemTelemetryRequest(run_id="x y"), {"run_id"}),
    ("ListSystemRunEvents", sys_pb.ListSystemRunEventsRequest(run_id=SUPPORT, page_token="zz"), {"page_token"}),
    ("GetSystemReplay", sys_pb.GetSystemReplayRequest(run_id=SUPPORT, window_seconds=1000), {"window_seconds"}),
    ("GetSystemAttribution", sys_pb.GetSystemAttributionRequest(created_after=ts(BASE),
                                                                created_before=ts(BASE - timedelta(1))),
     {"created_before"}),
])
async def test_system_bad_input(system, rpc, request_message, fields):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await getattr(system, rpc)(request_message, metadata=auth())
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and set(violations(err.value)) == fields


@pytest.mark.parametrize("rpc,request_cls", [
    ("GetSystemSnapshot", sys_pb.GetSystemSnapshotRequest), ("GetSystemTelemetry", sys_pb.GetSystemTelemetryRequest),
    ("ListSystemRunEvents", sys_pb.ListSystemRunEventsRequest), ("GetSystemReplay", sys_pb.GetSystemReplayRequest)])
async def test_another_tenants_run_is_not_found_in_system_logs(system, rpc, request_cls):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await getattr(system, rpc)(request_cls(run_id=SUPPORT), metadata=auth(ACME))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_every_list_shows_only_the_callers_tenant(suite, demo):
    """Two tenants loaded the same stories: each list answers with its caller's rows alone."""
    from aos.logs.v1 import audit_ledger_service_pb2 as audit_pb, audit_ledger_service_pb2_grpc as audit_grpc

    async with grpc.aio.insecure_channel(suite["logs"]) as channel:
        audit = audit_grpc.AuditLedgerServiceStub(channel)
        runs_stub = runs_grpc.LlmRunsServiceStub(channel)
        system_stub = sys_grpc.SystemLogsServiceStub(channel)
        answers = {
            "audit": (await audit.ListAuditEntries(audit_pb.ListAuditEntriesRequest(), metadata=auth(ACME))).entries,
            "identity": (await audit.ListIdentityEvents(audit_pb.ListIdentityEventsRequest(),
                                                        metadata=auth(ACME))).entries,
            "authorization": (await audit.ListAuthorizationDecisions(audit_pb.ListAuthorizationDecisionsRequest(),
                                                                     metadata=auth(ACME))).entries,
            "runs": (await runs_stub.ListLlmRuns(runs_pb.ListLlmRunsRequest(), metadata=auth(ACME))).runs,
            "system": (await system_stub.ListSystemRecords(sys_pb.ListSystemRecordsRequest(),
                                                           metadata=auth(ACME))).records,
            "attribution": (await system_stub.GetSystemAttribution(sys_pb.GetSystemAttributionRequest(
                created_after=ts(BASE - timedelta(days=30)), created_before=ts(BASE)), metadata=auth(ACME))).records,
        }
    for name, items in answers.items():
        assert items, name
        # System-wide records (shown to every tenant) name no tenant; every other item is ACME's.
        assert {i.metadata.tenant_id for i in items if not getattr(i, "system_wide", False)} == {ACME}, name
        assert {i.metadata.tenant_id for i in items if getattr(i, "system_wide", False)} <= {""}, name
        assert not [i for i in items if DEMO in str(i)], f"{name} leaked {DEMO}'s rows"
