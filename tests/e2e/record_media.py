"""Media stand-ins and probes for the recording tests: a participant whose picture carries a
frame counter (so a file's content says which source frames it holds), a participant
publishing H.264 packets (recorded without re-encoding), decoding and spectrum helpers."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import av
import numpy as np

from gateway.media.encoder import Encoding, VideoEncoder
from gateway.media.track import TrackKind, TrackSource
from gateway.rooms.participant import ParticipantKind

BITS = 10
STRIPE = 32  # px per bit on a 320-wide picture


def counter_picture(value: int, w: int = 320, h: int = 180) -> av.VideoFrame:
    rgb = np.zeros((h, w, 3), np.uint8)
    for bit in range(BITS):
        if value >> bit & 1:
            rgb[:, bit * STRIPE:(bit + 1) * STRIPE] = 255
    return av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")


def read_counter(rgb: np.ndarray) -> int:
    """The counter of a decoded picture of the same size (stripes sampled at their centres)."""
    h = rgb.shape[0]
    row = rgb[h // 2 - 4:h // 2 + 4].mean(axis=(0, 2))
    return sum(1 << bit for bit in range(BITS) if row[bit * STRIPE + STRIPE // 2] > 128)


class Publisher:
    """A participant publishing from a thread: ``counter`` raw frames at `fps`, or H.264
    packets of a solid colour (``h264_rgb``)."""

    def __init__(self, node: Any, room_id: str, identity: str, *, fps: int = 60,
                 h264_rgb: tuple[int, int, int] | None = None) -> None:
        self.node, self.room_id, self.identity, self.fps = node, room_id, identity, fps
        self.h264_rgb = h264_rgb
        self.frames = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.participant_id = ""
        self.track: Any = None

    async def start(self) -> Publisher:
        room = await self.node.rooms.get(self.room_id)
        participant = await self.node.rooms.join(self.room_id, self.identity, kind=ParticipantKind.TEST,
                                                 name=self.identity, operator=True)
        self.participant_id = participant.participant_id
        media = self.node.media.room_media(room)
        encoder = None
        codec = None
        if self.h264_rgb is not None:
            encoder = VideoEncoder(Encoding(width=320, height=180, fps=self.fps, gop_s=1, video_kbps=300), threads=1)
            codec = encoder.codec_info
        self.track = media.bus.create_track(TrackKind.VIDEO, TrackSource.CAMERA, self.participant_id, codec=codec)
        self._thread = threading.Thread(target=self._run, args=(encoder,), daemon=True)
        self._thread.start()
        return self

    def _run(self, encoder: VideoEncoder | None) -> None:
        start = time.monotonic()
        solid = None
        if encoder is not None:
            rgb = np.empty((180, 320, 3), np.uint8)
            rgb[:] = self.h264_rgb
            solid = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
        while not self._stop.is_set():
            deadline = start + self.frames / self.fps
            if self._stop.wait(max(0.0, deadline - time.monotonic())):
                return
            if encoder is None:
                self.track.push_frame(counter_picture(self.frames % (1 << BITS)))
            else:
                frame = solid.reformat()  # a fresh frame object each time
                frame.pts = None  # the encoder numbers the frames at its fps
                for packet in encoder.encode(frame):
                    self.track.push_packet(packet)
            self.frames += 1

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


def decode_video(path: Path) -> tuple[list[float], list[np.ndarray]]:
    """(pts in seconds, rgb) of every video frame."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        out = [(float(f.pts * stream.time_base), f.to_ndarray(format="rgb24")) for f in container.decode(stream)]
    return [t for t, _ in out], [f for _, f in out]


def decode_audio(path: Path) -> tuple[np.ndarray, int]:
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        rate = stream.codec_context.sample_rate
        mono = []
        for frame in container.decode(stream):
            data = frame.to_ndarray()
            channels = len(frame.layout.channels)
            # planar: one row per channel; packed: channels interleaved in one row
            mono.append(data.mean(axis=0) if frame.format.is_planar else data.reshape(-1, channels).mean(axis=1))
    return np.concatenate(mono).astype(float), rate


def peak_hz(samples: np.ndarray, rate: int) -> float:
    samples = samples[len(samples) // 4:]  # past the jitter buffers' priming
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[int(np.argmax(spectrum))])


def ffprobe(path: Path) -> dict[str, Any]:
    out = subprocess.run(["ffprobe", "-v", "error", "-show_streams", "-show_format", "-of", "json", str(path)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def near(pixel: np.ndarray, rgb: tuple[int, ...], tolerance: int = 40) -> bool:
    return bool(np.abs(pixel - np.array(rgb)).max() <= tolerance)


def centre(frame: np.ndarray) -> np.ndarray:
    h, w = frame.shape[:2]
    return frame[h // 2 - 4:h // 2 + 4, w // 2 - 4:w // 2 + 4].reshape(-1, 3).mean(axis=0)
