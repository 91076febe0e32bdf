"""Rooms, participants and the room layout."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from gateway.api import NODE
from gateway.api.middleware import principal, require_operator, require_room_access
from gateway.api.routing import ApiRouter
from gateway.errors import ValidationFailed
from gateway.media.layout.model import Layout
from gateway.rooms.models import (
    ParticipantOut,
    ParticipantUpdate,
    RoomCreate,
    RoomList,
    RoomLock,
    RoomOut,
    RoomUpdate,
)
from gateway.rooms.room import Room
from gateway.security import Permission

if TYPE_CHECKING:
    from gateway.node import Node


def _node(request: web.Request) -> Node:
    return request.app[NODE]


async def create_room(request: web.Request, body: RoomCreate) -> dict[str, Any]:
    """Create a room. A join token with the 'create room' bit (1) may create its own room id."""
    who = principal(request)
    if not who.is_operator:
        if not who.can(Permission.CREATE_ROOM) or body.room_id != who.room_id:
            require_operator(request, "room.create", body.room_id)
    else:
        require_operator(request, "room.create", body.room_id)
    node = _node(request)
    if body.layout is not None:  # the same checks as PUT /layout (templates, images), on the empty room
        try:
            node.media.validate_layout(Room({"room_id": body.room_id or "new", "settings": {}}), body.layout)
        except ValidationFailed as exc:
            exc.field = f"layout.{exc.field}" if exc.field else "layout"
            raise
    room = await node.rooms.create(body, creator=None if who.is_operator else who.subject)
    return node.rooms.describe(room)


async def list_rooms(request: web.Request) -> dict[str, Any]:
    """Open rooms on this node, with their participants."""
    require_operator(request, "room.list")
    node = _node(request)
    rooms = [node.rooms.describe(room) for room in node.rooms.list()]
    return {"rooms": rooms, "room_count": len(rooms), "participant_count": sum(r["participant_count"] for r in rooms)}


async def get_room(request: web.Request) -> dict[str, Any]:
    room_id = request.match_info["room_id"]
    require_room_access(request, room_id)
    node = _node(request)
    return node.rooms.describe(await node.rooms.get(room_id))


async def update_room(request: web.Request, body: RoomUpdate) -> dict[str, Any]:
    room_id = request.match_info["room_id"]
    require_operator(request, "room.update", room_id)
    node = _node(request)
    return node.rooms.describe(await node.rooms.update(room_id, body))


async def delete_room(request: web.Request) -> None:
    """Close the room (everyone removed, tasks stopped) and delete its record."""
    room_id = request.match_info["room_id"]
    require_operator(request, "room.delete", room_id)
    await _node(request).rooms.delete(room_id)


async def close_room(request: web.Request) -> dict[str, Any]:
    """End the meeting: remove everyone and stop its tasks; the record stays as closed."""
    room_id = request.match_info["room_id"]
    require_operator(request, "room.close", room_id)
    node = _node(request)
    room = await node.rooms.close(room_id, "api")
    return node.rooms.describe(room)


async def lock_room(request: web.Request, body: RoomLock) -> dict[str, Any]:
    """Lock (no one new may join) or unlock a room."""
    room_id = request.match_info["room_id"]
    require_operator(request, "room.lock", room_id)
    node = _node(request)
    return node.rooms.describe(await node.rooms.set_locked(room_id, body.locked))


async def list_participants(request: web.Request) -> list[dict[str, Any]]:
    room_id = request.match_info["room_id"]
    require_room_access(request, room_id)
    node = _node(request)
    room = await node.rooms.get(room_id)
    return [node.rooms.describe_participant(room, p) for p in room.participants.values()]


async def update_participant(request: web.Request, body: ParticipantUpdate) -> dict[str, Any]:
    """Rename, change role, mute or stop forwarding a participant (setnick/setrole/setstate)."""
    room_id, pid = request.match_info["room_id"], request.match_info["participant_id"]
    require_operator(request, "participant.update", room_id)
    node = _node(request)
    participant = await node.rooms.update_participant(room_id, pid, body)
    return node.rooms.describe_participant(await node.rooms.get(room_id), participant)


async def kick_participant(request: web.Request) -> None:
    """Remove a participant: hangs up SIP legs, ends WHIP sessions, stops players."""
    room_id, pid = request.match_info["room_id"], request.match_info["participant_id"]
    require_operator(request, "participant.kick", room_id)
    await _node(request).rooms.kick(room_id, pid)


async def put_layout(request: web.Request, body: Layout) -> dict[str, Any]:
    """Set the room's default composite; egress tasks use it unless they carry their own."""
    room_id = request.match_info["room_id"]
    require_operator(request, "room.layout", room_id)
    node = _node(request)
    room = await node.rooms.set_layout(room_id, body)
    return room.record["layout"]


async def get_layout(request: web.Request) -> dict[str, Any]:
    room_id = request.match_info["room_id"]
    require_room_access(request, room_id)
    node = _node(request)
    room = await node.rooms.get(room_id)
    return room.record.get("layout") or node.media.default_layout(room).model_dump()


def register(router: ApiRouter) -> None:
    tags = ("rooms",)
    router.add("POST", "/v1/rooms", create_room, body=RoomCreate, response=RoomOut, status=201, tags=tags,
               errors=(409, 503))
    router.add("GET", "/v1/rooms", list_rooms, response=RoomList, tags=tags)
    router.add("GET", "/v1/rooms/{room_id}", get_room, response=RoomOut, tags=tags, errors=(404,))
    router.add("PATCH", "/v1/rooms/{room_id}", update_room, body=RoomUpdate, response=RoomOut, tags=tags,
               errors=(404,))
    router.add("DELETE", "/v1/rooms/{room_id}", delete_room, status=204, tags=tags, errors=(404,))
    router.add("POST", "/v1/rooms/{room_id}/close", close_room, response=RoomOut, tags=tags, errors=(404,))
    router.add("POST", "/v1/rooms/{room_id}/lock", lock_room, body=RoomLock, response=RoomOut, tags=tags,
               errors=(404,), body_required=False)  # no body locks
    tags = ("participants",)
    router.add("GET", "/v1/rooms/{room_id}/participants", list_participants, tags=tags, errors=(404,),
               response=ParticipantOut, many=True)
    router.add("PATCH", "/v1/rooms/{room_id}/participants/{participant_id}", update_participant,
               body=ParticipantUpdate, response=ParticipantOut, tags=tags, errors=(404,))
    router.add("DELETE", "/v1/rooms/{room_id}/participants/{participant_id}", kick_participant, status=204,
               tags=tags, errors=(404,))
    tags = ("composition",)
    router.add("PUT", "/v1/rooms/{room_id}/layout", put_layout, body=Layout, response=Layout, tags=tags,
               errors=(404,))
    router.add("GET", "/v1/rooms/{room_id}/layout", get_layout, response=Layout, tags=tags, errors=(404,))
