"""OpenAPI 3.1, generated from the same route table and descriptors the gateway serves.

Every binding (additional ones included) is an operation ``Service_Method`` (then
``Service_Method2``, ...); path and query parameters come from the request message's
fields, bodies and replies are the messages in the JSON shape the transcoder emits
(proto field names; int64 as strings, accepted as numbers too), errors are
``google.rpc.Status``.

Summaries and descriptions are the protos' own comments: protoc's Python modules drop
them, so tools/gen_protos.py also writes gen/aos/descriptor_set.binpb with its
source_code_info, read here once.
"""
from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from google.api import field_behavior_pb2
from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from google.rpc import status_pb2

from aos.evidence.v1 import evidence_pb2
from aos_runtime.pagination import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE
from gateway import fields, transcode
from gateway.routes import Route, RouteTable

F = FieldDescriptor
_INT32 = {"type": "integer", "format": "int32", "minimum": -2 ** 31, "maximum": 2 ** 31 - 1}
_UINT32 = {"type": "integer", "format": "int64", "minimum": 0, "maximum": 2 ** 32 - 1}
# proto3 JSON writes 64-bit integers as strings and reads strings or numbers.
_INT64 = {"type": ["string", "integer"], "format": "int64", "pattern": "^-?[0-9]+$",
          "minimum": -2 ** 63, "maximum": 2 ** 63 - 1}
_UINT64 = {"type": ["string", "integer"], "format": "int64", "pattern": "^[0-9]+$", "minimum": 0,
           "maximum": 2 ** 64 - 1}
_SCALARS: dict[int, dict[str, Any]] = {
    F.TYPE_DOUBLE: {"type": "number", "format": "double"}, F.TYPE_FLOAT: {"type": "number", "format": "float"},
    F.TYPE_INT32: _INT32, F.TYPE_SINT32: _INT32, F.TYPE_SFIXED32: _INT32,
    F.TYPE_UINT32: _UINT32, F.TYPE_FIXED32: _UINT32,
    F.TYPE_INT64: _INT64, F.TYPE_SINT64: _INT64, F.TYPE_SFIXED64: _INT64,
    F.TYPE_UINT64: _UINT64, F.TYPE_FIXED64: _UINT64,
    F.TYPE_BOOL: {"type": "boolean"}, F.TYPE_STRING: {"type": "string"},
    F.TYPE_BYTES: {"type": "string", "contentEncoding": "base64"},
}
_WELL_KNOWN: dict[str, dict[str, Any]] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "pattern": "^-?[0-9]+(\\.[0-9]{1,9})?s$"},
    "google.protobuf.Struct": {"type": "object", "additionalProperties": True},
    "google.protobuf.Value": {},
    "google.protobuf.ListValue": {"type": "array"},
    "google.protobuf.Any": {"type": "object", "properties": {"@type": {"type": "string"}}, "required": ["@type"],
                            "additionalProperties": True},
}
_REQUEST_ID = {"description": "The call's request id (the X-Request-Id sent, or one the gateway made).",
               "schema": {"type": "string"}}
_ERROR = {"$ref": "#/components/responses/Error"}
# Path and query values that exist in the demo data (`make run`), so "Try it out" answers.
_EXAMPLES: dict[str, Any] = {"run_id": "tenant-demo.run-support-103", "page_size": 20, "seq": 1,
                             "window_seconds": 60, "component": "api", "provider": "openai", "model": "gpt-4o",
                             "days": 14}
_PAGE_SIZE = {"type": "integer", "format": "int32", "minimum": 0, "default": 0,
              "description": f"0 or absent: {DEFAULT_PAGE_SIZE}; above {MAX_PAGE_SIZE}: {MAX_PAGE_SIZE}; "
                             "negative: INVALID_ARGUMENT."}

