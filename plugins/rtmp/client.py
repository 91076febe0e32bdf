"""A blocking RTMP publish client for CDN pushes (one per URL, on that URL's own thread).

Not PyAV's FLV muxer: its ``mux()`` blocks for as long as a stalled server stalls, with its
timeout options ignored on the output path. Here every socket operation is bounded by a timeout
(Python's ``sendall`` timeout covers the whole call), and another thread can end a blocked send
at once with :meth:`abort` (``shutdown`` on the socket) — the watchdog a stalled CDN needs.

Error codes follow the seed's push callbacks: 1 bad URL, 3 timed out, 1001 TCP connection
broken, 1002 TCP connect failed, 1003 publish refused by the server.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from plugins.rtmp import amf0, handshake
from plugins.rtmp import chunk as ch

BAD_URL, TIMED_OUT, CONNECTION_BROKEN, CONNECT_FAILED, REFUSED = 1, 3, 1001, 1002, 1003


class PushError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class RtmpUrl:
    scheme: str
    host: str
    port: int
    app: str
    stream: str  # stream name, with its query string (CDN auth keys live there)

    @property
    def tc_url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}/{self.app}"


def parse_url(url: str) -> RtmpUrl:
    """``rtmp[s]://host[:port]/app[/more]/stream[?query]``; raises ValueError naming the problem."""
    parts = urlsplit(url)
    if parts.scheme not in ("rtmp", "rtmps"):
        raise ValueError(f"{url!r}: the scheme must be rtmp or rtmps")
    if not parts.hostname:
        raise ValueError(f"{url!r} has no host")
    try:
        port = parts.port or (443 if parts.scheme == "rtmps" else 1935)
    except ValueError as exc:
        raise ValueError(f"{url!r}: bad port") from exc
    path = parts.path.strip("/")
    if "/" not in path:
        raise ValueError(f"{url!r} needs an application and a stream name: rtmp://host/app/stream")
    app, stream = path.rsplit("/", 1)
    if not app or not stream:
        raise ValueError(f"{url!r} needs an application and a stream name: rtmp://host/app/stream")
    if parts.query:
        stream += "?" + parts.query
    return RtmpUrl(parts.scheme, parts.hostname, port, app, stream)


