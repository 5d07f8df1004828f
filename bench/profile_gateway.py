"""Where the gateway's CPU goes on one REST ListAuditEntries call (issue #22), without a database.

    PYTHONPATH=.:gen:bench .venv/bin/python bench/profile_gateway.py [--calls 2000] [--top 30] \
        [--http [--parser httptools]] [--no-cprofile] [--loop uvloop]

The backend is bench/bare_server.py answering ListAuditEntries with a real 50-entry answer (built
as the Logs service builds it, as in bench/rest_render_cost.py), so the gateway's own work is all
there is to see. Without ``--http`` the Starlette application is called directly as ASGI (no
HTTP server: the app, transcoding, the gRPC call, rendering); with ``--http`` it runs under
uvicorn as ``python -m gateway`` does (gateway.serving.config), driven over keep-alive
connections by an in-process client, so the HTTP server's parsing counts too. One event loop,
``--concurrency`` calls in flight, cProfile on the loop's thread (CPU time); the figures are
inflated by the profiler: read the shares. Also prints the CPU per call without the profiler.
"""
from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import pstats
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from tempfile import TemporaryDirectory

import uvicorn

from aos.logs.v1 import audit_ledger_service_pb2 as pb
from aos_runtime.auth import mint_token
from gateway import serving
from gateway.app import create_app
from rest_render_cost import AT, row

SECRET = "bench-secret-" + "x" * 40
PATH = "/api/v1/logs/audit?page_size=50"
LAYERS = (("uvicorn", "uvicorn"), ("h11", "h11 (HTTP parser)"), ("httptools", "httptools (HTTP parser)"),
          ("starlette", "starlette"), ("gateway/stored_json", "gateway.stored_json"),
          ("gateway/transcode", "gateway.transcode"), ("gateway/routes", "gateway.routes"),
          ("gateway/fields", "gateway.fields"), ("gateway/clients", "gateway.clients"),
          ("gateway/app", "gateway.app"), ("gateway/", "gateway (other)"), ("grpc", "grpc aio (client)"),
          ("google/protobuf", "protobuf"), ("prometheus_client", "metrics"), ("aos_runtime/metrics", "metrics"),
          ("logging", "logging"), ("aos_runtime/observability", "logging"), ("ipaddress", "ipaddress"),
          ("json/", "json"), ("asyncio", "asyncio"), ("selectors", "asyncio"), ("urllib", "urllib"),
          ("aos_runtime", "aos_runtime (other)"))


def answer_bytes() -> bytes:
    from aos_evidence.messages import audit_entry
    from aos_runtime.keyset import Page
    from aos_runtime.pagination import Listing, PageTokens
    from services.logs.messages import list_answer

    page = Page([row(i) for i in range(50)], True, 1000, False)
    return list_answer(Listing.of(PageTokens(b"k" * 32), "tenant-a", "audit", {}), page, pb.ListAuditEntriesResponse,
                       "entries", "audit", audit_entry, "audit_ledger", now=AT)


def layer_of(filename: str) -> str:
    if filename == "~":
        return "C calls (builtins)"
    for needle, name in LAYERS:
        if needle in filename:
            return name
    return "other"


class Asgi:
    """Calls the app directly: one GET per call, the whole response collected."""

    def __init__(self, app, token: str) -> None:
        self.app, self.token = app, token
        path, _, query = PATH.partition("?")
        self.scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
                      "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "",
                      "query_string": query.encode(), "server": ("127.0.0.1", 8080), "client": ("127.0.0.1", 5555),
                      "headers": [(b"host", b"127.0.0.1:8080"), (b"authorization", f"Bearer {token}".encode()),
                                  (b"user-agent", b"bench")]}

    async def call(self) -> int:
        status, chunks = 0, []

        async def receive():
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self.app(dict(self.scope, state={}), receive, send)
        return status


class Http:
    """Keep-alive HTTP/1.1 connections to a uvicorn server in the same loop."""

    def __init__(self, port: int, token: str) -> None:
        self.port = port
        self.request = (f"GET {PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
                        "User-Agent: bench\r\n\r\n").encode()
        self.free: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def call(self) -> int:
        if self.free:
            reader, writer = self.free.pop()
        else:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        writer.write(self.request)
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))
        await reader.readexactly(length)
        self.free.append((reader, writer))
        return int(head.split(b" ", 2)[1])