# FileDescriptorProto / DescriptorProto / EnumDescriptorProto / ServiceDescriptorProto field
# numbers, as source_code_info paths spell them.
_FILE_MESSAGE, _FILE_ENUM, _FILE_SERVICE = 4, 5, 6
_MESSAGE_FIELD, _MESSAGE_NESTED, _MESSAGE_ENUM = 2, 3, 4
_ENUM_VALUE, _SERVICE_METHOD = 2, 2


@functools.cache
def comments() -> dict[str, str]:
    """Every commented element of the protos by full name (a field as ``Message.field``, an enum
    value as ``Enum.VALUE``): its leading comment, each line's comment indent removed."""
    # Beside the generated modules (gen/aos/): located through one of them, since "aos" is a
    # namespace package that importlib.resources cannot always resolve.
    data = (Path(evidence_pb2.__file__).parents[2] / "descriptor_set.binpb").read_bytes()
    found: dict[str, str] = {}
    for file in descriptor_pb2.FileDescriptorSet.FromString(data).file:
        text = {tuple(loc.path): _clean(loc.leading_comments) for loc in file.source_code_info.location
                if loc.leading_comments.strip()}
        found.update((name, text[path]) for name, path in _elements(file) if path in text)
    return found


def _elements(file: descriptor_pb2.FileDescriptorProto) -> Iterator[tuple[str, tuple[int, ...]]]:
    package = file.package

    def enum(e: descriptor_pb2.EnumDescriptorProto, name: str, path: tuple[int, ...]) -> Iterator[
            tuple[str, tuple[int, ...]]]:
        yield name, path
        for i, value in enumerate(e.value):
            yield f"{name}.{value.name}", (*path, _ENUM_VALUE, i)

    def message(m: descriptor_pb2.DescriptorProto, name: str, path: tuple[int, ...]) -> Iterator[
            tuple[str, tuple[int, ...]]]:
        yield name, path
        for i, f in enumerate(m.field):
            yield f"{name}.{f.name}", (*path, _MESSAGE_FIELD, i)
        for i, nested in enumerate(m.nested_type):
            yield from message(nested, f"{name}.{nested.name}", (*path, _MESSAGE_NESTED, i))
        for i, e in enumerate(m.enum_type):
            yield from enum(e, f"{name}.{e.name}", (*path, _MESSAGE_ENUM, i))

    for i, m in enumerate(file.message_type):
        yield from message(m, f"{package}.{m.name}", (_FILE_MESSAGE, i))
    for i, e in enumerate(file.enum_type):
        yield from enum(e, f"{package}.{e.name}", (_FILE_ENUM, i))
    for i, service in enumerate(file.service):
        yield f"{package}.{service.name}", (_FILE_SERVICE, i)
        for j, method in enumerate(service.method):
            yield f"{package}.{service.name}.{method.name}", (_FILE_SERVICE, i, _SERVICE_METHOD, j)


def _clean(comment: str) -> str:
    lines = [line[1:] if line.startswith(" ") else line for line in comment.strip("\n").split("\n")]
    return "\n".join(lines).strip()


def _summary(comment: str) -> str:
    """A comment's first sentence, on one line (OpenAPI summaries are short)."""
    first = re.split(r"(?<=[.:;])\s", " ".join(comment.split()), maxsplit=1)[0]
    return first.rstrip(".:;")


def _described(schema: dict[str, Any], *texts: str) -> dict[str, Any]:
    text = "\n\n".join(t for t in texts if t)
    if text:
        schema["description"] = text
    return schema


