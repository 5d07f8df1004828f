"""Database engine, pool and tenant-scoped transactions.

Async all the way: grpc.aio handlers await SQLAlchemy's async engine over psycopg 3,
so a slow query never holds a thread and a cancelled call cancels its query
(psycopg sends a cancel request when the awaiting task is cancelled). Every
transaction carries the caller's tenant (``SET LOCAL aos.tenant_id``: row-level
security reads it) and a statement timeout no longer than the call's deadline.

Each service connects through one URL and assumes its own role for the whole
session (libpq ``options=-c role=...``), so the privileges a service holds are
the role's, not the login's: overview and logs sessions are also read-only.
"""
from __future__ import annotations

import contextlib
import contextvars
import time
from typing import AsyncIterator

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

ROLES = {
    "overview": "aos_overview",
    "logs": "aos_logs",
    "export": "aos_export",
    "producer": "aos_producer",
}
READ_ONLY = frozenset({"overview", "logs"})

# Absolute time.monotonic() by which the current call must answer; set by the
# server's call wrapper from the gRPC deadline, read when a transaction opens.
call_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("call_deadline", default=None)


def sync_url(url: str) -> str:
    """The SQLAlchemy URL for psycopg 3 (``postgresql://`` → ``postgresql+psycopg://``)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql":
        raise ValueError(f"DATABASE_URL must be a postgresql:// URL, got {parsed.drivername!r}")
    return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)


class Database:
    """One pool per service process, every session in the service's role."""

    def __init__(self, url: str, *, service: str, pool_size: int = 10, pool_timeout_s: float = 5,
                 statement_timeout_ms: int = 30000, connect_timeout_s: int = 3) -> None:
        role = ROLES[service]
        options = f"-c role={role}"
        if service in READ_ONLY:
            options += " -c default_transaction_read_only=on"
        self.service = service
        self.statement_timeout_ms = statement_timeout_ms
        self.engine: AsyncEngine = create_async_engine(
            sync_url(url),
            pool_size=pool_size,
            max_overflow=0,
            pool_timeout=pool_timeout_s,
            pool_recycle=1800,
            connect_args={"options": options, "connect_timeout": connect_timeout_s,
                          "application_name": f"aos-{service}"},
        )

    def _timeout_ms(self) -> int:
        deadline = call_deadline.get()
        if deadline is None:
            return self.statement_timeout_ms
        remaining = int((deadline - time.monotonic()) * 1000)
        return max(1, min(self.statement_timeout_ms, remaining))

    @contextlib.asynccontextmanager
    async def transaction(self, tenant_id: str | None) -> AsyncIterator[AsyncConnection]:
        """A transaction scoped to ``tenant_id`` (None: no tenant, sees no tenant rows)."""
        async with self.engine.begin() as conn:
            await conn.execute(
                text("SELECT set_config('aos.tenant_id', :tenant, true), "
                     "set_config('statement_timeout', :timeout, true)"),
                {"tenant": tenant_id or "", "timeout": str(self._timeout_ms())},
            )
            yield conn

    async def ping(self, timeout_s: float = 2.0) -> None:
        """Raises when the database cannot answer ``SELECT 1`` in time."""
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT set_config('statement_timeout', :t, false)"),
                               {"t": str(int(timeout_s * 1000))})
            await conn.execute(text("SELECT 1"))

    async def close(self) -> None:
        await self.engine.dispose()
