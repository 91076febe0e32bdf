"""Publishes over WHIP, prints the session's Location, then waits to be killed (-9): a peer
that vanishes without DELETE or DTLS close."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from plugins.webrtc import ice
from plugins.webrtc.config import WebRTCConfig
from tests.plugins.webrtc.clients import Publisher


async def main(base: str, room_id: str, token: str, media: str) -> None:
    ice.apply(WebRTCConfig(host_addresses=["127.0.0.1"]))
    publisher = Publisher(Path(media))
    status, headers = await publisher.publish(base, room_id, token)
    print(status, headers.get("Location", ""), flush=True)
    await asyncio.sleep(3600)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
