"""File names of recordings (the storage keys), documented in the README:

``[<file_prefix>/]<room_id>/<egress_id>/<room_id>_<egress_id>_<who>_<UTC start>_<index>.<ext>``

- ``who``: ``mix`` for the mixed file (the composite or the one recorded participant), else
  ``<identity>_<track>`` with track ``camera``, ``screen`` or ``audio`` (individual files);
- ``UTC start``: ``YYYYMMDDTHHMMSSmmmZ``, the part's first instant;
- ``index``: ``001``, ``002``, ... one per split part; HLS segments add ``_00001`` ... ``.ts``.
"""

from __future__ import annotations

import re
import time
from pathlib import Path, PurePosixPath

from gateway.errors import ValidationFailed

EXTENSIONS = {"mp4": "mp4", "hls": "m3u8", "m4a": "m4a", "ogg": "ogg", "wav": "wav", "mp3": "mp3"}
_UNSAFE = re.compile(r"[^A-Za-z0-9_\-]+")


def safe_part(value: str, fallback: str = "x") -> str:
    """A name component from user data (identity, room id): only [A-Za-z0-9_-]."""
    cleaned = _UNSAFE.sub("-", value).strip("-")[:64]
    return cleaned or fallback


def utc_stamp(at: float) -> str:
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime(at)) + f"{int(at * 1000) % 1000:03d}Z"


def file_key(*, prefix: str, room_id: str, egress_id: str, who: str, started_at: float, index: int,
             fmt: str) -> str:
    room = safe_part(room_id, "room")
    name = f"{room}_{egress_id}_{who}_{utc_stamp(started_at)}_{index:03d}.{EXTENSIONS[fmt]}"
    key = "/".join(p for p in (prefix.strip("/"), room, egress_id, name) if p)
    check_key(key)
    return key


def check_key(key: str) -> None:
    path = PurePosixPath(key)
    if path.is_absolute() or ".." in path.parts or "\x00" in key:
        raise ValidationFailed("file_prefix must be a relative path inside the storage root",
                               field="record.file_prefix")


def check_inside(root: Path, prefix: str, base: Path | None = None) -> None:
    """The resolved folder ``base/prefix`` (symlinks followed; base defaults to the root) must
    stay inside the storage root."""
    resolved_root = root.resolve()
    if not ((base or root) / prefix).resolve().is_relative_to(resolved_root):
        raise ValidationFailed("file_prefix leads outside the storage root", field="record.file_prefix")
