"""The RTMP chunk stream (Adobe RTMP 1.0 §5.3), sans I/O: bytes in, messages out, and back.

Written here rather than taken from pyrtmp, whose reader gets timestamps wrong (a new message
in a type-3 chunk reuses the previous timestamp without adding the delta, so ffmpeg's AAC drifts
half a second behind video in 25 s; extended timestamps on chunk types 1-3 are misread).

Timestamp rules, as ffmpeg's and nginx-rtmp's readers apply them:

- type 0 carries the absolute timestamp; types 1 and 2 a delta that is added to the previous
  message's timestamp and remembered; a type-3 chunk that starts a message adds the remembered
  delta again.
- a field of 0xFFFFFF means a 4-byte extended value follows the header. Type-3 chunks of a
  stream whose last header was extended carry it too; for a continuation chunk some encoders
  leave it out, so there it is consumed only when it repeats the stream's extended value.
- timestamps are 32-bit and wrap; :class:`Message` keeps the raw value.

Every size the peer controls is bounded (message length, open chunk streams, bytes buffered),
so garbage after a valid handshake ends in :class:`ProtocolError`, never in memory growth.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

# message type ids
SET_CHUNK_SIZE, ABORT, ACK, USER_CONTROL, WINDOW_ACK_SIZE, SET_PEER_BANDWIDTH = 1, 2, 3, 4, 5, 6
AUDIO, VIDEO, DATA_AMF3, COMMAND_AMF3, DATA_AMF0, COMMAND_AMF0, AGGREGATE = 8, 9, 15, 17, 18, 20, 22

# chunk stream ids (ffmpeg's choice)
CS_CONTROL, CS_COMMAND, CS_AUDIO, CS_VIDEO, CS_DATA = 2, 3, 4, 6, 8

EXTENDED = 0xFFFFFF
MAX_CHUNK_SIZE = 0x7FFFFFFF


class ProtocolError(Exception):
    """The peer broke the chunk stream; the connection must close."""


@dataclass
class Message:
    type_id: int
    stream_id: int
    timestamp: int  # 32-bit, milliseconds
    payload: bytes
    csid: int = 0


@dataclass
class _Stream:
    timestamp: int = 0
    delta: int = 0
    length: int = 0
    type_id: int = 0
    stream_id: int = 0
    extended: bool = False  # the last header had an extended timestamp
    ext_value: int = 0
    payload: bytearray | None = None  # the message being assembled
    started: bool = False  # a type-0 header was seen


class ChunkDecoder:
    def __init__(self, *, max_message: int = 8 << 20, max_streams: int = 64, max_buffered: int = 24 << 20) -> None:
        self.chunk_size = 128
        self.max_message = max_message
        self.max_streams = max_streams
        self.max_buffered = max_buffered
        self.bytes_in = 0
        self._buf = bytearray()
        self._streams: dict[int, _Stream] = {}
        self._assembling = 0  # bytes held in partial messages

    def feed(self, data: bytes) -> list[Message]:
        """Parse what `data` completes; raise ProtocolError on a broken stream."""
        self.bytes_in += len(data)
        self._buf += data
        messages: list[Message] = []
        pos = 0
        buf = self._buf
        while True:
            used = self._chunk(buf, pos, messages)
            if used == 0:
                break
            pos += used
        if pos:
            del buf[:pos]
        if len(buf) > self.chunk_size + 32 and len(buf) > 1 << 16:
            raise ProtocolError("unparsed input keeps growing")
        return messages

    # one chunk at buf[pos:]; returns bytes consumed, 0 if incomplete
    def _chunk(self, buf: bytearray, pos: int, out: list[Message]) -> int:
        end = len(buf)
        if pos >= end:
            return 0
        start = pos
        first = buf[pos]
        fmt, csid = first >> 6, first & 0x3F
        pos += 1
        if csid == 0:
            if pos + 1 > end:
                return 0
            csid = 64 + buf[pos]
            pos += 1
        elif csid == 1:
            if pos + 2 > end:
                return 0
            csid = 64 + buf[pos] + (buf[pos + 1] << 8)
            pos += 2
        header_len = (11, 7, 3, 0)[fmt]
        if pos + header_len > end:
            return 0
        stream = self._streams.get(csid)
        if stream is None:
            if fmt != 0:
                raise ProtocolError(f"chunk stream {csid} starts without a type-0 header")
            if len(self._streams) >= self.max_streams:
                raise ProtocolError("too many chunk streams")
            stream = _Stream()
        elif fmt == 0 and not stream.started:
            pass
        field = 0
        if fmt < 3:
            field = int.from_bytes(buf[pos:pos + 3], "big")
        length, type_id, stream_id = stream.length, stream.type_id, stream.stream_id
        if fmt < 2:
            length = int.from_bytes(buf[pos + 3:pos + 6], "big")
            type_id = buf[pos + 6]
        if fmt == 0:
            stream_id = int.from_bytes(buf[pos + 7:pos + 11], "little")
        pos += header_len
        continuing = stream.payload is not None
        if continuing and fmt != 3:
            raise ProtocolError(f"chunk stream {csid}: a new header in the middle of a message")
        extended = stream.extended if fmt == 3 else field == EXTENDED
        ext_value = None
        if extended:
            if pos + 4 > end:
                return 0
            value = int.from_bytes(buf[pos:pos + 4], "big")
            if fmt < 3 or not continuing or value == stream.ext_value:
                ext_value = value
                pos += 4
        if not continuing and length > self.max_message:
            raise ProtocolError(f"message of {length} bytes is over the {self.max_message}-byte limit")
        remaining = (length if not continuing else length - len(stream.payload))  # type: ignore[arg-type]
        size = min(self.chunk_size, remaining)
        if pos + size > end:
            return 0
        # the chunk is complete: commit the header
        if csid not in self._streams:
            self._streams[csid] = stream
        if not continuing:
            if fmt == 0:
                stream.timestamp = ext_value if extended and ext_value is not None else field
                stream.delta = stream.timestamp
                stream.started = True
            elif fmt in (1, 2):
                stream.delta = ext_value if extended and ext_value is not None else field
                stream.timestamp = (stream.timestamp + stream.delta) & 0xFFFFFFFF
            else:
                if extended and ext_value is not None:
                    stream.delta = ext_value
                stream.timestamp = (stream.timestamp + stream.delta) & 0xFFFFFFFF
            if fmt < 3:
                stream.extended = extended
            if ext_value is not None:
                stream.ext_value = ext_value
            stream.length, stream.type_id, stream.stream_id = length, type_id, stream_id
            stream.payload = bytearray()
        payload = stream.payload
        assert payload is not None
        if self._assembling + size > self.max_buffered:
            raise ProtocolError("too much data in unfinished messages")
        payload += buf[pos:pos + size]
        self._assembling += size
        pos += size
        if len(payload) >= stream.length:
            self._assembling -= len(payload)
            stream.payload = None
            message = Message(stream.type_id, stream.stream_id, stream.timestamp, bytes(payload), csid)
            self._control(message)
            out.append(message)
        return pos - start

    def _control(self, message: Message) -> None:
        """Protocol control that changes how the following bytes are read."""
        if message.type_id == SET_CHUNK_SIZE:
            if len(message.payload) < 4:
                raise ProtocolError("short Set Chunk Size")
            size = int.from_bytes(message.payload[:4], "big") & 0x7FFFFFFF
            if size < 1:
                raise ProtocolError("chunk size 0")
            self.chunk_size = size
        elif message.type_id == ABORT and len(message.payload) >= 4:
            stream = self._streams.get(int.from_bytes(message.payload[:4], "big"))
            if stream is not None and stream.payload is not None:
                self._assembling -= len(stream.payload)
                stream.payload = None


class ChunkEncoder:
    """Writes each message as a type-0 chunk and type-3 continuations (simple and unambiguous:
    the 11 extra header bytes per message do not matter next to media payloads)."""

    def __init__(self, chunk_size: int = 128) -> None:
        self.chunk_size = chunk_size

    def set_chunk_size(self, size: int) -> bytes:
        """The Set Chunk Size message; later messages use the new size."""
        data = self.encode(CS_CONTROL, SET_CHUNK_SIZE, 0, 0, struct.pack(">I", size))
        self.chunk_size = size
        return data

    def encode(self, csid: int, type_id: int, stream_id: int, timestamp: int, payload: bytes) -> bytes:
        timestamp &= 0xFFFFFFFF
        extended = timestamp >= EXTENDED
        basic0 = _basic(0, csid)
        basic3 = _basic(3, csid)
        ext = struct.pack(">I", timestamp) if extended else b""
        header = (basic0 + (EXTENDED if extended else timestamp).to_bytes(3, "big") + len(payload).to_bytes(3, "big")
                  + bytes([type_id]) + struct.pack("<I", stream_id) + ext)
        size = self.chunk_size
        if len(payload) <= size:
            return header + payload
        parts = [header, payload[:size]]
        for offset in range(size, len(payload), size):
            parts.append(basic3 + ext)
            parts.append(payload[offset:offset + size])
        return b"".join(parts)


def _basic(fmt: int, csid: int) -> bytes:
    if 2 <= csid <= 63:
        return bytes([(fmt << 6) | csid])
    if csid <= 319:
        return bytes([fmt << 6, csid - 64])
    return bytes([(fmt << 6) | 1]) + (csid - 64).to_bytes(2, "little")


def control(type_id: int, value: int, extra: bytes = b"") -> tuple[int, int, int, int, bytes]:
    """Arguments for ChunkEncoder.encode of a protocol control message with one 32-bit value."""
    return CS_CONTROL, type_id, 0, 0, struct.pack(">I", value) + extra


def user_control(event: int, *values: int) -> tuple[int, int, int, int, bytes]:
    return CS_CONTROL, USER_CONTROL, 0, 0, struct.pack(">H", event) + b"".join(struct.pack(">I", v) for v in values)
