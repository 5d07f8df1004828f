"""Bearer JWT verification: what is accepted and every way a token is refused."""
import base64
import hashlib
import hmac
import json
import re
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings, strategies as st

from aos_runtime.auth import AuthError, TokenVerifier, mint_token, single_authorization

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
    good = dict(sub="u", tenant_id="t", aud="aos-evidence", iat=int(time.time()), exp=int(time.time()) + 60,
                scope="logs.read")
    assert _reason(v, None) == "CREDENTIALS_MISSING"
    assert _reason(v, "Basic abc") == "CREDENTIALS_MALFORMED"
    assert _reason(v, "Bearer not-a-jwt") == "TOKEN_MALFORMED"
    assert _reason(v, bearer(_unsigned(good))) == "TOKEN_ALGORITHM_REFUSED"
    assert _reason(v, bearer(jwt.encode(good, "other-secret-" * 4, algorithm="HS256"))) == "TOKEN_SIGNATURE_INVALID"
    assert _reason(v, bearer(jwt.encode({**good, "exp": int(time.time()) - 3600}, SECRET))) == "TOKEN_EXPIRED"
    assert _reason(v, bearer(jwt.encode({**good, "aud": "someone-else"}, SECRET))) == "TOKEN_AUDIENCE_INVALID"
    no_exp = {k: x for k, x in good.items() if k != "exp"}
    assert _reason(v, bearer(jwt.encode(no_exp, SECRET))) == "TOKEN_CLAIM_MISSING"
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
    assert _reason(v, bearer(mint_token(secret=SECRET, tenant_id="t", subject="u"))) == "TOKEN_CLAIM_MISSING"


def test_a_verifier_needs_a_key():
    with pytest.raises(ValueError):
        verifier(secret=None)


# --- issue #17: header shapes, times and lifetime, secret length, actor text ----------------

