"""The room media engine wired to rooms: auto recording, mute following state bits,
voice-activated layout following the active speaker, loop lag in the metrics, clean close."""

from __future__ import annotations

import asyncio
from typing import Any

from gateway.media.track import TrackKind


async def wait_until(predicate, timeout: float = 15.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def add_source(client: Any, auth: dict[str, str], room: str, identity: str, colour: str, tone: float,
                     volume: float = 0.25) -> str:
    response = await client.post(f"/v1/rooms/{room}/ingress", headers=auth, json={
        "kind": "test", "identity": identity, "pattern": {"color": colour, "tone_hz": tone, "volume": volume}})
    assert response.status == 201, await response.text()
    return (await response.json())["participant_id"]


async def test_auto_record_starts_with_the_first_publisher(client: Any, auth: dict[str, str], node: Any) -> None:
    await client.post("/v1/rooms", json={"room_id": "auto", "auto_record": True}, headers=auth)
    response = await client.get("/v1/rooms/auto/egress", headers=auth)
    assert (await response.json())["egress"] == []
    await add_source(client, auth, "auto", "a", "FF0000", 440)
    await wait_until(lambda: node.egress.list("auto"))
    task = node.egress.list("auto")[0]
    assert task.spec["kind"] == "record"
    await wait_until(lambda: task.status == "active")
    root = node.config.node.data_dir  # in the spool or in storage
    await wait_until(lambda: any(p.stat().st_size > 0 for p in root.rglob(f"*{task.task_id}*.mp4")))
    response = await client.post("/v1/rooms/auto/close", headers=auth)
    assert response.status == 200
    assert task.status == "aborted" and task.result["files"][0]["size"] > 0


async def test_state_bits_mute_the_tracks(client: Any, auth: dict[str, str], node: Any) -> None:
    await client.post("/v1/rooms", json={"room_id": "mute"}, headers=auth)
    pid = await add_source(client, auth, "mute", "a", "00FF00", 440)
    room = await node.rooms.get("mute")
    audio = room.media.bus.find(pid, TrackKind.AUDIO)
    video = room.media.bus.find(pid, TrackKind.VIDEO)
    response = await client.patch(f"/v1/rooms/mute/participants/{pid}", json={"audio_muted": True}, headers=auth)
    assert response.status == 200 and (await response.json())["state"] == 0x7
    assert audio.muted and not video.muted
    await client.patch(f"/v1/rooms/mute/participants/{pid}", json={"audio_muted": False, "forward_video": False},
                       headers=auth)
    assert not audio.muted and video.muted


async def test_voice_activated_layout_follows_the_loudest(client: Any, auth: dict[str, str], node: Any) -> None:
    await client.post("/v1/rooms", json={"room_id": "va", "voice_activated": True}, headers=auth)
    quiet = await add_source(client, auth, "va", "quiet", "FF0000", 440, volume=0.01)
    loud = await add_source(client, auth, "va", "loud", "0000FF", 880, volume=0.5)
    room = await node.rooms.get("va")
    events = node.events.subscribe("va")
    response = await client.post("/v1/rooms/va/egress", headers=auth, json={"kind": "record"})
    assert response.status == 201
    media = room.media
    await wait_until(lambda: media.mixer.active_speaker == loud)
    handle = media.composites["room"]
    await wait_until(lambda: handle.compositor._regions and max(
        handle.compositor._regions, key=lambda r: r.w * r.h).participant_id == loud)
    names = []
    while not events.queue.empty():
        names.append(events.queue.get_nowait())
    assert any(e.event == "room.speakers" and e.data["active_speaker"] == loud for e in names)
    assert quiet in {r.participant_id for r in handle.compositor._regions}


async def test_loop_lag_is_measured_and_exported(client: Any, auth: dict[str, str], node: Any) -> None:
    await client.post("/v1/rooms", json={"room_id": "lag"}, headers=auth)
    for index in range(4):
        await add_source(client, auth, "lag", f"s{index}", "FFFFFF", 300 + 100 * index)
    response = await client.post("/v1/rooms/lag/egress", headers=auth, json={"kind": "record"})
    assert response.status == 201
    await wait_until(lambda: node.loop_lag.count >= 10)
    text = await (await client.get("/metrics")).text()
    assert "mediagate_loop_lag_seconds_count" in text
    count = next(float(line.split()[-1]) for line in text.splitlines()
                 if line.startswith("mediagate_loop_lag_seconds_count"))
    assert count >= 10
    nodes = await (await client.get("/v1/nodes", headers=auth)).json()
    load = nodes["nodes"][0]["load"]
    assert load["compositions"] == 1 and "loop_lag_p99_ms" in load


async def test_closing_a_room_stops_its_media_threads(client: Any, auth: dict[str, str], node: Any) -> None:
    import threading

    before = {t.name for t in threading.enumerate()}
    await client.post("/v1/rooms", json={"room_id": "bye"}, headers=auth)
    await add_source(client, auth, "bye", "a", "FF00FF", 500)
    response = await client.post("/v1/rooms/bye/egress", headers=auth, json={"kind": "record"})
    assert response.status == 201
    await asyncio.sleep(0.5)
    await client.post("/v1/rooms/bye/close", headers=auth)
    # the executor's reusable workers (asyncio_N) and pooled store connections (aiosqlite's
    # worker, opened when the recording's file rows were written) stay; every media thread must be gone
    await wait_until(lambda: {t.name for t in threading.enumerate()
                              if t.is_alive() and not t.name.startswith("asyncio_")
                              and "_connection_worker_thread" not in t.name} - before == set())


async def test_mix_minus_of_a_room_by_content(client: Any, auth: dict[str, str], node: Any) -> None:
    """A listener's mix from a live room lacks its own tone and carries everyone else's."""
    import numpy as np

    await client.post("/v1/rooms", json={"room_id": "mm"}, headers=auth)
    tones = {"a": 500.0, "b": 800.0, "c": 1300.0}
    ids = {name: await add_source(client, auth, "mm", name, "808080", hz) for name, hz in tones.items()}
    room = await node.rooms.get("mm")
    listener = room.media.mixer.add_listener(ids["a"], maxsize=200)

    def collect() -> np.ndarray:
        blocks = []
        while len(blocks) < 75:  # 1.5 s
            blocks.append(listener.get(timeout=5)[1][:, 0].astype(float))
        return np.concatenate(blocks[25:])  # past the jitter buffers' priming

    audio = await asyncio.to_thread(collect)
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    freqs = np.fft.rfftfreq(len(audio), 1 / 48000)
    peak = {name: spectrum[(freqs > hz - 10) & (freqs < hz + 10)].max() for name, hz in tones.items()}
    assert peak["b"] > 1000 * np.median(spectrum) and peak["c"] > 1000 * np.median(spectrum)
    assert peak["a"] < min(peak["b"], peak["c"]) / 100  # 40 dB below: the listener's own tone is gone


async def test_equal_encodings_share_one_encoder_across_egress(client: Any, auth: dict[str, str],
                                                                node: Any) -> None:
    await client.post("/v1/rooms", json={"room_id": "share"}, headers=auth)
    await add_source(client, auth, "share", "a", "FF0000", 440)
    ids = []
    for encoding in ({"width": 1280, "height": 720}, {"width": 1280, "height": 720}, {"width": 640, "height": 360}):
        response = await client.post("/v1/rooms/share/egress", headers=auth,
                                     json={"kind": "record", "encoding": encoding})
        assert response.status == 201
        ids.append((await response.json())["egress_id"])
    room = await node.rooms.get("share")
    composition = room.media.composites["room"].composition
    assert len(composition.stats()["encoders"]) == 2  # 720p shared by two recordings, 360p its own
    runners = [node.egress.get(i).runner for i in ids]
    assert runners[0].output.video_track is runners[1].output.video_track
    assert runners[0].output.video_track is not runners[2].output.video_track
    assert runners[0].output.audio_track is runners[2].output.audio_track  # same audio encoding: one encoder
    for egress_id in ids:
        await client.delete(f"/v1/egress/{egress_id}", headers=auth)
    assert "room" not in room.media.composites  # the last user gone: composite and encoders stopped
