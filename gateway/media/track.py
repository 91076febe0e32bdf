"""Tracks: one audio or video stream a participant publishes, and its subscriptions.

An edge hands a track either encoded packets (``push_packet``) or raw frames
(``push_frame``). Packets fan out as they are to packet subscribers (passthrough pushes and
recordings); they are decoded only when someone subscribed to raw media, once, by the track's
own decoder thread. Raw frames are normalised to the bus format (video yuv420p, audio
48 kHz s16 stereo), stamped on the room clock and fanned out.

Every push is non-blocking: video subscribers keep only the latest frame, audio subscribers
have a bounded jitter buffer, packet subscribers a bounded queue that drops to the next
keyframe. A slow subscriber never stalls the publisher or another subscriber.
"""

from __future__ import annotations

import itertools
import queue
import threading
from dataclasses import dataclass
from enum import StrEnum
from fractions import Fraction
from typing import Any

import av
import structlog

from gateway.ids import random_hex
from gateway.media.audio import frame_to_samples, new_resampler
from gateway.media.clock import AUDIO_TIME_BASE, VIDEO_TIME_BASE, RoomClock
from gateway.media.jitter import AudioJitterBuffer

log = structlog.get_logger(__name__)

GOP_CACHE_PACKETS = 600  # 20 s at 30 fps; a longer GOP is not kept
DECODER_QUEUE = 256  # packets waiting for a track's decoder; beyond, new ones are dropped
LATEST_FRAME_AGE = 1.0  # seconds: a new video subscriber starts from a frame this recent


class DecoderSettings:
    """Node-wide decoder threading, set from ``[media] decoder_threads`` at startup.

    1 (the default) decodes each track on one thread: the least CPU per frame — FFmpeg's
    automatic frame + slice threads cost 7-10 % more for 720p30 VP8 and H.264 decoded as fast
    as they go and 15-20 % more paced like a live track (``python -m bench.bench_decode_threads``),
    while the slowest 720p frame on one thread takes 5-15 ms of its 33 ms. Audio (Opus, AAC,
    G.711) always decodes on one thread: threads change nothing there. 0 lets FFmpeg pick:
    lower latency per frame for 4K sources, more CPU in total.
    """

    threads = 1


class TrackKind(StrEnum):
    AUDIO = "audio"
    VIDEO = "video"


class TrackSource(StrEnum):
    CAMERA = "camera"
    MIC = "mic"
    SCREEN = "screen"
    SCREEN_AUDIO = "screen_audio"


@dataclass
class CodecInfo:
    """What a decoder or a muxer needs to know about a track's packets."""

    name: str  # ffmpeg codec name: h264, aac, opus, pcm_mulaw, ...
    time_base: Fraction
    width: int | None = None
    height: int | None = None
    sample_rate: int | None = None
    channels: int | None = None
    extradata: bytes | None = None
    bit_rate: int | None = None

    @classmethod
    def from_stream(cls, stream: Any) -> CodecInfo:
        ctx = stream.codec_context
        info = cls(name=ctx.name, time_base=stream.time_base, extradata=ctx.extradata,
                   bit_rate=ctx.bit_rate or None)
        if stream.type == "video":
            info.width, info.height = ctx.width, ctx.height
        elif stream.type == "audio":
            info.sample_rate, info.channels = ctx.sample_rate, ctx.channels
        return info


_frame_seq = itertools.count(1)


class VideoSubscription:
    """Keeps the latest frame only; `seq` grows with every new frame (cache key for scalers)."""

    def __init__(self) -> None:
        self.frame: av.VideoFrame | None = None
        self.seq = 0
        self.received = 0

    def offer(self, frame: av.VideoFrame, seq: int) -> None:
        # a single attribute swap per field; readers tolerate a frame/seq pair one frame apart
        self.frame = frame
        self.seq = seq
        self.received += 1

    def latest(self) -> tuple[av.VideoFrame | None, int]:
        return self.frame, self.seq


class AudioSubscription(AudioJitterBuffer):
    """The jitter buffer a mixer pulls 20 ms blocks from."""

    def offer(self, frame: av.AudioFrame) -> None:
        self.push(frame_to_samples(frame))


class PacketSubscription:
    """A bounded packet queue. When full it drops, and for video waits for the next keyframe
    so the consumer never sees a broken GOP."""

    def __init__(self, kind: TrackKind, maxsize: int = 512, *, from_keyframe: bool = False) -> None:
        self.kind = kind
        self.queue: queue.Queue[av.Packet | None] = queue.Queue(maxsize)
        self.dropped = 0
        # a late joiner of a video track starts at a keyframe (a decoder cannot use the rest)
        self._waiting_keyframe = from_keyframe and kind is TrackKind.VIDEO

    def offer(self, packet: av.Packet) -> None:
        if self._waiting_keyframe:
            if not packet.is_keyframe:
                self.dropped += 1
                return
            self._waiting_keyframe = False
        try:
            self.queue.put_nowait(packet)
        except queue.Full:
            self.dropped += 1
            if self.kind is TrackKind.VIDEO:
                self._waiting_keyframe = True

    def get(self, timeout: float | None = None) -> av.Packet | None:
        """The next packet; None when the track ended. Raises queue.Empty on timeout."""
        return self.queue.get(timeout=timeout)

    def end(self) -> None:
        try:
            self.queue.put_nowait(None)
        except queue.Full:
            self.queue.get_nowait()
            self.queue.put_nowait(None)


