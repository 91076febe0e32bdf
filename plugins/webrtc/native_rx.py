"""A publisher's VP8 received without Python per packet: :mod:`plugins.webrtc._rtpin` (C).

With the Python receive path (:mod:`plugins.webrtc.fastpath`, :mod:`plugins.webrtc.vp8_receiver`)
each datagram still costs an event-loop wake-up and a few dozen Python calls: measured at
0.016-0.024 cores for a 2.3 Mbps 720p30 VP8 publisher, a third of decoding it. Here, for a
connected publisher's ICE sockets:

- a native thread per socket (``_rtpin.Reader``, on a dup of the socket; the loop stops
  reading it) reads datagrams in batches (``recvmmsg``), SRTP/SRTCP-unprotects them with the
  connection's own libsrtp session (pylibsrtp's; the thread holds the only reference in use),
  and hands each RTP packet of a bound SSRC to its ``_rtpin.Vp8Stream``;
- a ``Vp8Stream`` (one per VP8 receiver) does :mod:`plugins.webrtc.vp8_receiver`'s steps in C
  (statistics, RTX, NACK, REMB samples, the VP8 descriptor, :mod:`plugins.webrtc.vp8_frames`'s
  assembler) and calls :meth:`NativeVp8._events` on the reader's thread, with the GIL, only
  when there is something to act on: complete frames go to the room track's sink there (the
  sink only queues, as it did on aiortc's decoder thread); REMB's estimator runs there too;
  what must run on the loop (sending RTCP, new entries in aiortc's dicts) is posted to it;
- everything else — STUN, DTLS, RTCP (already unprotected), RTP of other receivers (Opus,
  H.264) and the first packets of an SSRC not bound yet — goes to the loop as it is, one call
  per batch, and takes the Python path from the point the C path left it.

If the module is not built, or a connection cannot be taken over (a socket that is not a
plain selector transport, datagrams still queued for aiortc), the Python path stays.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import threading
from fractions import Fraction
from typing import Any

import av
import structlog
from aiortc import clock
from aiortc.rtcrtpreceiver import StreamStatistics
from aiortc.rtp import RTCP_PSFB_APP, RtcpPsfbPacket, pack_remb_fci

from plugins.webrtc import remb
from plugins.webrtc.rtp_parse import RtpHeader, parse_header

try:
    from plugins.webrtc import _rtpin
except ImportError:  # not built: the Python path
    _rtpin = None  # type: ignore[assignment]

log = structlog.get_logger(__name__)

P = "_RTCRtpReceiver__"  # aiortc's name-mangled private attributes
VIDEO_CLOCK = Fraction(1, 90000)
READERS_ATTR = "_mediagate_readers"
_live: set[Any] = set()  # running readers (stopped at exit: a native thread must not outlive the interpreter)


class Settings:
    """``[plugins.webrtc] native_receive``, set at startup."""

    enabled = True


def available() -> bool:
    return _rtpin is not None and Settings.enabled


class _Poster:
    """Runs a call on the loop: at once when already on it, else through call_soon_threadsafe."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.thread = threading.get_ident()

    def __call__(self, fn: Any, *args: Any) -> None:
        if threading.get_ident() == self.thread:
            fn(*args)
            return
        with contextlib.suppress(RuntimeError):  # the loop is closed: the node is stopping
            self.loop.call_soon_threadsafe(fn, *args)


