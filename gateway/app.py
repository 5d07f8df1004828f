"""The Starlette application: every binding of the route table, forwarded to its backend."""
from __future__ import annotations

import contextlib
import itertools
import logging
import os
import re
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl

import grpc
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import Message
from starlette.applications import Starlette
from starlette.convertors import Convertor, register_url_convertor
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route as HttpRoute
from starlette.types import ASGIApp, Message as AsgiMessage, Receive, Scope, Send

from aos_runtime import channels, errors, metrics, tracing
from aos_runtime.headers import WAL_POSITION_HEADER
from aos_runtime.observability import request_id
from gateway import clients, console, openapi, otlp_http, stored_json, transcode
from gateway.backends import service_descriptor
from gateway.routes import MethodNotAllowed, Route, RouteNotFound, RouteTable

log = logging.getLogger("aos.gateway")

MAX_BODY_BYTES = 1024 * 1024  # request bodies are small JSON messages
# Methods the route table answers (404 / 405 as google.rpc.Status); Starlette answers the rest.
_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
# A caller's X-Request-Id is used when it is a sane token; otherwise the gateway makes one.
_REQUEST_ID = re.compile(r"[\x21-\x7e]{1,128}")


class _AnyPath(Convertor[str]):
    """Starlette's "path" across newlines too: a %0A in a path must reach the route table (and
    the service's id checks), not miss the catch-all route into a bare 404 or a slash redirect."""
    regex = "(?s:.*)"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("any_path", _AnyPath())


class Backends:
    """gRPC channels to the services' servers: ``per_address`` per address, each its own
    TCP connection, used in turn. A service with AOS_WORKERS > 1 has its workers share one
    port and the kernel spreads *connections* over them, so a single channel would send
    every REST call to one worker. An address naming several instances (a list, a DNS
    name) is balanced by each channel itself (aos_runtime.channels). Opened on first use,
    inside the serving event loop: a grpc.aio channel belongs to the loop that creates it.

    A method's callables (one per channel) are made once and kept, as generated stubs keep
    theirs, with the method registered on the channel (``_registered_method``: the C core
    keeps its path instead of interning it per call) — not made again on every call."""

    def __init__(self, addresses: Mapping[str, str], max_message_bytes: int, per_address: int = 1) -> None:
        self._addresses = dict(addresses)
        # A local subchannel pool: channels to one address do not share a connection.
        self._options = channels.channel_options(max_message_bytes) + [("grpc.use_local_subchannel_pool", 1)]
        self._per_address = per_address
        self._channels: dict[str, list[grpc.aio.Channel]] = {}
        self._callables: dict[tuple[str, str], list[Any]] = {}
        self._turn = itertools.count()

    def _pool(self, method: MethodDescriptor) -> list[grpc.aio.Channel]:
        address = self._addresses[method.containing_service.full_name]
        if address not in self._channels:
            self._channels[address] = [grpc.aio.insecure_channel(address, options=self._options,
                                                                 interceptors=tracing.client_interceptors())
                                       for _ in range(self._per_address)]
        return self._channels[address]

    def _next(self, kind: str, method: MethodDescriptor) -> Any:
        """The method's callable of this ``kind`` on the next channel of its address's pool."""
        pool = self._callables.get((kind, method.full_name))
        if pool is None:
            path, request, response = (_rpc_path(method), transcode.message_class(method.input_type),
                                       transcode.message_class(method.output_type))
            pool = self._callables[(kind, method.full_name)] = [
                channel.unary_stream(path, request.SerializeToString, response.FromString,
                                     _registered_method=True)  # type: ignore[call-arg]  # grpc-stubs lack it
                if kind == "stream" else
                channel.unary_unary(path, request.SerializeToString,
                                    response.FromString if kind == "unary" else None,
                                    _registered_method=True)  # type: ignore[call-arg]
                for channel in self._pool(method)]
        return pool[next(self._turn) % len(pool)]

    def unary(self, method: MethodDescriptor) -> grpc.aio.UnaryUnaryMultiCallable[Message, Message]:
        callable_: grpc.aio.UnaryUnaryMultiCallable[Message, Message] = self._next("unary", method)
        return callable_

    def unary_bytes(self, method: MethodDescriptor) -> grpc.aio.UnaryUnaryMultiCallable[Message, bytes]:
        """A call whose answer is handed over as its bytes (gateway.stored_json renders it)."""
        callable_: grpc.aio.UnaryUnaryMultiCallable[Message, bytes] = self._next("bytes", method)
        return callable_

    def stream(self, method: MethodDescriptor) -> grpc.aio.UnaryStreamMultiCallable[Message, Message]:
        callable_: grpc.aio.UnaryStreamMultiCallable[Message, Message] = self._next("stream", method)
        return callable_

    async def close(self) -> None:
        pools, self._channels, self._callables = list(self._channels.values()), {}, {}
        for channel in (c for pool in pools for c in pool):
            await channel.close()


