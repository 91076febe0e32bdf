"""RTP headers and the VP8 payload descriptor read with ``struct`` and integer offsets.

aiortc's ``RtpPacket.parse`` builds an object per packet and decodes every header extension
into a dataclass (mid, rid, audio level, abs-send-time …) whether or not anyone reads them:
about a sixth of the publishers' receive path. Here a packet's header is one tuple of
offsets into the datagram; an extension is looked up only when wanted (abs-send-time, once
per video frame, for REMB). Every length is checked against the datagram: a hostile or
truncated packet gives None, never an exception or a read past the end.

RFC 3550 §5.1 (the fixed header, CSRCs, padding), RFC 8285 (one- and two-byte header
extensions), RFC 7741 §4.2 (the VP8 payload descriptor).
"""

from __future__ import annotations

import struct
from typing import NamedTuple

_FIXED = struct.Struct("!BBHII")
_PROFILE = struct.Struct("!HH")
ONE_BYTE_PROFILE = 0xBEDE
TWO_BYTE_PROFILE_MASK = 0xFFF0  # 0x100X: the low 4 bits are "appbits"
TWO_BYTE_PROFILE = 0x1000


class RtpHeader(NamedTuple):
    marker: bool
    payload_type: int
    sequence_number: int
    timestamp: int
    ssrc: int
    payload_start: int  # offsets into the datagram: payload is data[payload_start:payload_end]
    payload_end: int
    padding: int  # padding bytes after the payload (counted in REMB's sizes, as aiortc does)
    extension_profile: int  # 0 when the packet has no header extension
    extension_start: int
    extension_end: int


def parse_header(data: bytes) -> RtpHeader | None:
    """The header of an RTP packet (already SRTP-unprotected); None if it is malformed."""
    size = len(data)
    if size < 12:
        return None
    first, second, seq, timestamp, ssrc = _FIXED.unpack_from(data)
    if first >> 6 != 2:
        return None
    pos = 12 + 4 * (first & 0x0F)
    if pos > size:
        return None  # truncated CSRC list
    profile = ext_start = ext_end = 0
    if first & 0x10:
        if pos + 4 > size:
            return None
        profile, words = _PROFILE.unpack_from(data, pos)
        ext_start = pos + 4
        ext_end = pos = ext_start + 4 * words
        if pos > size:
            return None  # extension longer than the packet
    end = size
    padding = 0
    if first & 0x20:
        padding = data[-1]
        if not padding or padding > size - pos:
            return None  # RFC 3550 §5.1: the count includes itself and lies within the packet
        end -= padding
    return RtpHeader(bool(second & 0x80), second & 0x7F, seq, timestamp, ssrc, pos, end, padding,
                     profile, ext_start, ext_end)


def find_extension(data: bytes, header: RtpHeader, ext_id: int | None) -> bytes | None:
    """The value of header extension `ext_id` (RFC 8285), None if absent or malformed."""
    if not ext_id or not header.extension_profile:
        return None
    pos, end, profile = header.extension_start, header.extension_end, header.extension_profile
    if profile == ONE_BYTE_PROFILE:
        while pos < end:
            byte = data[pos]
            if byte == 0:  # padding
                pos += 1
                continue
            x_id, length = byte >> 4, (byte & 0x0F) + 1
            if x_id == 15:  # reserved: stop parsing (RFC 8285 §4.2)
                return None
            pos += 1
            if pos + length > end:
                return None
            if x_id == ext_id:
                return data[pos:pos + length]
            pos += length
    elif profile & TWO_BYTE_PROFILE_MASK == TWO_BYTE_PROFILE:
        while pos < end:
            x_id = data[pos]
            if x_id == 0:
                pos += 1
                continue
            if pos + 2 > end:
                return None
            length = data[pos + 1]
            pos += 2
            if pos + length > end:
                return None
            if x_id == ext_id:
                return data[pos:pos + length]
            pos += length
    return None


def abs_send_time(data: bytes, header: RtpHeader, ext_id: int | None) -> int | None:
    """The 24-bit abs-send-time (6.18 fixed point seconds) of the packet, if it has one."""
    value = find_extension(data, header, ext_id)
    if value is None or len(value) != 3:
        return None
    return int.from_bytes(value, "big")


def vp8_descriptor(data: bytes, start: int, end: int) -> tuple[bool, int] | None:
    """(this packet starts a frame, offset of the VP8 data) of the payload data[start:end],
    None if the descriptor is truncated. A frame starts at S=1 in partition 0."""
    if start >= end:
        return None
    byte = data[start]
    frame_start = byte & 0x17 == 0x10  # S bit set, PID 0
    pos = start + 1
    if byte & 0x80:  # X: extended control bits follow
        if pos >= end:
            return None
        ext = data[pos]
        pos += 1
        if ext & 0x80:  # I: picture id, 7 or 15 bits
            if pos >= end:
                return None
            pos += 2 if data[pos] & 0x80 else 1
        if ext & 0x40:  # L: TL0PICIDX
            pos += 1
        if ext & 0x30:  # T or K: TID/Y/KEYIDX
            pos += 1
        if pos > end:
            return None
    return frame_start, pos
