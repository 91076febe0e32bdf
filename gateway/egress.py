"""Egress: the room's media going out — CDN pushes and recordings — as tasks.

Kinds come from plugins (``mediagate_egress_kinds``): ``record`` (built-in), ``rtmp`` (the
RTMP edge), or a third party's. The service owns the task lifecycle (LiveKit's
EgressStatus): starting -> active -> ending -> complete, or failed / aborted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal, Protocol

import structlog
from pydantic import BaseModel, ConfigDict, Field, field_validator

from gateway import events as ev
from gateway.media.encoder import Encoding
from gateway.media.layout.model import AudioSelection, Layout
from gateway.tasks import Task, TaskService

if TYPE_CHECKING:
    from gateway.node import Node
    from gateway.rooms.room import Room

log = structlog.get_logger(__name__)
URL_PATTERN = r"^(rtmp|rtmps|srt|http|https)://"  # the schemes _urls accepts, said in the schema


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


class RecordOptions(Strict):
    formats: list[Literal["mp4", "hls", "m4a", "ogg", "wav", "mp3"]] = Field(default_factory=lambda: ["mp4"],
                                                                             min_length=1)
    split_seconds: int = Field(0, ge=0, le=2**31, description="start a new file every N seconds; 0 = never")
    split_bytes: int = Field(0, ge=0, le=2**62, description="start a new file past N bytes; 0 = never")
    audio_only: bool = False
    video_only: bool = False
    file_prefix: str = Field("", max_length=128, pattern=r"^[A-Za-z0-9_\-./]*$")
    storage: StorageOptions = Field(default_factory=StorageOptions)


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
            request.encoding = self.default_encoding()
        return await self.launch(room, request)

    def default_encoding(self) -> Encoding:
        """The encoding an egress gets when it names none: the node's media defaults."""
        media = self.node.config.media
        return Encoding(width=media.canvas_width, height=media.canvas_height, fps=media.fps,
                        video_kbps=media.video_kbps, gop_s=media.gop_s, preset=media.x264_preset,
                        audio_kbps=media.audio_kbps)

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
        return "aborted" if reason == "room_closed" else "complete"
