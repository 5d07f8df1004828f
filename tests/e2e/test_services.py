"""Every service answers health, reflection and every RPC of its contract, through a real channel."""
from __future__ import annotations

import asyncio
import dataclasses
import importlib
from pathlib import Path

import grpc
import pytest
from google.protobuf import message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from aos_runtime.auth import SCOPE_ACTOR_TYPES, SCOPES
from aos_runtime.embedded import EmbeddedPostgres
from aos_runtime.server import ServiceContext
from aos_runtime.service_main import build_server
from tests.e2e.support import error_info, service_modules, settings, token
from tests.logins import login_url, migrate_and_provision

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.db


def rpcs():
    """(service name, method descriptor) for every RPC the contract declares, read from protos/.

    Read from the .proto files rather than from the servicers the services register,
    so a service that stops registering one is still called (and fails) below. A
    contract package ``aos.<name>.v1`` is served by the service ``<name>``.
    """
    for proto in sorted((ROOT / "protos").rglob("*.proto")):
        module = importlib.import_module(".".join(proto.relative_to(ROOT / "protos").with_suffix("").parts) + "_pb2")
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                yield service.full_name.split(".")[1], method


RPCS = list(rpcs())


def served(tmp_path) -> dict[str, set[str]]:
    """{service: the full names of the gRPC services it registers}; built without a database
    (no call reaches a handler), with settings, as the export service needs its key ring."""
    context = ServiceContext(db=None, page_tokens=None, settings=settings(tmp_path))
    return {name: {s.descriptor.full_name for s in module.servicers(context)}
            for name, module in service_modules().items()}


def rpc_id(param):
    return param.full_name if hasattr(param, "full_name") else str(param)


async def call(address: str, method, metadata=()):
    request_cls = message_factory.GetMessageClass(method.input_type)
    response_cls = message_factory.GetMessageClass(method.output_type)
    path = f"/{method.containing_service.full_name}/{method.name}"
    async with grpc.aio.insecure_channel(address) as channel:
        if method.server_streaming:
            stub = channel.unary_stream(path, request_serializer=request_cls.SerializeToString,
                                        response_deserializer=response_cls.FromString)
            return [m async for m in stub(request_cls(), metadata=metadata, timeout=10)]
        stub = channel.unary_unary(path, request_serializer=request_cls.SerializeToString,
                                   response_deserializer=response_cls.FromString)
        return await stub(request_cls(), metadata=metadata, timeout=10)


async def test_health_reports_serving_per_service(suite, tmp_path):
    for name, full_names in served(tmp_path).items():
        async with grpc.aio.insecure_channel(suite[name]) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            for service in ["", *sorted(full_names)]:
                reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
                assert reply.status == health_pb2.HealthCheckResponse.SERVING, (name, service)


async def test_reflection_lists_each_services_contract(suite, tmp_path):
    for name, expected in served(tmp_path).items():
        async with grpc.aio.insecure_channel(suite[name]) as channel:
            stub = reflection_pb2_grpc.ServerReflectionStub(channel)
            replies = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
            listed = set()
            async for reply in replies:
                listed |= {s.name for s in reply.list_services_response.service}
            assert expected | {"grpc.health.v1.Health"} <= listed


@pytest.mark.parametrize("service,method", RPCS, ids=rpc_id)
async def test_every_rpc_refuses_a_call_without_credentials(suite, service, method):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call(suite[service], method)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    info = error_info(err.value)
    assert (info.reason, info.domain) == ("CREDENTIALS_MISSING", "aos.evidence")


@pytest.mark.parametrize("service,method", RPCS, ids=rpc_id)
async def test_every_rpc_refuses_a_bad_token(suite, service, method):
    forged = token()[:-4] + "AAAA"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call(suite[service], method, metadata=(("authorization", f"Bearer {forged}"),))
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize("service,method", RPCS, ids=rpc_id)
async def test_every_rpc_needs_its_declared_scope(suite, service, method):
    from aos.evidence.v1 import options_pb2

    needed = method.GetOptions().Extensions[options_pb2.required_scope]
    others = [s for s in SCOPES if s != needed]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call(suite[service], method, metadata=(("authorization", f"Bearer {token(scopes=others)}"),))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error_info(err.value).metadata["required_scope"] == needed


