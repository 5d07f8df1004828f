"""The gateway over HTTP against the in-process suite and the demo data, with real tokens."""
from __future__ import annotations

import hashlib
from typing import Any

import httpx
import pytest
from openapi_spec_validator import validate

from gateway import create_app
from gateway.backends import SERVICE_BACKENDS, service_descriptor
from gateway.routes import RouteTable
from tests.e2e.support import ACME, DEMO
from tests.gateway.support import WRITER, bearer

pytestmark = pytest.mark.db

SUPPORT, RESEARCH = f"{DEMO}.run-support-103", f"{DEMO}.run-research-7"
WINDOW = {"created_after": "2026-11-01T05:00:00Z", "created_before": "2026-11-01T12:00:00Z"}  # the demo's BASE - 7h


def dig(body: Any, path: str) -> Any:
    """A value by dotted path; '*' maps over a list (and sorts, for set-like comparison)."""
    head, _, rest = path.partition(".")
    if head == "*":
        return sorted((dig(item, rest) if rest else item for item in body), key=repr)
    value = body[int(head)] if isinstance(body, list) else body[head]
    return dig(value, rest) if rest else value


def expect(body: dict, **expected: Any) -> None:
    for path, value in expected.items():
        assert dig(body, path.replace("__", ".")) == value, (path, body)


async def an_entry_id(client: httpx.AsyncClient, tenant: str = DEMO) -> str:
    reply = await client.get("/api/v1/logs/audit", params={"event_type": "AUDIT_EVENT_TYPE_LIMIT_BREACHED"},
                             headers=bearer(tenant))
    return reply.json()["entries"][0]["id"]


