"""A running composition: the compositor ticking at the canvas rate, and its shared encoders.

Threads (none of them on the event loop):

- ``compose``: renders on absolute deadlines of the room clock (frame n at start + n/fps, so
  no drift); when it falls behind it skips the deadlines already missed and counts them.
  Each frame is stamped with its deadline and offered to every video encoder.
- ``encode-video`` per distinct :class:`Encoding`: fed through a two-slot latest-frame queue,
  so a slow encoder drops frames instead of delaying the compositor.
- ``encode-audio``: pulls the mixer's 20 ms blocks and feeds every audio encoder (one per
  distinct audio setting; encodings that differ only in video share it).

Outputs get packets from the encoders' tracks (``subscribe_packets``); those queues never
block the encoder, so a slow output cannot stall the composition either.
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import av
import numpy as np
import structlog

from gateway.media.clock import VIDEO_TIME_BASE, RoomClock
from gateway.media.compositor import Compositor
from gateway.media.encoder import AudioEncoder, Encoding, VideoEncoder, new_output_track
from gateway.media.layout.model import Canvas
from gateway.media.track import PacketSubscription, Track, TrackKind

if TYPE_CHECKING:
    from gateway.media.mixer import MixOutput

log = structlog.get_logger(__name__)

_output_ids = itertools.count(1)
MIN_FORCED_INTERVAL_S = 0.25


class _VideoPipeline(threading.Thread):
    """One video encoder and its output track."""

    def __init__(self, encoding: Encoding, clock: RoomClock, threads: int, slots: int = 2) -> None:
        super().__init__(name=f"encode-video-{encoding.width}x{encoding.height}", daemon=True)
        self.encoder = VideoEncoder(encoding, threads=threads)
        self.track = new_output_track(self.encoder.codec_info, TrackKind.VIDEO, clock)
        self._frames: queue.Queue[av.VideoFrame | None] = queue.Queue(slots)
        self._lock = threading.Lock()  # the compositor offers, stop() may race it
        self._stopping = False
        self.frames_dropped = 0
        self.frames_encoded = 0
        self.encode_seconds = 0.0
        self.keyframes_forced = 0
        self._keyframe_wanted = False  # set by any thread, consumed by the encoder thread
        self._last_forced = -1.0
        self.fps = encoding.fps
        self._first_pts: int | None = None
        self._last_slot: int | None = None  # the encoding's frame slot of the last frame taken
        self.frames_decimated = 0  # canvas frames between the encoding's own frame times

    def request_keyframe(self) -> None:
        """Make the next encoded frame a keyframe (a new viewer or recording must start at
        once, not at the next GOP). Requests before that frame coalesce into one; forced
        keyframes are at most one per ``MIN_FORCED_INTERVAL_S`` so a flood of requests
        cannot turn the stream into all-intra."""
        self._keyframe_wanted = True

    def offer(self, frame: av.VideoFrame | None) -> None:
        """Queue a frame; when the encoder is behind, the oldest queued frame is dropped.
        An encoding slower than the canvas takes one frame per its own frame period (by pts,
        1/90000), so the stream has the fps it asked for."""
        if frame is not None and frame.pts is not None:
            if self._first_pts is None:
                self._first_pts = frame.pts  # slots start at the first frame: even spacing from it
            # + fps: a canvas pts rounded down by half a tick still lands in its own slot
            slot = ((frame.pts - self._first_pts) * self.fps + self.fps) // 90000
            if slot == self._last_slot:
                self.frames_decimated += 1
                return
            self._last_slot = slot
        with self._lock:
            if self._stopping:
                return
            if frame is None:
                self._stopping = True
            while True:
                try:
                    self._frames.put_nowait(frame)
                    return
                except queue.Full:
                    try:
                        if self._frames.get_nowait() is not None:
                            self.frames_dropped += 1
                    except queue.Empty:
                        pass

    def stop(self) -> None:
        self.offer(None)
        if self.is_alive():
            self.join(timeout=5)
        self.track.close()

    def run(self) -> None:
        while True:
            frame = self._frames.get()
            if frame is None:
                try:
                    self._publish(self.encoder.flush())
                except Exception:
                    log.exception("video encoder flush failed")
                return
            try:
                started = time.perf_counter()
                force = self._keyframe_wanted and started - self._last_forced >= MIN_FORCED_INTERVAL_S
                if force:
                    self._keyframe_wanted = False
                    self._last_forced = started
                    self.keyframes_forced += 1
                packets = self.encoder.encode(frame, keyframe=True) if force else self.encoder.encode(frame)
                frame = None  # back to the compositor's frame pool while we wait for the next
                self.encode_seconds += time.perf_counter() - started
                self.frames_encoded += 1
                self._publish(packets)
            except Exception:  # one bad frame must not end the stream
                log.exception("video encode failed", encoding=self.encoder.encoding.key())

    def _publish(self, packets: list[av.Packet]) -> None:
        for packet in packets:
            self.track.push_packet(packet)


class _AudioPipeline:
    """One audio encoder and its output track; driven by the composition's audio thread."""

    def __init__(self, encoding: Encoding, clock: RoomClock) -> None:
        self.encoder = AudioEncoder(encoding)
        self.track = new_output_track(self.encoder.codec_info, TrackKind.AUDIO, clock)
        self._lock = threading.Lock()  # encode (audio thread) vs stop (caller)
        self._stopped = False

    def encode(self, samples: np.ndarray, pts: int) -> None:
        with self._lock:
            if self._stopped:
                return
            packets = self.encoder.encode(samples, pts)
        for packet in packets:
            self.track.push_packet(packet)

    def stop(self) -> None:
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            packets = self.encoder.flush()
        for packet in packets:
            self.track.push_packet(packet)
        self.track.close()


