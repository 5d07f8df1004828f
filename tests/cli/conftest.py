"""The CLI driven in-process (``aos_cli.main.main``) against the suite's real servers."""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import pytest

from aos_cli.main import main
from tests.e2e.support import BASE, DEMO, token
from tests.logins import load_demo_scenarios

# Commands that write (exports add EvidenceExported entries to the ledger) act for a tenant
# of their own, so the demo tenants stay as the e2e tests expect them.
WRITER = "tenant-cli"


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str


Run = Callable[..., Awaitable[Result]]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    """No ambient credentials or state: AOS_DATA_DIR points at an empty directory."""
    for name in ("AOS_TOKEN", "AOS_AUTH_JWT_SECRET", "AOS_AUTH_ISSUER", "AOS_AUTH_AUDIENCE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AOS_DATA_DIR", str(tmp_path / "aos-data"))


@pytest.fixture
def run(capsys) -> Run:
    """``await run(*argv)``: main() in a worker thread (the servers share this thread's event loop)."""
    async def invoke(*argv: object) -> Result:
        capsys.readouterr()
        code = await asyncio.to_thread(main, [str(a) for a in argv])
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)
    return invoke


@pytest.fixture(scope="session")
def writer_tenant(database_url) -> str:
    """WRITER with the demo scenarios that are its own (system-wide records would show in every tenant)."""
    return load_demo_scenarios(database_url, WRITER, base=BASE, keep=lambda scenario: not any(
        (action.get("system") or {}).get("system_wide") for action in scenario.actions))


@pytest.fixture
def cli(run, suite, demo) -> Run:
    """``await cli(*argv, tenant=DEMO)``: run with the suite's addresses and a token for ``tenant``."""
    async def invoke(*argv: object, tenant: str | None = DEMO) -> Result:
        options = [f"--{name}={address}" for name, address in suite.items()]
        return await run(*options, *(["--token", token(tenant)] if tenant else []), *argv)
    return invoke
