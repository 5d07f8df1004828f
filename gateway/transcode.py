"""HTTP ↔ proto: request messages from path, query and body; replies and errors as JSON.

JSON naming: the gateway emits proto field names (snake_case, as SPEC §2 and the
seeds spell the response shapes) and prints fields without presence even at their
default (``[]``, ``false``, ``0``, ``"…_UNSPECIFIED"``), so every response has the
same keys; int64 values are strings, as proto3 JSON says. Requests accept both the
proto names and the lowerCamelCase JSON names, as proto3 JSON parsers must.
"""
from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote

import grpc
from google.protobuf import json_format, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from aos_runtime import auth, errors
from aos_runtime.headers import MIN_WAL_POSITION_HEADER
from gateway import fields
from gateway.routes import Route

# gRPC status → HTTP status (google/rpc/code.proto's documented mapping).
HTTP_STATUS: Mapping[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.INVALID_ARGUMENT: 400, grpc.StatusCode.FAILED_PRECONDITION: 400, grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409, grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500, grpc.StatusCode.INTERNAL: 500, grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}
_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}

# Grpc-Timeout: up to 8 digits and a unit (gRPC over HTTP/2, "Timeout").
_TIMEOUT = re.compile(r"([0-9]{1,8})([HMSmun])")
_UNIT_SECONDS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}
# The longest deadline the gateway passes on (a day; no call of the suite runs near it): longer
# Grpc-Timeout values (up to 99999999H) mean "no hurry" and are clamped to it.
MAX_TIMEOUT_S = 86400.0
# A download's size and checksum (Content-Length is not sent: the body is chunked).
SIZE_HEADER = "X-Artifact-Size"
CHECKSUM_HEADER = "X-Checksum-Sha256"
# What gRPC metadata can carry in an ASCII header.
_METADATA_VALUE = re.compile(r"[\x20-\x7e]*")
# A token is a few hundred bytes. Metadata over the services' 8 KiB limit would be refused by
# gRPC itself as RESOURCE_EXHAUSTED (a 429, which no retry can fix), and only sometimes.
MAX_AUTHORIZATION_CHARS = 4096


def message_class(descriptor: Descriptor) -> type[Message]:
    return message_factory.GetMessageClass(descriptor)


def build_request(route: Route, variables: Mapping[str, str], query: Iterable[tuple[str, str]],
                  body: bytes) -> Message:
    """The request message; ApiError INVALID_ARGUMENT naming every bad field at once."""
    request = message_class(route.method.input_type)()
    problems = errors.Violations()
    if route.body:
        _merge_body(request, route.body, body, problems)
    elif body.strip():
        problems.add("body", f"{route.http_method} {route.template.template} takes no request body")
    grouped: dict[str, list[str]] = {}
    for name, value in query:
        grouped.setdefault(name, []).append(value)
    for name, values in grouped.items():
        _merge_query(request, route, name, values, problems)
    for name, value in variables.items():
        # Path variables were checked at startup: each names a singular scalar field.
        _merge_values(request, fields.resolve(fields.descriptor(request), name), [value], name, problems)
    problems.raise_if_any()
    return request


# Request messages kept per gateway (gateway.app): calls without a body whose path variables and
# query add up to at most this many characters.
CACHED_REQUESTS = 4096
MAX_CACHED_CHARS = 1024


class Requests:
    """``build_request`` for calls without a body, kept by (route, path variables, query): the same
    URL builds the same message, so it is built once (an LRU of ``max_items``). Refusals are
    raised, hence never kept. A kept message is shared by the calls that send it: it is only
    ever serialized after it is built (gateway.app passes it to the channel and nothing else)."""

    def __init__(self, max_items: int = CACHED_REQUESTS) -> None:
        self._build = functools.lru_cache(maxsize=max_items)(_build_without_body)

    def build(self, route: Route, variables: Mapping[str, str], query: list[tuple[str, str]],
              body: bytes) -> Message:
        if body or (sum(len(k) + len(v) for k, v in query) + sum(len(v) for v in variables.values())
                    > MAX_CACHED_CHARS):
            return build_request(route, variables, query, body)
        return self._build(route, tuple(variables.items()), tuple(query))


def _build_without_body(route: Route, variables: tuple[tuple[str, str], ...],
                        query: tuple[tuple[str, str], ...]) -> Message:
    return build_request(route, dict(variables), query, b"")


def _merge_body(request: Message, body_field: str, body: bytes, problems: errors.Violations) -> None:
    if not body.strip():
        return  # an empty body is the empty message
    try:
        document = json.loads(body)
    except (ValueError, RecursionError) as exc:
        problems.add("body", f"not valid JSON: {exc}")
        return
    if body_field == "*" and not isinstance(document, dict):
        problems.add("body", "must be a JSON object (the request message)")
        return
    document = document if body_field == "*" else {body_field: document}
    # Values of the wrong kind are named by field, in words (fields.expected), before the parser
    # would describe them in its own Python text ("invalid literal for int() with base 10").
    found = len(problems.items)
    _check_body_values(fields.descriptor(request), document, "", problems)
    if len(problems.items) > found:
        return
    try:
        json_format.ParseDict(document, request, ignore_unknown_fields=False)
    except (json_format.ParseError, OverflowError) as exc:  # Overflow: an enum given Infinity or 1e400
        problems.add("body", str(exc))