def build(table: RouteTable, *, title: str = "AOS Evidence Plane", version: str = "v1",
          otlp_path: str | None = None) -> dict[str, Any]:
    """``otlp_path``: where the gateway serves OTLP/HTTP traces (``/v1/traces``), when it does."""
    schemas = _Schemas()
    paths: dict[str, dict[str, Any]] = {}
    for route in table.routes:
        paths.setdefault(route.template.template, {})[route.http_method.lower()] = _operation(route, schemas)
    status = schemas.message(fields.descriptor(status_pb2.Status))
    if otlp_path is not None:
        paths[otlp_path] = {"post": _otlp_traces(status)}
    services = sorted({r.method.containing_service for r in table.routes}, key=lambda s: s.full_name)
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version, "description": (
            "REST transcoding of the gRPC services by their google.api.http annotations. JSON uses the proto "
            "field names (snake_case) and prints fields at their defaults; int64 values are strings. Headers: "
            "`Authorization: Bearer <JWT>` (passed through), `Grpc-Timeout` (e.g. `5S`, `200m`: the call's "
            "deadline), `X-Request-Id` (passed through, echoed), `X-AOS-Min-LSN` (passed through: a read on a "
            "replica waits until it has replayed the write that answered with that `X-AOS-WAL-LSN`, as "
            "CreateExport does). Errors are google.rpc.Status with "
            "google.rpc.ErrorInfo (domain aos.evidence) and, for bad input, google.rpc.BadRequest.")},
        "tags": [{"name": s.name, "description": comments().get(s.full_name, s.full_name)} for s in services]
        + ([{"name": "TraceService", "description": "OTLP/HTTP traces (docs/INGEST.md)"}] if otlp_path else []),
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": dict(sorted(schemas.components.items())),
            "responses": {"Error": {"description": "google.rpc.Status",
                                    "headers": {"X-Request-Id": _REQUEST_ID},
                                    "content": {"application/json": {"schema": status}}}},
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        },
        "security": [{"bearerAuth": []}],
    }


def _operation(route: Route, schemas: _Schemas) -> dict[str, Any]:
    service, request = route.method.containing_service, route.method.input_type
    comment = comments().get(route.method.full_name, "")
    operation: dict[str, Any] = {
        "operationId": route.operation_id,
        "tags": [service.name],
        "summary": _summary(comment) or f"{service.full_name}.{route.method.name}",
        "description": "\n\n".join(filter(None, [comment, f"`{service.full_name}.{route.method.name}`; "
                                                             f"needs the scope `{route.scope}`."])),
        "parameters": _path_parameters(route, schemas) + ([] if route.body == "*" else _query_parameters(
            route, request, "", schemas, frozenset({request.full_name}))),
    }
    if route.body:
        operation["requestBody"] = _request_body(route, schemas)
    operation["responses"] = {"200": _download(route) if route.is_download else {
        "description": comments().get(route.method.output_type.full_name, route.method.output_type.full_name),
        "headers": {"X-Request-Id": _REQUEST_ID},
        "content": {"application/json": {"schema": schemas.message(route.method.output_type)}},
    }, "default": _ERROR}
    return operation


