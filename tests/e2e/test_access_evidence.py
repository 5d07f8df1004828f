"""Access evidence end to end (issue #21): viewing a run leaves an access entry in its tenant's
ledger — through gRPC and through the REST gateway — with the actor from the token and the
client's address; another tenant's id leaves AccessDenied in the CALLER's tenant and nothing
in the other; the entries verify in the chain and in the transparency log.

A suite of its own (the shared one runs with recording off: its tests count the demo
tenants' ledgers), on a database of its own, real servers on port 0, real channels.
"""
from __future__ import annotations

import asyncio
import uuid

import grpc
import httpx
import pytest

from aos.evidence.v1 import evidence_pb2, integrity_pb2
from aos.export.v1 import export_service_pb2 as export_pb, export_service_pb2_grpc as export_grpc
from aos.logs.v1 import (
    audit_ledger_service_pb2 as ledger_pb,
    audit_ledger_service_pb2_grpc as ledger_grpc,
    llm_runs_service_pb2 as runs_pb,
    llm_runs_service_pb2_grpc as runs_grpc,
)
from aos_recording import tlog
from aos_runtime.service_main import build_server
from gateway import create_app
from gateway.backends import SERVICE_BACKENDS
from tests.e2e.support import BASE, service_modules, settings, token
from tests.logins import load_demo_scenarios, login_url

pytestmark = pytest.mark.db

SERVICES = ("logs", "export")
TRACE = "/aos.logs.v1.LlmRunsService/GetLlmRunTrace"


@pytest.fixture(scope="module")
async def recorded(databases, tmp_path_factory):
    """Logs and Export with access recording on (short flushes), the gateway in front trusting
    loopback as its proxy and the services trusting it: {"servers", "addresses", "url", "tenants"}."""
    url = databases.create()
    owner, other = f"t-acc-{uuid.uuid4().hex[:8]}", f"t-oth-{uuid.uuid4().hex[:8]}"
    for tenant in (owner, other):
        load_demo_scenarios(url, tenant, base=BASE)
    conf = settings(tmp_path_factory.mktemp("access"), access_recording=True, access_flush_ms=50,
                    trusted_proxies=("127.0.0.1/32",))
    modules = service_modules()
    servers = {name: build_server(name, modules[name].servicers, conf, login_url(url, name), port=0)
               for name in SERVICES}
    addresses = {name: f"127.0.0.1:{await server.start()}" for name, server in servers.items()}
    yield {"servers": servers, "addresses": addresses, "url": url, "tenants": (owner, other)}
    for server in servers.values():
        await server.stop(grace=1)


def meta(tenant: str, request_id: str | None = None, **kw) -> tuple[tuple[str, str], ...]:
    pairs = [("authorization", f"Bearer {token(tenant, **kw)}")]
    if request_id:
        pairs.append(("x-request-id", request_id))
    return tuple(pairs)


async def flushed(recorded) -> None:
    for server in recorded["servers"].values():
        await server.access.flush()


async def entries(channel, tenant: str, **filters) -> list:
    ledger = ledger_grpc.AuditLedgerServiceStub(channel)
    reply = await ledger.ListAuditEntries(ledger_pb.ListAuditEntriesRequest(page_size=1000, **filters),
                                          metadata=meta(tenant))
    return list(reply.entries)


async def test_viewing_a_run_over_grpc_leaves_access_granted_with_the_tokens_actor(recorded):
    owner, _ = recorded["tenants"]
    run, rid = f"{owner}.run-support-103", f"req-{uuid.uuid4().hex}"
    async with grpc.aio.insecure_channel(recorded["addresses"]["logs"]) as channel:
        await runs_grpc.LlmRunsServiceStub(channel).GetLlmRunTrace(runs_pb.GetLlmRunTraceRequest(run_id=run),
                                                                   metadata=meta(owner, rid))
        await flushed(recorded)
        found = await entries(channel, owner, correlation_id=rid)
    assert len(found) == 1
    entry = found[0]
    assert (entry.event_type, entry.entity_type, entry.entity_id) == \
        (evidence_pb2.AUDIT_EVENT_TYPE_ACCESS_GRANTED, evidence_pb2.AUDIT_ENTITY_TYPE_LLM_RUN, run)
    assert (entry.actor_type, entry.actor_id, entry.success, entry.rpc) == \
        (evidence_pb2.ACTOR_TYPE_HUMAN, "user-e2e", True, TRACE)
    assert entry.ip_address == "127.0.0.1" and entry.user_agent.startswith("grpc-python")
    assert not entry.HasField("failure_reason") and entry.metadata.tenant_id == owner


