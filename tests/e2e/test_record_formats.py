"""Every recording format decodes with the right picture, tone and duration (PyAV, and
ffprobe as an independent reader); the HLS playlist is live while recording and VOD at the
end; individual recording gives each participant their own files with their own colour and
tone; a participant's H.264 is recorded without re-encoding."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.record_media import Publisher, centre, decode_audio, decode_video, ffprobe, near, peak_hz

pytestmark = pytest.mark.e2e
RED, BLUE, GREEN = (255, 0, 0), (0, 0, 255), (0, 200, 0)
CANVAS = {"width": 320, "height": 180, "fps": 15}


async def add_test(client: Any, auth: dict[str, str], room: str, identity: str, colour: str,
                   tone: float | None) -> str:
    response = await client.post(f"/v1/rooms/{room}/ingress", headers=auth, json={
        "kind": "test", "identity": identity, "pattern": {"color": colour, "tone_hz": tone, "volume": 0.3,
                                                          "width": 320, "height": 180}})
    assert response.status == 201, await response.text()
    return (await response.json())["participant_id"]


async def record(client: Any, auth: dict[str, str], room: str, seconds: float, **body: Any) -> dict[str, Any]:
    response = await client.post(f"/v1/rooms/{room}/egress", headers=auth, json={"kind": "record", **body})
    assert response.status == 201, await response.text()
    egress_id = (await response.json())["egress_id"]
    await asyncio.sleep(seconds)
    response = await client.delete(f"/v1/egress/{egress_id}", headers=auth)
    result = await response.json()
    assert result["status"] == "complete", result
    return result


async def test_every_format_decodes_with_its_colour_tone_and_duration(client: Any, auth: dict[str, str],
                                                                      node: Any) -> None:
    await client.post("/v1/rooms", json={"room_id": "fmt", "canvas": CANVAS}, headers=auth)
    await add_test(client, auth, "fmt", "red", "FF0000", 440.0)
    response = await client.post("/v1/rooms/fmt/egress", headers=auth, json={
        "kind": "record", "record": {"formats": ["mp4", "hls", "m4a", "ogg", "wav", "mp3"], "hls_segment_s": 1}})
    assert response.status == 201, await response.text()
    egress_id = (await response.json())["egress_id"]
    await asyncio.sleep(3.0)
    root = node.config.node.data_dir  # the spool while recording, the storage root once stored
    live = ""
    for _ in range(200):  # the first segment ends at the second keyframe (bounded wait, no timing assertion)
        playlists = list(root.rglob(f"*{egress_id}*.m3u8"))
        assert len(playlists) <= 1
        live = playlists[0].read_text() if playlists else ""
        if ".ts" in live:
            break
        await asyncio.sleep(0.1)
    assert "#EXT-X-PLAYLIST-TYPE:EVENT" in live and "#EXT-X-ENDLIST" not in live and ".ts" in live
    body = await (await client.delete(f"/v1/egress/{egress_id}", headers=auth)).json()
    files = {f["format"]: f for f in body["files"]}
    assert sorted(files) == ["hls", "m4a", "mp3", "mp4", "ogg", "wav"], body["files"]
    codecs = {"mp4": ["aac", "h264"], "hls": None, "m4a": ["aac"], "ogg": ["opus"], "wav": ["pcm_s16le"],
              "mp3": ["mp3"]}
    for fmt, info in files.items():
        path = Path(info["path"])
        assert info["upload"] == "done" and info["url"].endswith(path.name), info
        assert info["size"] > 0 and info["duration_s"] > 2.0, info
        probe = ffprobe(path)
        if codecs[fmt] is not None:
            assert sorted(s["codec_name"] for s in probe["streams"]) == codecs[fmt], fmt
        assert float(probe["format"]["duration"]) == pytest.approx(info["duration_s"], abs=0.25), (fmt, probe)
        if fmt in ("mp4", "hls"):
            _times, pictures = decode_video(path)
            assert near(centre(pictures[-1].astype(int)), RED), fmt
        samples, rate = decode_audio(path)
        assert len(samples) / rate == pytest.approx(info["duration_s"], abs=0.3), fmt
        assert peak_hz(samples, rate) == pytest.approx(440, abs=5), fmt
    vod = Path(files["hls"]["path"]).read_text()
    assert "#EXT-X-PLAYLIST-TYPE:VOD" in vod and vod.rstrip().endswith("#EXT-X-ENDLIST")
    assert len(files["hls"]["segments"]) >= 2
    assert sum(s["duration_s"] for s in files["hls"]["segments"]) == pytest.approx(files["hls"]["duration_s"])


async def test_individual_and_mixed_files_each_hold_their_own_participant(client: Any, auth: dict[str, str],
                                                                         node: Any) -> None:
    await client.post("/v1/rooms", json={"room_id": "ind", "canvas": CANVAS}, headers=auth)
    red = await add_test(client, auth, "ind", "red", "FF0000", 500.0)
    blue = await add_test(client, auth, "ind", "blue", "0000FF", 1100.0)
    body = await record(client, auth, "ind", 3.0, record={"mode": "both", "formats": ["mp4", "ogg"]})
    by_track: dict[str, dict[str, dict[str, Any]]] = {}
    for info in body["files"]:
        by_track.setdefault(info["track"], {})[info["format"]] = info
    assert sorted(by_track) == ["blue_audio", "blue_camera", "mix", "red_audio", "red_camera"], by_track
    assert sorted(by_track["mix"]) == ["mp4", "ogg"]
    for who, rgb, tone, pid in (("red", RED, 500.0, red), ("blue", BLUE, 1100.0, blue)):
        camera = by_track[f"{who}_camera"]
        assert sorted(camera) == ["mp4"] and camera["mp4"]["participant_id"] == pid
        path = Path(camera["mp4"]["path"])
        assert [s["codec_type"] for s in ffprobe(path)["streams"]] == ["video"]  # the picture alone
        _times, pictures = decode_video(path)
        assert near(centre(pictures[-1].astype(int)), rgb), who
        audio = by_track[f"{who}_audio"]
        assert sorted(audio) == ["ogg"]
        samples, rate = decode_audio(Path(audio["ogg"]["path"]))
        assert peak_hz(samples, rate) == pytest.approx(tone, abs=5), who
        assert f"_{who}_camera_" in camera["mp4"]["name"] and camera["mp4"]["name"].startswith("ind_EG_")
    samples, rate = decode_audio(Path(by_track["mix"]["ogg"]["path"]))
    assert {round(peak_hz(samples, rate))} & {500, 1100}


async def test_a_participants_h264_is_recorded_without_reencoding(client: Any, auth: dict[str, str],
                                                                  node: Any) -> None:
    await client.post("/v1/rooms", json={"room_id": "pass", "canvas": CANVAS}, headers=auth)
    publisher = await Publisher(node, "pass", "cam", fps=25, h264_rgb=GREEN).start()
    try:
        response = await client.post("/v1/rooms/pass/egress", headers=auth, json={
            "kind": "record", "source": {"participant": "cam"}, "record": {"formats": ["mp4"]}})
        assert response.status == 201, await response.text()
        egress_id = (await response.json())["egress_id"]
        await asyncio.sleep(2.5)
        media = (await node.rooms.get("pass")).media
        assert media.composites == {}  # nothing composed, nothing encoded: the packets go to the file
        individual = await record(client, auth, "pass", 2.5, record={"mode": "individual", "formats": ["mp4"]})
        body = await (await client.delete(f"/v1/egress/{egress_id}", headers=auth)).json()
    finally:
        publisher.stop()
    assert [f["track"] for f in body["files"]] == ["mix"]
    assert [f["track"] for f in individual["files"]] == ["cam_camera"]
    for info in [*body["files"], *individual["files"]]:
        path = Path(info["path"])
        streams = ffprobe(path)["streams"]
        video = next(s for s in streams if s["codec_type"] == "video")
        assert video["codec_name"] == "h264" and (video["width"], video["height"]) == (320, 180)
        times, pictures = decode_video(path)
        assert near(centre(pictures[-1].astype(int)), GREEN)
        assert len(times) >= 25  # a second and more at the source's 25 fps


async def test_individual_files_start_and_stop_with_their_participants(client: Any, auth: dict[str, str]) -> None:
    await client.post("/v1/rooms", json={"room_id": "come", "canvas": CANVAS}, headers=auth)
    response = await client.post("/v1/rooms/come/ingress", headers=auth, json={
        "kind": "test", "identity": "red", "audio_only": True, "pattern": {"tone_hz": 500.0, "volume": 0.3}})
    red = await response.json()
    response = await client.post("/v1/rooms/come/egress", headers=auth, json={
        "kind": "record", "record": {"mode": "individual", "formats": ["wav"], "split_bytes": 150 * 1024}})
    egress_id = (await response.json())["egress_id"]
    await asyncio.sleep(1.2)
    await add_test(client, auth, "come", "green", "00FF00", 900.0)  # joins while recording
    await asyncio.sleep(1.2)
    await client.delete(f"/v1/ingress/{red['ingress_id']}", headers=auth)  # leaves while recording
    await asyncio.sleep(1.2)
    body = await (await client.delete(f"/v1/egress/{egress_id}", headers=auth)).json()
    parts: dict[str, list[dict[str, Any]]] = {}
    for info in body["files"]:
        parts.setdefault(info["track"], []).append(info)
    assert sorted(parts) == ["green_audio", "red_audio"], body["files"]  # green's picture: no video format
    for who, tone in (("red", 500.0), ("green", 900.0)):
        files = sorted(parts[f"{who}_audio"], key=lambda f: f["index"])
        assert len(files) >= 2  # split by size: 150 KB of 48 kHz stereo PCM is 0.8 s
        for info in files[:-1]:
            assert info["size"] <= 150 * 1024 + 8 * 1024 and info["duration_s"] == pytest.approx(0.8, abs=0.05)
        for before, after in itertools.pairwise(files):
            assert after["started_at"] == pytest.approx(before["ended_at"], abs=0.021)
        samples, rate = decode_audio(Path(files[0]["path"]))
        assert peak_hz(samples, rate) == pytest.approx(tone, abs=5), who
    red_files, green_files = parts["red_audio"], parts["green_audio"]
    assert min(f["started_at"] for f in green_files) > min(f["started_at"] for f in red_files) + 0.8
    assert max(f["ended_at"] for f in red_files) < max(f["ended_at"] for f in green_files) - 0.8
