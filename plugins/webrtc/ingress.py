"""Ingress kind ``whip``: ``POST /v1/rooms/{id}/ingress {kind: "whip"}`` returns a WHIP URL and
a bearer token to paste into OBS; the participant joins when the publisher connects and
leaves when it stops. The task ends when the operator deletes it or the room closes."""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any

from gateway.errors import Unprocessable, ValidationFailed
from gateway.ingress import IngressControl, IngressRequest

if TYPE_CHECKING:
    from gateway.node import Node
    from gateway.rooms.room import Room
    from gateway.tasks import Task
    from plugins.webrtc import WebRTCPlugin


class WhipIngress:
    def __init__(self, plugin: WebRTCPlugin, task: Task, room_id: str, identity: str, name: str, token: str) -> None:
        self.plugin = plugin
        self.task = task
        self.room_id = room_id
        self.identity = identity
        self.name = name
        self.token = token
        self.participant_id = ""
        self.session: Any = None
        self.sessions = 0

    async def attach(self, session: Any) -> None:
        """A publisher connected with this ingress's token (a new one replaces the old)."""
        if self.session is not None and not self.session.ended:
            await self.session.end("replaced")
        self.session = session
        self.sessions += 1
        self.participant_id = session.participant_id
        self.task.result.update(participant_id=session.participant_id, state="publishing")

    async def detach(self, session: Any, reason: str) -> None:
        if self.session is session:
            self.session = None
            self.task.result.update(state="waiting", last_end_reason=reason)

    async def control(self, command: IngressControl) -> dict[str, Any]:
        raise Unprocessable(f"a WHIP ingress cannot {command.action}", code="unsupported_action", field="action")

    async def stop(self) -> dict[str, Any]:
        self.plugin.ingress_tokens.pop(self.token, None)
        if self.session is not None:
            await self.session.end("ingress_stopped")
        return {"sessions": self.sessions}


class WhipIngressKind:
    name = "whip"

    def __init__(self, plugin: WebRTCPlugin) -> None:
        self.plugin = plugin

    def validate(self, request: IngressRequest, node: Node) -> None:
        if request.url:
            raise ValidationFailed("a WHIP ingress takes no url: the publisher pushes to whip_url", field="url")

    async def start(self, task: Task, request: IngressRequest, room: Room, node: Node) -> WhipIngress:
        token = secrets.token_urlsafe(24)
        runner = WhipIngress(self.plugin, task, room.room_id, request.identity, request.name or request.identity,
                             token)
        self.plugin.ingress_tokens[token] = runner
        task.result.update(whip_url=f"{node.public_url()}/whip/{room.room_id}", bearer_token=token, state="waiting")
        return runner
