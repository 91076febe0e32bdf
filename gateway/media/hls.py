"""HLS from encoded packets: MPEG-TS segments cut at video keyframes and an M3U8 playlist.

While recording the playlist is a live ``EVENT`` playlist, rewritten after every finished
segment (players can follow it); :meth:`HlsWriter.close` turns it into a ``VOD`` playlist
with ``#EXT-X-ENDLIST``. Timestamps run on across segments (one timeline per playlist), and
the playlist names its start time like TRTC's ``#EXT-X-TRTC-START-REC-TIME`` (here
``#EXT-X-PROGRAM-DATE-TIME`` on the first segment, a standard tag).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av

from gateway.media.mp4 import Fmp4Writer
from gateway.media.track import CodecInfo


@dataclass
class HlsSegment:
    path: Path
    uri: str  # as the playlist names it
    start: Fraction  # room time
    duration: float
    bytes: int


class HlsWriter:
    """``write(packet, kind)`` like :class:`Fmp4Writer`; segments of about ``segment_s``.

    ``on_segment(segment)`` is called (on the writer's thread) when a segment file is complete,
    so it can be uploaded while the recording goes on.
    """

    def __init__(self, playlist: str | os.PathLike[str], video: CodecInfo | None, audio: CodecInfo | None, *,
                 segment_s: float = 4.0, video_fps: int = 30, started_at: float | None = None,
                 on_segment: Callable[[HlsSegment], None] | None = None,
                 segment_target: Callable[[int], tuple[Path, str]] | None = None) -> None:
        self.path = Path(playlist)
        self.video, self.audio = video, audio
        self.segment_s = Fraction(segment_s)
        self.video_fps = video_fps
        self.started_at = started_at if started_at is not None else time.time()
        self.on_segment = on_segment
        # where segment n is written and what the playlist calls it (a spool may choose the path)
        self.segment_target = segment_target or self._sibling
        self.segments: list[HlsSegment] = []
        self._current: Fmp4Writer | None = None
        self._current_start: Fraction | None = None
        self._current_uri = ""
        self._index = 0
        self.closed = False
        self._write_playlist(final=False)

    @property
    def stem(self) -> str:
        return self.path.stem

    def _sibling(self, index: int) -> tuple[Path, str]:
        name = f"{self.stem}_{index:05d}.ts"
        return self.path.with_name(name), name

    @property
    def bytes(self) -> int:
        return sum(s.bytes for s in self.segments) + (self._current.bytes_in if self._current else 0)

    def write(self, packet: av.Packet, kind: str) -> bool:
        if self.closed or packet.pts is None or packet.time_base is None:
            return False
        stamp = packet.pts * packet.time_base
        cut = kind == "video" and packet.is_keyframe and self._current_start is not None \
            and stamp - self._current_start >= self.segment_s
        if cut or self._current is None:
            if self._current is None and self.video is not None and not (kind == "video" and packet.is_keyframe):
                return False  # a segment starts at a keyframe
            self._finish_segment(stamp)
            self._index += 1
            path, self._current_uri = self.segment_target(self._index)
            self._current = Fmp4Writer(path, self.video, self.audio, fmt="ts", shift=False,
                                       video_fps=self.video_fps)
            self._current_start = stamp
        return self._current.write(packet, kind)

    def _finish_segment(self, end: Fraction | None) -> None:
        current, start = self._current, self._current_start
        if current is None or start is None:
            return
        self._current = None
        stats = current.close()
        if not stats.bytes or current.first_s is None:
            Path(stats.path).unlink(missing_ok=True)
            return
        stop = end if end is not None else current.end_s
        segment = HlsSegment(Path(stats.path), self._current_uri, start, float(stop - start), stats.bytes)
        self.segments.append(segment)
        self._write_playlist(final=False)
        if self.on_segment is not None:
            self.on_segment(segment)

    def _write_playlist(self, final: bool) -> None:
        target = max([math.ceil(s.duration) for s in self.segments] or [math.ceil(self.segment_s)])
        lines = ["#EXTM3U", "#EXT-X-VERSION:3", f"#EXT-X-TARGETDURATION:{target}", "#EXT-X-MEDIA-SEQUENCE:0",
                 f"#EXT-X-PLAYLIST-TYPE:{'VOD' if final else 'EVENT'}"]
        for i, segment in enumerate(self.segments):
            if i == 0:
                stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(self.started_at))
                lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{stamp}.{int(self.started_at * 1000) % 1000:03d}Z")
            lines += [f"#EXTINF:{segment.duration:.6f},", segment.uri]
        if final:
            lines.append("#EXT-X-ENDLIST")
        tmp = self.path.with_suffix(".m3u8.tmp")
        tmp.write_text("\n".join(lines) + "\n")
        os.replace(tmp, self.path)  # readers never see half a playlist

    def close(self) -> tuple[list[HlsSegment], float]:
        """Finish the last segment and write the VOD playlist; returns the segments and the
        total duration."""
        if not self.closed:
            self.closed = True
            self._finish_segment(None)
            self._write_playlist(final=True)
        return self.segments, sum(s.duration for s in self.segments)
