"""Bearer JWT verification: what is accepted and every way a token is refused."""
import base64
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from aos_runtime.auth import AuthError, TokenVerifier, mint_token

SECRET = "s" * 48


def verifier(**kw):
    args = dict(secret=SECRET, public_key_pem=None, audience="aos-evidence", issuer=None)
    args.update(kw)
    return TokenVerifier(**args)


def bearer(token: str) -> str:
    return f"Bearer {token}"


def test_valid_hs256_token_gives_tenant_actor_and_scopes():
    token = mint_token(secret=SECRET, tenant_id="tenant-a", subject="user-1", actor_type="AGENT",
                       scopes=("logs.read",))
    p = verifier().verify(bearer(token))
    assert (p.tenant_id, p.actor_id, p.actor_type, p.scopes) == ("tenant-a", "user-1", "AGENT",
                                                                  frozenset({"logs.read"}))


def test_valid_eddsa_token():
    key = Ed25519PrivateKey.generate()
    pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    token = mint_token(secret="", tenant_id="t1", subject="svc", actor_type="SYSTEM", algorithm="EdDSA", key=key)
    assert verifier(secret=None, public_key_pem=pem).verify(bearer(token)).tenant_id == "t1"


def _reason(v, header):
    with pytest.raises(AuthError) as err:
        v.verify(header)
    return err.value.reason


def _unsigned(claims: dict) -> str:
    enc = lambda d: base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()  # noqa: E731
    return f"{enc({'alg': 'none', 'typ': 'JWT'})}.{enc(claims)}."


def test_refusals():
    v = verifier()
    good = dict(sub="u", tenant_id="t", aud="aos-evidence", exp=int(time.time()) + 60, scope="logs.read")
    assert _reason(v, None) == "CREDENTIALS_MISSING"
    assert _reason(v, "Basic abc") == "CREDENTIALS_MALFORMED"
    assert _reason(v, "Bearer not-a-jwt") == "TOKEN_MALFORMED"
    assert _reason(v, bearer(_unsigned(good))) == "TOKEN_ALGORITHM_REFUSED"
    assert _reason(v, bearer(jwt.encode(good, "other-secret-" * 4, algorithm="HS256"))) == "TOKEN_SIGNATURE_INVALID"
    assert _reason(v, bearer(jwt.encode({**good, "exp": int(time.time()) - 3600}, SECRET))) == "TOKEN_EXPIRED"
    assert _reason(v, bearer(jwt.encode({**good, "aud": "someone-else"}, SECRET))) == "TOKEN_AUDIENCE_INVALID"
    no_exp = {k: x for k, x in good.items() if k != "exp"}
    assert _reason(v, bearer(jwt.encode(no_exp, SECRET))) == "TOKEN_INVALID"
    assert _reason(v, bearer(jwt.encode({**good, "tenant_id": ""}, SECRET))) == "TOKEN_CLAIMS_INVALID"
    assert _reason(v, bearer(jwt.encode({**good, "tenant_id": "a b"}, SECRET))) == "TOKEN_CLAIMS_INVALID"
    assert _reason(v, bearer(jwt.encode({**good, "actor_type": "ROOT"}, SECRET))) == "TOKEN_CLAIMS_INVALID"
    # An EdDSA token is refused when only a secret is configured (no key for its algorithm).
    key = Ed25519PrivateKey.generate()
    assert _reason(v, bearer(jwt.encode(good, key, algorithm="EdDSA"))) == "TOKEN_ALGORITHM_REFUSED"


def test_issuer_is_enforced_when_configured():
    v = verifier(issuer="https://issuer.example")
    good = mint_token(secret=SECRET, tenant_id="t", subject="u", issuer="https://issuer.example")
    assert v.verify(bearer(good)).tenant_id == "t"
    assert _reason(v, bearer(mint_token(secret=SECRET, tenant_id="t", subject="u", issuer="https://evil"))) \
        == "TOKEN_ISSUER_INVALID"
    assert _reason(v, bearer(mint_token(secret=SECRET, tenant_id="t", subject="u"))) == "TOKEN_INVALID"


def test_a_verifier_needs_a_key():
    with pytest.raises(ValueError):
        verifier(secret=None)
