"""The WebRTC edge: WHIP ingest, WHEP playback with one shared encode, and the browser room
page, on aiortc.

- :mod:`.http` — the WHIP/WHEP endpoints and session resources, the room page's files;
- :mod:`.publisher` — received tracks become room tracks, still encoded (:mod:`.passthrough`);
- :mod:`.player`, :mod:`.feeds` — shared encodes and forwarded packets fanned out to viewers;
- :mod:`.room_client` — the room page's signalling, as room WebSocket commands;
- :mod:`.ice` — host addresses, port range, consent timing, 1:1 NAT for aioice;
- :mod:`.ingress` — the ``whip`` ingress kind (a URL and a bearer token for OBS).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from gateway import events as ev
from gateway.hookspecs import hookimpl
from plugins.webrtc import ice, native_rx, passthrough
from plugins.webrtc.config import WebRTCConfig
from plugins.webrtc.http import WebRTCRoutes
from plugins.webrtc.ingress import WhipIngressKind
from plugins.webrtc.player import Playback
from plugins.webrtc.registry import SessionRegistry

if TYPE_CHECKING:
    from aiohttp import web

    from gateway.control import ControlCommand
    from gateway.events import Event
    from gateway.node import Node

__all__ = ["WebRTCConfig", "WebRTCPlugin"]


class WebRTCPlugin:
    config_model = WebRTCConfig

    def __init__(self) -> None:
        self.config = WebRTCConfig()
        self.node: Any = None
        self.registry: SessionRegistry = SessionRegistry(self.config)
        self.playback: Playback | None = None
        self.ingress_tokens: dict[str, Any] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    @hookimpl
    def mediagate_configure(self, node: Node) -> None:
        self.node = node
        self.registry = SessionRegistry(self.config)
        self.playback = Playback(node, self.config, self.registry)
        ice.apply(self.config)
        native_rx.Settings.enabled = self.config.native_receive
        passthrough.install()

    @hookimpl
    def mediagate_http_routes(self, app: web.Application, node: Node) -> None:
        WebRTCRoutes(self).install(app)

    @hookimpl
    def mediagate_ingress_kinds(self, node: Node) -> list[WhipIngressKind]:
        return [WhipIngressKind(self)]

    @hookimpl
    def mediagate_control_commands(self, node: Node) -> list[ControlCommand]:
        from plugins.webrtc.room_client import commands

        return commands(self)

    @hookimpl
    def mediagate_event(self, event: Event, node: Node) -> None:
        # a participant that left (kicked, socket closed) takes its WebRTC sessions along
        if event.event == ev.PARTICIPANT_LEFT:
            for session in self.registry.of_participant(event.data.get("participant_id", "")):
                self._spawn(session.end(event.data.get("reason") or "left"))
        elif event.event == ev.ROOM_CLOSED:
            for session in self.registry.in_room(event.room_id or ""):
                self._spawn(session.end("room_closed"))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)  # held until done: the loop keeps only weak references
        task.add_done_callback(self._tasks.discard)

    async def session_ended(self, session: Any, reason: str) -> None:
        runner = session.ingress
        if runner is not None:
            await runner.detach(session, reason)

    @hookimpl
    async def mediagate_shutdown(self, node: Node) -> None:
        for session in list(self.registry.sessions.values()):
            await session.end("node_shutdown")
        if self.playback is not None:
            self.playback.close()
