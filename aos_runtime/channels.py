"""How every client of the suite (the gateway, the CLI) reaches its services, defined once.

A service's address (AOS_<SERVICE>_ADDRESS) is any gRPC target:

- ``host:port`` — one server (what the suite itself uses);
- ``ipv4:10.0.0.1:50052,10.0.0.2:50052`` — a static list of instances;
- ``dns:///logs.internal:50052`` — every A/AAAA record of a name, re-resolved as instances
  come and go (what a Kubernetes headless service or compose's service name returns).

The services hold no state between calls (the database holds it all; page tokens are
sealed with the shared key), so any instance can answer any call. Each channel spreads
its calls round-robin over the instances that are connected and whose gRPC health says
SERVING: an instance whose database stopped answering reports NOT_SERVING and gets no
calls until it recovers (client-side health checking against grpc.health.v1, overall
status ""). Calls to the read-only services (Overview, Logs) are retried on UNAVAILABLE
— an instance that died or refused the call before answering — on another instance, a
read being safe to repeat; Export's are not retried (CreateExport writes).
"""
from __future__ import annotations

import json
import re

# The read-only services: their calls may be repeated on another instance.
READ_ONLY_SERVICES = ("aos.overview.v1.OverviewService", "aos.logs.v1.LlmRunsService",
                      "aos.logs.v1.SystemLogsService", "aos.logs.v1.AuditLedgerService",
                      "aos.logs.v1.EvidenceSearchService")

_HOST_PORT = r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):\d{1,5}"
_TARGET = re.compile(
    rf"{_HOST_PORT}"                                    # host:port, [v6]:port
    rf"|ipv4:{_HOST_PORT}(?:,{_HOST_PORT})*"            # a static list
    rf"|ipv6:{_HOST_PORT}(?:,{_HOST_PORT})*"
    rf"|dns:(?://[A-Za-z0-9_.:-]*)?/{_HOST_PORT}"       # dns:///name:port, dns://resolver/name:port
    r"|unix:[^\s,]+")

SERVICE_CONFIG = json.dumps({
    "loadBalancingConfig": [{"round_robin": {}}],
    "healthCheckConfig": {"serviceName": ""},
    "methodConfig": [{
        "name": [{"service": name} for name in READ_ONLY_SERVICES],
        "retryPolicy": {"maxAttempts": 3, "initialBackoff": "0.05s", "maxBackoff": "0.5s",
                        "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]},
    }],
})


def is_target(value: str) -> bool:
    """Whether ``value`` is a gRPC target these clients accept (see the module docstring)."""
    return _TARGET.fullmatch(value) is not None


def channel_options(max_message_bytes: int) -> list[tuple[str, object]]:
    """Channel arguments of every client channel to a service."""
    return [("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.service_config", SERVICE_CONFIG),
            # The channel's own configuration, whatever a DNS TXT record might say.
            ("grpc.service_config_disable_resolution", 1)]
