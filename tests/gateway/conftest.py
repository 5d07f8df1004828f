"""The gateway in front of the in-process suite (``suite`` and ``demo``: tests/conftest.py)."""
from __future__ import annotations

import os

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette

from gateway import backend_addresses, create_app, serving
from tests.e2e.support import BASE
from tests.gateway.support import WRITER, bearer, start_uvicorn
from tests.logins import load_demo_scenarios


def _parser() -> type:
    return serving.protocol(60, 10_000, os.environ.get("AOS_TEST_HTTP_PARSER", serving.DEFAULT_PARSER))


@pytest.fixture(scope="session")
async def app(suite) -> Starlette:
    application = create_app(backend_addresses(suite))
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture(scope="session")
def writer_data(database_url) -> str:
    return load_demo_scenarios(database_url, WRITER, base=BASE)


@pytest.fixture
async def client(app, demo) -> httpx.AsyncClient:
    """In-process HTTP (ASGI) with tenant-demo's token."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway",
                                 headers=bearer()) as http:
        yield http


@pytest.fixture(scope="session")
async def served(app) -> str:
    """The same app behind a real uvicorn socket on an ephemeral port: its base URL. The
    gateway's protocol (gateway.serving: its head limit) over its default parser, httptools;
    AOS_TEST_HTTP_PARSER=h11 runs the socket tests over the other one."""
    server, task, host, port = await start_uvicorn(uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="off",
                                                                  log_config=None, access_log=False,
                                                                  http=_parser()))
    yield f"http://{host}:{port}"
    server.should_exit = True
    await task
