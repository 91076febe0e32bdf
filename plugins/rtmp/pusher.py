"""One CDN URL of a push: its sender thread and its state machine (the seed's relay states).

    idle -> connecting -> running -> disconnecting -> idle          (start, stop)
                          running -> recovering -> running          (reconnected)
                          running -> recovering -> failure -> idle  (window passed)
            connecting -> failure -> idle                           (never answered)

Reconnects back off (0.5 s doubling to 5 s) for ``reconnect_window_s``. Every change is
reported through ``report(url, state, **data)`` from this thread; the runner turns reports
into ``egress.status`` events in order, and re-reports connecting/recovering periodically.
"""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

import structlog

from gateway.media.track import CodecInfo
from plugins.rtmp import flv
from plugins.rtmp.client import PushError, RtmpPublishClient
from plugins.rtmp.pushqueue import Item, PushQueue

log = structlog.get_logger(__name__)

IDLE, CONNECTING, RUNNING, RECOVERING, FAILURE, DISCONNECTING = (
    "idle", "connecting", "running", "recovering", "failure", "disconnecting")
STATE_CODES = {IDLE: 0, CONNECTING: 1, RUNNING: 2, RECOVERING: 3, FAILURE: 4, DISCONNECTING: 5}
Report = Callable[..., None]


class StreamFormat:
    """How a source's packets become FLV tag bodies: sequence headers and AVCC conversion."""

    def __init__(self, video: CodecInfo | None, audio: CodecInfo | None, fps: int | None = None) -> None:
        self.video = video
        self.audio = audio
        self.fps = fps
        self.avcc_in = bool(video and flv.is_avcc_config(video.extradata))
        self.video_config = None
        if video is not None:
            if not video.extradata:
                raise ValueError("the H.264 source has no parameter sets (extradata)")
            self.video_config = video.extradata if self.avcc_in else flv.avcc_from_annexb(video.extradata)

    def metadata(self) -> dict[str, Any]:
        meta: dict[str, Any] = {"duration": 0.0, "encoder": "mediagate"}
        if self.video is not None:
            meta.update(videocodecid=7.0)
            if self.video.width and self.video.height:
                meta.update(width=float(self.video.width), height=float(self.video.height))
            if self.fps:
                meta["framerate"] = float(self.fps)
            if self.video.bit_rate:
                meta["videodatarate"] = self.video.bit_rate / 1000
        if self.audio is not None:
            meta.update(audiocodecid=10.0, audiosamplerate=float(self.audio.sample_rate or 48000),
                        stereo=(self.audio.channels or 2) == 2)
        return meta

    def video_data(self, payload: bytes) -> bytes:
        return payload if self.avcc_in else flv.annexb_to_avcc(payload)


