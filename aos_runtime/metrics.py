"""Prometheus metrics of every process (``prometheus-client``), served on its own port.

RPC metrics carry the grpc-ecosystem names (go-grpc-prometheus, py-grpc-prometheus):
``grpc_server_started_total``, ``grpc_server_handled_total`` and the
``grpc_server_handling_seconds`` histogram, labelled ``grpc_type``, ``grpc_service``,
``grpc_method`` (and ``grpc_code``). Chosen over the OpenTelemetry RPC semantic
conventions because the dashboards and alert rules platform teams already run for gRPC
(Grafana's "gRPC" dashboards, the kube-prometheus mixins) query these names, and the
OTel ones are still "development" status. Recorded by our own interceptor
(``RpcMetrics``): the packages that do the same (py-grpc-prometheus) wrap only the
synchronous ``grpc.ServerInterceptor``, and these servers are ``grpc.aio``.

One port per process. With ``AOS_WORKERS`` > 1 worker *i* serves on the configured port
+ *i* (``serve``): each worker is its own scrape target. Not prometheus-client's
multiprocess mode, because what is read live at scrape time (the pool's connections in
use, the ledger and checkpoint queries) is a collector, and collectors do not work in
multiprocess mode; it would also need its directory set before the first import and
cleaned of dead workers. Prometheus sums the workers (``sum without (instance)``), and a
worker that is overloaded alone stays visible.

Nothing here is exported before something sets it: the heavy-work metrics (set by the
admission code) register themselves on first use.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol
from wsgiref.simple_server import WSGIServer

import grpc
from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger("aos.metrics")

# --- RPCs (grpc-ecosystem names) ----------------------------------------------------------
_RPC = ["grpc_type", "grpc_service", "grpc_method"]
grpc_started = Counter("grpc_server_started_total", "Total number of RPCs started on the server.", _RPC)
grpc_handled = Counter("grpc_server_handled_total",
                       "Total number of RPCs completed on the server, regardless of success or failure.",
                       [*_RPC, "grpc_code"])
grpc_handling = Histogram("grpc_server_handling_seconds",
                          "Histogram of response latency (seconds) of gRPC that had been application-level "
                          "handled by the server.", _RPC,
                          buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60))
grpc_msg_sent = Counter("grpc_server_msg_sent_total", "Total number of gRPC stream messages sent by the server.",
                        _RPC)


# --- database pool --------------------------------------------------------------------------
db_pool_wait = Histogram("aos_db_pool_wait_seconds",
                         "Seconds a call waited for a pooled connection (a database thread) before its "
                         "transaction started.", ["service"],
                         buckets=(.0005, .001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10))

# --- exports --------------------------------------------------------------------------------
_EXPORT = ["scope", "format"]
exports_created = Counter("aos_exports_created_total", "Exports built, signed and committed.", _EXPORT)
export_bytes = Counter("aos_export_bytes_total", "Bytes of the artifacts of the exports committed.", _EXPORT)
export_duration = Histogram("aos_export_duration_seconds",
                            "Seconds from the start of an export's transaction to its commit (render, sign, "
                            "write, including the wait for a connection).", _EXPORT,
                            buckets=(.05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600))

# --- the gateway's HTTP requests ---------------------------------------------------------------
_HTTP = ["method", "route"]
http_requests = Counter("aos_http_requests_total",
                        "HTTP requests the gateway answered, by route template and status code.",
                        [*_HTTP, "status"])
http_duration = Histogram("aos_http_request_duration_seconds",
                          "Seconds from a request's arrival to the end of its response, by route template.",
                          _HTTP, buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60))


class _OnFirstUse:
    """A metric that joins the registry only when something first sets it: a metric nobody
    sets is not exported (an empty series would look like a working zero)."""

    def __init__(self, metric: Any) -> None:
        self._metric = metric
        self._registered = False
        self._lock = threading.Lock()

    def labels(self, *values: str, **labels: str) -> Any:
        with self._lock:
            if not self._registered:
                REGISTRY.register(self._metric)
                self._registered = True
        return self._metric.labels(*values, **labels)


# --- the event loop (admission.LoopLag) ---------------------------------------------------------
loop_lag = _OnFirstUse(Histogram("aos_event_loop_lag_seconds",
                                 "How late the service's event loop ran a 10 ms timer (each tick): while it is "
                                 "late, calls wait in gRPC's queue before any Python sees them.", ["service"],
                                 buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5),
                                 registry=None))

# Refusals by admission (RESOURCE_EXHAUSTED): the soak's "< 10 ms" by the service's own clock, from
# the call policy's first look at the call to its refusal (what the caller sees adds gRPC's queue
# and, on a busy machine, the wait for a CPU).
refusal_time = _OnFirstUse(Histogram("aos_refusal_seconds",
                                     "Seconds from the call policy's first look at a call to its refusal by "
                                     "admission (RESOURCE_EXHAUSTED), in the service's process.", ["service"],
                                     buckets=(.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 10),
                                     registry=None))

# --- heavy work (admission) -------------------------------------------------------------------
# Set by the admission of heavy calls (exports, integrity reports): e.g.
# ``metrics.heavy_queue_depth.labels(service="export").set(n)`` and
# ``metrics.heavy_refused.labels(service="export", reason="TENANT_HEAVY_LIMIT").inc()`` (aos_runtime.server
# CallPolicy counts the refusals; ServiceServer points the depth at the heavy gate's queue).
heavy_queue_depth = _OnFirstUse(Gauge("aos_heavy_queue_depth",
                                      "Heavy calls waiting for admission now.", ["service"], registry=None))
heavy_refused = _OnFirstUse(Counter("aos_heavy_refused_total",
                                    "Heavy calls refused by admission (RESOURCE_EXHAUSTED), by reason.",
                                    ["service", "reason"], registry=None))

# --- the heap given back after heavy work (aos_runtime.heap) ---------------------------------------
heap_trims = _OnFirstUse(Counter("aos_heap_trims_total",
                                 "malloc_trim(0) calls after the process's heavy work ended (glibc only).",
                                 ["service"], registry=None))
heap_trim_released = _OnFirstUse(Counter("aos_heap_trim_released_bytes_total",
                                          "Resident bytes the heap trims gave back to the system.", ["service"],
                                          registry=None))
heap_trim_seconds = _OnFirstUse(Counter("aos_heap_trim_seconds_total",
                                        "Seconds the heap trims took (in a thread of their own).", ["service"],
                                        registry=None))

# --- heavy worker processes (aos_runtime.offload) ---------------------------------------------------
heavy_worker_recycles = _OnFirstUse(Counter("aos_heavy_worker_recycles_total",
                                            "Heavy worker processes ended and replaced after a job grew them past "
                                            "AOS_HEAVY_WORKER_RECYCLE_MIB.", ["service"], registry=None))

# --- admission by predicted completion (aos_runtime.admission, AOS_ACCEPTED_TARGET_S) ---------------
admission_service = _OnFirstUse(Gauge("aos_admission_service_seconds",
                                      "The service time admission predicts for a call of this method (the 90th "
                                      "percentile of the gate's last 50 calls of it): a call that must wait is "
                                      "admitted only if its wait plus this ends within AOS_ACCEPTED_TARGET_S.",
                                      ["service", "gate", "grpc_service", "grpc_method"], registry=None))
admission_inflight_limit = _OnFirstUse(Gauge("aos_admission_inflight_limit",
                                             "Light calls a service process runs at once now: AOS_MAX_INFLIGHT, "
                                             "or the adaptive limit (AOS_ADAPTIVE_INFLIGHT_MIN).", ["service"],
                                             registry=None))
admission_refused = _OnFirstUse(Counter("aos_admission_refused_total",
                                        "Calls refused by admission (RESOURCE_EXHAUSTED), by gate and cause "
                                        "(aos_runtime.admission.CAUSES: predicted_late = would end past "
                                        "AOS_ACCEPTED_TARGET_S or its deadline).", ["service", "gate", "cause"],
                                        registry=None))


def admission_service_observer(service: str, gate: str) -> Callable[[str, float], None]:
    """What a gate tells when a method's predicted service time changes (FairGate.on_estimate)."""
    def observe(method: str, seconds: float) -> None:
        grpc_service, grpc_method = _split(method)
        admission_service.labels(service=service, gate=gate, grpc_service=grpc_service,
                                 grpc_method=grpc_method).set(seconds)
    return observe