# Every read path of SPEC §2 (the export write paths are below), with what the demo data says.
READS: list[tuple[str, dict[str, str], dict[str, Any]]] = [
    ("/api/v1/runtime/overview/highlights", {}, {
        "pulse__status": "PULSE_STATUS_ATTENTION_NEEDED", "pulse__active_incidents": "1",
        "domain_counts__*__domain": ["Activity", "Incidents", "Policies"]}),
    ("/api/v1/runtime/overview/costs", {"period_start": "2026-11-01T00:00:00Z", "period_end": "2026-12-01T00:00:00Z"}, {
        "currency": "USD", "limits__*__limit_id": [f"{DEMO}.lim-support-budget"],
        "violations__breach_count": "1"}),
    ("/api/v1/runtime/overview/costs/history", {"days": "3", "until": "2026-11-01T12:00:00Z"}, {
        "budgets__0__budget__limit_id": f"{DEMO}.lim-support-budget",
        "budgets__0__days__*__window_used__amount_cents": ["31000", "46500", "5200"],
        "budgets__0__days__1__status": "BUDGET_STATUS_NEAR_THRESHOLD",  # Oct 31: 93 %, then November's window
        "tenant_daily_spend__2__amount_cents": "6100"}),
    ("/api/v1/runtime/overview/decisions", {}, {
        "decisions__*__entity_id": [f"{DEMO}.inc-latency-2", f"{DEMO}.prop-rate-cap"], "total_size": "2"}),
    ("/api/v1/logs/llm-runs", {}, {"runs__*__run_id": [RESEARCH, SUPPORT], "total_size": "2", "has_more": False}),
    ("/api/v1/logs/llm-runs/{run_id}/envelope", {}, {
        "run__run_id": SUPPORT, "run__provider": "openai", "run__input_tokens": "61000",
        "metadata__trace_id": f"{DEMO}.trace-support-103"}),
    ("/api/v1/logs/llm-runs/{run_id}/trace", {}, {"trace__trace_id": f"{DEMO}.trace-support-103",
                                                   "trace__run_id": SUPPORT}),
    ("/api/v1/logs/llm-runs/{run_id}/governance", {}, {"metadata__run_id": SUPPORT,
                                                        "metadata__policy_ids": ["pol-budget-guard"]}),
    ("/api/v1/logs/llm-runs/{run_id}/replay", {"window_seconds": "60"}, {"metadata__tenant_id": DEMO}),
    ("/api/v1/logs/llm-runs/{run_id}/export", {}, {"run_id": SUPPORT, "exports": []}),
    ("/api/v1/logs/system", {"severity": "SYSTEM_SEVERITY_ERROR"}, {"metadata__tenant_id": DEMO}),
    ("/api/v1/logs/system/{run_id}/snapshot", {}, {
        "run_id": SUPPORT, "basis": "SNAPSHOT_BASIS_PRECEDING_BASELINE", "baseline__summary": "api started (v2.5.0)"}),
    ("/api/v1/logs/system/{run_id}/telemetry", {}, {
        "status": "TELEMETRY_STATUS_NOT_COLLECTED", "available_data": ["events", "snapshot", "replay", "attribution"]}),
    ("/api/v1/logs/system/{run_id}/events", {}, {"records__*__summary": ["run terminated by enforcement"],
                                                  "total_size": "1"}),
    ("/api/v1/logs/system/{run_id}/replay", {}, {
        "replay__events__*__system_record__summary": ["run terminated by enforcement"]}),
    ("/api/v1/logs/system/audit", WINDOW, {"total_size": "8"}),
    ("/api/v1/logs/audit", {}, {"total_size": "15", "metadata__tenant_id": DEMO}),
    ("/api/v1/runtime/logs/audit", {}, {"total_size": "15"}),
    ("/api/v1/logs/audit/{entry_id}", {}, {"entry__event_type": "AUDIT_EVENT_TYPE_LIMIT_BREACHED",
                                           "entry__correlation_id": SUPPORT}),
    ("/api/v1/runtime/logs/audit/{entry_id}", {}, {"entry__event_type": "AUDIT_EVENT_TYPE_LIMIT_BREACHED"}),
    ("/api/v1/logs/audit/identity", {}, {"entries__*__event_type": [
        "AUDIT_EVENT_TYPE_ACTOR_LOGGED_IN", "AUDIT_EVENT_TYPE_ACTOR_LOGGED_OUT", "AUDIT_EVENT_TYPE_API_KEY_CREATED",
        "AUDIT_EVENT_TYPE_API_KEY_REVOKED"]}),
    ("/api/v1/logs/audit/authorization", {}, {"entries__*__event_type": [
        "AUDIT_EVENT_TYPE_ACCESS_DENIED", "AUDIT_EVENT_TYPE_ACCESS_GRANTED"]}),
    ("/api/v1/logs/audit/access", {}, {"entries": [], "total_size": "0"}),
    ("/api/v1/logs/audit/integrity", {}, {"status": "INTEGRITY_STATUS_VERIFIED", "entries_checked": "15",
                                          "anomalies": []}),
    ("/api/v1/logs/audit/exports", {}, {"exports": [], "has_more": False}),
    ("/api/v1/logs/audit/checkpoint", {}, {"checkpoint__tenant_id": DEMO, "checkpoint__seq": "15",
                                           "log_checkpoint__tree_size": "15",
                                           "log_checkpoint__origin": f"aos-evidence.local/ledger/{DEMO}"}),
    ("/api/v1/logs/audit/proofs/inclusion", {"seq": "3"}, {
        "seq": "3", "leaf_index": "2", "tree_size": "15", "metadata__tenant_id": DEMO}),
    ("/api/v1/logs/audit/proofs/consistency", {"first_tree_size": "7"}, {
        "first_tree_size": "7", "second_tree_size": "15"}),
    ("/api/v1/logs/audit/leaves", {"from_seq": "14"}, {
        "leaves__*__seq": ["14", "15"], "total_size": "2", "last_seq": "15", "has_more": False}),
    ("/api/v1/logs/exports", {}, {"exports": [], "total_size": "0"}),
    ("/api/v1/logs/search", {"query": "refunds", "sources": "EVIDENCE_SOURCE_AUDIT"}, {
        "hits__*__audit_entry__action_reason": ["unblock refunds queue"], "hits__*__matched_fields": [["action_reason"]],
        "total_size": "1", "metadata__tenant_id": DEMO}),
    ("/api/v1/logs/exports/signing-keys", {}, {"keys__*__algorithm": ["ed25519"]}),
    ("/api/v1/logs/retention/policies", {}, {"policies__*__retention_class": ["STANDARD"] * 7,
                                             "policies__*__is_default": [True] * 7}),
    ("/api/v1/logs/retention/holds", {}, {"holds": [], "total_size": "0"}),
]
WRITES = {("POST", "/api/v1/logs/exports"), ("POST", "/api/v1/logs/llm-runs/{run_id}/export"),
          ("GET", "/api/v1/logs/exports/{export_id}"), ("GET", "/api/v1/logs/exports/{export_id}:download"),
          ("POST", "/api/v1/logs/exports/{export_id}:verify"), ("POST", "/api/v1/logs/audit/checkpoint:cosign"),
          ("POST", "/api/v1/ingest/audit-events"), ("POST", "/api/v1/ingest/system-records"),
          ("POST", "/api/v1/ingest/runs"), ("POST", "/api/v1/logs/retention/policies"),
          ("POST", "/api/v1/logs/retention/holds"), ("POST", "/api/v1/logs/retention/holds/{hold_id}:release"),
          # through the gateway in tests/e2e/test_erasure.py::test_rest_through_the_gateway
          ("POST", "/api/v1/ingest/erasures")}