class NativeVp8:
    """The lean handler of one VP8 ``RTCRtpReceiver`` (as :class:`~plugins.webrtc.vp8_receiver.Vp8Receiver`,
    whose ``handle`` it also offers for packets that reach Python), backed by a ``Vp8Stream``."""

    def __init__(self, receiver: Any, sink: Any, abs_send_time_id: int | None) -> None:
        from plugins.webrtc import fastpath

        self._drive = fastpath.drive
        d = receiver.__dict__
        self.receiver = receiver
        self.sink = sink
        self.codecs: dict[int, Any] = d[P + "codecs"]
        self.streams: dict[int, StreamStatistics] = d[P + "remote_streams"]
        self.active: dict[int, Any] = d[P + "active_ssrc"]
        self.estimator = d[P + "remote_bitrate_estimator"]
        if self.estimator is not None and not isinstance(self.estimator.incoming_bitrate, remb.WindowRate):
            remb.lighten(self.estimator)
        self.mapper = d[P + "timestamp_mapper"]
        self.vp8_types = {pt for pt, c in self.codecs.items() if c.name.lower() == "vp8"}
        self.rtx_types = {pt for pt, c in self.codecs.items()
                          if c.name.lower() == "rtx" and c.parameters.get("apt") in self.vp8_types}
        self.post = _Poster(asyncio.get_running_loop())
        self.stream = _rtpin.Vp8Stream(self._events, self.vp8_types, self.rtx_types, abs_send_time_id or 0,
                                       self.estimator is not None)
        for rtx, original in d[P + "rtx_ssrc"].items():
            self.stream.set_rtx_ssrc(rtx, original)
        self.frames = self.stream  # frames_out, dropped_frames: as Vp8Receiver.frames

    def accepts(self, payload_type: int) -> bool:
        return payload_type in self.vp8_types or payload_type in self.rtx_types

    def handle(self, data: bytes, h: RtpHeader) -> bool:
        """One plaintext packet that reached Python; False if it is not VP8 (aiortc's path)."""
        if not self.accepts(h.payload_type):
            return False
        self.stream.handle(data, clock.current_ms())
        return True

    # ------------------------------------------------------------ from the stream
    def _events(self, frames: list[tuple[int, bytes, bool]] | None, rembs: list[tuple[int, int, int, int]] | None,
                nack: tuple[int, list[int]] | None, pli: int | None, stats: list[tuple[Any, ...]] | None) -> None:
        """What the stream has for Python (on the reader's thread, or on the loop)."""
        if stats:
            self._stats(stats)
        receiver = self.receiver
        if not receiver._enabled:
            return
        lost = False
        for timestamp, data, keyframe in frames or ():
            packet = av.Packet(data)
            packet.pts = packet.dts = self.mapper.map(timestamp)
            packet.time_base = VIDEO_CLOCK
            packet.is_keyframe = keyframe
            try:
                lost |= bool(self.sink("vp8", packet))
            except Exception:  # a bad frame must not end the receiver
                lost = True
        if rembs and self.estimator is not None:
            for sent, arrival, size, ssrc in rembs:
                value = self.estimator.add(abs_send_time=sent, arrival_time_ms=arrival, payload_size=size, ssrc=ssrc)
                if value is not None:
                    self.post(self._send_remb, value)
        if nack is not None:
            self.post(self._send_nack, *nack)
        if pli is not None or lost:
            ssrc = pli if pli is not None else self.stream.ssrc  # the media SSRC of the last packet
            if ssrc is not None:
                self.post(self._send_pli, ssrc)

    def _stats(self, stats: list[tuple[Any, ...]]) -> None:
        for entry in stats:
            ssrc, marker = entry[0], entry[8]
            target = self.streams.get(ssrc)
            if target is None:  # a new entry: on the loop, which iterates the dict for its reports
                self.post(self._new_stats, entry)
            else:
                _fill(target, entry)
            if marker or ssrc not in self.active:
                if ssrc in self.active:
                    self.active[ssrc] = clock.current_datetime()
                else:
                    self.post(self._set_active, ssrc)

    # ------------------------------------------------------------ on the loop
    def _new_stats(self, entry: tuple[Any, ...]) -> None:
        target = self.streams.get(entry[0])
        if target is None:
            target = self.streams[entry[0]] = StreamStatistics(90000)
            _fill(target, entry)  # complete at once: a receiver report reads every field
        elif entry[1] >= target.packets_received:
            # a later batch posted before the first had made the entry: newer, not to be lost
            # (the reader thread may meanwhile have filled a newer one itself: counts only grow)
            _fill(target, entry)

    def _set_active(self, ssrc: int) -> None:
        self.active[ssrc] = clock.current_datetime()

    def _send_remb(self, value: tuple[int, list[int]]) -> None:
        rtcp_ssrc = self.receiver.__dict__[P + "rtcp_ssrc"]
        if rtcp_ssrc is not None:
            self._drive(self.receiver._send_rtcp(RtcpPsfbPacket(fmt=RTCP_PSFB_APP, ssrc=rtcp_ssrc, media_ssrc=0,
                                                                fci=pack_remb_fci(*value))))

    def _send_nack(self, ssrc: int, missing: list[int]) -> None:
        self._drive(self.receiver._send_rtcp_nack(ssrc, missing))

    def _send_pli(self, ssrc: int) -> None:
        self._drive(self.receiver._send_rtcp_pli(ssrc))


def _fill(target: StreamStatistics, entry: tuple[Any, ...]) -> None:
    """Set aiortc's statistics from the stream's (ssrc, received, base_seq, max_seq, cycles,
    jitter_q4, last_arrival, last_timestamp, marker)."""
    (_, target.packets_received, target.base_seq, target.max_seq, target.cycles, target._jitter_q4,
     target._last_arrival, target._last_timestamp, _) = entry


