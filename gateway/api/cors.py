"""CORS for the REST API (``[http] cors_origins``): third-party pages may call ``/v1/`` from
the origins listed; the default (empty) is same-origin only, so browsers send no cross-origin
request at all. Preflights (OPTIONS with ``Access-Control-Request-Method``) are answered
here, before authentication, since browsers never send credentials on them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from gateway.node import Node

HandlerT = Callable[[web.Request], Awaitable[web.StreamResponse]]
METHODS = "GET, POST, PUT, PATCH, DELETE, OPTIONS"
HEADERS = "Authorization, Content-Type, X-Request-Id"


def make_cors_middleware(node: Node) -> Callable[[web.Request, HandlerT], Awaitable[web.StreamResponse]]:
    origins = set(node.config.http.cors_origins)

    def allowed(origin: str | None) -> bool:
        return bool(origin) and ("*" in origins or origin in origins)

    @web.middleware
    async def cors_middleware(request: web.Request, handler: HandlerT) -> web.StreamResponse:
        if not request.path.startswith("/v1/"):
            return await handler(request)  # plugins (WHIP/WHEP) answer CORS for their own paths
        origin = request.headers.get("Origin")
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            response: web.StreamResponse = web.Response(status=204 if allowed(origin) else 403)
        else:
            response = await handler(request)
        if allowed(origin) and not response.prepared:
            response.headers["Access-Control-Allow-Origin"] = origin  # type: ignore[assignment]
            response.headers["Vary"] = "Origin"
            response.headers["Access-Control-Allow-Methods"] = METHODS
            response.headers["Access-Control-Allow-Headers"] = HEADERS
            response.headers["Access-Control-Expose-Headers"] = "X-Request-Id, Location, ETag"
            response.headers["Access-Control-Max-Age"] = "600"
        return response
    return cors_middleware
