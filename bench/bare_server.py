"""The baseline for issue #9's first ratio: a bare grpc.aio server that answers one
method with fixed response bytes — no auth, no database, no protobuf work.

    .venv/bin/python bench/bare_server.py --method /aos.logs.v1.AuditLedgerService/ListAuditEntries \
                                          --response reply.bin [--port 0]

``reply.bin`` is the serialized response message a service returned for the request
being measured (suite_bench.py captures it through a real channel), so the bare
server sends exactly the bytes the service sends. Same process model as a service:
one process, one grpc.aio server, the services' channel arguments. Prints
``READY <port>`` on stdout once it listens; SIGTERM stops it.
"""
from __future__ import annotations

import argparse
import asyncio
import signal
from pathlib import Path

import grpc

from aos_runtime.server import server_options

MAX_MESSAGE_BYTES = 8 * 1024 * 1024  # AOS_MAX_MESSAGE_BYTES' default


class FixedReply(grpc.GenericRpcHandler):
    """Answers ``method`` with ``reply``; no request is even parsed (no deserializer: raw bytes)."""

    def __init__(self, method: str, reply: bytes) -> None:
        self.method = method

        async def answer(request: bytes, context) -> bytes:
            return reply

        self.handler = grpc.unary_unary_rpc_method_handler(answer)

    def service(self, handler_call_details):
        return self.handler if handler_call_details.method == self.method else None


async def serve(method: str, reply: bytes, port: int) -> None:
    server = grpc.aio.server(options=server_options(MAX_MESSAGE_BYTES))
    server.add_generic_rpc_handlers((FixedReply(method, reply),))
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print(f"READY {bound}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(grace=1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--method", required=True, help="full method path, /package.Service/Method")
    parser.add_argument("--response", required=True, type=Path, help="file holding the serialized response")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    asyncio.run(serve(args.method, args.response.read_bytes(), args.port))


if __name__ == "__main__":
    main()
