"""Egress: the room's media going out — CDN pushes and recordings — as tasks.

Kinds come from plugins (``mediagate_egress_kinds``): ``record`` (built-in), ``rtmp`` (the
RTMP edge), or a third party's. The service owns the task lifecycle (LiveKit's
EgressStatus): starting -> active -> ending -> complete, or failed / aborted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal, Protocol

import structlog
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gateway import events as ev
from gateway.media.encoder import Encoding
from gateway.media.layout.model import AudioSelection, Canvas, Layout
from gateway.tasks import Task, TaskService

if TYPE_CHECKING:
    from gateway.node import Node
    from gateway.rooms.room import Room

log = structlog.get_logger(__name__)
URL_PATTERN = r"^(rtmp|rtmps|srt|http|https)://"  # the schemes _urls accepts, said in the schema


# why a task ended -> TRTC's 302 RECORDER_STOP LeaveCode (-1: none fits)
LEAVE_CODES = {"api": 0, "room_closed": 2, "node_shutdown": 4, "node_restart": 4, "idle_timeout": 99,
               "failed": 3, "disk_full": 3, "publisher_left": 99, "room_timeout": 100}


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StorageOptions(Strict):
    backend: str = Field("local", description="local, s3, cos, qiniu, or a plugin's backend")
    bucket: str | None = None
    endpoint: str | None = None
    region: str | None = None
    access_key: str | None = None
    secret_key: str | None = Field(None, repr=False)
    prefix: str = Field("", max_length=256)


RecordFormat = Literal["mp4", "hls", "m4a", "ogg", "wav", "mp3"]
VIDEO_FORMATS = ("mp4", "hls")
AUDIO_FORMATS = ("m4a", "ogg", "wav", "mp3")


def safe_relative_path(value: str, what: str) -> str:
    """A path built from a request field must stay inside its root: no NUL or control
    characters, no backslash, not absolute, no ``..`` part. (The recorder also checks the
    resolved path.) The message never echoes a server path."""
    if any(ord(c) < 32 or c == "\x7f" for c in value):
        raise ValueError(f"{what} must not contain NUL or control characters")
    if value.startswith(("/", "\\")) or "\\" in value or ":" in value:
        raise ValueError(f"{what} must be a relative path (no leading '/', no '\\' or ':')")
    if any(part in ("..", ".") for part in value.split("/")):
        raise ValueError(f"{what} must not contain '..' or '.' path parts")
    return value.strip("/")


class RecordOptions(Strict):
    mode: Literal["mixed", "individual", "both"] = Field(
        "mixed", description="mixed: one file set of the source (the composite, or the one participant); "
        "individual: one file set per participant and track, started and stopped as they publish and leave "
        "(TRTC single-stream, 3tee enable_individual_record); both: individual files and the mixed file")
    formats: list[RecordFormat] = Field(default_factory=lambda: ["mp4"], min_length=1, max_length=6)
    split_seconds: int = Field(0, ge=0, le=86400, description="start a new file every N seconds (the seeds' "
                               "1-1440 minutes x 60); 0 = never. MP4/M4A always split at 24 h")
    split_bytes: int = Field(0, ge=0, le=2**62, description="start a new file once a part reaches N bytes (the seed's "
                             "SplitFileSize is in KB: x 1024); 0 = never. MP4/M4A always split at 2 GB")
    hls_segment_s: float = Field(4.0, ge=1, le=60, description="target HLS segment length (cut at keyframes)")
    audio_only: bool = False
    video_only: bool = False
    max_idle_s: int | None = Field(None, ge=1, le=86400, description="stop after this long with no publisher in "
                                   "the room (MaxIdleTime); default [plugins.record] max_idle_s (30)")
    file_prefix: str = Field("", max_length=128, pattern=r"^[A-Za-z0-9_\-./]*$",
                             description="relative folder (and name start) for the files, e.g. 'acme/2026'")
    storage: StorageOptions = Field(default_factory=StorageOptions)

    @field_validator("file_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        return safe_relative_path(value, "file_prefix")

    @field_validator("formats")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(value))

    @model_validator(mode="after")
    def _consistent(self) -> RecordOptions:
        if self.audio_only and self.video_only:
            raise ValueError("audio_only and video_only exclude each other")
        if self.video_only and not any(f in VIDEO_FORMATS for f in self.formats):
            raise ValueError("video_only needs a video format (mp4, hls)")
        if self.audio_only and "hls" in self.formats:
            raise ValueError("hls needs video; record audio-only to m4a, ogg, wav, mp3 or mp4")
        return self


class ParticipantSource(Strict):
    participant: str


class EgressRequest(Strict):
    kind: str = Field(description="rtmp, record, or a plugin's kind")
    source: Literal["composite"] | ParticipantSource = "composite"
    urls: list[Annotated[str, Field(pattern=URL_PATTERN)]] = Field(default_factory=list, max_length=5)
    record: RecordOptions | None = None
    encoding: Encoding = Field(default_factory=Encoding)
    layout: Layout | None = Field(None, description="this task's own layout; default is the room's")
    audio: AudioSelection | None = None
    audio_only: bool = Field(False, description="push audio only (kind rtmp; recordings use record.audio_only)")
    callback_url: str | None = Field(None, pattern=r"^https?://")

    @field_validator("urls")
    @classmethod
    def _urls(cls, urls: list[str]) -> list[str]:
        for url in urls:
            if not url.startswith(("rtmp://", "rtmps://", "srt://", "http://", "https://")):
                raise ValueError(f"unsupported URL scheme in {url!r}")
        return urls


class EgressUpdate(Strict):
    layout: Layout | None = None
    urls: list[Annotated[str, Field(pattern=URL_PATTERN)]] | None = Field(None, max_length=5)
    audio: AudioSelection | None = None


class EgressRunner(Protocol):
    async def update(self, patch: EgressUpdate) -> None:
        """Apply a live change (layout, urls, audio selection)."""

    async def stop(self) -> dict[str, Any]:
        """Stop and return the final report (files, durations); raise on failure."""


class EgressKind(Protocol):
    name: str

    def validate(self, request: EgressRequest, node: Node) -> None:
        """Raise ValidationFailed (naming the field) when the request cannot work for this kind."""

    async def start(self, task: Task, request: EgressRequest, room: Room, node: Node) -> EgressRunner:
        """Start producing; return the runner. Report progress with ``node.egress.set_status``."""


class EgressService(TaskService):
    """Egress tasks (LiveKit's EgressStatus): starting -> active -> ending -> complete, or
    failed, or aborted when the room closes under them."""

    noun = "egress"
    id_prefix = "EG_"
    kinds_hook = "mediagate_egress_kinds"
    running_status = "active"
    ending_status = "ending"
    restart_status = "aborted"

    def __init__(self, node: Node) -> None:
        super().__init__(node, {"started": ev.EGRESS_STARTED, "status": ev.EGRESS_STATUS, "ended": ev.EGRESS_ENDED})

    async def create(self, room_id: str, request: EgressRequest) -> Task:
        room = await self.node.rooms.get(room_id)
        self.kind(request.kind)
        if isinstance(request.source, ParticipantSource):
            self.node.rooms.participant(room, request.source.participant)
        if request.layout is not None:
            self.node.media.validate_layout(room, request.layout)
        if "encoding" not in request.model_fields_set:
            request.encoding = self.default_encoding((request.layout or self.node.media.room_layout(room)).canvas)
        return await self.launch(room, request)

    def default_encoding(self, canvas: Canvas | None = None) -> Encoding:
        """The encoding an egress gets when it names none: the canvas's size and frame rate
        (the task's own layout, else the room's), so the picture is never scaled; the node's
        media defaults for the rest."""
        media = self.node.config.media
        width, height, fps = (canvas.width, canvas.height, canvas.fps) if canvas is not None else (
            media.canvas_width, media.canvas_height, media.fps)
        return Encoding(width=width, height=height, fps=fps, video_kbps=media.video_kbps, gop_s=media.gop_s,
                        preset=media.x264_preset, audio_kbps=media.audio_kbps)

    def ended_data(self, task: Task, reason: str) -> dict[str, Any]:
        """The egress.ended event names the vendor's leave code (TRTC 302 LeaveCode) and the files."""
        return {"leave_code": LEAVE_CODES.get(reason, -1), "files": task.result.get("files", [])}

    async def update(self, egress_id: str, patch: EgressUpdate) -> Task:
        task = self.active(egress_id)
        if patch.layout is not None:
            self.node.media.validate_layout(await self.node.rooms.get(task.room_id), patch.layout)
        await task.runner.update(patch)
        changes = patch.model_dump(exclude_none=True, mode="json")
        task.spec.update(changes)
        self.node.events.emit(ev.EGRESS_STATUS, task.room_id, egress_id=task.task_id, status=task.status,
                              updated=sorted(changes))
        return task

    def final_status(self, reason: str) -> str:
        if reason == "disk_full":
            return "failed"  # a recording the node could not go on writing
        return "aborted" if reason == "room_closed" else "complete"