REASON = re.compile(r"^[A-Z][A-Z0-9]*(_[A-Z0-9]+)*$")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def signed(header: object, claims: object, secret: str = SECRET) -> str:
    """A JWT with exactly this header and claims, HS256-signed with ``secret`` whatever the
    header says (PyJWT's encoder would refuse most of the shapes tried here)."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    mac = hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(mac)}"


def claims(**overrides) -> dict:
    now = int(time.time())
    base = dict(sub="user-1", tenant_id="t1", actor_type="HUMAN", aud="aos-evidence", iat=now, exp=now + 600,
                scope="logs.read")
    base.update(overrides)
    return {k: x for k, x in base.items() if x is not DROP}


DROP = object()


def test_the_helper_signs_what_the_verifier_accepts():  # so the refusals below are for the reason named
    assert verifier().verify(bearer(signed({"alg": "HS256", "typ": "JWT"}, claims()))).actor_id == "user-1"


@pytest.mark.parametrize("header", [
    {"alg": ["HS256"]},                       # was an unhashable dict key: HTTP 500, a traceback per request
    {"alg": {"HS256": 1}}, {"alg": 256}, {"alg": None}, {"alg": True},
    {"alg": "HS256", "kid": ["k1"]}, {"alg": "HS256", "kid": 7},
    {"alg": "HS256", "typ": ["JWT"]}, {"alg": "HS256", "typ": {}},
])
def test_non_string_alg_kid_or_typ_is_unauthenticated(header):
    assert _reason(verifier(), bearer(signed(header, claims()))) == "TOKEN_HEADER_INVALID"


@pytest.mark.parametrize("part", ["header", "claims"])
def test_a_deeply_nested_header_or_claims_is_unauthenticated(part):
    # Under 3 KB of Authorization: json's recursion limit raised RecursionError, answered as INTERNAL.
    deep = "[" * 5000 + "]" * 5000
    header = _b64(deep.encode()) if part == "header" else _b64(json.dumps({"alg": "HS256"}).encode())
    body = _b64(deep.encode()) if part == "claims" else _b64(json.dumps(claims()).encode())
    assert _reason(verifier(), bearer(f"{header}.{body}.{_b64(b'x' * 32)}")) in {"TOKEN_MALFORMED",
                                                                               "TOKEN_SIGNATURE_INVALID"}


def test_critical_header_extensions_are_refused():
    # RFC 7797 b64=false would make the "payload" unencoded bytes: no extension is supported.
    header = {"alg": "HS256", "crit": ["b64"], "b64": False}
    assert _reason(verifier(), bearer(signed(header, claims()))) == "TOKEN_HEADER_INVALID"


def test_exp_and_iat_are_both_required():
    v = verifier()
    assert _reason(v, bearer(signed({"alg": "HS256"}, claims(iat=DROP)))) == "TOKEN_CLAIM_MISSING"
    assert _reason(v, bearer(signed({"alg": "HS256"}, claims(exp=DROP)))) == "TOKEN_CLAIM_MISSING"


@pytest.mark.parametrize("name", ["exp", "iat"])
@pytest.mark.parametrize("value", ["soon", True, [1], {}, None, 1e400])
def test_times_that_are_no_number_are_refused(name, value):
    # True is exp/iat 1 to PyJWT (expired); null counts as missing; 1e400 is Infinity.
    assert _reason(verifier(), bearer(signed({"alg": "HS256"}, claims(**{name: value})))) in (
        "TOKEN_CLAIMS_INVALID", "TOKEN_INVALID", "TOKEN_CLAIM_MISSING", "TOKEN_EXPIRED")


@pytest.mark.parametrize("name, value", [("exp", "NOW+60"), ("iat", "NOW"), ("exp", "NOW+60.5"), ("iat", "NOW+0.5")])
def test_times_pyjwt_would_coerce_are_refused_as_claims_invalid(name, value):
    now = int(time.time())
    as_string, offset = value.startswith("NOW") and "." not in value, value[3:] or "0"
    text = str(now + int(float(offset))) if as_string else None
    number = now + float(offset)
    token = signed({"alg": "HS256"}, claims(**{name: text if as_string else number}))
    assert _reason(verifier(), bearer(token)) == "TOKEN_CLAIMS_INVALID"


def test_lifetime_is_bounded():
    now = int(time.time())
    v = verifier(max_lifetime_s=3600)
    assert v.verify(bearer(signed({"alg": "HS256"}, claims(iat=now, exp=now + 3600)))).actor_id == "user-1"
    assert _reason(v, bearer(signed({"alg": "HS256"}, claims(iat=now, exp=now + 3601)))) == "TOKEN_LIFETIME_TOO_LONG"
    # The default is a day: a token minted for a year is refused even though it has not expired.
    year = mint_token(secret=SECRET, tenant_id="t", subject="u", ttl_s=365 * 86400)
    assert _reason(verifier(), bearer(year)) == "TOKEN_LIFETIME_TOO_LONG"
    assert verifier().verify(bearer(mint_token(secret=SECRET, tenant_id="t", subject="u"))).tenant_id == "t"


def test_lifetime_comes_from_settings():
    from aos_runtime.config import Settings

    settings = Settings.from_env({"AOS_AUTH_JWT_SECRET": SECRET, "AOS_AUTH_MAX_TOKEN_LIFETIME": "600"})
    v = TokenVerifier.from_settings(settings)
    assert v.max_lifetime_s == 600
    assert _reason(v, bearer(mint_token(secret=SECRET, tenant_id="t", subject="u", ttl_s=601))) == \
        "TOKEN_LIFETIME_TOO_LONG"


def test_iat_in_the_future_beyond_the_leeway_is_refused():
    now = int(time.time())
    v = verifier()
    assert _reason(v, bearer(signed({"alg": "HS256"}, claims(iat=now + 3600, exp=now + 4000)))) == \
        "TOKEN_NOT_YET_VALID"
    assert v.verify(bearer(signed({"alg": "HS256"}, claims(iat=now + 10, exp=now + 400)))).tenant_id == "t1"


@pytest.mark.parametrize("secret", ["short", "x" * 31, "é" * 15])
def test_short_hs256_secrets_are_refused_at_start(secret):
    from aos_runtime.config import ConfigError, Settings

    with pytest.raises(ConfigError, match="at least 32 bytes"):
        verifier(secret=secret)
    with pytest.raises(ConfigError, match="AOS_AUTH_JWT_SECRET must be at least 32 bytes"):
        Settings.from_env({"AOS_AUTH_JWT_SECRET": secret})
    verifier(secret="x" * 32)  # the boundary is accepted


@pytest.mark.parametrize("claim, value", [
    ("sub", ""), ("sub", "u" * 257), ("sub", "admin\u202e"), ("sub", "a\u2066b\u2069"), ("sub", "a\u200eb"),
    ("sub", "a\u200fb"), ("sub", "line\nbreak"), ("sub", "nul\x00"), ("sub", "esc\x1b[31m"), ("sub", "del\x7f"),
    ("sub", "a\u2028b"), ("sub", "\ufeffbom"), ("sub", "lone\ud800"), ("sub", ["u"]), ("sub", 5),
    ("actor_type", "HUMAN\u202e"), ("actor_type", "H" * 300), ("actor_type", ""), ("actor_type", ["HUMAN"]),
    ("actor_type", "human"),
    # Lookalikes: alice and "alice" + an invisible or unassigned character would be two actors.
    ("sub", "alice\u3164"), ("sub", "alice\u00a0"), ("sub", "ali\u3000ce"), ("sub", "alice\ue000"),
    ("sub", "alice\U000e0101"), ("sub", "alice\ufe0f"), ("sub", "a\u034fb"), ("sub", "alice\U0010fffd"),
    ("sub", "alice\u0378"), ("sub", "Jose\u0301"),  # unassigned U+0378; decomposed é (not NFC)
])
def test_actor_claims_unfit_for_the_ledger_are_refused(claim, value):
    assert _reason(verifier(), bearer(signed({"alg": "HS256"}, claims(**{claim: value})))) in (
        "TOKEN_CLAIMS_INVALID", "TOKEN_INVALID")  # TOKEN_INVALID: PyJWT's own check that sub is a string


@pytest.mark.parametrize("sub", ["u" * 256, "José Müller", "服务-账号", "agent:billing/7", "Jos\u00e9", "한국어 사용자"])
def test_actor_ids_that_are_fine_are_accepted(sub):
    assert verifier().verify(bearer(signed({"alg": "HS256"}, claims(sub=sub)))).actor_id == sub


def test_two_authorization_values_are_ambiguous():
    token = bearer(mint_token(secret=SECRET, tenant_id="t", subject="u"))
    assert single_authorization([token]) == token and single_authorization([]) is None
    with pytest.raises(AuthError) as err:
        single_authorization([token, token])
    assert err.value.reason == "CREDENTIALS_AMBIGUOUS"


# Arbitrary JSON, including NaN/Infinity (Python's json writes and PyJWT's reads them),
# huge integers, lone surrogates, nesting.
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-10 ** 30, max_value=10 ** 30) | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6)
CLAIM_NAMES = ("sub", "tenant_id", "actor_type", "scope", "exp", "iat", "nbf", "aud", "iss", "jti")


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(header=st.one_of(
           st.fixed_dictionaries({"alg": st.just("HS256") | JSON},
                                 optional={"kid": JSON, "typ": JSON, "crit": JSON, "b64": JSON, "jku": JSON,
                                           "x5u": JSON, "cty": JSON}),
           JSON),
       overrides=st.dictionaries(st.sampled_from(CLAIM_NAMES), JSON | st.just(DROP), max_size=4),
       body=st.one_of(st.none(), JSON))
def test_no_header_or_claims_shape_escapes_as_anything_but_unauthenticated(header, overrides, body):
    """Whatever the header and claims hold, verify() either trusts the token or raises
    AuthError (UNAUTHENTICATED at the edge) with an UPPER_SNAKE reason: never another
    exception, which the call wrapper would answer as INTERNAL."""
    payload = body if body is not None else claims(**overrides)
    v = verifier(issuer=None)
    try:
        principal = v.verify(bearer(signed(header, payload)))
    except AuthError as exc:
        assert REASON.fullmatch(exc.reason), exc.reason
        return
    # Trusted: then the token was as good as the rules say.
    assert isinstance(header, dict) and header.get("alg") == "HS256"
    assert isinstance(payload["exp"], int) and isinstance(payload["iat"], int)
    assert payload["exp"] - payload["iat"] <= v.max_lifetime_s
    assert principal.actor_id == payload["sub"] and 0 < len(principal.actor_id) <= 256


def test_a_public_key_file_that_is_not_an_eddsa_key_is_a_configuration_error():
    # An RSA key loaded, then failed every EdDSA token at request time; now the service does not start.
    from cryptography.hazmat.primitives.asymmetric import rsa

    from aos_runtime.config import ConfigError

    pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(ConfigError, match="Ed25519 or Ed448"):
        verifier(secret=None, public_key_pem=pem)


# --- the verified-token cache (issue #22) ------------------------------------------------------

def test_a_cached_token_still_expires(monkeypatch):
    """A token verified once is answered from the cache until its exp (+ PyJWT's leeway),
    then refused as TOKEN_EXPIRED exactly as an uncached one."""
    from aos_runtime import auth as auth_mod

    v = verifier()
    now = int(time.time())
    token = jwt.encode(dict(sub="u", tenant_id="t", aud="aos-evidence", iat=now, exp=now + 60), SECRET)
    assert v.verify(bearer(token)).tenant_id == "t"
    assert len(v._verified) == 1
    assert v.verify(bearer(token)).tenant_id == "t"  # from the cache
    monkeypatch.setattr(auth_mod.time, "time", lambda: now + 60 + auth_mod.LEEWAY_S - 1)
    assert v.verify(bearer(token)).tenant_id == "t"
    monkeypatch.setattr(auth_mod.time, "time", lambda: now + 60 + auth_mod.LEEWAY_S)
    assert _reason(v, bearer(token)) == "TOKEN_EXPIRED"
    assert not v._verified  # and dropped: the next call verifies in full, and fails there too
    monkeypatch.undo()
    fresh = verifier()
    assert _reason(fresh, bearer(jwt.encode(dict(sub="u", tenant_id="t", aud="aos-evidence", iat=now - 120,
                                                  exp=now - 60), SECRET))) == "TOKEN_EXPIRED"


def test_failures_are_never_cached_and_the_cache_is_bounded():
    v = verifier()
    v.cache_size = 3
    now = int(time.time())
    forged = jwt.encode(dict(sub="u", tenant_id="t", aud="aos-evidence", iat=now, exp=now + 60), "x" * 48)
    for _ in range(2):
        assert _reason(v, bearer(forged)) == "TOKEN_SIGNATURE_INVALID"
    assert not v._verified
    tokens = [jwt.encode(dict(sub=f"u{i}", tenant_id="t", aud="aos-evidence", iat=now, exp=now + 60), SECRET)
              for i in range(5)]
    for t in tokens:
        v.verify(bearer(t))
    assert len(v._verified) == 3
    # The same token with other surrounding whitespace is the same token; another verifier
    # (another key) keeps its own cache: a token cached by one is verified in full by the other.
    assert v.verify(f"Bearer  {tokens[-1]} ").actor_id == "u4"
    other = verifier(secret="o" * 48)
    assert _reason(other, bearer(tokens[-1])) == "TOKEN_SIGNATURE_INVALID"