def test_these_tests_cover_every_binding():
    table = RouteTable.from_services(service_descriptor(name) for name in SERVICE_BACKENDS)
    assert {(r.http_method, r.template.template) for r in table.routes} == \
        {("GET", template) for template, _, _ in READS} | WRITES


@pytest.mark.parametrize("template,query,expected", READS, ids=[r[0] for r in READS])
async def test_every_read_path(client, template, query, expected):
    path = template.replace("{run_id}", SUPPORT)
    if "{entry_id}" in path:
        path = path.replace("{entry_id}", await an_entry_id(client))
    reply = await client.get(path, params=query)
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"] == "application/json"
    assert reply.headers["x-request-id"]
    expect(reply.json(), **expected)


async def test_ingest_writes_through_the_gateway(client, writer_data):
    """A producer's batch over REST: per-item results, a retry answered as such, a person refused."""
    producer = bearer(WRITER, scopes=("evidence.write",), actor_type="SYSTEM")
    audit = {"events": [{"event_id": "gw-evt-1", "event_type": "AUDIT_EVENT_TYPE_LIMIT_UPDATED",
                         "entity_type": "AUDIT_ENTITY_TYPE_LIMIT", "entity_id": "lim-gw",
                         "occurred_at": "2026-11-01T12:30:00Z", "before_state": {"cents": 10},
                         "after_state": {"cents": 20}}]}
    system = {"records": [{"record_id": "gw-sys-1", "component": "worker", "event_type": "SYSTEM_EVENT_TYPE_DEPLOY",
                           "severity": "SYSTEM_SEVERITY_INFO", "summary": "deployed",
                           "occurred_at": "2026-11-01T12:31:00Z"}]}
    statuses = []
    for path, body in (("/api/v1/ingest/audit-events", audit), ("/api/v1/ingest/system-records", system)):
        for _ in range(2):
            reply = await client.post(path, headers=producer, json=body)
            assert reply.status_code == 200, reply.text
            statuses.append(reply.json()["results"][0]["status"])
    assert statuses == ["ITEM_STATUS_CREATED", "ITEM_STATUS_ALREADY_PRESENT"] * 2
    person = await client.post("/api/v1/ingest/audit-events", headers=bearer(WRITER), json=audit)
    assert person.status_code == 403 and "SYSTEM or AGENT" in person.text
    empty = await client.post("/api/v1/ingest/audit-events", headers=producer, json={"events": []})
    assert empty.status_code == 400 and "events" in empty.text
    # A run with its steps (tests/e2e/test_ingest_runs.py has the rest): recorded, then a retry.
    run = {"run": {"run_id": "gw-run-1", "provider": "openai", "model": "gpt-4o", "status": "LLM_RUN_STATUS_SUCCEEDED",
                   "started_at": "2026-11-01T12:32:00Z", "completed_at": "2026-11-01T12:32:05Z", "cost_cents": "12",
                   "steps": [{"step_type": "STEP_TYPE_LLM_CALL", "timestamp": "2026-11-01T12:32:01Z",
                              "input_data": {"prompt": "hi"}, "output_data": "hello", "tokens": "9"}]}}
    answers = [await client.post("/api/v1/ingest/runs", headers=producer, json=run) for _ in range(2)]
    assert [a.json()["status"] for a in answers] == ["ITEM_STATUS_CREATED", "ITEM_STATUS_ALREADY_PRESENT"]
    assert len(answers[0].json()["step_content_hashes"]) == 1


