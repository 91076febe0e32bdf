"""RTP socket pairs opened ahead of time on a worker thread, so a call set-up on the event
loop takes a ready pair instead of making ~8 socket syscalls (each gives the GIL away and,
with the media threads busy, waits to get it back)."""

from __future__ import annotations

import socket
import threading
from collections import deque

import structlog

from plugins.sip.rtp import PortAllocator

log = structlog.get_logger(__name__)

Pair = tuple[socket.socket, socket.socket, int]  # rtp, rtcp, the RTP port


class PortPool:
    def __init__(self, allocator: PortAllocator, size: int = 64) -> None:
        self.allocator = allocator
        self.size = size
        self._spare: deque[Pair] = deque()
        self._wanted = threading.Event()
        self._closed = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.size and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="sip-rtp-ports", daemon=True)
            self._thread.start()
            self._wanted.set()

    def take(self) -> Pair:
        """A bound, non-blocking pair; OSError when the port range is exhausted."""
        try:
            pair = self._spare.popleft()
        except IndexError:
            pair = self._open()  # the pool ran dry (a burst): open one here
        if len(self._spare) < self.size // 2:
            self._wanted.set()
        return pair

    def _open(self) -> Pair:
        rtp_sock, rtcp_sock = self.allocator.open()
        return rtp_sock, rtcp_sock, rtp_sock.getsockname()[1]

    def _run(self) -> None:
        while not self._closed:
            self._wanted.wait()
            self._wanted.clear()
            while not self._closed and len(self._spare) < self.size:
                try:
                    self._spare.append(self._open())
                except OSError as exc:  # range exhausted: take() reports it when it matters
                    log.debug("rtp pool not refilled", error=str(exc))
                    break

    def close(self) -> None:
        self._closed = True
        self._wanted.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        while self._spare:
            rtp_sock, rtcp_sock, _ = self._spare.popleft()
            rtp_sock.close()
            rtcp_sock.close()
