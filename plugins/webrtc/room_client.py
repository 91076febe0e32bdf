"""The room page's signalling, as room WebSocket commands (the socket *is* the participant):

- ``{"cmd": "webrtc.publish", "sdp": offer, "source": "camera"}`` → ``{"sdp": answer,
  "session_id"}``: one sendrecv connection publishing camera and microphone, receiving the
  room composite and the room's mix minus this participant;
- ``{"cmd": "webrtc.publish", "sdp": offer, "source": "screen"}``: a screen share (sendonly);
- ``{"cmd": "webrtc.unpublish", "session_id": id}``: ends one of them.

Tracks published this way belong to the socket's participant: they go when it leaves.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from gateway.control import CommandContext, ControlCommand
from gateway.errors import BadRequest, MediagateError
from gateway.security import Permission
from plugins.webrtc import auth
from plugins.webrtc.player import MixMinusTrack, codec_preferences
from plugins.webrtc.publisher import PublishSession
from plugins.webrtc.sdp import check_publishable, parse_offer

if TYPE_CHECKING:
    from plugins.webrtc import WebRTCPlugin
    from plugins.webrtc.player import FeedGroup


class RoomSession(PublishSession):
    """Publishes a browser's camera and mic; sends it the composite and its mix-minus."""

    kind = "room"

    def __init__(self, plugin: WebRTCPlugin, room: Any, participant_id: str, *, screen: bool) -> None:
        super().__init__(plugin.registry, plugin.node, room.room_id, participant_id, screen=screen,
                         leave_on_end=False)
        self.plugin = plugin
        self.room = room
        self.group: FeedGroup | None = None
        self.outbound: list[Any] = []

    async def setup(self, summary: Any, permissions: int) -> None:
        if self.screen:
            return
        assert self.plugin.playback is not None
        if "video" in summary.kinds and permissions & Permission.RECV_VIDEO:
            self.group = await self.plugin.playback.acquire(self.room, None, {"h264"})
            if self.group.video is not None:
                track = self.group.video.attach()
                transceiver = self.pc.addTransceiver(track, direction="sendrecv")
                transceiver.setCodecPreferences(codec_preferences("video", "h264"))
                self.outbound.append(track)
        if "audio" in summary.kinds and permissions & Permission.RECV_AUDIO:
            media = self.node.media.room_media(self.room)
            track = MixMinusTrack(media.mixer, self.participant_id)
            transceiver = self.pc.addTransceiver(track, direction="sendrecv")
            transceiver.setCodecPreferences(codec_preferences("audio", "opus"))
            self.outbound.append(track)

    async def released(self, reason: str) -> None:
        for track in self.outbound:
            track.stop()
        if self.group is not None and self.plugin.playback is not None:
            self.plugin.playback.release(self.group)
            self.group = None
        await super().released(reason)


def commands(plugin: WebRTCPlugin) -> list[ControlCommand]:
    async def publish(ctx: CommandContext, args: dict[str, Any]) -> dict[str, Any]:
        if ctx.sender is None:
            raise BadRequest("webrtc.publish is for participants (open the socket with a join token)")
        offer = args.get("sdp")
        if not isinstance(offer, str):
            raise BadRequest("sdp (the offer) is required", field="sdp")
        source = str(args.get("source") or "camera")
        if source not in ("camera", "screen"):
            raise BadRequest("source is camera or screen", field="source")
        screen = source == "screen"
        summary = parse_offer(offer)
        check_publishable(summary)
        caller = auth.Caller(ctx.sender.identity, ctx.sender.name, ctx.sender.permissions, "")
        sending = [k for k in summary.kinds if summary.directions.get(k) in ("sendrecv", "sendonly")]
        auth.check_publish(caller, sending, screen=screen)
        if screen:  # one screen share at a time: a new one replaces the old
            for old in plugin.registry.of_participant(ctx.sender.participant_id):
                if getattr(old, "screen", False):
                    await old.end("replaced")
        with plugin.registry.admission():
            session = RoomSession(plugin, ctx.room, ctx.sender.participant_id, screen=screen)
            try:
                await session.setup(summary, ctx.sender.permissions)
                answer = await session.answer(offer)
            except MediagateError:
                await session.end("negotiation_failed")
                raise
            except Exception as exc:
                await session.end("negotiation_failed")
                raise BadRequest(f"cannot negotiate this offer: {exc}", code="bad_sdp", field="sdp") from exc
            plugin.registry.add(session)
        return {"sdp": answer, "session_id": session.session_id, "source": source}

    async def unpublish(ctx: CommandContext, args: dict[str, Any]) -> dict[str, Any]:
        session_id = str(args.get("session_id") or "")
        with contextlib.suppress(MediagateError):
            session = plugin.registry.get(session_id)
            if ctx.sender is not None and getattr(session, "participant_id", None) != ctx.sender.participant_id:
                raise BadRequest("that session is not yours", field="session_id")
            await session.end("unpublished")
            return {"session_id": session_id, "ended": True}
        return {"session_id": session_id, "ended": False}

    def no_text(tokens: list[str]) -> dict[str, Any]:
        raise BadRequest("send this command as JSON: {\"cmd\": \"webrtc.publish\", \"sdp\": ...}")

    return [ControlCommand("webrtc.publish", publish, no_text,
                           '{"cmd":"webrtc.publish","sdp":offer,"source":"camera"}'),
            ControlCommand("webrtc.unpublish", unpublish, no_text, '{"cmd":"webrtc.unpublish","session_id":id}')]
