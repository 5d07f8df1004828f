"""What a grpc.aio unary call costs the server process, layer by layer added to a bare server
(issue #22: where the floor of a Logs call is, beneath the service's own code).

    PYTHONPATH=.:gen:bench .venv/bin/python bench/grpc_floor.py [--requests 4000] [--rounds 3] [--clients 8]

Each variant is this script in another process (``--serve VARIANT``): a grpc.aio server with
the services' channel arguments answering one method with fixed response bytes (50 audit
entries' worth: --reply-bytes), driven by h2load (--clients connections × 1 stream), its CPU per
call from /proc; variants alternate by round. The variants add, one at a time, what a service
call does besides its own work:

- ``bare``: the handler returns the bytes (bench/bare_server.py's server).
- ``interceptors``: + two pass-through ``grpc.aio.ServerInterceptor`` (the services have two:
  metrics and the call policy; their per-call chain is grpc's ``_run_interceptor``).
- ``context``: + what the call policy asks of the call's context: invocation metadata (twice),
  time remaining, trailing metadata, the code at the end.
- ``thread``: + one hop to a thread pool and back (``Database.run`` hands every transaction
  to a pool thread: submit, wrap_future, the loop woken from the thread).
- ``all``: all three.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc

from aos_runtime.server import server_options
from workers_scaling import h2load

METHOD = "/aos.logs.v1.AuditLedgerService/ListAuditEntries"
VARIANTS = ("bare", "interceptors", "context", "thread", "all")


class PassThrough(grpc.aio.ServerInterceptor):
    async def intercept_service(self, continuation, details):
        return await continuation(details)


async def serve(variant: str, reply: bytes) -> None:
    pool = ThreadPoolExecutor(max_workers=10)
    with_context = variant in ("context", "all")
    with_thread = variant in ("thread", "all")

    async def answer(request: bytes, context) -> bytes:
        if with_context:
            dict(context.invocation_metadata() or ())
            context.time_remaining()
            context.set_trailing_metadata((("x-request-id", "0123456789abcdef"),))
        if with_thread:
            await asyncio.wrap_future(pool.submit(int))
        if with_context:
            tuple(context.invocation_metadata() or ())
            context.code()
        return reply

    handler = grpc.unary_unary_rpc_method_handler(answer)

    class Fixed(grpc.GenericRpcHandler):
        def service(self, details):
            return handler if details.method == METHOD else None

    interceptors = [PassThrough(), PassThrough()] if variant in ("interceptors", "all") else []
    server = grpc.aio.server(interceptors=interceptors, options=server_options(8 * 1024 * 1024))
    server.add_generic_rpc_handlers((Fixed(),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(f"READY {port}", flush=True)
    await server.wait_for_termination()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--serve", choices=VARIANTS)
    parser.add_argument("--reply-bytes", type=int, default=20_600)
    parser.add_argument("--requests", type=int, default=4_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(args.serve, b"\x0a" + b"x" * (args.reply_bytes - 1)))
        return
    servers = {}
    for variant in VARIANTS:
        process = subprocess.Popen([sys.executable, __file__, "--serve", variant], stdout=subprocess.PIPE, text=True)
        servers[variant] = (process, f"127.0.0.1:{process.stdout.readline().split()[1]}")  # type: ignore[union-attr]
    load = [round(x, 2) for x in os.getloadavg()]
    rounds: dict[str, list[float]] = {v: [] for v in VARIANTS}
    with tempfile.TemporaryDirectory() as work:
        body = Path(work) / "body.bin"
        body.write_bytes(b"\x00\x00\x00\x00\x02\x10\x32")  # any request: the handlers read none
        try:
            for _process, address in servers.values():
                h2load(address, body, "x", requests=500, connections=args.clients, streams=1)
            for i in range(args.rounds):
                for variant in (VARIANTS if i % 2 == 0 else VARIANTS[::-1]):
                    process, address = servers[variant]
                    before = cpu_seconds(process.pid)
                    figures = h2load(address, body, "x", requests=args.requests, connections=args.clients, streams=1)
                    assert figures["done"] == args.requests, figures
                    rounds[variant].append(round((cpu_seconds(process.pid) - before) / args.requests * 1000, 4))
                    print(json.dumps({"round": i + 1, "variant": variant, "cpu_ms_per_call": rounds[variant][-1]}),
                          file=sys.stderr, flush=True)
        finally:
            for process, _ in servers.values():
                process.terminate()
                process.wait(timeout=30)
    print(json.dumps({"workload": f"h2load {args.requests} unary calls per variant per round, {args.clients} "
                                  f"connections x 1 stream, {args.reply_bytes}-byte answers",
                      "load_average_before": load, "load_average_after": [round(x, 2) for x in os.getloadavg()],
                      "cpu_ms_per_call_by_round": rounds,
                      "median_cpu_ms_per_call": {k: statistics.median(v) for k, v in rounds.items()}}, indent=2))


if __name__ == "__main__":
    main()
