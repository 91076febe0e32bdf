"""Ingress kind ``url``: play a file or a URL into a room as a participant of kind ``media``.

Sources: local files in ``[plugins.play] allowed_dirs`` (mp4, mov, mkv, flv, ts, mp3, m4a,
wav), uploaded files by ``file_id``, http(s) files, HLS, RTMP and RTSP URLs. Paced in real
time on the room clock, with replays, a start position, pause / resume / seek / switch, a
silent track for sources without audio, reconnects on the TRTC schedule (0, 1, 3 s) and an
end event delayed like 3tee's ``stop_event_notify_delay_time``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any

import structlog

from gateway.errors import Unprocessable, ValidationFailed
from gateway.hookspecs import hookimpl
from gateway.ingress import IngressControl, IngressRequest
from gateway.rooms.participant import ParticipantKind
from plugins.play.config import PlayConfig
from plugins.play.player import Command, Player
from plugins.play.source import (
    OpenedSource,
    SourceSpec,
    SourceUnreachable,
    local_spec,
    network_spec,
    open_source,
)

if TYPE_CHECKING:
    from gateway.node import Node
    from gateway.rooms.room import Room
    from gateway.tasks import Task

log = structlog.get_logger(__name__)


class PlayRunner:
    """The async side of one play-in: control commands, events in order, stop."""

    def __init__(self, kind: UrlKind, node: Node, task: Task, room: Room, participant_id: str) -> None:
        self.kind = kind
        self.node = node
        self.task = task
        self.room = room
        self.participant_id = participant_id
        self.player: Player | None = None
        self.loop = asyncio.get_running_loop()
        self._events: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
        self._pump = self.loop.create_task(self._deliver(), name=f"play-events-{task.task_id}")
        self._stopping = False

    # ---------------------------------------------------------------- from the player thread
    def notify(self, what: str, **data: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the node stopped while a network read held the player
            self.loop.call_soon_threadsafe(self._events.put_nowait, (what, data))

    async def _deliver(self) -> None:
        """One consumer: events reach the bus in the order the player sent them."""
        while True:
            what, data = await self._events.get()
            try:
                if what == "status":
                    status = data.pop("status")
                    await self.node.ingress.set_status(self.task, status, **data)
                elif what == "finished":
                    await self._finished(data)
                    return
            except Exception:
                log.exception("play-in event failed", ingress_id=self.task.task_id)

    async def _finished(self, data: dict[str, Any]) -> None:
        reason, error = data.pop("reason"), data.pop("error")
        self.task.result.update(stats=data)
        if self._stopping:  # stop() reports and leaves itself
            return
        await self._leave(reason)
        if error is not None:
            await self.node.ingress.fail(self.task, error["code"], error["message"])
        else:
            await self.node.ingress.ended(self.task, "complete", reason=reason, **data)

    async def _leave(self, reason: str) -> None:
        if self.player is not None:
            await asyncio.to_thread(self.player.stop)
            self.player.close_tracks()
        await self.node.rooms.leave(self.room.room_id, self.participant_id, reason)

    # ---------------------------------------------------------------- IngressRunner
    async def control(self, command: IngressControl) -> dict[str, Any]:
        player = self.player
        assert player is not None
        action = command.action
        if action in ("pause", "resume"):
            player.command(Command(action))
            return {"action": action, "paused": action == "pause"}
        if action == "seek":
            if command.position_s is None:
                raise ValidationFailed("seek needs position_s", field="position_s")
            if not player.source.seekable:
                raise Unprocessable("a live source cannot seek", code="not_seekable", field="action")
            duration_s = player.source.media_info["duration_ms"] / 1000
            if command.position_s >= duration_s:
                raise ValidationFailed(f"position_s is past the end ({duration_s:.3f} s)", field="position_s")
            player.command(Command("seek", position_s=command.position_s))
            return {"action": "seek", "position_s": command.position_s}
        # switch: the new source is opened here, so a bad one is a clear error and the old keeps playing
        file_id = getattr(command, "file_id", None)
        if not command.url and not file_id:
            raise ValidationFailed("switch needs url or file_id", field="url")
        spec = await self.kind.resolve(self.node, command.url, file_id)
        request = self.task.spec
        audio_only = request.get("audio_only") or not request.get("video", True)
        opened = await asyncio.to_thread(self.kind.open, spec, audio_only, request.get("audio", True))
        if not player.is_alive():  # it ended while the new source was opening
            opened.close()
            raise Unprocessable("the play-in has ended", code="ingress_ended", field="action")
        self.task.result["media_info"] = opened.media_info
        player.command(Command("switch", source=opened))
        return {"action": "switch", "media_info": opened.media_info}

    async def stop(self) -> dict[str, Any]:
        self._stopping = True
        await self._leave("ingress_stopped")
        self._pump.cancel()
        return {"stats": self.player.stats() if self.player else {}}

    async def close(self, reason: str) -> None:
        """As the participant's edge: a kick or the room closing ends the play-in."""
        self._stopping = True
        if self.player is not None:
            await asyncio.to_thread(self.player.stop)
            self.player.close_tracks()
        self._pump.cancel()
        await self.node.ingress.ended(self.task, "complete", reason=reason,
                                      **(self.player.stats() if self.player else {}))


