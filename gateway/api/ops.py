"""Operations: health, readiness, Prometheus metrics, nodes, the OpenAPI document and docs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.api import NODE, OPENAPI
from gateway.api.middleware import require_operator
from gateway.api.routing import ApiRouter
from gateway.api.schemas import Health, NodeList

if TYPE_CHECKING:
    from gateway.node import Node




def _node(request: web.Request) -> Node:
    return request.app[NODE]


async def healthz(request: web.Request) -> dict[str, Any]:
    """Liveness: the process answers."""
    return {"status": "ok"}


async def readyz(request: web.Request) -> web.Response:
    """Readiness: started, store reachable."""
    node = _node(request)
    store_ok = await node.store.ping()
    checks = {"started": node.ready, "store": store_ok}
    ok = all(checks.values())
    return web.json_response({"status": "ok" if ok else "unavailable", "checks": checks}, status=200 if ok else 503)


async def metrics(request: web.Request) -> web.Response:
    """Prometheus metrics (text exposition format)."""
    node = _node(request)
    node.metrics.refresh(node)
    return web.Response(body=generate_latest(node.metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def nodes(request: web.Request) -> dict[str, Any]:
    """Nodes serving this deployment, with rooms, participants and load (one node without a cluster)."""
    require_operator(request, "node.list")
    return {"nodes": [_node(request).describe()]}


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(request.app[OPENAPI])


def register(router: ApiRouter) -> None:
    tags = ("operations",)
    router.add("GET", "/healthz", healthz, response=Health, tags=tags, auth=False)
    router.add("GET", "/readyz", readyz, response=Health, tags=tags, auth=False, errors=(503,))
    router.add("GET", "/metrics", metrics, tags=tags, auth=False)
    router.add("GET", "/v1/nodes", nodes, response=NodeList, tags=tags)
    router.add("GET", "/openapi.json", openapi, tags=tags, auth=False)
