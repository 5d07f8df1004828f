"""What ``python -m gateway``'s HTTP server (gateway.serving.config) passes on about the client,
over a real socket, to a real gRPC backend that records the metadata it is sent."""
from __future__ import annotations

import contextlib

import grpc
import httpx
import pytest

from aos.logs.v1 import audit_ledger_service_pb2 as pb
from aos_runtime.headers import CLIENT_IP_HEADER
from gateway import create_app, serving
from tests.gateway.support import start_uvicorn

SERVICE = "aos.logs.v1.AuditLedgerService"


@contextlib.asynccontextmanager
async def gateway_over(trusted_proxies: tuple[str, ...], parser: str):
    """A gateway served as ``python -m gateway`` serves it, in front of a backend answering
    ListAuditEntries with an empty page; yields (its base URL, the metadata of each call)."""
    seen: list[dict[str, str]] = []

    async def list_entries(request, context):
        seen.append({k: v for k, v in context.invocation_metadata() if isinstance(v, str)})
        return pb.ListAuditEntriesResponse()

    backend = grpc.aio.server()
    backend.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, {
        "ListAuditEntries": grpc.unary_unary_rpc_method_handler(
            list_entries, request_deserializer=pb.ListAuditEntriesRequest.FromString,
            response_serializer=pb.ListAuditEntriesResponse.SerializeToString)})])
    port = backend.add_insecure_port("127.0.0.1:0")
    await backend.start()
    app = create_app({SERVICE: f"127.0.0.1:{port}"}, trusted_proxies=trusted_proxies)
    try:
        async with app.router.lifespan_context(app):
            server, task, host, gateway_port = await start_uvicorn(serving.config(
                app, host="127.0.0.1", port=0, header_timeout_s=10, max_connections=100, parser=parser,
                lifespan="off", log_config=None, access_log=False))
            try:
                yield f"http://{host}:{gateway_port}", seen
            finally:
                server.should_exit = True
                await task
    finally:
        await backend.stop(None)


@pytest.mark.parametrize("parser", serving.PARSERS)
async def test_a_client_on_the_gateways_host_cannot_name_its_address_by_x_forwarded_for(parser):
    """No trusted proxies: the peer (127.0.0.1) is the client, whatever X-Forwarded-For says.
    uvicorn's proxy headers middleware (on by default, trusting 127.0.0.1) made it 203.0.113.9."""
    async with gateway_over((), parser) as (url, seen), httpx.AsyncClient(base_url=url) as http:
        reply = await http.get("/api/v1/logs/audit", headers={"X-Forwarded-For": "203.0.113.9",
                                                               "X-Forwarded-Proto": "https"})
        assert reply.status_code == 200, reply.text
    assert [call[CLIENT_IP_HEADER] for call in seen] == ["127.0.0.1"]


@pytest.mark.parametrize("parser", serving.PARSERS)
async def test_behind_a_trusted_proxy_x_forwarded_for_names_the_client(parser):
    """AOS_TRUSTED_PROXIES covering the peer: the gateway's own reading (gateway.clients), from the right."""
    async with gateway_over(("127.0.0.1/32",), parser) as (url, seen), httpx.AsyncClient(base_url=url) as http:
        reply = await http.get("/api/v1/logs/audit", headers={"X-Forwarded-For": "198.51.100.9, 203.0.113.9"})
        assert reply.status_code == 200, reply.text
    assert [call[CLIENT_IP_HEADER] for call in seen] == ["203.0.113.9"]


@pytest.mark.parametrize("random", [bytes(16), b"\xff" * 16, bytes(range(16)), bytes(range(200, 216))])
def test_a_request_id_the_gateway_makes_is_uuid4s_hex(random, monkeypatch):
    """gateway.app.new_request_id: the id uuid.uuid4().hex makes of the same 16 random bytes."""
    import uuid

    from gateway import app

    monkeypatch.setattr(app.os, "urandom", lambda n: random[:n])
    assert app.new_request_id() == uuid.UUID(bytes=random, version=4).hex

