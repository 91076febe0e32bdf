"""Egress tasks: CDN pushes and recordings of a room."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from gateway.api import NODE
from gateway.api.middleware import require_operator
from gateway.api.routing import ApiRouter
from gateway.egress import EgressRequest, EgressUpdate

if TYPE_CHECKING:
    from gateway.node import Node


def _node(request: web.Request) -> Node:
    return request.app[NODE]


async def start_egress(request: web.Request, body: EgressRequest) -> dict[str, Any]:
    """Start pushing (kind rtmp) or recording (kind record) the room's composite or one participant."""
    room_id = request.match_info["room_id"]
    require_operator(request, "egress.start", room_id)
    task = await _node(request).egress.create(room_id, body)
    return task.describe()


async def list_room_egress(request: web.Request) -> dict[str, Any]:
    room_id = request.match_info["room_id"]
    require_operator(request, "egress.list", room_id)
    node = _node(request)
    await node.rooms.get(room_id)
    return {"egress": [t.describe() for t in node.egress.list(room_id)]}


async def get_egress(request: web.Request) -> dict[str, Any]:
    require_operator(request, "egress.read")
    return _node(request).egress.get(request.match_info["egress_id"]).describe()


async def update_egress(request: web.Request, body: EgressUpdate) -> dict[str, Any]:
    """Live update: layout, audio selection, or the URL list (new ones start, missing ones stop)."""
    require_operator(request, "egress.update")
    task = await _node(request).egress.update(request.match_info["egress_id"], body)
    return task.describe()


async def stop_egress(request: web.Request) -> dict[str, Any]:
    """Stop; the answer is the final status with the file list."""
    require_operator(request, "egress.stop")
    task = await _node(request).egress.stop(request.match_info["egress_id"])
    return task.describe()


def register(router: ApiRouter) -> None:
    tags = ("egress",)
    router.add("POST", "/v1/rooms/{room_id}/egress", start_egress, body=EgressRequest, status=201, tags=tags,
               errors=(404, 422))
    router.add("GET", "/v1/rooms/{room_id}/egress", list_room_egress, tags=tags, errors=(404,))
    router.add("GET", "/v1/egress/{egress_id}", get_egress, tags=tags, errors=(404,))
    router.add("PATCH", "/v1/egress/{egress_id}", update_egress, body=EgressUpdate, tags=tags, errors=(404, 422))
    router.add("DELETE", "/v1/egress/{egress_id}", stop_egress, tags=tags, errors=(404,))
