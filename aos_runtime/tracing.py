"""OpenTelemetry tracing: gateway → service → database, configured by the standard OTEL_* variables.

Off unless ``OTEL_TRACES_EXPORTER`` names an exporter (``otlp``, ``console``, or any
installed under the SDK's ``opentelemetry_traces_exporter`` entry points); ``none`` or
unset: no tracer, no interceptor, no span is made. Everything else is the SDK's own
reading of the standard variables: ``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``_PROTOCOL`` /
``_HEADERS``, ``OTEL_SERVICE_NAME`` (default ``aos-<process>``), ``OTEL_RESOURCE_ATTRIBUTES``,
``OTEL_TRACES_SAMPLER`` / ``_ARG``, ``OTEL_BSP_*``, ``OTEL_PROPAGATORS`` (default W3C
``traceparent`` + baggage). ``otlp`` follows ``OTEL_EXPORTER_OTLP_PROTOCOL`` (``grpc``, the
default, or ``http/protobuf``).

The spans come from the OpenTelemetry project's instrumentations: the ASGI middleware in
the gateway (continues a caller's ``traceparent``), its gRPC client interceptors (send
``traceparent`` in the call's metadata), the gRPC aio server interceptor in every service
(continues it) and the SQLAlchemy engine instrumentation (a span per statement, a child
of the call's: ``Database.run`` carries the call's context into its pool thread).
Health checks make no spans. Log lines carry ``trace_id`` and ``span_id``
(aos_runtime/observability.py).
"""
from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from opentelemetry import trace

log = logging.getLogger("aos.tracing")

_provider: Any = None  # the SDK TracerProvider once configured; None: tracing is off
_HEALTH = "grpc.health.v1.Health"


def enabled() -> bool:
    return _provider is not None


def configure(process: str, env: Mapping[str, str] | None = None) -> bool:
    """Sets up tracing for this process from OTEL_*; whether it is on. ``process``: the default
    service name (``aos-<process>``) when neither OTEL_SERVICE_NAME nor OTEL_RESOURCE_ATTRIBUTES
    names one."""
    global _provider
    env = os.environ if env is None else env
    names = [n.strip() for n in (env.get("OTEL_TRACES_EXPORTER") or "none").split(",") if n.strip()]
    names = [n for n in names if n != "none"]
    if not names or _provider is not None:
        return _provider is not None
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    attributes = {}
    if not env.get("OTEL_SERVICE_NAME") and "service.name=" not in env.get("OTEL_RESOURCE_ATTRIBUTES", ""):
        attributes[SERVICE_NAME] = f"aos-{process}"
    provider = TracerProvider(resource=Resource.create(attributes))
    for name in names:
        provider.add_span_processor(BatchSpanProcessor(_exporter(name, env)))
    use(provider)
    log.info("tracing", extra={"exporters": names, "service_name": provider.resource.attributes.get(SERVICE_NAME)})
    return True


def _exporter(name: str, env: Mapping[str, str]) -> Any:
    """The exporter OTEL_TRACES_EXPORTER names, as the SDK's auto-configuration resolves it."""
    from opentelemetry.util._importlib_metadata import entry_points

    if name == "otlp" and env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
                                  env.get("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")) == "http/protobuf":
        name = "otlp_proto_http"
    found = list(entry_points(group="opentelemetry_traces_exporter", name=name))
    if not found:
        raise ValueError(f"OTEL_TRACES_EXPORTER names {name!r}, which no installed package provides "
                         "(otlp, otlp_proto_http, console or none)")
    return found[0].load()()


def use(provider: Any) -> None:
    """Traces go to ``provider`` from now on (what configure does; tests pass one with an
    in-memory exporter). Servers, channels and engines built afterwards are instrumented."""
    global _provider
    _provider = provider


def stop() -> None:
    """Flushes and stops the configured provider (at process exit); tracing is off afterwards."""
    global _provider
    provider, _provider = _provider, None
    if provider is not None:
        provider.shutdown()


def tracer(name: str) -> trace.Tracer:
    return trace.get_tracer(name, tracer_provider=_provider) if _provider else trace.NoOpTracer()


# --- the instrumentations, installed only when tracing is on -----------------------------------------

def server_interceptors() -> list[Any]:
    """The gRPC aio server interceptor (health checks excluded), or none."""
    if _provider is None:
        return []
    from opentelemetry.instrumentation.grpc import aio_server_interceptor, filters

    return [aio_server_interceptor(tracer_provider=_provider, filter_=filters.negate(filters.service_name(_HEALTH)))]


def client_interceptors() -> list[Any]:
    """The gRPC aio client interceptors that send ``traceparent`` (health checks excluded), or none."""
    if _provider is None:
        return []
    from opentelemetry.instrumentation.grpc import aio_client_interceptors, filters

    return list(aio_client_interceptors(tracer_provider=_provider,
                                        filter_=filters.negate(filters.service_name(_HEALTH))))


def instrument_engine(engine: Any) -> None:
    """A span per SQL statement of ``engine`` (the SQLAlchemy instrumentation), when tracing is on.

    ``EngineTracer`` is what ``SQLAlchemyInstrumentor().instrument(engine=...)`` installs; called
    directly because the instrumentor instruments once per process, and a test process holds
    several engines."""
    if _provider is None:
        return
    from opentelemetry.instrumentation.sqlalchemy import __name__ as instrumentation
    from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
    from opentelemetry.instrumentation.sqlalchemy.version import __version__
    from opentelemetry.metrics import NoOpMeterProvider

    # Its connection-usage metric goes nowhere: the pool's own gauges are Prometheus's (metrics.py).
    usage = NoOpMeterProvider().get_meter(instrumentation).create_up_down_counter("db.client.connections.usage")
    EngineTracer(trace.get_tracer(instrumentation, __version__, tracer_provider=_provider), engine, usage)


def asgi_middleware() -> list[Any]:
    """The ASGI middleware (Starlette ``Middleware`` entries) that opens the gateway's server
    span, continuing a caller's ``traceparent``; none when tracing is off."""
    if _provider is None:
        return []
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
    from starlette.middleware import Middleware

    return [Middleware(OpenTelemetryMiddleware, tracer_provider=_provider, excluded_urls="healthz",
                       exclude_spans=["receive", "send"])]


def name_route(method: str, template: str) -> None:
    """Names the current server span after the route's template (``GET /api/v1/logs/audit/{entry_id}``),
    as the HTTP semantic conventions ask, instead of the bare method."""
    span = trace.get_current_span()
    if span.is_recording():
        span.update_name(f"{method} {template}")
        span.set_attribute("http.route", template)
