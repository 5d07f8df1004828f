"""Bearer JWT credentials (SPEC section 6).

The caller's tenant, actor and scopes come only from a verified token. Accepted
algorithms follow the configured keys (HS256 for AOS_AUTH_JWT_SECRET, EdDSA for
AOS_AUTH_JWT_PUBLIC_KEY_FILE); anything else — ``alg: none`` included — fails.
"""
from __future__ import annotations

import base64
import contextvars
import hashlib
import json
import re
import threading
import time
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ed448 import Ed448PrivateKey, Ed448PublicKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from aos_runtime.config import MIN_SECRET_BYTES, ConfigError, Settings

SCOPES = ("overview.read", "logs.read", "exports.read", "exports.create", "checkpoints.cosign", "evidence.write",
          "retention.read", "retention.admin", "evidence.erase")
# What a token is minted with when no scope is named: everything but erasure (docs/ERASURE.md),
# which destroys payloads for good and is granted only by naming it.
DEFAULT_SCOPES = tuple(s for s in SCOPES if s != "evidence.erase")
ACTOR_TYPES = ("HUMAN", "AGENT", "SYSTEM")
# Scopes only some kinds of caller may use (SPEC §6): producers writing evidence through
# Ingest are software (SYSTEM or AGENT), never a person's token.
SCOPE_ACTOR_TYPES = {"evidence.write": ("SYSTEM", "AGENT")}
TENANT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
LEEWAY_S = 30
DEFAULT_MAX_LIFETIME_S = 24 * 3600
MAX_ACTOR_CHARS = 256
# The claims that reach the append-only ledger and signed manifests as the actor: no
# control characters (log/CSV injection), no format characters (U+202E and friends
# make a stored actor id read differently from what it is), no lone surrogates (not
# storable as UTF-8), no line or paragraph separators.
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
# Code points that make two actor ids look alike: private use and unassigned ones (no
# defined glyph), spaces other than U+0020 (NBSP, ideographic space), and the
# Default_Ignorable_Code_Point characters that are not format characters (Hangul fillers,
# variation selectors, the combining grapheme joiner) — Unicode's DerivedCoreProperties.
_LOOKALIKE_CATEGORIES = frozenset({"Co", "Cn", "Zs"})
_IGNORABLE_RANGES = ((0x034F, 0x034F), (0x115F, 0x1160), (0x17B4, 0x17B5), (0x180B, 0x180F), (0x3164, 0x3164),
                     (0xFE00, 0xFE0F), (0xFFA0, 0xFFA0), (0xE0100, 0xE01EF))
_HEADER_STRINGS = ("alg", "kid", "typ")
# Verified tokens kept per process (by SHA-256 of the token): a caller sends the same token
# with every call, and verifying it (header checks, HMAC or EdDSA, claims, the actor's
# Unicode checks) costs ~0.1 ms of a call's CPU. 4,096 distinct live tokens per process is
# far more than the callers of one instance; past that the oldest are verified again.
TOKEN_CACHE_SIZE = 4096
DEV_SECRET_NAME = "jwt-secret"  # the development HS256 secret under AOS_DATA_DIR/secrets/ (local_state)


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


def single_authorization(values: Sequence[str]) -> str | None:
    """The one authorization value a call carries; two are refused (which one a proxy,
    the gateway and the service would each pick is not something to leave to chance)."""
    if len(values) > 1:
        raise AuthError("CREDENTIALS_AMBIGUOUS",
                        f"{len(values)} authorization headers: send exactly one 'Bearer <JWT>'")
    return values[0] if values else None


def check_hs256_secret(secret: str, variable: str = "AOS_AUTH_JWT_SECRET") -> None:
    """A short HMAC secret can be brute-forced offline from any one token: refused at start."""
    if len(secret.encode()) < MIN_SECRET_BYTES:
        raise ConfigError(f"{variable} must be at least {MIN_SECRET_BYTES} bytes "
                          f"(got {len(secret.encode())}); generate one with `openssl rand -hex 32`")


