"""The RTMP ingest server: one asyncio connection per publisher, on its own port.

Each connection is bounded in time (handshake and idle timeouts) and in memory (the chunk
decoder's limits): whatever a peer sends, only its own connection ends.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import structlog

from plugins.rtmp.session import RtmpConnection

if TYPE_CHECKING:
    from plugins.rtmp.config import RtmpConfig
    from plugins.rtmp.ingest import Publisher

log = structlog.get_logger(__name__)

# stream key, connection, app -> a started publisher (raises Rejected)
Authorizer = Callable[[str, RtmpConnection], Awaitable["Publisher"]]


class RtmpServer:
    def __init__(self, config: RtmpConfig, authorize: Authorizer) -> None:
        self.config = config
        self.authorize = authorize
        self.connections: set[RtmpConnection] = set()
        self.port = 0
        self._server: asyncio.Server | None = None
        self.accepted = 0
        self.refused = 0

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, self.config.host, self.config.port,
                                                  limit=1 << 20)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("rtmp ingest listening", host=self.config.host, port=self.port)
        return self.port

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self.connections) >= self.config.max_connections:
            self.refused += 1
            writer.close()
            return
        self.accepted += 1
        connection = RtmpConnection(self, reader, writer)
        self.connections.add(connection)
        try:
            await connection.run()
        finally:
            self.connections.discard(connection)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for connection in list(self.connections):
            connection.close("server_stopping")
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 5)
            self._server = None
