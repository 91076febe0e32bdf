"""Egress kind ``record``: records the room's composite, one participant, or every
participant on their own (``record.mode``) to MP4, HLS, M4A, Ogg/Opus, WAV and MP3, split by
time or size, and hands every finished file to the upload spool. Recorded files are kept in
the store and listed by ``GET /v1/recordings``.

Modules: :mod:`.runner` (a task's file sets), :mod:`.fileset` (one recorder thread: parts and
formats), :mod:`.sources` (packets in), :mod:`.naming` (file names), :mod:`.spool` (hand-over),
:mod:`.recordings` (store rows and routes).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args

import structlog
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from gateway import events as ev
from gateway.egress import EgressRequest, ParticipantSource, RecordFormat, RecordOptions
from gateway.errors import ValidationFailed
from gateway.hookspecs import hookimpl
from plugins.record import recordings
from plugins.record.naming import check_inside
from plugins.record.runner import RecordRunner, single_participant_layout

if TYPE_CHECKING:
    from gateway.events import Event
    from gateway.node import Node
    from gateway.rooms.room import Room
    from gateway.tasks import Task

__all__ = ["RecordConfig", "RecordKind", "RecordPlugin", "single_participant_layout"]
log = structlog.get_logger(__name__)


class RecordConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_idle_s: int = Field(30, ge=1, le=86400, description="a recording stops after this long with no "
                            "publisher in the room (the seeds' MaxIdleTime); a request's record.max_idle_s wins")
    upload_wait_s: float = Field(10, ge=0, le=600, description="how long a stop waits for uploads so that its "
                                 "report carries the storage URLs (uploads go on afterwards in any case)")


class RecordKind:
    name = "record"
    formats = get_args(RecordFormat)  # shown as the record.formats enum of the served schema

    def __init__(self, plugin: RecordPlugin) -> None:
        self.plugin = plugin

    def validate(self, request: EgressRequest, node: Node) -> None:
        options = request.record or RecordOptions()
        storage = node.storage.get(options.storage.backend)
        storage.validate(options.storage.model_dump())
        if request.urls:
            raise ValidationFailed("a recording takes no urls", field="urls")
        if options.mode != "mixed" and isinstance(request.source, ParticipantSource):
            raise ValidationFailed("individual recording records every participant: leave source as "
                                   "'composite'", field="record.mode")
        storage_options = options.storage.model_dump()
        local = storage.local_dir(storage_options)
        root = getattr(storage, "root", None)  # a backend on this node's disk (local), written via the spool
        if local is None and root is not None:
            local = Path(root) / (storage_options.get("prefix") or "")
        if local is not None and options.file_prefix:
            check_inside(Path(root) if root is not None else local, options.file_prefix, base=local)

    async def start(self, task: Task, request: EgressRequest, room: Room, node: Node) -> RecordRunner:
        if request.record is None:
            request.record = RecordOptions()
        check_capacity = getattr(getattr(node, "spool", None), "check_capacity", None)
        if check_capacity is not None:  # disk nearly full: refused with 507, running ones go on
            check_capacity(room.room_id, task.task_id)
        config = self.plugin.config
        runner = RecordRunner(node, task, room, request,
                              max_idle_s=request.record.max_idle_s or config.max_idle_s,
                              upload_wait_s=config.upload_wait_s)
        task.result.update(files=[], mode=request.record.mode)
        self.plugin.runners[task.task_id] = runner
        try:
            await runner.start()
        except Exception:
            await runner.stop()
            self.plugin.runners.pop(task.task_id, None)
            raise
        log.info("recording started", egress_id=task.task_id, mode=request.record.mode,
                 formats=request.record.formats)
        return runner


class RecordPlugin:
    config_model = RecordConfig
    config: RecordConfig

    def __init__(self) -> None:
        self.config = RecordConfig()
        self.runners: dict[str, RecordRunner] = {}
        self.node: Node | None = None

    @hookimpl
    def mediagate_configure(self, node: Node) -> None:
        self.node = node

    @hookimpl
    def mediagate_egress_kinds(self, node: Node) -> list[RecordKind]:
        return [RecordKind(self)]

    @hookimpl
    def mediagate_http_routes(self, app: web.Application, node: Node) -> None:
        recordings.add_routes(app, node)

    @hookimpl
    def mediagate_event(self, event: Event, node: Node) -> None:
        if event.event in (ev.UPLOAD_DONE, ev.UPLOAD_FAILED):
            asyncio.get_running_loop().create_task(self._upload_event(event, node))
        elif event.event == ev.EGRESS_ENDED:
            self.runners.pop(str(event.data.get("egress_id")), None)

    async def _upload_event(self, event: Event, node: Node) -> None:
        """Keep the file records true: URL and upload state, also for files a crash left
        behind and the spool recovered after a restart (listed by the API and in the file
        list of the task they belong to, which the restart ended)."""
        data, failed = event.data, event.event == ev.UPLOAD_FAILED
        egress_id = str(data.get("egress_id", ""))
        runner = self.runners.get(egress_id)
        try:
            if runner is not None:
                runner.upload_event(data, failed)
            info = None
            if not await recordings.update_upload(node, data, failed) and data.get("recovered"):
                info = recordings.recovered_file(data, failed)
                await recordings.insert(node, {**info, "egress_id": egress_id,
                                               "room_id": event.room_id or str(data.get("room_id", ""))})
            if runner is None:
                await self._update_ended_task(node, egress_id, data, failed, info)
        except Exception:
            log.exception("recording upload state not saved", egress_id=egress_id)

    @staticmethod
    async def _update_ended_task(node: Node, egress_id: str, data: dict[str, Any], failed: bool,
                                 new: dict[str, Any] | None) -> None:
        """A task of a past process (ended by the restart): its stored file list follows the
        uploads the spool finishes for it."""
        task = node.egress.book.tasks.get(egress_id)
        if task is None or task.active or task.kind != "egress":
            return
        files: list[dict[str, Any]] = list(task.result.get("files") or [])
        known = next((f for f in files if f.get("filename") == data.get("filename")), None)
        if known is not None:
            known.update(upload="failed" if failed else "done", **({"upload_error": data.get("error")} if failed else {
                "url": data.get("url"), "key": data.get("key", known.get("key"))}))
        elif new is not None:
            files.append(new)
        else:
            return
        task.result["files"] = files
        await node.store.update_task(egress_id, {"result": {**task.result, "error": task.error,
                                                            "history": task.history}})
