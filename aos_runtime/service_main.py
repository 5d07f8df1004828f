"""The entry point every service shares: ``python -m services.<name>`` ends here."""
from __future__ import annotations

import asyncio
import logging
from typing import Callable

from aos_runtime import auth, migrate
from aos_runtime.local_state import dev_secret
from aos_runtime.config import Settings
from aos_runtime.db import Database
from aos_runtime.embedded import database_url_for
from aos_runtime.observability import configure_logging
from aos_runtime.pagination import PageTokens
from aos_runtime.server import Servicer, ServiceContext, ServiceServer, run_until_signalled

log = logging.getLogger("aos.service")


def token_verifier(settings: Settings) -> auth.TokenVerifier:
    """The configured keys; with none configured, the development secret under AOS_DATA_DIR."""
    if not settings.jwt_secret and not settings.jwt_public_key_file:
        log.warning("no JWT key configured: using the development secret under AOS_DATA_DIR")
        return auth.TokenVerifier(secret=dev_secret(settings.data_dir, "jwt-secret"), public_key_pem=None,
                                  audience=settings.audience, issuer=settings.issuer)
    return auth.TokenVerifier.from_settings(settings)


def build_server(name: str, servicers: Callable[[ServiceContext], list[Servicer]], settings: Settings,
                 database_url: str, *, port: int | None = None) -> ServiceServer:
    db = Database(database_url, service=name, pool_size=settings.pool_size,
                  pool_timeout_s=settings.pool_timeout_s, statement_timeout_ms=settings.statement_timeout_ms,
                  connect_timeout_s=settings.connect_timeout_s)
    context = ServiceContext(db=db, page_tokens=PageTokens.from_settings(settings), settings=settings)
    return ServiceServer(name, servicers(context), db, token_verifier(settings), host=settings.bind_host,
                         port=settings.ports[name] if port is None else port,
                         max_message_bytes=settings.max_message_bytes, grace_period_s=settings.grace_period_s,
                         health_probe_interval_s=settings.health_probe_interval_s)


def run_service(name: str, servicers: Callable[[ServiceContext], list[Servicer]]) -> None:
    settings = Settings.from_env()
    configure_logging(settings.log_level)
    with database_url_for(settings) as url:
        if settings.migrate_on_start:
            migrate.upgrade(url)
        asyncio.run(_serve(name, servicers, settings, url))


async def _serve(name: str, servicers: Callable[[ServiceContext], list[Servicer]], settings: Settings, url: str) -> None:
    # Built inside the running loop: a grpc.aio server belongs to the loop that creates it.
    await run_until_signalled(build_server(name, servicers, settings, url))
