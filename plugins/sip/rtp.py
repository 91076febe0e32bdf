"""RTP (RFC 3550) packets and the sockets of a leg: a port pair taken from the configured range."""

from __future__ import annotations

import random
import socket
import struct
import threading
from dataclasses import dataclass

HEADER = struct.Struct("!BBHII")


class RtpError(ValueError):
    pass


@dataclass(slots=True)
class RtpPacket:
    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes
    marker: bool = False


def parse(data: bytes) -> RtpPacket:
    """An RTP packet; CSRCs, header extensions and padding are skipped."""
    if len(data) < 12:
        raise RtpError("short packet")
    b0, b1, seq, ts, ssrc = HEADER.unpack_from(data)
    if b0 >> 6 != 2:
        raise RtpError("not RTP version 2")
    offset = 12 + 4 * (b0 & 0x0F)
    if b0 & 0x10:
        if len(data) < offset + 4:
            raise RtpError("short extension")
        offset += 4 + 4 * int.from_bytes(data[offset + 2:offset + 4], "big")
    end = len(data)
    if b0 & 0x20 and end > offset:
        end -= data[-1]
    if offset > end:
        raise RtpError("bad lengths")
    return RtpPacket(b1 & 0x7F, seq, ts, ssrc, data[offset:end], bool(b1 & 0x80))


def build(payload_type: int, sequence: int, timestamp: int, ssrc: int, payload: bytes, marker: bool = False) -> bytes:
    return HEADER.pack(0x80, payload_type | (0x80 if marker else 0), sequence & 0xFFFF,
                       timestamp & 0xFFFFFFFF, ssrc) + payload


def is_rtcp(data: bytes) -> bool:
    """RFC 5761 §4: payload types 64-95 (with the marker bit, 192-223) are RTCP."""
    return len(data) >= 2 and 192 <= data[1] <= 223


class PortAllocator:
    """Even RTP ports (RTCP on the next odd one) from [low, high], skipping ports in use."""

    def __init__(self, low: int, high: int, host: str, rcvbuf: int) -> None:
        self.low, self.high = low & ~1, high
        self.host = host
        self.rcvbuf = rcvbuf
        self._next = self.low + 2 * random.randrange(max(1, (high - self.low) // 2))
        self._lock = threading.Lock()

    def open(self) -> tuple[socket.socket, socket.socket]:
        """A bound, non-blocking (rtp, rtcp) socket pair; OSError when the range is exhausted."""
        span = max(1, (self.high - self.low) // 2)
        with self._lock:
            for _ in range(span):
                port = self._next
                self._next = port + 2 if port + 2 < self.high else self.low
                pair = self._try(port)
                if pair is not None:
                    return pair
        raise OSError("RTP port range exhausted")

    def _try(self, port: int) -> tuple[socket.socket, socket.socket] | None:
        opened = []
        try:
            for p in ((port, port + 1) if port else (0, 0)):  # 0: any ports the OS gives
                sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET, socket.SOCK_DGRAM)
                opened.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)
                sock.setblocking(False)
                sock.bind((self.host, p))
        except OSError:
            for sock in opened:
                sock.close()
            return None
        return opened[0], opened[1]