def _otlp_traces(status: dict[str, Any]) -> dict[str, Any]:
    """``POST /v1/traces`` (gateway/otlp_http.py): OTLP/HTTP as the OpenTelemetry specification
    defines it, not a transcoded RPC, so its bodies are described here rather than from a
    google.api.http rule. The JSON schemas are OTLP/JSON's outline (lowerCamelCase names, trace
    and span ids as hex); the full message is opentelemetry-proto's ExportTraceServiceRequest."""
    protobuf = {"schema": {"type": "string", "format": "binary"}}
    any_object = {"type": "object", "additionalProperties": True}
    request = {"type": "object", "properties": {"resourceSpans": {"type": "array", "items": {
        "type": "object", "properties": {"resource": any_object, "schemaUrl": {"type": "string"},
                                         "scopeSpans": {"type": "array", "items": any_object}},
        "additionalProperties": True}}}, "additionalProperties": True,
        "description": "opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest in OTLP/JSON "
                       "(traceId, spanId, parentSpanId as hex strings)."}
    reply = {"type": "object", "properties": {"partialSuccess": {"type": "object", "properties": {
        "rejectedSpans": _INT64, "errorMessage": {"type": "string"}}}},
        "description": "opentelemetry.proto.collector.trace.v1.ExportTraceServiceResponse; partialSuccess "
                       "counts and names the spans refused (docs/INGEST.md has the mapping)."}
    failure = {"description": "google.rpc.Status, in the request's encoding",
               "content": {"application/json": {"schema": status}, "application/x-protobuf": protobuf}}
    retried = {**failure, "headers": {"Retry-After": {"schema": {"type": "string"},
                                                       "description": "Seconds to wait before retrying."}}}
    return {
        "operationId": "TraceService_Export",
        "tags": ["TraceService"],
        "summary": "OTLP/HTTP traces: GenAI spans become LLM runs with their traces",
        "description": "OTLP/HTTP (OpenTelemetry protocol specification) forwarded to the Ingest service's "
                       "`opentelemetry.proto.collector.trace.v1.TraceService/Export`; needs the scope "
                       "`evidence.write` (actor type AGENT or SYSTEM). Body: `application/x-protobuf` or "
                       "`application/json`, optionally `Content-Encoding: gzip`; the answer is in the request's "
                       "encoding. 429 and 503 carry `Retry-After` and are retried by the OTLP exporters.",
        "parameters": [{"name": "Content-Encoding", "in": "header", "required": False,
                        "schema": {"type": "string", "enum": ["gzip", "identity"]}}],
        "requestBody": {"required": True, "content": {"application/x-protobuf": protobuf,
                                                      "application/json": {"schema": request}}},
        "responses": {
            "200": {"description": "Accepted (all, or all but partialSuccess.rejectedSpans)",
                    "content": {"application/x-protobuf": protobuf, "application/json": {"schema": reply}}},
            "400": {**failure, "description": "The body does not parse (not retried)"},
            "401": {**failure, "description": "No or bad credentials"},
            "403": {**failure, "description": "Not scope evidence.write, or not an AGENT/SYSTEM token"},
            "415": {**failure, "description": "Content-Type is neither application/x-protobuf nor application/json"},
            "429": {**retried, "description": "Full (AOS_INGEST_INFLIGHT_BYTES, AOS_MAX_INFLIGHT): retry after"},
            "503": {**retried, "description": "The service or its database is unreachable: retry after"},
            "default": _ERROR,
        },
    }


def _path_parameters(route: Route, schemas: _Schemas) -> list[dict[str, Any]]:
    params = []
    for variable in route.template.variables:
        field = fields.resolve(route.method.input_type, variable)[-1]
        schema = schemas.field(field)
        if schema.get("type") == "string":
            schema["minLength"] = 1
        param = {"name": variable, "in": "path", "required": True, "schema": schema,
                 **_field_doc(field)}
        params.append(param)
    return params


def _query_parameters(route: Route, message: Descriptor, prefix: str, schemas: _Schemas,
                      seen: frozenset[str]) -> list[dict[str, Any]]:
    """Every field a query parameter can set, nested messages by dotted names (cycles cut)."""
    params = []
    for field in message.fields:
        name = prefix + field.name
        if name in route.template.variables or (not prefix and field.name == route.body):
            continue
        if fields.is_leaf(field):
            schema = dict(_PAGE_SIZE) if _is_page_size(field) else schemas.field(field)
            param: dict[str, Any] = {"name": name, "in": "query", "schema": schema, **_field_doc(field)}
            if _required(field):
                param["required"] = True
            if field.is_repeated:
                param.update(style="form", explode=True)  # ?name=a&name=b
            params.append(param)
        elif fields.is_nested(field) and fields.message_type(field).full_name not in seen:
            nested = fields.message_type(field)
            params += _query_parameters(route, nested, f"{name}.", schemas, seen | {nested.full_name})
    return params


def _field_name(field: FieldDescriptor) -> str:
    """``Message.field``, as comments() keys a field."""
    return f"{field.containing_type.full_name}.{field.name}" if field.containing_type else field.full_name


def _is_page_size(field: FieldDescriptor) -> bool:
    return field.name == "page_size" and field.type == F.TYPE_INT32


def _field_doc(field: FieldDescriptor) -> dict[str, Any]:
    """A parameter's description (its proto comment) and an example value that the demo data answers."""
    doc: dict[str, Any] = {}
    if text := comments().get(_field_name(field)):
        doc["description"] = text
    if field.name in _EXAMPLES:
        doc["example"] = _EXAMPLES[field.name]
    return doc


