"""The media engine of a node: one :class:`RoomMedia` per room that has media, holding the
room's frame bus, its audio mixer and its composites.

A composite is a layout drawn by a compositor and encoded once per distinct encoding. The
room's default composite (key ``"room"``) follows the room layout; an egress task with its
own layout gets its own composite (keyed by the task id). Layout resolution runs on the
event loop (it reads room state); drawing, mixing and encoding run on worker threads.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
from PIL import Image

from gateway import events as ev
from gateway.errors import NotFound, ValidationFailed
from gateway.media.bus import FrameBus
from gateway.media.clock import RoomClock
from gateway.media.composition import Composition, EncodedOutput
from gateway.media.compositor import Compositor
from gateway.media.encoder import Encoding
from gateway.media.fonts import find_font
from gateway.media.layout.model import Canvas, Layout
from gateway.media.layout.placed import PlacedRegion, VideoSource
from gateway.media.layout.resolve import UnknownSource, resolve
from gateway.media.layout.templates import TemplateRegistry, UnknownTemplate
from gateway.media.mixer import AudioMixer, MixOutput
from gateway.media.overlays import OverlayRenderer, WatermarkError
from gateway.media.track import DecoderSettings, TrackKind, TrackSource

if TYPE_CHECKING:
    from gateway.node import Node
    from gateway.rooms.participant import Participant
    from gateway.rooms.room import Room

log = structlog.get_logger(__name__)

ROOM_COMPOSITE = "room"
LEVELS_EVERY_S = 1.0


@dataclass(eq=False)
class Composite:
    key: str
    layout: Layout
    compositor: Compositor
    composition: Composition
    mix: MixOutput
    follows_room: bool  # True: re-laid out whenever the room layout changes
    users: int = 0
    watermarks: Any = None  # the Watermarks model the current overlays were built from


def canonical(layout: Layout, room: Room) -> Layout:
    """Layouts may name participants by identity (stable across reconnects); the engine works
    with participant ids, so identities are translated at the moment the layout is drawn."""
    ids = {p.participant_id for p in room.participants.values()}
    by_identity = {p.identity: p.participant_id for p in room.participants.values()}

    def pid(name: str) -> str:
        return name if name in ids else by_identity.get(name, name)

    changes: dict[str, Any] = {}
    if any(r.source is not None and r.source.participant not in ids for r in layout.regions):
        changes["regions"] = [r if r.source is None else r.model_copy(
            update={"source": r.source.model_copy(update={"participant": pid(r.source.participant)})})
            for r in layout.regions]
    if layout.main is not None and layout.main not in ids:
        changes["main"] = pid(layout.main)
    audio = layout.audio
    if (audio.participants and any(n not in ids for n in audio.participants)) or any(
            n not in ids for n in audio.channels):
        changes["audio"] = audio.model_copy(update={
            "participants": None if audio.participants is None else [pid(n) for n in audio.participants],
            "channels": {pid(n): side for n, side in audio.channels.items()}})
    return layout.model_copy(update=changes) if changes else layout


class RoomMedia:
    def __init__(self, service: MediaService, room: Room) -> None:
        self.service = service
        self.room = room
        self.loop = asyncio.get_running_loop()
        self.bus = FrameBus(RoomClock())
        self.mixer = AudioMixer(self.bus, jitter_ms=service.node.config.media.audio_jitter_ms,
                                on_levels=self._on_levels, on_active_speaker=self._on_speaker,
                                on_demand=not service.node.config.media.audio_levels_always)
        self.mixer.start()
        self.composites: dict[str, Composite] = {}
        self._last_levels = 0.0
        self._unlisten = self.bus.listen(self._on_bus)
        self.closed = False
        self.auto_record_started = False

    # ------------------------------------------------------------------ sources
    def sources(self) -> list[VideoSource]:
        """Pictures a template can place: everyone who publishes anything (audio-only
        participants get a window with a placeholder), then their screen shares."""
        found: list[VideoSource] = []
        for participant in self.room.participants.values():
            tracks = self.bus.tracks(participant.participant_id)
            if not tracks:
                continue
            has_camera = any(t.kind is TrackKind.VIDEO and t.source is not TrackSource.SCREEN for t in tracks)
            found.append(VideoSource(participant.participant_id, "camera", participant.name,
                                     has_video=has_camera and participant.video_flows))
            if any(t.kind is TrackKind.VIDEO and t.source is TrackSource.SCREEN for t in tracks):
                found.append(VideoSource(participant.participant_id, "screen", participant.name))
        return found

    def place(self, layout: Layout) -> list[PlacedRegion]:
        """Resolve a layout against the room now. A custom region naming someone who left
        keeps its window (placeholder) rather than failing a running composite."""
        sources = self.sources()
        effective = self._effective(canonical(layout, self.room), sources)
        for _ in range(len(effective.regions) + 1):
            try:
                return resolve(effective, sources, self.service.templates, self.mixer.active_speaker)
            except UnknownSource as exc:
                sources = [*sources, VideoSource(exc.participant, "camera", exc.participant, has_video=False)]
        return []

    @staticmethod
    def _effective(layout: Layout, sources: list[VideoSource]) -> Layout:
        """Juphoon smart mode: the screen template applies while someone shares a screen."""
        if layout.screen_template and any(s.track == "screen" for s in sources):
            return layout.model_copy(update={"template": layout.screen_template})
        return layout

    # ------------------------------------------------------------------ composites
    def composite(self, key: str, layout: Layout | None) -> Composite:
        existing = self.composites.get(key)
        if existing is not None:
            existing.users += 1
            return existing
        follows_room = layout is None
        layout = layout or self.service.room_layout(self.room)
        compositor = Compositor(layout.canvas, self.bus, self.service.load_image, self.service.font_path)
        mix = self.mixer.add_output(canonical(layout, self.room).audio)
        composition = Composition(layout.canvas, compositor, self.bus.clock, mix,
                                  encoder_threads=self.service.node.config.media.encoder_threads)
        handle = Composite(key, layout, compositor, composition, mix, follows_room, users=1)
        self._apply(handle, layout)
        composition.start()
        self.composites[key] = handle
        return handle

    def attach(self, key: str, layout: Layout | None, encoding: Encoding) -> tuple[Composite, EncodedOutput]:
        """A composite's encoded output for `encoding` (shared with equal encodings)."""
        handle = self.composite(key, layout)
        return handle, handle.composition.attach(encoding)

    def detach(self, key: str, output: EncodedOutput) -> None:
        handle = self.composites.get(key)
        if handle is None:
            return
        handle.composition.detach(output)
        handle.users -= 1
        if handle.users <= 0:
            self._stop_composite(handle)

    def _stop_composite(self, handle: Composite) -> None:
        self.composites.pop(handle.key, None)
        handle.composition.stop()
        self.service.retire(handle.composition.stats())
        handle.compositor.close()
        self.mixer.remove_output(handle.mix)

    def set_composite_layout(self, key: str, layout: Layout) -> None:
        handle = self.composites.get(key)
        if handle is None:
            raise NotFound(f"no composite {key!r}", code="composite_not_found")
        handle.follows_room = False
        self._apply(handle, layout)

    def _apply(self, handle: Composite, layout: Layout) -> None:
        """Make a running composite draw `layout` from its next frame on."""
        if layout.canvas != handle.layout.canvas:
            compositor = Compositor(layout.canvas, self.bus, self.service.load_image, self.service.font_path)
            old, handle.compositor = handle.compositor, compositor
            handle.composition.compositor = compositor  # one attribute swap, read once per frame
            old.close()
            handle.watermarks = None
        handle.layout = layout
        compositor = handle.compositor  # the background came with it: it is part of the canvas
        if handle.watermarks != layout.watermarks:
            marks = layout.watermarks
            empty = not (marks.images or marks.texts or marks.timestamp)
            compositor.set_overlays(None if empty else OverlayRenderer(
                marks, layout.canvas, self.service.load_image, self.service.font_path))
            handle.watermarks = layout.watermarks
        compositor.set_regions(self.place(layout))
        self.mixer.set_selection(handle.mix, canonical(layout, self.room).audio)

    def refresh(self) -> None:
        """Re-lay out every composite (participants, tracks, speaker or room layout changed)."""
        if self.closed or not self.composites:  # nothing to lay out (an audio-only room): no layout built
            return
        room_layout = self.service.room_layout(self.room)
        for handle in list(self.composites.values()):
            try:
                self._apply(handle, room_layout if handle.follows_room else handle.layout)
            except Exception:
                log.exception("layout refresh failed", room_id=self.room.room_id, composite=handle.key)

    # ------------------------------------------------------------------ participants
    def participants_changed(self) -> None:
        self.refresh()

    def participant_left(self, participant_id: str) -> None:
        for track in self.bus.tracks(participant_id):
            self.bus.remove_track(track.track_id)
        self.refresh()

    def participant_state_changed(self, participant: Participant) -> None:
        for track in self.bus.tracks(participant.participant_id):
            track.muted = not (participant.audio_flows if track.kind is TrackKind.AUDIO else participant.video_flows)
        self.refresh()

    def track_infos(self, participant_id: str) -> list[dict[str, Any]]:
        return [track.info() for track in self.bus.tracks(participant_id)]

    # ------------------------------------------------------------------ callbacks (any thread)
    def _on_bus(self, what: str, track: Any) -> None:
        self.loop.call_soon_threadsafe(self._track_changed, what, track)

    def _track_changed(self, what: str, track: Any) -> None:
        name = ev.TRACK_PUBLISHED if what == "added" else ev.TRACK_UNPUBLISHED
        self.service.node.events.emit(name, self.room.room_id, participant_id=track.participant_id,
                                      track=track.info())
        participant = self.room.participants.get(track.participant_id)
        if participant is not None and what == "added":
            track.muted = not (participant.audio_flows if track.kind is TrackKind.AUDIO else participant.video_flows)
        self.refresh()
        if what == "added" and self.room.setting("auto_record") and not self.auto_record_started:
            self.auto_record_started = True  # 3tee enable_auto_cloud_recording: from the first publisher on
            self.loop.create_task(self._auto_record(), name=f"auto-record-{self.room.room_id}")

    async def _auto_record(self) -> None:
        from gateway.egress import EgressRequest

        try:
            await self.service.node.egress.create(self.room.room_id, EgressRequest(kind="record"))
        except Exception:
            log.exception("auto recording failed to start", room_id=self.room.room_id)

    def _on_speaker(self, participant_id: str | None) -> None:
        self.loop.call_soon_threadsafe(self._speaker_changed, participant_id)

    def _speaker_changed(self, participant_id: str | None) -> None:
        self.service.node.events.emit(ev.SPEAKERS_CHANGED, self.room.room_id, active_speaker=participant_id,
                                      levels=self.mixer.levels)
        if any(self._effective(h.layout, []).template == "voice_activated" for h in self.composites.values()) \
                or self.service.room_layout(self.room).template == "voice_activated":
            self.refresh()

    def _on_levels(self, levels: dict[str, float]) -> None:
        now = time.monotonic()
        if now - self._last_levels >= LEVELS_EVERY_S and any(v > -60 for v in levels.values()):
            self._last_levels = now
            self.service.node.events.emit("room.audio_levels", self.room.room_id,
                                          levels={k: round(v, 1) for k, v in levels.items()})

    # ------------------------------------------------------------------ teardown
    def close(self) -> None:
        self.closed = True
        for handle in list(self.composites.values()):
            self._stop_composite(handle)
        self._unlisten()
        self.mixer.close()
        self.bus.close()

    def stats(self) -> dict[str, Any]:
        return {key: h.composition.stats() for key, h in self.composites.items()}