class TokenVerifier:
    def __init__(self, *, secret: str | None, public_key_pem: bytes | None, audience: str,
                 issuer: str | None, max_lifetime_s: int = DEFAULT_MAX_LIFETIME_S) -> None:
        self._keys: dict[str, str | Ed25519PublicKey | Ed448PublicKey] = {}
        if secret:
            check_hs256_secret(secret)
            self._keys["HS256"] = secret
        if public_key_pem:
            from cryptography.hazmat.primitives.serialization import load_pem_public_key

            public_key = load_pem_public_key(public_key_pem)
            # Any other kind (RSA, EC…) would load, then fail every EdDSA token at request time.
            if not isinstance(public_key, Ed25519PublicKey | Ed448PublicKey):
                raise ConfigError(f"the JWT public key must be an Ed25519 or Ed448 key (EdDSA), "
                                  f"not {type(public_key).__name__}")
            self._keys["EdDSA"] = public_key
        if not self._keys:
            raise ValueError("no JWT key configured: set AOS_AUTH_JWT_SECRET or AOS_AUTH_JWT_PUBLIC_KEY_FILE")
        if max_lifetime_s < 1:
            raise ConfigError(f"the maximum token lifetime must be at least 1 s, got {max_lifetime_s}")
        self.audience = audience
        self.issuer = issuer
        self.max_lifetime_s = max_lifetime_s
        # digest -> (principal, exp): only tokens that verified in full, under this
        # verifier's keys (a key change is a new verifier, an empty cache). A failure is
        # never kept: every invalid token pays the whole verification.
        self._verified: dict[bytes, tuple[Principal, int]] = {}
        self._lock = threading.Lock()
        self.cache_size = TOKEN_CACHE_SIZE

    @classmethod
    def from_settings(cls, settings: Settings, *, secret: str | None = None) -> TokenVerifier:
        """``secret`` stands in for an unset AOS_AUTH_JWT_SECRET (the development one)."""
        pem = Path(settings.jwt_public_key_file).read_bytes() if settings.jwt_public_key_file else None
        return cls(secret=settings.jwt_secret or secret, public_key_pem=pem, audience=settings.audience,
                   issuer=settings.issuer, max_lifetime_s=settings.max_token_lifetime_s)

    def verify(self, authorization: str | None) -> Principal:
        if not authorization:
            raise AuthError("CREDENTIALS_MISSING", "missing authorization metadata: send 'Bearer <JWT>'")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthError("CREDENTIALS_MALFORMED", "authorization must be 'Bearer <JWT>'")
        token = token.strip()
        digest = hashlib.sha256(token.encode()).digest()
        known = self._verified.get(digest)
        if known is not None:
            principal, exp = known
            # Its signature and claims verified before; its expiry is time's, checked on every
            # call with the same leeway as PyJWT's (an expired token fails as it did uncached).
            if time.time() < exp + LEEWAY_S:  # PyJWT: expired when exp <= now - leeway
                return principal
            with self._lock:
                self._verified.pop(digest, None)
            raise AuthError("TOKEN_EXPIRED", "the bearer token has expired")
        principal, exp = self._verify_in_full(token)
        with self._lock:
            if len(self._verified) >= self.cache_size:
                # Oldest first (a dict keeps insertion order): bounded whatever callers send.
                del self._verified[next(iter(self._verified))]
            self._verified[digest] = (principal, exp)
        return principal

    def _verify_in_full(self, token: str) -> tuple[Principal, int]:
        """The token's principal and expiry, or AuthError: header, signature, claims, lifetime."""
        _check_header(token)
        try:
            header = jwt.get_unverified_header(token.strip())
        except jwt.PyJWTError:
            raise AuthError("TOKEN_MALFORMED", "the bearer token is not a JWT") from None
        alg = header.get("alg")
        key = self._keys.get(alg) if isinstance(alg, str) else None
        if key is None or not isinstance(alg, str):
            raise AuthError("TOKEN_ALGORITHM_REFUSED", f"JWT algorithm {alg!r} is not accepted")
        options: jwt.types.Options = {"require": ["exp", "iat", "sub", "aud"] + (["iss"] if self.issuer else [])}
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
        except jwt.MissingRequiredClaimError as exc:
            raise AuthError("TOKEN_CLAIM_MISSING", f"the bearer token has no {exc.claim!r} claim") from None
        except jwt.ImmatureSignatureError:
            raise AuthError("TOKEN_NOT_YET_VALID", "the bearer token is issued in the future (iat or nbf)") from None
        except jwt.PyJWTError as exc:
            raise AuthError("TOKEN_INVALID", f"the bearer token is invalid: {exc}") from None
        self._check_lifetime(claims)
        return _principal_from(claims), claims["exp"]

    def _check_lifetime(self, claims: dict[str, Any]) -> None:
        # PyJWT accepts any int()-able exp/iat ("123", 1.5): a token's times are JSON integers here.
        for name in ("exp", "iat"):
            value = claims[name]
            if not isinstance(value, int) or isinstance(value, bool):
                raise AuthError("TOKEN_CLAIMS_INVALID", f"the token's {name} claim must be an integer (seconds)")
        lifetime = claims["exp"] - claims["iat"]
        if lifetime > self.max_lifetime_s:
            # A stolen long-lived token outlives any rotation: the issuer's word is bounded here.
            raise AuthError("TOKEN_LIFETIME_TOO_LONG", f"the bearer token lives {lifetime} s (exp - iat); "
                                                       f"at most {self.max_lifetime_s} s are accepted")


