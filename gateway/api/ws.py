"""The room WebSocket: live events, chat and control commands for one room.

Open it with a join token (the socket *is* that participant, limited by its permission
bits) or an API token (an operator, who may act on anyone). Each text message is one
command in text or JSON form; the reply is ``{"type": "result", ...}`` or
``{"type": "error", "error": {...}}`` and the connection stays open whatever is sent.
Events arrive as ``{"type": "event", ...}``, filtered by the ``subscribe`` mask: 0x1 own
state, 0x2 other participants, 0x4 room state, 0x8 chat.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import WSMsgType, web

from gateway import events as ev
from gateway.api import NODE, jsonbody
from gateway.api.middleware import require_room_access
from gateway.control import CommandContext
from gateway.errors import Forbidden, MediagateError, TooManyRequests
from gateway.rooms.participant import ParticipantKind
from gateway.security import Permission

if TYPE_CHECKING:
    from gateway.events import Event
    from gateway.node import Node

log = structlog.get_logger(__name__)

MAX_MESSAGE = 64 * 1024
RATE_PER_S = 30  # commands per second per socket, TRTC's room message rate


@dataclass
class Session:
    mask: int = 0xF
    participant_id: str | None = None
    tokens: float = RATE_PER_S
    refilled: float = 0.0

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(RATE_PER_S, self.tokens + (now - self.refilled) * RATE_PER_S)
        self.refilled = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True

    def wants(self, event: Event) -> bool:
        name = event.event
        if name == ev.ROOM_CHAT:
            target = event.data.get("target")
            return (bool(self.mask & 0x8) and target in (None, self.participant_id)) or \
                event.data.get("sender") == self.participant_id
        if name.startswith("participant."):
            subject = event.data.get("participant_id") or (event.data.get("participant") or {}).get("participant_id")
            bit = 0x1 if subject and subject == self.participant_id else 0x2
            return bool(self.mask & bit)
        return bool(self.mask & 0x4)


class SocketEdge:
    """Lets the room service end this participant's socket (kick, room closed)."""

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws

    async def close(self, reason: str) -> None:
        if not self.ws.closed:
            await self.ws.send_json({"type": "closed", "reason": reason})
            await self.ws.close(code=4000, message=reason.encode()[:120])


async def room_ws(request: web.Request) -> web.StreamResponse:
    node: Node = request.app[NODE]
    room_id = request.match_info["room_id"]
    who = require_room_access(request, room_id, "room.ws")
    room = await node.rooms.get(room_id)
    if not who.is_operator and not who.can(Permission.ENTER):
        raise Forbidden("this join token lacks the 'enter room' permission (2)", code="permission_denied")
    ws = web.WebSocketResponse(heartbeat=30, max_msg_size=MAX_MESSAGE)
    await ws.prepare(request)
    session = Session(refilled=time.monotonic())
    subscription = node.events.subscribe(room_id, maxsize=2000)
    own_participant = None
    participant = None
    try:
        if not who.is_operator:
            # an operator-issued token may open a control socket beside the identity's media edge;
            # a password self-join never stands for a connected identity (join() answers 409)
            existing = room.by_identity(who.subject) if who.admission is None else []
            if existing:
                participant = existing[0]
            else:
                participant = await node.rooms.join(room_id, who.subject, kind=ParticipantKind.WEBRTC,
                                                    name=who.name or who.subject, permissions=who.permissions,
                                                    edge=SocketEdge(ws), admission=who.admission)
                own_participant = participant
            session.participant_id = participant.participant_id
        await ws.send_json({"type": "welcome", "room": node.rooms.describe(room),
                            "participant_id": session.participant_id,
                            "commands": sorted(node.commands.commands)})
    except MediagateError as exc:
        await ws.send_json({"type": "error", **exc.to_dict()})
        await ws.close(code=4003, message=exc.code.encode())
        subscription.close()
        return ws
    pump = asyncio.create_task(_pump_events(ws, subscription, session), name=f"ws-events-{room_id}")
    try:
        async for message in ws:
            if message.type == WSMsgType.TEXT:
                await _handle_command(node, ws, room_id, who, participant, session, message.data)
            elif message.type == WSMsgType.BINARY:
                await ws.send_json({"type": "error", "error": {
                    "code": "unsupported", "message": "binary messages are not supported; send text", "field": None}})
            elif message.type == WSMsgType.ERROR:
                log.info("websocket error", error=str(ws.exception()))
    finally:
        pump.cancel()
        subscription.close()
        if own_participant is not None:
            await asyncio.shield(node.rooms.leave(room_id, own_participant.participant_id, "disconnected"))
    return ws


async def _handle_command(node: Node, ws: web.WebSocketResponse, room_id: str, who: Any, participant: Any,
                          session: Session, data: str) -> None:
    request_id = None
    if data.lstrip().startswith("{"):
        try:
            request_id = jsonbody.loads(data).get("id")
        except (MediagateError, AttributeError):
            request_id = None
    try:
        if not session.take():
            raise TooManyRequests(f"more than {RATE_PER_S} commands per second", code="rate_limited")
        room = await node.rooms.get(room_id)
        ctx = CommandContext(node=node, room=room, principal=who, sender=participant, session=session)
        name, result = await node.commands.run(ctx, data)
        reply = {"type": "result", "cmd": name, "ok": True, **result}
    except MediagateError as exc:
        reply = {"type": "error", **exc.to_dict()}
    except Exception:
        log.exception("command failed", room_id=room_id)
        reply = {"type": "error", "error": {"code": "internal_error", "message": "internal error", "field": None}}
    if request_id is not None:
        reply["id"] = request_id
    if not ws.closed:
        await ws.send_json(reply)


async def _pump_events(ws: web.WebSocketResponse, subscription: Any, session: Session) -> None:
    try:
        while not ws.closed:
            event = await subscription.get()
            if session.wants(event):
                await ws.send_str(json.dumps({"type": "event", **event.to_dict()}, ensure_ascii=False, default=str))
    except (ConnectionResetError, asyncio.CancelledError):
        pass


def register(router: Any) -> None:
    router.add("GET", "/v1/rooms/{room_id}/ws", room_ws, tags=("rooms",), errors=(400, 404),
               summary="Room WebSocket: events, chat and control commands (join token or API token)")
