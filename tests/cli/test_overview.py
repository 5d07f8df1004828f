"""``overview highlights | costs | decisions``: the Overview service's answers, as tables and
as JSON, against the demo tenant's data (checked against the same call made directly)."""
from __future__ import annotations

import json

import grpc
import pytest
from google.protobuf import json_format

from aos.overview.v1 import overview_service_pb2 as pb, overview_service_pb2_grpc as pb_grpc
from tests.e2e.support import auth

pytestmark = pytest.mark.db

NOVEMBER = ("--since", "2026-11-01", "--until", "2026-12-01")  # the demo's month (tests/e2e/support.BASE)


async def direct(suite, method: str, request):
    async with grpc.aio.insecure_channel(suite["overview"]) as channel:
        answer = await getattr(pb_grpc.OverviewServiceStub(channel), method)(request, metadata=auth())
    return json_format.MessageToDict(answer, preserving_proto_field_name=True)


async def test_highlights_as_json_is_the_service_answer_and_as_a_table_names_each_domain(cli, suite):
    result = await cli("--json", "overview", "highlights")
    assert result.code == 0, result.err
    doc = json.loads(result.out)
    expected = await direct(suite, "GetHighlights", pb.GetHighlightsRequest())
    doc.pop("computed_at"), expected.pop("computed_at")
    assert doc == expected
    assert doc["domain_counts"], "the demo tenant has records in some domain"
    table = await cli("overview", "highlights")
    assert table.code == 0, table.err
    assert "pulse" in table.out and "active incidents" in table.out
    for domain in doc["domain_counts"]:
        assert domain["domain"] in table.out
    assert doc["pulse"]["status"].removeprefix("PULSE_STATUS_") in table.out
    assert doc["pulse"]["reason"] and doc["pulse"]["reason"] in table.out  # the server's reason, as it is


async def test_costs_of_a_period(cli, suite):
    result = await cli("--json", "overview", "costs", *NOVEMBER)
    assert result.code == 0, result.err
    doc = json.loads(result.out)
    request = pb.GetCostsRequest()
    request.period_start.FromJsonString("2026-11-01T00:00:00Z")
    request.period_end.FromJsonString("2026-12-01T00:00:00Z")
    assert doc == await direct(suite, "GetCosts", request)
    assert doc["period"]["start"] == "2026-11-01T00:00:00Z"
    table = await cli("overview", "costs", *NOVEMBER)
    assert table.code == 0, table.err
    assert "2026-11-01 00:00:00Z" in table.out and "LLM run cost" in table.out
    for limit in doc.get("limits", []):
        assert limit["name"] in table.out


async def test_costs_refuses_a_bad_time_before_calling(cli):
    result = await cli("overview", "costs", "--since", "last tuesday")
    assert result.code == 2 and "--since" in result.err and "ISO 8601" in result.err


async def test_decisions_follow_pages_up_to_the_limit(cli, suite):
    everything = await direct(suite, "ListDecisions", pb.ListDecisionsRequest(page_size=1000))
    total = len(everything.get("decisions", []))
    assert total >= 2, "the demo tenant has pending decisions"
    # --limit 1 stops after one; --limit 0 follows every page (the service's pages are 1000 at most).
    one = json.loads((await cli("--json", "overview", "decisions", "--limit", "1")).out)
    assert [d["entity_id"] for d in one["decisions"]] == [everything["decisions"][0]["entity_id"]]
    assert one["next_page_token"] and int(one["total_size"]) == total
    every = json.loads((await cli("--json", "overview", "decisions", "--limit", "0")).out)
    assert every["decisions"] == everything["decisions"]
    table = await cli("overview", "decisions")
    assert table.code == 0, table.err
    assert f"{total} of {total} pending decisions" in table.out
    assert everything["decisions"][0]["entity_id"] in table.out


async def test_decisions_filter_by_priority_and_refuse_an_unknown_one(cli, suite):
    critical = json.loads((await cli("--json", "overview", "decisions", "--priority", "critical")).out)
    expected = await direct(suite, "ListDecisions", pb.ListDecisionsRequest(
        priority=pb.DECISION_PRIORITY_CRITICAL, page_size=50))
    assert critical.get("decisions", []) == expected.get("decisions", [])
    assert all(d["priority"] == "DECISION_PRIORITY_CRITICAL" for d in critical.get("decisions", []))
    wrong = await cli("overview", "decisions", "--priority", "urgent")
    assert wrong.code == 2 and "--priority" in wrong.err and "CRITICAL" in wrong.err.upper()
