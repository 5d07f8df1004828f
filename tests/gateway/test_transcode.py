"""HTTP → request message and call options, and errors → google.rpc.Status, without servers."""
from __future__ import annotations

from datetime import datetime, timezone

import grpc
import pytest
from google.protobuf import json_format
from google.rpc import error_details_pb2

from aos_runtime import errors
from gateway import transcode
from gateway.backends import SERVICE_BACKENDS, service_descriptor
from gateway.routes import RouteTable
from tests.gateway import synthetic

REAL = RouteTable.from_services(service_descriptor(name) for name in SERVICE_BACKENDS)
SYNTHETIC = RouteTable.from_services([synthetic.service()])


def build(table: RouteTable, verb: str, path: str, query=(), body: bytes = b""):
    route, variables = table.match(verb, path)
    return transcode.build_request(route, variables, query, body)


def violations(exc: pytest.ExceptionInfo) -> dict[str, str]:
    assert isinstance(exc.value, errors.ApiError) and exc.value.code == grpc.StatusCode.INVALID_ARGUMENT
    return dict(exc.value.violations)


def test_query_values_by_type():
    thing = build(SYNTHETIC, "GET", "/v1/things/t%201", [
        ("filter.tags", "a"), ("filter.tags", "b"),           # repeated: the parameter repeated
        ("kinds", "KIND_A"), ("kinds", "2"),                  # enums by name and by number
        ("filter.big", "9007199254740993"),                   # int64 beyond a double, as digits
        ("filter.flag", "true"),
        ("filter.after", "2026-11-01T12:00:00.5+01:00"),      # RFC 3339
        ("child.filter.kind", "KIND_B"),                      # nested by dotted names
    ])
    assert thing.name == "t 1"
    assert list(thing.filter.tags) == ["a", "b"] and list(thing.kinds) == [1, 2]
    assert thing.filter.big == 9007199254740993 and thing.filter.flag is True
    assert thing.filter.after.ToDatetime(timezone.utc) == datetime(2026, 11, 1, 11, 0, 0, 500000, timezone.utc)
    assert thing.child.filter.kind == 2


def test_query_on_a_real_request():
    request = build(REAL, "GET", "/api/v1/logs/audit", [("event_type", "AUDIT_EVENT_TYPE_LIMIT_BREACHED"),
                                                        ("page_size", "10"), ("createdAfter", "2026-01-01T00:00:00Z")])
    assert json_format.MessageToDict(request, preserving_proto_field_name=True) == {
        "event_type": "AUDIT_EVENT_TYPE_LIMIT_BREACHED", "page_size": 10, "created_after": "2026-01-01T00:00:00Z"}
    runs = build(REAL, "GET", "/api/v1/logs/llm-runs", [("has_violation", "false"), ("is_synthetic", "1")])
    assert runs.HasField("has_violation") and not runs.has_violation and runs.is_synthetic


@pytest.mark.parametrize("query,field,says", [
    ([("bogus", "1")], "bogus", "unknown query parameter"),
    ([("filter.nope", "1")], "filter.nope", "unknown query parameter"),
    ([("kinds", "KIND_Z")], "kinds", "must be one of KIND_UNSPECIFIED, KIND_A, KIND_B (or its number)"),
    ([("kinds", "99")], "kinds", "must be one of KIND_UNSPECIFIED, KIND_A, KIND_B (or its number)"),
    ([("filter.big", "1.5")], "filter.big", "must be an integer from -9223372036854775808 to 9223372036854775807"),
    ([("filter.big", "9223372036854775808")], "filter.big", "must be an integer from -9223372036854775808"),
    ([("filter.flag", "maybe")], "filter.flag", "must be true or false"),
    ([("filter.after", "yesterday")], "filter.after", "must be an RFC 3339 timestamp"),
    ([("name", "x")], "name", "bound by the URL path"),
    ([("filter", "x")], "filter", "cannot be set from a query parameter"),
    ([("labels", "x")], "labels", "cannot be set from a query parameter"),
    ([("child.name", "a"), ("child.name", "b")], "child.name", "more than once"),
])
def test_bad_query_values_are_named(query, field, says):
    with pytest.raises(errors.ApiError) as exc:
        build(SYNTHETIC, "GET", "/v1/things/t", query)
    assert says in violations(exc)[field]


def test_every_bad_field_is_reported_at_once():
    with pytest.raises(errors.ApiError) as exc:
        build(REAL, "GET", "/api/v1/logs/audit", [("bogus", "1"), ("event_type", "NOPE"), ("page_size", "x")])
    assert set(violations(exc)) == {"bogus", "event_type", "page_size"}


