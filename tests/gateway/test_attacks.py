"""Attacks on every REST route (issue #8): forged, expired, unsigned, wrong-audience and
wrong-key tokens; scope escalation; a tenant smuggled into the query or the body;
another tenant's ids. The same refusals as over gRPC (tests/e2e/test_services.py)."""
from __future__ import annotations

import base64
import json

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from aos_runtime.auth import SCOPES
from gateway.backends import SERVICE_BACKENDS, service_descriptor
from gateway.routes import RouteTable
from tests.e2e.support import ACME, DEMO, token

pytestmark = pytest.mark.db
ROUTES = list(RouteTable.from_services(service_descriptor(name) for name in SERVICE_BACKENDS).routes)
# Ids of tenant-acme's records: reading them as tenant-demo must look like "not there".
FOREIGN = {"run_id": f"{ACME}.run-support-103", "incident_id": f"{ACME}.inc-pii-7", "entry_id": "acme-entry",
           "export_id": "exp_acme"}


def path_of(route) -> str:
    text = "/" + "/".join(FOREIGN.get(s.field, "x") if hasattr(s, "field") else s for s in route.template.segments)
    return text + (f":{route.template.verb}" if route.template.verb else "")


def unsigned(tenant: str = DEMO) -> str:
    header = base64.urlsafe_b64encode(json.dumps({"alg": "none", "typ": "JWT"}).encode()).rstrip(b"=").decode()
    claims = jwt.decode(token(tenant), options={"verify_signature": False})
    body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{body}."


FORGED = {
    "none": None,
    "garbage": "not-a-jwt",
    "alg none": unsigned(),
    "expired": token(DEMO, ttl_s=-60),
    "wrong audience": token(DEMO, audience="someone-else"),
    "wrong key": jwt.encode(jwt.decode(token(DEMO), options={"verify_signature": False}), "x" * 64,
                            algorithm="HS256"),
    "wrong algorithm key": token(DEMO, algorithm="EdDSA", key=Ed25519PrivateKey.generate()),
    "tampered tenant": ".".join([token(DEMO).split(".")[0],
                                 base64.urlsafe_b64encode(json.dumps({**jwt.decode(
                                     token(DEMO), options={"verify_signature": False}),
                                     "tenant_id": ACME}).encode()).rstrip(b"=").decode(),
                                 token(DEMO).split(".")[2]]),
}


def ids(route) -> str:
    return f"{route.http_method} {route.template.template}"


@pytest.mark.parametrize("route", ROUTES, ids=ids)
async def test_every_route_refuses_forged_credentials(client, route):
    for name, bad in FORGED.items():
        headers = {"Authorization": f"Bearer {bad}"} if bad else {"Authorization": ""}
        reply = await client.request(route.http_method, path_of(route), headers=headers,
                                     json={} if route.body else None)
        assert reply.status_code == 401 and reply.json()["code"] == 16, (name, reply.status_code, reply.text)


@pytest.mark.parametrize("route", ROUTES, ids=ids)
async def test_every_route_needs_its_scope(client, route):
    others = tuple(s for s in SCOPES if s != route.scope)
    reply = await client.request(route.http_method, path_of(route), json={} if route.body else None,
                                 headers={"Authorization": f"Bearer {token(DEMO, scopes=others)}"})
    assert reply.status_code == 403, reply.text


@pytest.mark.parametrize("route", ROUTES, ids=ids)
async def test_a_smuggled_tenant_is_refused_never_obeyed(client, route):
    reply = await client.request(route.http_method, path_of(route) + f"?tenant_id={ACME}",
                                 json={} if route.body else None)
    assert reply.status_code == 400 and "tenant_id" in reply.text, reply.text
    if route.body == "*":
        reply = await client.request(route.http_method, path_of(route), json={"tenant_id": ACME})
        assert reply.status_code == 400, reply.text


@pytest.mark.parametrize("route", [r for r in ROUTES if r.template.variables], ids=ids)
async def test_another_tenants_ids_are_not_found(client, route):
    # The required fields of a body, so that only the id is wrong.
    body = {"CreateExport": {"bundle_type": "BUNDLE_TYPE_EVIDENCE", "format": "EXPORT_FORMAT_JSON"},
            "ReleaseLegalHold": {"reason": "attack"}}.get(route.method.name, {})
    reply = await client.request(route.http_method, path_of(route), json=body if route.body else None)
    assert reply.status_code == 404, (reply.status_code, reply.text)
