"""IngestService.RecordRun end to end: a run with its trace and steps written through a real
channel, read back through LlmRunsService and the Overview costs, its hashes SPEC §5's;
a retry is the same run, other content ALREADY_EXISTS, bad input named field by field."""
from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import grpc
import httpx
import pytest
from google.protobuf import json_format

from aos.ingest.v1 import ingest_service_pb2 as pb, ingest_service_pb2_grpc as pb_grpc
from aos.logs.v1 import llm_runs_service_pb2 as runs_pb, llm_runs_service_pb2_grpc as runs_grpc
from aos.overview.v1 import overview_service_pb2 as overview_pb, overview_service_pb2_grpc as overview_grpc
from aos_recording import hashing
from gateway import backend_addresses, create_app
from tests.e2e.support import BASE, a_run, token, ts, violations
from tests.logins import load_demo_scenarios

pytestmark = pytest.mark.db

TENANT, OTHER = "tenant-ingest-runs-a", "tenant-ingest-runs-b"


@pytest.fixture(scope="module")
def tenants(database_url):
    return tuple(load_demo_scenarios(database_url, tenant, base=BASE, keep=lambda s: s.id != "SDSR-PLATFORM-001")
                 for tenant in (TENANT, OTHER))


@pytest.fixture()
async def ingest(suite, tenants):
    async with grpc.aio.insecure_channel(suite["ingest"]) as channel:
        yield pb_grpc.IngestServiceStub(channel)


@pytest.fixture()
async def runs(suite):
    async with grpc.aio.insecure_channel(suite["logs"]) as channel:
        yield runs_grpc.LlmRunsServiceStub(channel)


@pytest.fixture()
async def overview(suite):
    async with grpc.aio.insecure_channel(suite["overview"]) as channel:
        yield overview_grpc.OverviewServiceStub(channel)


def writer(tenant=TENANT, actor_type="AGENT", scopes=("evidence.write",)):
    return (("authorization", f"Bearer {token(tenant, scopes=scopes, actor_type=actor_type)}"),)


def reader(tenant=TENANT):
    return (("authorization", f"Bearer {token(tenant, scopes=('logs.read', 'overview.read'))}"),)


async def test_a_run_is_readable_with_its_trace_and_counts_in_the_costs(ingest, runs, overview):
    before = (await overview.GetCosts(overview_pb.GetCostsRequest(), metadata=reader())).actuals.llm_run_cost
    run_id = f"run-{uuid.uuid4().hex[:12]}"
    # Built once: a_run's times are from the clock (to the second), so a second build may differ.
    message = a_run(run_id)
    reply = await ingest.RecordRun(pb.RecordRunRequest(run=message), metadata=writer())
    assert reply.status == pb.ITEM_STATUS_CREATED
    assert reply.trace_id == run_id  # no trace id sent: the run's
    # The server's hashes are SPEC §5's (recomputed here from the steps as sent).
    expected = [hashing.step_content_hash({"step_index": i, "step_type": t, "input_data": i_, "output_data": o,
                                           "timestamp": s.timestamp.ToDatetime(tzinfo=timezone.utc)})
                for i, (s, t, i_, o) in enumerate(zip(
                    message.steps, ("input", "llm_call", "output"),
                    ({"prompt": "refund order 7?"}, {"model": "gpt-4o"}, None),
                    (None, {"text": "yes", "n": 2}, "refunded"), strict=True))]
    assert list(reply.step_content_hashes) == [h.hex() for h in expected]
    assert reply.trace_content_hash == hashing.trace_content_hash(expected).hex()

    listed = await runs.ListLlmRuns(runs_pb.ListLlmRunsRequest(run_id=run_id), metadata=reader())
    run, = listed.runs
    assert (run.provider, run.model, run.agent_id, run.input_tokens, run.output_tokens) == \
        ("openai", "gpt-4o", "agent-refunds", 1200, 300)
    assert (run.cost.amount_cents, run.cost.currency_code) == (37, "USD")
    trace = await runs.GetLlmRunTrace(runs_pb.GetLlmRunTraceRequest(run_id=run_id), metadata=reader())
    assert [s.content_hash for s in trace.steps] == list(reply.step_content_hashes)
    assert trace.metadata.checksum == reply.trace_content_hash
    assert (trace.total_steps, trace.total_tokens) == (3, 1500)
    after = (await overview.GetCosts(overview_pb.GetCostsRequest(), metadata=reader())).actuals.llm_run_cost
    assert after.amount_cents - before.amount_cents == 37


