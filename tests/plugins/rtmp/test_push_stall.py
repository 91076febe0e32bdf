"""A CDN that accepts the publish and then stops reading: the URL's sends are bounded by
``send_timeout`` (what PyAV's FLV muxer cannot do: its ``mux()`` blocks as long as the server
stalls), the URL goes recovering, and the feeding side never waits."""

from __future__ import annotations

import asyncio
import time
from fractions import Fraction
from types import SimpleNamespace

import av

from gateway.media.track import CodecInfo
from plugins.rtmp.config import RtmpConfig
from plugins.rtmp.pusher import StreamFormat, UrlPusher
from plugins.rtmp.pushqueue import Item
from plugins.rtmp.server import RtmpServer

AUDIO = CodecInfo("aac", Fraction(1, 48000), sample_rate=48000, channels=2, extradata=b"\x11\x90")


class _Stalling:
    """A publisher stand-in whose server side stops reading once the publish starts."""

    def __init__(self, connection) -> None:
        self.connection = connection
        self.stream_id = 1
        connection.writer.transport.pause_reading()

    def on_metadata(self, meta) -> None:
        pass

    async def end(self, reason: str) -> None:
        pass


async def test_stalled_cdn_is_bounded_by_the_send_timeout() -> None:
    async def authorize(key: str, connection) -> _Stalling:
        return _Stalling(connection)

    server = RtmpServer(RtmpConfig(host="127.0.0.1", port=0, idle_timeout_s=60), authorize)
    await server.start()
    reports: list[tuple[str, float]] = []
    pusher = UrlPusher(f"rtmp://127.0.0.1:{server.port}/live/stall", StreamFormat(None, AUDIO),
                       lambda url, state, **data: reports.append((state, time.monotonic())), window_s=30,
                       connect_timeout=5, send_timeout=0.5, queue_packets=64)
    pusher.start()
    try:
        deadline = time.monotonic() + 30
        while not any(s == "running" for s, _ in reports) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        payload = bytes(200_000)
        offered = 0
        while not any(s == "recovering" for s, _ in reports) and time.monotonic() < deadline:
            started = time.monotonic()
            pusher.offer(Item("audio", av.Packet(payload), offered * 0.02, True))
            assert time.monotonic() - started < 0.05  # offering never blocks, whatever the CDN does
            offered += 1
            await asyncio.sleep(0.002)
        states = [s for s, _ in reports]
        assert states[:3] == ["connecting", "running", "recovering"], states
        assert pusher.last_error is not None and pusher.last_error["code"] == 3  # timed out
    finally:
        pusher.stop()
        await asyncio.to_thread(pusher.join, 10)
        await server.stop()
    assert not pusher.is_alive() and [s for s, _ in reports][-2:] == ["disconnecting", "idle"]


def test_config_defaults_match_the_seed() -> None:
    config = RtmpConfig()
    assert (config.port, config.reconnect_window_s, config.report_interval_s) == (1935, 60, 5)
    assert SimpleNamespace(**config.model_dump()).app == "live"
