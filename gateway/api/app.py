"""Builds the aiohttp application: middlewares, core routes, plugin routes, OpenAPI, docs."""

from __future__ import annotations

from typing import TYPE_CHECKING

import swagger_ui
from aiohttp import web

from gateway import __version__
from gateway.api import NODE, OPENAPI, auth, egress, files, ingress, ops, rooms, ws
from gateway.api.cors import make_cors_middleware
from gateway.api.middleware import errors_middleware, make_auth_middleware, make_rate_limit_middleware
from gateway.api.openapi import apply_node_enums
from gateway.api.routing import ApiRouter

if TYPE_CHECKING:
    from gateway.node import Node

DESCRIPTION = """Self-hosted media gateway. Authenticate with `POST /v1/auth/token`, then send
`Authorization: Bearer <token>`. Errors are `{"error": {"code", "message", "field"}}`."""


def core_router() -> ApiRouter:
    router = ApiRouter()
    for module in (ops, auth, rooms, files, ws, egress, ingress):
        module.register(router)
    return router


def build_app(node: Node) -> web.Application:
    app = web.Application(middlewares=[make_cors_middleware(node), errors_middleware, make_rate_limit_middleware(node),
                                       make_auth_middleware(node)],
                          client_max_size=node.config.http.max_json_kb * 1024)
    app[NODE] = node
    router = core_router()
    router.install(app)
    app[OPENAPI] = apply_node_enums(router.openapi(title="mediagate", version=__version__, description=DESCRIPTION),
                                    node)
    node.pm.hook.mediagate_http_routes(app=app, node=node)
    install_docs(app)
    return app


def install_docs(app: web.Application) -> None:
    """Swagger UI at /docs over the served /openapi.json. swagger-ui-py puts its url_prefix in
    front of a relative config URL (``/docs/openapi.json``, a 404), so point the page's ``url``
    parameter at the document's real path after it has built its defaults."""
    doc = swagger_ui.core.ApplicationDocument(app, config_rel_url="/openapi.json", url_prefix="/docs",
                                              title="mediagate API")
    doc.parameters["url"] = '"/openapi.json"'
    doc.match_handler()(doc)
