"""The suite (tests/conftest.py) behind the gateway, with this process's /metrics on an ephemeral port."""
from __future__ import annotations

import httpx
import pytest

from aos_runtime import metrics
from gateway import backend_addresses, create_app
from tests.e2e.support import BASE
from tests.gateway.support import bearer
from tests.logins import load_demo_scenarios
from tests.ops.support import OPS


@pytest.fixture(scope="session")
def metrics_port() -> int:
    """/metrics of this process (the in-process suite's services and gateway share its registry)."""
    server = metrics.serve("127.0.0.1", 0, "test")
    yield server.port
    server.close()


@pytest.fixture(scope="session")
def ops_data(database_url) -> str:
    return load_demo_scenarios(database_url, OPS, base=BASE)


@pytest.fixture(scope="session")
async def gateway_app(suite):
    application = create_app(backend_addresses(suite))
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def rest(gateway_app, ops_data) -> httpx.AsyncClient:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=gateway_app), base_url="http://gateway",
                                 headers=bearer(OPS)) as http:
        yield http