def test_body_star_is_the_request_and_the_path_wins():
    request = build(REAL, "POST", "/api/v1/logs/llm-runs/run-1/export",
                    body=b'{"incidentId": "inc-1", "bundle_type": "BUNDLE_TYPE_SOC2", "format": 4}')
    assert (request.WhichOneof("subject"), request.run_id) == ("run_id", "run-1")
    assert (request.bundle_type, request.format) == (2, 4)
    assert build(REAL, "POST", "/api/v1/logs/exports/exp-1:verify").export_id == "exp-1"  # no body: {}


@pytest.mark.parametrize("body,says", [
    (b"{not json", "not valid JSON"),
    (b"[1, 2]", "must be a JSON object"),
    (b'{"bundle_type": "BUNDLE_TYPE_EVIDENCE", "surprise": 1}', "no field named \"surprise\""),
    (b'{"run_id": "a", "incident_id": "b"}', "multiple \"subject\" oneof fields"),
    (b'\xff\xfe\x00', "not valid JSON"),
])
def test_bad_bodies(body, says):
    with pytest.raises(errors.ApiError) as exc:
        build(REAL, "POST", "/api/v1/logs/exports", body=body)
    assert says in violations(exc)["body"]


def test_query_parameters_are_refused_where_the_body_carries_every_field():
    with pytest.raises(errors.ApiError) as exc:
        build(REAL, "POST", "/api/v1/logs/exports", [("format", "EXPORT_FORMAT_JSON")], b"{}")
    assert "JSON body" in violations(exc)["format"]


def test_a_body_bound_to_one_field_and_the_query_for_the_rest():
    thing = build(SYNTHETIC, "PATCH", "/v1/things/t", [("kinds", "KIND_A")], b'{"tags": ["x"], "kind": "KIND_B"}')
    assert (thing.name, list(thing.filter.tags), thing.filter.kind, list(thing.kinds)) == ("t", ["x"], 2, [1])
    with pytest.raises(errors.ApiError) as exc:
        build(SYNTHETIC, "PATCH", "/v1/things/t", [("filter.big", "1")], b"{}")
    assert "bound by the URL path or the body" in violations(exc)["filter.big"]


def test_a_body_where_none_is_taken():
    with pytest.raises(errors.ApiError) as exc:
        build(REAL, "GET", "/api/v1/logs/audit", body=b'{"page_size": 1}')
    assert "takes no request body" in violations(exc)["body"]


@pytest.mark.parametrize("value,seconds", [("5S", 5.0), ("200m", 0.2), ("1n", 1e-9), ("2M", 120.0), ("1H", 3600.0),
                                           ("12345678u", 12.345678), ("24H", 86400.0),
                                           # beyond the maximum: clamped to it
                                           ("25H", 86400.0), ("99999999H", 86400.0), ("99999999S", 86400.0)])
def test_grpc_timeout(value, seconds):
    metadata, timeout = transcode.call_options({"grpc-timeout": value, "authorization": "Bearer x"}, "rid-1")
    assert timeout == pytest.approx(seconds)
    assert dict(metadata) == {"authorization": "Bearer x", "x-request-id": "rid-1"}


@pytest.mark.parametrize("headers,field", [({"grpc-timeout": "5s"}, "Grpc-Timeout"),
                                           ({"grpc-timeout": "123456789S"}, "Grpc-Timeout"),
                                           ({"grpc-timeout": "S"}, "Grpc-Timeout"),
                                           ({"authorization": "Bearer \x7f"}, "Authorization")])
def test_bad_headers(headers, field):
    with pytest.raises(errors.ApiError) as exc:
        transcode.call_options(headers, "rid")
    assert field in violations(exc)


def test_no_deadline_and_no_credentials_when_none_sent():
    assert transcode.call_options({}, "rid") == ((("x-request-id", "rid"),), None)


@pytest.mark.parametrize("code,status", [
    ("INVALID_ARGUMENT", 400), ("FAILED_PRECONDITION", 400), ("OUT_OF_RANGE", 400), ("UNAUTHENTICATED", 401),
    ("PERMISSION_DENIED", 403), ("NOT_FOUND", 404), ("ALREADY_EXISTS", 409), ("ABORTED", 409),
    ("RESOURCE_EXHAUSTED", 429), ("CANCELLED", 499), ("UNKNOWN", 500), ("INTERNAL", 500), ("DATA_LOSS", 500),
    ("UNIMPLEMENTED", 501), ("UNAVAILABLE", 503), ("DEADLINE_EXCEEDED", 504), ("OK", 200)])
def test_http_status_mapping(code, status):
    assert transcode.http_status(getattr(grpc.StatusCode, code).value[0]) == status


