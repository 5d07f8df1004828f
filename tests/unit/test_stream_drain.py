"""aos_runtime.server.drain alone: what it reads of a refused client stream before the refusal
goes out, and where it stops. Its purpose — the refusal reaching grpc.aio's client as itself — is
tested against a real server in tests/e2e/test_ingest_run_stream.py."""
from __future__ import annotations

import asyncio
import itertools
import time

from aos_runtime import server


async def test_a_stream_is_read_to_its_end():
    taken = []

    async def stream():
        for i in range(5):
            taken.append(i)
            yield b"x" * 10

    await server.drain(stream())
    assert taken == [0, 1, 2, 3, 4]


async def test_an_endless_stream_is_read_only_to_the_byte_bound(monkeypatch):
    monkeypatch.setattr(server, "DRAIN_BYTES", 1000)
    taken = itertools.count()

    async def endless():
        while True:
            next(taken)
            yield b"x" * 100

    await asyncio.wait_for(server.drain(endless()), 5)
    assert next(taken) == 11, "ten chunks reach the bound, the eleventh passes it"


async def test_a_slow_stream_is_read_only_for_the_time_bound(monkeypatch):
    monkeypatch.setattr(server, "DRAIN_S", 0.2)

    async def trickle():
        while True:
            await asyncio.sleep(0.05)
            yield b"x"

    started = time.monotonic()
    await asyncio.wait_for(server.drain(trickle()), 5)
    assert 0.15 < time.monotonic() - started < 1.0


async def test_a_stream_that_fails_to_read_ends_the_drain():
    """A chunk that does not parse (the request iterator raises): the refusal goes out as it is."""
    async def broken():
        yield b"x"
        raise ValueError("not a message")

    await server.drain(broken())