async def test_retention_writes_through_the_gateway(client, writer_data):
    """A policy set, a hold placed and released over REST (tests/e2e/test_retention.py has the rest)."""
    headers = bearer(WRITER)
    policy = await client.post("/api/v1/logs/retention/policies", headers=headers, json={
        "record_type": "RETENTION_RECORD_TYPE_SYSTEM_RECORDS", "level": "SYSTEM_SEVERITY_WARNING",
        "retention_days": 60, "compliance_tags": ["ops"]})
    assert policy.status_code == 200, policy.text
    assert policy.json()["policy"]["retention_days"] == 60 and policy.json()["policy"]["level"] == "SYSTEM_SEVERITY_WARNING"
    hold = await client.post("/api/v1/logs/retention/holds", headers=headers,
                             json={"scope": "LEGAL_HOLD_SCOPE_INCIDENT", "target_id": "inc-gw", "reason": "audit"})
    assert hold.status_code == 200, hold.text
    hold_id = hold.json()["hold"]["hold_id"]
    released = await client.post(f"/api/v1/logs/retention/holds/{hold_id}:release", headers=headers,
                                 json={"reason": "done"})
    assert released.status_code == 200 and released.json()["hold"].get("active", False) is False, released.text
    again = await client.post(f"/api/v1/logs/retention/holds/{hold_id}:release", headers=headers,
                              json={"reason": "done"})
    assert again.status_code == 400 and "LEGAL_HOLD_RELEASED" in again.text
    reader = await client.post("/api/v1/logs/retention/holds", headers=bearer(WRITER, scopes=("retention.read",)),
                               json={"scope": "LEGAL_HOLD_SCOPE_TENANT", "reason": "x"})
    assert reader.status_code == 403


async def test_create_download_and_verify_an_export(client, writer_data):
    headers, run = bearer(WRITER), f"{WRITER}.run-support-103"
    created = await client.post("/api/v1/logs/exports", headers=headers, json={
        "run_id": run, "bundle_type": "BUNDLE_TYPE_EVIDENCE", "format": "EXPORT_FORMAT_ZIP",
        "idempotency_key": "gw-zip"})
    assert created.status_code == 200, created.text
    export = created.json()["export"]
    assert (export["run_id"], export["scope"], export["format"]) == (run, "EXPORT_SCOPE_LLM_RUN", "EXPORT_FORMAT_ZIP")
    # read-your-writes on a replica: the write's WAL position, for X-AOS-Min-LSN on later reads
    position = created.headers["x-aos-wal-lsn"]
    listed = await client.get("/api/v1/logs/audit", headers={**headers, "X-AOS-Min-LSN": position})
    assert listed.status_code == 200, listed.text  # one database here: the primary holds it already

    fetched = (await client.get(f"/api/v1/logs/exports/{export['export_id']}", headers=headers)).json()["export"]
    assert fetched["checksum"] == export["checksum"] and '"payloadType"' in fetched["dsse_envelope"]

    async with client.stream("GET", f"/api/v1/logs/exports/{export['export_id']}:download", headers=headers) as r:
        assert r.status_code == 200
        digest, size = hashlib.sha256(), 0
        async for chunk in r.aiter_raw():
            digest.update(chunk)
            size += len(chunk)
    assert digest.hexdigest() == export["checksum"] == r.headers["x-checksum-sha256"]
    assert str(size) == export["size_bytes"] == r.headers["x-artifact-size"]
    assert r.headers["content-type"] == "application/zip"
    assert r.headers["content-disposition"].startswith(f'attachment; filename="{export["filename"]}"')

    verified = await client.post(f"/api/v1/logs/exports/{export['export_id']}:verify", headers=headers)
    assert verified.status_code == 200 and verified.json()["valid"] is True
    checks = verified.json()["checks"]
    assert all(c["passed"] for c in checks) and {"checksum", "signature"} <= {c["name"] for c in checks}

    # The additional binding: the run from the path, the rest from the body.
    by_run = await client.post(f"/api/v1/logs/llm-runs/{run}/export", headers=headers,
                               json={"bundleType": "BUNDLE_TYPE_SOC2", "format": "EXPORT_FORMAT_JSON"})
    assert by_run.status_code == 200, by_run.text
    assert (by_run.json()["export"]["run_id"], by_run.json()["export"]["bundle_type"]) == (run, "BUNDLE_TYPE_SOC2")

    listed = (await client.get(f"/api/v1/logs/llm-runs/{run}/export", headers=headers)).json()
    assert {export["export_id"], by_run.json()["export"]["export_id"]} <= {e["export_id"] for e in listed["exports"]}
    # Other tenants see none of it.
    hidden = await client.get(f"/api/v1/logs/exports/{export['export_id']}:download")
    assert hidden.status_code == 404 and hidden.json()["code"] == 5


