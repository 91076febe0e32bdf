"""SIP transports (RFC 3261 §18): UDP and TCP (TLS by config) on configurable ports.

aiosipua's transport asserts ``isinstance(transport, asyncio.DatagramTransport)``, which
CPython 3.11's UDP transport is not, and cannot set the receive buffer; this module replaces
it. The UDP socket is made here with a large SO_RCVBUF (a burst of INVITEs at call-setup
rates otherwise overflows it during a GC pause). TCP frames messages by Content-Length.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass

import structlog

log = structlog.get_logger(__name__)

MAX_HEADER = 16384
MAX_BODY = 65535


@dataclass(frozen=True, slots=True)
class Peer:
    """Where a message came from or goes to."""

    transport: str  # udp, tcp, tls
    host: str
    port: int


Receiver = Callable[[bytes, Peer], None]


EPHEMERAL_ATTEMPTS = 8  # fresh port-0 picks before a bind error is reported
BATCH = 64  # datagrams read per readiness event before the loop runs anything else


class SipTransport:
    """One UDP socket and one TCP listener on the same port; messages go to `receiver`."""

    def __init__(self, host: str, port: int, receiver: Receiver, *, tcp: bool = True, rcvbuf: int = 4 << 20,
                 tls_port: int | None = None, tls_context: ssl.SSLContext | None = None) -> None:
        self.host, self.port = host, port
        self.receiver = receiver
        self.tcp_enabled = tcp
        self.rcvbuf = rcvbuf
        self.tls_port, self.tls_context = tls_port, tls_context
        self.udp: socket.socket | None = None
        self.send_dropped = 0
        self._servers: list[asyncio.AbstractServer] = []
        self._streams: dict[tuple[str, str, int], asyncio.StreamWriter] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        # port 0 asks for any free port: the UDP socket's ephemeral port may already be taken on TCP
        # (an outbound connection's local port), so a few fresh picks are tried before giving up
        attempts = EPHEMERAL_ATTEMPTS if self.port == 0 else 1
        for attempt in range(attempts):
            try:
                await self._bind_udp_and_tcp(self.port if attempts == 1 else 0)
                break
            except OSError:
                if attempt == attempts - 1:
                    raise
        if self.tls_context is not None and self.tls_port is not None:
            server = await asyncio.start_server(lambda r, w: self._serve(r, w, "tls"), self.host, self.tls_port,
                                                ssl=self.tls_context)
            self.tls_port = server.sockets[0].getsockname()[1]
            self._servers.append(server)

    async def _bind_udp_and_tcp(self, port: int) -> None:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.rcvbuf)
            sock.bind((self.host, port))
            sock.setblocking(False)
            bound = sock.getsockname()[1]
            if self.tcp_enabled:
                self._servers.append(await asyncio.start_server(
                    lambda r, w: self._serve(r, w, "tcp"), self.host, bound, reuse_address=True))
        except OSError:
            sock.close()
            raise
        self.port = bound
        # our own reader, not a DatagramProtocol: asyncio reads one datagram per loop pass (an
        # epoll round trip each); this drains up to BATCH per wake-up
        self.udp = sock
        loop.add_reader(sock.fileno(), self._read_udp)

    @property
    def received_buffer(self) -> int:
        return self.udp.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) if self.udp else 0

    def _read_udp(self) -> None:
        recv = self.udp.recvfrom  # type: ignore[union-attr]
        for _ in range(BATCH):
            try:
                data, addr = recv(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # ICMP unreachable from a gone peer, reported on the next read
                log.debug("sip udp error", error=str(exc))
                continue
            if data.strip(b"\r\n\x00 "):  # RFC 5626 keepalives are bare CRLFs
                self.deliver(data, Peer("udp", addr[0], addr[1]))

    def deliver(self, data: bytes, peer: Peer) -> None:
        try:
            self.receiver(data, peer)
        except Exception:  # one bad message must never take the listener down
            log.exception("sip message handling failed", peer=peer.host)

    def send(self, data: bytes, peer: Peer) -> None:
        if peer.transport == "udp":
            if self.udp is not None:
                try:
                    self.udp.sendto(data, (peer.host, peer.port))
                except (BlockingIOError, InterruptedError):
                    self.send_dropped += 1  # send buffer full: like a lost datagram, retransmission covers it
                except OSError as exc:
                    log.debug("sip udp send failed", peer=peer.host, error=str(exc))
            return
        writer = self._streams.get((peer.transport, peer.host, peer.port))
        if writer is not None and not writer.is_closing():
            writer.write(data)
            return
        task = asyncio.get_running_loop().create_task(self._connect_and_send(data, peer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _connect_and_send(self, data: bytes, peer: Peer) -> None:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(
                peer.host, peer.port, ssl=self.tls_context if peer.transport == "tls" else None), 5)
        except (OSError, TimeoutError) as exc:
            log.info("sip connect failed", peer=peer.host, port=peer.port, error=str(exc))
            return
        writer.write(data)
        await self._serve(reader, writer, peer.transport, peer)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, kind: str,
                     peer: Peer | None = None) -> None:
        if peer is None:
            addr = writer.get_extra_info("peername")
            peer = Peer(kind, addr[0], addr[1])
        key = (kind, peer.host, peer.port)
        self._streams[key] = writer
        try:
            while True:
                message = await read_stream_message(reader)
                if message is None:
                    break
                self.deliver(message, peer)
        except (ConnectionError, asyncio.IncompleteReadError, ValueError, asyncio.LimitOverrunError):
            pass
        finally:
            if self._streams.get(key) is writer:
                del self._streams[key]
            writer.close()

    async def close(self) -> None:
        for server in self._servers:
            server.close()
        for writer in list(self._streams.values()):
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        if self.udp is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self.udp.fileno())
            self.udp.close()
            self.udp = None
        for server in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 2)


async def read_stream_message(reader: asyncio.StreamReader) -> bytes | None:
    """One message from a stream (RFC 3261 §18.3): headers, then Content-Length bytes."""
    head = b""
    while not head.strip(b"\r\n"):  # skip keepalive CRLFs between messages
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return None
        if len(head) > MAX_HEADER:
            raise ValueError("header too large")
    head = head.lstrip(b"\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() in (b"content-length", b"l"):
            text = value.strip()
            if not text.isdigit() or int(text) > MAX_BODY:
                raise ValueError("bad Content-Length")
            length = int(text)
    body = await reader.readexactly(length) if length else b""
    return head + body
