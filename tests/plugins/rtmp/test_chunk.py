"""The RTMP chunk stream: timestamps by chunk type (the defect that made pyrtmp drift),
extended timestamps, chunk sizes, and the limits that keep garbage from growing memory."""

from __future__ import annotations

import os
import struct

import pytest

from plugins.rtmp import chunk as ch


def header(fmt: int, csid: int, ts: int | None = None, length: int | None = None, type_id: int | None = None,
           stream_id: int | None = None) -> bytes:
    out = bytes([(fmt << 6) | csid])
    if fmt < 3:
        out += min(ts, ch.EXTENDED).to_bytes(3, "big")  # type: ignore[type-var]
    if fmt < 2:
        out += length.to_bytes(3, "big") + bytes([type_id])  # type: ignore[union-attr]
    if fmt == 0:
        out += struct.pack("<I", stream_id)  # type: ignore[arg-type]
    if fmt < 3 and ts is not None and ts >= ch.EXTENDED:
        out += struct.pack(">I", ts)
    return out


def test_type3_new_message_adds_the_previous_delta() -> None:
    # what ffmpeg writes for AAC at 44.1 kHz: type 0, a type-2 delta of 23 ms, then type-3 chunks
    frame = b"\xaf\x01" + b"x" * 10
    data = (header(0, 4, 0, len(frame), ch.AUDIO, 1) + frame
            + header(2, 4, 23) + frame
            + header(3, 4) + frame
            + header(3, 4) + frame)
    messages = ch.ChunkDecoder().feed(data)
    assert [m.timestamp for m in messages] == [0, 23, 46, 69]
    assert all(m.payload == frame and m.stream_id == 1 and m.type_id == ch.AUDIO for m in messages)


def test_type1_changes_length_and_keeps_stream_id() -> None:
    data = (header(0, 6, 1000, 3, ch.VIDEO, 1) + b"abc"
            + header(1, 6, 40, 5, ch.VIDEO) + b"defgh"
            + header(3, 6) + b"ijklm")
    messages = ch.ChunkDecoder().feed(data)
    assert [(m.timestamp, m.payload, m.stream_id) for m in messages] == [
        (1000, b"abc", 1), (1040, b"defgh", 1), (1080, b"ijklm", 1)]


def test_message_split_over_chunks_and_fed_byte_by_byte() -> None:
    payload = os.urandom(300)
    data = header(0, 6, 5, len(payload), ch.VIDEO, 1) + payload[:128] + header(3, 6) + payload[128:256] \
        + header(3, 6) + payload[256:]
    decoder = ch.ChunkDecoder()
    messages = [m for i in range(len(data)) for m in decoder.feed(data[i:i + 1])]
    assert len(messages) == 1 and messages[0].payload == payload and messages[0].timestamp == 5


@pytest.mark.parametrize("chunk_size", [128, 4096, 65536])
@pytest.mark.parametrize("start", [0, 0xFFFFF0, 0xFFFFFF, 0x12345678, 0xFFFFFFF0])
def test_encoder_round_trip_including_extended_timestamps(chunk_size: int, start: int) -> None:
    encoder = ch.ChunkEncoder()
    data = encoder.set_chunk_size(chunk_size)
    sizes = [1, 127, 128, 129, 5000, 70000]
    sent = []
    for index, size in enumerate(sizes):
        ts = (start + index * 33) & 0xFFFFFFFF
        payload = os.urandom(size)
        sent.append((ts, payload))
        data += encoder.encode(ch.CS_VIDEO, ch.VIDEO, 1, ts, payload)
    decoder = ch.ChunkDecoder()
    messages = [m for m in decoder.feed(data) if m.type_id == ch.VIDEO]
    assert [(m.timestamp, m.payload) for m in messages] == sent
    assert decoder.chunk_size == chunk_size


def test_extended_delta_on_type1_and_type3() -> None:
    # a delta of 0x1000000 ms does not fit 24 bits: 0xFFFFFF in the field, the delta after it
    delta = 0x1000000
    data = (header(0, 6, 10, 2, ch.VIDEO, 1) + b"aa"
            + bytes([(1 << 6) | 6]) + ch.EXTENDED.to_bytes(3, "big") + (2).to_bytes(3, "big") + bytes([ch.VIDEO])
            + struct.pack(">I", delta) + b"bb"
            + bytes([(3 << 6) | 6]) + struct.pack(">I", delta) + b"cc")
    messages = ch.ChunkDecoder().feed(data)
    assert [m.timestamp for m in messages] == [10, 10 + delta, 10 + 2 * delta]


def test_continuation_with_or_without_repeated_extended_timestamp() -> None:
    ts = 0x01000000 + 5
    payload = bytes(range(200))
    with_ext = header(0, 6, ts, 200, ch.VIDEO, 1) + payload[:128] + bytes([0xC6]) + struct.pack(">I", ts) \
        + payload[128:]
    without = header(0, 6, ts, 200, ch.VIDEO, 1) + payload[:128] + bytes([0xC6]) + payload[128:]
    for data in (with_ext, without):
        (message,) = ch.ChunkDecoder().feed(data)
        assert message.timestamp == ts and message.payload == payload


def test_set_chunk_size_applies_to_the_following_bytes() -> None:
    encoder = ch.ChunkEncoder()
    payload = os.urandom(1000)
    data = encoder.set_chunk_size(500) + encoder.encode(ch.CS_VIDEO, ch.VIDEO, 1, 0, payload)
    messages = ch.ChunkDecoder().feed(data)
    assert messages[-1].payload == payload


def test_abort_drops_the_partial_message() -> None:
    encoder = ch.ChunkEncoder()
    partial = header(0, 6, 0, 300, ch.VIDEO, 1) + b"z" * 128
    abort = encoder.encode(*ch.control(ch.ABORT, 6))
    whole = encoder.encode(ch.CS_VIDEO, ch.VIDEO, 1, 40, b"ok")
    messages = ch.ChunkDecoder().feed(partial + abort + whole)
    assert [m.payload for m in messages if m.type_id == ch.VIDEO] == [b"ok"]


def test_oversized_message_is_refused() -> None:
    with pytest.raises(ch.ProtocolError, match="limit"):
        ch.ChunkDecoder(max_message=1 << 20).feed(header(0, 6, 0, 5 << 20, ch.VIDEO, 1))


def test_stream_without_type0_header_is_refused() -> None:
    with pytest.raises(ch.ProtocolError):
        ch.ChunkDecoder().feed(header(1, 7, 0, 10, ch.VIDEO) + b"x" * 10)


def test_random_bytes_end_in_protocol_error_with_bounded_memory() -> None:
    decoder = ch.ChunkDecoder(max_message=1 << 20, max_buffered=4 << 20)
    rng = __import__("random").Random(7)
    with pytest.raises(ch.ProtocolError):
        for _ in range(50 * 16):  # up to 50 MB
            decoder.feed(rng.randbytes(1 << 16))
            assert len(decoder._buf) < (2 << 20) and decoder._assembling <= 4 << 20