def tls_context(ca_file: str | os.PathLike[str] | None = None, verify: bool = True) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=ca_file or None)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class RtmpPublishClient:
    def __init__(self, url: str, *, connect_timeout: float = 5.0, send_timeout: float = 5.0,
                 chunk_size: int = 4096, tls: ssl.SSLContext | None = None) -> None:
        self.url = parse_url(url)
        self.tls = tls
        self.connect_timeout = connect_timeout
        self.send_timeout = send_timeout
        self.chunk_size = chunk_size
        self.encoder = ch.ChunkEncoder()
        self.decoder = ch.ChunkDecoder(max_message=1 << 20)
        self.stream_id = 1
        self.bytes_out = 0
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._aborted = False
        self._peer_window = 0
        self._acked = 0
        self._last_poll = 0.0

    # ------------------------------------------------------------------ connect
    def connect(self) -> None:
        """TCP, handshake, connect, createStream, publish; all within ``connect_timeout``."""
        deadline = time.monotonic() + self.connect_timeout
        url = self.url
        try:
            sock = socket.create_connection((url.host, url.port), timeout=self.connect_timeout)
        except TimeoutError as exc:
            raise PushError(TIMED_OUT, f"connecting to {url.host}:{url.port} timed out") from exc
        except OSError as exc:
            raise PushError(CONNECT_FAILED, f"cannot connect to {url.host}:{url.port}: {exc}") from exc
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if url.scheme == "rtmps":
            try:
                sock = (self.tls or ssl.create_default_context()).wrap_socket(sock, server_hostname=url.host)
            except (OSError, ssl.SSLError) as exc:
                sock.close()
                raise PushError(CONNECT_FAILED, f"TLS with {url.host} failed: {exc}") from exc
        with self._lock:
            if self._aborted:
                sock.close()
                raise PushError(CONNECTION_BROKEN, "stopped")
            self._sock = sock
        try:
            self._handshake(deadline)
            self._write(self.encoder.set_chunk_size(self.chunk_size))
            self._command(0, "connect", 1.0, {"app": url.app, "type": "nonprivate",
                                              "flashVer": "FMLE/3.0 (compatible; mediagate)",
                                              "tcUrl": url.tc_url, "swfUrl": url.tc_url})
            self._expect_result(1.0, deadline, "connect")
            self._command(0, "releaseStream", 2.0, None, url.stream)
            self._command(0, "FCPublish", 3.0, None, url.stream)
            self._command(0, "createStream", 4.0, None)
            result = self._expect_result(4.0, deadline, "createStream")
            if len(result) > 3 and isinstance(result[3], float):
                self.stream_id = int(result[3])
            self._command(self.stream_id, "publish", 5.0, None, url.stream, "live")
            self._expect_status("NetStream.Publish.Start", deadline)
        except TimeoutError as exc:
            self.abort()
            raise PushError(TIMED_OUT, f"{url.host}:{url.port} did not answer in time") from exc
        except (OSError, ch.ProtocolError, amf0.AmfError, handshake.HandshakeError) as exc:
            self.abort()
            if isinstance(exc, PushError):
                raise
            raise PushError(CONNECTION_BROKEN, f"{url.host}:{url.port}: {exc}") from exc
        except PushError:
            self.abort()
            raise
        assert self._sock is not None
        self._sock.settimeout(self.send_timeout)

    def _handshake(self, deadline: float) -> None:
        c1 = handshake.c1()
        self._write(bytes([handshake.VERSION]) + c1)
        s0s1s2 = self._read_exactly(1 + 2 * handshake.SIZE, deadline)
        handshake.check_version(s0s1s2[:1])
        self._write(s0s1s2[1:1 + handshake.SIZE])  # C2 echoes S1

    def _read_exactly(self, size: int, deadline: float) -> bytes:
        out = bytearray()
        while len(out) < size:
            out += self._recv(deadline, size - len(out))
        return bytes(out)

    def _recv(self, deadline: float, size: int = 1 << 16) -> bytes:
        sock = self._sock
        if sock is None:
            raise PushError(CONNECTION_BROKEN, "not connected")
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("deadline")
        sock.settimeout(left)
        data = sock.recv(size)
        if not data:
            raise PushError(CONNECTION_BROKEN, "the server closed the connection")
        return data

    def _messages_until(self, deadline: float, want: Any) -> Any:
        while True:
            for message in self.decoder.feed(self._recv(deadline)):
                self._on_control(message)
                if message.type_id == ch.COMMAND_AMF0:
                    values = amf0.decode_all(message.payload)
                    found = want(values)
                    if found is not None:
                        return found

    def _expect_result(self, txn: float, deadline: float, what: str) -> list[Any]:
        def match(values: list[Any]) -> list[Any] | None:
            if len(values) > 1 and values[1] == txn and values[0] in ("_result", "_error"):
                if values[0] == "_error":
                    info = values[3] if len(values) > 3 and isinstance(values[3], dict) else {}
                    raise PushError(REFUSED, f"{what} refused: {info.get('description') or info.get('code') or info}")
                return values
            return None
        return self._messages_until(deadline, match)

    def _expect_status(self, code: str, deadline: float) -> None:
        def match(values: list[Any]) -> bool | None:
            if values and values[0] == "onStatus" and len(values) > 3 and isinstance(values[3], dict):
                info = values[3]
                if info.get("code") == code:
                    return True
                if info.get("level") == "error":
                    raise PushError(REFUSED, f"publish refused: {info.get('code')} {info.get('description', '')}")
            return None
        self._messages_until(deadline, match)

    def _on_control(self, message: ch.Message) -> None:
        if message.type_id == ch.WINDOW_ACK_SIZE and len(message.payload) >= 4:
            self._peer_window = int.from_bytes(message.payload[:4], "big")
        elif message.type_id == ch.USER_CONTROL and len(message.payload) >= 6 and message.payload[1] == 6:
            self._write(self.encoder.encode(*ch.user_control(7, int.from_bytes(message.payload[2:6], "big"))))

    # ------------------------------------------------------------------ sending
    def _command(self, stream_id: int, name: str, txn: float, *args: Any) -> None:
        body = amf0.encode_all(name, txn, *args)
        self._write(self.encoder.encode(ch.CS_COMMAND, ch.COMMAND_AMF0, stream_id, 0, body))

    def send_metadata(self, meta: dict[str, Any]) -> None:
        body = amf0.encode("@setDataFrame") + amf0.encode("onMetaData") + amf0.ecma_array(meta)
        self._write(self.encoder.encode(ch.CS_DATA, ch.DATA_AMF0, self.stream_id, 0, body))

    def send_video(self, timestamp: int, body: bytes) -> None:
        self._write(self.encoder.encode(ch.CS_VIDEO, ch.VIDEO, self.stream_id, timestamp, body))

    def send_audio(self, timestamp: int, body: bytes) -> None:
        self._write(self.encoder.encode(ch.CS_AUDIO, ch.AUDIO, self.stream_id, timestamp, body))

    def _write(self, data: bytes) -> None:
        sock = self._sock
        if sock is None or self._aborted:
            raise PushError(CONNECTION_BROKEN, "not connected")
        try:
            sock.sendall(data)
        except TimeoutError as exc:
            raise PushError(TIMED_OUT, f"the server accepted nothing for {self.send_timeout:g} s") from exc
        except OSError as exc:
            raise PushError(CONNECTION_BROKEN, f"connection lost: {exc}") from exc
        self.bytes_out += len(data)

    def poll(self) -> None:
        """Read what the server sent (acks, pings, errors) without blocking; a closed
        connection raises. Called between sends, at most a few times a second."""
        now = time.monotonic()
        if now - self._last_poll < 0.25 or self._sock is None:
            return
        self._last_poll = now
        sock = self._sock
        while True:
            try:
                # a socket with a timeout waits for readability itself (MSG_DONTWAIT is not
                # enough): ask select first
                readable, _, _ = select.select([sock], [], [], 0)
                if not readable:
                    break
                data = sock.recv(1 << 16)
            except (BlockingIOError, ssl.SSLWantReadError):
                break
            except OSError as exc:
                raise PushError(CONNECTION_BROKEN, f"connection lost: {exc}") from exc
            if not data:
                raise PushError(CONNECTION_BROKEN, "the server closed the connection")
            for message in self.decoder.feed(data):
                self._on_control(message)
                if message.type_id == ch.COMMAND_AMF0:
                    values = amf0.decode_all(message.payload)
                    if values and values[0] == "onStatus" and len(values) > 3 and isinstance(values[3], dict) \
                            and values[3].get("level") == "error":
                        raise PushError(REFUSED, f"the server ended the publish: {values[3].get('code')}")
        if self._peer_window and self.decoder.bytes_in - self._acked >= self._peer_window:
            self._acked = self.decoder.bytes_in
            self._write(self.encoder.encode(*ch.control(ch.ACK, self._acked & 0xFFFFFFFF)))

    # ------------------------------------------------------------------ closing
    def close(self) -> None:
        """Unpublish politely (best effort, short timeout), then close."""
        sock = self._sock
        if sock is not None and not self._aborted:
            try:
                sock.settimeout(1.0)
                self._command(0, "FCUnpublish", 6.0, None, self.url.stream)
                self._command(0, "deleteStream", 7.0, None, float(self.stream_id))
            except (PushError, OSError):
                pass
        self.abort()

    def abort(self) -> None:
        """Safe from any thread: a send blocked on a stalled server fails at once."""
        with self._lock:
            self._aborted = True
            sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
