"""Encoded frames out of aiortc without decoding them.

aiortc's ``RTCRtpReceiver`` reassembles RTP into whole encoded frames (its jitter buffer)
and hands them to ``decoder_worker`` on a thread, which decodes them into the remote
track's queue. For the gateway's receivers we run :func:`packet_worker` instead: each
encoded frame becomes an ``av.Packet`` (timestamps on the RTP clock, keyframes flagged) and
goes straight to a sink — the gateway :class:`Track`, which forwards packets as they are and
decodes once only when someone needs pixels or samples. For a receiver registered before it
starts, the frames are handed to the sink on the event loop as the jitter buffer completes
them (:class:`InlineFrames`: the sink only queues, so no thread hop is needed), and its DTLS
transport's SRTP goes through :mod:`plugins.webrtc.fastpath`; its VP8 skips aiortc's RTP
objects and jitter buffer altogether (:mod:`plugins.webrtc.vp8_receiver`). Receivers not registered here
(a test's own aiortc client in the same process) keep aiortc's decoder.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import weakref
from collections.abc import Callable
from fractions import Fraction
from typing import Any

import aiortc.rtcrtpreceiver as rtcrtpreceiver
import av

from plugins.webrtc import fastpath, rtp_receive, vp8_receiver
from plugins.webrtc.bitstream import h264_is_keyframe, vp8_is_keyframe

# (ffmpeg codec name, packet) -> whether the publisher should send a keyframe (RTCP PLI);
# called on the worker thread
Sink = Callable[[str, av.Packet], bool]

_original_worker = rtcrtpreceiver.decoder_worker
_original_receive = rtcrtpreceiver.RTCRtpReceiver.receive
_sinks: weakref.WeakKeyDictionary[Any, Sink] = weakref.WeakKeyDictionary()
_lock = threading.Lock()
CODEC_NAMES = {"h264": "h264", "vp8": "vp8", "opus": "opus", "pcmu": "pcm_mulaw", "pcma": "pcm_alaw"}


def register(remote_track: Any, sink: Sink) -> None:
    """Route `remote_track`'s encoded frames to `sink` (call before the connection starts)."""
    with _lock:
        _sinks[remote_track._queue] = sink


def to_packet(codec_name: str, clock_rate: int, data: bytes, timestamp: int) -> av.Packet:
    packet = av.Packet(data)
    packet.pts = packet.dts = timestamp
    packet.time_base = Fraction(1, clock_rate)
    if codec_name == "h264":
        packet.is_keyframe = h264_is_keyframe(data)
    elif codec_name == "vp8":
        packet.is_keyframe = vp8_is_keyframe(data)
    else:
        packet.is_keyframe = True
    return packet


def deliver(sink: Sink, codec: Any, frame: Any, decode_error: threading.Event) -> None:
    """One encoded frame from aiortc's jitter buffer → the sink."""
    name = CODEC_NAMES.get(codec.name.lower())
    if name is None or not frame.data:
        return
    try:
        if sink(name, to_packet(name, codec.clockRate, frame.data, frame.timestamp)):
            decode_error.set()  # aiortc answers this with a PLI on the next RTP packet
    except Exception:  # a bad frame must not end the receiver
        decode_error.set()


class InlineFrames:
    """Stands in for a receiver's decoder queue: ``put`` delivers at once (on the loop)."""

    def __init__(self, sink: Sink, output_q: asyncio.Queue, decode_error: threading.Event) -> None:
        self.sink = sink
        self.output_q = output_q
        self.decode_error = decode_error

    def put(self, task: tuple[Any, Any] | None) -> None:
        if task is None:
            self.output_q.put_nowait(None)  # ends the remote track
            return
        deliver(self.sink, task[0], task[1], self.decode_error)


def packet_worker(loop: asyncio.AbstractEventLoop, input_q: queue.Queue, output_q: asyncio.Queue,
                  decode_error: threading.Event) -> None:
    if isinstance(input_q, InlineFrames):
        return  # nothing to do on a thread
    with _lock:
        sink = _sinks.get(output_q)
    if sink is None:
        return _original_worker(loop, input_q, output_q, decode_error)
    while True:
        task = input_q.get()
        if task is None:
            asyncio.run_coroutine_threadsafe(output_q.put(None), loop)  # ends the remote track
            return
        deliver(sink, task[0], task[1], decode_error)


async def _receive(self: Any, parameters: Any) -> None:
    with _lock:
        sink = _sinks.get(self._track._queue)
    if sink is not None and not self._RTCRtpReceiver__started:
        self._RTCRtpReceiver__decoder_queue = InlineFrames(sink, self._track._queue,
                                                           self._RTCRtpReceiver__decoder_error)
        rtp_receive.attach(self)
    await _original_receive(self, parameters)
    if sink is not None:
        fastpath.attach(self.transport)
        vp8_receiver.attach(self, sink)


def install() -> None:
    rtcrtpreceiver.decoder_worker = packet_worker
    rtcrtpreceiver.RTCRtpReceiver.receive = _receive  # type: ignore[method-assign]
    fastpath.install()
