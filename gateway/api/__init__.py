"""The HTTP surface: thin aiohttp handlers that translate requests into service calls."""

from __future__ import annotations

from typing import Any

from aiohttp import web

NODE: web.AppKey[Any] = web.AppKey("node", object)  # the gateway.node.Node serving the app
OPENAPI: web.AppKey[dict[str, Any]] = web.AppKey("openapi", dict)
PRINCIPAL: web.RequestKey[Any] = web.RequestKey("principal", object)  # gateway.security.Principal
REQUEST_ID: web.RequestKey[str] = web.RequestKey("request_id", str)
