"""Helpers shared by the gateway tests: the tenant they write to and their Authorization header."""
from __future__ import annotations

import asyncio
import contextlib

import uvicorn

from tests.e2e.support import DEMO, token

# The tenant the gateway tests write to (exports), with the demo scenarios of its own,
# so tenant-demo's ledger stays as the e2e tests expect it.
WRITER = "tenant-gw"


def bearer(tenant: str = DEMO, **kw) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(tenant, **kw)}"}


class QuietServer(uvicorn.Server):
    """uvicorn on a real socket inside a test: it leaves pytest's own SIGINT handling alone."""

    @contextlib.contextmanager
    def capture_signals(self):
        yield


async def start_uvicorn(config: uvicorn.Config) -> tuple[QuietServer, asyncio.Task, str, int]:
    """A QuietServer serving ``config`` on its socket: the server, its task, host and port
    (stop it with ``server.should_exit = True`` and await the task)."""
    server = QuietServer(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), task.exception()
        await asyncio.sleep(0.01)
    host, port = server.servers[0].sockets[0].getsockname()[:2]
    return server, task, host, port
