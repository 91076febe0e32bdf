"""Uploaded files (backgrounds, watermarks, play-in media): type and size checked, stored on
local disk under ``files.dir``, described in the store with their media info."""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from gateway.errors import BadRequest, NotFound, PayloadTooLarge, UnsupportedMediaType

log = structlog.get_logger(__name__)

CONTENT_TYPES = {
    "png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg", "gif": "image/gif", "webp": "image/webp",
    "bmp": "image/bmp", "mp3": "audio/mpeg", "m4a": "audio/mp4", "aac": "audio/aac", "wav": "audio/wav",
    "ogg": "audio/ogg", "opus": "audio/opus", "flac": "audio/flac", "mp4": "video/mp4",
    "avi": "video/x-msvideo", "mov": "video/quicktime", "mkv": "video/x-matroska", "flv": "video/x-flv",
    "webm": "video/webm", "ttf": "font/ttf", "otf": "font/otf",
}
IMAGE_TYPES = {"png", "jpg", "jpeg", "gif", "webp", "bmp"}
# The largest image accepted (width x height), checked from the header before any decoding: an
# image is only ever a background or a watermark of a canvas of at most 4096x4096.
MAX_IMAGE_PIXELS = 8192 * 4096


def sniff(head: bytes) -> set[str]:
    """The extensions whose magic bytes match the start of a file (empty: unknown)."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return {"png"}
    if head.startswith(b"\xff\xd8\xff"):
        return {"jpg", "jpeg"}
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return {"gif"}
    if head.startswith(b"BM"):
        return {"bmp"}
    if head[:4] == b"RIFF":
        return {"webp"} if head[8:12] == b"WEBP" else {"wav"} if head[8:12] == b"WAVE" else {"avi"}
    if head[4:8] == b"ftyp":
        return {"mp4", "m4a", "mov"}
    if head[4:8] in (b"moov", b"mdat", b"wide", b"free"):
        return {"mov", "mp4"}
    if head.startswith(b"ID3") or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return {"mp3", "aac"}
    if head.startswith(b"OggS"):
        return {"ogg", "opus"}
    if head.startswith(b"fLaC"):
        return {"flac"}
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return {"mkv", "webm"}
    if head.startswith(b"FLV"):
        return {"flv"}
    if head[:4] in (b"\x00\x01\x00\x00", b"true"):
        return {"ttf"}
    if head.startswith(b"OTTO"):
        return {"otf"}
    return set()


def probe_media(path: Path, ext: str) -> dict[str, Any]:
    """Width, height, duration and stream presence, the shape 3tee's media/play returns."""
    if ext in IMAGE_TYPES:
        return probe_image(path, ext)
    if ext in ("ttf", "otf"):
        return {}
    import av

    try:
        with av.open(str(path)) as container:
            video = next(iter(container.streams.video), None)
            audio = next(iter(container.streams.audio), None)
            duration = container.duration / 1_000 if container.duration else 0
            return {"width": video.codec_context.width if video else 0,
                    "height": video.codec_context.height if video else 0,
                    "duration_ms": int(duration), "has_video": video is not None, "has_audio": audio is not None,
                    "video_codec": video.codec_context.name if video else None,
                    "audio_codec": audio.codec_context.name if audio else None,
                    "format": container.format.name}
    except av.FFmpegError as exc:
        raise UnsupportedMediaType(f"not a readable {ext} file: {exc}", code="unreadable_media",
                                   field="file") from exc


def _too_large(size: str) -> BadRequest:
    return BadRequest(f"image is {size}: at most {MAX_IMAGE_PIXELS // 1_000_000} megapixels are accepted",
                      code="image_too_large", field="file")