_ROUTE = "aos.route"
_FIXED_ROUTES = frozenset({"/healthz", "/openapi.json"}) | console.PATHS


def _route_label(scope: Scope) -> str:
    """The route template a request matched (a bounded set), never its path: "unmatched" for the rest."""
    route = scope.get(_ROUTE)
    if isinstance(route, str):
        return route
    path = scope.get("path")
    if isinstance(path, str) and path.startswith(console.PREFIX + "/"):
        return console.PREFIX + "/*"  # the console's files: one label, not one per file
    return path if path in _FIXED_ROUTES else "unmatched"


def _rpc_path(method: MethodDescriptor) -> str:
    return f"/{method.containing_service.full_name}/{method.name}"


def new_request_id() -> str:
    """``uuid.uuid4().hex`` (16 bytes of os.urandom, the version 4 and RFC 4122 variant bits set)
    without building a UUID object, a fifth of its cost."""
    n = int.from_bytes(os.urandom(16), "big")
    n = (n & ~(0xC000 << 48) | 0x8000 << 48) & ~(0xF000 << 64) | 4 << 76
    return f"{n:032x}"


class RequestContext:
    """Gives each request an id (the caller's X-Request-Id when usable), echoes it, logs the request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # The raw header lists as Starlette's Headers / MutableHeaders read and extend them (the
        # first X-Request-Id; the response's keys are lower-case bytes), without building either.
        given = next((value.decode("latin-1") for key, value in scope["headers"] if key == b"x-request-id"), "")
        rid = given if _REQUEST_ID.fullmatch(given) else new_request_id()
        request_id.set(rid)
        scope.setdefault("state", {})["request_id"] = rid
        started, status = time.monotonic(), 500

        async def send_with_id(message: AsgiMessage) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = message["headers"] = list(message["headers"])
                if not any(key == b"x-request-id" for key, _ in headers):
                    headers.append((b"x-request-id", rid.encode("latin-1")))
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            log.info("request", extra={"http_method": scope["method"], "path": scope["path"], "status": status,
                                       "ms": round((time.monotonic() - started) * 1000, 2)})
            metrics.observe_http(scope["method"], _route_label(scope), status, time.monotonic() - started)


def create_app(backends: Mapping[str, str], *, max_message_bytes: int = 8 * 1024 * 1024,
               channels_per_backend: int = 1, trusted_proxies: Sequence[str] = ()) -> Starlette:
    """The gateway for the services in ``backends``: {service full name: "host:port"}, with
    ``channels_per_backend`` connections to each (the services' AOS_WORKERS).
    ``trusted_proxies`` (AOS_TRUSTED_PROXIES): whose X-Forwarded-For names the client (gateway.clients)."""
    trusted = clients.networks(trusted_proxies)
    client_metadata = clients.ClientMetadata(trusted)
    requests = transcode.Requests()
    # OTLP's TraceService has no REST rules: it is served as OTLP/HTTP (otlp_traces below).
    table = RouteTable.from_services(service_descriptor(name) for name in backends if name != otlp_http.SERVICE)
    document = openapi.build(table, otlp_path=otlp_http.PATH if otlp_http.SERVICE in backends else None)
    channels = Backends(backends, max_message_bytes, channels_per_backend)
    renderers = {method.full_name: stored_json.Renderer(method) for name in backends
                 for method in service_descriptor(name).methods if stored_json.renders(method)}

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "SERVING"})

    async def openapi_json(request: Request) -> Response:
        return JSONResponse(document)

    async def transcoded(request: Request) -> Response:
        try:
            route, variables = table.match(request.method, _raw_path(request.scope))
            query = _query(request.scope)
        except UnicodeDecodeError:
            raise errors.invalid_argument("url", "percent-decodes to invalid UTF-8") from None
        except RouteNotFound:
            return _error(errors.ApiError(grpc.StatusCode.NOT_FOUND, "ROUTE_NOT_FOUND",
                                          f"no route for {request.method} {request.url.path}"))
        except MethodNotAllowed as exc:
            allowed = ", ".join(exc.allowed)
            return _error(errors.ApiError(grpc.StatusCode.UNIMPLEMENTED, "METHOD_NOT_ALLOWED",
                                          f"{request.method} is not allowed on {request.url.path}; use {allowed}"),
                          http_status=405, headers={"Allow": allowed})
        request.scope[_ROUTE] = route.template.template  # the metrics' and the trace's route label
        tracing.name_route(request.method, route.template.template)
        message = requests.build(route, variables, query, await _body(request))
        metadata, timeout = transcode.call_options(request.headers, request.state.request_id)
        metadata += client_metadata(request.client.host if request.client else None,
                                    request.headers.getlist("x-forwarded-for"), request.headers.get("user-agent"))
        if route.is_download:
            return await download_response(channels.stream(route.method), route, message, metadata, timeout)
        renderer = renderers.get(route.method.full_name)
        if renderer is not None:  # the Logs lists: the same body, items' JSON from the store
            raw = channels.unary_bytes(route.method)(message, metadata=metadata, timeout=timeout)
            try:
                data = await raw
            except grpc.aio.AioRpcError as exc:
                return _rpc_error(exc)
            return Response(renderer.body(data), media_type="application/json",
                            headers={**_echoed_request_id(await raw.trailing_metadata()),
                                     **_wal_position(await raw.initial_metadata())})
        call = channels.unary(route.method)(message, metadata=metadata, timeout=timeout)
        try:
            reply = await call
        except grpc.aio.AioRpcError as exc:
            return _rpc_error(exc)
        return JSONResponse(transcode.to_json(reply), headers={**_echoed_request_id(await call.trailing_metadata()),
                                                               **_wal_position(await call.initial_metadata())})

    async def otlp_traces(request: Request) -> Response:
        """OTLP/HTTP (gateway/otlp_http.py): the request's encoding in, the same encoding out."""
        request.scope[_ROUTE] = otlp_http.PATH
        kind = otlp_http.content_kind(request.headers.get("content-type", ""))
        if kind is None:
            return otlp_http.bad_request(f"Content-Type must be {otlp_http.PROTOBUF} or {otlp_http.JSON}",
                                         otlp_http.JSON, http_status=415)
        try:
            body = await _body(request, max_message_bytes)
            message = otlp_http.parse(body, kind, request.headers.get("content-encoding", "").strip().lower(),
                                      max_message_bytes)
            metadata, timeout = transcode.call_options(request.headers, request.state.request_id)
            metadata += client_metadata(request.client.host if request.client else None,
                                        request.headers.getlist("x-forwarded-for"), request.headers.get("user-agent"))
        except otlp_http.BadBody as exc:
            return otlp_http.bad_request(str(exc), kind)
        except HTTPException as exc:
            return otlp_http.bad_request(str(exc.detail), kind, http_status=exc.status_code)
        except errors.ApiError as exc:
            return otlp_http.failure(transcode.status_from_api_error(exc), kind)
        try:
            reply = await channels.unary(otlp_http.METHOD)(message, metadata=metadata, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            return otlp_http.failure(transcode.status_from_rpc_error(exc), kind)
        return otlp_http.answer(reply, kind)

    otlp_routes = ([HttpRoute(otlp_http.PATH, otlp_traces, methods=["POST"])]
                   if otlp_http.SERVICE in backends else [])

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await channels.close()

    return Starlette(
        routes=[HttpRoute("/healthz", healthz, methods=["GET"]),
                HttpRoute("/openapi.json", openapi_json, methods=["GET"]),
                *otlp_routes,
                *console.routes(),
                HttpRoute("/{path:any_path}", transcoded, methods=_METHODS)],
        middleware=[*tracing.asgi_middleware(), Middleware(RequestContext)],
        exception_handlers={errors.ApiError: _api_error, HTTPException: _http_error, Exception: _internal_error},
        lifespan=lifespan)


async def download_response(stream: grpc.aio.UnaryStreamMultiCallable[Message, Message], route: Route,
                            message: Message, metadata: tuple[tuple[str, str], ...],
                            timeout: float | None) -> Response:  # noqa: ASYNC109 - the call's gRPC deadline, passed on
    """Headers from the first message (so a failed call is still a proper error status), then
    each message's bytes as they arrive: memory stays one chunk, whatever the artifact's size."""
    call = stream(message, metadata=metadata, timeout=timeout)
    try:
        reply = await call.read()
    except grpc.aio.AioRpcError as exc:
        return _rpc_error(exc)
    # grpc types read() as object (a message or EOF); no message at all answers an empty one.
    first = reply if isinstance(reply, Message) else transcode.message_class(route.method.output_type)()

    async def chunks() -> AsyncIterator[bytes]:
        try:
            if data := transcode.download_chunk(first):
                yield data
            while (reply := await call.read()) is not grpc.aio.EOF:
                yield transcode.download_chunk(reply)
        except grpc.aio.AioRpcError as exc:
            log.warning("download failed mid-stream", extra={"code": exc.code().name, "rpc": route.method.full_name})
            raise  # the connection drops: a cut-off body never looks like a complete one
        finally:
            call.cancel()  # a no-op when done; stops the backend when the client went away

    headers = transcode.download_headers(first)
    return StreamingResponse(chunks(), media_type=headers.pop("Content-Type"), headers=headers)


async def _body(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    """The request body, refused (413) as soon as it passes ``limit``."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"request bodies are limited to {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _raw_path(scope: Scope) -> str:
    """The path as sent (still percent-encoded, so an encoded '/' stays inside its segment)."""
    raw: bytes | None = scope.get("raw_path")
    if raw is None:
        path: str = scope["path"]
        return path
    return raw.split(b"?", 1)[0].decode("utf-8")


def _query(scope: Scope) -> list[tuple[str, str]]:
    return parse_qsl(scope["query_string"].decode("utf-8"), keep_blank_values=True, errors="strict")


def _wal_position(metadata: grpc.aio.Metadata | None) -> dict[str, str]:
    """A write's WAL position (Export's CreateExport), for X-AOS-Min-LSN on later reads."""
    lsn = metadata.get(WAL_POSITION_HEADER) if metadata else None
    return {"X-AOS-WAL-LSN": lsn} if isinstance(lsn, str) and lsn else {}  # bytes only for -bin keys


def _echoed_request_id(metadata: grpc.aio.Metadata | None) -> dict[str, str]:
    """The request id the service reports in its trailers (the one sent, unless it chose another)."""
    rid = metadata.get("x-request-id") if metadata else None
    return {"X-Request-Id": rid} if isinstance(rid, str) and rid else {}  # bytes only for -bin keys


def _error(error: errors.ApiError, *, http_status: int | None = None,
           headers: Mapping[str, str] | None = None) -> Response:
    status = transcode.status_from_api_error(error)
    return JSONResponse(transcode.status_json(status), status_code=http_status or transcode.http_status(status.code),
                        headers={**transcode.retry_after(status), **(headers or {})})


def _rpc_error(error: grpc.aio.AioRpcError) -> Response:
    status = transcode.status_from_rpc_error(error)
    return JSONResponse(transcode.status_json(status), status_code=transcode.http_status(status.code),
                        headers={**_echoed_request_id(error.trailing_metadata()), **transcode.retry_after(status)})


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, errors.ApiError)
    return _error(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    """HTTP-level refusals (an unsupported method, a body over the limit) as google.rpc.Status."""
    assert isinstance(exc, HTTPException)
    # Reasons spelled out (not HTTPStatus(...).name): every reason the code can send is a literal
    # that tests/unit/test_errors_reasons.py checks.
    code, reason = {404: (grpc.StatusCode.NOT_FOUND, "NOT_FOUND"),
                    405: (grpc.StatusCode.UNIMPLEMENTED, "METHOD_NOT_ALLOWED"),
                    413: (grpc.StatusCode.RESOURCE_EXHAUSTED, "REQUEST_ENTITY_TOO_LARGE")}.get(
        exc.status_code, (grpc.StatusCode.INVALID_ARGUMENT, "BAD_REQUEST"))
    return _error(errors.ApiError(code, reason, exc.detail), http_status=exc.status_code, headers=exc.headers)


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.error("gateway failure", exc_info=exc)
    return _error(errors.ApiError(grpc.StatusCode.INTERNAL, "INTERNAL",
                                  "internal error; see the gateway log for the request id"))
