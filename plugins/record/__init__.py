"""Egress kind ``record``: records the room's composite (or one participant) to fragmented
MP4 and hands the finished file to a storage backend.

This first version writes ``mp4``; other formats, splitting and remote backends arrive with
the recording issue and are refused with a clear error until then.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from gateway import events as ev
from gateway.egress import EgressRequest, EgressUpdate, ParticipantSource, RecordOptions
from gateway.errors import Unprocessable, ValidationFailed
from gateway.hookspecs import hookimpl
from gateway.media.engine import ROOM_COMPOSITE
from gateway.media.layout.model import AudioSelection, Layout, Region, SourceRef
from gateway.media.mp4 import RecordingSink

if TYPE_CHECKING:
    from gateway.media.composition import EncodedOutput
    from gateway.media.engine import RoomMedia
    from gateway.node import Node
    from gateway.rooms.room import Room
    from gateway.spool import SpoolEntry
    from gateway.tasks import Task

log = structlog.get_logger(__name__)
SUPPORTED_FORMATS = {"mp4"}
STOP_UPLOAD_WAIT_S = 5.0


def single_participant_layout(base: Layout, participant_id: str) -> Layout:
    """One participant filling the canvas, hearing only them: a single-stream recording."""
    region = Region(source=SourceRef(participant=participant_id), x=0, y=0, w=1, h=1, units="fraction")
    return base.model_copy(update={"template": "custom", "regions": [region], "screen_template": None,
                                   "audio": AudioSelection(participants=[participant_id])})


class RecordRunner:
    def __init__(self, node: Node, task: Task, media: RoomMedia, key: str, output: EncodedOutput,
                 sink: RecordingSink, path: Path, options: RecordOptions) -> None:
        self.node = node
        self.task = task
        self.media = media
        self.key = key
        self.output = output
        self.sink = sink
        self.path = path
        self.options = options
        self.started_at = time.time()
        self.entry: SpoolEntry

    async def update(self, patch: EgressUpdate) -> None:
        if patch.urls is not None:
            raise ValidationFailed("a recording has no URLs", field="urls")
        if patch.layout is None and patch.audio is None:
            return
        if self.key == ROOM_COMPOSITE:
            # other outputs share the room's composite: changing it here would change theirs
            raise Unprocessable("this recording follows the room layout: change it with PUT /v1/rooms/{id}/layout, "
                                "or start the recording with its own layout", code="follows_room_layout",
                                field="layout" if patch.layout is not None else "audio")
        handle = self.media.composites[self.key]
        layout = patch.layout or handle.layout
        if patch.audio is not None:
            layout = layout.model_copy(update={"audio": patch.audio})
        self.media.set_composite_layout(self.key, layout)

    async def stop(self) -> dict[str, Any]:
        stats = await asyncio.to_thread(self.sink.stop)
        await asyncio.to_thread(self.media.detach, self.key, self.output)
        if stats.bytes == 0:  # stopped before the first keyframe: nothing to keep
            log.warning("recording stopped before any media arrived", egress_id=self.task.task_id)
            self.node.spool.discard(self.entry)
            return {"files": []}
        info = {"filename": self.path.name, "format": "mp4", "size": stats.bytes, "duration_s": stats.duration_s,
                "started_at": self.started_at, "ended_at": time.time()}
        await self.node.spool.commit(self.entry, meta=dict(info))
        # the file list carries the storage URL when the upload is quick; otherwise it follows
        # in the upload.done event (the spool keeps retrying)
        stored = await self.node.spool.uploaded(self.entry, timeout=STOP_UPLOAD_WAIT_S)
        info.update(stored or {"key": self.entry.key,
                               "upload": "failed" if self.entry.state == "failed" else "pending"})
        self.node.events.emit(ev.EGRESS_FILE, self.task.room_id, egress_id=self.task.task_id, file=info)
        return {"files": [info]}


class RecordKind:
    name = "record"
    formats = tuple(sorted(SUPPORTED_FORMATS))  # shown as the record.formats enum of the served schema

    def validate(self, request: EgressRequest, node: Node) -> None:
        options = request.record or RecordOptions()
        unsupported = [f for f in options.formats if f not in SUPPORTED_FORMATS]
        if unsupported:
            raise ValidationFailed(f"format(s) {', '.join(unsupported)} are not supported yet; use mp4",
                                   field="record.formats")
        if options.audio_only:
            raise ValidationFailed("audio-only recording is not supported yet (formats m4a/mp3 come with it)",
                                   field="record.audio_only")
        if options.split_seconds or options.split_bytes:
            raise ValidationFailed("splitting is not supported yet", field="record.split_seconds")
        node.storage.get(options.storage.backend).validate(options.storage.model_dump())
        if request.urls:
            raise ValidationFailed("a recording takes no urls", field="urls")

    async def start(self, task: Task, request: EgressRequest, room: Room, node: Node) -> RecordRunner:
        options = request.record or RecordOptions()
        media = node.media.room_media(room)
        layout = request.layout
        key = ROOM_COMPOSITE if layout is None else f"egress:{task.task_id}"
        if isinstance(request.source, ParticipantSource):
            participant = node.rooms.participant(room, request.source.participant)
            layout = single_participant_layout(layout or node.media.room_layout(room), participant.participant_id)
            key = f"egress:{task.task_id}"
        if request.audio is not None:
            layout = (layout or node.media.room_layout(room)).model_copy(update={"audio": request.audio})
            key = f"egress:{task.task_id}"
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        prefix = options.file_prefix or room.room_id
        filename = f"{prefix}_{task.task_id}_{stamp}.mp4"
        # written to the upload spool, stored from there (with retries, and after a crash)
        entry = node.spool.reserve(room_id=room.room_id, egress_id=task.task_id, filename=filename,
                                   storage=options.storage.model_dump(),
                                   meta={"format": "mp4", "key": f"{room.room_id}/{filename}"})
        path = entry.path
        # opening x264 takes tens of milliseconds: keep it off the event loop
        _handle, output = await asyncio.to_thread(media.attach, key, layout, request.encoding)
        if options.video_only:
            output = output.__class__(output.encoding, output.video_track, None)
        sink = RecordingSink(path, output)
        sink.start()
        task.result.update(files=[], path=str(path))
        log.info("recording started", egress_id=task.task_id, path=str(path))
        runner = RecordRunner(node, task, media, key, output, sink, path, options)
        runner.entry = entry
        return runner


class RecordPlugin:
    @hookimpl
    def mediagate_egress_kinds(self, node: Node) -> list[RecordKind]:
        return [RecordKind()]
