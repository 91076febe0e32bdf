"""Ingress: media coming into a room from outside — WHIP, RTMP, a URL or file, a test
pattern — as tasks. Each running ingress is one participant of the room."""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any, Literal, Protocol

import structlog
from pydantic import BaseModel, ConfigDict, Field, field_validator

from gateway import events as ev
from gateway.errors import MediagateError, NotFound, Unprocessable, ValidationFailed
from gateway.media.layout.model import parse_color
from gateway.tasks import Task, TaskBook

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
    width: int = Field(640, ge=16, le=3840)
    height: int = Field(360, ge=16, le=2160)
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
    identity: str = Field(min_length=1, max_length=128, pattern=r"^[^\s\[\]@]+$")
    name: str | None = Field(None, max_length=128)
    url: str | None = Field(None, max_length=2048)
    replay_times: int = Field(0, ge=-1, description="0 once, -1 forever, n more times")
    start_s: float = Field(0, ge=0)
    audio_only: bool = False
    video: bool = True
    audio: bool = True
    pattern: TestPattern | None = None


class IngressControl(Strict):
    action: Literal["pause", "resume", "seek", "switch"]
    position_s: float | None = Field(None, ge=0)
    url: str | None = None


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


class IngressService:
    def __init__(self, node: Node) -> None:
        self.node = node
        self.kinds: dict[str, IngressKind] = {}
        self.book = TaskBook(node, "ingress", {"started": ev.INGRESS_STARTED, "status": ev.INGRESS_STATUS,
                                               "ended": ev.INGRESS_ENDED})
        node.rooms.on_close(self._room_closed)

    def collect_kinds(self) -> None:
        for provided in self.node.pm.hook.mediagate_ingress_kinds(node=self.node):
            for kind in provided or []:
                if kind.name in self.kinds:
                    raise MediagateError(f"two plugins provide ingress kind {kind.name!r}")
                self.kinds[kind.name] = kind

    def kind(self, name: str) -> IngressKind:
        kind = self.kinds.get(name)
        if kind is None:
            raise ValidationFailed(f"unknown ingress kind {name!r}; available: {', '.join(sorted(self.kinds))}",
                                   field="kind")
        return kind

    async def create(self, room_id: str, request: IngressRequest) -> Task:
        room = await self.node.rooms.get(room_id)
        kind = self.kind(request.kind)
        kind.validate(request, self.node)
        task = Task("IN_" + secrets.token_hex(8), "ingress", room_id, request.model_dump(mode="json"))
        await self.book.add(task)
        try:
            task.runner = await kind.start(task, request, room, self.node)
        except MediagateError as exc:
            await self.book.set_status(task, "failed", error=exc.to_dict()["error"], ended=True)
            raise
        except Exception as exc:
            log.exception("ingress failed to start", ingress_id=task.task_id)
            await self.book.set_status(task, "failed", error={"code": "start_failed", "message": str(exc)},
                                       ended=True)
            raise Unprocessable(f"ingress failed to start: {exc}", code="ingress_start_failed") from exc
        task.result.setdefault("participant_id", task.runner.participant_id)
        await self.book.set_status(task, "publishing")
        self.node.events.emit(ev.INGRESS_STARTED, room_id, ingress_id=task.task_id, kind=request.kind,
                              participant_id=task.runner.participant_id)
        return task

    def get(self, ingress_id: str) -> Task:
        task = self.book.tasks.get(ingress_id)
        if task is None:
            raise NotFound(f"ingress {ingress_id!r} does not exist", code="ingress_not_found", field="ingress_id")
        return task

    def list(self, room_id: str | None = None) -> list[Task]:
        return [t for t in self.book.tasks.values() if room_id is None or t.room_id == room_id]

    async def control(self, ingress_id: str, command: IngressControl) -> dict[str, Any]:
        task = self.get(ingress_id)
        if not task.active:
            raise Unprocessable(f"ingress {ingress_id!r} has ended", code="ingress_ended")
        return await task.runner.control(command)

    async def stop(self, ingress_id: str, reason: str = "api") -> Task:
        task = self.get(ingress_id)
        if not task.active:
            return task
        try:
            task.result.update(await task.runner.stop())
            await self.book.set_status(task, "complete", ended=True, reason=reason)
        except Exception as exc:
            log.exception("ingress failed while stopping", ingress_id=ingress_id)
            await self.book.set_status(task, "failed", error={"code": "stop_failed", "message": str(exc)},
                                       ended=True)
        return task

    async def ended(self, task: Task, status: str = "complete", **data: Any) -> None:
        """For runners: the source ended by itself (end of file, publisher left)."""
        if task.active:
            await self.book.set_status(task, status, ended=True, **data)

    async def _room_closed(self, room: Room, reason: str) -> None:
        for task in self.list(room.room_id):
            if task.active:
                await self.stop(task.task_id, "room_closed")

    async def shutdown(self) -> None:
        for task in list(self.book.tasks.values()):
            if task.active:
                await self.stop(task.task_id, "node_shutdown")

    def status_counts(self) -> dict[str, int]:
        return self.book.status_counts()
