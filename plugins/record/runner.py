"""A running recording task: its file sets (the mixed one, and one per participant track in
individual mode), the hand-over of finished files to the spool, the idle timer, the report.

Which packets a file set reads:

- mixed, from the composite: the shared encoder's video (joining with a keyframe at once,
  ``subscribe_video``) and its AAC; other audio codecs (Opus, MP3, PCM) from the mixer;
- mixed, one participant publishing H.264: that track's packets as they are (no re-encode),
  audio from the mixer with only that participant; other sources go through a
  single-participant composite;
- individual: per video track its packets (H.264) or a single-participant composite (video
  only), per participant one audio file set from the mixer with only them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import os
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from gateway import events as ev
from gateway.egress import AUDIO_FORMATS, VIDEO_FORMATS, EgressRequest, EgressUpdate, ParticipantSource
from gateway.errors import Unprocessable, ValidationFailed
from gateway.media.audiofile import FORMAT_AUDIO_CODEC
from gateway.media.engine import ROOM_COMPOSITE, canonical
from gateway.media.layout.model import AudioSelection, Layout, Region, SourceRef
from gateway.media.track import TrackKind, TrackSource
from plugins.record import recordings
from plugins.record.fileset import FileSet, FileSetSpec, FinishedFile
from plugins.record.naming import file_key, safe_part
from plugins.record.sources import MixPackets, TrackPackets
from plugins.record.spool import spool_of

if TYPE_CHECKING:
    from gateway.media.composition import EncodedOutput
    from gateway.media.engine import RoomMedia
    from gateway.media.hls import HlsSegment
    from gateway.media.track import Track
    from gateway.node import Node
    from gateway.rooms.room import Room
    from gateway.tasks import Task

log = structlog.get_logger(__name__)
MIX_BACKLOG_BLOCKS = 250  # 5 s of 20 ms blocks: a file set starting slowly loses none of its audio


def single_participant_layout(base: Layout, participant_id: str, track: str = "camera",
                              audio: bool = True) -> Layout:
    """One participant filling the canvas, hearing only them: a single-stream recording."""
    region = Region(source=SourceRef(participant=participant_id, track=track), x=0, y=0, w=1, h=1,  # type: ignore[arg-type]
                    units="fraction")
    selection = AudioSelection(participants=[participant_id] if audio else [])
    return base.model_copy(update={"template": "custom", "regions": [region], "screen_template": None,
                                   "audio": selection})


@dataclass(eq=False)
class Recorder:
    """One file set and what it holds on to (a composite output, a mixer output)."""

    fileset: FileSet
    composite_key: str | None = None
    output: EncodedOutput | None = None


class RecordRunner:
    def __init__(self, node: Node, task: Task, room: Room, request: EgressRequest, *, max_idle_s: float,
                 upload_wait_s: float) -> None:
        self.node = node
        self.task = task
        self.room = room
        self.request = request
        self.options = request.record  # set by the kind
        assert self.options is not None
        self.storage = self.options.storage.model_dump()
        self.media: RoomMedia = node.media.room_media(room)
        self.loop = asyncio.get_running_loop()
        self.spool = spool_of(node)
        self.max_idle_s = max_idle_s
        self.upload_wait_s = upload_wait_s
        self.started_at = time.time()
        # room clock -> wall clock, fixed once so part boundaries map to exact UTC times
        self._wall_offset = time.time() - self.media.bus.clock.now()
        self.recorders: list[Recorder] = []
        self.by_track: dict[str, Recorder] = {}
        self.files: list[dict[str, Any]] = []
        self._entries: dict[str, Any] = {}  # local path -> spool entry
        self._handovers: list[concurrent.futures.Future[Any]] = []
        self.uploads: dict[str, asyncio.Future[dict[str, Any]]] = {}  # key -> upload event data
        self.mixed_key: str | None = None  # the composite the mixed file set draws from
        self._unlisten: Any = None
        self._idle_task: asyncio.Task[None] | None = None
        self._stopping = False
        self._disk_full = False
        self._lock = asyncio.Lock()

    @property
    def output(self) -> EncodedOutput | None:
        """The composite output the mixed file set records (None for passthrough/individual)."""
        return next((r.output for r in self.recorders if r.fileset.spec.who == "mix" and r.output), None)

    # ---------------------------------------------------------------- start
    async def start(self) -> None:
        options = self.options
        assert options is not None
        if options.mode in ("mixed", "both"):
            await self._start_mixed()
        if options.mode in ("individual", "both"):
            self._unlisten = self.media.bus.listen(
                lambda what, track: self.loop.call_soon_threadsafe(self._sync_individual))
            await self._sync_tracks()
        self._idle_task = self.loop.create_task(self._watch_idle(), name=f"record-idle-{self.task.task_id}")

    def _spec(self, who: str, participant_id: str | None, formats: list[str]) -> FileSetSpec:
        options = self.options
        assert options is not None
        return FileSetSpec(who=who, participant_id=participant_id, formats=formats, split_s=options.split_seconds,
                           split_bytes=options.split_bytes, hls_segment_s=options.hls_segment_s,
                           fps=self.request.encoding.fps)

    def _audio_codecs(self, formats: list[str]) -> list[str]:
        return list(dict.fromkeys(FORMAT_AUDIO_CODEC[f] for f in formats))

    async def _start_mixed(self) -> None:
        options, request, room = self.options, self.request, self.room
        assert options is not None
        formats = list(options.formats)
        want_video = not options.audio_only and any(f in VIDEO_FORMATS for f in formats)
        audio_codecs = [] if options.video_only else self._audio_codecs(formats)
        participant_id = None
        layout = request.layout
        key = ROOM_COMPOSITE if layout is None else f"egress:{self.task.task_id}"
        passthrough: Track | None = None
        if isinstance(request.source, ParticipantSource):
            participant = self.node.rooms.participant(room, request.source.participant)
            participant_id = participant.participant_id
            passthrough = self._h264_camera(participant_id) if layout is None else None
            layout = single_participant_layout(layout or self.node.media.room_layout(room), participant_id)
            key = f"egress:{self.task.task_id}"
        if request.audio is not None:
            layout = (layout or self.node.media.room_layout(room)).model_copy(update={"audio": request.audio})
            key = f"egress:{self.task.task_id}"
        sources: list[Any] = []
        recorder_output: EncodedOutput | None = None
        composite_key: str | None = None
        keyframe = None
        mix_codecs = [c for c in audio_codecs if not (c == "aac" and want_video and passthrough is None)]
        mix = None
        if audio_codecs:
            # made first, and deep enough to wait while x264 opens: the audio starts with the file
            selection = AudioSelection(participants=[participant_id]) if participant_id else canonical(
                layout or self.node.media.room_layout(room), room).audio
            mix = self.media.mixer.add_output(selection, maxsize=MIX_BACKLOG_BLOCKS)
        if want_video and passthrough is not None:
            sources.append(TrackPackets("video", passthrough, passthrough.subscribe_packets(from_keyframe=True),
                                        rebase=self.media.bus.clock))
        elif want_video:
            # opening x264 takes tens of milliseconds: keep it off the event loop
            _handle, recorder_output = await asyncio.to_thread(self.media.attach, key, layout, request.encoding)
            composite_key = key
            self.mixed_key = key
            sources.append(TrackPackets("video", recorder_output.video_track, recorder_output.subscribe_video()))
            keyframe = recorder_output.request_keyframe
            audio_track = recorder_output.audio_track
            if "aac" in audio_codecs:
                if audio_track is not None and audio_track.codec is not None and audio_track.codec.name == "aac":
                    sources.append(TrackPackets("aac", audio_track, audio_track.subscribe_packets()))
                else:
                    mix_codecs.append("aac")
        if mix is not None and mix_codecs:
            sources.append(MixPackets(self.media.mixer, mix, mix_codecs, request.encoding.audio_kbps))
        elif mix is not None:
            self.media.mixer.remove_output(mix)
        spec = self._spec("mix", participant_id, formats)
        self._add(Recorder(self._fileset(spec, sources, keyframe), composite_key, recorder_output))

    def _h264_camera(self, participant_id: str) -> Track | None:
        for track in self.media.bus.tracks(participant_id, TrackKind.VIDEO):
            if track.codec is not None and track.codec.name == "h264" and track.source is not TrackSource.SCREEN:
                return track
        return None

    def _add(self, recorder: Recorder, track_id: str | None = None) -> None:
        self.recorders.append(recorder)
        if track_id is not None:
            self.by_track[track_id] = recorder
        recorder.fileset.start()

    def _fileset(self, spec: FileSetSpec, sources: list[Any], keyframe: Any = None) -> FileSet:
        return FileSet(spec, sources, open_file=lambda fmt, i, start: self._open_file(spec, fmt, i, start),
                       open_segment=self._open_segment, on_file=lambda done: self._on_file(spec, done),
                       on_empty=self._on_empty, on_error=lambda exc: self._on_error(spec, exc),
                       on_segment=self._on_segment, to_wall=self._to_wall, keyframe=keyframe,
                       now=self.media.bus.clock.now if keyframe is not None else None)

    # ---------------------------------------------------------------- individual
    def _sync_individual(self) -> None:
        if not self._stopping:
            self.loop.create_task(self._sync_tracks())

    async def _sync_tracks(self) -> None:
        """Start a file set for every new participant track, stop those whose track is gone."""
        async with self._lock:
            if self._stopping:
                return
            options = self.options
            assert options is not None
            present = {t.track_id: t for t in self.media.bus.tracks()}
            for track_id in [t for t in self.by_track if t not in present]:
                await self._stop_recorder(self.by_track.pop(track_id))
            audio_seen: set[str] = set()
            for track in present.values():
                if track.track_id in self.by_track or track.closed:
                    continue
                if track.kind is TrackKind.AUDIO:
                    if options.video_only or track.participant_id in audio_seen:
                        continue
                    audio_seen.add(track.participant_id)
                    if any(r.fileset.spec.participant_id == track.participant_id and r.fileset.spec.who.endswith(
                            "_audio") for r in self.by_track.values()):
                        continue
                    await self._start_audio_track(track)
                elif not options.audio_only and any(f in VIDEO_FORMATS for f in options.formats):
                    await self._start_video_track(track)

    def _who(self, participant_id: str, what: str) -> str:
        participant = self.room.participants.get(participant_id)
        return f"{safe_part(participant.identity if participant else participant_id)}_{what}"

    async def _start_video_track(self, track: Track) -> None:
        options = self.options
        assert options is not None
        formats = [f for f in options.formats if f in VIDEO_FORMATS]
        what = "screen" if track.source is TrackSource.SCREEN else "camera"
        spec = self._spec(self._who(track.participant_id, what), track.participant_id, formats)
        if track.codec is not None and track.codec.name == "h264":
            source = TrackPackets("video", track, track.subscribe_packets(from_keyframe=True),
                                  rebase=self.media.bus.clock)
            self._add(Recorder(self._fileset(spec, [source])), track.track_id)
            return
        key = f"egress:{self.task.task_id}:{track.track_id}"
        layout = single_participant_layout(self.node.media.room_layout(self.room), track.participant_id, what,
                                           audio=False)
        _handle, output = await asyncio.to_thread(self.media.attach, key, layout, self.request.encoding)
        source = TrackPackets("video", output.video_track, output.subscribe_video())
        self._add(Recorder(self._fileset(spec, [source], output.request_keyframe), key, output), track.track_id)

    async def _start_audio_track(self, track: Track) -> None:
        options = self.options
        assert options is not None
        formats = [f for f in options.formats if f in AUDIO_FORMATS] or ["m4a"]
        spec = self._spec(self._who(track.participant_id, "audio"), track.participant_id, formats)
        mix = self.media.mixer.add_output(AudioSelection(participants=[track.participant_id]),
                                          maxsize=MIX_BACKLOG_BLOCKS)
        source = MixPackets(self.media.mixer, mix, self._audio_codecs(formats), self.request.encoding.audio_kbps)
        self._add(Recorder(self._fileset(spec, [source])), track.track_id)

    # ---------------------------------------------------------------- files (recorder threads)
    def _to_wall(self, stamp: Fraction) -> float:
        return self._wall_offset + float(stamp)

    def _on_loop(self, fn: Any) -> Any:
        """Run `fn` on the event loop and wait for it (the spool is the loop's)."""
        async def call() -> Any:
            return fn()
        return asyncio.run_coroutine_threadsafe(call(), self.loop).result(timeout=30)

    def _open_file(self, spec: FileSetSpec, fmt: str, index: int, start: Fraction) -> tuple[Path, str]:
        options = self.options
        assert options is not None
        key = file_key(prefix=options.file_prefix, room_id=self.room.room_id, egress_id=self.task.task_id,
                       who=spec.who, started_at=self._to_wall(start), index=index, fmt=fmt)
        entry = self._on_loop(lambda: self.spool.reserve(
            room_id=self.room.room_id, egress_id=self.task.task_id, filename=key, storage=self.storage,
            meta={"format": fmt, "participant_id": spec.participant_id}, running=True))
        path = Path(entry.path)
        self._entries[str(path)] = entry
        return path, key

    def _open_segment(self, playlist_key: str, n: int) -> tuple[Path, str, str]:
        key = playlist_key.rsplit(".", 1)[0] + f"_{n:05d}.ts"
        entry = self._on_loop(lambda: self.spool.reserve(
            room_id=self.room.room_id, egress_id=self.task.task_id, filename=key, storage=self.storage,
            meta={"format": "ts", "segment_of": playlist_key}, running=True))
        path = Path(entry.path)
        self._entries[str(path)] = entry
        return path, key, key.rsplit("/", 1)[-1]

    def _on_segment(self, playlist_key: str, segment: HlsSegment, fmt: str) -> None:
        entry = self._entries.pop(str(segment.path), None)
        if entry is None:
            return
        meta = {"format": "ts", "size": segment.bytes, "duration_s": segment.duration, "segment_of": playlist_key}
        self._handovers.append(asyncio.run_coroutine_threadsafe(self._commit(entry, meta, None), self.loop))

    def _on_error(self, spec: FileSetSpec, exc: Exception) -> None:
        """A file set stopped writing: say so; the files written so far are kept and handed
        over. Out of disk (the write failed, or the spool refused the next part) the whole
        task ends: every file set shares that disk."""
        if _disk_full(exc):
            self.loop.call_soon_threadsafe(self._end_disk_full, f"{spec.who}: {_disk_message(exc)}")
            return
        code = getattr(exc, "code", "recording_failed")
        message = f"{spec.who}: recording stopped writing ({type(exc).__name__})"  # never a server path
        self.loop.call_soon_threadsafe(lambda: self.node.events.emit(
            ev.EGRESS_STATUS, self.room.room_id, egress_id=self.task.task_id, status=self.task.status,
            error={"code": code, "message": message}, track=spec.who))

    def _on_empty(self, path: Path) -> None:
        """A part that got no media (stopped before the first keyframe): not kept."""
        entry = self._entries.pop(str(path), None)
        discard = getattr(self.spool, "discard", None)
        if entry is not None and discard is not None:
            self.loop.call_soon_threadsafe(discard, entry)

    def _on_file(self, spec: FileSetSpec, done: FinishedFile) -> None:
        self._handovers.append(asyncio.run_coroutine_threadsafe(self._file_done(spec, done), self.loop))

    # ---------------------------------------------------------------- files (event loop)
    async def _file_done(self, spec: FileSetSpec, done: FinishedFile) -> None:
        started = self._to_wall(done.start)
        info = {"recording_id": f"RC_{self.task.task_id[3:]}_{len(self.files) + 1:04d}", "filename": done.key,
                "name": done.key.rsplit("/", 1)[-1], "format": done.fmt, "size": done.size,
                "duration_s": round(done.duration_s, 3), "started_at": round(started, 3),
                "ended_at": round(started + done.duration_s, 3), "index": done.index,
                "participant_id": spec.participant_id, "track": spec.who, "backend": self.storage["backend"],
                "storage_prefix": self.storage.get("prefix") or "", "url": None, "upload": "pending"}
        if done.segments:
            info["segments"] = done.segments
        self.files.append(info)
        self.task.result["files"] = self.files
        await recordings.insert(self.node, {**info, "egress_id": self.task.task_id, "room_id": self.room.room_id})
        self.node.events.emit(ev.EGRESS_FILE, self.room.room_id, egress_id=self.task.task_id, file=dict(info))
        entry = self._entries.pop(str(done.path), None)
        if entry is not None:
            meta = {k: info[k] for k in ("format", "duration_s", "size", "started_at", "ended_at", "participant_id")}
            await self._commit(entry, meta, done.key)

    async def _commit(self, entry: Any, meta: dict[str, Any], key: str | None) -> None:
        if key is not None:
            self.uploads.setdefault(key, self.loop.create_future())
        try:
            await self.spool.commit(entry, meta)
        except Exception as exc:
            log.exception("hand-over to the spool failed", egress_id=self.task.task_id)
            if key is not None:
                self.upload_event({"filename": key, "error": str(exc)}, failed=True)

    def upload_event(self, data: dict[str, Any], failed: bool) -> None:
        """upload.done / upload.failed for one of this task's files (from the spool)."""
        key = data.get("filename")
        for info in self.files:
            if info["filename"] == key:
                info["upload"] = "failed" if failed else "done"
                if not failed:
                    info["url"] = data.get("url")
                    info["key"] = data.get("key", key)
                    path = data.get("path") or (data.get("stored") or {}).get("path")
                    if path:  # local backend: where the file is on this node
                        info["path"] = path
                else:
                    info["upload_error"] = data.get("error")
        future = self.uploads.get(key) if isinstance(key, str) else None
        if future is None and isinstance(key, str):
            future = self.uploads[key] = self.loop.create_future()
        if future is not None and not future.done():
            future.set_result(data)

    def _end_disk_full(self, message: str) -> None:
        """End the task as failed (reason ``disk_full``): its files are closed, kept and uploaded,
        which frees the spool."""
        if self._stopping or self._disk_full:
            return
        self._disk_full = True
        log.warning("recording ended: the disk is full", egress_id=self.task.task_id, detail=message)
        self.loop.create_task(self.node.egress.stop(self.task.task_id, "disk_full", error={
            "code": "insufficient_storage", "message": f"the recording ended: the disk is full ({message})"}))

    # ---------------------------------------------------------------- idle, update, stop
    async def _watch_idle(self) -> None:
        """MaxIdleTime: stop once nobody has published for max_idle_s. And once a second the
        disk: below spool.stop_free_mb the recording ends before a write fails."""
        idle_since: float | None = None
        disk_low = getattr(self.spool, "disk_low", None)
        next_disk_check = 0.0
        while not self._stopping:
            await asyncio.sleep(0.25)
            if disk_low is not None and time.monotonic() >= next_disk_check:
                next_disk_check = time.monotonic() + 1.0
                if disk_low():
                    self._end_disk_full("below spool.stop_free_mb free")
                    return
            if self.media.bus.tracks():
                idle_since = None
                continue
            now = time.monotonic()
            idle_since = idle_since or now
            if now - idle_since >= self.max_idle_s:
                log.info("recording idle, stopping", egress_id=self.task.task_id, idle_s=self.max_idle_s)
                self.loop.create_task(self.node.egress.stop(self.task.task_id, "idle_timeout"))
                return

    async def update(self, patch: EgressUpdate) -> None:
        if patch.urls is not None:
            raise ValidationFailed("a recording has no URLs", field="urls")
        if patch.layout is None and patch.audio is None:
            return
        key = self.mixed_key
        if key is None:
            raise Unprocessable("this recording has no composite to lay out (individual or passthrough)",
                                code="no_composite", field="layout" if patch.layout is not None else "audio")
        if key == ROOM_COMPOSITE:
            # other outputs share the room's composite: changing it here would change theirs
            raise Unprocessable("this recording follows the room layout: change it with PUT /v1/rooms/{id}/layout, "
                                "or start the recording with its own layout", code="follows_room_layout",
                                field="layout" if patch.layout is not None else "audio")
        handle = self.media.composites[key]
        layout = patch.layout or handle.layout
        if patch.audio is not None:
            layout = layout.model_copy(update={"audio": patch.audio})
        self.media.set_composite_layout(key, layout)
        for recorder in self.recorders:  # the mixer-fed codecs follow the new selection too
            for source in recorder.fileset.sources:
                if isinstance(source, MixPackets) and recorder.fileset.spec.who == "mix":
                    self.media.mixer.set_selection(source.mix, canonical(layout, self.room).audio)

    async def _stop_recorder(self, recorder: Recorder) -> None:
        await asyncio.to_thread(recorder.fileset.stop)
        if recorder.output is not None and recorder.composite_key is not None:
            await asyncio.to_thread(self.media.detach, recorder.composite_key, recorder.output)

    async def stop(self) -> dict[str, Any]:
        async with self._lock:
            self._stopping = True
        if self._unlisten is not None:
            self._unlisten()
        idle = self._idle_task
        if idle is not None and idle is not asyncio.current_task() and not idle.done():
            idle.cancel()
        await asyncio.gather(*(self._stop_recorder(r) for r in self.recorders))
        for future in list(self._handovers):
            try:
                await asyncio.wrap_future(future)
            except Exception:
                log.exception("file hand-over failed", egress_id=self.task.task_id)
        waiting = [f for f in self.uploads.values() if not f.done()]
        if waiting:  # the report carries the storage URLs when the uploads finish in time
            await asyncio.wait(waiting, timeout=self.upload_wait_s)
        if not self.files:
            log.warning("recording stopped before any media arrived", egress_id=self.task.task_id)
        return {"files": self.files, "started_at": self.started_at, "stopped_at": time.time()}


def _disk_full(exc: BaseException) -> bool:
    """Out of disk: a write that failed for space, or the spool refusing the next part."""
    if getattr(exc, "code", None) == "insufficient_storage":
        return True
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def _disk_message(exc: BaseException) -> str:
    if isinstance(exc, OSError):
        return os.strerror(exc.errno or errno.ENOSPC)  # never the server path in the message
    return str(getattr(exc, "message", "") or exc)
