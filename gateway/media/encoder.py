"""Encoders for a composition's output: H.264 video (libx264) and AAC or Opus audio.

One encoder runs per distinct :class:`Encoding` and its packets go out on a :class:`Track`
that is never added to a bus: every output (RTMP push, recording, WHEP) subscribes to the
track's packets, so many outputs share one encode.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Literal

import av
import numpy as np
from av.video.frame import PictureType
from av.video.reformatter import VideoReformatter
from pydantic import BaseModel, ConfigDict, Field, model_validator

from gateway.media.audio import CHANNELS, samples_to_frame
from gateway.media.clock import AUDIO_RATE, VIDEO_TIME_BASE, RoomClock
from gateway.media.track import CodecInfo, Track, TrackKind, TrackSource

_GLOBAL_HEADER = "+global_header"  # extradata (avcC / AudioSpecificConfig) for MP4 and FLV
_OPUS_RATES = (8000, 12000, 16000, 24000, 48000)
X264Preset = Literal["ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower",
                     "veryslow"]


class Encoding(BaseModel):
    """API.md ``encoding``: what an output wants. Frozen so equal encodings share encoders."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    width: int = Field(1280, ge=16, le=4096)
    height: int = Field(720, ge=16, le=4096)
    fps: int = Field(30, ge=1, le=60)
    video_kbps: int = Field(1500, ge=50, le=50000)
    gop_s: float = Field(2, gt=0, le=20, description="seconds between keyframes")
    codec: Literal["h264"] = "h264"
    preset: X264Preset = "veryfast"
    audio_kbps: int = Field(128, ge=6, le=512)
    sample_rate: Literal[8000, 12000, 16000, 22050, 24000, 32000, 44100, 48000] = 48000
    channels: Literal[1, 2] = 2
    audio_codec: Literal["aac", "opus"] = "aac"

    @model_validator(mode="before")
    @classmethod
    def _even(cls, data: object) -> object:
        # yuv420p needs even dimensions; round down like Canvas does
        if isinstance(data, dict):
            data = dict(data)
            for name in ("width", "height"):
                if isinstance(data.get(name), int):
                    data[name] -= data[name] % 2
        return data

    @model_validator(mode="after")
    def _opus_rate(self) -> Encoding:
        if self.audio_codec == "opus" and self.sample_rate not in _OPUS_RATES:
            raise ValueError(f"opus cannot encode at {self.sample_rate} Hz; use one of {_OPUS_RATES}")
        return self

    def key(self) -> tuple[object, ...]:
        """Hashable identity: outputs with equal keys share one encoder pair."""
        return tuple(self.model_dump().items())

    def audio_key(self) -> tuple[object, ...]:
        """Encodings that differ only in video can share one audio encoder."""
        return (self.audio_codec, self.audio_kbps, self.sample_rate, self.channels)

    @property
    def gop_frames(self) -> int:
        return max(1, round(self.fps * self.gop_s))


def new_output_track(info: CodecInfo, kind: TrackKind, clock: RoomClock | None = None) -> Track:
    """A track carrying encoded output; not on any bus, outputs call ``subscribe_packets``."""
    source = TrackSource.CAMERA if kind is TrackKind.VIDEO else TrackSource.MIC
    return Track(kind, source, "composite", clock or RoomClock(), codec=info)


class VideoEncoder:
    """libx264, zero-latency, CBR-ish (maxrate = bitrate, 1 s VBV) for RTMP; no B-frames, so
    dts == pts; timestamps in 1/90000 on the room clock."""

    def __init__(self, encoding: Encoding, threads: int = 0) -> None:
        self.encoding = encoding
        ctx = av.CodecContext.create("libx264", "w")
        ctx.width, ctx.height = encoding.width, encoding.height
        ctx.pix_fmt = "yuv420p"
        ctx.time_base = VIDEO_TIME_BASE
        ctx.framerate = Fraction(encoding.fps)
        ctx.bit_rate = encoding.video_kbps * 1000
        ctx.gop_size = encoding.gop_frames
        ctx.max_b_frames = 0
        ctx.thread_count = threads
        kbps = encoding.video_kbps
        ctx.options = {
            "preset": encoding.preset,
            "tune": "zerolatency",
            "maxrate": f"{kbps}k",
            "bufsize": f"{kbps}k",
            "sc_threshold": "0",  # no scene-cut keyframes: a fixed GOP, as segmenters and CDNs want
            "flags": _GLOBAL_HEADER,
        }
        ctx.open()
        self._ctx = ctx
        self._scaler = VideoReformatter()
        self._last_pts: int | None = None
        self._frame_index = 0
        self.frames_in = 0
        self.frames_dropped = 0  # non-increasing timestamps (x264 refuses them)
        self.bytes_out = 0

    @property
    def codec_info(self) -> CodecInfo:
        ctx = self._ctx
        return CodecInfo(name="h264", time_base=VIDEO_TIME_BASE, width=ctx.width, height=ctx.height,
                         extradata=ctx.extradata, bit_rate=ctx.bit_rate)

    def encode(self, frame: av.VideoFrame, keyframe: bool = False) -> list[av.Packet]:
        """Encode one frame, scaled first (swscale, once) when its size differs; ``keyframe``
        forces an IDR picture (x264 starts a new GOP there).

        A frame stamped in 1/90000 (as compositions stamp them) is not modified, so one
        composed frame can feed several encoders; one without a timestamp gets one here.
        """
        self.frames_in += 1
        enc = self.encoding
        pts = frame.pts
        if pts is None or frame.time_base is None:
            pts = round(self._frame_index * 90000 / enc.fps)
        elif frame.time_base != VIDEO_TIME_BASE:
            pts = round(pts * frame.time_base * 90000)
        self._frame_index += 1
        if self._last_pts is not None and pts <= self._last_pts:
            self.frames_dropped += 1
            return []
        self._last_pts = pts
        if frame.width != enc.width or frame.height != enc.height or frame.format.name != "yuv420p":
            frame = self._scaler.reformat(frame, enc.width, enc.height, "yuv420p",
                                          interpolation="BILINEAR", threads=1)
        if frame.pts != pts or frame.time_base != VIDEO_TIME_BASE:
            # PyAV would rebase the frame's timestamps in place anyway
            frame.pts = pts
            frame.time_base = VIDEO_TIME_BASE
        if not keyframe:
            return self._count(self._ctx.encode(frame))
        # the frame may be shared with other encoders: mark it for this call only
        frame.pict_type = PictureType.I
        try:
            return self._count(self._ctx.encode(frame))
        finally:
            frame.pict_type = PictureType.NONE

    def flush(self) -> list[av.Packet]:
        return self._count(self._ctx.encode(None))

    def _count(self, packets: list[av.Packet]) -> list[av.Packet]:
        for packet in packets:
            self.bytes_out += packet.size
        return packets


