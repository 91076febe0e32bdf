"""Fragmented MP4 from encoded packets, and a sink that records an encoded output to it.

``frag_keyframe+empty_moov+default_base_moof``: the header carries no sample tables and every
keyframe starts a fragment, so a file cut short by a crash plays up to its last fragment.

PyAV (18.1) offers no direct way to give a muxer-only stream (``add_mux_stream``) its
extradata (avcC / AudioSpecificConfig / OpusHead), and ``add_stream`` would open a real encoder
that replaces it. What works: create a throw-away stream of the same codec in a scratch
container and use it as the template of ``add_stream_from_template``. The new stream's codec
context is marked template-initialised, so it is never opened; the extradata, size and rate set
on it are copied into the stream's codec parameters when the header is written. Video without
extradata (SPS/PPS in-band) goes through ``add_mux_stream``, whose first keyframe PyAV mines for
the extradata before it writes the header.
"""

from __future__ import annotations

import io
import os
import queue
import threading
from collections import deque
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING

import av
import structlog

from gateway.media.track import CodecInfo, PacketSubscription

if TYPE_CHECKING:
    from gateway.media.composition import EncodedOutput

log = structlog.get_logger(__name__)

MOVFLAGS = "frag_keyframe+empty_moov+default_base_moof"
KINDS = ("video", "audio")
# file format -> (FFmpeg muxer, options): every one is playable up to its last flushed packet
MUXERS: dict[str, tuple[str, dict[str, str]]] = {
    "mp4": ("mp4", {"movflags": MOVFLAGS, "flush_packets": "1"}),
    # audio packets are all keyframes: fragment by time (1 s), not at every packet
    "m4a": ("ipod", {"movflags": "empty_moov+default_base_moof", "frag_duration": "1000000",
                     "flush_packets": "1"}),
    "ogg": ("ogg", {"flush_packets": "1"}),
    "wav": ("wav", {}),
    "mp3": ("mp3", {}),
    "ts": ("mpegts", {"flush_packets": "1"}),
}


@dataclass
class Mp4Stats:
    path: str
    bytes: int
    duration_s: float
    video_packets: int
    audio_packets: int
    dropped: int  # before the first keyframe, before the start, or out of order


class Fmp4Writer:
    """Writes encoded packets (``write(packet, "video"|"audio")``) to a fragmented MP4 (or,
    with ``fmt``, to another container of :data:`MUXERS`).

    The file starts at the first video keyframe (the first packet for audio-only files):
    earlier packets are dropped and every timestamp is shifted so the file starts at 0
    (``origin`` fixes that instant instead, in seconds of the packets' clock; ``shift=False``
    keeps the timestamps as they are, as HLS segments of one playlist want).
    Packets are copied before muxing, so packets shared with other outputs stay untouched.
    """

    def __init__(self, path: str | os.PathLike[str], video: CodecInfo | None, audio: CodecInfo | None, *,
                 fmt: str = "mp4", origin: Fraction | None = None, shift: bool = True,
                 video_fps: int = 30) -> None:
        if video is None and audio is None:
            raise ValueError("an MP4 needs a video or an audio stream")
        self.path = os.fspath(path)
        self.fmt = fmt
        muxer, options = MUXERS[fmt]
        # flush_packets: each fragment reaches the disk when it is cut, not when a 32 KB
        # buffer fills, so a crash loses at most the fragment being built
        self._container = av.open(self.path, "w", format=muxer, container_options=dict(options))
        self._streams: dict[str, av.stream.Stream] = {}
        scratch = av.open(io.BytesIO(), "w", format=muxer)  # templates only, never written
        try:
            for kind, info in (("video", video), ("audio", audio)):
                if info is not None:
                    self._streams[kind] = self._add_stream(scratch, info)
        except Exception:
            self._container.close()
            raise
        finally:
            scratch.close()
        self._origin: Fraction | None = origin  # room time of the file's first instant
        self._shift = shift
        self._video_fps = video_fps
        self._first: Fraction | None = None  # time of the first packet written
        self._last_dts: dict[str, int] = {}
        self.bytes_in = 0
        self._end = Fraction(0)
        self._video_end = Fraction(0)  # a file with video lasts as long as its pictures
        self.packets = dict.fromkeys(KINDS, 0)
        self.dropped = 0
        self.closed = False

    def _add_stream(self, scratch: av.container.OutputContainer, info: CodecInfo) -> av.stream.Stream:
        if not info.extradata and info.width and info.height:
            # parameter sets in-band (WebRTC, Annex B): PyAV holds the packets back and takes
            # the extradata from the first keyframe before writing the header
            stream = self._container.add_mux_stream(info.name, width=info.width, height=info.height)
            stream.time_base = info.time_base
            return stream
        try:
            template = scratch.add_stream(info.name)
        except (ValueError, av.FFmpegError) as exc:
            raise ValueError(f"cannot record {info.name!r} in MP4: {exc}") from exc
        stream = self._container.add_stream_from_template(template)
        ctx = stream.codec_context
        if info.width and info.height:
            ctx.width, ctx.height = info.width, info.height
        if info.sample_rate:
            ctx.sample_rate = info.sample_rate
            ctx.layout = "mono" if info.channels == 1 else "stereo"
        if info.extradata:
            ctx.extradata = info.extradata
        if info.bit_rate:
            ctx.bit_rate = info.bit_rate
        stream.time_base = info.time_base
        return stream

    @property
    def started(self) -> bool:
        return self._first is not None

    def write(self, packet: av.Packet, kind: str) -> bool:
        """Mux one packet; False when it was dropped."""
        stream = self._streams.get(kind)
        if stream is None or self.closed or packet.pts is None or packet.time_base is None:
            self.dropped += 1
            return False
        tb = packet.time_base
        pts_s = packet.pts * tb
        if self._first is None:
            if "video" in self._streams and (kind != "video" or not packet.is_keyframe):
                self.dropped += 1
                return False
            if self._origin is None:
                self._origin = pts_s
            self._first = pts_s
        assert self._origin is not None
        shift = round(self._origin / tb) if self._shift else 0
        pts = packet.pts - shift
        dts = (packet.dts if packet.dts is not None else packet.pts) - shift
        if pts < 0 or (kind in self._last_dts and dts <= self._last_dts[kind]):
            self.dropped += 1  # before the start, or out of order: the muxer would refuse it
            return False
        self._last_dts[kind] = dts
        out = av.Packet(packet)  # one copy of the payload; the original may be shared
        out.pts, out.dts, out.time_base = pts, dts, tb
        duration = packet.duration or 0
        if not duration and kind == "video":  # the last frame of a part still lasts one period
            duration = round(1 / (self._video_fps * tb))
        out.duration = duration
        out.is_keyframe = packet.is_keyframe
        out.stream = stream
        self._container.mux(out)
        self.packets[kind] += 1
        self.bytes_in += packet.size
        end = (pts + duration) * tb
        self._end = max(self._end, end)
        if kind == "video":
            self._video_end = max(self._video_end, end)
        return True

    @property
    def first_s(self) -> Fraction | None:
        """Time (on the packets' clock) of the first packet written, None before it."""
        return self._first

    @property
    def end_s(self) -> Fraction:
        """Time (on the packets' clock) where the written media ends."""
        end = self._video_end if "video" in self._streams and self.packets["video"] else self._end
        return end + (self._origin if self._origin is not None and self._shift else 0)

    def close(self) -> Mp4Stats:
        """Finish the file (last fragment, index) and report it."""
        if not self.closed:
            self.closed = True
            self._container.close()
        # nothing muxed means the file was never opened: report it empty rather than fail
        size = os.path.getsize(self.path) if os.path.exists(self.path) else 0
        start = Fraction(0) if self._shift or self._first is None else self._first
        end = self._video_end if "video" in self._streams and self.packets["video"] else self._end
        return Mp4Stats(path=self.path, bytes=size, duration_s=float(end - start),
                        video_packets=self.packets["video"], audio_packets=self.packets["audio"],
                        dropped=self.dropped)


