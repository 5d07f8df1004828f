"""Real servers on port 0, reached through real channels."""
from __future__ import annotations

import pytest

from aos_runtime.config import SERVICES
from aos_runtime.service_main import build_server
from aos_recording import scenarios
from aos_recording.writers import Producer
from tests.e2e.support import BASE, service_modules, settings
from tests.logins import login_url

@pytest.fixture(scope="session")
async def suite(database_url, tmp_path_factory):
    """The three services in this process, each on its own ephemeral port: {name: address}."""
    conf = settings(tmp_path_factory.mktemp("suite"))
    modules = service_modules()
    servers = {name: build_server(name, modules[name].servicers, conf, login_url(database_url, name),
                                      port=0) for name in SERVICES}
    addresses = {}
    for name, server in servers.items():
        addresses[name] = f"127.0.0.1:{await server.start()}"
    yield addresses
    for server in servers.values():
        await server.stop(grace=1)


@pytest.fixture(scope="session")
def demo(database_url):
    """The demo scenarios for both demo tenants, at a fixed base time, in the suite's database."""
    producer = Producer(login_url(database_url, "producer"))
    scenarios.load_demo(producer, base=BASE)
    producer.close()
    return BASE