class Track:
    def __init__(self, kind: TrackKind | str, source: TrackSource | str, participant_id: str,
                 clock: RoomClock, *, codec: CodecInfo | None = None, track_id: str | None = None,
                 name: str = "") -> None:
        self.kind = TrackKind(kind)
        self.source = TrackSource(source)
        self.participant_id = participant_id
        self.track_id = track_id or f"TR_{random_hex(48)}"
        self.name = name
        self.clock = clock
        self.codec = codec
        self.muted = False
        self.closed = False
        self._video_subs: tuple[VideoSubscription, ...] = ()
        self._audio_subs: tuple[AudioSubscription, ...] = ()
        self._packet_subs: tuple[PacketSubscription, ...] = ()
        self._lock = threading.Lock()
        self._resampler: av.AudioResampler | None = None
        self._pts_offset: float | None = None  # room seconds minus source seconds
        self._decoder: _DecoderThread | None = None
        self._decoder_behind = True  # the decoder has not seen every packet since the last keyframe
        self._latest: tuple[av.VideoFrame, int, float] | None = None  # frame, seq, room seconds
        self._gop: list[av.Packet] | None = [] if self.kind is TrackKind.VIDEO and codec is not None else None
        self.frames_in = 0
        self.packets_in = 0
        self.decode_errors = 0
        self.width: int | None = codec.width if codec else None
        self.height: int | None = codec.height if codec else None

    # ---------------------------------------------------------------- info
    def info(self) -> dict[str, Any]:
        return {"track_id": self.track_id, "kind": self.kind.value, "source": self.source.value,
                "codec": self.codec.name if self.codec else "raw", "muted": self.muted,
                "width": self.width, "height": self.height}

    @property
    def has_frame_subscribers(self) -> bool:
        return bool(self._video_subs or self._audio_subs)

    # ---------------------------------------------------------------- publishing
    def push_frame(self, frame: av.VideoFrame | av.AudioFrame) -> None:
        """Publish a raw frame (any format); normalised, stamped and fanned out."""
        if self.closed:
            return
        self.frames_in += 1
        if self.kind is TrackKind.VIDEO:
            self._push_video(frame)  # type: ignore[arg-type]
        else:
            self._push_audio(frame)  # type: ignore[arg-type]

    def _room_seconds(self, frame: av.VideoFrame | av.AudioFrame) -> float:
        """Map the source's timestamp onto the room clock, re-anchoring on jumps > 1 s."""
        now = self.clock.now()
        pts, tb = frame.pts, frame.time_base
        if pts is None or tb is None:
            return now
        src = pts * tb.numerator / tb.denominator  # Fraction arithmetic costs ~15 us a frame
        if self._pts_offset is None or abs(src + self._pts_offset - now) > 1.0:
            self._pts_offset = now - src
        return src + self._pts_offset

    def _push_video(self, frame: av.VideoFrame) -> None:
        at = self._room_seconds(frame)
        if frame.format.name != "yuv420p":
            frame = frame.reformat(format="yuv420p")
        frame.pts = int(round(at * 90000))
        frame.time_base = VIDEO_TIME_BASE
        self.width, self.height = frame.width, frame.height
        if self.muted:
            return
        seq = next(_frame_seq)
        self._latest = (frame, seq, at)
        for sub in self._video_subs:
            sub.offer(frame, seq)

    def _push_audio(self, frame: av.AudioFrame) -> None:
        at = self._room_seconds(frame)
        if self._resampler is None:
            self._resampler = new_resampler()
        frame.pts = None  # let the resampler run on sample counts; we stamp afterwards
        for out in self._resampler.resample(frame):
            out.pts = int(round(at * 48000))
            out.time_base = AUDIO_TIME_BASE
            at += out.samples / 48000
            if self.muted:
                continue
            for sub in self._audio_subs:
                sub.offer(out)

    def push_samples(self, samples: Any) -> None:
        """Publish audio already in the bus format (an (n, 2) int16 array at 48 kHz, stamped
        'now'), without PyAV: for edges that decode and resample many sources in one numpy
        batch (SIP legs). The array is shared with subscribers: do not write to it after."""
        if self.closed:
            return
        self.frames_in += 1
        if self.muted:
            return
        for sub in self._audio_subs:
            sub.push(samples)

    def push_packet(self, packet: av.Packet) -> None:
        """Publish an encoded packet: forwarded as is, decoded only if raw subscribers exist."""
        if self.closed:
            return
        if packet.size == 0:  # an empty packet would put the decoder into draining (EOF) mode
            self.decode_errors += 1
            return
        self.packets_in += 1
        for sub in self._packet_subs:
            sub.offer(packet)
        gop = self._gop
        if gop is not None:  # video: keep the packets since the last keyframe for a late decoder
            if packet.is_keyframe:
                gop.clear()
            if len(gop) < GOP_CACHE_PACKETS:
                gop.append(packet)
            else:
                gop.clear()  # a GOP too long to keep: a late decoder waits for the next keyframe
        if self.has_frame_subscribers:
            decoder = self._decoder
            if decoder is None:
                decoder = self._start_decoder()
            if self._decoder_behind and gop:
                # the decoder missed packets (it starts now, or nobody needed pixels for a while):
                # bring it up to date from the keyframe, showing only the current picture
                for cached in gop[:-1]:
                    decoder.offer(cached, show=False)
            self._decoder_behind = False
            decoder.offer(packet)
        else:
            self._decoder_behind = True

    def _start_decoder(self) -> _DecoderThread:
        with self._lock:
            if self._decoder is None:
                if self.codec is None:
                    raise ValueError(f"track {self.track_id} has packets but no codec info")
                self._decoder = _DecoderThread(self)
                self._decoder.start()
            return self._decoder

    # ---------------------------------------------------------------- subscribing
    def subscribe_video(self) -> VideoSubscription:
        if self.kind is not TrackKind.VIDEO:
            raise ValueError("not a video track")
        sub = VideoSubscription()
        latest = self._latest
        if latest is not None and not self.muted and self.clock.now() - latest[2] < LATEST_FRAME_AGE:
            # start from the current picture: a compositor started now (a first WHEP viewer)
            # shows the source at once, not a placeholder until the source's next frame
            sub.frame, sub.seq = latest[0], latest[1]
        with self._lock:
            self._video_subs = (*self._video_subs, sub)
        return sub

    def subscribe_audio(self, target_ms: int = 60, max_ms: int = 400) -> AudioSubscription:
        if self.kind is not TrackKind.AUDIO:
            raise ValueError("not an audio track")
        sub = AudioSubscription(target_ms, max_ms)
        with self._lock:
            self._audio_subs = (*self._audio_subs, sub)
        return sub

    def subscribe_packets(self, maxsize: int = 512, *, from_keyframe: bool = False) -> PacketSubscription:
        sub = PacketSubscription(self.kind, maxsize, from_keyframe=from_keyframe)
        with self._lock:
            self._packet_subs = (*self._packet_subs, sub)
        return sub

    def unsubscribe(self, sub: object) -> None:
        with self._lock:
            self._video_subs = tuple(s for s in self._video_subs if s is not sub)
            self._audio_subs = tuple(s for s in self._audio_subs if s is not sub)
            self._packet_subs = tuple(s for s in self._packet_subs if s is not sub)

    def close(self) -> None:
        self.closed = True
        for sub in self._packet_subs:
            sub.end()
        if self._decoder is not None:
            self._decoder.stop()


