"""The route table built from the descriptors: templates, precedence, refusals at startup."""
from __future__ import annotations

import pytest
from google.api import http_pb2

from gateway.backends import SERVICE_BACKENDS, service_descriptor
from gateway.routes import (
    MethodNotAllowed,
    PathTemplate,
    Route,
    RouteNotFound,
    RouteTable,
    Variable,
    _route,
    split_path,
)
from tests.gateway import synthetic

TABLE = RouteTable.from_services(service_descriptor(name) for name in SERVICE_BACKENDS)


def test_every_rpc_and_every_additional_binding_is_routed():
    routed = {(r.http_method, r.template.template) for r in TABLE.routes}
    assert len(routed) == len(TABLE.routes) == 47
    assert {("GET", "/api/v1/runtime/logs/audit"), ("GET", "/api/v1/runtime/logs/audit/{entry_id}"),
            ("POST", "/api/v1/logs/llm-runs/{run_id}/export")} <= routed
    methods = {r.method.full_name for r in TABLE.routes}
    # Every RPC but the client streams, which google.api.http cannot transcode (gRPC only).
    assert methods == {f"{s}.{m.name}" for s in SERVICE_BACKENDS for m in service_descriptor(s).methods
                       if not m.client_streaming}
    assert {f"{s}.{m.name}" for s in SERVICE_BACKENDS for m in service_descriptor(s).methods
            if m.client_streaming} == {"aos.ingest.v1.IngestService.RecordRunStream"}
    ids = [r.operation_id for r in TABLE.routes]
    assert len(set(ids)) == len(ids) and "AuditLedgerService_ListAuditEntries2" in ids


def test_template_parsing():
    t = PathTemplate.parse("/api/v1/logs/exports/{export_id}:download")
    assert t.segments == ("api", "v1", "logs", "exports", Variable("export_id")) and t.verb == "download"
    assert PathTemplate.parse("/a/{b.c=*}").segments == ("a", Variable("b.c"))
    for bad in ("a/b", "/a/{b=**}", "/a/*", "/a//b", "/a/{b=c/*}"):
        with pytest.raises(ValueError):
            PathTemplate.parse(bad)


@pytest.mark.parametrize("verb,path,rpc,variables", [
    # Literal segments beat variables: the O1-O5 audit routes are never an entry id.
    ("GET", "/api/v1/logs/audit/identity", "ListIdentityEvents", {}),
    ("GET", "/api/v1/logs/audit/authorization", "ListAuthorizationDecisions", {}),
    ("GET", "/api/v1/logs/audit/access", "ListAccessEvents", {}),
    ("GET", "/api/v1/logs/audit/integrity", "GetIntegrityReport", {}),
    ("GET", "/api/v1/logs/audit/exports", "ListAuditExports", {}),
    ("GET", "/api/v1/logs/audit/checkpoint", "GetLedgerCheckpoint", {}),
    ("GET", "/api/v1/logs/audit/leaves", "ListLedgerLeaves", {}),
    ("GET", "/api/v1/logs/audit/proofs/inclusion", "GetInclusionProof", {}),
    ("GET", "/api/v1/logs/audit/proofs/consistency", "GetConsistencyProof", {}),
    ("GET", "/api/v1/logs/audit/aud_123", "GetAuditEntry", {"entry_id": "aud_123"}),
    ("GET", "/api/v1/runtime/logs/audit/aud_123", "GetAuditEntry", {"entry_id": "aud_123"}),
    ("GET", "/api/v1/logs/exports/signing-keys", "ListSigningKeys", {}),
    ("GET", "/api/v1/logs/exports/exp_1", "GetExport", {"export_id": "exp_1"}),
    ("GET", "/api/v1/logs/exports/exp_1:download", "DownloadExport", {"export_id": "exp_1"}),
    ("POST", "/api/v1/logs/exports/exp_1:verify", "VerifyExport", {"export_id": "exp_1"}),
    ("POST", "/api/v1/logs/llm-runs/run_1/export", "CreateExport", {"run_id": "run_1"}),
    ("GET", "/api/v1/logs/llm-runs/run_1/export", "GetLlmRunExport", {"run_id": "run_1"}),
    ("GET", "/api/v1/logs/system/audit", "GetSystemAttribution", {}),
    ("GET", "/api/v1/logs/system/run_1/snapshot", "GetSystemSnapshot", {"run_id": "run_1"}),
    # Percent-decoding happens per segment, after splitting: %2F stays inside the id; %3A is no verb.
    ("GET", "/api/v1/logs/audit/a%2Fb", "GetAuditEntry", {"entry_id": "a/b"}),
    ("GET", "/api/v1/logs/exports/a%3Adownload", "GetExport", {"export_id": "a:download"}),
    ("GET", "/api/v1/logs/audit/identit%79", "ListIdentityEvents", {}),
])
def test_matching_and_precedence(verb, path, rpc, variables):
    route, values = TABLE.match(verb, path)
    assert (route.method.name, values) == (rpc, variables)


