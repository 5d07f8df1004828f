"""A raw psycopg session as a given role and tenant, for tests that probe the schema itself."""
from __future__ import annotations

import contextlib

import psycopg


@contextlib.contextmanager
def session(url: str, role: str | None = None, tenant: str | None = None):
    """A connection acting as ``role`` for ``tenant`` (None: no tenant set)."""
    with psycopg.connect(url, autocommit=True) as conn:
        if role:
            conn.execute(f"SET ROLE {role}")
        if tenant is not None:
            conn.execute("SELECT set_config('aos.tenant_id', %s, false)", (tenant,))
        yield conn
