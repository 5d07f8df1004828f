#!/usr/bin/env python3
"""Container healthcheck: ask a server's grpc.health.v1.Health/Check once.

    python tools/grpc_health_probe.py --addr 127.0.0.1:50052 [--service NAME] [--timeout 3]

Exit 0 only when the reported status is SERVING. Anything else — NOT_SERVING,
UNKNOWN, SERVICE_UNKNOWN, an unreachable port, a deadline, any RPC error — exits 1,
the code Docker reads as "unhealthy" (Docker reserves 2). Needs only grpcio and
grpcio-health-checking, both in requirements.lock.
"""
from __future__ import annotations

import argparse
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

SERVING = 0
UNHEALTHY = 1


def check(addr: str, service: str = "", timeout: float = 3.0) -> int:
    """The exit code for one Health/Check call against ``addr``."""
    try:
        with grpc.insecure_channel(addr) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
    except grpc.RpcError as exc:
        code = exc.code() if hasattr(exc, "code") else None
        name = code.name if code is not None else type(exc).__name__
        details = exc.details() if hasattr(exc, "details") else str(exc)
        print(f"{addr} {service or '(server)'}: {name}: {details}", file=sys.stderr)
        return UNHEALTHY
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    if response.status == health_pb2.HealthCheckResponse.SERVING:
        print(f"{addr} {service or '(server)'}: {status}")
        return SERVING
    print(f"{addr} {service or '(server)'}: {status}", file=sys.stderr)
    return UNHEALTHY


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--addr", required=True, help="host:port of the gRPC server")
    parser.add_argument("--service", default="",
                        help="service name to check (default: the whole server, \"\")")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds before giving up (default 3)")
    args = parser.parse_args(argv)
    return check(args.addr, args.service, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