def test_precedence_is_the_earliest_literal_not_the_order_of_the_table():
    routes = list(TABLE.routes)
    for ordering in (routes, routes[::-1]):
        table = RouteTable(ordering)
        assert table.match("GET", "/api/v1/logs/audit/identity")[0].method.name == "ListIdentityEvents"
        assert table.match("GET", "/api/v1/logs/exports/signing-keys")[0].method.name == "ListSigningKeys"


def test_earliest_differing_segment_decides():
    method = synthetic.service().methods_by_name["GetThing"]
    first_literal = Route("GET", PathTemplate.parse("/v1/a/{name}"), method, "", "A")
    second_literal = Route("GET", PathTemplate.parse("/v1/{name}/b"), method, "", "B")
    for routes in ([first_literal, second_literal], [second_literal, first_literal]):
        assert RouteTable(routes).match("GET", "/v1/a/b")[0].operation_id == "A"


def test_no_route_and_wrong_method():
    with pytest.raises(RouteNotFound):
        TABLE.match("GET", "/api/v1/nothing")
    with pytest.raises(RouteNotFound):
        TABLE.match("GET", "/api/v1/logs/audit/")  # an empty segment is no id
    with pytest.raises(RouteNotFound):
        TABLE.match("GET", "/api/v1/logs/exports/exp_1:frobnicate")
    with pytest.raises(MethodNotAllowed) as refused:
        TABLE.match("GET", "/api/v1/logs/exports/exp_1:verify")
    assert refused.value.allowed == ("POST",)
    with pytest.raises(MethodNotAllowed) as refused:
        TABLE.match("DELETE", "/api/v1/logs/llm-runs/run_1/export")
    assert refused.value.allowed == ("GET", "POST")


def test_invalid_utf8_after_decoding():
    with pytest.raises(UnicodeDecodeError):
        split_path("/api/v1/logs/audit/%ff")


def test_ambiguous_bindings_refuse_to_start():
    method = synthetic.service().methods_by_name["GetThing"]
    one = Route("GET", PathTemplate.parse("/v1/things/{name}"), method, "", "A")
    other = Route("GET", PathTemplate.parse("/v1/things/{name=*}"), method, "", "B")
    with pytest.raises(ValueError, match="route identically"):
        RouteTable([one, other])


@pytest.mark.parametrize("template,body,message", [
    ("/v1/things/{nope}", "", "not a request field"),
    ("/v1/things/{filter}", "", "singular scalar"),
    ("/v1/things/{kinds}", "", "singular scalar"),
    ("/v1/things/{filter.tags}", "", "singular scalar"),
    ("/v1/things/{name}", "nope", "body 'nope'"),
])
def test_bindings_the_transcoder_cannot_honour_refuse_to_start(template, body, message):
    method = synthetic.service().methods_by_name["GetThing"]
    with pytest.raises(ValueError, match=message):
        RouteTable([Route("GET", PathTemplate.parse(template), method, body, "X")])


def test_unsupported_rules_refuse_to_start():
    method = synthetic.service().methods_by_name["GetThing"]
    with pytest.raises(ValueError, match="custom"):
        _route(method, http_pb2.HttpRule(custom=http_pb2.CustomHttpPattern(kind="HEAD", path="/x")), 0)
    with pytest.raises(ValueError, match="response_body"):
        _route(method, http_pb2.HttpRule(get="/x", response_body="name"), 0)