class UrlKind:
    name = "url"

    def __init__(self, config: PlayConfig) -> None:
        self.config = config

    def validate(self, request: IngressRequest, node: Node) -> None:
        file_id = getattr(request, "file_id", None)
        if bool(request.url) == bool(file_id):
            raise ValidationFailed("give exactly one of url and file_id", field="url")
        if request.url and "://" in request.url and not request.url.startswith("file:"):
            network_spec(request.url, self.config.schemes)

    async def resolve(self, node: Node, url: str | None, file_id: str | None) -> SourceSpec:
        if file_id:
            path = await node.files.local_path(file_id)  # NotFound for an unknown id
            return local_spec(str(path), [node.config.files_dir], "file_id")
        assert url is not None
        if "://" in url and not url.startswith("file:"):
            return network_spec(url, self.config.schemes)
        return local_spec(url, [*self.config.allowed_dirs, node.config.files_dir])

    def open(self, spec: SourceSpec, audio_only: bool, audio: bool = True) -> OpenedSource:
        return open_source(spec, audio_only=audio_only, audio=audio, timeout_s=self.config.open_timeout_s)

    def open_with_retries(self, spec: SourceSpec, audio_only: bool, audio: bool, on_retry: Any) -> OpenedSource:
        """Network sources: one try, then one after each retry delay (TRTC: 0, 1, 3 s)."""
        delays = [None, *self.config.retry_delays_s] if spec.network else [None]
        last: SourceUnreachable | None = None
        for attempt, delay in enumerate(delays):
            if delay is not None:
                on_retry(attempt, delay, last.message if last else "")
                time.sleep(delay)
            try:
                return self.open(spec, audio_only, audio)
            except SourceUnreachable as exc:
                last = exc
        assert last is not None
        raise last

    async def start(self, task: Task, request: IngressRequest, room: Room, node: Node) -> PlayRunner:
        spec = await self.resolve(node, request.url, getattr(request, "file_id", None))
        loop = asyncio.get_running_loop()

        def on_retry(attempt: int, delay: float, reason: str) -> None:
            asyncio.run_coroutine_threadsafe(node.ingress.set_status(
                task, "retrying", attempt=attempt, delay_s=delay, reason=reason), loop)

        audio_only = request.audio_only or not request.video
        opened = await asyncio.to_thread(self.open_with_retries, spec, audio_only, request.audio, on_retry)
        duration_s = opened.media_info["duration_ms"] / 1000
        if request.start_s and (not opened.seekable or request.start_s >= duration_s):
            opened.close()
            raise ValidationFailed("start_s is past the end of the source" if opened.seekable
                                   else "a live source has no start position", field="start_s")
        try:
            participant = await node.rooms.join(room.room_id, request.identity, kind=ParticipantKind.MEDIA,
                                                name=request.name or request.identity, operator=True)
        except BaseException:
            opened.close()
            raise
        runner = PlayRunner(self, node, task, room, participant.participant_id)
        participant.edge = runner
        media = node.media.room_media(room)
        mock_audio = self.config.mock_audio and request.audio
        runner.player = Player(
            media.bus, participant.participant_id, opened, notify=runner.notify,
            reopen=lambda current: self.open(current, audio_only, request.audio), replay_times=request.replay_times,
            start_s=request.start_s, mock_audio=mock_audio, audio_lead_s=self.config.audio_lead_s,
            retry_delays_s=tuple(self.config.retry_delays_s), end_delay_s=self.config.end_event_delay_s)
        runner.player.start()
        task.result.update(participant_id=participant.participant_id, state="publishing",
                           media_info={**opened.media_info, "mock_audio": mock_audio and not opened.media_info[
                               "has_audio"]}, source=spec.shown)
        return runner


class PlayPlugin:
    config_model = PlayConfig
    config: PlayConfig

    def __init__(self) -> None:
        self.config = PlayConfig()

    @hookimpl
    def mediagate_ingress_kinds(self, node: Node) -> list[UrlKind]:
        return [UrlKind(self.config)]