# --- access evidence (aos_runtime.access) -------------------------------------------------------
access_entries = _OnFirstUse(Counter("aos_access_entries_total",
                                     "Access entries (AccessGranted/AccessDenied of evidence reads): recorded in "
                                     "the ledger, or dropped (refused by the database, buffer full, lost at "
                                     "shutdown; each also logged).", ["service", "outcome"], registry=None))
access_buffered = _OnFirstUse(Gauge("aos_access_buffered",
                                    "Access entries noted and not yet written to the ledger.", ["service"],
                                    registry=None))
access_flush = _OnFirstUse(Histogram("aos_access_flush_seconds",
                                     "Seconds one tenant's batch of access entries took to append.", ["service"],
                                     buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5),
                                     registry=None))


def observe_export(scope: str, format: str, size_bytes: int, seconds: float) -> None:
    """One export committed (services/export)."""
    exports_created.labels(scope, format).inc()
    export_bytes.labels(scope, format).inc(size_bytes)
    export_duration.labels(scope, format).observe(seconds)


# The two series of each (method, route, status) the gateway has answered: labels() checks and
# converts its values and takes a lock on every call; the set is the metrics' own label sets.
_http_series: dict[tuple[str, str, int], tuple[Any, Any]] = {}


def observe_http(method: str, route: str, status: int, seconds: float) -> None:
    """One request the gateway answered; ``route`` is the template, never the path."""
    series = _http_series.get((method, route, status))
    if series is None:
        series = _http_series[(method, route, status)] = (http_requests.labels(method, route, str(status)),
                                                           http_duration.labels(method, route))
    series[0].inc()
    series[1].observe(seconds)