def _request_body(route: Route, schemas: _Schemas) -> dict[str, Any]:
    request = route.method.input_type
    if route.body == "*":
        # The path binds some fields; the body carries the rest.
        bound = {v.split(".")[0] for v in route.template.variables}
        schema = schemas.object(request, exclude=bound) if bound else schemas.message(request)
        required = any(_required(f) and f.name not in bound for f in request.fields)
    else:
        field = request.fields_by_name[route.body]
        schema, required = schemas.field(field), _required(field)
    return {"required": required, "content": {"application/json": {"schema": schema}}}


def _download(route: Route) -> dict[str, Any]:
    return {
        "description": f"The artifact's bytes, streamed from {route.method.output_type.full_name} messages.",
        "headers": {
            "X-Request-Id": _REQUEST_ID,
            "Content-Disposition": {"schema": {"type": "string"}, "description": "attachment; filename=..."},
            transcode.SIZE_HEADER: {"schema": {"type": "string"}, "description": "The artifact's size in bytes."},
            transcode.CHECKSUM_HEADER: {"schema": {"type": "string"}, "description": "Hex SHA-256 of the artifact."},
        },
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }


def _required(field: FieldDescriptor) -> bool:
    behaviors: list[int] = field.GetOptions().Extensions[field_behavior_pb2.field_behavior]  # type: ignore[index]  # protoc's .pyi types an extension as a plain FieldDescriptor
    return field_behavior_pb2.REQUIRED in behaviors


class _Schemas:
    """Component schemas, added the first time a message or enum is referenced."""

    def __init__(self) -> None:
        self.components: dict[str, dict[str, Any]] = {}

    def message(self, message: Descriptor) -> dict[str, Any]:
        if message.full_name in _WELL_KNOWN:
            return dict(_WELL_KNOWN[message.full_name])
        if message.full_name not in self.components:
            self.components[message.full_name] = {}  # reserved first: recursive messages refer to it
            self.components[message.full_name] = self.object(message)
        return _ref(message.full_name)

    def object(self, message: Descriptor, exclude: set[str] | frozenset[str] = frozenset()) -> dict[str, Any]:
        included = [f for f in message.fields if f.name not in exclude]
        schema: dict[str, Any] = {"type": "object",
                                  "properties": {f.name: self._documented(f) for f in included},
                                  "additionalProperties": False}
        _described(schema, comments().get(message.full_name, ""))
        required = [f.name for f in included if _required(f)]
        if required:
            schema["required"] = required
        return schema

    def _documented(self, field: FieldDescriptor) -> dict[str, Any]:
        """A property's schema with its comment (beside a $ref too: OpenAPI 3.1 allows it)."""
        schema = dict(_PAGE_SIZE) if _is_page_size(field) else self.field(field)
        return _described(schema, comments().get(_field_name(field), ""))

    def field(self, field: FieldDescriptor) -> dict[str, Any]:
        if fields.is_map(field):
            value = fields.message_type(field).fields_by_name["value"]
            return {"type": "object", "additionalProperties": self._single(value)}
        schema = self._single(field)
        return {"type": "array", "items": schema} if field.is_repeated else schema

    def _single(self, field: FieldDescriptor) -> dict[str, Any]:
        if field.enum_type is not None:
            return self._enum(field.enum_type)
        if field.message_type is not None:
            return self.message(field.message_type)
        return dict(_SCALARS[field.type])

    def _enum(self, enum: EnumDescriptor) -> dict[str, Any]:
        if enum.full_name not in self.components:
            values = [f"- `{v.name}`: {_summary(text)}" for v in enum.values
                      if (text := comments().get(f"{enum.full_name}.{v.name}"))]
            self.components[enum.full_name] = _described(
                {"type": "string", "enum": [v.name for v in enum.values]},
                comments().get(enum.full_name, ""), "By name; requests also accept the number.", "\n".join(values))
        return _ref(enum.full_name)


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}