@dataclass(eq=False)
class EncodedOutput:
    """What an output consumes: the shared encoders' tracks for one encoding."""

    encoding: Encoding
    video_track: Track
    audio_track: Track | None
    output_id: int = field(default_factory=lambda: next(_output_ids))
    detached: bool = False
    _video: _VideoPipeline | None = field(default=None, repr=False)

    def request_keyframe(self) -> None:
        """Ask the shared video encoder for a keyframe now (coalesced with other requests)."""
        if self._video is not None and not self.detached:
            self._video.request_keyframe()

    def subscribe_video(self, maxsize: int = 512) -> PacketSubscription:
        """The video packets from the next keyframe on, which is requested at once: an output
        that joins a running encoder starts without waiting for the GOP to come round."""
        sub = self.video_track.subscribe_packets(maxsize, from_keyframe=True)
        self.request_keyframe()
        return sub


class Composition:
    """Runs a compositor at the canvas rate and encodes it once per distinct encoding."""

    def __init__(self, canvas: Canvas, compositor: Compositor, clock: RoomClock,
                 audio: MixOutput | None = None, *, encoder_threads: int = 1) -> None:
        self.canvas = canvas
        self.compositor = compositor
        self.clock = clock
        self.audio = audio
        self.encoder_threads = encoder_threads  # 1: least CPU per frame; 0: x264's own choice
        self._lock = threading.Lock()
        self._video: dict[tuple[object, ...], tuple[_VideoPipeline, int]] = {}
        self._audio: dict[tuple[object, ...], tuple[_AudioPipeline, int]] = {}
        self._video_now: tuple[_VideoPipeline, ...] = ()  # snapshots for the worker threads
        self._audio_now: tuple[_AudioPipeline, ...] = ()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.started_at: float | None = None
        self.frames_rendered = 0
        self.frames_skipped = 0
        self.render_seconds = 0.0
        self.render_errors = 0
        self.audio_blocks = 0

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> None:
        if self._threads:
            return
        self._stop.clear()
        self._threads = [threading.Thread(target=self._compose, name="compose", daemon=True)]
        if self.audio is not None:
            self._threads.append(threading.Thread(target=self._pump_audio, name="encode-audio", daemon=True))
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """Stop rendering, flush and stop every encoder, end the output tracks."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads = []
        with self._lock:
            videos = [pipeline for pipeline, _ in self._video.values()]
            audios = [pipeline for pipeline, _ in self._audio.values()]
            self._video.clear()
            self._audio.clear()
            self._video_now, self._audio_now = (), ()
        for pipeline in videos:
            pipeline.stop()
        for audio_pipeline in audios:
            audio_pipeline.stop()

    # ---------------------------------------------------------------- outputs
    def attach(self, encoding: Encoding) -> EncodedOutput:
        """The encoders for ``encoding``, created on first use and shared by equal encodings.
        Opening x264 takes a few tens of ms: call it off the event loop."""
        key = encoding.key()
        with self._lock:
            video, users = self._video.get(key, (None, 0))
            if video is None:
                video = _VideoPipeline(encoding, self.clock, self.encoder_threads)
                video.start()
            else:
                video.request_keyframe()  # the newcomer must not wait for the next GOP
            self._video[key] = (video, users + 1)
            audio_track = None
            if self.audio is not None:
                audio, audio_users = self._audio.get(encoding.audio_key(), (None, 0))
                if audio is None:
                    audio = _AudioPipeline(encoding, self.clock)
                self._audio[encoding.audio_key()] = (audio, audio_users + 1)
                audio_track = audio.track
            self._refresh()
        return EncodedOutput(encoding, video.track, audio_track, _video=video)

    def detach(self, output: EncodedOutput) -> None:
        """Release an output; the encoders stop (ending their tracks) when the last user leaves."""
        stopping: list[_VideoPipeline | _AudioPipeline] = []
        with self._lock:
            if output.detached:
                return
            output.detached = True
            for table, key in ((self._video, output.encoding.key()), (self._audio, output.encoding.audio_key())):
                entry = table.get(key)
                if entry is None:
                    continue
                pipeline, users = entry
                if users > 1:
                    table[key] = (pipeline, users - 1)
                else:
                    del table[key]
                    stopping.append(pipeline)
            self._refresh()
        for pipeline in stopping:
            pipeline.stop()

    def _refresh(self) -> None:
        self._video_now = tuple(pipeline for pipeline, _ in self._video.values())
        self._audio_now = tuple(pipeline for pipeline, _ in self._audio.values())

    # ---------------------------------------------------------------- metrics
    def stats(self) -> dict[str, Any]:
        elapsed = self.clock.now() - self.started_at if self.started_at is not None else 0.0
        encoders = [{"encoding": p.encoder.encoding.model_dump(), "frames_encoded": p.frames_encoded,
                     "frames_dropped": p.frames_dropped, "encode_seconds": p.encode_seconds,
                     "keyframes_forced": p.keyframes_forced, "frames_decimated": p.frames_decimated,
                     "bytes": p.encoder.bytes_out} for p in self._video_now]
        return {"frames_rendered": self.frames_rendered, "frames_skipped": self.frames_skipped,
                "frames_expected": int(elapsed * self.canvas.fps), "render_seconds": self.render_seconds,
                "render_errors": self.render_errors, "audio_blocks": self.audio_blocks,
                "encoders": encoders}

    # ---------------------------------------------------------------- worker threads
    def _compose(self) -> None:
        fps = self.canvas.fps
        period = 1.0 / fps
        start = self.started_at = self.clock.now()
        start_pts = round(start * 90000)
        index = 0
        while not self._stop.is_set():
            deadline = start + index * period
            delay = deadline - self.clock.now()
            if delay > 0 and self._stop.wait(delay):
                return
            late = self.clock.now() - deadline
            if late >= period:  # behind: the frames whose time has passed are not drawn
                missed = int(late / period)
                self.frames_skipped += missed
                index += missed
            pts = start_pts + round(index * 90000 / fps)  # exact grid: frame n at start + n/fps
            index += 1
            started = time.perf_counter()
            try:
                frame = self.compositor.render(time.time())
            except Exception:
                self.render_errors += 1
                if self.render_errors in (1, 10, 100) or self.render_errors % 1000 == 0:
                    log.exception("render failed", count=self.render_errors)
                continue
            self.render_seconds += time.perf_counter() - started
            frame.pts = pts  # the deadline, not the wall time: even spacing
            frame.time_base = VIDEO_TIME_BASE
            self.frames_rendered += 1
            for pipeline in self._video_now:
                pipeline.offer(frame)

    def _pump_audio(self) -> None:
        audio = self.audio
        assert audio is not None
        while not self._stop.is_set():
            try:
                pts, samples = audio.get(timeout=0.1)
            except queue.Empty:
                if getattr(audio, "closed", False):  # a closed output answers at once: don't spin
                    self._stop.wait(0.1)
                continue
            self.audio_blocks += 1
            for pipeline in self._audio_now:  # drained even with no encoder: no backlog builds
                try:
                    pipeline.encode(samples, pts)
                except Exception:
                    log.exception("audio encode failed")