async def test_a_retry_is_already_present_and_other_content_already_exists(ingest, runs):
    run_id = f"run-{uuid.uuid4().hex[:12]}"
    started = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(minutes=5)
    first = await ingest.RecordRun(pb.RecordRunRequest(run=a_run(run_id, started)), metadata=writer())
    again = await ingest.RecordRun(pb.RecordRunRequest(run=a_run(run_id, started)), metadata=writer())
    assert (first.status, again.status) == (pb.ITEM_STATUS_CREATED, pb.ITEM_STATUS_ALREADY_PRESENT)
    assert (again.run_content_hash, again.trace_content_hash) == (first.run_content_hash, first.trace_content_hash)
    changed_run = a_run(run_id, started, output_tokens=301)
    changed_steps = a_run(run_id, started)
    changed_steps.steps[2].output_data.string_value = "declined"
    for changed in (changed_run, changed_steps):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await ingest.RecordRun(pb.RecordRunRequest(run=changed), metadata=writer())
        assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
        assert "already recorded" in (err.value.details() or "")
    trace = await runs.GetLlmRunTrace(runs_pb.GetLlmRunTraceRequest(run_id=run_id), metadata=reader())
    assert trace.steps[2].output_data.string_value == "refunded"  # nothing was overwritten
    # A new run whose trace id is another run's: refused whole (its run record rolled back).
    other = f"run-{uuid.uuid4().hex[:12]}"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await ingest.RecordRun(pb.RecordRunRequest(run=a_run(other, started, trace_id=run_id)), metadata=writer())
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await runs.GetLlmRunEnvelope(runs_pb.GetLlmRunEnvelopeRequest(run_id=other), metadata=reader())
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_the_tenant_is_the_tokens(ingest, runs):
    run_id = f"run-{uuid.uuid4().hex[:12]}"
    await ingest.RecordRun(pb.RecordRunRequest(run=a_run(run_id)), metadata=writer(OTHER))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await runs.GetLlmRunTrace(runs_pb.GetLlmRunTraceRequest(run_id=run_id), metadata=reader(TENANT))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    # The same run id in the other tenant is its own run.
    reply = await ingest.RecordRun(pb.RecordRunRequest(run=a_run(run_id)), metadata=writer(TENANT))
    assert reply.status == pb.ITEM_STATUS_CREATED
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await ingest.RecordRun(pb.RecordRunRequest(run=a_run("x")), metadata=writer(actor_type="HUMAN"))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_bad_input_names_each_field(ingest):
    started = datetime.now(timezone.utc) - timedelta(minutes=1)
    bad = a_run("bad id!", started, provider="", status=0, input_tokens=-1, currency="EUR",
                completed_at=ts(started - timedelta(seconds=1)), trace_content_hash="00" * 32)
    bad.steps[1].step_type = 0
    bad.steps[2].ClearField("timestamp")
    bad.steps[0].content_hash = "ab" * 32
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await ingest.RecordRun(pb.RecordRunRequest(run=bad), metadata=writer())
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    found = violations(err.value)
    for field in ("run.run_id", "run.provider", "run.status", "run.input_tokens", "run.currency",
                  "run.completed_at", "run.steps[1].step_type", "run.steps[2].timestamp"):
        assert field in found, (field, found)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await ingest.RecordRun(pb.RecordRunRequest(), metadata=writer())
    assert violations(err.value) == {"run": "is required"}
    # A producer's hash that is not the server's is named (the rest being valid).
    claimed = a_run(f"run-{uuid.uuid4().hex[:12]}", trace_content_hash="00" * 32)
    claimed.steps[0].content_hash = "ab" * 32
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await ingest.RecordRun(pb.RecordRunRequest(run=claimed), metadata=writer())
    assert set(violations(err.value)) == {"run.steps[0].content_hash", "run.trace_content_hash"}


async def test_rest_binding_through_the_gateway(suite, tenants, runs):
    app = create_app(backend_addresses(suite))
    run_id = f"run-{uuid.uuid4().hex[:12]}"
    body = json_format.MessageToDict(pb.RecordRunRequest(run=a_run(run_id)))
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://gateway") as http:
        headers = {"Authorization": writer()[0][1]}
        reply = await http.post("/api/v1/ingest/runs", json=body, headers=headers)
        assert reply.status_code == 200, reply.text
        assert reply.json()["status"] == "ITEM_STATUS_CREATED"
        changed = a_run(run_id, cost_cents=1)
        reply = await http.post("/api/v1/ingest/runs", json=json_format.MessageToDict(
            pb.RecordRunRequest(run=changed)), headers=headers)
        assert reply.status_code == 409, reply.text
        assert reply.json()["details"][0]["reason"] == "EVIDENCE_CONFLICT"
    listed = await runs.ListLlmRuns(runs_pb.ListLlmRunsRequest(run_id=run_id), metadata=reader())
    assert len(listed.runs) == 1