async def test_another_tenants_run_leaves_access_denied_in_the_callers_tenant_only(recorded):
    owner, other = recorded["tenants"]
    run, rid = f"{owner}.run-support-103", f"req-{uuid.uuid4().hex}"
    async with grpc.aio.insecure_channel(recorded["addresses"]["logs"]) as channel:
        before = len(await entries(channel, owner))
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await runs_grpc.LlmRunsServiceStub(channel).GetLlmRunEnvelope(
                runs_pb.GetLlmRunEnvelopeRequest(run_id=run), metadata=meta(other, rid))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        await flushed(recorded)
        denied = await entries(channel, other, correlation_id=rid)
        assert len(await entries(channel, owner)) == before  # nothing in the owner's ledger
        assert await entries(channel, owner, correlation_id=rid) == []
    assert [(e.event_type, e.entity_id, e.success, e.failure_reason, e.actor_id) for e in denied] == \
        [(evidence_pb2.AUDIT_EVENT_TYPE_ACCESS_DENIED, run, False, "LLM_RUN_NOT_FOUND", "user-e2e")]


async def test_a_missing_scope_is_recorded_as_denied_and_lists_are_not_recorded(recorded):
    owner, _ = recorded["tenants"]
    rid, listed = f"req-{uuid.uuid4().hex}", f"req-{uuid.uuid4().hex}"
    async with grpc.aio.insecure_channel(recorded["addresses"]["logs"]) as channel:
        runs = runs_grpc.LlmRunsServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await runs.GetLlmRunTrace(runs_pb.GetLlmRunTraceRequest(run_id=f"{owner}.run-support-103"),
                                      metadata=meta(owner, rid, scopes=("overview.read",)))
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        await runs.ListLlmRuns(runs_pb.ListLlmRunsRequest(), metadata=meta(owner, listed))
        await flushed(recorded)
        denied = await entries(channel, owner, correlation_id=rid)
        assert await entries(channel, owner, correlation_id=listed) == []  # AOS_ACCESS_RECORD_LISTS is off
    assert [(e.event_type, e.failure_reason) for e in denied] == \
        [(evidence_pb2.AUDIT_EVENT_TYPE_ACCESS_DENIED, "SCOPE_MISSING")]


async def test_a_bad_request_decides_nothing_and_is_not_recorded(recorded):
    owner, _ = recorded["tenants"]
    rid = f"req-{uuid.uuid4().hex}"
    async with grpc.aio.insecure_channel(recorded["addresses"]["logs"]) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await runs_grpc.LlmRunsServiceStub(channel).GetLlmRunTrace(runs_pb.GetLlmRunTraceRequest(run_id=""),
                                                                       metadata=meta(owner, rid))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        await flushed(recorded)
        assert await entries(channel, owner, correlation_id=rid) == []


async def test_viewing_a_run_through_rest_records_the_client_behind_the_gateway(recorded):
    owner, _ = recorded["tenants"]
    run, rid = f"{owner}.run-support-103", f"req-{uuid.uuid4().hex}"
    backends = {service: address for service, address in SERVICE_BACKENDS.items()
                if address in recorded["addresses"]}
    app = create_app({service: recorded["addresses"][server] for service, server in backends.items()},
                     trusted_proxies=("127.0.0.1/32",))
    async with app.router.lifespan_context(app):
        # ASGITransport's client is 127.0.0.1: a trusted proxy here, so its X-Forwarded-For names the client.
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway",
                                     headers={"Authorization": f"Bearer {token(owner)}"}) as http:
            reply = await http.get(f"/api/v1/logs/llm-runs/{run}/trace",
                                   headers={"X-Request-Id": rid, "X-Forwarded-For": "198.51.100.9, 203.0.113.7",
                                            "User-Agent": "auditor-console/2.1"})
            assert reply.status_code == 200, reply.text
            await flushed(recorded)
            listed = await http.get("/api/v1/logs/audit", params={"correlation_id": rid, "success": "true",
                                                                  "entity_id": run})
            refused = await http.get("/api/v1/logs/audit", params={"correlation_id": rid, "success": "false"})
    assert listed.status_code == 200, listed.text
    [entry] = listed.json()["entries"]
    assert (entry["event_type"], entry["entity_id"], entry["actor_id"], entry["ip_address"],
            entry["user_agent"], entry["rpc"], entry["success"]) == \
        ("AUDIT_EVENT_TYPE_ACCESS_GRANTED", run, "user-e2e", "203.0.113.7", "auditor-console/2.1", TRACE, True)
    assert refused.json()["entries"] == []


async def test_a_direct_grpc_caller_cannot_name_its_address_unless_it_is_a_trusted_proxy(recorded, tmp_path):
    """The services believe x-aos-client-ip only from AOS_TRUSTED_PROXIES (here: none)."""
    owner, _ = recorded["tenants"]
    conf = settings(tmp_path, access_recording=True, access_flush_ms=50)
    server = build_server("logs", service_modules()["logs"].servicers, conf,
                          login_url(recorded["url"], "logs"), port=0)
    rid = f"req-{uuid.uuid4().hex}"
    port = await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await runs_grpc.LlmRunsServiceStub(channel).GetLlmRunTrace(
                runs_pb.GetLlmRunTraceRequest(run_id=f"{owner}.run-support-103"),
                metadata=(*meta(owner, rid), ("x-aos-client-ip", "192.0.2.1")))
            await server.access.flush()
            [entry] = await entries(channel, owner, correlation_id=rid)
    finally:
        await server.stop(grace=1)
    assert entry.ip_address == "127.0.0.1"


