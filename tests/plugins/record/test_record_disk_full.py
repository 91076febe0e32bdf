"""Out of disk mid-recording, the task ends (failed, reason ``disk_full``, error
``insufficient_storage``) with an ``egress.ended`` event saying so, instead of staying active;
what was written before is kept, uploaded and plays. Two ways in: the free disk falls below
``spool.stop_free_mb`` (the watch ends the recording before a write fails), and a write that
fails with ENOSPC."""

from __future__ import annotations

import asyncio
import errno
import time
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from gateway.media.mp4 import Fmp4Writer
from tests.api.conftest import EventLog

WAIT_S = 60.0


async def record_red(client: Any, auth: dict[str, str], room: str) -> str:
    assert (await client.post("/v1/rooms", json={"room_id": room}, headers=auth)).status == 201
    response = await client.post(f"/v1/rooms/{room}/ingress", headers=auth, json={
        "kind": "test", "identity": "red", "pattern": {"color": "FF0000", "tone_hz": 440, "width": 160,
                                                       "height": 90}})
    assert response.status == 201, await response.text()
    response = await client.post(f"/v1/rooms/{room}/egress", headers=auth, json={
        "kind": "record", "record": {"formats": ["mp4"]},
        "encoding": {"width": 160, "height": 90, "fps": 10, "video_kbps": 200}})
    assert response.status == 201, await response.text()
    return str((await response.json())["egress_id"])


async def ended(log: EventLog, egress_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + WAIT_S
    while not (found := [e for e in log.named("egress.ended") if e.data["egress_id"] == egress_id]):
        assert time.monotonic() < deadline, "the recording never ended"
        await asyncio.sleep(0.1)
    return found[0].data


async def check_failed_with_its_file(node: Any, client: Any, auth: dict[str, str], data: dict[str, Any],
                                     egress_id: str, detail: str) -> None:
    assert data["status"] == "failed" and data["reason"] == "disk_full" and data["leave_code"] == 3, data
    assert data["error"]["code"] == "insufficient_storage" and detail in data["error"]["message"], data
    assert str(node.config.node.data_dir) not in data["error"]["message"]  # never a server path
    described = await (await client.get(f"/v1/egress/{egress_id}", headers=auth)).json()
    assert described["status"] == "failed" and described["error"]["code"] == "insufficient_storage", described
    file, = described["files"]
    assert file["upload"] == "done" and file["size"] > 0 and file["duration_s"] > 0.5, file
    with av.open(file["path"]) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) >= 5
    assert np.abs(frames[-1][45, 80].astype(int) - [255, 0, 0]).max() < 40  # the red source, as recorded


async def test_free_disk_below_stop_free_mb_ends_the_recording(node: Any, client: Any,
                                                               auth: dict[str, str]) -> None:
    log = EventLog(node, None)
    egress_id = await record_red(client, auth, "full1")
    await asyncio.sleep(2.0)
    node.spool.stop_free_bytes = node.spool.free_bytes() + 10**15  # the disk is full from now on
    data = await ended(log, egress_id)
    await check_failed_with_its_file(node, client, auth, data, egress_id, "spool.stop_free_mb")
    log.close()


async def test_a_write_failing_for_space_ends_the_recording(node: Any, client: Any, auth: dict[str, str],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    log = EventLog(node, None)
    write = Fmp4Writer.write
    armed = {"on": False}

    def write_until_full(self: Fmp4Writer, packet: av.Packet, kind: str) -> bool:
        if armed["on"]:
            raise OSError(errno.ENOSPC, "No space left on device", str(Path(self.path)))
        return write(self, packet, kind)

    monkeypatch.setattr(Fmp4Writer, "write", write_until_full)
    egress_id = await record_red(client, auth, "full2")
    await asyncio.sleep(2.0)
    armed["on"] = True
    data = await ended(log, egress_id)
    await check_failed_with_its_file(node, client, auth, data, egress_id, "No space left on device")
    log.close()


async def test_the_next_part_of_a_running_recording_needs_only_stop_free_mb(node: Any) -> None:
    """Between the two floors a running recording goes on: its next part is reserved."""
    from gateway.spool import InsufficientStorage

    free = node.spool.free_bytes()
    node.spool.min_free_bytes, node.spool.stop_free_bytes = free + 10**15, 0
    entry = node.spool.reserve(room_id="r", egress_id="EG_next", filename="part2.mp4",
                               storage={"backend": "local"}, running=True)
    node.spool.discard(entry)
    with pytest.raises(InsufficientStorage):
        node.spool.reserve(room_id="r", egress_id="EG_new", filename="part1.mp4", storage={"backend": "local"})