# --- the RPC interceptor --------------------------------------------------------------------------

def _split(method: str) -> tuple[str, str]:
    service, _, name = method.lstrip("/").rpartition("/")
    return service, name


# grpc_code as the grpc-ecosystem spells it (Go's codes.Code.String()), which their dashboards match.
_CODE_NAMES = {code: "".join(part.capitalize() for part in code.name.split("_")) for code in grpc.StatusCode}
_CODE_NAMES[grpc.StatusCode.OK] = "OK"
_CODE_NAMES[grpc.StatusCode.CANCELLED] = "Canceled"


def _code(context: Any, failure: BaseException | None) -> str:
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return _CODE_NAMES[code]
    if failure is None:
        return "OK"
    if isinstance(failure, asyncio.CancelledError):
        return "Canceled"
    return "Unknown"  # what grpc answers for an exception that set no status


# Set on a handler function served as another kind than its method's (the call policy's refusals,
# which never read the request: aos_runtime.server.CallPolicy._shed): the method's own kind, the
# ``grpc_type`` label its calls are counted under.
RPC_KIND = "aos_rpc_kind"


class RpcMetrics(grpc.aio.ServerInterceptor):
    """Counts and times every RPC (the contract's, health and reflection) with the code it ended with.

    Installed first, outside the call policy: a call refused for its token or its input
    counts, with the code the caller got."""

    def __init__(self) -> None:
        # method → (the handler wrapped, its wrapper): built once per method (issue #22).
        self._wrapped: dict[str, tuple[Any, Any]] = {}

    async def intercept_service(self, continuation: Any, details: Any) -> Any:
        handler = await continuation(details)
        if handler is None:
            return None
        kept = self._wrapped.get(details.method)
        if kept is not None and kept[0] is handler:
            return kept[1]
        wrapped = self._wrap(handler, details.method)
        self._wrapped[details.method] = (handler, wrapped)
        return wrapped

    def _wrap(self, handler: Any, method: str) -> Any:
        service, name = _split(method)
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(handler.unary_unary, "unary", service, name),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                self._streaming(handler.unary_stream, "server_stream", service, name),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                self._unary(handler.stream_unary, getattr(handler.stream_unary, RPC_KIND, "client_stream"),
                            service, name),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)
        kind = getattr(handler.stream_stream, RPC_KIND, None)
        if kind is not None:  # a server stream's refusal served as a bidirectional stream
            return grpc.stream_stream_rpc_method_handler(
                self._streaming(handler.stream_stream, kind, service, name),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)
        return handler  # no bidirectional streams in the contract

    @staticmethod
    def _unary(behavior: Callable[..., Any], kind: str, service: str, name: str) -> Callable[..., Any]:
        started_count = grpc_started.labels(kind, service, name)
        handling = grpc_handling.labels(kind, service, name)
        ok = grpc_handled.labels(kind, service, name, "OK")

        async def wrapped(request: Any, context: Any) -> Any:
            started_count.inc()
            started, failure = time.monotonic(), None
            try:
                result = behavior(request, context)
                if hasattr(result, "__await__"):
                    result = await result
                return result
            except BaseException as exc:
                failure = exc
                raise
            finally:
                handling.observe(time.monotonic() - started)
                code = _code(context, failure)
                (ok if code == "OK" else grpc_handled.labels(kind, service, name, code)).inc()
        return wrapped

    @staticmethod
    def _streaming(behavior: Callable[..., Any], kind: str, service: str, name: str) -> Callable[..., Any]:
        async def wrapped(request: Any, context: Any) -> Any:
            grpc_started.labels(kind, service, name).inc()
            sent = grpc_msg_sent.labels(kind, service, name)
            started, failure = time.monotonic(), None
            try:
                result = behavior(request, context)
                if hasattr(result, "__aiter__"):
                    async for message in result:
                        sent.inc()
                        yield message
                else:  # a coroutine that writes through context.write (grpc.health.v1 Watch)
                    await result
            except BaseException as exc:
                failure = exc
                raise
            finally:
                grpc_handling.labels(kind, service, name).observe(time.monotonic() - started)
                grpc_handled.labels(kind, service, name, _code(context, failure)).inc()
        return wrapped