async def test_export_reads_are_recorded_too(recorded):
    owner, _ = recorded["tenants"]
    rid = f"req-{uuid.uuid4().hex}"
    async with grpc.aio.insecure_channel(recorded["addresses"]["export"]) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await export_grpc.ExportServiceStub(channel).GetExport(
                export_pb.GetExportRequest(export_id="exp_0123456789abcdef0123456789abcdef"), metadata=meta(owner, rid))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    await flushed(recorded)
    async with grpc.aio.insecure_channel(recorded["addresses"]["logs"]) as channel:
        found = await entries(channel, owner, correlation_id=rid)
    assert [(e.event_type, e.entity_type, e.rpc) for e in found] == \
        [(evidence_pb2.AUDIT_EVENT_TYPE_ACCESS_DENIED, evidence_pb2.AUDIT_ENTITY_TYPE_LOG_EXPORT,
          "/aos.export.v1.ExportService/GetExport")]


async def test_access_entries_verify_in_the_chain_and_the_transparency_log(recorded):
    owner, _ = recorded["tenants"]
    rid = f"req-{uuid.uuid4().hex}"
    async with grpc.aio.insecure_channel(recorded["addresses"]["logs"]) as channel:
        runs = runs_grpc.LlmRunsServiceStub(channel)
        await asyncio.gather(*(runs.GetLlmRunTrace(runs_pb.GetLlmRunTraceRequest(run_id=f"{owner}.run-support-103"),
                                                   metadata=meta(owner, rid)) for _ in range(20)))
        await flushed(recorded)
        ledger = ledger_grpc.AuditLedgerServiceStub(channel)
        access = await ledger.ListAccessEvents(ledger_pb.ListAccessEventsRequest(page_size=1000),
                                               metadata=meta(owner))
        report = await ledger.GetIntegrityReport(ledger_pb.GetIntegrityReportRequest(), metadata=meta(owner))
        mine = [e for e in access.entries if e.correlation_id == rid]
        proof = await ledger.GetInclusionProof(ledger_pb.GetInclusionProofRequest(entry_id=mine[0].id),
                                               metadata=meta(owner))
    assert len(mine) == 20 and all(e.event_type == evidence_pb2.AUDIT_EVENT_TYPE_ACCESS_GRANTED for e in mine)
    # O3 is the reads of evidence and the exports: the demo's authorization decision about a
    # LIMIT (AccessGranted, AccessDenied) is O2's only.
    assert {e.entity_type for e in access.entries} <= {
        evidence_pb2.AUDIT_ENTITY_TYPE_LLM_RUN, evidence_pb2.AUDIT_ENTITY_TYPE_SYSTEM_RECORD,
        evidence_pb2.AUDIT_ENTITY_TYPE_AUDIT_ENTRY, evidence_pb2.AUDIT_ENTITY_TYPE_LOG_EXPORT}
    assert report.status == integrity_pb2.INTEGRITY_STATUS_VERIFIED and not report.anomalies
    assert report.entries_checked == report.head.seq
    assert proof.leaf_data == bytes.fromhex(mine[0].content_hash)
    tlog.check_record(list(proof.audit_path), proof.tree_size, proof.root_hash, proof.leaf_index, proof.leaf_hash)


async def test_a_drain_writes_what_is_buffered(recorded, tmp_path):
    """A SIGTERM's drain (ServiceServer.stop): entries still in the buffer — a flush interval of a
    minute here — are written before the pool closes; a full buffer refuses further reads."""
    owner, _ = recorded["tenants"]
    conf = settings(tmp_path, access_recording=True, access_flush_ms=60_000)
    server = build_server("logs", service_modules()["logs"].servicers, conf,
                          login_url(recorded["url"], "logs"), port=0)
    rid = f"req-{uuid.uuid4().hex}"
    server.access.max_buffered = 5
    port = await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        runs = runs_grpc.LlmRunsServiceStub(channel)
        request = runs_pb.GetLlmRunTraceRequest(run_id=f"{owner}.run-support-103")
        for _ in range(5):
            await runs.GetLlmRunTrace(request, metadata=meta(owner, rid))
        # Full: the next read is refused rather than served unrecorded (fail closed).
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await runs.GetLlmRunTrace(request, metadata=meta(owner, rid))
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert server.access.buffered == 5
    await server.stop(grace=1)
    async with grpc.aio.insecure_channel(recorded["addresses"]["logs"]) as channel:
        assert len(await entries(channel, owner, correlation_id=rid)) == 5
