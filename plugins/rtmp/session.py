"""One RTMP connection on the ingest server: handshake, NetConnection and NetStream commands
(connect, releaseStream, FCPublish, createStream, publish, deleteStream), acknowledgements, and
the audio/video messages of a publish handed to its :class:`~plugins.rtmp.ingest.Publisher`.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING, Any

import structlog

from plugins.rtmp import amf0, handshake
from plugins.rtmp import chunk as ch
from plugins.rtmp.flv import UnsupportedCodec

if TYPE_CHECKING:
    from plugins.rtmp.ingest import Publisher
    from plugins.rtmp.server import RtmpServer

log = structlog.get_logger(__name__)


class Rejected(Exception):
    """A publish refused (unknown stream key, room closed, no publish permission)."""

    def __init__(self, code: str, reason: str, room_id: str | None = None) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.room_id = room_id


class _Receiver(asyncio.Protocol):
    """Takes over the transport after the handshake: bytes go straight from the event loop's
    read callback to the chunk decoder, without a StreamReader future and task wake-up per read
    (most of the loop's cost for a publisher)."""

    def __init__(self, connection: RtmpConnection) -> None:
        self.connection = connection

    def data_received(self, data: bytes) -> None:
        self.connection._on_data(data)

    def eof_received(self) -> bool:
        self.connection._on_lost(None)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.connection._on_lost(exc)


class RtmpConnection:
    def __init__(self, server: RtmpServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.server = server
        self.config = server.config
        self.reader = reader
        self.writer = writer
        peer = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        self.decoder = ch.ChunkDecoder(max_message=self.config.max_message_bytes)
        self.encoder = ch.ChunkEncoder()
        self.app = ""
        self.tc_url = ""
        self.stream_name = ""
        self.publisher: Publisher | None = None
        self.metadata: dict[str, Any] = {}
        self.close_reason = ""
        self._acked = 0
        self._peer_window = 0  # the peer's window: we acknowledge what it sends
        self._closing = False
        self._timed_out = False
        self._last_read = 0.0
        self._loop = asyncio.get_running_loop()
        self._watchdog: asyncio.TimerHandle | None = None
        # after the handshake: messages waiting for the connection's task (commands, and any
        # media behind them, in order), and how the stream ended
        self._pending: deque[ch.Message] = deque()
        self._wake = asyncio.Event()
        self._ended = False
        self._error: BaseException | None = None

    # ------------------------------------------------------------------ lifecycle
    async def run(self) -> None:
        reason = "closed"
        try:
            await asyncio.wait_for(self._handshake(), self.config.handshake_timeout_s)
            await self._serve()
        except TimeoutError:
            reason = "timeout"
        except (asyncio.IncompleteReadError, ConnectionError):
            reason = "disconnected"
        except (handshake.HandshakeError, ch.ProtocolError, amf0.AmfError) as exc:
            reason = f"protocol error: {exc}"
        except UnsupportedCodec as exc:
            reason = f"unsupported codec: {exc}"
            if self.publisher is not None:
                self.publisher.fail("unsupported_codec", str(exc))
        except Exception:
            log.exception("rtmp connection failed", peer=self.peer)
            reason = "internal error"
        finally:
            reason = self.close_reason or reason
            log.info("rtmp connection closed", peer=self.peer, reason=reason, stream=self._masked(),
                     bytes_in=self.decoder.bytes_in)
            await self._end_publish(reason)
            self._close_transport()

    def close(self, reason: str) -> None:
        """Drop the connection (a kick, a re-publish with the same key, the node stopping)."""
        if not self.close_reason:
            self.close_reason = reason
        self._close_transport()

    def _close_transport(self) -> None:
        if not self._closing:
            self._closing = True
            self.writer.close()

    def _masked(self) -> str:
        name = self.stream_name
        return name[:4] + "…" if len(name) > 4 else name

    # ------------------------------------------------------------------ handshake
    async def _handshake(self) -> None:
        c0 = await self.reader.readexactly(1)
        handshake.check_version(c0)
        c1 = await self.reader.readexactly(handshake.SIZE)
        s1 = handshake.c1()
        self.writer.write(bytes([handshake.VERSION]) + s1 + c1)
        await self.writer.drain()
        await self.reader.readexactly(handshake.SIZE)  # C2: an echo of S1, not checked (clients vary)

    # ------------------------------------------------------------------ messages
    async def _serve(self) -> None:
        # one idle watchdog per connection rather than a wait_for (a task) per read
        loop = asyncio.get_running_loop()
        self._last_read = loop.time()
        self._watchdog = loop.call_later(self.config.idle_timeout_s, self._check_idle)
        reader = self.reader
        leftover = bytes(reader._buffer)  # what came in with C2 (the connect command, often)
        reader._buffer.clear()
        at_eof = reader.at_eof()
        if reader.exception() is not None:
            raise reader.exception()  # type: ignore[misc]
        self.writer.transport.set_protocol(_Receiver(self))
        try:
            if leftover:
                self._on_data(leftover)
            if at_eof:
                self._on_lost(None)
            while True:
                while self._pending and self._error is None:
                    await self._handle(self._pending.popleft())
                if self._error is not None:
                    raise self._error
                if self._ended:
                    if self._timed_out:
                        raise TimeoutError
                    return
                self._wake.clear()
                if not self._pending:
                    await self._wake.wait()
        finally:
            self._watchdog.cancel()

    def _on_data(self, data: bytes) -> None:
        """From the event loop's read callback: parse, hand media straight to the publisher when
        nothing waits before it, queue the rest for the connection's task."""
        if self._error is not None or self._ended:
            return
        self._last_read = self._loop.time()
        try:
            messages = self._parse(data)
            pending = self._pending
            publisher = self.publisher
            for message in messages:
                kind = message.type_id
                if pending or publisher is None or (kind != ch.VIDEO and kind != ch.AUDIO):
                    pending.append(message)
                elif kind == ch.VIDEO:
                    publisher.on_video(message.timestamp, message.payload)
                else:
                    publisher.on_audio(message.timestamp, message.payload)
            if self.writer.transport.get_write_buffer_size() > 1 << 20:
                raise ch.ProtocolError("the peer does not read what we send")
        except Exception as exc:  # the connection's task raises it and closes
            self._error = exc
            self.writer.transport.pause_reading()
        if self._pending or self._error is not None:
            self._wake.set()

    def _on_lost(self, exc: Exception | None) -> None:
        if exc is not None and self._error is None:
            self._error = exc if isinstance(exc, ConnectionError) else ConnectionResetError(str(exc))
        self._ended = True
        self._wake.set()

    def _check_idle(self) -> None:
        loop = asyncio.get_running_loop()
        idle = loop.time() - self._last_read
        if idle >= self.config.idle_timeout_s:
            self._timed_out = True
            self._close_transport()  # the pending read returns b"" and run() reports the timeout
            return
        self._watchdog = loop.call_later(self.config.idle_timeout_s - idle, self._check_idle)

    def _parse(self, data: bytes) -> list[ch.Message]:
        messages = self.decoder.feed(data)
        # acknowledge at the window the peer set, else at the one we announced (nginx-rtmp's way)
        window = self._peer_window or self.config.window_ack_size
        if self.decoder.bytes_in - self._acked >= window:
            self._acked = self.decoder.bytes_in
            self._send(*ch.control(ch.ACK, self._acked & 0xFFFFFFFF))
        return messages

    async def _handle(self, message: ch.Message) -> None:
        kind = message.type_id
        if kind == ch.VIDEO or kind == ch.AUDIO:
            if self.publisher is None:
                raise ch.ProtocolError("media before publish")
            if kind == ch.VIDEO:
                self.publisher.on_video(message.timestamp, message.payload)
            else:
                self.publisher.on_audio(message.timestamp, message.payload)
        elif kind == ch.COMMAND_AMF0 or kind == ch.COMMAND_AMF3:
            payload = message.payload[1:] if kind == ch.COMMAND_AMF3 else message.payload
            await self._command(message.stream_id, amf0.decode_all(payload))
        elif kind == ch.DATA_AMF0 or kind == ch.DATA_AMF3:
            payload = message.payload[1:] if kind == ch.DATA_AMF3 else message.payload
            self._data(amf0.decode_all(payload))
        elif kind == ch.WINDOW_ACK_SIZE and len(message.payload) >= 4:
            self._peer_window = int.from_bytes(message.payload[:4], "big")
        elif kind == ch.USER_CONTROL and len(message.payload) >= 6:
            event = int.from_bytes(message.payload[:2], "big")
            if event == 6:  # PingRequest -> PingResponse
                self._send(*ch.user_control(7, int.from_bytes(message.payload[2:6], "big")))
        elif kind == ch.AGGREGATE:
            raise ch.ProtocolError("aggregate messages are not supported")
        # SET_CHUNK_SIZE and ABORT are handled by the decoder; ACK and bandwidth need nothing

    def _data(self, values: list[Any]) -> None:
        if values and values[0] == "@setDataFrame":
            values = values[1:]
        if len(values) >= 2 and values[0] == "onMetaData" and isinstance(values[1], dict):
            self.metadata = values[1]
            if self.publisher is not None:
                self.publisher.on_metadata(self.metadata)

    async def _command(self, stream_id: int, values: list[Any]) -> None:
        if not values or not isinstance(values[0], str):
            raise ch.ProtocolError("command without a name")
        name = values[0]
        txn = values[1] if len(values) > 1 and isinstance(values[1], float) else 0.0
        if name == "connect":
            params = values[2] if len(values) > 2 and isinstance(values[2], dict) else {}
            self.app = str(params.get("app", ""))
            self.tc_url = str(params.get("tcUrl", ""))
            self._send(*ch.control(ch.WINDOW_ACK_SIZE, self.config.window_ack_size))
            self._send(*ch.control(ch.SET_PEER_BANDWIDTH, self.config.window_ack_size, b"\x02"))
            self._write(self.encoder.set_chunk_size(self.config.chunk_size))
            self._send(*ch.user_control(0, 0))  # StreamBegin 0
            self._result(0, txn, {"fmsVer": "FMS/3,5,7,7009", "capabilities": 31.0, "mode": 1.0},
                         {"level": "status", "code": "NetConnection.Connect.Success",
                          "description": "Connection succeeded.", "objectEncoding": 0.0})
        elif name == "createStream":
            self._result(0, txn, None, 1.0)
        elif name in ("releaseStream", "FCPublish", "getStreamLength"):
            if txn:
                self._result(0, txn, None)
        elif name == "publish":
            await self._publish(stream_id or 1, values[3] if len(values) > 3 else "")
        elif name in ("FCUnpublish", "deleteStream", "closeStream"):
            await self._end_publish("unpublished")
        elif name == "play":
            self._status(stream_id or 1, "error", "NetStream.Play.Failed", "this server takes publishers only")
            self.close("play refused")
        # anything else (checkbw, _checkbw, ...) is ignored, as other servers do

    async def _publish(self, stream_id: int, name: Any) -> None:
        if self.publisher is not None:
            raise ch.ProtocolError("a second publish on one connection")
        key = str(name or "").split("?", 1)[0].strip()
        if not key and "/" in self.app:  # rtmp://host/live/KEY given to a client that puts it all in app
            key = self.app.split("/", 1)[1]
        self.stream_name = key
        try:
            publisher = await self.server.authorize(key, self)
        except Rejected as exc:
            log.warning("rtmp publish refused", peer=self.peer, reason=exc.reason, code=exc.code, app=self.app)
            self._status(stream_id, "error", "NetStream.Publish.BadName", exc.reason)
            self.close(f"refused: {exc.reason}")
            return
        self.publisher = publisher
        publisher.stream_id = stream_id
        if self.metadata:
            publisher.on_metadata(self.metadata)
        self._send(*ch.user_control(0, stream_id))
        self._status(stream_id, "status", "NetStream.Publish.Start", f"{key[:4]}… is now published")

    async def _end_publish(self, reason: str) -> None:
        publisher, self.publisher = self.publisher, None
        if publisher is not None:
            await publisher.end(reason)

    # ------------------------------------------------------------------ writing
    def _write(self, data: bytes) -> None:
        if not self._closing:
            self.writer.write(data)

    def _send(self, csid: int, type_id: int, stream_id: int, timestamp: int, payload: bytes) -> None:
        self._write(self.encoder.encode(csid, type_id, stream_id, timestamp, payload))

    def _result(self, stream_id: int, txn: float, *values: Any) -> None:
        self._send(ch.CS_COMMAND, ch.COMMAND_AMF0, stream_id, 0, amf0.encode_all("_result", txn, *values))

    def _status(self, stream_id: int, level: str, code: str, description: str) -> None:
        body = amf0.encode_all("onStatus", 0.0, None, {"level": level, "code": code, "description": description})
        self._send(ch.CS_DATA, ch.COMMAND_AMF0, stream_id, 0, body)
