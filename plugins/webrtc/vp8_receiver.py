"""A publisher's VP8 (and its RTX) received without aiortc's per-packet objects.

:mod:`plugins.webrtc.fastpath` hands each unprotected RTP packet of a gateway receiver here,
parsed by :func:`~plugins.webrtc.rtp_parse.parse_header` into offsets. For a VP8 payload
type, or RTX carrying VP8, the steps are aiortc's ``RTCRtpReceiver._handle_rtp_packet``'s,
on plain integers:

- statistics for the receiver reports (aiortc's ``StreamStatistics``, kept in the receiver so
  its RTCP task reports from them as before), per SSRC, RTX included;
- RTX unwrapped (RFC 4588: the original sequence number leads the payload);
- NACK for sequence numbers skipped, as aiortc's ``NackGenerator`` (RFC 4585 §6.2.1);
- REMB from aiortc's estimator (its per-sample loops made cheap, :mod:`plugins.webrtc.remb`),
  one sample per frame (its marker packet, with the frame's bytes and its abs-send-time), as
  :mod:`plugins.webrtc.rtp_receive` does;
- the VP8 descriptor skipped (RFC 7741), frames assembled by :class:`Vp8Frames` and handed to
  the room track's sink as ``av.Packet`` at once, on the loop (the sink only queues);
- PLI when a picture is lost (a hole not filled, a decoder error the sink reports); the
  session's ``request_keyframe`` keeps using the receiver's own PLI.

Other payload types (H.264, Opus) answer False and take aiortc's path unchanged.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable
from fractions import Fraction
from typing import Any

import av
from aiortc import clock
from aiortc.rtcrtpreceiver import StreamStatistics
from aiortc.rtp import RTCP_PSFB_APP, RTP_HISTORY_SIZE, RtcpPsfbPacket, pack_remb_fci

from plugins.webrtc import fastpath, native_rx, remb
from plugins.webrtc.rtp_parse import RtpHeader, abs_send_time, vp8_descriptor
from plugins.webrtc.vp8_frames import Vp8Frames

P = "_RTCRtpReceiver__"  # aiortc's name-mangled private attributes
_SEQ = struct.Struct("!H")
VIDEO_CLOCK = Fraction(1, 90000)
# (ffmpeg codec name, packet) -> whether the publisher should send a keyframe (RTCP PLI)
Sink = Callable[[str, av.Packet], bool]


class Statistics(StreamStatistics):
    """aiortc's receiver-report statistics, fed from header fields instead of a packet."""

    def add_rtp(self, seq: int, timestamp: int) -> None:
        max_seq = self.max_seq
        self.packets_received += 1
        if self.base_seq is None:
            self.base_seq = seq
        if max_seq is None or 0 < (seq - max_seq) & 0xFFFF < 0x8000:  # in order
            arrival = int(time.time() * self._clockrate)
            if max_seq is not None and seq < max_seq:
                self.cycles += 1 << 16
            self.max_seq = seq
            last_timestamp = self._last_timestamp
            if timestamp != last_timestamp and self.packets_received > 1:
                diff = abs((arrival - self._last_arrival) - (timestamp - last_timestamp))  # type: ignore[operator]
                self._jitter_q4 += diff - ((self._jitter_q4 + 8) >> 4)
            self._last_arrival = arrival
            self._last_timestamp = timestamp


class Nacks:
    """aiortc's ``NackGenerator`` on sequence numbers: the missing set, and whether a packet
    revealed a new hole (then a NACK goes out with the whole set)."""

    def __init__(self) -> None:
        self.max_seq: int | None = None
        self.missing: set[int] = set()

    def add(self, seq: int) -> bool:
        max_seq = self.max_seq
        if max_seq is None:
            self.max_seq = seq
            return False
        ahead = (seq - max_seq) & 0xFFFF
        if ahead == 0 or ahead >= 0x8000:
            self.missing.discard(seq)
            return False
        self.max_seq = seq
        if ahead == 1:
            if self.missing:
                self._truncate(seq)
            return False
        # the gap; only the last RTP_HISTORY_SIZE can still be asked for
        for missed in range(max(1, ahead - RTP_HISTORY_SIZE), ahead):
            self.missing.add((max_seq + missed) & 0xFFFF)
        self._truncate(seq)
        return True

    def _truncate(self, max_seq: int) -> None:
        self.missing = {s for s in self.missing if (max_seq - s) & 0xFFFF <= RTP_HISTORY_SIZE}


