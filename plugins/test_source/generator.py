"""Generates a test pattern's frames and 20 ms tone blocks on one worker thread."""

from __future__ import annotations

import itertools
import threading
import time
from fractions import Fraction

import av
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from gateway.ingress import TestPattern
from gateway.media.audio import BLOCK_SAMPLES, samples_to_frame
from gateway.media.bus import FrameBus
from gateway.media.clock import AUDIO_RATE
from gateway.media.layout.model import parse_color
from gateway.media.track import Track, TrackKind, TrackSource

BARS = [(192, 192, 192), (192, 192, 0), (0, 192, 192), (0, 192, 0), (192, 0, 192), (192, 0, 0), (0, 0, 192)]


def pattern_image(pattern: TestPattern, font_path: str = "") -> np.ndarray:
    """The picture as an (h, w, 3) RGB array: solid colour or 75% colour bars, optional label."""
    w, h = pattern.width, pattern.height
    if pattern.bars:
        rgb = np.zeros((h, w, 3), dtype=np.uint8)
        edges = np.linspace(0, w, len(BARS) + 1).astype(int)
        for (x0, x1), colour in zip(itertools.pairwise(edges), BARS, strict=True):
            rgb[:, x0:x1] = colour
    else:
        rgb = np.empty((h, w, 3), dtype=np.uint8)
        rgb[:] = parse_color(pattern.color)
    if pattern.label:
        image = Image.fromarray(rgb)
        size = max(12, h // 8)
        font = ImageFont.truetype(font_path, size) if font_path else ImageFont.load_default()
        ImageDraw.Draw(image).text((w // 2, h // 2), pattern.label, font=font, fill=(255, 255, 255), anchor="mm",
                                   stroke_width=max(1, size // 12), stroke_fill=(0, 0, 0))
        rgb = np.asarray(image)
    return rgb


def tone_block(tones: list[float], volume: float, start_sample: int, n: int = BLOCK_SAMPLES) -> np.ndarray:
    """`n` stereo samples of the summed sine tones, continuous from `start_sample`."""
    t = (start_sample + np.arange(n)) / AUDIO_RATE
    wave = np.zeros(n)
    for tone in tones:
        wave += np.sin(2 * np.pi * tone * t)
    wave *= volume * 32767 / max(1, len(tones))
    mono = wave.astype(np.int16)
    return np.repeat(mono[:, None], 2, axis=1)


class PatternGenerator:
    def __init__(self, bus: FrameBus, participant_id: str, pattern: TestPattern, *, video: bool = True,
                 audio: bool = True, font_path: str = "") -> None:
        self.bus = bus
        self.pattern = pattern
        tones = pattern.tone_hz if isinstance(pattern.tone_hz, list) else (
            [pattern.tone_hz] if pattern.tone_hz is not None else [])
        self.tones = [float(t) for t in tones]
        self.video_track: Track | None = None
        self.audio_track: Track | None = None
        if video:
            rgb = pattern_image(pattern, font_path)
            # converted once; each frame is a copy of these planes
            self.yuv = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p").to_ndarray()
            self.video_track = bus.create_track(TrackKind.VIDEO, TrackSource.CAMERA, participant_id)
        if audio and self.tones:
            self.audio_track = bus.create_track(TrackKind.AUDIO, TrackSource.MIC, participant_id)
        self.paused = False
        self.video_frames = 0
        self.audio_blocks = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"test-source-{participant_id}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=2)
        for track in (self.video_track, self.audio_track):
            if track is not None:
                self.bus.remove_track(track.track_id)

    def _video_frame(self, index: int) -> av.VideoFrame:
        frame = av.VideoFrame.from_ndarray(self.yuv, format="yuv420p")
        frame.pts = index
        frame.time_base = Fraction(1, self.pattern.fps)
        return frame

    def _run(self) -> None:
        frame_period = 1 / self.pattern.fps
        block_period = BLOCK_SAMPLES / AUDIO_RATE
        start = time.monotonic()
        video_index = audio_index = 0
        while not self._stop.is_set():
            now = time.monotonic() - start
            if self.video_track is not None and now >= video_index * frame_period:
                if not self.paused:
                    self.video_track.push_frame(self._video_frame(video_index))
                    self.video_frames += 1
                video_index = max(video_index + 1, int(now / frame_period))
            if self.audio_track is not None:
                while now >= audio_index * block_period:
                    if not self.paused:
                        samples = tone_block(self.tones, self.pattern.volume, audio_index * BLOCK_SAMPLES)
                        self.audio_track.push_frame(samples_to_frame(samples, audio_index * BLOCK_SAMPLES))
                        self.audio_blocks += 1
                    audio_index += 1
            due = []
            if self.video_track is not None:
                due.append(video_index * frame_period)
            if self.audio_track is not None:
                due.append(audio_index * block_period)
            wait = (min(due) if due else 0.1) - (time.monotonic() - start)
            if wait > 0:
                self._stop.wait(wait)
