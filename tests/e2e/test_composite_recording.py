"""Issue "media engine" acceptance: four test sources of distinct colours and tones, recorded
for six seconds under the grid template, a custom layout (overlap, alpha 0.5, z-order,
background, CJK text watermark) and the floating template; the decoded files show every
colour where its region is and every tone in the audio spectrum. ffprobe (a real peer)
confirms the files are well-formed MP4 with H.264 and AAC."""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from gateway.media.layout.model import Layout
from gateway.media.layout.placed import VideoSource
from gateway.media.layout.resolve import resolve

pytestmark = pytest.mark.e2e

SOURCES = {  # identity: (colour RRGGBB, tone Hz)
    "red": ("FF0000", 500.0),
    "green": ("00FF00", 700.0),
    "blue": ("0000FF", 1100.0),
    "yellow": ("FFFF00", 1700.0),
}
RGB = {name: tuple(int(colour[i:i + 2], 16) for i in (0, 2, 4)) for name, (colour, _) in SOURCES.items()}
BACKGROUND = (255, 0, 255)
RECORD_S = 6


async def record(client: Any, auth: dict[str, str], room: str, seconds: float) -> Path:
    response = await client.post(f"/v1/rooms/{room}/egress", headers=auth, json={
        "kind": "record", "record": {"formats": ["mp4"], "storage": {"backend": "local"}},
        "encoding": {"width": 1280, "height": 720, "fps": 30, "video_kbps": 4000}})
    assert response.status == 201, await response.text()
    egress_id = (await response.json())["egress_id"]
    await asyncio.sleep(seconds)
    response = await client.delete(f"/v1/egress/{egress_id}", headers=auth)
    body = await response.json()
    assert body["status"] == "complete", body
    assert body["files"][0]["duration_s"] > seconds - 1.5
    return Path(body["files"][0]["path"])


