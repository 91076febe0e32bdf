"""Ingress kind ``test``: a participant publishing a solid colour (or colour bars) and sine
tones. Users check their outputs with it; the tests verify media by its content."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from gateway.hookspecs import hookimpl
from gateway.ingress import IngressControl, IngressRequest, TestPattern
from gateway.rooms.participant import ParticipantKind
from plugins.test_source.generator import PatternGenerator

if TYPE_CHECKING:
    from gateway.node import Node
    from gateway.rooms.room import Room
    from gateway.tasks import Task


class TestSourceRunner:
    def __init__(self, node: Node, task: Task, room: Room, participant_id: str, generator: PatternGenerator) -> None:
        self.node = node
        self.task = task
        self.room = room
        self.participant_id = participant_id
        self.generator = generator

    async def control(self, command: IngressControl) -> dict[str, Any]:
        if command.action == "pause":
            self.generator.paused = True
        elif command.action == "resume":
            self.generator.paused = False
        else:
            from gateway.errors import Unprocessable

            raise Unprocessable(f"a test source cannot {command.action}", code="unsupported_action",
                                field="action")
        return {"paused": self.generator.paused}

    async def stop(self) -> dict[str, Any]:
        await asyncio.to_thread(self.generator.stop)
        await self.node.rooms.leave(self.room.room_id, self.participant_id, "ingress_stopped")
        return {"frames": self.generator.video_frames, "audio_blocks": self.generator.audio_blocks}

    async def close(self, reason: str) -> None:
        """As the participant's edge: a kick or a room close stops the generator and the task."""
        await asyncio.to_thread(self.generator.stop)
        await self.node.ingress.ended(self.task, "complete", reason=reason,
                                      frames=self.generator.video_frames, audio_blocks=self.generator.audio_blocks)


class TestSourceKind:
    name = "test"

    def validate(self, request: IngressRequest, node: Node) -> None:
        pass

    async def start(self, task: Task, request: IngressRequest, room: Room, node: Node) -> TestSourceRunner:
        pattern = request.pattern or TestPattern()
        participant = await node.rooms.join(room.room_id, request.identity, kind=ParticipantKind.TEST,
                                            name=request.name or request.identity, operator=True)
        media = node.media.room_media(room)
        generator = PatternGenerator(media.bus, participant.participant_id, pattern,
                                     video=request.video and not request.audio_only, audio=request.audio,
                                     font_path=media.service.font_path if pattern.label else "")
        runner = TestSourceRunner(node, task, room, participant.participant_id, generator)
        participant.edge = runner
        generator.start()
        task.result.update(participant_id=participant.participant_id, state="publishing",
                           media_info={"width": pattern.width, "height": pattern.height,
                                       "has_video": generator.video_track is not None,
                                       "has_audio": generator.audio_track is not None, "duration": -1})
        return runner


class TestSourcePlugin:
    @hookimpl
    def mediagate_ingress_kinds(self, node: Node) -> list[TestSourceKind]:
        return [TestSourceKind()]