def test_api_errors_become_google_rpc_status_json():
    error = errors.invalid_argument("page_size", "must not be negative")
    body = transcode.status_json(transcode.status_from_api_error(error))
    assert body["code"] == 3 and body["message"] == "invalid request fields: page_size"
    info, bad = body["details"]
    assert info["@type"] == "type.googleapis.com/google.rpc.ErrorInfo"
    assert (info["reason"], info["domain"]) == ("INVALID_ARGUMENT", "aos.evidence")
    assert bad["@type"] == "type.googleapis.com/google.rpc.BadRequest"
    assert bad["field_violations"][0]["field"] == "page_size"


def test_download_headers():
    message = transcode.message_class(
        REAL.match("GET", "/api/v1/logs/exports/e:download")[0].method.output_type)(
        content_type="application/zip", filename="tenant-demo.exp 1 ü.zip", size_bytes=42, checksum="ab" * 32)
    assert transcode.download_headers(message) == {
        "Content-Type": "application/zip",
        "Content-Disposition": "attachment; filename=\"tenant-demo.exp_1__.zip\"; "
                               "filename*=UTF-8''tenant-demo.exp%201%20%C3%BC.zip",
        transcode.SIZE_HEADER: "42", transcode.CHECKSUM_HEADER: "ab" * 32}


def test_error_info_is_unpacked_by_type():
    status = transcode.status_from_api_error(errors.not_found(errors.Resource.EXPORT, "exp-1"))
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info) and info.reason == "EXPORT_NOT_FOUND"


PYTHON_TEXT = ("invalid literal", "int()", "Failed to parse", "Traceback", "ValueError", "Couldn't parse", "at List")


@pytest.mark.parametrize("query,says", [
    ([("page_size", "abc")], "must be an integer from -2147483648 to 2147483647"),
    ([("page_size", "1.5")], "must be an integer from -2147483648 to 2147483647"),
    ([("page_size", "1e3")], "must be an integer from -2147483648 to 2147483647"),
    ([("page_size", "99999999999")], "must be an integer from -2147483648 to 2147483647"),
    ([("page_size", "")], "must be an integer"),
    ([("event_type", "NOPE")], "must be one of AUDIT_EVENT_TYPE_UNSPECIFIED, "),
    ([("event_type", "99999")], "must be one of AUDIT_EVENT_TYPE_UNSPECIFIED, "),
    ([("created_after", "yesterday")], "must be an RFC 3339 timestamp"),
])
def test_a_bad_query_value_on_a_real_route_names_what_the_field_takes(query, says):
    with pytest.raises(errors.ApiError) as exc:
        build(REAL, "GET", "/api/v1/logs/audit", query)
    (field, description), = exc.value.violations
    assert field == query[0][0] and description.startswith(says)
    assert not any(text in description or text in exc.value.message for text in PYTHON_TEXT)


@pytest.mark.parametrize("body,field,says", [
    (b'{"bundle_type": "NOPE"}', "bundle_type", "must be one of BUNDLE_TYPE_UNSPECIFIED, BUNDLE_TYPE_EVIDENCE"),
    (b'{"bundle_type": 99}', "bundle_type", "must be one of BUNDLE_TYPE_UNSPECIFIED"),
    (b'{"format": true}', "format", "must be one of EXPORT_FORMAT_UNSPECIFIED"),
    (b'{"run_id": 5}', "run_id", "must be a string"),
    (b'{"audit_slice": 5}', "audit_slice", "must be a JSON object"),
    (b'{"audit_slice": {"created_after": "yesterday"}}', "audit_slice.created_after", "must be an RFC 3339"),
    (b'{"auditSlice": {"eventType": "X"}}', "audit_slice.event_type", "must be one of AUDIT_EVENT_TYPE_"),
])
def test_a_bad_body_value_is_named_by_field_in_words(body, field, says):
    with pytest.raises(errors.ApiError) as exc:
        build(REAL, "POST", "/api/v1/logs/exports", body=body)
    found = violations(exc)
    assert found[field].startswith(says), found
    assert not any(text in description for description in found.values() for text in PYTHON_TEXT)


@pytest.mark.parametrize("body,field,says", [
    (b'{"big": "abc"}', "filter.big", "must be an integer from -9223372036854775808"),
    (b'{"big": 1.5}', "filter.big", "must be an integer"),
    (b'{"big": 1e30}', "filter.big", "must be an integer"),
    (b'{"flag": "yes"}', "filter.flag", "must be true or false"),
    (b'{"kind": "KIND_Z"}', "filter.kind", "must be one of KIND_UNSPECIFIED, KIND_A, KIND_B"),
    (b'{"tags": ["a", 2]}', "filter.tags", "must be a string"),
])
def test_a_bad_body_value_is_named_by_field_when_the_body_is_one_field(body, field, says):
    with pytest.raises(errors.ApiError) as exc:
        build(SYNTHETIC, "PATCH", "/v1/things/t", body=body)
    assert violations(exc)[field].startswith(says)
