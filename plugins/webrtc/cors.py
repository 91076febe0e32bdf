"""CORS for WHIP/WHEP resources: allowed origins from ``[plugins.webrtc] cors_origins``."""

from __future__ import annotations

from aiohttp import web

METHODS = "POST, DELETE, PATCH, OPTIONS"
HEADERS = "Authorization, Content-Type, If-Match"
EXPOSE = "Location, ETag, Link, Accept-Patch"


def apply(request: web.Request, response: web.StreamResponse, origins: list[str]) -> web.StreamResponse:
    origin = request.headers.get("Origin")
    if origin and ("*" in origins or origin in origins):
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Vary"] = "Origin"
        response.headers["Access-Control-Allow-Methods"] = METHODS
        response.headers["Access-Control-Allow-Headers"] = HEADERS
        response.headers["Access-Control-Expose-Headers"] = EXPOSE
        response.headers["Access-Control-Max-Age"] = "600"
    return response
