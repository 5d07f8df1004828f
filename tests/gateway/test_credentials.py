"""Credentials refused the same way over REST and gRPC (issue #17, part 3): two
Authorization headers (or two authorization metadata entries), and token headers of
shapes that used to escape as HTTP 500 with a traceback.

Real servers: the services on port 0, the gateway behind uvicorn on port 0, real
gRPC channels and real HTTP connections.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json

import grpc
import httpx
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from aos.logs.v1 import audit_ledger_service_pb2 as audit_pb2, audit_ledger_service_pb2_grpc as audit_grpc
from tests.e2e.support import DEMO, SECRET, token

pytestmark = pytest.mark.db
AUDIT = "/api/v1/logs/audit"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def signed_with_header(header: dict) -> str:
    """tenant-demo's valid claims under ``header``, HS256-signed with the suite's secret."""
    claims = json.loads(base64.urlsafe_b64decode(token(DEMO).split(".")[1] + "=="))
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    return f"{signing_input}.{_b64(hmac.new(SECRET.encode(), signing_input.encode(), hashlib.sha256).digest())}"


def grpc_reason(err: grpc.RpcError) -> str:
    status = rpc_status.from_call(err)
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info.reason
    raise AssertionError(f"no ErrorInfo in {status}")


async def grpc_list(suite, metadata) -> grpc.RpcError | None:
    async with grpc.aio.insecure_channel(suite["logs"]) as channel:
        try:
            await audit_grpc.AuditLedgerServiceStub(channel).ListAuditEntries(
                audit_pb2.ListAuditEntriesRequest(page_size=1), metadata=metadata, timeout=10)
        except grpc.aio.AioRpcError as err:
            return err
    return None


async def test_grpc_refuses_two_authorization_entries(suite, demo):
    good = f"Bearer {token(DEMO)}"
    assert await grpc_list(suite, (("authorization", good),)) is None  # one is accepted
    for second in (good, f"Bearer {token('tenant-acme')}", "Bearer not-a-jwt"):
        err = await grpc_list(suite, (("authorization", good), ("authorization", second)))
        assert err is not None and err.code() == grpc.StatusCode.UNAUTHENTICATED, err
        assert grpc_reason(err) == "CREDENTIALS_AMBIGUOUS"


async def test_rest_refuses_two_authorization_headers_over_a_real_socket(served, demo):
    good = f"Bearer {token(DEMO)}"
    async with httpx.AsyncClient(base_url=served, timeout=10) as http:
        assert (await http.get(AUDIT, headers={"Authorization": good})).status_code == 200
        for second in (good, f"Bearer {token('tenant-acme')}", "Bearer not-a-jwt"):
            for other in ("Authorization", "authorization", "AUTHORIZATION"):  # one header, any casing
                reply = await http.get(AUDIT, headers=[("Authorization", good), (other, second)])
                assert reply.status_code == 401, (other, reply.text)
                body = reply.json()
                assert body["code"] == 16 and body["details"][0]["reason"] == "CREDENTIALS_AMBIGUOUS", body


async def test_grpc_and_rest_agree_on_a_list_valued_alg(suite, served, demo):
    # A list-valued alg used to be an unhashable dict key in the verifier: HTTP 500 and a
    # traceback per request. Both edges now answer UNAUTHENTICATED with one reason.
    for header in ({"alg": ["HS256"], "typ": "JWT"}, {"alg": "HS256", "kid": ["k"]}, {"alg": "HS256", "typ": 1}):
        bad = f"Bearer {signed_with_header(header)}"
        err = await grpc_list(suite, (("authorization", bad),))
        assert err is not None and err.code() == grpc.StatusCode.UNAUTHENTICATED, (header, err)
        assert grpc_reason(err) == "TOKEN_HEADER_INVALID"
        async with httpx.AsyncClient(base_url=served, timeout=10) as http:
            reply = await http.get(AUDIT, headers={"Authorization": bad})
        assert reply.status_code == 401, (header, reply.status_code, reply.text)
        assert reply.json()["details"][0]["reason"] == "TOKEN_HEADER_INVALID"
    # The same header, signed as a normal token would be, passes: the refusal is the shape.
    ok = f"Bearer {signed_with_header({'alg': 'HS256', 'typ': 'JWT'})}"
    assert await grpc_list(suite, (("authorization", ok),)) is None
