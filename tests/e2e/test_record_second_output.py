"""A second recording that joins a composite already being encoded covers its whole
duration: its first frame is a keyframe asked for at once (not the GOP's next one), so its
frame count and first-frame time match the moment it was started, at 30 fps and at 10 fps."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import av
import pytest

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("fps", [30, 10])
async def test_a_second_recording_gets_its_whole_duration(client: Any, auth: dict[str, str], fps: int) -> None:
    room = f"second{fps}"
    await client.post("/v1/rooms", json={"room_id": room, "canvas": {"width": 320, "height": 180, "fps": fps}},
                      headers=auth)
    await client.post(f"/v1/rooms/{room}/ingress", headers=auth, json={
        "kind": "test", "identity": "red", "pattern": {"color": "FF0000", "width": 320, "height": 180}})
    first = await (await client.post(f"/v1/rooms/{room}/egress", headers=auth, json={"kind": "record"})).json()
    await asyncio.sleep(2.7)  # mid-GOP of the shared encoder (2 s GOP: the next keyframe is ~1.3 s away)
    asked = time.time()
    response = await client.post(f"/v1/rooms/{room}/egress", headers=auth, json={"kind": "record"})
    second = await response.json()
    assert second["request"]["encoding"] == first["request"]["encoding"]  # one shared encoder
    await asyncio.sleep(3.0)
    stopping = time.time()
    body = await (await client.delete(f"/v1/egress/{second['egress_id']}", headers=auth)).json()
    await client.delete(f"/v1/egress/{first['egress_id']}", headers=auth)
    info = body["files"][0]
    with av.open(info["path"]) as container:
        stream = container.streams.video[0]
        packets = [p for p in container.demux(stream) if p.size]
    assert packets[0].is_keyframe and packets[0].pts == 0
    wall = stopping - asked
    # a file that waited for the GOP's next keyframe would miss ~1.3 s here
    assert info["started_at"] - asked < 0.6, (info, asked)
    # (a loaded machine may drop a few frames of the shared encoder: 85 %)
    assert len(packets) >= 0.85 * (wall - 0.6) * fps, (len(packets), wall)
    assert info["duration_s"] >= wall - 0.6
    assert Path(info["path"]).stat().st_size == info["size"]
