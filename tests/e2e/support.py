"""Helpers shared by the end-to-end tests: tokens, settings, the services' modules."""
from __future__ import annotations

import dataclasses

from aos_runtime.auth import SCOPES, mint_token
from aos_runtime.config import Settings

SECRET = "e2e-secret-" + "x" * 40


def token(tenant: str = "tenant-a", scopes=SCOPES, **kw) -> str:
    return mint_token(secret=SECRET, tenant_id=tenant, subject="user-e2e", scopes=tuple(scopes), **kw)


def settings(tmp_path) -> Settings:
    return dataclasses.replace(Settings.from_env({}), jwt_secret=SECRET, data_dir=tmp_path)


def service_modules():
    from services.export import server as export
    from services.logs import server as logs
    from services.overview import server as overview

    return {"overview": overview, "logs": logs, "export": export}
