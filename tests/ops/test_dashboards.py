"""deploy/grafana/aos-evidence.json and deploy/prometheus/alerts.yml name only metrics a running suite
exports: each PromQL expression's metric names are looked up on the suite's /metrics after one call
of each kind (a metric with labels has no sample before its first use). The rules file passes
``promtool check rules`` (Debian's prometheus package) and a schema check of its own."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.ops.support import metric_names, names, scrape

pytestmark = pytest.mark.db

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "aos-evidence.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
# Series Prometheus makes itself for every target, never on an endpoint.
SYNTHETIC = {"up"}
ALERTS_REQUIRED = {"error rate": "AosRpcErrorRate", "p99": "AosRpcLatencyP99",
                   "checkpoint age": "AosLedgerCheckpointStale", "NOT_SERVING": "AosServiceNotServing"}


def _rules() -> list[dict]:
    return [rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]


def _dashboard_exprs() -> list[str]:
    return [target["expr"] for panel in json.loads(DASHBOARD.read_text())["panels"] for target in panel["targets"]]


@pytest.fixture
async def exported(rest, metrics_port) -> set[str]:
    """The sample names on /metrics after a list, a refused call, an export and a checkpoint."""
    assert (await rest.get("/api/v1/logs/audit")).status_code == 200
    assert (await rest.get("/api/v1/logs/audit", params={"page_token": "x"})).status_code == 400
    created = await rest.post("/api/v1/logs/exports", json={
        "run_id": "tenant-ops.run-support-103", "bundle_type": "BUNDLE_TYPE_EVIDENCE", "format": "EXPORT_FORMAT_JSON"})
    assert created.status_code == 200, created.text
    assert (await rest.get("/api/v1/logs/audit/checkpoint")).status_code == 200
    return names(scrape(metrics_port))


def test_the_name_finder_finds_names_and_only_names():
    assert metric_names('sum by (le, grpc_method) (rate(a_bucket{grpc_type="unary"}[$__rate_interval])) / b > 0.5') \
        == {"a_bucket", "b"}
    assert metric_names("min(c) > 86400 and on(job) d{x=~\"5..\"} offset 5m") == {"c", "d"}


@pytest.mark.parametrize("where", ["alerts", "dashboard"])
async def test_every_metric_named_exists_on_the_running_suite(exported, where):
    exprs = [rule["expr"] for rule in _rules()] if where == "alerts" else _dashboard_exprs()
    named = set().union(*(metric_names(e) for e in exprs))
    assert len(named) >= 8, named
    missing = sorted(named - exported - SYNTHETIC)
    assert not missing, f"{where} name metrics no running server exports: {missing}"


def test_the_rules_cover_what_operators_page_on():
    rules = {rule["alert"]: rule for rule in _rules()}
    for what, alert in ALERTS_REQUIRED.items():
        assert alert in rules, f"no alert for {what}"
    for name, rule in rules.items():
        assert re.fullmatch(r"Aos[A-Za-z0-9]+", name)
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
        assert re.fullmatch(r"\d+[smh]", rule["for"]), name
        assert rule["labels"]["severity"] in ("page", "ticket"), name
        assert rule["annotations"]["summary"], name


def test_the_dashboard_is_grafana_json_with_one_datasource_variable():
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "aos-evidence" and dashboard["panels"]
    assert [v["name"] for v in dashboard["templating"]["list"]] == ["datasource"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (apt-get install prometheus)")
def test_promtool_accepts_the_rules():
    result = subprocess.run(["promtool", "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in result.stdout