def _check_body_values(descriptor: Descriptor, document: object, prefix: str, problems: errors.Violations) -> None:
    if not isinstance(document, dict):
        return  # the parser names a message given something else
    for key, value in document.items():
        field = descriptor.fields_by_name.get(key) or descriptor.fields_by_camelcase_name.get(key)
        if field is None or value is None or fields.is_map(field):
            continue  # an unknown field, a null (the default) or a map: the parser's to judge
        name = f"{prefix}{field.name}"
        items = value if field.is_repeated and isinstance(value, list) else [value]
        if fields.is_leaf(field):
            if not all(item is None or fields.json_acceptable(field, item) for item in items):
                problems.add(name, fields.expected(field))
        elif field.message_type is not None and not field.message_type.full_name.startswith("google.protobuf."):
            if not all(isinstance(item, dict) for item in items):
                problems.add(name, "must be a JSON object")
                continue
            for item in items:
                _check_body_values(field.message_type, item, f"{name}.", problems)


def _merge_query(request: Message, route: Route, name: str, values: list[str], problems: errors.Violations) -> None:
    if route.body == "*":
        problems.add(name, "unknown query parameter: this method reads its fields from the JSON body")
        return
    try:
        path = fields.resolve(fields.descriptor(request), name)
    except fields.UnknownField:
        problems.add(name, "unknown query parameter")
        return
    canonical = fields.canonical(path)
    if canonical in route.template.variables or path[0].name == route.body:
        problems.add(canonical, "is bound by the URL path or the body, not a query parameter")
    elif not fields.is_leaf(path[-1]):
        problems.add(canonical, "cannot be set from a query parameter")
    elif len(values) > 1 and not path[-1].is_repeated:
        problems.add(canonical, "given more than once but not repeated")
    else:
        _merge_values(request, path, values, canonical, problems)


def _merge_values(request: Message, path: list[FieldDescriptor], values: list[str], name: str,
                  problems: errors.Violations) -> None:
    """Set one field from URL strings through proto3 JSON parsing (enums by name or number,
    int64 as digits, RFC 3339 timestamps), so URL values mean what they mean in a body."""
    leaf = path[-1]
    # Refused in words that say what the field takes (fields.expected), never the parser's
    # Python text ("invalid literal for int() with base 10").
    if not all(fields.acceptable(leaf, raw) for raw in values):
        problems.add(name, fields.expected(leaf))
        return
    converted = [raw.lower() in ("true", "1") if leaf.type == leaf.TYPE_BOOL else raw for raw in values]
    document: dict[str, object] = {leaf.name: converted if leaf.is_repeated else converted[0]}
    for field in reversed(path[:-1]):
        document = {field.name: document}
    partial = type(request)()
    try:
        json_format.ParseDict(document, partial)
    except (json_format.ParseError, ValueError, OverflowError):
        problems.add(name, fields.expected(leaf))
        return
    request.MergeFrom(partial)


def call_options(headers: Mapping[str, str], request_id: str) -> tuple[tuple[tuple[str, str], ...], float | None]:
    """gRPC metadata (authorization and X-AOS-Min-LSN passed through, the request id) and the
    deadline from Grpc-Timeout."""
    problems = errors.Violations()
    metadata = [("x-request-id", request_id)]
    # Every Authorization header, not the first: two are refused as the services refuse two
    # authorization metadata entries, rather than forwarding one of them.
    values = headers.getlist("authorization") if hasattr(headers, "getlist") else \
        [v for k, v in headers.items() if k.lower() == "authorization"]
    try:
        authorization = auth.single_authorization(values)
    except auth.AuthError as exc:
        raise errors.unauthenticated(exc.reason, str(exc)) from None
    if authorization is not None:
        if not _METADATA_VALUE.fullmatch(authorization):
            problems.add("Authorization", "must be printable ASCII")
        elif len(authorization) > MAX_AUTHORIZATION_CHARS:
            problems.add("Authorization", f"must be at most {MAX_AUTHORIZATION_CHARS} characters")
        else:
            metadata.append(("authorization", authorization))
    # Read-your-writes on a replica: passed through, checked by the service.
    wanted = headers.get(MIN_WAL_POSITION_HEADER)
    if wanted is not None:
        if _METADATA_VALUE.fullmatch(wanted) and len(wanted) <= 32:
            metadata.append((MIN_WAL_POSITION_HEADER, wanted))
        else:
            problems.add("X-AOS-Min-LSN", "must be a WAL position, e.g. 0/16B3748")
    timeout = None
    raw_timeout = headers.get("grpc-timeout")
    if raw_timeout is not None:
        match = _TIMEOUT.fullmatch(raw_timeout)
        if match:
            # Clamped: a value past what gRPC can represent as a deadline (99999999H) became one
            # that had already passed, and the call a 504 it never ran.
            timeout = min(int(match.group(1)) * _UNIT_SECONDS[match.group(2)], MAX_TIMEOUT_S)
        else:
            problems.add("Grpc-Timeout", "must be 1-8 digits and a unit H, M, S, m, u or n (e.g. 5S, 200m)")
    problems.raise_if_any()
    return tuple(metadata), timeout


