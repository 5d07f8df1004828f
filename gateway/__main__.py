"""``python -m gateway``: the REST gateway in front of the three services.

Backends are the services' addresses (AOS_<SERVICE>_ADDRESS, by default their local
ports); the gateway listens on
AOS_GATEWAY_PORT. SIGTERM or SIGINT: uvicorn stops accepting, lets in-flight
requests finish within AOS_GRACE_PERIOD_S, and the process exits 0. Slow and
numerous clients are bounded by AOS_GATEWAY_HEADER_TIMEOUT_S and
AOS_GATEWAY_MAX_CONNECTIONS (gateway/serving.py), whichever HTTP parser AOS_GATEWAY_HTTP_PARSER
names (httptools by default, or h11).
"""
from __future__ import annotations

import signal
import sys

import uvicorn

from aos_runtime import metrics, tracing
from aos_runtime.config import Settings
from aos_runtime.observability import configure_logging
from gateway.app import create_app
from gateway.backends import backend_addresses
from gateway.serving import config


def main() -> int:
    settings = Settings.from_env()
    configure_logging(settings.log_level)
    tracing.configure("gateway")  # OTEL_*; off unless OTEL_TRACES_EXPORTER names an exporter
    if settings.metrics_ports["gateway"]:
        metrics.serve(settings.bind_host, settings.metrics_ports["gateway"], "AOS_GATEWAY_METRICS_PORT")
    app = create_app(backend_addresses(settings.addresses), max_message_bytes=settings.max_message_bytes,
                     channels_per_backend=settings.workers, trusted_proxies=settings.trusted_proxies)
    # uvicorn re-raises the signal it shut down for once it has restored the previous
    # handlers; these make that a clean exit (0) instead of a kill or a KeyboardInterrupt.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: None)
    uvicorn.Server(config(app, host=settings.bind_host, port=settings.ports["gateway"],
                          header_timeout_s=settings.gateway_header_timeout_s,
                          max_connections=settings.gateway_max_connections,
                          parser=settings.gateway_http_parser,
                          log_config=None, access_log=False,
                          timeout_graceful_shutdown=settings.grace_period_s)).run()
    tracing.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
