"""A gateway node for the RTMP end-to-end tests, driven through its REST API, plus media checks
(colour in a region, tone in a spectrum) on what ffmpeg read back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from aiohttp.test_utils import TestClient, TestServer

from gateway.events import Event
from gateway.node import Node
from tests.conftest import ACCESS_KEY, SECRET_KEY

WAIT_S = 60.0


class Gateway:
    def __init__(self, node: Node, client: TestClient, auth: dict[str, str]) -> None:
        self.node = node
        self.client = client
        self.auth = auth
        self.events = node.events.subscribe(None, maxsize=100000)
        self.seen: list[Event] = []

    async def call(self, method: str, path: str, status: int | None = None, **body: Any) -> Any:
        response = await self.client.request(method, path, json=body if body else None, headers=self.auth)
        data = await response.json()
        if status is not None:
            assert response.status == status, data
        return data

    async def room(self, room_id: str, **body: Any) -> dict[str, Any]:
        return await self.call("POST", "/v1/rooms", 201, room_id=room_id, **body)

    async def rtmp_ingress(self, room_id: str, identity: str) -> dict[str, Any]:
        return await self.call("POST", f"/v1/rooms/{room_id}/ingress", 201, kind="rtmp", identity=identity)

    async def push(self, room_id: str, urls: list[str], **body: Any) -> dict[str, Any]:
        return await self.call("POST", f"/v1/rooms/{room_id}/egress", 201, kind="rtmp", urls=urls, **body)

    async def egress(self, egress_id: str) -> dict[str, Any]:
        return await self.call("GET", f"/v1/egress/{egress_id}", 200)

    def drain(self) -> list[Event]:
        while not self.events.queue.empty():
            self.seen.append(self.events.queue.get_nowait())
        return self.seen

    def named(self, name: str, **data: Any) -> list[Event]:
        return [e for e in self.drain() if e.event == name and all(e.data.get(k) == v for k, v in data.items())]

    def url_states(self, egress_id: str, url: str) -> list[str]:
        """The URL's states as events told them, repeats left out."""
        return [e.data["state"] for e in self.named("egress.status", egress_id=egress_id, url=url)
                if not e.data.get("repeat")]

    async def participant(self, room_id: str, identity: str, tracks: int = 2) -> dict[str, Any]:
        """Wait until `identity` is in the room with `tracks` tracks."""
        found: dict[str, Any] = {}

        async def ready() -> bool:
            for participant in await self.call("GET", f"/v1/rooms/{room_id}/participants", 200):
                if participant["identity"] == identity and len(participant["tracks"]) >= tracks:
                    found.update(participant)
                    return True
            return False
        await wait_until(ready, f"{identity} publishing {tracks} tracks")
        return found

    async def wait_state(self, egress_id: str, url: str, state: str, timeout: float = WAIT_S) -> None:
        async def reached() -> bool:
            return state in self.url_states(egress_id, url)
        await wait_until(reached, f"{url} {state}", timeout)


async def wait_until(check: Callable[[], Awaitable[bool] | bool], what: str, timeout: float = WAIT_S) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"never happened: {what}")


@pytest.fixture
async def gateway_factory(make_node: Callable[..., Awaitable[Node]],
                          ) -> AsyncIterator[Callable[..., Awaitable[Gateway]]]:
    clients: list[TestClient] = []

    async def make(*overrides: str) -> Gateway:
        node = await make_node(*overrides)
        assert node.app is not None
        client = TestClient(TestServer(node.app))
        await client.start_server()
        clients.append(client)
        node.url = str(client.make_url("")).rstrip("/")
        response = await client.post("/v1/auth/token", json={"access_key": ACCESS_KEY, "secret_key": SECRET_KEY})
        token = (await response.json())["token"]
        return Gateway(node, client, {"Authorization": f"Bearer {token}"})

    yield make
    for client in clients:
        await client.close()


# ------------------------------------------------------------------------------ media checks
def decode(path: Path) -> tuple[list[np.ndarray], np.ndarray | None, int]:
    """RGB video frames, mono float audio and its sample rate."""
    frames: list[np.ndarray] = []
    audio: list[np.ndarray] = []
    rate = 0
    with av.open(str(path)) as container:
        for frame in container.decode(*container.streams):
            if isinstance(frame, av.VideoFrame):
                frames.append(frame.to_ndarray(format="rgb24"))
            else:
                samples = frame.to_ndarray()
                rate = frame.sample_rate
                audio.append(samples.mean(axis=0) if samples.ndim == 2 and samples.shape[0] <= 8 else samples.ravel())
    return frames, (np.concatenate(audio) if audio else None), rate


def region_mean(frame: np.ndarray, x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    h, w = frame.shape[:2]
    return frame[int(y0 * h):int(y1 * h), int(x0 * w):int(x1 * w)].reshape(-1, 3).mean(axis=0)


def assert_colour(frame: np.ndarray, rgb: tuple[int, int, int], box: tuple[float, float, float, float],
                  tolerance: float = 40) -> None:
    mean = region_mean(frame, *box)
    assert np.abs(mean - np.array(rgb)).max() < tolerance, f"region {box} is {mean.round()}, expected {rgb}"


def peak_hz(audio: np.ndarray, rate: int) -> float:
    window = audio[-min(len(audio), rate * 2):]
    spectrum = np.abs(np.fft.rfft(window * np.hanning(len(window))))
    spectrum[:int(50 * len(window) / rate)] = 0  # no DC
    return float(np.argmax(spectrum) * rate / len(window))
