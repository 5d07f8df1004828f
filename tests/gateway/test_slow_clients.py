"""The gateway under slow and numerous clients, over real sockets (gateway/serving.py).

A uvicorn server built by ``serving.config`` (what ``python -m gateway`` runs) in front
of the in-process suite, with a small cap and a short read deadline so the test is quick.
"""
from __future__ import annotations

import asyncio
import contextlib
import time

import httpx
import pytest

from gateway import serving
from tests.gateway.support import bearer, start_uvicorn

pytestmark = pytest.mark.db

# Every parser AOS_GATEWAY_HTTP_PARSER can choose is held to the same limits.
PARSERS = pytest.mark.parametrize("parser", serving.PARSERS)

HEADER_TIMEOUT_S = 1.5
MAX_CONNECTIONS = 50
SLOW_CLIENTS = 200




@contextlib.asynccontextmanager
async def guarded_gateway(app, parser, **limits):
    server, task, host, port = await start_uvicorn(serving.config(app, host="127.0.0.1", port=0, lifespan="off",
                                                                  log_config=None, access_log=False, parser=parser,
                                                                  **limits))
    try:
        yield server, host, port
    finally:
        server.should_exit = True
        await task


async def closed_by_peer(reader: asyncio.StreamReader, within: float) -> bool:
    """True when the server closes the connection (EOF or reset) within ``within`` seconds."""
    try:
        return await asyncio.wait_for(reader.read(1024), within) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


@PARSERS
async def test_a_slowloris_connection_is_closed_after_the_header_timeout(app, demo, parser):
    async with guarded_gateway(app, parser, header_timeout_s=HEADER_TIMEOUT_S, max_connections=MAX_CONNECTIONS) as (
            _, host, port):
        silent_reader, silent = await asyncio.open_connection(host, port)           # sends nothing
        drip_reader, drip = await asyncio.open_connection(host, port)               # headers, a byte every 50 ms
        started = time.monotonic()
        drip_closed = asyncio.create_task(closed_by_peer(drip_reader, HEADER_TIMEOUT_S + 3))
        silent_closed = asyncio.create_task(closed_by_peer(silent_reader, HEADER_TIMEOUT_S + 3))
        request = b"GET /healthz HTTP/1.1\r\nHost: gw\r\nX-Slow: " + b"a" * 200   # 10 s at this pace
        for byte in request:
            if drip_closed.done():
                break
            try:
                drip.write(bytes([byte]))
                await drip.drain()
            except (ConnectionResetError, BrokenPipeError):
                break
            await asyncio.sleep(0.05)
        assert await drip_closed
        closed_after = time.monotonic() - started
        # Closed by the deadline although it never stopped sending (data resets uvicorn's own timers).
        assert HEADER_TIMEOUT_S - 0.1 <= closed_after <= HEADER_TIMEOUT_S + 1.5, closed_after
        assert await silent_closed
        for writer in (silent, drip):
            writer.close()


@PARSERS
async def test_many_slow_clients_do_not_keep_a_well_behaved_one_out(app, demo, parser):
    async with guarded_gateway(app, parser, header_timeout_s=HEADER_TIMEOUT_S, max_connections=MAX_CONNECTIONS) as (
            server, host, port):
        slow = []
        for _ in range(SLOW_CLIENTS):  # each opens and sends part of a request line, never the rest
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(b"GET /api/v1/logs/audit HTTP/1.1\r\nHost: gw\r\n")
            slow.append((reader, writer))
        await asyncio.sleep(0.2)
        # The cap holds: the newest connections pushed the oldest waiting ones out.
        assert len(server.server_state.connections) <= MAX_CONNECTIONS
        started = time.monotonic()
        async with httpx.AsyncClient(base_url=f"http://{host}:{port}", headers=bearer(), timeout=5) as http:
            reply = await http.get("/api/v1/logs/audit", params={"page_size": 1})
        assert reply.status_code == 200, reply.text
        assert time.monotonic() - started < 2.0
        # Every slow connection is closed: pushed out by the cap or by the read deadline.
        closed = await asyncio.gather(*(closed_by_peer(reader, HEADER_TIMEOUT_S + 2) for reader, _ in slow))
        assert all(closed), closed.count(False)
        for _, writer in slow:
            writer.close()
        # A well-behaved client keeps a connection it uses across requests.
        async with httpx.AsyncClient(base_url=f"http://{host}:{port}", headers=bearer(), timeout=5) as http:
            for _ in range(3):
                assert (await http.get("/api/v1/logs/audit", params={"page_size": 1})).status_code == 200


@PARSERS
async def test_when_every_connection_is_busy_a_new_one_is_refused_not_queued(app, demo, parser):
    """The cap counts connections in use too: with all of them mid-request, the newcomer is closed."""
    async with guarded_gateway(app, parser, header_timeout_s=HEADER_TIMEOUT_S, max_connections=2) as (server, host, port):
        busy = []
        for _ in range(2):  # a POST whose body never comes: mid-request, not waiting for one
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(b"POST /api/v1/logs/exports HTTP/1.1\r\nHost: gw\r\nContent-Length: 100\r\n\r\n{")
            busy.append((reader, writer))
        await asyncio.sleep(0.2)
        reader, writer = await asyncio.open_connection(host, port)
        assert await closed_by_peer(reader, 1)
        # The busy ones are bounded by the same deadline (the body never came).
        assert all(await asyncio.gather(*(closed_by_peer(r, HEADER_TIMEOUT_S + 2) for r, _ in busy)))
        for _, w in busy + [(reader, writer)]:
            w.close()


@PARSERS
async def test_a_head_past_16_kib_is_refused_by_the_parser_and_a_kept_alive_connection_serves_again(app, demo, parser):
    async with guarded_gateway(app, parser, header_timeout_s=HEADER_TIMEOUT_S, max_connections=MAX_CONNECTIONS) as (
            _, host, port):
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: gw\r\nX-Big: " + b"a" * (serving.MAX_HEAD_BYTES + 10))
        await writer.drain()
        reply = await asyncio.wait_for(reader.read(), 5)
        assert reply.startswith(b"HTTP/1.1 400 ") and reply.endswith(b"Invalid HTTP request received."), reply[:200]
        writer.close()
        # Two requests on one connection, the deadline re-armed after the first answer.
        reader, writer = await asyncio.open_connection(host, port)
        for _ in range(2):
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert head.startswith(b"HTTP/1.1 200 "), head
            length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:"))
            await reader.readexactly(length)
        assert await closed_by_peer(reader, HEADER_TIMEOUT_S + 2)  # idle after its answers: closed by the deadline
        writer.close()