class AudioEncoder:
    """AAC (FFmpeg's native ``aac``, 1024-sample frames) or Opus (``libopus``, 960), fed the
    mixer's 20 ms blocks of 48 kHz s16 stereo and re-chunked with an ``av.AudioFifo``.

    Output timestamps continue from the first input pts (converted to the encoder's rate);
    a gap in the input of up to 2 s is filled with silence so audio stays continuous and in
    sync with video, a longer one re-anchors the timeline.
    """

    _MAX_FILL_S = 2.0

    def __init__(self, encoding: Encoding) -> None:
        self.encoding = encoding
        codec = "aac" if encoding.audio_codec == "aac" else "libopus"
        ctx = av.CodecContext.create(codec, "w")
        formats = [f.name for f in ctx.codec.audio_formats or ()]
        fmt = "s16" if "s16" in formats else formats[0]
        layout = "stereo" if encoding.channels == 2 else "mono"
        ctx.sample_rate = encoding.sample_rate
        ctx.layout = layout
        ctx.format = fmt
        ctx.bit_rate = encoding.audio_kbps * 1000
        ctx.time_base = Fraction(1, encoding.sample_rate)
        ctx.options = {"flags": _GLOBAL_HEADER}
        ctx.open()
        self._ctx = ctx
        self.frame_size = ctx.frame_size or 1024
        self.rate = encoding.sample_rate
        same = fmt == "s16" and layout == "stereo" and self.rate == AUDIO_RATE
        self._resampler = None if same else av.AudioResampler(format=fmt, layout=layout, rate=self.rate)
        self._fifo = av.AudioFifo()
        self._head: int | None = None  # pts (encoder rate) of the first sample in the fifo
        self._expected_in: int | None = None  # input pts (48 kHz) that continues the stream
        self.blocks_in = 0
        self.gaps_filled = 0
        self.reanchors = 0
        self.bytes_out = 0

    @property
    def codec_info(self) -> CodecInfo:
        ctx = self._ctx
        return CodecInfo(name="aac" if self.encoding.audio_codec == "aac" else "opus",
                         time_base=Fraction(1, self.rate), sample_rate=self.rate,
                         channels=self.encoding.channels, extradata=ctx.extradata, bit_rate=ctx.bit_rate)

    def encode(self, samples: np.ndarray, pts: int) -> list[av.Packet]:
        """Encode an (n, 2) int16 block whose first sample is at ``pts`` (48 kHz, room clock)."""
        self.blocks_in += 1
        if self._expected_in is None:
            self._head = pts * self.rate // AUDIO_RATE
        else:
            gap = pts - self._expected_in
            if gap > len(samples) // 2 and gap <= self._MAX_FILL_S * AUDIO_RATE:
                self.gaps_filled += 1
                self._write(np.zeros((gap, CHANNELS), np.int16))
            elif gap > self._MAX_FILL_S * AUDIO_RATE:
                # a long outage: restart the timeline at the new pts (stays increasing)
                self.reanchors += 1
                assert self._head is not None
                self._head = max(self._head, pts * self.rate // AUDIO_RATE - self._fifo.samples)
            # small jitter and overlaps: keep counting samples, the mixer's clock is steady
        self._expected_in = pts + len(samples)
        self._write(samples)
        return self._drain(final=False)

    def flush(self) -> list[av.Packet]:
        """Encode what is queued (padded to a whole frame with silence) and drain the codec."""
        packets = self._drain(final=True)
        return packets + self._count(self._ctx.encode(None))

    def _write(self, samples: np.ndarray) -> None:
        frame = samples_to_frame(samples)
        frame.pts = None  # the fifo would insist on timestamps starting at zero; we keep our own
        frames = self._resampler.resample(frame) if self._resampler else [frame]
        for out in frames:
            out.pts = None
            self._fifo.write(out)

    def _drain(self, final: bool) -> list[av.Packet]:
        packets: list[av.Packet] = []
        size = self.frame_size
        if final and self._fifo.samples % size:
            pad = size - self._fifo.samples % size
            self._write(np.zeros((pad * AUDIO_RATE // self.rate + 1, CHANNELS), np.int16))
        while self._fifo.samples >= size:
            frame = self._fifo.read(size)
            assert frame is not None and self._head is not None
            frame.pts = self._head
            frame.time_base = Fraction(1, self.rate)
            self._head += size
            packets += self._ctx.encode(frame)
        if final:
            self._fifo = av.AudioFifo()  # drop any resampler rounding remainder
        return self._count(packets)

    def _count(self, packets: list[av.Packet]) -> list[av.Packet]:
        for packet in packets:
            self.bytes_out += packet.size
        return packets
