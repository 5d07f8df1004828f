"""Schemathesis over the gateway's own OpenAPI document: generated requests never get a 5xx.

Run through a real uvicorn socket. The services live in this test's event loop, so the
synchronous Hypothesis/Schemathesis loop runs in a worker thread while the loop serves.
Credentials: a token for the gateway tests' own tenant (the demo scenarios loaded
again), so generated CreateExport calls never touch tenant-demo's ledger.
"""
from __future__ import annotations

import asyncio

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error

from tests.gateway.support import WRITER, bearer

pytestmark = pytest.mark.db

EXAMPLES_PER_OPERATION = 12


def fuzz(document: dict, base_url: str, headers: dict[str, str]) -> dict[str, int]:
    """Cases run per operation; raises on the first response that fails the check."""
    schema = schemathesis.openapi.from_dict(document)
    return {op.label: fuzz_operation(op, base_url, headers) for op in (r.ok() for r in schema.get_all_operations())}


def fuzz_operation(operation: schemathesis.APIOperation, base_url: str, headers: dict[str, str]) -> int:
    cases = 0

    @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None, derandomize=True,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy())
    def run(case: schemathesis.Case) -> None:
        nonlocal cases
        cases += 1
        case.call_and_validate(base_url=base_url, headers=headers, checks=[not_a_server_error], timeout=30)

    run()
    return cases


async def test_no_generated_request_gets_a_server_error(served, writer_data, demo):
    async with httpx.AsyncClient(base_url=served) as http:
        document = (await http.get("/openapi.json")).json()
    counts = await asyncio.to_thread(fuzz, document, served, bearer(WRITER))
    print(f"\nschemathesis: {sum(counts.values())} cases over {len(counts)} operations, none answered 5xx")
    assert len(counts) == 48 and all(counts.values()), counts