class RecordingSink:
    """Records an :class:`EncodedOutput` to a fragmented MP4 on its own thread.

    Reads the video and audio packet subscriptions and writes packets in timestamp order: a
    packet is written once every other live stream has a packet at least as late, or once
    its own stream is ``max_lag_s`` ahead of it (so a stream that goes quiet never stalls
    the file).
    """

    def __init__(self, path: str | os.PathLike[str], output: EncodedOutput, max_lag_s: float = 1.0) -> None:
        audio = output.audio_track
        self.writer = Fmp4Writer(path, output.video_track.codec, audio.codec if audio else None)
        self._tracks = {"video": output.video_track, "audio": audio}
        self._subs: dict[str, PacketSubscription] = {"video": output.video_track.subscribe_packets()}
        if audio is not None:
            self._subs["audio"] = audio.subscribe_packets()
        self._pending: dict[str, deque[tuple[Fraction, av.Packet]]] = {k: deque() for k in self._subs}
        self._newest: dict[str, Fraction] = {}
        self._ended: set[str] = set()
        self._max_lag = Fraction(max_lag_s)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="record-mp4", daemon=True)
        self._stats: Mp4Stats | None = None
        self.error: Exception | None = None

    def start(self) -> RecordingSink:
        self._thread.start()
        return self

    def stop(self) -> Mp4Stats:
        """Write what was received, close the file, return its final size and duration."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        if self._stats is None:  # never started
            self._finish()
        assert self._stats is not None
        return self._stats

    def _run(self) -> None:
        try:
            while not self._stop.is_set() and len(self._ended) < len(self._subs):
                if not self._pull():
                    self._stop.wait(0.01)
                self._write_ready()
        except Exception as exc:  # keep the file playable up to here
            self.error = exc
            log.exception("recording failed", path=self.writer.path)
        finally:
            self._finish()

    def _pull(self) -> bool:
        got = False
        for kind, sub in self._subs.items():
            while kind not in self._ended:
                try:
                    packet = sub.get(timeout=0)
                except queue.Empty:
                    break
                if packet is None:
                    self._ended.add(kind)
                    break
                if packet.pts is None or packet.time_base is None:
                    continue
                stamp = (packet.dts if packet.dts is not None else packet.pts) * packet.time_base
                self._pending[kind].append((stamp, packet))
                self._newest[kind] = stamp
                got = True
        return got

    def _write_ready(self, final: bool = False) -> None:
        while True:
            heads = {k: q[0][0] for k, q in self._pending.items() if q}
            if not heads:
                return
            kind = min(heads, key=lambda k: heads[k])
            stamp = heads[kind]
            waiting = [k for k in self._subs if k != kind and k not in heads and k not in self._ended]
            if waiting and not final and self._newest[kind] - stamp < self._max_lag:
                return  # another stream may still deliver something earlier
            _, packet = self._pending[kind].popleft()
            self.writer.write(packet, kind)

    def _finish(self) -> None:
        for kind, sub in self._subs.items():
            track = self._tracks[kind]
            if track is not None:
                track.unsubscribe(sub)
        try:
            self._pull()
            self._write_ready(final=True)
        finally:
            self._stats = self.writer.close()
