"""The recording API: hostile file prefixes are refused (400, naming the field, showing no
server path) and nothing is written outside the root; an egress without an encoding takes
the canvas's size and rate; recordings are listed (filters, also after a restart) and
downloaded with auth and safe headers; an idle recording stops by itself with the vendor's
leave code; an audio-only recording of a silent room is a valid file of silence."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from aiohttp.test_utils import TestClient, TestServer

from plugins.record.naming import file_key, safe_part, utc_stamp
from tests.conftest import ACCESS_KEY, SECRET_KEY


async def make_room(client: Any, auth: dict[str, str], room: str, tone: float | None = 440.0,
                    canvas: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"room_id": room}
    if canvas:
        body["canvas"] = canvas
    assert (await client.post("/v1/rooms", json=body, headers=auth)).status == 201
    response = await client.post(f"/v1/rooms/{room}/ingress", headers=auth, json={
        "kind": "test", "identity": "red", "pattern": {"color": "FF0000", "tone_hz": tone, "width": 160,
                                                       "height": 90}})
    assert response.status == 201, await response.text()
    return await response.json()


@pytest.mark.parametrize("prefix", ["../../../../tmp/x/rel", "/tmp/x/abs", "a/\x00b", "a/../../b", "..",
                                    "a\\..\\b", "./x"])
async def test_hostile_file_prefix_is_refused(client: Any, auth: dict[str, str], node: Any, tmp_path: Path,
                                              prefix: str) -> None:
    await make_room(client, auth, "hp")
    response = await client.post("/v1/rooms/hp/egress", headers=auth,
                                 json={"kind": "record", "record": {"file_prefix": prefix}})
    assert response.status == 400, await response.text()
    error = (await response.json())["error"]
    assert error["field"] == "record.file_prefix"
    assert str(tmp_path) not in error["message"] and "/tmp" not in error["message"]
    assert node.egress.list("hp") == []


async def test_a_prefix_through_a_symlink_out_of_the_root_is_refused(client: Any, auth: dict[str, str], node: Any,
                                                                    tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    root = node.storage.get("local").root
    (root / "escape").symlink_to(outside)
    await make_room(client, auth, "sl")
    response = await client.post("/v1/rooms/sl/egress", headers=auth,
                                 json={"kind": "record", "record": {"file_prefix": "escape/deeper"}})
    assert response.status == 400, await response.text()
    error = (await response.json())["error"]
    assert error["field"] == "record.file_prefix" and str(tmp_path) not in error["message"]
    assert list(outside.iterdir()) == []


async def test_output_follows_the_canvas_unless_an_encoding_is_given(client: Any, auth: dict[str, str]) -> None:
    await make_room(client, auth, "cv", canvas={"width": 800, "height": 480, "fps": 10})
    body = await (await client.post("/v1/rooms/cv/egress", headers=auth, json={"kind": "record"})).json()
    encoding = body["request"]["encoding"]
    assert (encoding["width"], encoding["height"], encoding["fps"]) == (800, 480, 10)
    own = await (await client.post("/v1/rooms/cv/egress", headers=auth, json={
        "kind": "record", "layout": {"canvas": {"width": 320, "height": 240, "fps": 15}}})).json()
    assert (own["request"]["encoding"]["width"], own["request"]["encoding"]["fps"]) == (320, 15)
    explicit = await (await client.post("/v1/rooms/cv/egress", headers=auth, json={
        "kind": "record", "encoding": {"width": 640, "height": 360, "fps": 25}})).json()
    assert (explicit["request"]["encoding"]["width"], explicit["request"]["encoding"]["fps"]) == (640, 25)
    for egress in (body, own, explicit):
        await client.delete(f"/v1/egress/{egress['egress_id']}", headers=auth)


def test_file_names_carry_room_task_participant_utc_start_and_index() -> None:
    at = 1796150000.123
    key = file_key(prefix="acme/2026", room_id="room 1", egress_id="EG_ab", who="alice_camera", started_at=at,
                   index=2, fmt="hls")
    assert key == f"acme/2026/room-1/EG_ab/room-1_EG_ab_alice_camera_{utc_stamp(at)}_002.m3u8"
    assert utc_stamp(at).endswith("123Z") and len(utc_stamp(at)) == 19
    assert safe_part("../../etc") == "etc" and safe_part("") == "x"


async def test_recordings_are_listed_filtered_downloaded_and_outlive_a_restart(
        make_node: Any, auth: dict[str, str], client: Any, node: Any) -> None:
    await make_room(client, auth, "ls")
    response = await client.post("/v1/rooms/ls/egress", headers=auth, json={
        "kind": "record", "encoding": {"width": 160, "height": 90, "fps": 10},
        "record": {"formats": ["mp4", "m4a"], "file_prefix": "acme"}})
    egress_id = (await response.json())["egress_id"]
    await asyncio.sleep(1.5)
    stopped = await (await client.delete(f"/v1/egress/{egress_id}", headers=auth)).json()
    assert sorted(f["format"] for f in stopped["files"]) == ["m4a", "mp4"]
    for info in stopped["files"]:
        assert info["name"].startswith(f"ls_{egress_id}_mix_") and info["filename"].startswith("acme/ls/")
        assert info["upload"] == "done" and info["url"] and info["size"] > 0 and info["duration_s"] > 0.5
        assert info["ended_at"] > info["started_at"]

    listed = await (await client.get("/v1/recordings", params={"room_id": "ls"}, headers=auth)).json()
    assert listed["count"] == 2
    assert {r["recording_id"] for r in listed["recordings"]} == {f["recording_id"] for f in stopped["files"]}
    assert (await (await client.get("/v1/recordings", params={"room_id": "nope"}, headers=auth)).json())["count"] == 0
    later = stopped["files"][0]["ended_at"] + 60
    assert (await (await client.get("/v1/recordings", params={"since": later}, headers=auth)).json())["count"] == 0
    until = stopped["files"][0]["started_at"] - 60
    assert (await (await client.get("/v1/recordings", params={"until": until}, headers=auth)).json())["count"] == 0
    response = await client.get("/v1/recordings", params={"since": "yesterday"}, headers=auth)
    assert response.status == 400 and (await response.json())["error"]["field"] == "since"
    assert (await client.get("/v1/recordings")).status == 401

    mp4 = next(f for f in stopped["files"] if f["format"] == "mp4")
    download = f"/v1/recordings/{mp4['recording_id']}/download"
    assert (await client.get(download)).status == 401
    response = await client.get(download, headers=auth)
    assert response.status == 200
    assert response.headers["Content-Disposition"] == f'attachment; filename="{mp4["name"]}"'
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Content-Type"] == "video/mp4"
    assert await response.read() == Path(mp4["path"]).read_bytes()
    response = await client.get(mp4["url"].split(str(client.make_url("")).rstrip("/"), 1)[-1], headers=auth)
    assert response.status == 200 and response.headers["X-Content-Type-Options"] == "nosniff"
    assert (await client.get("/v1/recordings/RC_nothing", headers=auth)).status == 404

    # a plain restart: a new node on the same data dir lists the same files
    await node.stop()
    again = await make_node()
    async with TestClient(TestServer(again.app)) as client2:
        token = (await (await client2.post("/v1/auth/token", json={"access_key": ACCESS_KEY,
                                                                   "secret_key": SECRET_KEY})).json())["token"]
        listed = await (await client2.get("/v1/recordings", params={"egress_id": egress_id},
                                          headers={"Authorization": f"Bearer {token}"})).json()
    assert sorted(r["recording_id"] for r in listed["recordings"]) == sorted(
        f["recording_id"] for f in stopped["files"])
    assert all(r["url"] and r["upload"] == "done" for r in listed["recordings"])


async def test_an_idle_recording_stops_itself_with_leave_code_99(client: Any, auth: dict[str, str], node: Any) -> None:
    ingress = await make_room(client, auth, "idle")
    sub = node.events.subscribe("idle", maxsize=1000)
    response = await client.post("/v1/rooms/idle/egress", headers=auth, json={
        "kind": "record", "encoding": {"width": 160, "height": 90, "fps": 10}, "record": {"max_idle_s": 1}})
    egress_id = (await response.json())["egress_id"]
    await asyncio.sleep(1.0)
    await client.delete(f"/v1/ingress/{ingress['ingress_id']}", headers=auth)
    ended = None
    for _ in range(400):
        while not sub.queue.empty():
            event = sub.queue.get_nowait()
            if event.event == "egress.ended":
                ended = event
        if ended:
            break
        await asyncio.sleep(0.05)
    sub.close()
    assert ended is not None and ended.data["reason"] == "idle_timeout" and ended.data["leave_code"] == 99
    assert [f["format"] for f in ended.data["files"]] == ["mp4"]
    task = await (await client.get(f"/v1/egress/{egress_id}", headers=auth)).json()
    assert task["status"] == "complete" and task["files"]
    other = await (await client.post("/v1/rooms/idle/egress", headers=auth, json={"kind": "record"})).json()
    await client.delete(f"/v1/egress/{other['egress_id']}", headers=auth)


async def test_audio_only_recording_of_a_room_without_audio_is_valid_silence(client: Any, auth: dict[str, str]) -> None:
    await make_room(client, auth, "mute", tone=None)  # the participant publishes no audio at all
    response = await client.post("/v1/rooms/mute/egress", headers=auth, json={
        "kind": "record", "record": {"audio_only": True, "formats": ["m4a", "wav"]}})
    assert response.status == 201, await response.text()
    egress_id = (await response.json())["egress_id"]
    await asyncio.sleep(1.5)
    body = await (await client.delete(f"/v1/egress/{egress_id}", headers=auth)).json()
    assert sorted(f["format"] for f in body["files"]) == ["m4a", "wav"]
    for info in body["files"]:
        with av.open(info["path"]) as container:
            assert not container.streams.video
            samples = np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(audio=0)])
        assert len(samples) / 2 / 48000 == pytest.approx(info["duration_s"], abs=0.1)
        assert info["duration_s"] > 1.0 and np.abs(samples).max() < 1e-3 * (32767 if samples.dtype == np.int16 else 1)


async def test_the_served_openapi_documents_the_recordings_routes(client: Any) -> None:
    spec = await (await client.get("/openapi.json")).json()
    assert {"/v1/recordings", "/v1/recordings/{recording_id}", "/v1/recordings/{recording_id}/download"} <= set(
        spec["paths"])
    record = spec["components"]["schemas"].get("RecordOptions") or {}
    assert not record or {"mode", "max_idle_s", "split_bytes"} <= set(record.get("properties", {}))