def _check_header(token: str) -> None:
    """The header's shape, read before PyJWT (which would answer some shapes with its own
    generic errors): alg, kid and typ strings, no critical extension. A token whose header
    does not even decode is left for PyJWT to call malformed."""
    try:
        header = json.loads(base64.urlsafe_b64decode(token.split(".", 1)[0] + "==="))
    except (ValueError, TypeError):  # binascii.Error and UnicodeDecodeError are ValueErrors
        return
    except RecursionError:  # ~1000 nested arrays (under 3 KB of header): PyJWT would raise it too
        raise AuthError("TOKEN_MALFORMED", "the bearer token's header is nested too deeply") from None
    if not isinstance(header, dict):
        return
    for name in _HEADER_STRINGS:
        # Before any lookup: a list-valued alg is unhashable and used to escape as INTERNAL.
        if name in header and not isinstance(header[name], str):
            raise AuthError("TOKEN_HEADER_INVALID", f"the JWT header's {name!r} must be a string")
    if "crit" in header:  # RFC 7515 §4.1.11: an extension the recipient does not support is refused
        raise AuthError("TOKEN_HEADER_INVALID", "the JWT header's 'crit' names extensions this service does "
                                                "not support (RFC 7797 unencoded payloads included)")


def _principal_from(claims: dict[str, Any]) -> Principal:
    tenant = claims.get("tenant_id")
    if not isinstance(tenant, str) or not TENANT_ID.fullmatch(tenant):
        raise AuthError("TOKEN_CLAIMS_INVALID", "the token's tenant_id claim is missing or malformed")
    sub = claims.get("sub")
    problem = _actor_text_problem(sub)
    if problem or not isinstance(sub, str):
        raise AuthError("TOKEN_CLAIMS_INVALID", f"the token's sub claim {problem}")
    actor_type = claims.get("actor_type", "HUMAN")
    problem = _actor_text_problem(actor_type)
    if problem:
        raise AuthError("TOKEN_CLAIMS_INVALID", f"the token's actor_type claim {problem}")
    if actor_type not in ACTOR_TYPES:
        raise AuthError("TOKEN_CLAIMS_INVALID", f"actor_type must be one of {', '.join(ACTOR_TYPES)}")
    scope = claims.get("scope", "")
    if not isinstance(scope, str):
        raise AuthError("TOKEN_CLAIMS_INVALID", "the scope claim must be a space-separated string")
    return Principal(tenant_id=tenant, actor_id=sub, actor_type=actor_type, scopes=frozenset(scope.split()))


def _actor_text_problem(value: object) -> str | None:
    """What makes ``value`` unfit to be recorded as an actor (None when it is fit)."""
    if not isinstance(value, str) or not value:
        return "must be a non-empty string"
    if len(value) > MAX_ACTOR_CHARS:
        return f"must be at most {MAX_ACTOR_CHARS} characters"
    for char in value:
        category, point = unicodedata.category(char), ord(char)
        if category in _REFUSED_CATEGORIES:
            return f"must not contain control or format characters (found U+{point:04X})"
        if (category in _LOOKALIKE_CATEGORIES and char != " ") or \
                any(low <= point <= high for low, high in _IGNORABLE_RANGES):
            return f"must not contain invisible, unassigned or private-use characters (found U+{point:04X})"
    if not unicodedata.is_normalized("NFC", value):
        # Two spellings of one visible name would be two actors in the ledger.
        return "must be in Unicode normalization form C (NFC)"
    return None


def mint_token(*, secret: str, tenant_id: str, subject: str, actor_type: str = "HUMAN",
               scopes: tuple[str, ...] = DEFAULT_SCOPES, ttl_s: int = 24 * 3600, audience: str = "aos-evidence",
               issuer: str | None = None, algorithm: str = "HS256",
               key: Ed25519PrivateKey | Ed448PrivateKey | None = None) -> str:
    """A development token (``make run`` prints one; the CLI's ``token`` command mints them)."""
    now = int(time.time())
    claims = {"sub": subject, "tenant_id": tenant_id, "actor_type": actor_type, "scope": " ".join(scopes),
              "aud": audience, "iat": now, "exp": now + ttl_s}
    if issuer:
        claims["iss"] = issuer
    return jwt.encode(claims, key if key is not None else secret, algorithm=algorithm)
