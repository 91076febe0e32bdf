"""The ingest server acknowledges what a publisher sends, once per window (Window
Acknowledgement Size), as RTMP clients with flow control expect."""

from __future__ import annotations

import asyncio
import itertools
import select

from plugins.rtmp import chunk as ch
from plugins.rtmp.client import RtmpPublishClient
from plugins.rtmp.config import RtmpConfig
from plugins.rtmp.server import RtmpServer

WINDOW = 20_000
HANDSHAKE = 1 + 1536 + 1536  # C0 C1 C2: the client counts them as sent, acknowledgements do not


class _Sink:
    stream_id = 1

    def __init__(self) -> None:
        self.audio = 0

    def on_metadata(self, meta) -> None:
        pass

    def on_audio(self, timestamp: int, body: bytes) -> None:
        self.audio += 1

    async def end(self, reason: str) -> None:
        pass


async def test_acknowledgements_every_window() -> None:
    sink = _Sink()

    async def authorize(key: str, connection) -> _Sink:
        return sink

    server = RtmpServer(RtmpConfig(host="127.0.0.1", port=0, window_ack_size=WINDOW), authorize)
    await server.start()
    client = RtmpPublishClient(f"rtmp://127.0.0.1:{server.port}/live/k", connect_timeout=10)
    try:
        await asyncio.to_thread(client.connect)
        body = bytes([0xAF, 0x01]) + bytes(1000)

        def send_and_collect() -> list[int]:
            for index in range(200):  # ~200 KB: ten windows
                client.send_audio(index * 21, body)
            acks: list[int] = []
            sock = client._sock
            assert sock is not None
            # everything sent is acknowledged but for less than one window (the server acks
            # when a read completes a window, so the tail under a window stays unacknowledged)
            settled = client.bytes_out - HANDSHAKE - WINDOW
            while (not acks or acks[-1] <= settled) and select.select([sock], [], [], 10)[0]:
                data = sock.recv(65536)
                if not data:
                    break
                acks += [int.from_bytes(m.payload[:4], "big") for m in client.decoder.feed(data) if m.type_id == ch.ACK]
            return acks

        acks = await asyncio.to_thread(send_and_collect)
        # one acknowledgement per read that completes a window (reads coalesce windows)
        assert len(acks) >= 2 and acks == sorted(acks) and acks[-1] > client.bytes_out - HANDSHAKE - WINDOW
        assert all(b - a >= WINDOW for a, b in itertools.pairwise(acks))
        assert sink.audio > 0
    finally:
        client.abort()
        await server.stop()
