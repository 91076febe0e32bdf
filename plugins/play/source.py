"""Where a play-in source may come from, and opening it with PyAV.

A request names a local path, an uploaded file or a network URL. Local paths are an attack
surface (the request comes over HTTP, the file is read by the server), so:

- a path must resolve (symlinks followed) inside one of ``allowed_dirs`` or the upload dir,
  and end in one of the container extensions play-in supports;
- the demuxer is limited to those containers (``format_whitelist``): a ``.mp4`` that is
  really an HLS playlist or a concat script cannot make FFmpeg open other files;
- the I/O protocols are limited per source (``protocol_whitelist``): a local file opens only
  ``file``; an HTTP(S) source (HLS included) only http/https/tcp/tls/crypto, so a playlist
  cannot point a segment at ``file:///etc/…``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import av
import structlog

from gateway.errors import Forbidden, MediagateError, NotFound, Unprocessable, UnsupportedMediaType, ValidationFailed

log = structlog.get_logger(__name__)

LOCAL_EXTENSIONS = {"mp4", "mov", "mkv", "flv", "ts", "mp3", "m4a", "wav"}
_FILE_FORMATS = "mov,mp4,m4a,3gp,3g2,mj2,matroska,webm,flv,live_flv,mpegts,mp3,wav"
_NET_FORMATS = _FILE_FORMATS + ",hls,aac,rtsp,rtp,sdp"
_PROTOCOLS = {
    "file": "file",
    "http": "http,https,tcp,tls,crypto",
    "https": "http,https,tcp,tls,crypto",
    "rtmp": "rtmp,tcp",
    "rtmps": "rtmps,rtmp,tcp,tls",
    "rtsp": "rtsp,rtp,udp,tcp,tls",
}
# codecs the track decodes itself from packets (codec name + extradata is all its decoder
# needs); anything else is decoded by the player from the container's own codec context
PACKET_CODECS = {"h264", "hevc", "vp8", "vp9", "av1", "mpeg4", "aac", "opus", "mp3", "vorbis", "flac",
                 "pcm_s16le", "pcm_alaw", "pcm_mulaw"}


class SourceUnreachable(Unprocessable):
    """A network source that cannot be opened or read now (worth retrying)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code="source_unreachable", field="url")


@dataclass(frozen=True)
class SourceSpec:
    """What to open: the string FFmpeg gets, and how."""

    target: str  # a local path or a URL
    network: bool
    shown: str  # for reports: the URL, or the file's name (not the server's directory layout)
    scheme: str = "file"


@dataclass
class OpenedSource:
    spec: SourceSpec
    container: Any  # av.container.InputContainer
    video: Any | None  # av.VideoStream
    audio: Any | None  # av.AudioStream
    media_info: dict[str, Any] = field(default_factory=dict)

    @property
    def streams(self) -> list[Any]:
        return [s for s in (self.video, self.audio) if s is not None]

    @property
    def seekable(self) -> bool:
        return bool(self.media_info.get("duration_ms", 0) > 0)

    def close(self) -> None:
        with contextlib.suppress(Exception):  # closing a broken network input may raise
            self.container.close()


def network_spec(url: str, schemes: list[str]) -> SourceSpec:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in schemes:
        raise ValidationFailed(f"URL scheme {scheme!r} is not allowed; use one of {', '.join(schemes)} "
                               "or file_id", code="bad_url", field="url")
    if not parts.hostname:
        raise ValidationFailed("URL has no host", code="bad_url", field="url")
    return SourceSpec(url, True, url, scheme)


def local_spec(raw: str, allowed_dirs: list[Path], field_name: str = "url") -> SourceSpec:
    """A local path from a request, confined to `allowed_dirs` (symlinks resolved first)."""
    path_text = unquote(urlsplit(raw).path) if raw.startswith("file:") else raw
    if "\x00" in path_text or not Path(path_text).is_absolute():
        raise ValidationFailed("a local file must be an absolute path or file:// URL", code="bad_path",
                               field=field_name)
    path = Path(path_text).resolve()
    roots = [Path(d).resolve() for d in allowed_dirs]
    if not any(path.is_relative_to(root) for root in roots):
        raise Forbidden("local files can only be played from the configured directories "
                        "([plugins.play] allowed_dirs) or uploaded with POST /v1/files", code="path_not_allowed",
                        field=field_name)
    ext = path.suffix.lower().lstrip(".")
    if ext not in LOCAL_EXTENSIONS:
        raise UnsupportedMediaType(f"cannot play .{ext or '(none)'} files; supported: "
                                   f"{', '.join(sorted(LOCAL_EXTENSIONS))}", code="unsupported_type", field=field_name)
    if not path.is_file():
        raise NotFound(f"file {path.name!r} does not exist", code="file_not_found", field=field_name)
    return SourceSpec(str(path), False, path.name)


