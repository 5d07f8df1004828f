"""The route table: every ``google.api.http`` binding of the services, and matching.

Templates are the subset of the http.proto grammar the contracts use, checked at
startup: literal segments, single-segment variables ``{field.path}`` (or
``{field.path=*}``) and a trailing ``:verb``. Anything else refuses to start
rather than route differently from what the annotation says.

Precedence is deterministic: among the templates that match a path, the one whose
earliest differing segment is a literal wins (``/audit/identity`` beats
``/audit/{entry_id}``; ``/exports/signing-keys`` beats ``/exports/{export_id}``).
Two bindings that would route identically are a startup error, so at most one
template can win.
"""
from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import unquote

from google.api import annotations_pb2, http_pb2
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor

from aos.evidence.v1 import options_pb2
from gateway import fields

HTTP_METHODS = ("get", "put", "post", "delete", "patch")
# Matches kept per route table: paths (ids included) up to this many characters.
CACHED_MATCHES = 4096
MAX_CACHED_PATH = 256


class RouteNotFound(LookupError):
    """No template matches the path, whatever the HTTP method."""


class MethodNotAllowed(LookupError):
    """Templates match the path, but none for this HTTP method."""

    def __init__(self, allowed: Iterable[str]) -> None:
        self.allowed = tuple(sorted(set(allowed)))
        super().__init__(", ".join(self.allowed))


@dataclass(frozen=True)
class Variable:
    """A path segment bound to a request field (a dotted proto-name path)."""
    field: str


Segment = str | Variable


@dataclass(frozen=True)
class PathTemplate:
    template: str
    segments: tuple[Segment, ...]
    verb: str

    @classmethod
    def parse(cls, template: str) -> PathTemplate:
        if not template.startswith("/"):
            raise ValueError(f"path template {template!r} does not start with '/'")
        path, verb = template, ""
        head, _, last = template.rpartition("/")
        if ":" in last and not last.endswith("}"):  # "{export_id}:download"
            last, verb = last.rsplit(":", 1)
            path = f"{head}/{last}"
        segments: list[Segment] = []
        for raw in path[1:].split("/"):
            if raw.startswith("{") and raw.endswith("}"):
                name, _, pattern = raw[1:-1].partition("=")
                if pattern not in ("", "*"):
                    raise ValueError(f"{template!r}: only single-segment variables are supported, not {raw!r}")
                segments.append(Variable(name))
            elif not raw or any(c in raw for c in "{}*"):
                raise ValueError(f"{template!r}: unsupported segment {raw!r}")
            else:
                segments.append(raw)
        return cls(template, tuple(segments), verb)

    @property
    def variables(self) -> tuple[str, ...]:
        return tuple(s.field for s in self.segments if isinstance(s, Variable))

    @property
    def shape(self) -> tuple[str, ...]:
        """What routing sees: literals, '*' for variables, then the verb."""
        return tuple("*" if isinstance(s, Variable) else s for s in self.segments) + (f":{self.verb}",)

    @property
    def precedence(self) -> tuple[bool, ...]:
        """Compared left to right: a literal (True) at the earliest differing segment wins."""
        return tuple(isinstance(s, str) for s in self.segments)

    def match(self, segments: list[str], verb: str) -> dict[str, str] | None:
        if verb != self.verb or len(segments) != len(self.segments):
            return None
        values = {}
        for expected, actual in zip(self.segments, segments, strict=True):
            if isinstance(expected, Variable):
                if not actual:
                    return None
                values[expected.field] = actual
            elif expected != actual:
                return None
        return values


@dataclass(frozen=True)
class Route:
    http_method: str          # "GET", "POST", ...
    template: PathTemplate
    method: MethodDescriptor
    body: str                 # "" (no body), "*" (the whole request) or a top-level field name
    operation_id: str         # Service_Method, with 2, 3 ... for additional bindings

    @property
    def is_download(self) -> bool:
        """A server-streaming RPC whose messages carry ``bytes data``: served as a download."""
        return self.method.server_streaming

    @property
    def scope(self) -> str:
        scope: str = self.method.GetOptions().Extensions[options_pb2.required_scope]  # type: ignore[index]  # protoc's .pyi types an extension as a plain FieldDescriptor
        return scope


