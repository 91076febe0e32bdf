"""A short recording of a red test source through a node, for the backend tests."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any

import av
import numpy as np
from aiohttp.test_utils import TestClient, TestServer

from tests.conftest import ACCESS_KEY, SECRET_KEY


async def record_red(node: Any, storage: dict[str, Any]) -> dict[str, Any]:
    """Record a red test source for two seconds; the upload.done event's data."""
    async with TestClient(TestServer(node.app)) as client:
        auth = {"Authorization": "Basic " + base64.b64encode(f"{ACCESS_KEY}:{SECRET_KEY}".encode()).decode()}
        room = "cosroom" if storage["backend"] == "cos" else "qnroom"
        assert (await client.post("/v1/rooms", json={"room_id": room}, headers=auth)).status == 201
        response = await client.post(f"/v1/rooms/{room}/ingress", headers=auth,
                                     json={"kind": "test", "identity": "red", "pattern": {"color": "FF0000"}})
        assert response.status == 201
        subscription = node.events.subscribe(None, maxsize=10000)
        response = await client.post(f"/v1/rooms/{room}/egress", headers=auth, json={
            "kind": "record", "record": {"storage": storage},
            "encoding": {"width": 320, "height": 240, "fps": 15, "video_kbps": 400}})
        assert response.status == 201, await response.text()
        egress_id = (await response.json())["egress_id"]
        await asyncio.sleep(2.5)
        stopped = await (await client.delete(f"/v1/egress/{egress_id}", headers=auth)).json()
        assert stopped["status"] == "complete", stopped
        while True:
            event = await asyncio.wait_for(subscription.queue.get(), 30)
            if event.event in ("upload.done", "upload.failed") and event.data["egress_id"] == egress_id:
                assert event.event == "upload.done", event.data
                assert stopped["files"][0]["url"] == event.data["url"]
                subscription.close()
                return event.data


def assert_red(body: bytes, tmp_path: Path) -> None:
    path = tmp_path / "back.mp4"
    path.write_bytes(body)
    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) > 15
    assert np.abs(frames[-1][120, 160].astype(int) - [255, 0, 0]).max() < 40
