"""Unpredictable ids without a system call per id.

``uuid4``/``secrets`` read ``os.urandom`` for every id: a syscall that releases the GIL, and
when media threads hold it the event loop waits up to a switch interval to get it back (the
SIP setup bench showed it). A seeded ``random.Random`` avoids that but is predictable from its
outputs, and SIP tags must be cryptographically random (RFC 3261 §19.3); ids also name sessions
in URLs. So: the OS's randomness, read 64 KiB at a time and handed out in slices.
"""

from __future__ import annotations

import os
import threading

_CHUNK = 65536
_lock = threading.Lock()
_buffer = b""
_offset = 0


def random_bytes(count: int) -> bytes:
    """`count` bytes from the OS's CSPRNG, each byte handed out once."""
    global _buffer, _offset
    with _lock:
        if _offset + count > len(_buffer):
            _buffer, _offset = os.urandom(max(_CHUNK, count)), 0
        start = _offset
        _offset += count
        return _buffer[start:_offset]


def random_hex(bits: int) -> str:
    """`bits` (a multiple of 8) random bits as lowercase hex."""
    return random_bytes(bits // 8).hex()
