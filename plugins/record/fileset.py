"""One recorded file set: packet sources in, one file per format per part out, on one thread.

Packets from every source are written in timestamp order (a packet waits until every other
live stream has one at least as late, or until its own stream is ``max_lag_s`` ahead).

Splitting (``split_s``, ``split_bytes``) cuts every format at the same instant, so parts
neither overlap nor leave a gap:

- with video, at a keyframe: shortly before the part is due the encoder is asked for one
  (``request_keyframe``), and the part ends where that keyframe starts; each audio packet
  goes to the part its first sample belongs to;
- audio only, exactly at ``part start + split_s`` (or at the packet that passes
  ``split_bytes``).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Protocol

import av
import structlog

from gateway.media.audiofile import FORMAT_AUDIO_CODEC
from gateway.media.hls import HlsSegment, HlsWriter
from gateway.media.mp4 import Fmp4Writer
from gateway.media.track import CodecInfo

log = structlog.get_logger(__name__)

MP4_MAX_BYTES = 2 * 1024**3 - 64 * 1024**2  # 2 GB, less a margin for the GOP that finishes the part
MP4_MAX_S = 24 * 3600


class Source(Protocol):
    infos: dict[str, CodecInfo]

    def poll(self) -> list[tuple[str, av.Packet]] | None: ...

    def finish(self) -> list[tuple[str, av.Packet]]: ...

    def close(self) -> None: ...


@dataclass
class FinishedFile:
    fmt: str
    key: str
    path: Path
    index: int
    start: Fraction  # room time
    duration_s: float
    size: int
    video_frames: int = 0
    segments: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class FileSetSpec:
    who: str  # "mix", or "<identity>_<track>"
    participant_id: str | None
    formats: list[str]
    split_s: int = 0
    split_bytes: int = 0
    hls_segment_s: float = 4.0
    fps: int = 30


class FileSet:
    """``open_file(fmt, index, start) -> (path, key)`` chooses where a part is written;
    ``open_segment(playlist_key, n) -> (path, key, uri)`` does the same for HLS segments;
    ``on_file`` / ``on_segment`` are called on this thread when one is complete."""

    def __init__(self, spec: FileSetSpec, sources: list[Source], *,
                 open_file: Callable[[str, int, Fraction], tuple[Path, str]],
                 open_segment: Callable[[str, int], tuple[Path, str, str]],
                 on_file: Callable[[FinishedFile], None],
                 on_segment: Callable[[str, HlsSegment, str], None],
                 to_wall: Callable[[Fraction], float],
                 on_empty: Callable[[Path], None] | None = None,
                 on_error: Callable[[Exception], None] | None = None,
                 keyframe: Callable[[], None] | None = None, now: Callable[[], float] | None = None,
                 max_lag_s: float = 1.0) -> None:
        self.spec = spec
        self.sources = sources
        self.infos: dict[str, CodecInfo] = {}
        for source in sources:
            self.infos.update(source.infos)
        self.has_video = "video" in self.infos
        # format -> (video key or None, audio key or None); formats with nothing to hold are left out
        self.streams: dict[str, tuple[str | None, str | None]] = {}
        for fmt in spec.formats:
            video = "video" if self.has_video and fmt in ("mp4", "hls") else None
            audio = FORMAT_AUDIO_CODEC[fmt] if FORMAT_AUDIO_CODEC[fmt] in self.infos else None
            if video or (audio and fmt != "hls"):
                self.streams[fmt] = (video, audio)
        self.split_s = spec.split_s
        self.split_bytes = spec.split_bytes
        if any(f in ("mp4", "m4a") for f in self.streams):  # MP4 is always split at 2 GB / 24 h
            self.split_s = min(self.split_s or MP4_MAX_S, MP4_MAX_S)
            self.split_bytes = min(self.split_bytes or MP4_MAX_BYTES, MP4_MAX_BYTES)
        self.open_file, self.open_segment = open_file, open_segment
        self.on_file, self.on_segment = on_file, on_segment
        self.to_wall = to_wall
        self.on_empty = on_empty
        self.on_error = on_error
        self.keyframe = keyframe
        self.now = now  # the room clock: the keyframe is asked for when the split point is rendered
        self._keys = list(self.infos)
        self._pending: dict[str, deque[tuple[Fraction, av.Packet]]] = {k: deque() for k in self._keys}
        self._newest: dict[str, Fraction] = {}
        self._live = list(sources)
        self._max_lag = Fraction(max_lag_s)
        self._writers: dict[str, Any] = {}
        self._part_keys: dict[str, str] = {}
        self.part_start: Fraction | None = None
        self.index = 0
        self._keyframe_asked = False
        self.files: list[FinishedFile] = []
        self.error: Exception | None = None
        self._cutoff: Fraction | None = None
        self.thread_cpu_s = 0.0  # CPU time of this file set's thread, once it has ended
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"record-{spec.who}", daemon=True)

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> FileSet:
        self._thread.start()
        return self

    def stop(self) -> list[FinishedFile]:
        """Write what was received, finish every file, release the sources."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        return self.files

    def _run(self) -> None:
        try:
            while not self._stop.is_set() and self._live:
                got = self._pull()
                self._write_ready()
                self._ask_on_time()
                if not got:
                    self._stop.wait(0.01)
            self._catch_up()
            for source in self.sources:
                for key, packet in source.finish():
                    self._queue(key, packet)
            self._write_ready(final=True)
        except Exception as exc:  # keep what was written playable
            self.error = exc
            log.exception("recording failed", who=self.spec.who)
            if self.on_error is not None:
                self.on_error(exc)
        finally:
            try:
                self._close_part(None)
            except Exception:
                log.exception("closing a recording failed", who=self.spec.who)
            for source in self.sources:
                source.close()
            self.thread_cpu_s = time.thread_time()

    def _catch_up(self, limit_s: float = 1.5) -> None:
        """At stop, let the audio reach the last picture (a loaded mixer runs a little behind),
        so every stream of the file ends at the same instant."""
        video = self._newest.get("video")
        if video is None:
            return
        self._cutoff = video  # the file ends with the picture that was last when stop was asked
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            behind = [k for s in self._live for k in s.infos
                      if k != "video" and self._newest.get(k, Fraction(-1)) < video - Fraction(1, 20)]
            if not behind:
                return
            if not self._pull():
                time.sleep(0.01)
            self._write_ready()

    # ---------------------------------------------------------------- packets in
    def _pull(self) -> bool:
        got = False
        for source in list(self._live):
            tagged = source.poll()
            if tagged is None:
                self._live.remove(source)
                continue
            for key, packet in tagged:
                self._queue(key, packet)
                got = True
        return got

    def _queue(self, key: str, packet: av.Packet) -> None:
        if key not in self._pending or packet.pts is None or packet.time_base is None:
            return
        stamp = (packet.dts if packet.dts is not None else packet.pts) * packet.time_base
        if self._cutoff is not None and stamp > self._cutoff:
            return  # stopping: nothing after the end
        self._pending[key].append((stamp, packet))
        self._newest[key] = stamp

    def _write_ready(self, final: bool = False) -> None:
        live_keys = {k for s in self._live for k in s.infos}
        while True:
            heads = {k: q[0][0] for k, q in self._pending.items() if q}
            if not heads:
                return
            key = min(heads, key=lambda k: heads[k])
            stamp = heads[key]
            waiting = [k for k in live_keys if k != key and k not in heads]
            if waiting and not final and self._newest[key] - stamp < self._max_lag:
                return  # another stream may still deliver something earlier
            _, packet = self._pending[key].popleft()
            self._dispatch(key, stamp, packet)

    # ---------------------------------------------------------------- parts
    def _dispatch(self, key: str, stamp: Fraction, packet: av.Packet) -> None:
        is_video = key == "video"
        if self.part_start is None:
            if self.has_video and not (is_video and packet.is_keyframe):
                return  # a file starts at a keyframe
            self._open_part(stamp)
        elif self._due(is_video and packet.is_keyframe, stamp):
            boundary = stamp
            if not self.has_video and self.split_s and stamp - self.part_start >= self.split_s:
                boundary = self.part_start + self.split_s
            self._close_part(boundary)
            self._open_part(boundary)
        assert self.part_start is not None
        if stamp < self.part_start:
            return  # late: its part is closed (never seen in order, kept for safety)
        self._maybe_ask_keyframe(is_video, stamp)
        kind = "video" if is_video else "audio"
        for fmt, (video, audio) in self.streams.items():
            if key in (video, audio):
                self._writers[fmt].write(packet, kind)

    def _due(self, keyframe: bool, stamp: Fraction) -> bool:
        assert self.part_start is not None
        if self.has_video and not keyframe:
            return False
        half_frame = Fraction(1, 2 * self.spec.fps) if self.has_video else Fraction(0)
        elapsed = stamp - self.part_start
        if self._keyframe_asked and self.split_s and elapsed >= self.split_s / 2:
            return True  # the keyframe asked for at the split point (a frame early or late under load)
        timed = bool(self.split_s) and elapsed >= self.split_s - half_frame
        sized = bool(self.split_bytes) and self._part_bytes() >= self.split_bytes
        return timed or sized

    def _maybe_ask_keyframe(self, is_video: bool, stamp: Fraction) -> None:
        if not is_video or self.keyframe is None or self._keyframe_asked or self.part_start is None:
            return
        late = self.now is None and self.split_s and stamp - self.part_start >= self.split_s - Fraction(
            3, 2 * self.spec.fps)
        if late or (self.split_bytes and self._part_bytes() >= self.split_bytes):
            self._keyframe_asked = True
            self.keyframe()

    def _ask_on_time(self) -> None:
        """Ask for the keyframe half a frame before the split point is rendered, so the picture
        drawn at that instant is the one encoded as a keyframe."""
        if self.keyframe is None or self.now is None or self._keyframe_asked or self.part_start is None \
                or not self.split_s:
            return
        if self.now() >= float(self.part_start) + self.split_s - 0.5 / self.spec.fps:
            self._keyframe_asked = True
            self.keyframe()

    def _part_bytes(self) -> int:
        return max([getattr(w, "bytes_in", 0) or getattr(w, "bytes", 0) for w in self._writers.values()] or [0])

    def _open_part(self, start: Fraction) -> None:
        self.index += 1
        self.part_start = start
        self._keyframe_asked = False
        for fmt, (video, audio) in self.streams.items():
            path, key = self.open_file(fmt, self.index, start)
            vinfo = self.infos[video] if video else None
            ainfo = self.infos[audio] if audio else None
            if fmt == "hls":
                self._writers[fmt] = HlsWriter(path, vinfo, ainfo, segment_s=self.spec.hls_segment_s,
                                               video_fps=self.spec.fps, started_at=self.to_wall(start),
                                               on_segment=lambda seg, k=key: self.on_segment(k, seg, "ts"),
                                               segment_target=lambda n, k=key: self._segment_target(k, n))
            else:
                self._writers[fmt] = Fmp4Writer(path, vinfo, ainfo, fmt=fmt, origin=start, video_fps=self.spec.fps)
            self._part_keys[fmt] = key

    def _segment_target(self, playlist_key: str, n: int) -> tuple[Path, str]:
        path, _key, uri = self.open_segment(playlist_key, n)
        return path, uri

    def _close_part(self, boundary: Fraction | None) -> None:
        writers, self._writers = self._writers, {}
        start = self.part_start
        for fmt, writer in writers.items():
            key = self._part_keys[fmt]
            if isinstance(writer, HlsWriter):
                segments, duration = writer.close()
                if not segments:
                    writer.path.unlink(missing_ok=True)
                    if self.on_empty is not None:
                        self.on_empty(writer.path)
                    continue
                size = sum(s.bytes for s in segments) + writer.path.stat().st_size
                done = FinishedFile(fmt, key, writer.path, self.index, segments[0].start, duration, size,
                                    segments=[{"uri": s.uri, "duration_s": round(s.duration, 3), "size": s.bytes}
                                              for s in segments])
            else:
                stats = writer.close()
                if not stats.bytes or writer.first_s is None:
                    Path(stats.path).unlink(missing_ok=True)
                    if self.on_empty is not None:
                        self.on_empty(Path(stats.path))
                    continue
                assert start is not None
                done = FinishedFile(fmt, key, Path(stats.path), self.index, start, stats.duration_s, stats.bytes,
                                    video_frames=stats.video_packets)
            self.files.append(done)
            try:
                self.on_file(done)
            except Exception:
                log.exception("file hand-over failed", key=key)
