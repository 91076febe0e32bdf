"""A WebRTC session: one RTCPeerConnection, its lifetime and its end.

A session ends once, for one reason: DELETE on its resource, the peer's DTLS close, ICE
consent lost (a peer that vanished), no connection within ``connect_timeout_s``, a kick or
the room closing. Subclasses release what they hold in :meth:`released`.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import TYPE_CHECKING, Any

import structlog
from aiortc import RTCPeerConnection, RTCSessionDescription

from plugins.webrtc import ice

if TYPE_CHECKING:
    from plugins.webrtc.registry import SessionRegistry

log = structlog.get_logger(__name__)


class Session:
    kind = "session"  # "whip" | "whep" | "room"

    def __init__(self, registry: SessionRegistry, room_id: str) -> None:
        self.registry = registry
        self.config = registry.config
        self.room_id = room_id
        self.session_id = secrets.token_urlsafe(12)
        self.etag = f'"{secrets.token_hex(8)}"'
        self.pc = RTCPeerConnection(ice.rtc_configuration(self.config.ice_servers))
        self.created_at = time.time()
        self.connected_at: float | None = None
        self.ended = False
        self.end_reason = ""
        self.caller_token = ""  # the bearer that created it may DELETE it
        self.ingress: Any = None  # the whip ingress task it publishes for, if any
        self._watchdog: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.pc.on("connectionstatechange", self._state_changed)

    # ---------------------------------------------------------------- negotiation
    async def answer(self, offer_sdp: str) -> str:
        """Apply the offer, gather every candidate (no trickle), return the answer SDP."""
        await self.pc.setRemoteDescription(RTCSessionDescription(offer_sdp, "offer"))
        await self.prepare()
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        loop = asyncio.get_running_loop()
        self._watchdog = loop.call_later(self.config.connect_timeout_s, self._connect_timed_out)
        return ice.advertise_public(self.pc.localDescription.sdp, self.config.public_address)

    async def prepare(self) -> None:
        """After the offer is applied and before the answer: add tracks, route receivers."""

    # ---------------------------------------------------------------- lifecycle
    def _state_changed(self) -> None:
        state = self.pc.connectionState
        if state == "connected" and self.connected_at is None:
            self.connected_at = time.time()
            if self._watchdog:
                self._watchdog.cancel()
            self.connected()
        elif state in ("failed", "closed") and not self.ended:
            self._spawn(self.end("ice_failed" if state == "failed" else "peer_closed"))

    def connected(self) -> None:
        log.info("webrtc session connected", kind=self.kind, session_id=self.session_id, room_id=self.room_id)

    def _connect_timed_out(self) -> None:
        if not self.ended and self.connected_at is None:
            self._spawn(self.end("connect_timeout"))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)  # the loop keeps only weak references to tasks
        task.add_done_callback(self._tasks.discard)

    async def end(self, reason: str) -> None:
        if self.ended:
            return
        self.ended = True
        self.end_reason = reason
        if self._watchdog:
            self._watchdog.cancel()
        self.registry.remove(self)
        try:
            await self.released(reason)
        except Exception:
            log.exception("webrtc session release failed", session_id=self.session_id)
        try:
            await self.pc.close()
        except Exception:
            log.exception("peer connection close failed", session_id=self.session_id)
        log.info("webrtc session ended", kind=self.kind, session_id=self.session_id, reason=reason)

    async def released(self, reason: str) -> None:
        """Give back tracks, outputs and the participant."""

    async def close(self, reason: str) -> None:
        """As a participant's edge (kick, room closed): end without leaving again."""
        await self.end(reason)

    def describe(self) -> dict[str, Any]:
        return {"session_id": self.session_id, "kind": self.kind, "room_id": self.room_id,
                "state": self.pc.connectionState, "created_at": self.created_at}