class _DecoderThread(threading.Thread):
    """Decodes a track's packets off the event loop, once for every raw subscriber."""

    def __init__(self, track: Track) -> None:
        super().__init__(name=f"decode-{track.track_id}", daemon=True)
        self.track = track
        # SimpleQueue (C) rather than Queue (Python, a Condition): a packet handed over costs
        # a few µs, not the ~45 µs queue.Queue measured per frame on a live track, cache-cold
        self.packets: queue.SimpleQueue[av.Packet | None] = queue.SimpleQueue()
        codec = track.codec
        assert codec is not None
        self.ctx = av.CodecContext.create(codec.name, "r")
        if codec.extradata:
            self.ctx.extradata = codec.extradata
        if codec.sample_rate:
            self.ctx.sample_rate = codec.sample_rate
        if codec.channels:
            self.ctx.layout = "stereo" if codec.channels == 2 else "mono"
        threads = DecoderSettings.threads if track.kind is TrackKind.VIDEO else 1
        if threads == 1:
            self.ctx.thread_count = 1
            self.ctx.thread_type = "NONE"
        else:
            self.ctx.thread_count = threads
            self.ctx.thread_type = "AUTO"
        self.dropped = 0
        self._hidden: set[int] = set()  # ids of catch-up packets whose pictures are not shown

    def offer(self, packet: av.Packet, show: bool = True) -> None:
        if self.packets.qsize() >= DECODER_QUEUE:  # decoding is behind: drop rather than stall the edge
            self.dropped += 1
            return
        if not show:
            self._hidden.add(id(packet))  # before the put: the decoder thread may take it at once
        self.packets.put(packet)

    def stop(self) -> None:
        self.packets.put(None)  # unbounded: the end always fits (the thread skips the rest once closed)

    def run(self) -> None:
        track = self.track
        while True:
            packet = self.packets.get()
            if packet is None or track.closed:
                return
            hidden = id(packet) in self._hidden
            if hidden:
                self._hidden.discard(id(packet))
            try:
                frames = self.ctx.decode(packet)
            except av.FFmpegError as exc:
                track.decode_errors += 1
                if track.decode_errors in (1, 10, 100) or track.decode_errors % 1000 == 0:
                    log.warning("decode error", track=track.track_id, error=str(exc),
                                count=track.decode_errors)
                continue
            if hidden:
                continue
            for frame in frames:
                if frame.time_base is None and packet.time_base is not None:
                    frame.time_base = packet.time_base
                track.push_frame(frame)