def split_path(raw_path: str) -> tuple[list[str], str]:
    """Segments (percent-decoded, split before decoding so %2F stays inside one) and the :verb.

    A ':' in the last segment starts the verb; an id containing ':' is sent as %3A.
    UnicodeDecodeError when a segment does not decode to UTF-8.
    """
    raw_segments = raw_path.lstrip("/").split("/")
    verb = ""
    if ":" in raw_segments[-1]:
        raw_segments[-1], verb = raw_segments[-1].rsplit(":", 1)
    return [unquote(s, errors="strict") for s in raw_segments], unquote(verb, errors="strict")


class RouteTable:
    def __init__(self, routes: Iterable[Route]) -> None:
        self.routes = tuple(routes)
        seen: dict[tuple[str, tuple[str, ...]], Route] = {}
        for route in self.routes:
            _check(route)
            key = (route.http_method, route.template.shape)
            if key in seen:
                raise ValueError(f"{route.http_method} {route.template.template} ({route.method.full_name}) and "
                                 f"{seen[key].template.template} ({seen[key].method.full_name}) route identically")
            seen[key] = route
        self._cached = functools.lru_cache(maxsize=CACHED_MATCHES)(self._match)

    @classmethod
    def from_services(cls, services: Iterable[ServiceDescriptor]) -> RouteTable:
        return cls(route for service in services for method in service.methods for route in _routes(method))

    def match(self, http_method: str, raw_path: str) -> tuple[Route, dict[str, str]]:
        """The route for a request and its path variables; RouteNotFound or MethodNotAllowed otherwise.

        Matches of paths up to MAX_CACHED_PATH characters are kept (an LRU of CACHED_MATCHES: the
        same path matches the same way; refusals are raised, so never kept)."""
        if len(raw_path) > MAX_CACHED_PATH:
            return self._match(http_method, raw_path)
        route, values = self._cached(http_method, raw_path)
        return route, dict(values)

    def _match(self, http_method: str, raw_path: str) -> tuple[Route, dict[str, str]]:
        segments, verb = split_path(raw_path)
        matches = [(route, values) for route in self.routes
                   if (values := route.template.match(segments, verb)) is not None]
        if not matches:
            raise RouteNotFound(raw_path)
        # HEAD is GET without the body (Starlette drops it).
        wanted = "GET" if http_method == "HEAD" else http_method
        candidates = [(route, values) for route, values in matches if route.http_method == wanted]
        if not candidates:
            raise MethodNotAllowed(route.http_method for route, _ in matches)
        return max(candidates, key=lambda c: c[0].template.precedence)


def _routes(method: MethodDescriptor) -> list[Route]:
    rule: http_pb2.HttpRule = method.GetOptions().Extensions[annotations_pb2.http]  # type: ignore[index]  # protoc's .pyi types an extension as a plain FieldDescriptor
    if rule.WhichOneof("pattern") is None:
        if method.client_streaming:  # no transcoding exists for it: the contract gives it no binding
            return []
        raise ValueError(f"{method.full_name} has no google.api.http binding")
    return [_route(method, binding, i) for i, binding in enumerate([rule, *rule.additional_bindings])]


def _route(method: MethodDescriptor, binding: http_pb2.HttpRule, index: int) -> Route:
    kind = binding.WhichOneof("pattern")
    if kind not in HTTP_METHODS:
        raise ValueError(f"{method.full_name}: unsupported http pattern {kind!r}")
    if binding.response_body:
        raise ValueError(f"{method.full_name}: response_body is not supported")
    suffix = str(index + 1) if index else ""
    return Route(kind.upper(), PathTemplate.parse(getattr(binding, kind)), method, binding.body,
                 f"{method.containing_service.name}_{method.name}{suffix}")


def _check(route: Route) -> None:
    """Refuse at startup what the transcoder could not honour."""
    request, name = route.method.input_type, route.method.full_name
    for variable in route.template.variables:
        try:
            path = fields.resolve(request, variable)
        except fields.UnknownField:
            raise ValueError(f"{name}: path variable {variable!r} is not a request field") from None
        if not fields.is_leaf(path[-1]) or path[-1].is_repeated or fields.canonical(path) != variable:
            raise ValueError(f"{name}: path variable {variable!r} must name a singular scalar field")
    if route.body not in ("", "*") and route.body not in request.fields_by_name:
        raise ValueError(f"{name}: body {route.body!r} is not a request field")
    if route.method.client_streaming:
        raise ValueError(f"{name}: client streaming cannot be transcoded")
    if route.method.server_streaming:
        data = route.method.output_type.fields_by_name.get("data")
        if data is None or data.type != data.TYPE_BYTES or data.is_repeated:
            raise ValueError(f"{name}: a server-streaming RPC is served as a download and needs 'bytes data'")
