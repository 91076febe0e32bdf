"""Ingress tasks: WHIP, RTMP, URL/file play-in and test sources joining a room."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from gateway.api import NODE
from gateway.api.middleware import require_operator
from gateway.api.routing import ApiRouter
from gateway.ingress import IngressControl, IngressRequest

if TYPE_CHECKING:
    from gateway.node import Node


def _node(request: web.Request) -> Node:
    return request.app[NODE]


async def start_ingress(request: web.Request, body: IngressRequest) -> dict[str, Any]:
    """Bring media into the room as a participant (kind test publishes a colour field and tones)."""
    room_id = request.match_info["room_id"]
    require_operator(request, "ingress.start", room_id)
    task = await _node(request).ingress.create(room_id, body)
    return task.describe()


async def list_room_ingress(request: web.Request) -> dict[str, Any]:
    room_id = request.match_info["room_id"]
    require_operator(request, "ingress.list", room_id)
    node = _node(request)
    await node.rooms.get(room_id)
    return {"ingress": [t.describe() for t in node.ingress.list(room_id)]}


async def get_ingress(request: web.Request) -> dict[str, Any]:
    require_operator(request, "ingress.read")
    return _node(request).ingress.get(request.match_info["ingress_id"]).describe()


async def control_ingress(request: web.Request, body: IngressControl) -> dict[str, Any]:
    require_operator(request, "ingress.control")
    return await _node(request).ingress.control(request.match_info["ingress_id"], body)


async def stop_ingress(request: web.Request) -> dict[str, Any]:
    require_operator(request, "ingress.stop")
    task = await _node(request).ingress.stop(request.match_info["ingress_id"])
    return task.describe()


def register(router: ApiRouter) -> None:
    tags = ("ingress",)
    router.add("POST", "/v1/rooms/{room_id}/ingress", start_ingress, body=IngressRequest, status=201, tags=tags,
               errors=(404, 422))
    router.add("GET", "/v1/rooms/{room_id}/ingress", list_room_ingress, tags=tags, errors=(404,))
    router.add("GET", "/v1/ingress/{ingress_id}", get_ingress, tags=tags, errors=(404,))
    router.add("POST", "/v1/ingress/{ingress_id}/control", control_ingress, body=IngressControl, tags=tags,
               errors=(404, 422))
    router.add("DELETE", "/v1/ingress/{ingress_id}", stop_ingress, tags=tags, errors=(404,))