async def test_a_download_streams_over_a_real_socket(served, client, writer_data):
    headers = bearer(WRITER)
    created = await client.post("/api/v1/logs/exports", headers=headers, json={
        "audit_slice": {"created_before": "2026-11-01T13:00:00Z"}, "bundle_type": "BUNDLE_TYPE_EVIDENCE",
        "format": "EXPORT_FORMAT_PDF", "idempotency_key": "gw-pdf"})
    export = created.json()["export"]
    async with httpx.AsyncClient(base_url=served, headers=headers) as http:
        async with http.stream("GET", f"/api/v1/logs/exports/{export['export_id']}:download") as r:
            assert r.status_code == 200 and r.headers["transfer-encoding"] == "chunked"
            assert "content-length" not in r.headers
            body = await r.aread()
        assert hashlib.sha256(body).hexdigest() == export["checksum"] and body.startswith(b"%PDF")
        assert (await http.get("/healthz")).json() == {"status": "SERVING"}
        highlights = await http.get("/api/v1/runtime/overview/highlights", headers=bearer(DEMO))
        assert highlights.status_code == 200 and highlights.json()["pulse"]["active_incidents"] == "1"


async def test_the_openapi_document(client):
    reply = await client.get("/openapi.json")
    assert reply.status_code == 200
    document = reply.json()
    validate(document)  # OpenAPI 3.1 (openapi-spec-validator picks the version from the document)
    assert document["openapi"] == "3.1.0"
    operations = [op for item in document["paths"].values() for op in item.values()]
    ids = [op["operationId"] for op in operations]
    assert len(ids) == len(set(ids)) == 48  # 47 REST routes and OTLP's POST /v1/traces
    assert document["paths"]["/api/v1/runtime/logs/audit"]["get"]["operationId"] == \
        "AuditLedgerService_ListAuditEntries2"
    both = document["paths"]["/api/v1/logs/llm-runs/{run_id}/export"]
    assert (both["get"]["operationId"], both["post"]["operationId"]) == \
        ("LlmRunsService_GetLlmRunExport", "ExportService_CreateExport2")
    audit = {p["name"]: p for p in document["paths"]["/api/v1/logs/audit"]["get"]["parameters"]}
    assert audit["event_type"]["schema"] == {"$ref": "#/components/schemas/aos.evidence.v1.AuditEventType"}
    assert audit["created_after"]["schema"] == {"type": "string", "format": "date-time"}
    assert "AUDIT_EVENT_TYPE_EVIDENCE_EXPORTED" in \
        document["components"]["schemas"]["aos.evidence.v1.AuditEventType"]["enum"]
    create = document["paths"]["/api/v1/logs/llm-runs/{run_id}/export"]["post"]["requestBody"]
    assert "run_id" not in create["content"]["application/json"]["schema"]["properties"]  # bound by the path
    assert document["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    assert set(document["components"]["schemas"]["google.rpc.Status"]["properties"]) == {"code", "message", "details"}


# --- routing -------------------------------------------------------------------------------

async def test_literal_segments_beat_variables(client):
    identity = (await client.get("/api/v1/logs/audit/identity")).json()
    assert "entries" in identity and "entry" not in identity
    keys = (await client.get("/api/v1/logs/exports/signing-keys")).json()
    assert keys["keys"][0]["algorithm"] == "ed25519"
    checkpoint = (await client.get("/api/v1/logs/audit/checkpoint")).json()
    assert checkpoint["checkpoint"]["tenant_id"] == DEMO
    # And a variable still routes where no literal applies.
    missing = await client.get("/api/v1/logs/exports/exp_does_not_exist")
    assert missing.status_code == 404 and missing.json()["details"][0]["reason"].endswith("NOT_FOUND")


async def test_unknown_path_and_wrong_method(client):
    unknown = await client.get("/api/v1/logs/nothing-here")
    assert unknown.status_code == 404
    assert unknown.json()["code"] == 5 and unknown.json()["details"][0]["reason"] == "ROUTE_NOT_FOUND"
    wrong = await client.delete("/api/v1/logs/audit")
    assert wrong.status_code == 405 and wrong.headers["allow"] == "GET"
    assert wrong.json()["details"][0]["reason"] == "METHOD_NOT_ALLOWED"
    verify_by_get = await client.get("/api/v1/logs/exports/exp_1:verify")
    assert verify_by_get.status_code == 405 and verify_by_get.headers["allow"] == "POST"


# --- requests ------------------------------------------------------------------------------

def bad_request_fields(reply: httpx.Response) -> dict[str, str]:
    assert reply.status_code == 400, reply.text
    body = reply.json()
    assert body["code"] == 3
    info = next(d for d in body["details"] if d["@type"] == "type.googleapis.com/google.rpc.ErrorInfo")
    assert info["domain"] == "aos.evidence"
    bad = next(d for d in body["details"] if d["@type"] == "type.googleapis.com/google.rpc.BadRequest")
    return {v["field"]: v["description"] for v in bad["field_violations"]}


async def test_unknown_query_parameter(client):
    assert bad_request_fields(await client.get("/api/v1/logs/audit", params={"evnt_type": "x"})) == \
        {"evnt_type": "unknown query parameter"}


@pytest.mark.parametrize("query,field", [
    ({"event_type": "AUDIT_EVENT_TYPE_NOPE"}, "event_type"),
    ({"page_size": "ten"}, "page_size"),
    ({"created_after": "yesterday"}, "created_after"),
    ({"has_violation": "maybe"}, "has_violation"),
])
async def test_malformed_values(client, query, field):
    path = "/api/v1/logs/llm-runs" if field == "has_violation" else "/api/v1/logs/audit"
    assert field in bad_request_fields(await client.get(path, params=query))


async def test_urls_that_do_not_decode_to_utf8(client):
    assert "url" in bad_request_fields(await client.get("/api/v1/logs/audit/%FF"))
    assert "url" in bad_request_fields(await client.get("/api/v1/logs/audit?actor_id=%FF"))


async def test_the_services_own_violations_come_through(client):
    fields = bad_request_fields(await client.get("/api/v1/logs/audit", params={"page_size": "-1"}))
    assert set(fields) == {"page_size"}


async def test_enums_by_name_or_number_and_int64_as_digits(client):
    by_name = (await client.get("/api/v1/logs/audit", params={"event_type": "AUDIT_EVENT_TYPE_LIMIT_BREACHED"})).json()
    by_number = (await client.get("/api/v1/logs/audit", params={"event_type": "8"})).json()
    assert by_name["total_size"] == by_number["total_size"] == "1"
    assert by_name["entries"][0]["id"] == by_number["entries"][0]["id"]
    ranged = (await client.get("/api/v1/logs/audit/integrity", params={"from_seq": "5", "toSeq": "9"})).json()
    assert (ranged["verified_from_seq"], ranged["verified_to_seq"]) == ("5", "9")


async def test_bools_and_timestamps_filter(client):
    with_violation = (await client.get("/api/v1/logs/llm-runs", params={"has_violation": "true"})).json()
    without = (await client.get("/api/v1/logs/llm-runs", params={"has_violation": "false"})).json()
    assert (with_violation["total_size"], without["total_size"]) == ("2", "0")
    recent = (await client.get("/api/v1/logs/llm-runs", params={"created_after": "2026-11-01T09:00:00Z"})).json()
    assert [r["run_id"] for r in recent["runs"]] == [SUPPORT]


async def test_bad_bodies(client):
    assert "body" in bad_request_fields(await client.post("/api/v1/logs/exports", content=b"{oops"))
    assert "body" in bad_request_fields(await client.post("/api/v1/logs/exports", json={"bundle_type": 1, "x": 2}))
    assert "page_size" in bad_request_fields(
        await client.post("/api/v1/logs/exports", params={"page_size": "1"}, json={}))


async def test_a_body_over_the_limit(client):
    reply = await client.post("/api/v1/logs/exports", content=b" " * (1024 * 1024 + 1))
    assert reply.status_code == 413 and reply.json()["details"][0]["domain"] == "aos.evidence"


# --- credentials, tenants, deadlines, request ids ---------------------------------------------

async def test_missing_or_bad_credentials(client):
    for headers in ({"Authorization": ""}, {"Authorization": "Bearer not-a-jwt"}):
        reply = await client.get("/api/v1/runtime/overview/highlights", headers=headers)
        assert reply.status_code == 401, reply.text
        info = reply.json()["details"][0]
        assert reply.json()["code"] == 16 and info["domain"] == "aos.evidence" and info["reason"]
    async with httpx.AsyncClient(transport=client._transport, base_url="http://gateway") as anonymous:
        assert (await anonymous.get("/api/v1/logs/audit")).status_code == 401


async def test_missing_scope(client):
    reply = await client.get("/api/v1/logs/audit", headers=bearer(DEMO, scopes=("overview.read",)))
    assert reply.status_code == 403 and reply.json()["details"][0]["reason"] == "SCOPE_MISSING"


async def test_another_tenants_record_is_not_found(client):
    theirs = await an_entry_id(client, ACME)
    assert (await client.get(f"/api/v1/logs/audit/{theirs}", headers=bearer(ACME))).status_code == 200
    reply = await client.get(f"/api/v1/logs/audit/{theirs}")
    assert reply.status_code == 404 and reply.json()["code"] == 5
    assert reply.json()["details"][0]["reason"].endswith("NOT_FOUND")


async def test_grpc_timeout_is_the_deadline(client):
    expired = await client.get("/api/v1/logs/audit", headers={"Grpc-Timeout": "1n"})
    assert expired.status_code == 504, expired.text
    body = expired.json()
    assert body["code"] == 4 and body["details"][0]["reason"] == "DEADLINE_EXCEEDED"
    assert body["details"][0]["domain"] == "aos.evidence"
    assert (await client.get("/api/v1/logs/audit", headers={"Grpc-Timeout": "30S"})).status_code == 200
    assert "Grpc-Timeout" in bad_request_fields(await client.get("/api/v1/logs/audit", headers={"Grpc-Timeout": "1x"}))


async def test_a_bad_min_lsn_is_a_bad_request(client):
    assert "x-aos-min-lsn" in bad_request_fields(await client.get("/api/v1/logs/audit",
                                                                  headers={"X-AOS-Min-LSN": "yesterday"}))
    assert "X-AOS-Min-LSN" in bad_request_fields(await client.get("/api/v1/logs/audit",
                                                                  headers={"X-AOS-Min-LSN": "0/" + "F" * 40}))


async def test_request_ids_pass_through_and_come_back(client):
    reply = await client.get("/api/v1/logs/audit", headers={"X-Request-Id": "trace-me-123"})
    assert reply.headers["x-request-id"] == "trace-me-123"
    failed = await client.get("/api/v1/logs/audit/aud_nope", headers={"X-Request-Id": "trace-me-456"})
    assert failed.status_code in (400, 404) and failed.headers["x-request-id"] == "trace-me-456"
    made = await client.get("/api/v1/logs/audit")
    assert len(made.headers["x-request-id"]) == 32


async def test_an_unreachable_backend_is_503():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"127.0.0.1:{s.getsockname()[1]}"
    app = create_app({name: closed for name in SERVICE_BACKENDS})
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as http:
            reply = await http.get("/api/v1/runtime/overview/highlights", headers={"Grpc-Timeout": "2S"})
    assert reply.status_code == 503, reply.text
    assert reply.json()["code"] == 14 and reply.json()["details"][0]["reason"] == "UNAVAILABLE"


async def test_replay_state_at_a_step_over_rest(client):
    """?at_step=N on the O4 path: the state at the violation step; beyond the last step 400
    (OUT_OF_RANGE, code 11, naming at_step); another tenant's run 404."""
    path = f"/api/v1/logs/llm-runs/{SUPPORT}/replay"
    reply = await client.get(path, params={"at_step": "3"})
    assert reply.status_code == 200, reply.text
    expect(reply.json(), state__step_index=3, state__last_step_index=3, state__steps_so_far=4,
           state__step__is_inflection_point=True, state__policy_steps__0__step_type="STEP_TYPE_POLICY_CHECK",
           replay__center="REPLAY_CENTER_STEP")
    trace = (await client.get(f"/api/v1/logs/llm-runs/{SUPPORT}/trace")).json()
    assert reply.json()["state"]["steps_hash"] == trace["trace"]["content_hash"]
    beyond = await client.get(path, params={"at_step": "9"})
    assert beyond.status_code == 400 and beyond.json()["code"] == 11, beyond.text
    bad = next(d for d in beyond.json()["details"] if d["@type"] == "type.googleapis.com/google.rpc.BadRequest")
    assert [v["field"] for v in bad["field_violations"]] == ["at_step"]
    assert "at_step" in bad_request_fields(await client.get(path, params={"at_step": "-1"}))
    theirs = await client.get(path, params={"at_step": "3"}, headers=bearer(ACME))
    assert theirs.status_code == 404 and theirs.json()["code"] == 5


async def test_list_search_and_order_over_rest(client):
    """?search= and ?order= on a list path: the same hit as /logs/search, both orders, a token
    reused with the other order refused."""
    found = (await client.get("/api/v1/logs/audit", params={"search": "refunds"})).json()
    assert [e["action_reason"] for e in found["entries"]] == ["unblock refunds queue"] and found["total_size"] == "1"
    newest = (await client.get("/api/v1/logs/audit", params={"page_size": "20"})).json()["entries"]
    oldest = (await client.get("/api/v1/logs/audit", params={"page_size": "20",
                                                            "order": "SORT_ORDER_ASCENDING"})).json()["entries"]
    assert [e["id"] for e in oldest] == [e["id"] for e in newest][::-1]
    first = (await client.get("/api/v1/logs/system", params={"page_size": "1", "search": "started"})).json()
    assert first["next_page_token"]
    reused = await client.get("/api/v1/logs/system", params={"page_size": "1", "search": "started",
                                                            "order": "SORT_ORDER_ASCENDING",
                                                            "page_token": first["next_page_token"]})
    assert "page_token" in bad_request_fields(reused)
    assert "search" in bad_request_fields(await client.get("/api/v1/logs/llm-runs", params={"search": "-x"}))


async def test_list_sort_over_rest(client):
    """?sort= on the list paths (and the O1–O3 category paths' ?search=): keyset pages in the sort,
    a token reused with another sort refused, an unknown sort a field violation."""
    runs = (await client.get("/api/v1/logs/llm-runs", params={"sort": "LLM_RUN_SORT_FIELD_TOTAL_COST_CENTS",
                                                             "page_size": "1000"})).json()["runs"]
    costs = [int(r["cost"].get("amount_cents", "0")) for r in runs]
    assert len(costs) > 1 and costs == sorted(costs, reverse=True)
    paged, token = [], ""
    while True:
        page = (await client.get("/api/v1/logs/llm-runs", params={
            "sort": "LLM_RUN_SORT_FIELD_TOTAL_COST_CENTS", "page_size": "2", "page_token": token})).json()
        paged += [r["run_id"] for r in page["runs"]]
        assert int(page["total_size"]) == len(runs)
        token = page.get("next_page_token", "")
        if not token:
            break
    assert paged == [r["run_id"] for r in runs]
    first = (await client.get("/api/v1/logs/audit", params={"sort": "AUDIT_SORT_FIELD_EVENT_TYPE",
                                                           "page_size": "1"})).json()
    reused = await client.get("/api/v1/logs/audit", params={"sort": "AUDIT_SORT_FIELD_ENTITY_TYPE", "page_size": "1",
                                                            "page_token": first["next_page_token"]})
    assert "page_token" in bad_request_fields(reused)
    by_actor = (await client.get("/api/v1/logs/audit", params={"sort": "AUDIT_SORT_FIELD_ACTOR",
                                                              "order": "SORT_ORDER_ASCENDING",
                                                              "page_size": "1000"})).json()["entries"]
    actors = [e.get("actor_id", "") for e in by_actor]
    assert len(set(actors)) > 1 and actors == sorted(actors)
    assert "sort" in bad_request_fields(await client.get("/api/v1/logs/system", params={"sort": "7"}))
    severe = (await client.get("/api/v1/logs/system", params={"sort": "SYSTEM_RECORD_SORT_FIELD_SEVERITY",
                                                             "page_size": "1000"})).json()["records"]
    ranks = {"SYSTEM_SEVERITY_" + n: i for i, n in enumerate(("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"))}
    assert [ranks[r["severity"]] for r in severe] == sorted((ranks[r["severity"]] for r in severe), reverse=True)
    # A run's O3 takes the same query parameters (issue #25): not paged, breaches answered whole.
    governance = f"/api/v1/logs/llm-runs/{SUPPORT}/governance"
    whole = (await client.get(governance)).json()
    found = (await client.get(governance, params={"search": "LimitBreached", "order": "SORT_ORDER_DESCENDING",
                                                  "sort": "AUDIT_SORT_FIELD_ACTOR"})).json()
    assert found["audit_entries"] == whole["audit_entries"] and len(whole["audit_entries"]) == 1
    none = (await client.get(governance, params={"search": "kestrel"})).json()
    assert not none.get("audit_entries") and not none.get("policy_steps")
    assert none["limit_breaches"] == whole["limit_breaches"]
    assert "search" in bad_request_fields(await client.get(governance, params={"search": "-kestrel"}))
    assert "sort" in bad_request_fields(await client.get(governance, params={"sort": "9"}))
    identity = (await client.get("/api/v1/logs/audit/identity", params={"search": "ActorLoggedIn"})).json()
    assert identity["entries"] and all(e["event_type"] == "AUDIT_EVENT_TYPE_ACTOR_LOGGED_IN"
                                       for e in identity["entries"])
