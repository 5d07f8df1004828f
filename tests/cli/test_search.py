"""``search`` and ``runs trace`` paging/--trace against the suite over the demo scenarios."""
from __future__ import annotations

import json

import pytest

from aos_cli import pages
from aos_cli.commands import runs
from tests.e2e.support import DEMO

pytestmark = pytest.mark.db

RUN, TRACE = f"{DEMO}.run-support-103", f"{DEMO}.trace-support-103"


async def test_search_table_names_each_hit_and_its_matched_fields(cli):
    result = await cli("search", "refunds")
    assert result.code == 0, result.err
    assert "1 of 1 hits for 'refunds'" in result.out
    row = next(line for line in result.out.splitlines() if "EmergencyOverrideActivated" in line)
    assert "AUDIT" in row and "action_reason" in row


async def test_search_json_with_sources_and_paging(cli, monkeypatch):
    monkeypatch.setattr(pages, "MAX_PAGE", 2)  # pages of 2: --limit 3 takes two calls
    doc = json.loads((await cli("--json", "search", "verdict", "--source", "trace_step", "--limit", "3")).out)
    # "verdict" is in the outputs of both demo traces' policy steps (2 traces x 1 step)
    assert int(doc["total_size"]) == 2 and len(doc["hits"]) == 2
    assert {h["source"] for h in doc["hits"]} == {"EVIDENCE_SOURCE_TRACE_STEP"}
    assert all(h["matched_fields"] == ["output_data"] for h in doc["hits"])
    assert {h["metadata"]["tenant_id"] for h in doc["hits"]} == {DEMO}


async def test_search_bad_query_exits_2_with_the_field_violation(cli):
    result = await cli("search", "--", "-refunds")  # `--`: a query that starts with - is not an option
    assert result.code == 2 and "field query:" in result.err
    result = await cli("search", "refunds", "--source", "nowhere")
    assert result.code == 2 and "--source" in result.err


async def test_runs_trace_reads_every_page_and_finds_a_trace_by_id(cli, monkeypatch):
    monkeypatch.setattr(runs, "MAX_PAGE", 3)  # 4 steps: two calls
    doc = json.loads((await cli("--json", "runs", "trace", "-", "--trace", TRACE)).out)
    assert [int(s.get("step_index", 0)) for s in doc["steps"]] == [0, 1, 2, 3]
    assert doc["trace"]["run_id"] == RUN and doc["total_steps"] == 4 and not doc.get("has_more")
    first = json.loads((await cli("--json", "runs", "trace", RUN, "--limit", "2")).out)
    assert len(first["steps"]) == 2 and first["has_more"]
