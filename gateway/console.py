"""The web console (``/``) and the API docs (``/docs``): files of gateway/console, served as they are.

No server-side rendering and no build step: the pages are static HTML and one script that
calls the same REST API as any client, with the bearer token the person signed in with
(kept in the tab's sessionStorage, never in a URL the server sees). Every answer carries a
Content-Security-Policy without 'unsafe-inline': scripts and styles only from these files,
requests only to this origin, no framing.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

FILES = Path(__file__).with_name("console")
# 'self' only. img-src data: for the SVG icons Swagger UI's stylesheet embeds.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    # The pages are small and change with the release: always revalidated.
    "Cache-Control": "no-cache",
}
# The only paths the console answers (the rest of the space is the API's).
PATHS = frozenset({"/", "/docs", "/redoc"})
PREFIX = "/console"


class _Secured:
    """Adds the console's security headers to every answer of the wrapped app."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in HEADERS.items():
                    headers[name] = value
            await send(message)

        await self.app(scope, receive, with_headers)


def _page(name: str) -> Callable[[Request], Awaitable[Response]]:
    async def page(request: Request) -> Response:
        return FileResponse(FILES / name, media_type="text/html; charset=utf-8", headers=HEADERS)
    return page


async def _redoc(request: Request) -> Response:
    return RedirectResponse("/docs", status_code=308)  # one API viewer: Swagger UI


def routes() -> list[BaseRoute]:
    """``/`` (the console), ``/docs`` (Swagger UI over /openapi.json), ``/console/…`` (their files)."""
    return [Route("/", _page("index.html"), methods=["GET", "HEAD"]),
            Route("/docs", _page("docs.html"), methods=["GET", "HEAD"]),
            Route("/redoc", _redoc, methods=["GET", "HEAD"]),
            Mount(PREFIX, app=_Secured(StaticFiles(directory=FILES, html=False)), name="console")]
