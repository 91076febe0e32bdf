"""Ingress: media coming into a room from outside — WHIP, RTMP, a URL or file, a test
pattern — as tasks. Each running ingress is one participant of the room."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, Protocol

import structlog
from pydantic import BaseModel, ConfigDict, Field, field_validator

from gateway import events as ev
from gateway.api.schemas import IDENTITY_PATTERN
from gateway.media.layout.model import parse_color
from gateway.tasks import Task, TaskService

if TYPE_CHECKING:
    from gateway.node import Node
    from gateway.rooms.room import Room

log = structlog.get_logger(__name__)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TestPattern(Strict):
    color: str = Field("0000FF", description="RRGGBB solid colour (ignored with bars)")
    bars: bool = Field(False, description="SMPTE-style colour bars instead of a solid colour")
    tone_hz: float | list[float] | None = Field(440.0, description="sine tone(s); null = no audio")
    volume: float = Field(0.25, ge=0, le=1)
    width: int = Field(640, ge=16, le=3840, multiple_of=2, description="even (yuv420p)")
    height: int = Field(360, ge=16, le=2160, multiple_of=2, description="even (yuv420p)")
    fps: int = Field(30, ge=1, le=60)
    label: str | None = Field(None, max_length=64, description="text drawn on the picture")

    @field_validator("color")
    @classmethod
    def _color(cls, value: str) -> str:
        parse_color(value)
        return value.lstrip("#").upper()

    @field_validator("tone_hz")
    @classmethod
    def _tones(cls, value: float | list[float] | None) -> float | list[float] | None:
        tones = value if isinstance(value, list) else [value] if value is not None else []
        for tone in tones:
            if not 20 <= tone <= 20000:
                raise ValueError(f"tone {tone} Hz is outside 20-20000 Hz")
        return value


class IngressRequest(Strict):
    kind: str = Field(description="whip, rtmp, url, test, or a plugin's kind")
    identity: str = Field(min_length=1, max_length=128, pattern=IDENTITY_PATTERN)
    name: str | None = Field(None, max_length=128)
    url: str | None = Field(None, max_length=2048)
    file_id: str | None = Field(None, max_length=64, description="an uploaded file to play (kind url)")
    replay_times: int = Field(0, ge=-1, le=1_000_000, description="0 once, -1 forever, n more times")
    start_s: float = Field(0, ge=0, le=1e9)
    audio_only: bool = False
    video: bool = True
    audio: bool = True
    pattern: TestPattern | None = None


class IngressControl(Strict):
    action: Literal["pause", "resume", "seek", "switch"]
    position_s: float | None = Field(None, ge=0)
    url: str | None = None
    file_id: str | None = Field(None, max_length=64, description="switch to an uploaded file")


class IngressRunner(Protocol):
    participant_id: str

    async def control(self, command: IngressControl) -> dict[str, Any]:
        """pause / resume / seek / switch (kinds that play files or URLs)."""

    async def stop(self) -> dict[str, Any]:
        """Stop, leave the room, return the final report."""


class IngressKind(Protocol):
    name: str

    def validate(self, request: IngressRequest, node: Node) -> None:
        """Raise ValidationFailed naming the field when the request cannot work for this kind."""

    async def start(self, task: Task, request: IngressRequest, room: Room, node: Node) -> IngressRunner:
        """Join the room as a participant and start publishing; fill ``task.result``."""


class IngressService(TaskService):
    """Ingress tasks: starting -> publishing -> complete (stopped, ended, kicked) or failed."""

    noun = "ingress"
    id_prefix = "IN_"
    kinds_hook = "mediagate_ingress_kinds"
    running_status = "publishing"

    def __init__(self, node: Node) -> None:
        super().__init__(node, {"started": ev.INGRESS_STARTED, "status": ev.INGRESS_STATUS,
                                "ended": ev.INGRESS_ENDED})

    async def create(self, room_id: str, request: IngressRequest) -> Task:
        return await self.launch(await self.node.rooms.get(room_id), request)

    def started_data(self, task: Task) -> dict[str, Any]:
        task.result.setdefault("participant_id", task.runner.participant_id)
        return {"participant_id": task.runner.participant_id}

    async def control(self, ingress_id: str, command: IngressControl) -> dict[str, Any]:
        return await self.active(ingress_id).runner.control(command)
