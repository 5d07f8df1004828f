"""How the gateway's HTTP server treats slow and numerous clients.

uvicorn 0.54 (h11 or httptools) has no request-read timeout: a connection that sends nothing, or
sends its headers a byte at a time (slowloris), is kept for as long as the client
likes — its keep-alive timer only starts after a response. Its ``limit_concurrency``
is no connection cap either: it answers 503 to *requests* once that many connections
are open, so 200 clients that never finish their headers would turn every well-behaved
request away. The protocol below adds, per connection:

- a read deadline: a request's headers and body must arrive within
  ``AOS_GATEWAY_HEADER_TIMEOUT_S`` of the connection opening (or of the previous
  response, on a kept-alive connection); otherwise the connection is closed;
- a connection cap: past ``AOS_GATEWAY_MAX_CONNECTIONS`` open connections, a new one
  closes the oldest connection that is still waiting for its request (a slow client
  never holds a slot a working one needs); only when every connection is busy with a
  request is the new one refused (closed at once).

A subclass of uvicorn's own protocol for the parser AOS_GATEWAY_HTTP_PARSER names (httptools,
the default, or h11), selected through ``uvicorn.Config(http=...)``: the smallest hook there is
(no ASGI middleware sees a connection before its headers).
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any

import h11
import uvicorn
from starlette.types import ASGIApp
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("aos.gateway")

# Their side of the connection is still sending a request (or has not begun one).
_READING = (h11.IDLE, h11.SEND_BODY)


class _ReadGuard:
    """A request-read deadline and a connection cap for a uvicorn HTTP protocol (class attributes,
    set by ``protocol``): mixed into the h11 and httptools protocols before uvicorn's own class;
    each says by ``_reading`` whether its peer is still sending a request."""

    header_timeout_s: float = 10.0
    max_connections: int = 1000
    # uvicorn's protocols have these (typed here for the mixin's own methods)
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport
    connections: set[Any]
    client: tuple[str, int] | None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read_deadline: asyncio.TimerHandle | None = None
        self.opened_at = 0.0

    def _reading(self) -> bool:
        raise NotImplementedError

    def waiting(self) -> bool:
        raise NotImplementedError

    def connection_made(self, transport: Any) -> None:  # uvicorn's: an asyncio.Transport
        super().connection_made(transport)  # type: ignore[misc]
        self.opened_at = self.loop.time()
        self._arm()
        if len(self.connections) > self.max_connections:
            self._shed()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)  # type: ignore[misc]

    def _arm(self) -> None:
        self._disarm()
        self._read_deadline = self.loop.call_later(self.header_timeout_s, self._read_timed_out)

    def _disarm(self) -> None:
        if self._read_deadline is not None:
            self._read_deadline.cancel()
            self._read_deadline = None

    def _read_timed_out(self) -> None:
        self._read_deadline = None
        if self._reading() and not self.transport.is_closing():
            log.info("connection closed: request not read in time",
                     extra={"client": _address(self.client), "timeout_s": self.header_timeout_s})
            self.transport.close()

    def _shed(self) -> None:
        """Over the cap: close the oldest connection still waiting for its request, else this one."""
        waiting = [c for c in self.connections
                   if c is not self and isinstance(c, _ReadGuard) and c.waiting() and not c.transport.is_closing()]
        victim = min(waiting, key=lambda c: c.opened_at) if waiting else self
        log.warning("connection cap reached: closing a connection",
                    extra={"max_connections": self.max_connections, "client": _address(victim.client),
                           "closed": "oldest waiting" if victim is not self else "the new one"})
        victim._disarm()
        victim.transport.close()


class GuardedH11Protocol(_ReadGuard, H11Protocol):
    """uvicorn's h11 protocol with the read deadline and the connection cap."""

    def _reading(self) -> bool:
        return self.conn.their_state in _READING

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if not self._reading() or self.transport.is_closing():
            self._disarm()  # the request is in: its handling is bounded by the call's own deadline

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # A kept-alive connection waits for its next request under the same deadline.
        if not self.transport.is_closing() and self._reading():
            self._arm()

    def waiting(self) -> bool:
        """Still waiting for (the rest of) a request: no request of this connection is being served."""
        return self._reading() and (self.cycle is None or self.cycle.response_complete)


