"""Egress kind ``rtmp``: the room's composite, or one participant, pushed to up to 5 CDN URLs.

Sources:

- the composite (the room's, or the task's own layout): the shared encoder's packets, joined
  with ``subscribe_video()`` so the push starts at a keyframe at once;
- one participant whose tracks are H.264/AAC packets (an RTMP or WHIP publisher): passthrough,
  the packets go out untouched and no encoder runs;
- one participant with anything else: a private single-participant composite, transcoded.

One feeder thread reads the source and hands each packet to every URL's bounded queue; each URL
has its own sender thread (:mod:`plugins.rtmp.pusher`). Nothing a CDN does reaches the feeder,
the composite or another URL.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import av
import structlog

from gateway import events as ev
from gateway.egress import EgressRequest, EgressUpdate, ParticipantSource
from gateway.errors import Unprocessable, ValidationFailed
from gateway.media.engine import ROOM_COMPOSITE
from gateway.media.layout.model import AudioSelection, Layout, Region, SourceRef
from gateway.media.track import PacketSubscription, Track, TrackKind
from plugins.rtmp.client import parse_url, tls_context
from plugins.rtmp.pusher import CONNECTING, IDLE, RECOVERING, STATE_CODES, StreamFormat, UrlPusher, safe_url
from plugins.rtmp.pushqueue import Item

if TYPE_CHECKING:
    from gateway.media.composition import EncodedOutput
    from gateway.media.engine import RoomMedia
    from gateway.node import Node
    from gateway.rooms.room import Room
    from gateway.tasks import Task
    from plugins.rtmp.config import RtmpConfig

log = structlog.get_logger(__name__)
MAX_URLS = 5
REORDER_S = 0.3  # audio and video are interleaved by timestamp within this window


def validate_urls(urls: list[str], field: str = "urls") -> None:
    if not urls:
        raise ValidationFailed("an RTMP push needs at least one URL", field=field)
    if len(urls) > MAX_URLS:
        raise ValidationFailed(f"at most {MAX_URLS} URLs per push", field=field)
    if len(set(urls)) != len(urls):
        raise ValidationFailed("a URL is listed twice", field=field)
    for index, url in enumerate(urls):
        try:
            parse_url(url)
        except ValueError as exc:
            raise ValidationFailed(str(exc), code="bad_url", field=f"{field}[{index}]") from exc


def single_participant_layout(base: Layout, participant_id: str) -> Layout:
    """One participant filling the canvas, hearing only them (a transcoded single-stream push)."""
    region = Region(source=SourceRef(participant=participant_id), x=0, y=0, w=1, h=1, units="fraction")
    return base.model_copy(update={"template": "custom", "regions": [region], "screen_template": None,
                                   "audio": AudioSelection(participants=[participant_id])})


def passthrough_tracks(media: RoomMedia, participant_id: str) -> tuple[Track | None, Track | None] | None:
    """The participant's H.264 and AAC packet tracks, when everything it publishes is such."""
    video = media.bus.find(participant_id, TrackKind.VIDEO)
    audio = media.bus.find(participant_id, TrackKind.AUDIO)
    if video is None and audio is None:
        return None
    if video is not None and (video.codec is None or video.codec.name != "h264" or not video.codec.extradata):
        return None
    if audio is not None and (audio.codec is None or audio.codec.name != "aac" or not audio.codec.extradata):
        return None
    return video, audio


class Feeder(threading.Thread):
    """Reads the source's packet subscriptions, interleaves them by timestamp, fans them out."""

    def __init__(self, video: PacketSubscription | None, audio: PacketSubscription | None,
                 on_ended: Callable[[], None] | None = None) -> None:
        super().__init__(name="rtmp-push-feed", daemon=True)
        self.on_ended = on_ended
        self.subs = {k: s for k, s in (("video", video), ("audio", audio)) if s is not None}
        self.pushers: tuple[UrlPusher, ...] = ()
        self._pending: dict[str, deque[Item]] = {k: deque() for k in self.subs}
        self._ended: set[str] = set()
        self._stopping = threading.Event()
        self.packets = 0

    def stop(self) -> None:
        self._stopping.set()
        if self.is_alive():
            self.join(timeout=5)

    def run(self) -> None:
        # blocks on the video queue (a wake-up per frame) and drains audio at each wake-up;
        # audio-only blocks on audio. No busy polling.
        primary = "video" if "video" in self.subs else "audio"
        while not self._stopping.is_set() and len(self._ended) < len(self.subs):
            if primary not in self._ended:
                with contextlib.suppress(queue.Empty):
                    self._take(primary, self.subs[primary].get(timeout=0.1))
            else:
                self._stopping.wait(0.1)
            self._pull()
            self._flush()
        if not self._stopping.is_set() and self.on_ended is not None:
            self.on_ended()  # the source's tracks ended (its publisher left)

    def _take(self, kind: str, packet: av.Packet | None) -> None:
        if packet is None:
            self._ended.add(kind)
            return
        stamp = packet.dts if packet.dts is not None else packet.pts
        if stamp is None or packet.time_base is None:
            return
        self._pending[kind].append(Item(kind, packet, float(stamp * packet.time_base), packet.is_keyframe))

    def _pull(self) -> None:
        for kind, sub in self.subs.items():
            while kind not in self._ended:
                try:
                    packet = sub.get(timeout=0)
                except queue.Empty:
                    break
                self._take(kind, packet)

    def _flush(self) -> None:
        while True:
            heads = {k: q[0] for k, q in self._pending.items() if q}
            if not heads:
                return
            kind = min(heads, key=lambda k: heads[k].dts_s)
            item = heads[kind]
            waiting = [k for k in self.subs if k not in heads and k not in self._ended]
            if waiting and self._pending[kind][-1].dts_s - item.dts_s < REORDER_S:
                return
            self._pending[kind].popleft()
            self.packets += 1
            for pusher in self.pushers:
                pusher.offer(item)


