"""``retention`` commands against the suite: policies shown and set, holds placed, listed, released."""
from __future__ import annotations

import json

import pytest

from tests.db.sessions import make_tenant

pytestmark = pytest.mark.db


async def test_policies_set_and_holds_through_the_cli(cli, database_url):
    tenant = make_tenant(database_url)
    shown = await cli("retention", "policies", tenant=tenant)
    assert shown.code == 0, shown.err
    assert "AUDIT_LEDGER" in shown.out and "365 days" in shown.out and "permanent" in shown.out
    result = await cli("--json", "retention", "set", "llm_runs", "--days", "400", "--class", "SOC2",
                       "--tag", "soc2", tenant=tenant)
    assert result.code == 0, result.err
    doc = json.loads(result.out)
    assert doc["changed"] and doc["policy"]["retention_days"] == 400 and doc["policy"]["compliance_tags"] == ["soc2"]
    refused = await cli("retention", "set", "LLM_RUNS", "--days", "30", "--class", "HIPAA", tenant=tenant)
    assert refused.code == 2 and "retention_days" in refused.err
    refused = await cli("retention", "set", "SYSTEM_RECORDS", "--level", "loud", "--days", "3", tenant=tenant)
    assert refused.code == 2 and "--level" in refused.err

    placed = json.loads((await cli("--json", "retention", "hold", "--run", "run-9", "--reason", "matter 7",
                                   tenant=tenant)).out)
    assert placed["scope"] == "LEGAL_HOLD_SCOPE_RUN" and placed["active"]
    listed = await cli("retention", "holds", tenant=tenant)
    assert placed["hold_id"] in listed.out and "run-9" in listed.out
    released = await cli("retention", "release", placed["hold_id"], "--reason", "settled", tenant=tenant)
    assert released.code == 0 and "settled" in released.out
    again = await cli("retention", "release", placed["hold_id"], "--reason", "again", tenant=tenant)
    assert again.code != 0 and "already released" in again.err
    assert json.loads((await cli("--json", "retention", "holds", tenant=tenant)).out).get("holds", []) == []
    every = json.loads((await cli("--json", "retention", "holds", "--all", tenant=tenant)).out)
    assert [h["hold_id"] for h in every["holds"]] == [placed["hold_id"]]
