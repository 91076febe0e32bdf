"""An RTMP publisher as a room participant of kind ``rtmp``.

H.264 stays encoded: each video message becomes an AVCC packet (pts = dts + composition
offset) on a track whose :class:`CodecInfo` carries the avcC from the sequence header; the
track decodes only when a subscriber needs pixels. AAC likewise, with the AudioSpecificConfig.
RTMP timestamps are 32-bit milliseconds; they are unwrapped so a push may run past 49 days.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from fractions import Fraction
from typing import TYPE_CHECKING, Any

import av
import structlog

from gateway.media.track import CodecInfo, Track, TrackKind, TrackSource
from plugins.rtmp import flv

if TYPE_CHECKING:
    from gateway.node import Node
    from gateway.rooms.participant import Participant
    from gateway.tasks import Task
    from plugins.rtmp.session import RtmpConnection

log = structlog.get_logger(__name__)
MS = Fraction(1, 1000)
EVENT_ERROR = "rtmp.error"


class _Unwrap:
    """32-bit millisecond timestamps made monotonic across wrap-around."""

    def __init__(self) -> None:
        self.last: int | None = None
        self.offset = 0

    def __call__(self, raw: int) -> int:
        if self.last is not None and raw < self.last and self.last - raw > 1 << 31:
            self.offset += 1 << 32
        self.last = raw
        return raw + self.offset


class Publisher:
    """Owns the participant and its tracks for the time of one publish."""

    def __init__(self, node: Node, connection: RtmpConnection, room_id: str, participant: Participant,
                 task: Task | None) -> None:
        self.node = node
        self.connection = connection
        self.room_id = room_id
        self.participant = participant
        self.task = task
        self.stream_id = 1
        self.video: Track | None = None
        self.audio: Track | None = None
        self.width: int | None = None
        self.height: int | None = None
        self.video_packets = 0
        self.audio_packets = 0
        self.bytes = 0
        self.started_at = time.time()
        self.ended = False
        self.on_end: Callable[[], Awaitable[None]] | None = None  # the ingress task's bookkeeping
        spec = task.spec if task is not None else {}
        # the ingress request may leave a kind out (audio_only, video=false, audio=false)
        self.want_video = spec.get("video", True) and not spec.get("audio_only", False)
        self.want_audio = spec.get("audio", True)
        self._video_ts = _Unwrap()
        self._audio_ts = _Unwrap()
        self._video_config: bytes | None = None
        self._audio_config: bytes | None = None

    @property
    def participant_id(self) -> str:
        return self.participant.participant_id

    # ------------------------------------------------------------------ media (event loop)
    def on_metadata(self, meta: dict[str, Any]) -> None:
        for name in ("width", "height"):
            value = meta.get(name)
            if isinstance(value, float) and 0 < value < 10000:
                setattr(self, name, int(value))

    def on_video(self, timestamp: int, body: bytes) -> None:
        tag = flv.parse_video(body)
        if tag is None or tag.kind in ("info", "end") or not self.want_video:
            return
        self.bytes += len(body)
        if tag.kind == "config":
            if tag.data != self._video_config:
                self._video_config = tag.data
                self._replace_track("video", CodecInfo("h264", MS, width=self.width, height=self.height,
                                                       extradata=tag.data))
            return
        if self.video is None or not tag.data:
            return  # frames before the sequence header cannot be decoded
        dts = self._video_ts(timestamp)
        packet = av.Packet(tag.data)
        packet.dts = dts
        packet.pts = dts + tag.cts
        packet.time_base = MS
        packet.is_keyframe = tag.keyframe
        self.video_packets += 1
        self.video.push_packet(packet)

    def on_audio(self, timestamp: int, body: bytes) -> None:
        tag = flv.parse_audio(body)
        if tag is None or not self.want_audio:
            return
        self.bytes += len(body)
        if tag.kind == "config":
            if tag.data != self._audio_config:
                self._audio_config = tag.data
                rate, channels = flv.aac_config(tag.data)
                self._replace_track("audio", CodecInfo("aac", MS, sample_rate=rate, channels=channels,
                                                       extradata=tag.data))
            return
        if self.audio is None or not tag.data:
            return
        ts = self._audio_ts(timestamp)
        packet = av.Packet(tag.data)
        packet.pts = packet.dts = ts
        packet.time_base = MS
        self.audio_packets += 1
        self.audio.push_packet(packet)

    def _replace_track(self, kind: str, codec: CodecInfo) -> None:
        """A (new) sequence header: the track is created, or re-created when the codec changed."""
        room = self.node.rooms.rooms.get(self.room_id)
        if room is None or self.ended:
            return
        bus = self.node.media.room_media(room).bus
        old = getattr(self, kind)
        if old is not None:
            bus.remove_track(old.track_id)
        if kind == "video":
            self.video = bus.create_track(TrackKind.VIDEO, TrackSource.CAMERA, self.participant_id, codec=codec)
        else:
            self.audio = bus.create_track(TrackKind.AUDIO, TrackSource.MIC, self.participant_id, codec=codec)

    def fail(self, code: str, message: str) -> None:
        """A publish that cannot go on (unsupported codec): say so clearly, in an event."""
        log.warning("rtmp publish failed", participant_id=self.participant_id, code=code, message=message)
        self.node.events.emit(EVENT_ERROR, self.room_id, participant_id=self.participant_id,
                              identity=self.participant.identity, code=code, message=message,
                              ingress_id=self.task.task_id if self.task else None)

    # ------------------------------------------------------------------ lifecycle
    async def close(self, reason: str) -> None:
        """The participant's edge: a kick or a replacing publish ends the connection."""
        self.connection.close(reason)

    async def end(self, reason: str) -> None:
        """The publish ended (disconnect, unpublish, kick): leave the room."""
        if self.ended:
            return
        self.ended = True
        await self.node.rooms.leave(self.room_id, self.participant_id, f"rtmp_{reason}"[:64])
        if self.on_end is not None:
            await self.on_end()

    def stats(self) -> dict[str, Any]:
        return {"participant_id": self.participant_id, "video_packets": self.video_packets,
                "audio_packets": self.audio_packets, "bytes": self.bytes, "width": self.width,
                "height": self.height, "has_video": self.video is not None, "has_audio": self.audio is not None}