# --- live values, read at scrape time ---------------------------------------------------------------

class PoolSource(Protocol):
    service: str
    observe_wait: Callable[[float], None] | None

    def pool_status(self) -> tuple[int, int, int]: ...


class _Pools(Collector):
    """Each open database pool's size, connections in use and calls waiting, read at scrape time."""

    def __init__(self) -> None:
        self._pools: dict[int, PoolSource] = {}
        self._lock = threading.Lock()

    def add(self, db: PoolSource) -> None:
        with self._lock:
            self._pools[id(db)] = db

    def remove(self, db: PoolSource) -> None:
        with self._lock:
            self._pools.pop(id(db), None)

    def collect(self) -> Iterator[Metric]:
        size = GaugeMetricFamily("aos_db_pool_size", "Connections the service's pool holds at most.",
                                 labels=["service"])
        in_use = GaugeMetricFamily("aos_db_pool_in_use", "Pooled connections serving a call now.",
                                   labels=["service"])
        waiting = GaugeMetricFamily("aos_db_pool_waiting", "Calls waiting for a pooled connection now.",
                                    labels=["service"])
        totals: dict[str, list[int]] = {}
        with self._lock:
            pools = list(self._pools.values())
        for db in pools:  # several pools of one service only in tests (servers in one process)
            row = totals.setdefault(db.service, [0, 0, 0])
            for i, value in enumerate(db.pool_status()):
                row[i] += value
        for service, (s, u, w) in sorted(totals.items()):
            size.add_metric([service], s)
            in_use.add_metric([service], u)
            waiting.add_metric([service], w)
        yield from (size, in_use, waiting)


pools = _Pools()
REGISTRY.register(pools)


