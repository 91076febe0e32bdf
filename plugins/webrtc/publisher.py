"""Publishing into a room over WebRTC (WHIP, or the room page): each received track becomes
a room track. Encoded frames go to the track as packets (see :mod:`plugins.webrtc.passthrough`):
H.264 stays encoded until some subscriber needs pixels; VP8 and Opus are decoded once per
track, by the track, for the compositor and the mixer."""

from __future__ import annotations

import asyncio
import threading
from fractions import Fraction
from typing import TYPE_CHECKING, Any

import av
import structlog

from gateway.media.track import CodecInfo, Track, TrackKind, TrackSource
from plugins.webrtc import passthrough
from plugins.webrtc.session import Session

if TYPE_CHECKING:
    from gateway.media.engine import RoomMedia
    from gateway.node import Node
    from plugins.webrtc.registry import SessionRegistry

log = structlog.get_logger(__name__)

CODECS = {"h264": CodecInfo("h264", Fraction(1, 90000)), "vp8": CodecInfo("vp8", Fraction(1, 90000)),
          "opus": CodecInfo("opus", Fraction(1, 48000), sample_rate=48000, channels=2),
          "pcm_mulaw": CodecInfo("pcm_mulaw", Fraction(1, 8000), sample_rate=8000, channels=1),
          "pcm_alaw": CodecInfo("pcm_alaw", Fraction(1, 8000), sample_rate=8000, channels=1)}


class TrackFeed:
    """One received WebRTC track → one room track, created at the first packet (when the
    codec is known); called on aiortc's receiver thread."""

    def __init__(self, media: RoomMedia, session: PublishSession, kind: str, source: TrackSource) -> None:
        self.media = media
        self.session = session  # its participant_id is known once the participant joined
        self.kind = TrackKind(kind)
        self.source = source
        self.track: Track | None = None
        self.packets = 0
        self._lock = threading.Lock()
        self.closed = False
        self._decoding = False
        self._errors = 0

    def __call__(self, codec: str, packet: av.Packet) -> bool:
        """Push one packet; True asks the publisher for a keyframe: a decoder just started
        mid-stream, or it failed (browsers send keyframes only when asked)."""
        track = self.track
        if track is None:
            with self._lock:
                if self.closed:
                    return
                if self.track is None:
                    info = CODECS[codec]
                    self.track = self.media.bus.create_track(self.kind, self.source, self.session.participant_id,
                                                             codec=CodecInfo(**vars(info)))
                track = self.track
        self.packets += 1
        track.push_packet(packet)
        if self.kind is not TrackKind.VIDEO:
            return False
        decoding = track._decoder is not None
        errors = track.decode_errors
        want = (decoding and not self._decoding) or errors > self._errors
        self._decoding, self._errors = decoding, errors
        return want

    def close(self) -> None:
        with self._lock:
            self.closed = True
            track, self.track = self.track, None
        if track is not None:
            self.media.bus.remove_track(track.track_id)


class PublishSession(Session):
    """Receives a peer's audio and video for one participant."""

    kind = "whip"

    def __init__(self, registry: SessionRegistry, node: Node, room_id: str, participant_id: str, *,
                 screen: bool = False, leave_on_end: bool = True, on_end: Any = None) -> None:
        super().__init__(registry, room_id)
        self.node = node
        self.participant_id = participant_id
        self.screen = screen
        self.leave_on_end = leave_on_end  # a WHIP participant is the session; a room page's is its socket
        self.on_end = on_end
        self.feeds: list[TrackFeed] = []
        self.receivers: list[Any] = []
        self._pending: set[asyncio.Future[Any]] = set()

    async def prepare(self) -> None:
        room = await self.node.rooms.get(self.room_id)
        media = self.node.media.room_media(room)
        for transceiver in self.pc.getTransceivers():
            if transceiver.direction == "sendrecv" and transceiver.sender.track is None:
                transceiver.direction = "recvonly"
            kind = transceiver.kind
            if self.screen:
                source = TrackSource.SCREEN if kind == "video" else TrackSource.SCREEN_AUDIO
            else:
                source = TrackSource.CAMERA if kind == "video" else TrackSource.MIC
            feed = TrackFeed(media, self, kind, source)
            passthrough.register(transceiver.receiver.track, feed)
            self.feeds.append(feed)
            self.receivers.append(transceiver.receiver)
            # aiortc only reads the remote track through recv(): nothing to consume here

    def request_keyframe(self) -> None:
        """Ask the publisher for a keyframe (RTCP PLI), e.g. for a new forwarding viewer."""
        for receiver in self.receivers:
            if receiver.track.kind != "video":
                continue
            for source in receiver.getSynchronizationSources():
                self._pending.add(asyncio.ensure_future(receiver._send_rtcp_pli(source.source)))
                self._pending = {t for t in self._pending if not t.done()}

    def stats(self) -> dict[str, Any]:
        return {"feeds": [{"kind": f.kind.value, "packets": f.packets,
                           "codec": f.track.codec.name if f.track and f.track.codec else None,
                           "decoding": bool(f.track and f.track._decoder is not None)} for f in self.feeds]}

    async def released(self, reason: str) -> None:
        for feed in self.feeds:
            feed.close()
        if self.leave_on_end:
            await self.node.rooms.leave(self.room_id, self.participant_id, reason)
        if self.on_end is not None:
            await self.on_end(self, reason)