def decode(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The last video frame (RGB) and the whole audio track (mono float)."""
    with av.open(str(path)) as container:
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    with av.open(str(path)) as container:
        chunks = [frame.to_ndarray() for frame in container.decode(audio=0)]
    audio = np.concatenate([c.mean(axis=0) if c.ndim == 2 else c for c in chunks])
    # a 30 fps canvas; a loaded CI machine drops frames, a broken recording has next to none
    assert len(frames) > RECORD_S * 10, f"only {len(frames)} frames"
    return frames[-1].astype(int), audio


def near(pixel: np.ndarray, rgb: tuple[int, ...], tolerance: int = 40) -> bool:
    return bool(np.abs(pixel - np.array(rgb)).max() <= tolerance)


def centre(frame: np.ndarray, x: int, y: int, w: int, h: int) -> np.ndarray:
    """Mean colour of a small patch at a rectangle's centre (robust to codec noise)."""
    cx, cy = x + w // 2, y + h // 2
    return frame[cy - 4:cy + 4, cx - 4:cx + 4].reshape(-1, 3).mean(axis=0)


def assert_tones(audio: np.ndarray, present: list[float]) -> None:
    audio = audio[len(audio) // 4:]  # past the start, where the jitter buffers prime
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    freqs = np.fft.rfftfreq(len(audio), 1 / 48000)
    floor = np.median(spectrum)

    def peak(hz: float) -> float:
        band = (freqs > hz - 8) & (freqs < hz + 8)
        return float(spectrum[band].max())

    for hz in present:
        assert peak(hz) > 100 * floor, f"{hz} Hz missing: {peak(hz):.1f} vs floor {floor:.3f}"


def ffprobe(path: Path) -> dict[str, Any]:
    out = subprocess.run(["ffprobe", "-v", "error", "-show_streams", "-show_format", "-of", "json", str(path)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


@pytest.fixture
async def room(client: Any, auth: dict[str, str]) -> dict[str, str]:
    """The room 'e2e' with the four sources; returns identity -> participant id."""
    response = await client.post("/v1/rooms", json={"room_id": "e2e"}, headers=auth)
    assert response.status == 201
    ids = {}
    for identity, (colour, tone) in SOURCES.items():
        response = await client.post("/v1/rooms/e2e/ingress", headers=auth, json={
            "kind": "test", "identity": identity, "pattern": {"color": colour, "tone_hz": tone, "volume": 0.2}})
        assert response.status == 201, await response.text()
        ids[identity] = (await response.json())["participant_id"]
    return ids


async def put_layout(client: Any, auth: dict[str, str], layout: dict[str, Any]) -> None:
    response = await client.put("/v1/rooms/e2e/layout", json=layout, headers=auth)
    assert response.status == 200, await response.text()


async def test_grid_custom_floating_recordings(client: Any, auth: dict[str, str], room: dict[str, str],
                                              node: Any) -> None:
    tones = [tone for _, tone in SOURCES.values()]

    # 1. grid: four sources -> 2x2 of 640x360, in join order
    await put_layout(client, auth, {"template": "grid", "canvas": {"width": 1280, "height": 720}})
    frame, audio = decode(await record(client, auth, "e2e", RECORD_S))
    for name, (x, y) in zip(SOURCES, [(0, 0), (640, 0), (0, 360), (640, 360)], strict=True):
        assert near(centre(frame, x, y, 640, 360), RGB[name]), name
    assert_tones(audio, tones)

    # 2. custom: overlap with alpha 0.5, z-order, background, a CJK caption
    pid = room
    await put_layout(client, auth, {
        "template": "custom",
        "canvas": {"width": 1280, "height": 720, "background": {"color": "FF00FF"}},
        "regions": [
            {"source": {"participant": pid["red"]}, "x": 0, "y": 0, "w": 640, "h": 360, "z": 0},
            {"source": {"participant": pid["green"]}, "x": 320, "y": 180, "w": 640, "h": 360, "z": 1,
             "alpha": 0.5},
            {"source": {"participant": pid["blue"]}, "x": 800, "y": 60, "w": 320, "h": 240, "z": 3},
            {"source": {"participant": pid["yellow"]}, "x": 900, "y": 160, "w": 320, "h": 240, "z": 2},
        ],
        "watermarks": {"texts": [{"text": "会议 TEST", "x": 40, "y": 560, "size": 64, "color": "FFFFFF",
                                  "background": "000000"}]},
    })
    path = await record(client, auth, "e2e", RECORD_S)
    frame, audio = decode(path)
    assert near(centre(frame, 0, 0, 300, 160), RGB["red"])  # red alone
    blend = (np.array(RGB["red"]) + np.array(RGB["green"])) / 2
    assert near(frame[270, 480], tuple(blend), 45), frame[270, 480]  # red under half-transparent green
    assert near(frame[450, 800], tuple(np.array(RGB["green"]) / 2 + np.array(BACKGROUND) / 2), 45)
    assert near(frame[100, 850], RGB["blue"])  # blue alone
    assert near(frame[350, 1150], RGB["yellow"])  # yellow alone
    assert near(frame[250, 950], RGB["blue"])  # overlap: blue (z 3) above yellow (z 2)
    assert near(frame[700, 600], BACKGROUND)  # nothing placed there
    caption = frame[560:560 + 80, 40:40 + 300]
    white = (caption.min(axis=2) > 200).sum()
    black = (caption.max(axis=2) < 50).sum()
    assert white > 500 and black > 2000, (white, black)  # glyphs on their box
    assert near(frame[600, 400], BACKGROUND)  # right of the caption box
    assert_tones(audio, tones)
    probe = ffprobe(path)
    codecs = sorted(s["codec_name"] for s in probe["streams"])
    assert codecs == ["aac", "h264"]
    assert float(probe["format"]["duration"]) > RECORD_S - 1.5

    # 3. floating: red fills the canvas, the others float bottom-left, 23.5% tiles
    await put_layout(client, auth, {"template": "floating", "main": pid["red"],
                                    "canvas": {"width": 1280, "height": 720}})
    frame, audio = decode(await record(client, auth, "e2e", RECORD_S))
    sources = [VideoSource(pid[name], "camera", name) for name in SOURCES]
    layout = Layout.model_validate({"template": "floating", "main": pid["red"]})
    placed = resolve(layout, sources, node.media.templates)
    assert len(placed) == 4
    for region in placed:
        name = next(n for n, p in pid.items() if p == region.participant_id)
        assert near(centre(frame, region.x, region.y, region.w, region.h), RGB[name]), (name, region)
    small = [r for r in placed if r.participant_id != pid["red"]]
    assert all(r.w == round(1280 * 0.235) // 2 * 2 or abs(r.w - 1280 * 0.235) <= 2 for r in small)
    assert_tones(audio, tones)


async def test_live_layout_change_keeps_one_continuous_recording(client: Any, auth: dict[str, str],
                                                                 room: dict[str, str]) -> None:
    """A layout change lands on the next frames of a running recording, which goes on unbroken."""
    await put_layout(client, auth, {"template": "grid"})
    response = await client.post("/v1/rooms/e2e/egress", headers=auth, json={"kind": "record"})
    egress_id = (await response.json())["egress_id"]
    await asyncio.sleep(3)
    await put_layout(client, auth, {"template": "custom", "regions": [
        {"source": {"participant": "blue"}, "x": 0, "y": 0, "w": 1, "h": 1, "units": "fraction"}]})
    await asyncio.sleep(3)
    body = await (await client.delete(f"/v1/egress/{egress_id}", headers=auth)).json()
    path = Path(body["files"][0]["path"])
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [(float(f.pts * stream.time_base), f.to_ndarray(format="rgb24")) for f in container.decode(stream)]
    times = [t for t, _ in frames]
    # one file, one clock: the change neither restarts the timeline nor leaves a hole (a loaded
    # machine may skip a few frames, which is not what this checks)
    assert all(b > a for a, b in itertools.pairwise(times))
    assert max(b - a for a, b in itertools.pairwise(times)) < 1.0
    assert times[-1] - times[0] > 5 and len(frames) > 5 * 10
    first, last = frames[10][1].astype(int), frames[-1][1].astype(int)
    assert near(centre(first, 0, 0, 640, 360), RGB["red"]) and near(centre(first, 640, 360, 640, 360), RGB["yellow"])
    assert near(centre(last, 0, 0, 640, 360), RGB["blue"]) and near(centre(last, 640, 360, 640, 360), RGB["blue"])
