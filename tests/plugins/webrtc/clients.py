"""aiortc clients shaped like real ones: an OBS-style WHIP publisher and a WHEP viewer."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
from aiortc import RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.contrib.media import MediaPlayer


async def post_sdp(url: str, sdp: str, token: str | None) -> tuple[int, dict[str, str], str]:
    headers = {"Content-Type": "application/sdp"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    async with aiohttp.ClientSession() as http, http.post(url, data=sdp, headers=headers) as response:
        return response.status, response.headers.copy(), await response.text()  # type: ignore[return-value]


class Publisher:
    """OBS's request shape: H.264 (packetization-mode 1) + Opus, sendonly, no trickle, from a file
    whose packets go out as they are (no encoder in the client)."""

    def __init__(self, path: Path) -> None:
        self.player = MediaPlayer(str(path), decode=False)
        self.pc = RTCPeerConnection()
        self.location = ""

    async def offer(self) -> str:
        self.pc.addTransceiver(self.player.audio, direction="sendonly")
        video = self.pc.addTransceiver(self.player.video, direction="sendonly")
        video.setCodecPreferences([c for c in RTCRtpSender.getCapabilities("video").codecs
                                   if c.mimeType == "video/H264"])
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return self.pc.localDescription.sdp

    async def publish(self, base: str, room_id: str, token: str) -> tuple[int, dict[str, str]]:
        status, headers, body = await post_sdp(f"{base}/whip/{room_id}", await self.offer(), token)
        if status == 201:
            self.location = headers["Location"]
            await self.pc.setRemoteDescription(RTCSessionDescription(body, "answer"))
        return status, headers

    async def close(self) -> None:
        await self.pc.close()
        for track in (self.player.audio, self.player.video):
            if track is not None:
                track.stop()


class Viewer:
    """A WHEP viewer that decodes what it gets (aiortc's own decoders)."""

    def __init__(self, codecs: tuple[str, ...] = ("H264",)) -> None:
        self.pc = RTCPeerConnection()
        self.codecs = codecs
        self.frames: list[Any] = []
        self.audio_frames = 0
        self.location = ""
        self._tasks: list[asyncio.Task[None]] = []
        self.pc.on("track", self._on_track)

    def _on_track(self, track: Any) -> None:
        self._tasks.append(asyncio.ensure_future(self._read(track)))

    async def _read(self, track: Any) -> None:
        try:
            while True:
                frame = await track.recv()
                if track.kind == "video":
                    self.frames.append(frame)
                    del self.frames[:-5]
                else:
                    self.audio_frames += 1
        except Exception:
            return

    async def offer(self, audio: bool = True) -> str:
        video = self.pc.addTransceiver("video", direction="recvonly")
        video.setCodecPreferences([c for c in RTCRtpSender.getCapabilities("video").codecs
                                   if c.mimeType.split("/")[1] in self.codecs])
        if audio:
            self.pc.addTransceiver("audio", direction="recvonly")
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return self.pc.localDescription.sdp

    async def play(self, url: str, token: str, audio: bool = True) -> tuple[int, dict[str, str], str]:
        status, headers, body = await post_sdp(url, await self.offer(audio), token)
        if status == 201:
            self.location = headers["Location"]
            await self.pc.setRemoteDescription(RTCSessionDescription(body, "answer"))
        return status, headers, body

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await self.pc.close()
