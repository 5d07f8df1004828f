"""Bearer JWT credentials (SPEC section 6).

The caller's tenant, actor and scopes come only from a verified token. Accepted
algorithms follow the configured keys (HS256 for AOS_AUTH_JWT_SECRET, EdDSA for
AOS_AUTH_JWT_PUBLIC_KEY_FILE); anything else — ``alg: none`` included — fails.
"""
from __future__ import annotations

import contextvars
import re
import time
from dataclasses import dataclass
from pathlib import Path

import jwt

SCOPES = ("overview.read", "logs.read", "exports.read", "exports.create")
ACTOR_TYPES = ("HUMAN", "AGENT", "SYSTEM")
TENANT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
LEEWAY_S = 30


class AuthError(Exception):
    """The credentials are missing or cannot be trusted (UNAUTHENTICATED)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Principal:
    tenant_id: str
    actor_id: str
    actor_type: str
    scopes: frozenset[str]


current_principal: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("principal", default=None)


def principal() -> Principal:
    """The verified caller of the current RPC (set by the server's call wrapper)."""
    value = current_principal.get()
    if value is None:  # a handler reached without the auth wrapper: a wiring bug
        raise RuntimeError("no authenticated principal in this call context")
    return value


class TokenVerifier:
    def __init__(self, *, secret: str | None, public_key_pem: bytes | None, audience: str,
                 issuer: str | None) -> None:
        self._keys: dict[str, object] = {}
        if secret:
            self._keys["HS256"] = secret
        if public_key_pem:
            from cryptography.hazmat.primitives.serialization import load_pem_public_key

            self._keys["EdDSA"] = load_pem_public_key(public_key_pem)
        if not self._keys:
            raise ValueError("no JWT key configured: set AOS_AUTH_JWT_SECRET or AOS_AUTH_JWT_PUBLIC_KEY_FILE")
        self.audience = audience
        self.issuer = issuer

    @classmethod
    def from_settings(cls, settings) -> "TokenVerifier":
        pem = Path(settings.jwt_public_key_file).read_bytes() if settings.jwt_public_key_file else None
        return cls(secret=settings.jwt_secret, public_key_pem=pem, audience=settings.audience,
                   issuer=settings.issuer)

    def verify(self, authorization: str | None) -> Principal:
        if not authorization:
            raise AuthError("CREDENTIALS_MISSING", "missing authorization metadata: send 'Bearer <JWT>'")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthError("CREDENTIALS_MALFORMED", "authorization must be 'Bearer <JWT>'")
        try:
            header = jwt.get_unverified_header(token.strip())
        except jwt.PyJWTError:
            raise AuthError("TOKEN_MALFORMED", "the bearer token is not a JWT") from None
        alg = header.get("alg")
        key = self._keys.get(alg)
        if key is None:
            raise AuthError("TOKEN_ALGORITHM_REFUSED", f"JWT algorithm {alg!r} is not accepted")
        options = {"require": ["exp", "sub", "aud"] + (["iss"] if self.issuer else [])}
        try:
            claims = jwt.decode(token.strip(), key=key, algorithms=[alg], audience=self.audience,
                                issuer=self.issuer, leeway=LEEWAY_S, options=options)
        except jwt.ExpiredSignatureError:
            raise AuthError("TOKEN_EXPIRED", "the bearer token has expired") from None
        except jwt.InvalidAudienceError:
            raise AuthError("TOKEN_AUDIENCE_INVALID", f"the bearer token's audience is not {self.audience!r}") from None
        except jwt.InvalidIssuerError:
            raise AuthError("TOKEN_ISSUER_INVALID", "the bearer token's issuer is not accepted") from None
        except jwt.InvalidSignatureError:
            raise AuthError("TOKEN_SIGNATURE_INVALID", "the bearer token's signature does not verify") from None
        except jwt.PyJWTError as exc:
            raise AuthError("TOKEN_INVALID", f"the bearer token is invalid: {exc}") from None
        return _principal_from(claims)


def _principal_from(claims: dict) -> Principal:
    tenant = claims.get("tenant_id")
    if not isinstance(tenant, str) or not TENANT_ID.fullmatch(tenant):
        raise AuthError("TOKEN_CLAIMS_INVALID", "the token's tenant_id claim is missing or malformed")
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub:
        raise AuthError("TOKEN_CLAIMS_INVALID", "the token's sub claim is missing")
    actor_type = claims.get("actor_type", "HUMAN")
    if actor_type not in ACTOR_TYPES:
        raise AuthError("TOKEN_CLAIMS_INVALID", f"actor_type must be one of {', '.join(ACTOR_TYPES)}")
    scope = claims.get("scope", "")
    if not isinstance(scope, str):
        raise AuthError("TOKEN_CLAIMS_INVALID", "the scope claim must be a space-separated string")
    return Principal(tenant_id=tenant, actor_id=sub, actor_type=actor_type, scopes=frozenset(scope.split()))


def mint_token(*, secret: str, tenant_id: str, subject: str, actor_type: str = "HUMAN",
               scopes: tuple[str, ...] = SCOPES, ttl_s: int = 24 * 3600, audience: str = "aos-evidence",
               issuer: str | None = None, algorithm: str = "HS256", key: object | None = None) -> str:
    """A development token (``make run`` prints one; the CLI's ``token`` command mints them)."""
    now = int(time.time())
    claims = {"sub": subject, "tenant_id": tenant_id, "actor_type": actor_type, "scope": " ".join(scopes),
              "aud": audience, "iat": now, "exp": now + ttl_s}
    if issuer:
        claims["iss"] = issuer
    return jwt.encode(claims, key if key is not None else secret, algorithm=algorithm)