class Vp8Receiver:
    """The VP8 side of one aiortc ``RTCRtpReceiver`` whose frames go to `sink`."""

    def __init__(self, receiver: Any, sink: Sink, abs_send_time_id: int | None) -> None:
        d = receiver.__dict__
        self.receiver = receiver
        self.sink = sink
        self.abs_send_time_id = abs_send_time_id
        self.codecs: dict[int, Any] = d[P + "codecs"]
        self.streams: dict[int, StreamStatistics] = d[P + "remote_streams"]
        self.active: dict[int, Any] = d[P + "active_ssrc"]
        self.rtx_ssrc: dict[int, int] = d[P + "rtx_ssrc"]
        self.estimator = d[P + "remote_bitrate_estimator"]
        if self.estimator is not None and not isinstance(self.estimator.incoming_bitrate, remb.WindowRate):
            remb.lighten(self.estimator)
        self.mapper = d[P + "timestamp_mapper"]
        self.vp8_types = {pt for pt, c in self.codecs.items() if c.name.lower() == "vp8"}
        self.rtx_types = {pt: c.parameters.get("apt") for pt, c in self.codecs.items()
                          if c.name.lower() == "rtx" and c.parameters.get("apt") in self.vp8_types}
        self.nacks = Nacks()
        self.frames = Vp8Frames()
        self.frame_bytes = 0
        self.packets = 0

    def handle(self, data: bytes, h: RtpHeader) -> bool:
        """Receive one packet; False if it is not VP8 (aiortc's path takes it)."""
        marker, pt, seq, timestamp, ssrc, start, end, padding = h[:8]  # one unpack, not eight lookups
        rtx = pt in self.rtx_types
        if not rtx and pt not in self.vp8_types:
            return False
        receiver = self.receiver
        if not receiver._enabled:
            return True
        self.packets += 1
        stats = self.streams.get(ssrc)
        if stats is None:
            stats = self.streams[ssrc] = Statistics(90000)
        if type(stats) is Statistics:
            stats.add_rtp(seq, timestamp)
        else:  # created by aiortc's path (a payload type change mid-stream)
            stats.add(h)  # type: ignore[arg-type]  # reads sequence_number and timestamp

        if self.estimator is not None:
            size = self.frame_bytes + end - start + padding
            if marker:
                self.frame_bytes = 0
                self._remb(data, h, size)
            else:
                self.frame_bytes = size
        if marker or ssrc not in self.active:
            self.active[ssrc] = clock.current_datetime()

        if rtx:
            original = self.rtx_ssrc.get(ssrc)
            if original is None or end - start < 2:
                return True
            seq = _SEQ.unpack_from(data, start)[0]
            start += 2
            ssrc = original

        if self.nacks.add(seq):
            fastpath.drive(receiver._send_rtcp_nack(ssrc, sorted(self.nacks.missing)))

        descriptor = vp8_descriptor(data, start, end)
        if descriptor is None:
            return True  # as aiortc: a payload that does not parse is dropped
        frames = self.frames.add(seq, timestamp, descriptor[0], marker, data[descriptor[1]:end])
        lost = False
        if frames is not None:
            for frame in frames:
                packet = av.Packet(frame.data)
                packet.pts = packet.dts = self.mapper.map(frame.timestamp)
                packet.time_base = VIDEO_CLOCK
                packet.is_keyframe = frame.keyframe
                try:
                    lost |= bool(self.sink("vp8", packet))
                except Exception:  # a bad frame must not end the receiver
                    lost = True
        if self.frames.picture_lost:
            self.frames.picture_lost = False
            lost = True
        if lost:
            fastpath.drive(receiver._send_rtcp_pli(ssrc))
        return True

    def _remb(self, data: bytes, h: RtpHeader, size: int) -> None:
        sent = abs_send_time(data, h, self.abs_send_time_id)
        if sent is None:
            return
        remb = self.estimator.add(abs_send_time=sent, arrival_time_ms=clock.current_ms(), payload_size=size,
                                  ssrc=h.ssrc)
        rtcp_ssrc = self.receiver.__dict__[P + "rtcp_ssrc"]
        if rtcp_ssrc is not None and remb is not None:
            fastpath.drive(self.receiver._send_rtcp(RtcpPsfbPacket(fmt=RTCP_PSFB_APP, ssrc=rtcp_ssrc, media_ssrc=0,
                                                                   fci=pack_remb_fci(*remb))))


def attach(receiver: Any, sink: Sink) -> None:
    """Give `receiver` (started: codecs and header extensions known) the lean VP8 path."""
    codecs = receiver.__dict__[P + "codecs"]
    if not any(c.name.lower() == "vp8" for c in codecs.values()):
        return
    ids = receiver.transport._rtp_header_extensions_map._HeaderExtensionsMap__ids
    if native_rx.available():  # the same steps in C
        setattr(receiver, fastpath.RECEIVER_ATTR, native_rx.NativeVp8(receiver, sink, ids.abs_send_time))
        return
    setattr(receiver, fastpath.RECEIVER_ATTR, Vp8Receiver(receiver, sink, ids.abs_send_time))