async def drive(client, calls: int, concurrency: int) -> Counter[int]:
    codes: Counter[int] = Counter()
    left = calls

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            codes[await client.call()] += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return codes


async def main_async(args, backend: str) -> dict:
    token = mint_token(secret=SECRET, tenant_id="tenant-a", subject="bench")
    app = create_app({"aos.logs.v1.AuditLedgerService": backend})
    server = None
    if args.http:
        config = serving.config(app, host="127.0.0.1", port=0, header_timeout_s=10, max_connections=1000,
                                log_config=None, access_log=False, lifespan="off")
        if args.parser == "httptools":  # AOS_GATEWAY_HTTP_PARSER=httptools (not in checkouts before it)
            config = serving.config(app, host="127.0.0.1", port=0, header_timeout_s=10, max_connections=1000,
                                    log_config=None, access_log=False, lifespan="off", parser="httptools")
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve())
        while not server.started:  # noqa: ASYNC110 - uvicorn says so by this flag only
            await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        client = Http(port, token)
    else:
        client = Asgi(app, token)
    await drive(client, 200, args.concurrency)  # warm: channel, renderer's store
    started = time.process_time()
    plain = await drive(client, args.calls, args.concurrency)
    plain_ms = (time.process_time() - started) / args.calls * 1000
    if args.no_cprofile:  # for a sampling profiler outside (py-spy): the plain run only
        if server is not None:
            server.should_exit = True
            await task
        return {"codes": dict(plain), "cpu_ms_per_call_process (client included)": round(plain_ms, 3)}
    profiler = cProfile.Profile(time.process_time)
    profiler.enable()
    profiled = await drive(client, args.calls, args.concurrency)
    profiler.disable()
    if server is not None:
        server.should_exit = True
        await task
    stats = pstats.Stats(profiler)
    by_layer: Counter[str] = Counter()
    by_function: Counter[str] = Counter()
    for (filename, line, name), (_, _, own, _, _) in stats.stats.items():  # type: ignore[attr-defined]
        by_layer[layer_of(filename)] += own
        by_function[f"{name} ({Path(filename).name}:{line})" if filename != "~" else name] += own
    total = sum(by_layer.values())
    return {"mode": "uvicorn + HTTP/1.1 keep-alive" if args.http else "ASGI app called directly",
            "codes": {**plain, **profiled}, "load_average": [round(x, 2) for x in os.getloadavg()],
            "cpu_ms_per_call_process_without_profiler (client included)": round(plain_ms, 3),
            "profiled_ms_per_call": round(total / args.calls * 1000, 3),
            "own_ms_per_call_by_layer": {k: round(v / args.calls * 1000, 3) for k, v in by_layer.most_common()},
            "top_functions_ms_per_call": {k: round(v / args.calls * 1000, 4)
                                          for k, v in by_function.most_common(args.top)}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--http", action="store_true", help="under uvicorn, over HTTP (else the ASGI app alone)")
    parser.add_argument("--parser", choices=("h11", "httptools"), default="h11",
                        help="with --http: the gateway's HTTP parser (AOS_GATEWAY_HTTP_PARSER)")
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    parser.add_argument("--no-cprofile", action="store_true", help="the plain run only (to sample it with py-spy)")
    args = parser.parse_args()
    os.environ.setdefault("AOS_AUTH_JWT_SECRET", SECRET)
    with TemporaryDirectory() as work:
        reply = Path(work) / "reply.bin"
        reply.write_bytes(answer_bytes())
        bare = subprocess.Popen([sys.executable, str(Path(__file__).parent / "bare_server.py"), "--method",
                                 "/aos.logs.v1.AuditLedgerService/ListAuditEntries", "--response", str(reply)],
                                stdout=subprocess.PIPE, text=True)
        try:
            backend = f"127.0.0.1:{bare.stdout.readline().split()[1]}"  # type: ignore[union-attr]
            if args.loop == "uvloop":
                import uvloop

                with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                    print(json.dumps(runner.run(main_async(args, backend)), indent=2))
            else:
                print(json.dumps(asyncio.run(main_async(args, backend)), indent=2))
        finally:
            bare.terminate()
            bare.wait(timeout=30)


if __name__ == "__main__":
    main()
