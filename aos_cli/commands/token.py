"""``token mint``: development tokens (HS256), and the token other commands fall back to."""
from __future__ import annotations

import argparse
import os
from datetime import datetime, timezone
from pathlib import Path

import jwt

from aos_cli.client import EXIT_OK, UsageError
from aos_cli.context import Context
from aos_cli.output import Output
from aos_cli.values import duration_s
from aos_recording.scenarios import DEMO_TENANTS
from aos_runtime import auth, local_state
from aos_runtime.config import ConfigError, Settings

DEMO_TENANT = next(iter(DEMO_TENANTS))
DEMO_SUBJECT = "user-demo"  # the subject of the token `make run` prints
DEFAULT_TTL_S = 24 * 3600


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    group = sub.add_parser("token", help="development tokens").add_subparsers(dest="action", required=True)
    mint = group.add_parser("mint", parents=[common], help="print a development token (HS256)",
                            description="Sign a token with AOS_AUTH_JWT_SECRET, or the development secret "
                                        "under AOS_DATA_DIR that `make run` created, or --secret-file.")
    mint.add_argument("--tenant", default=DEMO_TENANT, help=f"tenant_id claim (default {DEMO_TENANT})")
    mint.add_argument("--subject", default=DEMO_SUBJECT, help=f"sub claim: the actor id (default {DEMO_SUBJECT})")
    mint.add_argument("--actor-type", default="HUMAN", choices=auth.ACTOR_TYPES, type=str.upper)
    mint.add_argument("--scope", action="append", choices=auth.SCOPES,
                      help="a scope to grant (repeatable; default all but evidence.erase, which must be named)")
    mint.add_argument("--ttl", default=None,
                      help="lifetime: 90s, 30m, 24h (default 24h, or AOS_AUTH_MAX_TOKEN_LIFETIME if shorter; "
                           "never longer than it, the services refuse such tokens)")
    mint.add_argument("--secret-file", type=Path, help="read the HS256 secret from this file")
    mint.set_defaults(handler=mint_command)


def signing_secret(settings: Settings, secret_file: Path | None = None) -> tuple[str, str] | None:
    """(secret, where it came from), with the precedence the services use to verify; None when there is none."""
    if secret_file is not None:
        try:
            return secret_file.read_text().strip(), str(secret_file)
        except OSError as exc:
            raise UsageError(f"--secret-file: {exc.strerror or exc}: {secret_file}") from None
    if settings.jwt_secret:
        return settings.jwt_secret, "AOS_AUTH_JWT_SECRET"
    # Read, never created: only a dev .aos/ that `make run` set up counts.
    try:
        secret = local_state.read_dev_secret(settings.data_dir, auth.DEV_SECRET_NAME)
    except ConfigError as exc:  # e.g. a secret file others can read: refused, as the services refuse it
        raise UsageError(str(exc)) from None
    if secret is None:
        return None
    return secret, str(dev_secret_path(settings))


def dev_secret_path(settings: Settings) -> Path:
    return settings.data_dir / local_state.SECRETS_DIR / auth.DEV_SECRET_NAME


def mint(settings: Settings, secret: str, *, tenant: str = DEMO_TENANT, subject: str = DEMO_SUBJECT,
         actor_type: str = "HUMAN", scopes: tuple[str, ...] = auth.DEFAULT_SCOPES, ttl_s: int | None = None) -> str:
    if ttl_s is None:
        ttl_s = min(DEFAULT_TTL_S, settings.max_token_lifetime_s)
    return auth.mint_token(secret=secret, tenant_id=tenant, subject=subject, actor_type=actor_type, scopes=scopes,
                           ttl_s=ttl_s, audience=settings.audience, issuer=settings.issuer)


def default_token(settings: Settings, out: Output) -> str | None:
    """AOS_TOKEN, else a demo-tenant token minted from the local secret (said on stderr), else None."""
    if os.environ.get("AOS_TOKEN"):
        return os.environ["AOS_TOKEN"]
    found = signing_secret(settings)
    if found is None:
        return None
    secret, source = found
    out.note(f"note: no --token or AOS_TOKEN; using a development token for {DEMO_TENANT} signed with {source}")
    return mint(settings, secret)


def mint_command(args: argparse.Namespace, ctx: Context) -> int:
    ttl_s = duration_s(args.ttl, "--ttl") if args.ttl is not None else None
    if ttl_s is not None and ttl_s > ctx.settings.max_token_lifetime_s:
        raise UsageError(f"--ttl: {args.ttl} is longer than the {ctx.settings.max_token_lifetime_s} s the services "
                         "accept (AOS_AUTH_MAX_TOKEN_LIFETIME)")
    if not auth.TENANT_ID.match(args.tenant):
        raise UsageError(f"--tenant: {args.tenant!r} is not a tenant id")
    found = signing_secret(ctx.settings, args.secret_file)
    if found is None:
        raise UsageError("no signing secret: set AOS_AUTH_JWT_SECRET, pass --secret-file, or run `make run` "
                         f"once so that {dev_secret_path(ctx.settings)} exists")
    secret, source = found
    token = mint(ctx.settings, secret, tenant=args.tenant, subject=args.subject, actor_type=args.actor_type,
                 scopes=tuple(args.scope or auth.DEFAULT_SCOPES), ttl_s=ttl_s)
    claims = jwt.decode(token, options={"verify_signature": False})
    if ctx.out.json_mode:
        ctx.out.document({"token": token, "claims": claims})
    else:
        ctx.out.line(token)
        expires = datetime.fromtimestamp(claims["exp"], timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
        ctx.out.note(f"tenant {args.tenant}, subject {args.subject} ({args.actor_type}), scopes {claims['scope']}, "
                     f"expires {expires}; signed with {source}")
    return EXIT_OK
