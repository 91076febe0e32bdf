"""Playing a room out over WebRTC (WHEP, and the room page's downstream).

The composite is attached once per encoding (``RoomMedia.attach("room", None, encoding)``,
as recordings do) and its packets are fanned out to every viewer by one :class:`PacketFeed`
per track: no encoder per viewer. A single participant's H.264 (or VP8) is forwarded as it
arrived; a participant whose codec the viewer cannot take is composited alone and encoded
once for all viewers of that participant. A listener in the room (the room page) hears a
mix-minus of everyone but itself, encoded to Opus per listener by aiortc.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from typing import TYPE_CHECKING, Any

import av
import structlog
from aiortc import RTCRtpSender
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from gateway.media.audio import samples_to_frame
from gateway.media.encoder import Encoding
from gateway.media.engine import ROOM_COMPOSITE
from gateway.media.layout.model import AudioSelection, Region, SourceRef
from gateway.media.track import TrackKind
from plugins.webrtc.feeds import PacketFeed, PacketTrack
from plugins.webrtc.session import Session

if TYPE_CHECKING:
    from gateway.media.composition import EncodedOutput
    from gateway.media.mixer import MixOutput
    from gateway.node import Node
    from gateway.rooms.room import Room
    from plugins.webrtc.config import WebRTCConfig
    from plugins.webrtc.registry import SessionRegistry

log = structlog.get_logger(__name__)


def codec_preferences(kind: str, name: str) -> list[Any]:
    caps = RTCRtpSender.getCapabilities(kind).codecs
    return [c for c in caps if c.mimeType.lower() == f"{kind}/{name}"]


class FeedGroup:
    """The feeds of one source (a composite output or a participant's tracks), shared by
    every viewer and released with the last one."""

    def __init__(self, key: tuple[str, ...], video: PacketFeed | None, audio: PacketFeed | None,
                 release: Any) -> None:
        self.key = key
        self.video = video
        self.audio = audio
        self._release = release
        self.users = 0
        self.video_codec = video.track.codec.name if video and video.track.codec else None

    def close(self) -> None:
        for feed in (self.video, self.audio):
            if feed is not None:
                feed.close()
        if self._release is not None:
            self._release()


class Playback:
    """The node's shared feeds, by room and source."""

    def __init__(self, node: Node, config: WebRTCConfig, registry: SessionRegistry) -> None:
        self.node = node
        self.config = config
        self.registry = registry
        self.groups: dict[tuple[str, ...], FeedGroup] = {}
        self._locks: dict[tuple[str, ...], asyncio.Lock] = {}

    def encoding(self, room: Room) -> Encoding:
        canvas = self.node.media.room_layout(room).canvas
        return Encoding(width=canvas.width, height=canvas.height, fps=canvas.fps,
                        video_kbps=self.config.whep_video_kbps, gop_s=self.config.whep_gop_s,
                        audio_codec="opus", audio_kbps=64)

    async def acquire(self, room: Room, participant_id: str | None, video_codecs: set[str]) -> FeedGroup:
        """Feeds for the room composite (participant_id None) or one participant."""
        key = (room.room_id, participant_id or ROOM_COMPOSITE)
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            group = self.groups.get(key)
            if participant_id is not None and group is not None and group.video_codec not in video_codecs:
                group = None  # forwarded in a codec this viewer lacks: it gets the solo composite
                key = (*key, "composite")
                group = self.groups.get(key)
            if group is None:
                group = await self._open(room, participant_id, video_codecs, key)
                self.groups[group.key] = group
            group.users += 1
            return group

    def release(self, group: FeedGroup) -> None:
        group.users -= 1
        if group.users <= 0 and self.groups.get(group.key) is group:
            del self.groups[group.key]
            group.close()

    async def _open(self, room: Room, participant_id: str | None, video_codecs: set[str],
                    key: tuple[str, ...]) -> FeedGroup:
        loop = asyncio.get_running_loop()
        media = self.node.media.room_media(room)
        if participant_id is not None and "composite" not in key:
            video = media.bus.find(participant_id, TrackKind.VIDEO)
            audio = media.bus.find(participant_id, TrackKind.AUDIO)
            video_ok = video is None or (video.codec is not None and video.codec.name in video_codecs)
            audio_ok = audio is None or (audio.codec is not None and audio.codec.name == "opus")
            if video_ok and audio_ok and (video or audio):
                return self._forward(loop, media, participant_id, video, audio, key)
            key = (*key, "composite")
        return await self._composite(loop, media, room, participant_id, key)

    def _forward(self, loop: asyncio.AbstractEventLoop, media: Any, participant_id: str, video: Any, audio: Any,
                 key: tuple[str, ...]) -> FeedGroup:
        room = media.room

        def flowing(kind: TrackKind) -> Any:
            def gate() -> bool:
                participant = room.participants.get(participant_id)
                if participant is None:
                    return False
                return participant.video_flows if kind is TrackKind.VIDEO else participant.audio_flows
            return gate

        def ask_publisher() -> None:
            for session in self.registry.of_participant(participant_id):
                if hasattr(session, "request_keyframe"):
                    loop.call_soon_threadsafe(session.request_keyframe)

        vfeed = PacketFeed(loop, video, video.subscribe_packets(from_keyframe=True), request_keyframe=ask_publisher,
                           gate=flowing(TrackKind.VIDEO)) if video else None
        afeed = PacketFeed(loop, audio, audio.subscribe_packets(), gate=flowing(TrackKind.AUDIO)) if audio else None
        return FeedGroup(key, vfeed, afeed, None)

    async def _composite(self, loop: asyncio.AbstractEventLoop, media: Any, room: Room, participant_id: str | None,
                         key: tuple[str, ...]) -> FeedGroup:
        encoding = self.encoding(room)
        layout = None
        composite_key = ROOM_COMPOSITE
        if participant_id is not None:
            base = self.node.media.room_layout(room)
            region = Region(source=SourceRef(participant=participant_id), x=0, y=0, w=1, h=1, units="fraction")
            layout = base.model_copy(update={"template": "custom", "regions": [region], "screen_template": None,
                                             "audio": AudioSelection(participants=[participant_id])})
            composite_key = f"whep:{participant_id}"
        _handle, output = await asyncio.to_thread(media.attach, composite_key, layout, encoding)

        def release() -> None:
            media.detach(composite_key, output)

        return self._output_group(loop, output, key, release)

    @staticmethod
    def _output_group(loop: asyncio.AbstractEventLoop, output: EncodedOutput, key: tuple[str, ...],
                      release: Any) -> FeedGroup:
        video = PacketFeed(loop, output.video_track, output.subscribe_video(), request_keyframe=output.request_keyframe)
        audio = PacketFeed(loop, output.audio_track, output.audio_track.subscribe_packets()) \
            if output.audio_track is not None else None
        return FeedGroup(key, video, audio, release)

    def close(self) -> None:
        for group in list(self.groups.values()):
            group.close()
        self.groups.clear()


class MixMinusTrack(MediaStreamTrack):
    """A listener's mix (everyone but them), as frames aiortc encodes to Opus."""

    kind = "audio"

    def __init__(self, mixer: Any, participant_id: str) -> None:
        super().__init__()
        self.mixer = mixer
        self.output: MixOutput = mixer.add_listener(participant_id)
        self.loop = asyncio.get_running_loop()
        self.frames: asyncio.Queue[av.AudioFrame] = asyncio.Queue(50)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"mixminus-{participant_id}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                pts, samples = self.output.get(timeout=0.5)
            except queue.Empty:
                if self.output.closed:
                    return
                continue
            frame = samples_to_frame(samples, pts)
            try:
                self.loop.call_soon_threadsafe(self._put, frame)
            except RuntimeError:
                return

    def _put(self, frame: av.AudioFrame) -> None:
        if self.frames.full():
            self.frames.get_nowait()
        self.frames.put_nowait(frame)

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        return await self.frames.get()

    def stop(self) -> None:
        super().stop()
        self._stop.set()
        self.mixer.remove_output(self.output)


class PlaySession(Session):
    """WHEP: sends a room's composite, or one participant, to a viewer."""

    kind = "whep"

    def __init__(self, registry: SessionRegistry, playback: Playback, room: Room, participant_id: str | None,
                 *, video: bool = True, audio: bool = True) -> None:
        super().__init__(registry, room.room_id)
        self.playback = playback
        self.room = room
        self.source_participant = participant_id
        self.want_video = video
        self.want_audio = audio
        self.group: FeedGroup | None = None
        self.tracks: list[PacketTrack] = []

    async def setup(self, offered_video: set[str]) -> None:
        """Before the offer is applied: sendonly transceivers fed by the shared feeds."""
        self.group = await self.playback.acquire(self.room, self.source_participant, offered_video)
        group = self.group
        if self.want_video and group.video is not None:
            track = group.video.attach()
            transceiver = self.pc.addTransceiver(track, direction="sendonly")
            transceiver.setCodecPreferences(codec_preferences("video", group.video_codec or "h264"))
            self._watch_pli(transceiver.sender, group.video)
            self.tracks.append(track)
        if self.want_audio and group.audio is not None:
            track = group.audio.attach()
            transceiver = self.pc.addTransceiver(track, direction="sendonly")
            transceiver.setCodecPreferences(codec_preferences("audio", "opus"))
            self.tracks.append(track)

    @staticmethod
    def _watch_pli(sender: Any, feed: PacketFeed) -> None:
        """aiortc ignores PLI/FIR for pre-encoded packets: turn them into keyframe requests."""
        original = sender._send_keyframe

        def on_pli() -> None:
            original()
            feed.request_keyframe()
        sender._send_keyframe = on_pli

    def first_video_latency(self) -> float | None:
        for track in self.tracks:
            if track.kind == "video" and track.first_packet_at is not None:
                return track.first_packet_at
        return None

    async def released(self, reason: str) -> None:
        for track in self.tracks:
            track.stop()
        if self.group is not None:
            self.playback.release(self.group)
            self.group = None