class RtmpPushRunner:
    def __init__(self, node: Node, config: RtmpConfig, task: Task, media: RoomMedia, *, key: str | None,
                 output: EncodedOutput | None, video: Track | None, audio: Track | None, mode: str,
                 identity: str | None = None) -> None:
        self.node = node
        self.config = config
        self.task = task
        self.media = media
        self.key = key
        self.output = output
        self.mode = mode
        self.identity = identity  # passthrough: follow this publisher when it publishes again
        self.loop = asyncio.get_running_loop()
        self.pushers: dict[str, UrlPusher] = {}
        self._stopped = False
        self._failing: asyncio.Task[None] | None = None
        self._final: dict[str, Any] | None = None
        self._follow: asyncio.Task[None] | None = None
        self._subscribe(video, audio)
        self._reports: asyncio.Queue[tuple[str, str, dict[str, Any]] | None] = asyncio.Queue()
        self._reporter = self.loop.create_task(self._report_loop(), name=f"rtmp-push-report-{task.task_id}")
        self._rereporter = self.loop.create_task(self._rereport_loop(), name=f"rtmp-push-rereport-{task.task_id}")
        self.started_at = time.time()

    def _subscribe(self, video: Track | None, audio: Track | None) -> None:
        output = self.output
        fps = output.encoding.fps if output is not None else None
        self.fmt = StreamFormat(video.codec if video else None, audio.codec if audio else None, fps)
        self._video_sub = None
        if video is not None:
            self._video_sub = output.subscribe_video() if output is not None else video.subscribe_packets(
                from_keyframe=True)
        self._audio_sub = audio.subscribe_packets() if audio is not None else None
        self._tracks = (video, audio)
        on_ended = (lambda: self.loop.call_soon_threadsafe(self._source_ended)) if self.identity else None
        self.feeder = Feeder(self._video_sub, self._audio_sub, on_ended)
        self.feeder.pushers = tuple(self.pushers.values())
        self.feeder.start()

    # ------------------------------------------------------------------ a passthrough source
    def _source_ended(self) -> None:
        if self._stopped or self._follow is not None:
            return
        self.node.events.emit(ev.EGRESS_STATUS, self.task.room_id, egress_id=self.task.task_id,
                              status=self.task.status, source="lost", participant=self.identity)
        self._follow = self.loop.create_task(self._follow_source(), name=f"rtmp-push-follow-{self.task.task_id}")

    async def _follow_source(self) -> None:
        """Wait for the participant to publish again (a re-connected OBS) and go on pushing it
        on the same CDN connections, with its new sequence headers."""
        kinds = {t.kind for t in self._tracks if t is not None}
        old = {t.track_id for t in self._tracks if t is not None}
        try:
            while not self._stopped:
                await asyncio.sleep(0.25)
                room = self.node.rooms.rooms.get(self.task.room_id)
                if room is None or room.media is None:
                    continue
                found = None
                for participant in room.participants.values():
                    if participant.identity == self.identity:
                        found = passthrough_tracks(room.media, participant.participant_id)
                if found is None:
                    continue
                video, audio = found
                if TrackKind.VIDEO not in kinds:
                    video = None
                have = {t.kind for t in (video, audio) if t is not None}
                if have != kinds or {t.track_id for t in (video, audio) if t is not None} & old:
                    continue
                await asyncio.to_thread(self.feeder.stop)
                self.media = room.media
                self._subscribe(video, audio)
                for pusher in self.pushers.values():
                    pusher.switch_source(self.fmt)
                self.node.events.emit(ev.EGRESS_STATUS, self.task.room_id, egress_id=self.task.task_id,
                                      status=self.task.status, source="resumed", participant=self.identity)
                return
        finally:
            self._follow = None

    # ------------------------------------------------------------------ URLs
    def start_urls(self, urls: list[str]) -> None:
        for url in urls:
            pusher = UrlPusher(url, self.fmt, self._report, window_s=self.config.reconnect_window_s,
                               connect_timeout=self.config.connect_timeout_s, send_timeout=self.config.send_timeout_s,
                               queue_packets=self.config.push_queue_packets, tls=self._tls(url),
                               on_connected=self.output.request_keyframe if self.output is not None else None)
            self.pushers[url] = pusher
            pusher.start()
        self._publish_pushers()

    def _tls(self, url: str) -> ssl.SSLContext | None:
        if not url.startswith("rtmps://"):
            return None
        return tls_context(self.config.tls_ca_file, self.config.tls_verify)

    def _publish_pushers(self) -> None:
        self.feeder.pushers = tuple(self.pushers.values())
        self._outputs()

    async def _stop_urls(self, urls: list[str]) -> None:
        stopping = [self.pushers.pop(url) for url in urls if url in self.pushers]
        self._publish_pushers()
        for pusher in stopping:
            pusher.stop()
        await asyncio.to_thread(_join_all, stopping)

    # ------------------------------------------------------------------ reports
    def _report(self, url: str, state: str, **data: Any) -> None:
        """From a sender thread: queue the change; the loop emits them in order."""
        self.loop.call_soon_threadsafe(self._reports.put_nowait, (url, state, data))

    async def _report_loop(self) -> None:
        while True:
            item = await self._reports.get()
            if item is None:
                return
            url, state, data = item
            self._outputs()
            try:
                await self.node.egress.set_status(self.task, self.task.status, url=url, state=state,
                                                  state_code=STATE_CODES[state], **data)
            except Exception:
                log.exception("push status report failed", egress_id=self.task.task_id)
            pushers = list(self.pushers.values())
            if (state == IDLE and pushers and all(p.failed for p in pushers) and not self._stopped
                    and self._failing is None):
                # nothing left to push to: the task ends (stop() awaits this loop, so not from here)
                self._failing = self.loop.create_task(self._end_failed(),
                                                      name=f"rtmp-push-failed-{self.task.task_id}")

    async def _end_failed(self) -> None:
        message = "every URL ended in failure: " + "; ".join(
            f"{safe_url(p.url)}: {(p.last_error or {}).get('message', 'failed')}" for p in self.pushers.values())
        log.warning("rtmp push failed on every URL, ending it", egress_id=self.task.task_id, urls=len(self.pushers))
        try:
            self.task.result.update(await self.stop())
        finally:
            await self.node.egress.fail(self.task, "all_urls_failed", message)

    async def _rereport_loop(self) -> None:
        """The seed's callbacks: connecting and recovering are re-sent every interval, up to the window."""
        interval = self.config.report_interval_s
        last: dict[str, float] = {}
        while True:
            await asyncio.sleep(min(1.0, interval / 2))
            self._outputs()  # counters for GET /v1/egress/{id}
            now = time.monotonic()
            for pusher in list(self.pushers.values()):
                if pusher.state not in (CONNECTING, RECOVERING):
                    continue
                since = max(pusher.since, last.get(pusher.url, 0.0))
                if now - pusher.since < self.config.reconnect_window_s and now - since >= interval:
                    last[pusher.url] = now
                    self._reports.put_nowait((pusher.url, pusher.state, {"repeat": True,
                                                                         "seconds": round(now - pusher.since, 1)}))

    def _outputs(self) -> None:
        self.task.result["outputs"] = [p.info() for p in self.pushers.values()]

    # ------------------------------------------------------------------ EgressRunner
    async def update(self, patch: EgressUpdate) -> None:
        if patch.urls is not None:
            validate_urls(patch.urls)
        if patch.layout is not None or patch.audio is not None:
            await self._relayout(patch.layout, patch.audio)
        if patch.urls is not None:
            wanted = list(dict.fromkeys(patch.urls))
            await self._stop_urls([u for u in self.pushers if u not in wanted])
            self.start_urls([u for u in wanted if u not in self.pushers])

    async def _relayout(self, layout: Layout | None, audio: AudioSelection | None) -> None:
        """A new picture (or audio selection) from the next frame on, on the same connections."""
        if self.key is None:
            raise Unprocessable("a passthrough push has no layout: it forwards the participant as it is",
                                code="passthrough_has_no_layout", field="layout")
        layout = layout or self.media.composites[self.key].layout
        if audio is not None:
            layout = layout.model_copy(update={"audio": audio})
        if self.key == ROOM_COMPOSITE:
            # other outputs share the room's composite: this push moves to a composite of its own
            await self._move_to_own_composite(layout)
        else:
            self.media.set_composite_layout(self.key, layout)

    async def _move_to_own_composite(self, layout: Layout) -> None:
        """Attach a private composite with the same encoding and switch the CDN connections to
        it (new sequence headers; the room clock keeps the timeline), then release the room's."""
        assert self.output is not None and self.key is not None
        key = f"egress:{self.task.task_id}"
        _handle, output = await asyncio.to_thread(self.media.attach, key, layout, self.output.encoding)
        old_key, old_output = self.key, self.output
        await asyncio.to_thread(self.feeder.stop)
        for track, sub in zip(self._tracks, (self._video_sub, self._audio_sub), strict=True):
            if track is not None and sub is not None:
                track.unsubscribe(sub)
        self.key, self.output = key, output
        self._subscribe(output.video_track if self._tracks[0] is not None else None, output.audio_track)
        for pusher in self.pushers.values():
            pusher.on_connected = output.request_keyframe
            pusher.switch_source(self.fmt)
        await asyncio.to_thread(self.media.detach, old_key, old_output)

    async def stop(self) -> dict[str, Any]:
        if self._final is not None:  # ended on failure already, and now a DELETE or the room closing
            return self._final
        self._stopped = True
        if self._follow is not None:
            self._follow.cancel()
        await self._stop_urls(list(self.pushers))
        await asyncio.to_thread(self.feeder.stop)
        for track, sub in zip(self._tracks, (self._video_sub, self._audio_sub), strict=True):
            if track is not None and sub is not None:
                track.unsubscribe(sub)
        if self.output is not None and self.key is not None:
            await asyncio.to_thread(self.media.detach, self.key, self.output)
        self._rereporter.cancel()
        self._reports.put_nowait(None)
        await self._reporter  # every state change is out before the task's final status
        self._final = {"outputs": self.task.result.get("outputs", []), "mode": self.mode,
                       "packets": self.feeder.packets, "duration_s": round(time.time() - self.started_at, 3)}
        return self._final