def to_json(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True,
                                     always_print_fields_with_no_presence=True)


def http_status(code: int) -> int:
    """HTTP status for a google.rpc code number."""
    return HTTP_STATUS.get(_BY_NUMBER.get(code, grpc.StatusCode.UNKNOWN), 500)


def status_from_api_error(error: errors.ApiError) -> status_pb2.Status:
    # Encoded by the services' own ApiError, so the gateway's errors carry the same details as theirs.
    details = dict(error.to_status().trailing_metadata)["grpc-status-details-bin"]
    if not isinstance(details, bytes):  # a -bin trailer is bytes by gRPC's rule
        raise TypeError("grpc-status-details-bin is not bytes")
    return status_pb2.Status.FromString(details)


def status_from_rpc_error(error: grpc.aio.AioRpcError) -> status_pb2.Status:
    """The rich status from grpc-status-details-bin; for failures that carry none (a passed
    deadline, an unreachable backend) an ErrorInfo naming the code, so every error has one."""
    try:
        status: status_pb2.Status | None = rpc_status.from_call(error)  # type: ignore[no-untyped-call]  # grpcio-status is untyped
    except ValueError:  # details that contradict the call's code: trust the code
        status = None
    if status is not None:
        return status
    code = error.code()
    if code == grpc.StatusCode.CANCELLED:
        return _refused_by_core(error)
    status = status_pb2.Status(code=code.value[0], message=error.details() or code.name)
    status.details.add().Pack(error_details_pb2.ErrorInfo(reason=code.name, domain=errors.DOMAIN))
    return status


# The retry delay the gateway gives a call the service's gRPC core refused (no RetryInfo of its own).
CORE_REFUSAL_RETRY_S = 1


def _refused_by_core(error: grpc.aio.AioRpcError) -> status_pb2.Status:
    """A backend call that ended CANCELLED without a status of the service's own. The gateway
    never cancels a unary call itself (a REST client that goes away cancels the task instead:
    no AioRpcError), so this is the service's side: its gRPC core refusing a call beyond the
    calls it holds for the process (AOS_MAX_PENDING_CALLS, AOS_MAX_UNREQUESTED_S; aos_runtime/
    server.py PendingCalls) — a refusal under load, the call did nothing — or, rarely, a
    service stopping past its grace period. Answered as the services' own refusals are:
    RESOURCE_EXHAUSTED SERVER_OVERLOADED with RetryInfo, so REST says 429 with Retry-After."""
    status = status_pb2.Status(
        code=grpc.StatusCode.RESOURCE_EXHAUSTED.value[0],
        message="the service refused the call before taking it (too many calls waiting for it: "
                f"AOS_MAX_PENDING_CALLS) or cancelled it while stopping; retry after {CORE_REFUSAL_RETRY_S} s "
                f"(gRPC: {error.details() or 'CANCELLED'})")
    status.details.add().Pack(error_details_pb2.ErrorInfo(reason="SERVER_OVERLOADED", domain=errors.DOMAIN,
                                                          metadata={"grpc_code": "CANCELLED"}))
    info = error_details_pb2.RetryInfo()
    info.retry_delay.FromSeconds(CORE_REFUSAL_RETRY_S)
    status.details.add().Pack(info)
    return status


def retry_after(status: status_pb2.Status) -> dict[str, str]:
    """``Retry-After`` (whole seconds, rounded up: RFC 9110 §10.2.3) from the status's
    google.rpc.RetryInfo, when it has one (a refusal under load, an exhausted pool)."""
    for detail in status.details:
        info = error_details_pb2.RetryInfo()
        if detail.Unpack(info):  # False for any other kind of detail
            seconds = info.retry_delay.ToNanoseconds() / 1e9
            return {"Retry-After": str(max(1, math.ceil(seconds)))}
    return {}


def status_json(status: status_pb2.Status) -> dict[str, Any]:
    return to_json(status)


def download_headers(first: Message) -> dict[str, str]:
    """Headers of a download from its first message: type, file name, size and SHA-256."""
    headers = {"Content-Type": getattr(first, "content_type", "") or "application/octet-stream"}
    filename = getattr(first, "filename", "")
    if filename:
        fallback = re.sub(r"[^A-Za-z0-9._-]", "_", filename)  # the quoted form must stay plain ASCII
        headers["Content-Disposition"] = \
            f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"
    if size := getattr(first, "size_bytes", 0):
        headers[SIZE_HEADER] = str(size)
    if checksum := getattr(first, "checksum", ""):
        headers[CHECKSUM_HEADER] = checksum
    return headers


def download_chunk(message: object) -> bytes:
    """The bytes a download's message carries: every download RPC streams messages with a ``data`` field."""
    data: bytes = getattr(message, "data", b"")
    return data