class MediaService:
    def __init__(self, node: Node) -> None:
        self.node = node
        self.templates = TemplateRegistry()
        self._font: str | None = None
        DecoderSettings.threads = node.config.media.decoder_threads
        # frames of compositions that ended: node-wide totals only ever grow (Prometheus counters)
        self.retired = {"frames_rendered": 0, "frames_skipped": 0}

    @property
    def font_path(self) -> str:
        if self._font is None:
            try:
                self._font = find_font(self.node.config.media.font)
            except (ValueError, FileNotFoundError) as exc:
                raise self.node.config.error(str(exc), "media.font") from exc
        return self._font

    def collect_templates(self) -> None:
        for provided in self.node.pm.hook.mediagate_layout_templates():
            self.templates.update(provided or {})

    def load_image(self, file_id: str) -> Image.Image:
        """An uploaded image by file id (called when a layout is applied, not per frame)."""
        matches = sorted(Path(self.node.config.files_dir).glob(f"{file_id}.*")) if file_id.isidentifier() else []
        if not matches:
            raise FileNotFoundError(f"file {file_id!r} does not exist")
        with Image.open(matches[0]) as image:
            image.load()
            return image.copy()

    # ------------------------------------------------------------------ rooms
    def room_media(self, room: Room) -> RoomMedia:
        if room.media is None:
            room.media = RoomMedia(self, room)
        return room.media

    def default_layout(self, room: Room) -> Layout:
        canvas = room.setting("canvas")
        media = self.node.config.media
        canvas_model = Canvas.model_validate(canvas) if canvas else Canvas(
            width=media.canvas_width, height=media.canvas_height, fps=media.fps)
        return Layout(canvas=canvas_model, template="voice_activated" if room.setting("voice_activated") else "grid")

    def room_layout(self, room: Room) -> Layout:
        return room.layout or self.default_layout(room)

    def validate_layout(self, room: Room, layout: Layout) -> None:
        """Reject a layout that cannot be drawn: unknown template or source, unreadable image."""
        for name in filter(None, (layout.template, layout.screen_template)):
            if name != "custom" and name not in self.templates:
                error = UnknownTemplate(name, self.templates.names())
                raise ValidationFailed(str(error), field="template" if name == layout.template else "screen_template")
        sources = room.media.sources() if room.media is not None else []
        known = {p.participant_id for p in room.participants.values()} | {
            p.identity for p in room.participants.values()} | {p.name for p in room.participants.values()}
        for index, region in enumerate(layout.regions):
            if region.source is not None and region.source.participant not in known:
                raise ValidationFailed(f"regions[{index}]: participant {region.source.participant!r} is not in "
                                       "the room", code="unknown_source", field=f"regions[{index}].source")
        for field_name, file_id in [("canvas.background.image", layout.canvas.background.image),
                                    *[(f"regions[{i}].placeholder_image", r.placeholder_image)
                                      for i, r in enumerate(layout.regions)],
                                    *[(f"watermarks.images[{i}].file_id", m.file_id)
                                      for i, m in enumerate(layout.watermarks.images)]]:
            if file_id:
                try:
                    self.load_image(file_id)
                except (OSError, ValueError) as exc:
                    raise ValidationFailed(f"{field_name}: {exc}", code="bad_image", field=field_name) from exc
        try:
            if sources:
                resolve(canonical(layout, room), sources, self.templates)
        except UnknownSource as exc:
            raise ValidationFailed(str(exc), code="unknown_source", field=exc.where) from exc
        except WatermarkError as exc:
            raise ValidationFailed(str(exc), field=exc.where) from exc

    def layout_changed(self, room: Room) -> None:
        if room.media is not None:
            room.media.refresh()

    async def release(self, room: Room) -> None:
        media, room.media = room.media, None
        if media is not None:
            await asyncio.to_thread(media.close)

    async def shutdown(self) -> None:
        for room in self.node.rooms.list():
            await self.release(room)

    def retire(self, stats: dict[str, Any]) -> None:
        for key in self.retired:
            self.retired[key] += int(stats.get(key, 0))

    def stats(self) -> dict[str, Any]:
        """Running compositions, and frames rendered/skipped since the node started (all of them)."""
        composites = [h.composition.stats() for room in self.node.rooms.list() if room.media is not None
                      for h in room.media.composites.values()]
        return {"compositions": len(composites),
                "frames_rendered": self.retired["frames_rendered"] + sum(s["frames_rendered"] for s in composites),
                "frames_skipped": self.retired["frames_skipped"] + sum(s["frames_skipped"] for s in composites)}