def probe_image(path: Path, ext: str) -> dict[str, Any]:
    """Size and format of an image after decoding it whole (so a truncated or bogus file is refused
    here, not when a compositor first draws it); the pixel count is checked before decoding."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            width, height = image.size
            if width * height > MAX_IMAGE_PIXELS:
                raise _too_large(f"{width}x{height}")
            image.load()
            n_frames = getattr(image, "n_frames", 1)
            return {"width": width, "height": height, "has_video": False, "has_audio": False,
                    "duration_ms": 0, "format": (image.format or ext).lower(),
                    **({"frames": n_frames} if n_frames > 1 else {})}
    except BadRequest:
        raise
    except Image.DecompressionBombError as exc:  # Pillow's own, far larger limit, hit at open
        raise _too_large("too many pixels") from exc
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as exc:
        raise BadRequest(f"not a readable {ext} image: {str(exc)[:200] or type(exc).__name__}",
                         code="unreadable_media", field="file") from exc


class FileService:
    def __init__(self, store: Any, directory: Path, *, max_bytes: int, allowed: list[str],
                 public_url: Callable[[], str]) -> None:
        self.store = store
        self.dir = directory
        self.max_bytes = max_bytes
        self.allowed = {ext.lower().lstrip(".") for ext in allowed}
        self.public_url = public_url
        self.dir.mkdir(parents=True, exist_ok=True)

    def check_type(self, filename: str) -> str:
        ext = Path(filename).suffix.lower().lstrip(".")
        if not ext or ext not in self.allowed:
            raise UnsupportedMediaType(
                f"file type {ext or '(none)'!r} is not accepted; allowed: {', '.join(sorted(self.allowed))}",
                code="unsupported_type", field="file")
        return ext

    async def save_stream(self, filename: str, chunks: Any, owner: str | None = None) -> dict[str, Any]:
        """Store an upload read from an async iterator of byte chunks, enforcing limits as it
        streams: nothing partial is left behind on failure."""
        ext = self.check_type(filename)
        file_id = "FI_" + secrets.token_hex(10)
        final = self.dir / f"{file_id}.{ext}"
        temp = self.dir / f".{file_id}.part"
        digest = hashlib.sha256()
        size = 0
        head = b""
        try:
            with open(temp, "wb") as out:
                async for chunk in chunks:
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise PayloadTooLarge(f"file is larger than {self.max_bytes // (1024 * 1024)} MB",
                                              code="file_too_large", field="file")
                    if len(head) < 64:
                        head += chunk[: 64 - len(head)]
                    digest.update(chunk)
                    out.write(chunk)
            if size == 0:
                raise UnsupportedMediaType("file is empty", code="empty_file", field="file")
            kinds = sniff(head)
            if ext not in kinds and not (ext in ("ttf", "otf") and kinds & {"ttf", "otf"}):
                raise UnsupportedMediaType(f"content does not look like a .{ext} file", code="type_mismatch",
                                           field="file")
            media_info = await asyncio.to_thread(probe_media, temp, ext)
            row = {"file_id": file_id, "name": Path(filename).name[:512], "ext": ext,
                   "content_type": CONTENT_TYPES.get(ext, "application/octet-stream"), "size": size,
                   "sha256": digest.hexdigest(), "storage_key": final.name, "media_info": media_info,
                   "owner": owner, "created_at": time.time()}
            os.replace(temp, final)
            try:  # the row and the file exist together or not at all
                await self.store.add_file(row)
            except BaseException:
                final.unlink(missing_ok=True)
                raise
        finally:
            if temp.exists():
                temp.unlink()
        log.info("file stored", file_id=file_id, size=size, ext=ext)
        return self.describe(row)

    def describe(self, row: dict[str, Any]) -> dict[str, Any]:
        return {"file_id": row["file_id"], "name": row["name"], "size": row["size"],
                "content_type": row["content_type"], "sha256": row["sha256"], "created_at": row["created_at"],
                "url": f"{self.public_url()}/v1/files/{row['file_id']}/content",
                "media_info": row.get("media_info") or {}}

    async def get(self, file_id: str) -> dict[str, Any]:
        row = await self.store.get_file(file_id)
        if row is None:
            raise NotFound(f"file {file_id!r} does not exist", code="file_not_found", field="file_id")
        return row

    def path(self, row: dict[str, Any]) -> Path:
        return self.dir / row["storage_key"]

    async def local_path(self, file_id: str) -> Path:
        return self.path(await self.get(file_id))

    async def delete(self, file_id: str) -> None:
        row = await self.get(file_id)
        await self.store.delete_file(file_id)
        path = self.path(row)
        if path.exists():
            path.unlink()
