"""``aos-evidence system list`` against the suite's Logs server and the demo tenant's system records
(9: one CRITICAL, one ERROR, one WARNING, six INFO), with the filters, search, order and sort of
ListSystemRecords."""
from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.asyncio


async def listed(cli, *argv: str) -> dict:
    result = await cli("--json", "system", "list", "--limit", "0", *argv)
    assert result.code == 0, result.err
    return json.loads(result.out)


async def test_system_list_newest_first_and_in_either_order(cli):
    newest = await listed(cli)
    assert int(newest["total_size"]) == len(newest["records"]) == 9
    times = [r["created_at"] for r in newest["records"]]
    assert times == sorted(times, reverse=True)
    oldest = await listed(cli, "--order", "asc")
    assert [r["id"] for r in oldest["records"]] == [r["id"] for r in newest["records"]][::-1]
    table = await cli("system", "list", "--limit", "3")
    assert table.code == 0, table.err
    assert "3 of 9 system records (newest first)" in table.out and "database failover" in table.out


async def test_system_list_by_level_search_and_sorted_by_severity(cli):
    info = await listed(cli, "--level", "info")
    assert len(info["records"]) == 6 and {r["severity"] for r in info["records"]} == {"SYSTEM_SEVERITY_INFO"}
    found = await listed(cli, "--search", "failover")
    assert [r["summary"] for r in found["records"]] == ["database failover"]
    by_level = await listed(cli, "--sort", "severity")
    assert [r["severity"] for r in by_level["records"][:3]] == [
        "SYSTEM_SEVERITY_CRITICAL", "SYSTEM_SEVERITY_ERROR", "SYSTEM_SEVERITY_WARNING"]
    lowest = await listed(cli, "--sort", "severity", "--order", "asc")
    assert [r["id"] for r in lowest["records"]] == [r["id"] for r in by_level["records"]][::-1]
    table = await cli("system", "list", "--sort", "severity", "--level", "CRITICAL")
    assert "1 of 1 system records (by severity desc, then newest first)" in table.out


async def test_system_list_bad_input_exits_2(cli):
    bad = await cli("system", "list", "--level", "LOUD")
    assert bad.code == 2 and "--level: unknown value 'LOUD'" in bad.err
    bad = await cli("system", "list", "--search=!!")
    assert bad.code == 2 and "field search:" in bad.err
    bad = await cli("system", "list", "--sort", "component")
    assert bad.code == 2 and "--sort" in bad.err
    bad = await cli("system", "list", "--limit", "-1")
    assert bad.code == 2 and "--limit" in bad.err
