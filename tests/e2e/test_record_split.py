"""Splitting: a composite recording cut every 2 s gives parts that join with no gap and no
overlap — by their timestamps (ffprobe and PyAV) and by their content: a source whose picture
carries a frame counter, and an unsplit recording of the same shared encoder running alongside,
whose pictures the parts, put end to end, must repeat exactly — and whose durations add up to
the recording's length."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.record_media import Publisher, decode_video, ffprobe, read_counter

pytestmark = pytest.mark.e2e
FPS = 30
SOURCE_FPS = 60


async def test_split_every_2s_joins_without_gap_or_overlap(client: Any, auth: dict[str, str], node: Any) -> None:
    await client.post("/v1/rooms", json={"room_id": "split", "canvas": {"width": 320, "height": 180, "fps": FPS}},
                      headers=auth)
    publisher = await Publisher(node, "split", "counter", fps=SOURCE_FPS).start()
    try:
        whole = await (await client.post("/v1/rooms/split/egress", headers=auth, json={"kind": "record"})).json()
        response = await client.post("/v1/rooms/split/egress", headers=auth, json={
            "kind": "record", "record": {"formats": ["mp4"], "split_seconds": 2}})
        assert response.status == 201, await response.text()
        body = await response.json()
        assert body["request"]["encoding"]["width"] == 320 and body["request"]["encoding"]["fps"] == FPS
        await asyncio.sleep(6.5)
        body = await (await client.delete(f"/v1/egress/{body['egress_id']}", headers=auth)).json()
        whole = await (await client.delete(f"/v1/egress/{whole['egress_id']}", headers=auth)).json()
    finally:
        publisher.stop()
    files = sorted(body["files"], key=lambda f: f["index"])
    assert len(files) >= 3, files
    assert [f["index"] for f in files] == list(range(1, len(files) + 1))
    frame = 1 / FPS
    counters: list[list[int]] = []
    stamps: list[list[float]] = []
    for info in files:
        path = Path(info["path"])
        times, pictures = decode_video(path)
        assert times[0] == pytest.approx(0, abs=1e-6)  # every part starts at its own zero
        # on the canvas grid (a loaded machine may skip a frame, never shift one)
        assert all(abs(t * FPS - round(t * FPS)) < 0.01 for t in times)
        assert all(b > a for a, b in itertools.pairwise(times))
        probe = float(ffprobe(path)["format"]["duration"])
        assert probe == pytest.approx(info["duration_s"], abs=frame)
        assert times[-1] + frame == pytest.approx(info["duration_s"], abs=frame / 2)
        counters.append([read_counter(p) for p in pictures])
        stamps.append(times)
    for info in files[:-1]:  # inner parts are cut at the split point (a forced keyframe; an encoder
        # running behind on a loaded machine may place it a few frames early)
        assert info["duration_s"] == pytest.approx(2.0, abs=6 * frame), files
    # timestamps: each part starts where the one before ended
    for before, after in itertools.pairwise(files):
        assert after["started_at"] == pytest.approx(before["ended_at"], abs=frame), (before, after)
    length = files[-1]["ended_at"] - files[0]["started_at"]
    assert sum(f["duration_s"] for f in files) == pytest.approx(length, abs=frame)
    assert sum(times[-1] + frame for times in stamps) == pytest.approx(length, abs=frame)
    # content: the parts end to end show exactly the pictures the unsplit recording shows over
    # the same stretch: nothing repeated (overlap), nothing left out (gap)
    _times, reference_pictures = decode_video(Path(whole["files"][0]["path"]))
    reference = [read_counter(p) for p in reference_pictures]
    joined = [c for part in counters for c in part]
    starts = [k for k in range(len(reference) - len(joined) + 1) if reference[k:k + len(joined)] == joined]
    assert starts, (joined[:8], reference[:8])
    inner = [(b - a) % (1 << 10) for part in counters for a, b in itertools.pairwise(part)]
    assert sorted(inner)[len(inner) // 2] == pytest.approx(SOURCE_FPS / FPS, abs=1)  # the probe reads the counter
    for i in range(len(files) - 1):  # and the next part starts one frame after the part before
        assert files[i]["duration_s"] - stamps[i][-1] == pytest.approx(frame, abs=frame / 2)
