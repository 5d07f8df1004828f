"""OTLP/HTTP traces: ``POST /v1/traces``, forwarded to the Ingest server's TraceService/Export.

The OTLP/HTTP specification (opentelemetry-proto docs/specification.md, "OTLP/HTTP") says
how: the body is an ExportTraceServiceRequest, binary protobuf (``application/x-protobuf``)
or its JSON form (``application/json``, where trace and span ids are hex strings, not
base64, and unknown fields are ignored), optionally gzip-compressed; the success answer is
an ExportTraceServiceResponse (with ``partial_success`` when spans were refused) in the
request's encoding, HTTP 200; a failure is a ``google.rpc.Status`` in the request's encoding
with the HTTP status of its gRPC code (400 for bad data, which the exporters do not retry;
429, 502, 503, 504 with Retry-After, which they do retry). The caller's Authorization header
is passed on as the services' bearer token.
"""
from __future__ import annotations

import base64
import json
import zlib
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as otlp
from starlette.responses import Response

from aos_runtime import errors
from gateway import transcode

PATH = "/v1/traces"
PROTOBUF = "application/x-protobuf"
JSON = "application/json"
SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
METHOD = otlp.DESCRIPTOR.services_by_name["TraceService"].methods_by_name["Export"]
# OTLP ids that the JSON encoding carries as hex (the specification's exception to proto3 JSON).
_HEX_IDS = ("traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id")


class BadBody(Exception):
    """The body is not an ExportTraceServiceRequest in the declared encoding."""


def content_kind(content_type: str) -> str | None:
    media = content_type.split(";", 1)[0].strip().lower()
    return media if media in (PROTOBUF, JSON) else None


def parse(body: bytes, kind: str, encoding: str, max_bytes: int) -> otlp.ExportTraceServiceRequest:
    """The request from the body (``encoding``: the Content-Encoding, "" or gzip)."""
    if encoding == "gzip":
        body = _gunzip(body, max_bytes)
    elif encoding not in ("", "identity"):
        raise BadBody(f"Content-Encoding {encoding!r} is not supported (gzip or none)")
    request = otlp.ExportTraceServiceRequest()
    if kind == PROTOBUF:
        try:
            request.ParseFromString(body)
        except DecodeError as exc:
            raise BadBody(f"the body is not a protobuf ExportTraceServiceRequest: {exc}") from None
        return request
    try:
        document = json.loads(body)
        json_format.ParseDict(_ids_as_base64(document), request, ignore_unknown_fields=True)
    except (ValueError, json_format.ParseError, TypeError) as exc:
        raise BadBody(f"the body is not an OTLP/JSON ExportTraceServiceRequest: {exc}") from None
    return request


def _gunzip(body: bytes, max_bytes: int) -> bytes:
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(body, max_bytes + 1)
    except zlib.error as exc:
        raise BadBody(f"the gzip body does not decompress: {exc}") from None
    if len(out) > max_bytes:
        raise BadBody(f"the decompressed body is larger than {max_bytes} bytes")
    return out


def _ids_as_base64(value: Any) -> Any:
    """OTLP/JSON's hex trace and span ids as proto3 JSON's base64, everywhere they occur."""
    if isinstance(value, dict):
        return {k: (_hex_to_base64(v, k) if k in _HEX_IDS and isinstance(v, str) else _ids_as_base64(v))
                for k, v in value.items()}
    if isinstance(value, list):
        return [_ids_as_base64(v) for v in value]
    return value


def _hex_to_base64(value: str, key: str) -> str:
    try:
        return base64.b64encode(bytes.fromhex(value)).decode("ascii")
    except ValueError:
        raise BadBody(f"{key} {value[:40]!r} is not a hex id (OTLP/JSON encodes trace and span ids as hex)") from None


def answer(message: Message, kind: str, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    if kind == PROTOBUF:
        return Response(message.SerializeToString(), status_code=status, media_type=PROTOBUF, headers=headers)
    body = json_format.MessageToJson(message, indent=None, preserving_proto_field_name=False)
    return Response(body, status_code=status, media_type=JSON, headers=headers)


def failure(status: status_pb2.Status, kind: str, http_status: int | None = None) -> Response:
    """A google.rpc.Status in the request's encoding, with Retry-After when it says when."""
    code = http_status or transcode.http_status(status.code)
    if kind == PROTOBUF:
        return Response(status.SerializeToString(), status_code=code, media_type=PROTOBUF,
                        headers=transcode.retry_after(status))
    return Response(json.dumps(transcode.status_json(status)), status_code=code, media_type=JSON,
                    headers=transcode.retry_after(status))


def bad_request(message: str, kind: str, http_status: int = 400) -> Response:
    error = errors.ApiError(grpc.StatusCode.INVALID_ARGUMENT, "OTLP_BAD_REQUEST", message)
    return failure(transcode.status_from_api_error(error), kind, http_status)
