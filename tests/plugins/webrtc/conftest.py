"""WebRTC plugin tests: a node gathering ICE on loopback, media files of known content."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from tests.api.conftest import Api
from tests.conftest import ACCESS_KEY, SECRET_KEY

LOOPBACK = ['plugins.webrtc.host_addresses=["127.0.0.1"]', "plugins.webrtc.consent_interval_s=0.5",
            "plugins.webrtc.consent_failures=4", "plugins.webrtc.connect_timeout_s=10"]


@dataclass
class Rtc:
    node: Any
    client: TestClient
    api: Api

    @property
    def url(self) -> str:
        return self.node.url

    @property
    def plugin(self) -> Any:
        return self.node.pm.get_plugin("webrtc")


@contextlib.asynccontextmanager
async def open_rtc(make_node: Callable[..., Awaitable[Any]], *overrides: str) -> AsyncIterator[Rtc]:
    """A node with the WebRTC plugin on loopback, served over real TCP (aiortc clients dial it)."""
    node = await make_node(*LOOPBACK, *overrides)
    async with TestClient(TestServer(node.app)) as client:
        node.url = str(client.make_url("")).rstrip("/")
        response = await client.post("/v1/auth/token", json={"access_key": ACCESS_KEY, "secret_key": SECRET_KEY})
        assert response.status == 200, await response.text()
        auth = {"Authorization": f"Bearer {(await response.json())['token']}"}
        yield Rtc(node, client, Api(client, auth))


@pytest.fixture
async def rtc(make_node: Callable[..., Awaitable[Any]]) -> AsyncIterator[Rtc]:
    async with open_rtc(make_node) as opened:
        yield opened


def make_h264_ts(path: Path, colour: str, tone_hz: float, seconds: float = 6) -> Path:
    """What OBS sends: H.264 (baseline, no B-frames, 1 s GOP, SPS/PPS in band) and Opus."""
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i", f"color=c=0x{colour}:s=640x360:r=30",
                    "-f", "lavfi", "-i", f"sine=f={tone_hz}:r=48000", "-t", str(seconds),
                    "-c:v", "libx264", "-profile:v", "baseline", "-bf", "0", "-g", "30", "-pix_fmt", "yuv420p",
                    "-c:a", "libopus", "-ac", "2", "-b:a", "64k", "-f", "mpegts", str(path)], check=True)
    return path


@pytest.fixture(scope="session")
def green_ts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_h264_ts(tmp_path_factory.mktemp("media") / "green.ts", "00FF00", 660.0)



async def wait_for(check: Callable[[], Any], what: str, timeout: float = 30) -> Any:
    """Poll until `check()` gives something truthy; fail only if it never does (no timing assertion)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        value = check()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"never happened: {what}")