def _attached_picture(stream: Any) -> bool:
    """Cover art in an mp3/m4a shows up as a one-frame video stream: not a picture to play."""
    disposition = getattr(stream, "disposition", None)
    flag = getattr(getattr(av.stream, "Disposition", None), "attached_pic", None)
    return bool(disposition is not None and flag is not None and disposition & flag)


def open_source(spec: SourceSpec, *, audio_only: bool = False, audio: bool = True,
                timeout_s: float = 10.0) -> OpenedSource:
    """Open and probe; raises a MediagateError a user can read (never a bare FFmpeg error)."""
    options = {"protocol_whitelist": _PROTOCOLS[spec.scheme],
               "format_whitelist": _NET_FORMATS if spec.network else _FILE_FORMATS}
    if spec.scheme == "rtsp":
        options["rtsp_transport"] = "tcp"
    try:
        container = av.open(spec.target, "r", options=options, timeout=(timeout_s, timeout_s))
    except FileNotFoundError as exc:
        raise NotFound(f"{spec.shown!r} does not exist", code="file_not_found", field="url") from exc
    except (av.FFmpegError, OSError) as exc:
        if spec.network:
            raise SourceUnreachable(f"cannot open {spec.shown}: {exc.strerror or exc}") from exc
        raise UnsupportedMediaType(f"cannot read {spec.shown}: {getattr(exc, 'strerror', None) or exc}",
                                   code="unreadable_media", field="url") from exc
    try:
        return _probe(spec, container, audio_only, audio)
    except BaseException:
        container.close()
        raise


def _probe(spec: SourceSpec, container: Any, audio_only: bool, use_audio: bool) -> OpenedSource:
    videos = [s for s in container.streams.video if not _attached_picture(s)]
    audios = list(container.streams.audio)
    if not videos and not audios:
        raise UnsupportedMediaType(f"{spec.shown} has no audio or video stream", code="no_media_streams",
                                   field="url")
    unsupported = [s for s in (videos[:1] + audios[:1]) if s.codec_context is None]
    if unsupported:
        stream = unsupported[0]
        tag = getattr(stream, "codec_tag", "") or "unknown"
        raise UnsupportedMediaType(f"{spec.shown}: the {stream.type} codec ({tag}) is not supported: no decoder "
                                   "for it", code="unsupported_codec", field="url")
    video = None if audio_only else (videos[0] if videos else None)
    audio = audios[0] if audios and use_audio else None
    if video is None and audio is None:
        raise UnsupportedMediaType(f"{spec.shown} has no audio stream to play audio-only", code="no_media_streams",
                                   field="audio_only")
    duration_ms = int(container.duration / 1000) if container.duration else 0
    if not duration_ms:
        durations = [float(s.duration * s.time_base) for s in (video, audio) if s is not None and s.duration]
        duration_ms = int(max(durations, default=0) * 1000)
    ctx = video.codec_context if video is not None else None
    info = {"width": ctx.width if ctx else 0, "height": ctx.height if ctx else 0,
            "duration_ms": duration_ms, "duration": duration_ms,  # ms, as 3tee's media/play
            "has_video": bool(videos), "has_audio": bool(audios),
            "video_codec": ctx.name if ctx else None,
            "audio_codec": audio.codec_context.name if audio is not None else None,
            "format": container.format.name, "live": duration_ms == 0}
    return OpenedSource(spec, container, video, audio, info)


def describe_error(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, MediagateError):
        return {"code": exc.code, "message": exc.message}
    return {"code": "play_failed", "message": str(exc)}
