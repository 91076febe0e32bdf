"""FLV tag bodies as RTMP audio/video messages carry them, and H.264 bitstream formats.

Video (E.4.3.1): frame type (1 key, 2 inter, 5 info) | codec id (7 AVC); for AVC one byte of
packet type (0 sequence header = avcC, 1 NALUs, 2 end of sequence) and a signed 24-bit
composition time offset: pts = dts + cts. Audio (E.4.2.1): sound format (10 AAC) | rate | size
| type; for AAC one byte (0 AudioSpecificConfig, 1 raw frame).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

VIDEO_CODECS = {2: "Sorenson H.263", 3: "Screen video", 4: "VP6", 5: "VP6 alpha", 6: "Screen video 2", 7: "H.264",
                12: "HEVC"}
AUDIO_CODECS = {0: "PCM", 1: "ADPCM", 2: "MP3", 3: "PCM LE", 4: "Nellymoser 16k", 5: "Nellymoser 8k",
                6: "Nellymoser", 7: "G.711 A-law", 8: "G.711 mu-law", 10: "AAC", 11: "Speex", 14: "MP3 8k"}
AVC = 7
AAC = 10
AAC_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350)


class UnsupportedCodec(ValueError):
    pass


@dataclass
class VideoTag:
    keyframe: bool
    kind: str  # "config" | "frame" | "end" | "info"
    cts: int
    data: bytes


@dataclass
class AudioTag:
    kind: str  # "config" | "frame"
    data: bytes


def parse_video(body: bytes) -> VideoTag | None:
    if len(body) < 1:
        return None
    if body[0] & 0x80:
        raise UnsupportedCodec("enhanced RTMP video (HEVC/AV1/VP9 FourCC) is not supported; send H.264")
    frame_type, codec = body[0] >> 4, body[0] & 0x0F
    if frame_type == 5:
        return VideoTag(False, "info", 0, b"")
    if codec != AVC:
        raise UnsupportedCodec(f"video codec {VIDEO_CODECS.get(codec, codec)} is not supported; send H.264")
    if len(body) < 5:
        return None
    packet_type = body[1]
    cts = int.from_bytes(body[2:5], "big", signed=True)
    kind = {0: "config", 1: "frame", 2: "end"}.get(packet_type)
    if kind is None:
        return None
    return VideoTag(frame_type == 1, kind, cts, body[5:])


def parse_audio(body: bytes) -> AudioTag | None:
    if len(body) < 2:
        return None
    codec = body[0] >> 4
    if codec != AAC:
        raise UnsupportedCodec(f"audio codec {AUDIO_CODECS.get(codec, codec)} is not supported; send AAC")
    return AudioTag("config" if body[1] == 0 else "frame", body[2:])


def aac_config(asc: bytes) -> tuple[int, int]:
    """(sample rate, channels) from an AudioSpecificConfig."""
    if len(asc) < 2:
        raise ValueError("short AudioSpecificConfig")
    bits = int.from_bytes(asc[:2], "big")
    index = (bits >> 7) & 0x0F
    channels = (bits >> 3) & 0x0F
    rate = AAC_RATES[index] if index < len(AAC_RATES) else 44100
    return rate, channels or 2


def video_body(keyframe: bool, kind: str, cts: int, data: bytes) -> bytes:
    packet_type = {"config": 0, "frame": 1, "end": 2}[kind]
    return bytes([(0x10 if keyframe else 0x20) | AVC, packet_type]) + (cts & 0xFFFFFF).to_bytes(3, "big") + data


def audio_body(kind: str, data: bytes, sample_rate: int = 44100, channels: int = 2) -> bytes:
    # for AAC the rate/size/type bits are fixed by the spec (44 kHz, 16 bit, stereo); the
    # AudioSpecificConfig carries the real values
    return bytes([(AAC << 4) | 0x0F, 0 if kind == "config" else 1]) + data


# ------------------------------------------------------------------------------ H.264 formats
def split_annexb(data: bytes) -> list[bytes]:
    """NAL units of an Annex B byte stream (00 00 01 / 00 00 00 01 start codes)."""
    nals: list[bytes] = []
    i, n = 0, len(data)
    start = -1
    while i + 2 < n:
        if data[i] == 0 and data[i + 1] == 0 and data[i + 2] == 1:
            if start >= 0:
                end = i - 1 if i > 0 and data[i - 1] == 0 else i
                nals.append(data[start:end])
            i += 3
            start = i
            continue
        i += 1
    if start >= 0 and start < n:
        nals.append(data[start:])
    return [nal for nal in nals if nal]


def is_avcc_config(extradata: bytes | None) -> bool:
    return bool(extradata) and extradata[0] == 1  # type: ignore[index]


def avcc_from_annexb(extradata: bytes) -> bytes:
    """An avcC record (ISO 14496-15) from Annex B SPS/PPS, as x264's global header gives them."""
    nals = split_annexb(extradata)
    sps = [n for n in nals if n[0] & 0x1F == 7]
    pps = [n for n in nals if n[0] & 0x1F == 8]
    if not sps or not pps:
        raise ValueError("H.264 extradata has no SPS/PPS")
    first = sps[0]
    out = bytearray([1, first[1], first[2], first[3], 0xFF, 0xE0 | len(sps)])
    for nal in sps:
        out += struct.pack(">H", len(nal)) + nal
    out.append(len(pps))
    for nal in pps:
        out += struct.pack(">H", len(nal)) + nal
    return bytes(out)


def annexb_to_avcc(data: bytes) -> bytes:
    """Length-prefixed NAL units (what FLV carries) from an Annex B packet."""
    if len(data) >= 4 and data[:3] != b"\x00\x00\x01" and data[:4] != b"\x00\x00\x00\x01":
        return data  # already length-prefixed
    return b"".join(struct.pack(">I", len(nal)) + nal for nal in split_annexb(data))


def avcc_sps(avcc: bytes) -> bytes | None:
    """The first SPS of an avcC record."""
    if len(avcc) < 8:
        return None
    size = int.from_bytes(avcc[6:8], "big")
    return avcc[8:8 + size] or None
