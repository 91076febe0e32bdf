"""Encoded media fanned out to many WebRTC senders.

A :class:`PacketFeed` reads one track's packets on its own thread (the subscription queue
is a thread queue) and hands each to every attached :class:`PacketTrack` on the event loop.
Video goes out as Annex-B with SPS/PPS before each IDR, converted once per feed, not per
viewer. A viewer attaching mid-GOP drops packets until the next keyframe and asks for one
at once (the shared encoder coalesces and rate-bounds those requests; a forwarded publisher
gets an RTCP PLI).
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from typing import Any

import av
import structlog
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from gateway.media.track import PacketSubscription, Track
from plugins.webrtc.bitstream import AnnexBWriter

log = structlog.get_logger(__name__)
VIEWER_QUEUE = 256


class PacketTrack(MediaStreamTrack):
    """What an RTCRtpSender reads: packets as they come (the feed is live, so it paces itself)."""

    def __init__(self, kind: str, feed: PacketFeed) -> None:
        super().__init__()
        self.kind = kind
        self.feed = feed
        self.queue: asyncio.Queue[av.Packet | None] = asyncio.Queue(VIEWER_QUEUE)
        self.waiting_keyframe = kind == "video"
        self.sent = 0
        self.dropped = 0
        self.first_packet_at: float | None = None

    def offer(self, packet: av.Packet) -> None:
        if self.waiting_keyframe:
            if not packet.is_keyframe:
                self.dropped += 1
                return
            self.waiting_keyframe = False
        try:
            self.queue.put_nowait(packet)
        except asyncio.QueueFull:  # a viewer behind by seconds: drop to the next keyframe
            self.dropped += 1
            if self.kind == "video":
                self.waiting_keyframe = True
                self.feed.request_keyframe()

    async def recv(self) -> av.Packet:
        if self.readyState != "live":
            raise MediaStreamError
        packet = await self.queue.get()
        if packet is None:
            self.stop()
            raise MediaStreamError
        if self.first_packet_at is None:
            self.first_packet_at = asyncio.get_running_loop().time()
        self.sent += 1
        return packet

    def end(self) -> None:
        try:
            self.queue.put_nowait(None)
        except asyncio.QueueFull:
            self.queue.get_nowait()
            self.queue.put_nowait(None)

    def stop(self) -> None:
        super().stop()
        self.feed.detach(self)


class PacketFeed:
    """One source track's packets → many PacketTracks."""

    def __init__(self, loop: asyncio.AbstractEventLoop, track: Track, subscription: PacketSubscription, *,
                 request_keyframe: Callable[[], None] | None = None,
                 on_idle: Callable[[PacketFeed], None] | None = None, gate: Callable[[], bool] | None = None) -> None:
        self.loop = loop
        self.track = track
        self.subscription = subscription
        self._request_keyframe = request_keyframe
        self._on_idle = on_idle
        self._gate = gate  # False while the source is muted: nothing is forwarded
        self.kind = track.kind.value
        self.viewers: tuple[PacketTrack, ...] = ()
        self.writer = AnnexBWriter(track.codec.extradata if track.codec else None) \
            if track.codec and track.codec.name == "h264" else None
        self.packets = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"feed-{track.track_id}", daemon=True)
        self._thread.start()

    def attach(self) -> PacketTrack:
        viewer = PacketTrack(self.kind, self)
        self.viewers = (*self.viewers, viewer)
        if self.kind == "video":
            self.request_keyframe()
        return viewer

    def detach(self, viewer: PacketTrack) -> None:
        if viewer in self.viewers:
            self.viewers = tuple(v for v in self.viewers if v is not viewer)
            if not self.viewers and self._on_idle is not None:
                self._on_idle(self)

    def request_keyframe(self) -> None:
        if self._request_keyframe is not None:
            self._request_keyframe()

    def _run(self) -> None:
        muted = False
        while not self._stop.is_set():
            try:
                packet = self.subscription.get(timeout=0.5)
            except queue.Empty:
                continue
            if packet is None:  # the source track ended
                self.loop.call_soon_threadsafe(self._ended)
                return
            if self._gate is not None and not self._gate():
                muted = True
                continue
            if muted and self.kind == "video":
                muted = False
                self.loop.call_soon_threadsafe(self._resync)
            if self.writer is not None:
                packet = self.writer.convert(packet)
            self.packets += 1
            try:
                self.loop.call_soon_threadsafe(self._fan_out, packet)
            except RuntimeError:  # loop closed during shutdown
                return

    def _fan_out(self, packet: av.Packet) -> None:
        for viewer in self.viewers:
            viewer.offer(packet)

    def _resync(self) -> None:
        for viewer in self.viewers:
            viewer.waiting_keyframe = True
        self.request_keyframe()

    def _ended(self) -> None:
        for viewer in self.viewers:
            viewer.end()

    def close(self) -> None:
        self._stop.set()
        self.track.unsubscribe(self.subscription)
        self._ended()

    def stats(self) -> dict[str, Any]:
        return {"track": self.track.track_id, "codec": self.track.codec.name if self.track.codec else None,
                "packets": self.packets, "viewers": len(self.viewers)}