# Services a server registers from another project's protos (SPEC §2: Ingest also serves OTLP's
# TraceService, vendored in third_party/; tests/gateway/test_otlp.py and test_ingest_crash.py call it).
FOREIGN = {"ingest": {"opentelemetry.proto.collector.trace.v1.TraceService"}}


def test_the_contract_is_read_whole(tmp_path):
    """The list above is the contract's (a scan that found nothing would make every test below vacuous)."""
    registered = served(tmp_path)
    for name, foreign in FOREIGN.items():
        assert foreign <= registered[name]
    assert {m.containing_service.full_name for _, m in RPCS} == \
        set().union(*(services - FOREIGN.get(name, set()) for name, services in registered.items()))
    assert {name for name, _ in RPCS} == set(service_modules())


@pytest.mark.parametrize("service,method", RPCS, ids=rpc_id)
async def test_every_rpc_answers_an_authenticated_call(suite, service, method):
    """Every RPC of the contract is built: answered with a canonical status, never UNIMPLEMENTED, UNKNOWN or INTERNAL.

    A handler missing from a servicer falls through to the generated base class,
    which answers UNIMPLEMENTED; a servicer not registered at all answers it too.
    """
    from aos.evidence.v1 import options_pb2

    # A producer's scope is for SYSTEM or AGENT callers only: call as one, so the handler is reached.
    writer = method.GetOptions().Extensions[options_pb2.required_scope] in SCOPE_ACTOR_TYPES
    credentials = token(actor_type="SYSTEM") if writer else token()
    try:
        await call(suite[service], method, metadata=(("authorization", f"Bearer {credentials}"),))
    except grpc.aio.AioRpcError as err:
        assert err.code() not in (grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.UNKNOWN,
                                  grpc.StatusCode.INTERNAL), err


async def test_request_id_is_echoed(suite):
    method = RPCS[0][1]
    path = f"/{method.containing_service.full_name}/{method.name}"
    request_cls = message_factory.GetMessageClass(method.input_type)
    async with grpc.aio.insecure_channel(suite[RPCS[0][0]]) as channel:
        stub = channel.unary_unary(path, request_serializer=request_cls.SerializeToString,
                                   response_deserializer=lambda b: b)
        call_ = stub(request_cls(), metadata=(("x-request-id", "req-123"),), timeout=5)
        with pytest.raises(grpc.aio.AioRpcError):
            await call_
        assert ("x-request-id", "req-123") in tuple(await call_.trailing_metadata())


async def test_health_follows_the_database(tmp_path):
    """NOT_SERVING while the database is down; SERVING again by itself when it returns."""
    pg = EmbeddedPostgres(tmp_path / "pg", durable=False)
    pg.start()
    migrate_and_provision(pg.url)
    conf = dataclasses.replace(settings(tmp_path), health_probe_interval_s=0.2, connect_timeout_s=1)
    server = build_server("logs", service_modules()["logs"].servicers, conf, login_url(pg.url, "logs"), port=0)
    address = f"127.0.0.1:{await server.start()}"

    async def status():
        async with grpc.aio.insecure_channel(address) as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
            return reply.status

    async def wait_for(expected, seconds=15):
        for _ in range(int(seconds / 0.1)):
            if await status() == expected:
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"health never became {expected}")

    try:
        await wait_for(health_pb2.HealthCheckResponse.SERVING)
        pg.stop()
        await wait_for(health_pb2.HealthCheckResponse.NOT_SERVING)
        pg.start()
        await wait_for(health_pb2.HealthCheckResponse.SERVING)
    finally:
        await server.stop(grace=0)
        pg.stop()