def _join_all(pushers: list[UrlPusher]) -> None:
    for pusher in pushers:
        pusher.join(timeout=10)


class RtmpPushKind:
    name = "rtmp"

    def __init__(self, config: RtmpConfig) -> None:
        self.config = config

    def validate(self, request: EgressRequest, node: Node) -> None:
        validate_urls(request.urls)
        if request.record is not None:
            raise ValidationFailed("an RTMP push takes no record options", field="record")

    async def start(self, task: Task, request: EgressRequest, room: Room, node: Node) -> RtmpPushRunner:
        media = node.media.room_media(room)
        audio_only = bool(getattr(request, "audio_only", False))
        layout = request.layout
        key = ROOM_COMPOSITE if layout is None and request.audio is None else f"egress:{task.task_id}"
        if isinstance(request.source, ParticipantSource):
            participant = node.rooms.participant(room, request.source.participant)
            found = passthrough_tracks(media, participant.participant_id)
            if found is not None and request.layout is None and request.audio is None:
                video, audio = found
                if audio_only:
                    video = None
                if video is None and audio is None:
                    raise Unprocessable("the participant publishes no audio", code="no_audio", field="audio_only")
                runner = RtmpPushRunner(node, self.config, task, media, key=None, output=None, video=video,
                                        audio=audio, mode="passthrough", identity=participant.identity)
                return self._launch(task, runner, request)
            layout = single_participant_layout(layout or node.media.room_layout(room), participant.participant_id)
            key = f"egress:{task.task_id}"
        if request.audio is not None:
            layout = (layout or node.media.room_layout(room)).model_copy(update={"audio": request.audio})
        # opening x264 takes tens of milliseconds: keep it off the event loop
        _handle, output = await asyncio.to_thread(media.attach, key, layout, request.encoding)
        try:
            video = None if audio_only else output.video_track
            runner = RtmpPushRunner(node, self.config, task, media, key=key, output=output, video=video,
                                    audio=output.audio_track, mode="transcode" if key.startswith("egress:") and
                                    isinstance(request.source, ParticipantSource) else "composite")
        except Exception:
            await asyncio.to_thread(media.detach, key, output)
            raise
        return self._launch(task, runner, request)

    @staticmethod
    def _launch(task: Task, runner: RtmpPushRunner, request: EgressRequest) -> RtmpPushRunner:
        task.result.update(mode=runner.mode)
        runner.start_urls(list(request.urls))
        log.info("rtmp push started", egress_id=task.task_id, mode=runner.mode, urls=len(request.urls))
        return runner
