"""OpenAPI 3.1, generated from the same route table and descriptors the gateway serves.

Every binding (additional ones included) is an operation ``Service_Method`` (then
``Service_Method2``, ...); path and query parameters come from the request message's
fields, bodies and replies are the messages in the JSON shape the transcoder emits
(proto field names; int64 as strings, accepted as numbers too), errors are
``google.rpc.Status``.
"""
from __future__ import annotations

from typing import Any

from google.api import field_behavior_pb2
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from google.rpc import status_pb2

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


def build(table: RouteTable, *, title: str = "AOS Evidence Plane", version: str = "v1") -> dict[str, Any]:
    schemas = _Schemas()
    paths: dict[str, dict[str, Any]] = {}
    for route in table.routes:
        paths.setdefault(route.template.template, {})[route.http_method.lower()] = _operation(route, schemas)
    status = schemas.message(fields.descriptor(status_pb2.Status))
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
        "tags": [{"name": s.name, "description": s.full_name} for s in services],
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
    operation: dict[str, Any] = {
        "operationId": route.operation_id,
        "tags": [service.name],
        "summary": f"{service.full_name}.{route.method.name}",
        "description": f"Needs the scope `{route.scope}`.",
        "parameters": _path_parameters(route, schemas) + ([] if route.body == "*" else _query_parameters(
            route, request, "", schemas, frozenset({request.full_name}))),
    }
    if route.body:
        operation["requestBody"] = _request_body(route, schemas)
    operation["responses"] = {"200": _download(route) if route.is_download else {
        "description": route.method.output_type.full_name,
        "headers": {"X-Request-Id": _REQUEST_ID},
        "content": {"application/json": {"schema": schemas.message(route.method.output_type)}},
    }, "default": _ERROR}
    return operation


def _path_parameters(route: Route, schemas: _Schemas) -> list[dict[str, Any]]:
    params = []
    for variable in route.template.variables:
        schema = schemas.field(fields.resolve(route.method.input_type, variable)[-1])
        if schema.get("type") == "string":
            schema["minLength"] = 1
        params.append({"name": variable, "in": "path", "required": True, "schema": schema})
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
            param: dict[str, Any] = {"name": name, "in": "query", "schema": schemas.field(field)}
            if _required(field):
                param["required"] = True
            if field.is_repeated:
                param.update(style="form", explode=True)  # ?name=a&name=b
            params.append(param)
        elif fields.is_nested(field) and fields.message_type(field).full_name not in seen:
            nested = fields.message_type(field)
            params += _query_parameters(route, nested, f"{name}.", schemas, seen | {nested.full_name})
    return params


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
        schema: dict[str, Any] = {"type": "object", "properties": {f.name: self.field(f) for f in included},
                                  "additionalProperties": False}
        required = [f.name for f in included if _required(f)]
        if required:
            schema["required"] = required
        return schema

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
            self.components[enum.full_name] = {
                "type": "string", "enum": [v.name for v in enum.values],
                "description": "By name; requests also accept the number."}
        return _ref(enum.full_name)


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}