def _address(client: tuple[str, int] | None) -> str | None:
    return f"{client[0]}:{client[1]}" if client else None


# h11's limit on a request's head still incomplete (its max_incomplete_event_size default, which
# uvicorn keeps): the httptools protocol below refuses past the same size, as h11 would.
MAX_HEAD_BYTES = 16 * 1024
PARSERS = ("h11", "httptools")
# httptools (llhttp, C): about a seventh less of the gateway's CPU per REST call than h11 (pure
# Python), with the same guarantees here (BENCHMARKS.md, "REST through the gateway").
DEFAULT_PARSER = "httptools"


def _httptools_protocol() -> type[Any]:
    """uvicorn's httptools protocol (llhttp, C) with the same read deadline, connection cap and
    head limit as GuardedH11Protocol (AOS_GATEWAY_HTTP_PARSER, the default; issue #22: the HTTP
    parser's share of a REST call). Imported on demand: httptools is only needed when chosen."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class GuardedHttpToolsProtocol(_ReadGuard, HttpToolsProtocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._whole = 0            # requests read whole, their responses not complete yet
            self._head_pending = True  # the next request's head is not complete yet
            self._head_bytes = 0       # what has arrived of it

        def _reading(self) -> bool:
            return not self._whole

        def data_received(self, data: bytes) -> None:
            if self._head_pending:
                self._head_bytes += len(data)
            super().data_received(data)
            if self._head_pending and self._head_bytes > MAX_HEAD_BYTES and not self.transport.is_closing():
                msg = "Invalid HTTP request received."  # what uvicorn answers past h11's limit
                self.logger.warning(msg)
                self.send_400_response(msg)
            if self._whole or self.transport.is_closing():
                self._disarm()  # the request is in: its handling is bounded by the call's own deadline

        def on_headers_complete(self) -> None:
            self._head_pending, self._head_bytes = False, 0
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            if self.cycle is None or not self.cycle.response_complete:
                self._whole += 1
            self._head_pending, self._head_bytes = True, 0
            super().on_message_complete()

        def on_response_complete(self) -> None:
            self._whole = max(0, self._whole - 1)
            super().on_response_complete()
            # A kept-alive connection waits for its next request under the same deadline.
            if not self.transport.is_closing() and not self._whole:
                self._arm()

        def waiting(self) -> bool:
            """Still waiting for (the rest of) a request: no request of this connection is being served."""
            return not self._whole and (self.cycle is None or self.cycle.response_complete)

    return GuardedHttpToolsProtocol


def protocol(header_timeout_s: float, max_connections: int, parser: str = DEFAULT_PARSER) -> type[Any]:
    """The protocol class for these limits (uvicorn builds one instance per connection)."""
    if parser not in PARSERS:
        raise ValueError(f"unknown HTTP parser {parser!r}: one of {', '.join(PARSERS)}")
    base = GuardedH11Protocol if parser == "h11" else _httptools_protocol()
    return type(f"Gateway{parser.capitalize()}Protocol", (base,),
                {"header_timeout_s": float(header_timeout_s), "max_connections": int(max_connections)})


def config(app: ASGIApp, *, host: str, port: int, header_timeout_s: float, max_connections: int,
           parser: str = DEFAULT_PARSER, **kwargs: Any) -> uvicorn.Config:
    """uvicorn's configuration for the gateway: the guarded protocol (``parser``: httptools, or h11),
    keep-alive no longer than the read deadline, and a listen backlog that holds a burst the size
    of the cap.

    Without uvicorn's proxy headers middleware (on by default, trusting 127.0.0.1 and ::1 or
    FORWARDED_ALLOW_IPS): it replaced the connection's peer with X-Forwarded-For's before the
    gateway saw it, so a client on the gateway's host named any address it liked as the one the
    access evidence records. X-Forwarded-For is read by gateway.clients alone, from the
    AOS_TRUSTED_PROXIES only (and the middleware was per-call work besides)."""
    return uvicorn.Config(app, host=host, port=port, http=protocol(header_timeout_s, max_connections, parser),
                          timeout_keep_alive=min(5, max(1, int(header_timeout_s))),
                          backlog=max(2048, max_connections), proxy_headers=False, **kwargs)
