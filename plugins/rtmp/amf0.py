"""AMF0, the encoding of RTMP command messages (connect, createStream, publish, onStatus).

Only what RTMP commands use: number, boolean, string, object, null, undefined, ECMA array,
strict array, date and long string. Malformed input raises :class:`AmfError`.
"""

from __future__ import annotations

import struct
from typing import Any

NUMBER, BOOLEAN, STRING, OBJECT, NULL, UNDEFINED, ECMA_ARRAY, OBJECT_END, STRICT_ARRAY, DATE, LONG_STRING = (
    0x00, 0x01, 0x02, 0x03, 0x05, 0x06, 0x08, 0x09, 0x0A, 0x0B, 0x0C)
MAX_DEPTH = 16


class AmfError(ValueError):
    pass


def encode(value: Any) -> bytes:
    if value is None:
        return bytes([NULL])
    if isinstance(value, bool):
        return bytes([BOOLEAN, int(value)])
    if isinstance(value, int | float):
        return bytes([NUMBER]) + struct.pack(">d", float(value))
    if isinstance(value, str):
        raw = value.encode()
        if len(raw) > 0xFFFF:
            return bytes([LONG_STRING]) + struct.pack(">I", len(raw)) + raw
        return bytes([STRING]) + struct.pack(">H", len(raw)) + raw
    if isinstance(value, dict):
        return bytes([OBJECT]) + _props(value)
    if isinstance(value, list | tuple):
        return bytes([STRICT_ARRAY]) + struct.pack(">I", len(value)) + b"".join(encode(v) for v in value)
    raise TypeError(f"cannot encode {type(value).__name__} in AMF0")


def ecma_array(value: dict[str, Any]) -> bytes:
    """An ECMA array (what ``onMetaData`` carries)."""
    return bytes([ECMA_ARRAY]) + struct.pack(">I", len(value)) + _props(value)


def _props(value: dict[str, Any]) -> bytes:
    out = bytearray()
    for key, item in value.items():
        raw = key.encode()
        out += struct.pack(">H", len(raw)) + raw + encode(item)
    return bytes(out) + b"\x00\x00" + bytes([OBJECT_END])


def encode_all(*values: Any) -> bytes:
    return b"".join(encode(v) for v in values)


def decode_all(data: bytes) -> list[Any]:
    """Every value in `data` (a command message body)."""
    values, offset = [], 0
    while offset < len(data):
        value, offset = _decode(data, offset, 0)
        values.append(value)
    return values


def _need(data: bytes, offset: int, size: int) -> None:
    if offset + size > len(data):
        raise AmfError("truncated AMF0 value")


def _string(data: bytes, offset: int, size_len: int = 2) -> tuple[str, int]:
    _need(data, offset, size_len)
    size = int.from_bytes(data[offset:offset + size_len], "big")
    offset += size_len
    _need(data, offset, size)
    return data[offset:offset + size].decode("utf-8", "replace"), offset + size


def _decode(data: bytes, offset: int, depth: int) -> tuple[Any, int]:
    if depth > MAX_DEPTH:
        raise AmfError("AMF0 nesting too deep")
    _need(data, offset, 1)
    marker = data[offset]
    offset += 1
    if marker == NUMBER:
        _need(data, offset, 8)
        return struct.unpack_from(">d", data, offset)[0], offset + 8
    if marker == BOOLEAN:
        _need(data, offset, 1)
        return bool(data[offset]), offset + 1
    if marker == STRING:
        return _string(data, offset)
    if marker == LONG_STRING:
        return _string(data, offset, 4)
    if marker in (NULL, UNDEFINED):
        return None, offset
    if marker in (OBJECT, ECMA_ARRAY):
        if marker == ECMA_ARRAY:
            _need(data, offset, 4)
            offset += 4  # the count is a hint; the end marker ends it
        result: dict[str, Any] = {}
        while True:
            key, offset = _string(data, offset)
            _need(data, offset, 1)
            if key == "" and data[offset] == OBJECT_END:
                return result, offset + 1
            result[key], offset = _decode(data, offset, depth + 1)
    if marker == STRICT_ARRAY:
        _need(data, offset, 4)
        count = int.from_bytes(data[offset:offset + 4], "big")
        offset += 4
        if count > len(data):
            raise AmfError("AMF0 array longer than its message")
        items = []
        for _ in range(count):
            item, offset = _decode(data, offset, depth + 1)
            items.append(item)
        return items, offset
    if marker == DATE:
        _need(data, offset, 10)
        return struct.unpack_from(">d", data, offset)[0], offset + 10
    raise AmfError(f"unsupported AMF0 marker 0x{marker:02x}")
