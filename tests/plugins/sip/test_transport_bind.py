"""SIP transport binding: with port 0 the UDP socket's ephemeral port may already be held on TCP
(another connection's local port); the transport picks again instead of taking the SIP edge down,
while a configured port that is taken stays an error."""

from __future__ import annotations

import asyncio
import errno
import socket
from typing import Any

import pytest

from plugins.sip import transport as transport_module
from plugins.sip.transport import SipTransport


async def test_port_zero_retries_when_tcp_side_of_the_pick_is_taken(monkeypatch: Any) -> None:
    real_start_server = asyncio.start_server
    refused: list[int] = []

    async def busy_once(*args: Any, **kwargs: Any) -> Any:
        if not refused:
            refused.append(args[2])
            raise OSError(errno.EADDRINUSE, "address already in use")
        return await real_start_server(*args, **kwargs)

    monkeypatch.setattr(transport_module.asyncio, "start_server", busy_once)
    sip = SipTransport("127.0.0.1", 0, lambda *a: None)
    await sip.start()
    try:
        assert refused and sip.port and sip.udp is not None
        assert sip.udp.getsockname()[1] == sip.port
        assert sip._servers[0].sockets[0].getsockname()[1] == sip.port
    finally:
        await sip.close()


async def test_configured_port_taken_on_tcp_is_an_error() -> None:
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        sip = SipTransport("127.0.0.1", port, lambda *a: None)
        with pytest.raises(OSError):
            await sip.start()
        assert sip.udp is None
    finally:
        holder.close()