class UrlPusher(threading.Thread):
    def __init__(self, url: str, fmt: StreamFormat, report: Report, *, window_s: float, connect_timeout: float,
                 send_timeout: float, queue_packets: int, on_connected: Callable[[], None] | None = None,
                 tls: ssl.SSLContext | None = None) -> None:
        super().__init__(name=f"rtmp-push-{url[:40]}", daemon=True)
        self.url = url
        self.fmt = fmt
        self.report = report
        self.window_s = window_s
        self.connect_timeout = connect_timeout
        self.send_timeout = send_timeout
        self.queue = PushQueue(queue_packets, has_video=fmt.video is not None)
        self.on_connected = on_connected
        self.tls = tls
        self.state = IDLE
        self.since = time.monotonic()
        self.reconnects = 0
        self.packets_sent = 0
        self.bytes_sent = 0
        self.last_error: dict[str, Any] | None = None
        self.failed = False  # ended in failure (the window ran out, or a bug): the thread is done
        self._stopping = threading.Event()
        self._client: RtmpPublishClient | None = None
        self._origin: float | None = None
        self._accepting = False  # between a connect and the connection's end
        self._next_fmt: StreamFormat | None = None  # a re-published source: new sequence headers
        self._last_ts = 0

    # ------------------------------------------------------------------ control (any thread)
    def offer(self, item: Item) -> None:
        if self._accepting:
            self.queue.put(item)

    def switch_source(self, fmt: StreamFormat) -> None:
        """The source was published again (new parameter sets, timestamps from 0): the next
        packet goes out after new sequence headers, continuing this connection's timeline."""
        self._next_fmt = fmt

    def stop(self) -> None:
        """Ask the thread to end; a send blocked on a stalled CDN fails at once."""
        self._stopping.set()
        self.queue.wake()
        client = self._client
        if client is not None:
            client.abort()

    def info(self) -> dict[str, Any]:
        return {"url": self.url, "state": self.state, "state_code": STATE_CODES[self.state],
                "reconnects": self.reconnects, "packets_sent": self.packets_sent, "bytes_sent": self.bytes_sent,
                "dropped": self.queue.dropped, "error": self.last_error}

    # ------------------------------------------------------------------ the thread
    def _set(self, state: str, **data: Any) -> None:
        self.state = state
        self.since = time.monotonic()
        self.report(self.url, state, **data)

    def run(self) -> None:
        self._set(CONNECTING)
        window_start = time.monotonic()
        attempt = 0
        while not self._stopping.is_set():
            try:
                self._connect()
                if self._stopping.is_set():
                    break
                attempt = 0
                self.last_error = None
                self._set(RUNNING)
                self._send_loop()
            except PushError as exc:
                self._close_client(polite=False)
                if self._stopping.is_set():
                    break
                self.last_error = {"code": exc.code, "message": str(exc)}
                log.info("rtmp push interrupted", url=safe_url(self.url), code=exc.code, error=str(exc))
                if self.state == RUNNING:
                    window_start = time.monotonic()
                    self._set(RECOVERING, errcode=exc.code, reason=str(exc))
                if time.monotonic() - window_start >= self.window_s:
                    self.failed = True
                    self._set(FAILURE, errcode=exc.code, reason=str(exc))
                    self._set(IDLE)
                    return
                delay = min(5.0, 0.5 * 2 ** attempt)
                attempt += 1
                self.reconnects += 1
                left = self.window_s - (time.monotonic() - window_start)
                self._stopping.wait(max(0.05, min(delay, left)))
            except Exception as exc:  # a bug must not leave the URL in a state that lies
                log.exception("rtmp push failed", url=safe_url(self.url))
                self._close_client(polite=False)
                self.last_error = {"code": 2003, "message": str(exc)}
                self.failed = True
                self._set(FAILURE, errcode=2003, reason=str(exc))
                self._set(IDLE)
                return
        self._set(DISCONNECTING)
        self._close_client(polite=True)
        self._set(IDLE)

    def _connect(self) -> None:
        client = RtmpPublishClient(self.url, connect_timeout=self.connect_timeout, send_timeout=self.send_timeout,
                                   tls=self.tls)
        self._client = client
        if self._stopping.is_set():
            raise PushError(2001, "stopped")
        client.connect()
        client.send_metadata(self.fmt.metadata())
        if self.fmt.video_config is not None:
            client.send_video(0, flv.video_body(True, "config", 0, self.fmt.video_config))
        if self.fmt.audio is not None and self.fmt.audio.extradata:
            client.send_audio(0, flv.audio_body("config", self.fmt.audio.extradata))
        self._origin = None
        self._last_ts = 0
        self._next_fmt = None
        self.queue.restart()
        self._accepting = True
        if self.on_connected is not None:
            self.on_connected()  # a composite encodes a keyframe now rather than at the GOP's end

    def _send_loop(self) -> None:
        client = self._client
        assert client is not None
        fmt = self.fmt
        while not self._stopping.is_set():
            item = self.queue.get(timeout=0.25)
            client.poll()
            if item is None:
                continue
            if self._next_fmt is not None:
                fmt, self.fmt, self._next_fmt = self._next_fmt, self._next_fmt, None
                if fmt.video_config is not None:
                    client.send_video(self._last_ts, flv.video_body(True, "config", 0, fmt.video_config))
                if fmt.audio is not None and fmt.audio.extradata:
                    client.send_audio(self._last_ts, flv.audio_body("config", fmt.audio.extradata))
                self._origin = item.dts_s - (self._last_ts + 40) / 1000
            if self._origin is None:
                self._origin = item.dts_s
            ts = round((item.dts_s - self._origin) * 1000)
            if ts < 0:
                continue  # audio from just before the first keyframe
            packet = item.packet
            payload = bytes(packet)
            if item.kind == "video":
                cts = 0
                if packet.pts is not None and packet.dts is not None and packet.time_base is not None:
                    cts = round((packet.pts - packet.dts) * packet.time_base * 1000)
                client.send_video(ts, flv.video_body(item.keyframe, "frame", cts, fmt.video_data(payload)))
            else:
                client.send_audio(ts, flv.audio_body("frame", payload))
            self.packets_sent += 1
            self.bytes_sent = client.bytes_out
            self._last_ts = max(self._last_ts, ts)

    def _close_client(self, polite: bool) -> None:
        self._accepting = False
        client, self._client = self._client, None
        if client is not None:
            if polite:
                client.close()
            else:
                client.abort()


def safe_url(url: str) -> str:
    """A URL for logs: the stream name (often a CDN secret) cut short."""
    head, _, tail = url.rpartition("/")
    return f"{head}/{tail[:4]}…" if tail else url
