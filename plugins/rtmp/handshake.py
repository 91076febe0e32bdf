"""The RTMP handshake (Adobe RTMP 1.0 §5.2), in its simple form: C0/S0 version 3, C1/S1 of
1536 bytes (time, zero, random), C2/S2 echoing the peer's C1/S1. ffmpeg, OBS (librtmp) and
nginx-rtmp all accept it from a server; as a client, nginx-rtmp answers it too."""

from __future__ import annotations

import os
import struct
import time

VERSION = 3
SIZE = 1536


class HandshakeError(Exception):
    pass


def c1() -> bytes:
    """Our C1/S1: 4-byte time, 4 zero bytes, 1528 random bytes."""
    return struct.pack(">II", int(time.monotonic() * 1000) & 0xFFFFFFFF, 0) + os.urandom(SIZE - 8)


def check_version(c0: bytes) -> None:
    if not c0 or c0[0] != VERSION:
        version = c0[0] if c0 else None
        raise HandshakeError(f"RTMP version {version} is not 3 (RTMPE and non-RTMP traffic are refused)")