class _Health(Collector):
    """Each running server's health status (set by the server when it changes), until it stops.
    Several servers of one service in one process (only tests) report their lowest."""

    def __init__(self) -> None:
        self._status: dict[int, tuple[str, bool]] = {}
        self._lock = threading.Lock()

    def set(self, server: object, service: str, serving: bool) -> None:
        with self._lock:
            self._status[id(server)] = (service, serving)

    def forget(self, server: object) -> None:
        with self._lock:
            self._status.pop(id(server), None)

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily("aos_service_serving", "1 while the service reports SERVING on "
                                   "grpc.health.v1, 0 while NOT_SERVING (its database does not answer, or it "
                                   "is draining).", labels=["service"])
        lowest: dict[str, bool] = {}
        with self._lock:
            for service, serving in self._status.values():
                lowest[service] = lowest.get(service, True) and serving
        for service, serving in sorted(lowest.items()):
            family.add_metric([service], 1 if serving else 0)
        yield family


serving = _Health()
REGISTRY.register(serving)


def watch_database(db: PoolSource) -> None:
    """``db``'s pool on /metrics from now on, and each call's wait for a connection."""
    db.observe_wait = db_pool_wait.labels(db.service).observe
    pools.add(db)


def forget_database(db: PoolSource) -> None:
    pools.remove(db)


@dataclass
class LedgerStats:
    entries: int                      # every ledger entry ever appended, all tenants (the heads' seqs)
    newest_checkpoint_age_s: float | None  # None: no checkpoint recorded yet


class _Ledger(Collector):
    """The audit ledger's appends (a total over tenants, not one series per tenant) and the age
    of the newest signed checkpoint, from the database (``aos_ledger_stats()``), cached a few
    seconds so that several scrapers cost one query."""

    CACHE_S = 5.0

    def __init__(self) -> None:
        self._read: Callable[[], LedgerStats] | None = None
        self._cached: tuple[float, LedgerStats] | None = None
        self._lock = threading.Lock()

    def watch(self, read: Callable[[], LedgerStats] | None) -> None:
        with self._lock:
            self._read, self._cached = read, None

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            read = self._read
            if read is None:
                return []
            if self._cached is None or time.monotonic() - self._cached[0] > self.CACHE_S:
                try:
                    self._cached = (time.monotonic(), read())
                except Exception as exc:  # noqa: BLE001 - a scrape answers without them; health says why
                    log.warning("ledger metrics not read", extra={"error": type(exc).__name__})
                    return []
            stats = self._cached[1]
        found: list[Metric] = [CounterMetricFamily(
            "aos_ledger_entries", "Audit ledger entries appended, all tenants together (the sum of the "
            "chains' head seq).", value=stats.entries)]
        if stats.newest_checkpoint_age_s is not None:
            found.append(GaugeMetricFamily(
                "aos_ledger_checkpoint_age_seconds", "Seconds since the newest signed ledger checkpoint "
                "of any tenant was recorded.", value=stats.newest_checkpoint_age_s))
        return found


ledger = _Ledger()
REGISTRY.register(ledger)

def ledger_reader(engine: Any, query: Callable[[Any], tuple[int, float | None]]) -> Callable[[], LedgerStats]:
    """What ``ledger.watch`` takes: ``query(conn)`` in a transaction of its own on the SQLAlchemy
    ``engine`` (one pooled connection, 2 s at most), in the scraping thread."""
    from sqlalchemy import text  # here: the gateway imports this module and no database layer

    def read() -> LedgerStats:
        with engine.begin() as conn:
            conn.execute(text("SELECT set_config('statement_timeout', '2000', true)"))
            return LedgerStats(*query(conn))
    return read


# --- the HTTP endpoint ---------------------------------------------------------------------------

class MetricsServer:
    """``/metrics`` on ``host:port`` in a thread of this process."""

    def __init__(self, server: WSGIServer, thread: threading.Thread) -> None:
        self._server, self._thread = server, thread
        self.port: int = server.server_port

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def serve(host: str, port: int, variable: str) -> MetricsServer:
    """Starts the metrics endpoint; OSError naming ``variable`` when the port cannot be had."""
    try:
        server, thread = start_http_server(port, addr=host)
    except OSError as exc:
        raise OSError(f"cannot serve metrics on {host}:{port} ({variable}): {exc.strerror or exc}") from exc
    log.info("metrics", extra={"address": f"{host}:{server.server_port}", "path": "/metrics"})
    return MetricsServer(server, thread)
