"""Just enough H.264 and VP8 bitstream knowledge to forward packets without decoding them:
keyframe detection, AVCC → Annex-B, and SPS/PPS in-band before every IDR picture (what
aiortc's packetizer and a browser joining mid-stream need)."""

from __future__ import annotations

import av

START = b"\x00\x00\x00\x01"
NAL_IDR, NAL_SPS, NAL_PPS = 5, 7, 8


def split_annexb(data: bytes) -> list[bytes]:
    """The NAL units of an Annex-B buffer, without start codes."""
    units: list[bytes] = []
    i, n = 0, len(data)
    start = -1
    while i + 3 <= n:
        if data[i] == 0 and data[i + 1] == 0 and data[i + 2] == 1:
            if start >= 0:
                end = i - 1 if i > 0 and data[i - 1] == 0 else i
                units.append(data[start:end])
            i += 3
            start = i
            continue
        i += 1
    if start >= 0 and start < n:
        units.append(data[start:])
    return [u for u in units if u]


def is_annexb(data: bytes) -> bool:
    return data[:3] == b"\x00\x00\x01" or data[:4] == START


def nal_types(data: bytes) -> set[int]:
    return {u[0] & 0x1F for u in split_annexb(data)}


def h264_is_keyframe(data: bytes) -> bool:
    return NAL_IDR in nal_types(data)


def vp8_is_keyframe(data: bytes) -> bool:
    return bool(data) and not data[0] & 0x01  # RFC 6386 §9.1: P bit 0 = key frame


def avcc_parameter_sets(extradata: bytes) -> bytes:
    """SPS and PPS of an avcC record (ISO 14496-15) or Annex-B extradata, as Annex-B."""
    if not extradata:
        return b""
    if is_annexb(extradata):
        return extradata
    out = b""
    pos = 6
    count = extradata[5] & 0x1F
    for table in (0, 1):
        for _ in range(count):
            size = int.from_bytes(extradata[pos:pos + 2], "big")
            out += START + extradata[pos + 2:pos + 2 + size]
            pos += 2 + size
        if table == 0:
            count = extradata[pos]
            pos += 1
    return out


def avcc_to_annexb(data: bytes, length_size: int = 4) -> bytes:
    out = bytearray()
    pos = 0
    while pos + length_size <= len(data):
        size = int.from_bytes(data[pos:pos + length_size], "big")
        pos += length_size
        out += START + data[pos:pos + size]
        pos += size
    return bytes(out)


class AnnexBWriter:
    """Turns a track's H.264 packets into what aiortc sends: Annex-B, SPS/PPS before each IDR."""

    def __init__(self, extradata: bytes | None) -> None:
        self.parameter_sets = avcc_parameter_sets(extradata or b"")

    def convert(self, packet: av.Packet) -> av.Packet:
        data = bytes(packet)
        if not is_annexb(data):
            data = avcc_to_annexb(data)
        types = nal_types(data)
        if NAL_SPS in types and NAL_PPS in types:
            self.parameter_sets = b"".join(START + u for u in split_annexb(data) if u[0] & 0x1F in (NAL_SPS, NAL_PPS))
        elif NAL_IDR in types and self.parameter_sets:
            data = self.parameter_sets + data
        out = av.Packet(data)
        out.pts, out.dts = packet.pts, packet.dts
        if packet.time_base is not None:
            out.time_base = packet.time_base
        out.is_keyframe = NAL_IDR in types
        return out