# ---------------------------------------------------------------- the sockets
def _srtp_functions() -> tuple[int, int, Any]:
    from pylibsrtp._binding import ffi, lib

    return (int(ffi.cast("uintptr_t", ffi.addressof(lib, "srtp_unprotect"))),
            int(ffi.cast("uintptr_t", ffi.addressof(lib, "srtp_unprotect_rtcp"))), ffi)


class Connection:
    """The native readers of one ICE connection, and where what they pass on goes."""

    def __init__(self, dtls: Any, connection: Any) -> None:
        self.dtls = dtls
        self.connection = connection
        self.readers: list[Any] = []

    def start(self, protocols: list[Any]) -> None:
        unprotect, unprotect_rtcp, ffi = _srtp_functions()
        session = self.dtls._rx_srtp
        srtp_t = int(ffi.cast("uintptr_t", session._srtp[0]))
        for protocol in protocols:
            transport = protocol.transport
            reader = _rtpin.Reader(transport._sock_fd, unprotect, unprotect_rtcp, srtp_t, session,
                                   self._on_other(protocol))
            transport._loop._remove_reader(transport._sock_fd)  # the thread reads it now
            self._hook_close(protocol, reader)
            reader.start()
            _live.add(reader)
            self.readers.append(reader)

    def _on_other(self, protocol: Any) -> Any:
        post = _Poster(asyncio.get_running_loop())
        return lambda items, rx_bytes, rx_packets: post(self._others, protocol, items, rx_bytes, rx_packets)

    def _hook_close(self, protocol: Any, reader: Any) -> None:
        original = protocol.connection_lost

        def connection_lost(exc: Exception | None) -> None:
            stop(reader)
            original(exc)

        protocol.connection_lost = connection_lost

    def _others(self, protocol: Any, items: list[tuple[int, bytes, Any]], rx_bytes: int, rx_packets: int) -> None:
        """What a reader passed on, on the loop, in arrival order."""
        from plugins.webrtc import fastpath

        dtls = self.dtls
        dtls._RTCDtlsTransport__rx_bytes += rx_bytes
        dtls._RTCDtlsTransport__rx_packets += rx_packets
        for kind, data, addr in items:
            try:
                if kind == 0:  # not SRTP: STUN, DTLS
                    protocol.datagram_received(data, addr)
                elif kind == 1:
                    fastpath.drive(dtls._handle_rtcp_data(data))
                else:
                    self._rtp(data)
            except Exception:
                log.warning("received datagram handling failed", exc_info=True)

    def _rtp(self, data: bytes) -> None:
        from plugins.webrtc import fastpath

        header = parse_header(data)
        dtls = self.dtls
        if header is not None:
            router = dtls._rtp_router
            receiver = router.ssrc_table.get(header.ssrc) or router.route_rtp(header)
            lean = receiver.__dict__.get(fastpath.RECEIVER_ATTR) if receiver is not None else None
            if lean is not None:
                if isinstance(lean, NativeVp8) and lean.accepts(header.payload_type):
                    for reader in self.readers:  # the SSRC's next packets stay in C
                        reader.bind(header.ssrc, lean.stream)
                if lean.handle(data, header):
                    return
        fastpath.drive(dtls._handle_rtp_data(data, arrival_time_ms=clock.current_ms()))


def attach(dtls: Any, connection: Any) -> bool:
    """Read `connection`'s sockets natively for `dtls` (connected); False: the Python path."""
    if not available():
        return False
    if getattr(connection, READERS_ATTR, None) is not None:
        return True
    protocols = list(getattr(connection, "_protocols", ()))
    if not protocols or dtls._rx_srtp is None or not connection._queue.empty():
        return False
    for protocol in protocols:
        transport = getattr(protocol, "transport", None)
        loop = getattr(transport, "_loop", None)
        if (getattr(transport, "_sock_fd", None) is None or loop is None or transport.is_closing()
                or not hasattr(loop, "_remove_reader")):
            return False  # all or none: two paths must not unprotect with one session
    native = Connection(dtls, connection)
    try:
        native.start(protocols)
    except Exception:
        log.warning("native receive path not started", exc_info=True)
        from plugins.webrtc import fastpath

        for reader, protocol in zip(native.readers, protocols, strict=False):
            stop(reader)
            transport = protocol.transport
            transport._loop._add_reader(transport._sock_fd, fastpath._drain, transport)  # the loop reads again
        return False
    setattr(connection, READERS_ATTR, native)
    return True


def stop(reader: Any) -> None:
    reader.stop()
    _live.discard(reader)


@atexit.register
def _stop_all() -> None:
    for reader in list(_live):
        stop(reader)
