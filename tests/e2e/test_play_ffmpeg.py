"""Play-in (ingress kind ``url``) of media made by the ffmpeg CLI, checked by content: the
participant's decoded video on the room bus shows the file's colours in the right order
(through replays, pause/resume and seek), a file without audio publishes silence, an HLS
stream served over HTTP plays, and bad sources fail with a reason."""

from __future__ import annotations

import asyncio
import functools
import http.server
import subprocess
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from aiohttp.test_utils import TestClient, TestServer

from gateway.media.track import TrackKind
from gateway.node import Node
from tests.e2e.helpers import free_port

pytestmark = pytest.mark.e2e

WAIT_S = 60.0
FPS = 30
PALETTE = {  # one colour per second of the colour file
    0: (255, 0, 0), 1: (0, 255, 0), 2: (0, 0, 255), 3: (255, 255, 0),
    4: (0, 255, 255), 5: (255, 0, 255), 6: (255, 255, 255), 7: (0, 0, 0),
}


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-hide_banner", "-v", "error", "-y", *args], check=True)


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The files every test plays, made once: a colour per second (video only, a keyframe
    each second), a 2 s clip with a tone, and an HLS stream in 1 s segments."""
    root = tmp_path_factory.mktemp("play")
    names = [f"0x{r:02X}{g:02X}{b:02X}" for r, g, b in PALETTE.values()]
    inputs = [arg for name in names for arg in ("-f", "lavfi", "-i", f"color=c={name}:s=320x240:r={FPS}:d=1")]
    concat = "".join(f"[{i}:v]" for i in range(len(names))) + f"concat=n={len(names)}:v=1:a=0[v]"
    ffmpeg(*inputs, "-filter_complex", concat, "-map", "[v]", "-c:v", "libx264", "-preset", "ultrafast",
           "-g", str(FPS), "-keyint_min", str(FPS), "-sc_threshold", "0", "-pix_fmt", "yuv420p",
           str(root / "colours.mp4"))
    ffmpeg("-f", "lavfi", "-i", f"color=c=0x00FF00:s=320x240:r={FPS}:d=2", "-f", "lavfi", "-i",
           "sine=frequency=1000:sample_rate=48000:duration=2", "-c:v", "libx264", "-preset", "ultrafast",
           "-g", str(FPS), "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(root / "clip.mp4"))
    hls = root / "hls"
    hls.mkdir()
    ffmpeg("-f", "lavfi", "-i", f"color=c=0x0000FF:s=320x240:r={FPS}:d=3", "-f", "lavfi", "-i",
           "sine=frequency=700:sample_rate=48000:duration=3", "-c:v", "libx264", "-preset", "ultrafast",
           "-g", str(FPS), "-pix_fmt", "yuv420p", "-c:a", "aac", "-f", "hls", "-hls_time", "1",
           "-hls_list_size", "0", "-hls_playlist_type", "vod", str(hls / "index.m3u8"))
    return root


@pytest.fixture(scope="module")
def http_server(media_dir: Path) -> Iterator[str]:
    """A plain HTTP server (Python's http.server) serving the media directory on a free port."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(media_dir))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
async def play_node(make_node: Any, media_dir: Path) -> Node:
    return await make_node(f'plugins.play.allowed_dirs=["{media_dir}"]', "plugins.play.end_event_delay_s=0.5",
                           "plugins.play.retry_delays_s=[0.0, 0.2, 0.4]", "plugins.play.open_timeout_s=5.0")


@pytest.fixture
async def api(play_node: Node) -> AsyncIterator[tuple[TestClient, dict[str, str]]]:
    assert play_node.app is not None
    async with TestClient(TestServer(play_node.app)) as client:
        play_node.url = str(client.make_url("")).rstrip("/")
        response = await client.post("/v1/auth/token", json={"access_key": "test_access",
                                                             "secret_key": "test_secret_value"})
        token = (await response.json())["token"]
        auth = {"Authorization": f"Bearer {token}"}
        response = await client.post("/v1/rooms", json={"room_id": "play"}, headers=auth)
        assert response.status == 201, await response.text()
        yield client, auth


async def wait_until(check: Any, what: str, timeout: float = WAIT_S) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"never happened: {what}")


async def start(client: TestClient, auth: dict[str, str], **body: Any) -> tuple[int, dict[str, Any]]:
    response = await client.post("/v1/rooms/play/ingress", json={"kind": "url", "identity": "player", **body},
                                 headers=auth)
    return response.status, await response.json()


def track_of(node: Node, participant_id: str, kind: TrackKind) -> Any:
    room = node.rooms.rooms["play"]
    assert room.media is not None
    return room.media.bus.find(participant_id, kind)


def colour_index(frame: Any) -> int:
    rgb = frame.to_ndarray(format="rgb24")
    h, w, _ = rgb.shape
    pixel = rgb[h // 2 - 4:h // 2 + 4, w // 2 - 4:w // 2 + 4].reshape(-1, 3).mean(axis=0)
    return min(PALETTE, key=lambda i: float(np.abs(pixel - np.array(PALETTE[i])).sum()))


class ColourWatch:
    """Samples the participant's decoded video (the bus, as the compositor sees it) every
    20 ms and records the sequence of colours shown."""

    def __init__(self, track: Any, find: Any = None) -> None:
        self.track = track
        self.find = find  # () -> the participant's video track now (it changes with a switch)
        self.sub = track.subscribe_video()
        self.seen: list[int] = []
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        last_seq = -1
        while True:
            if self.track.closed and self.find is not None and (track := self.find()) is not None:
                self.track, self.sub = track, track.subscribe_video()
            frame, seq = self.sub.latest()
            if frame is not None and seq != last_seq:
                last_seq = seq
                index = colour_index(frame)
                if not self.seen or self.seen[-1] != index:
                    self.seen.append(index)
            await asyncio.sleep(0.02)

    @property
    def current(self) -> int | None:
        return self.seen[-1] if self.seen else None

    def close(self) -> None:
        self._task.cancel()
        self.track.unsubscribe(self.sub)


async def test_replay_times_plays_three_times(api: Any, play_node: Node, media_dir: Path) -> None:
    client, auth = api
    events = play_node.events.subscribe("play", maxsize=10000)
    # uploaded, then played by file id
    form = aiohttp.FormData()
    form.add_field("file", (media_dir / "clip.mp4").read_bytes(), filename="clip.mp4", content_type="video/mp4")
    response = await client.post("/v1/files", data=form, headers=auth)
    assert response.status == 201, await response.text()
    file_id = (await response.json())["file_id"]
    status, body = await start(client, auth, file_id=file_id, replay_times=2)
    assert status == 201, body
    info = body["media_info"]
    assert (info["width"], info["height"], info["has_video"], info["has_audio"]) == (320, 240, True, True)
    assert 1900 <= info["duration_ms"] <= 2200, info
    video = track_of(play_node, body["participant_id"], TrackKind.VIDEO)
    audio = track_of(play_node, body["participant_id"], TrackKind.AUDIO)
    frames = video.subscribe_video()
    samples = audio.subscribe_audio(max_ms=10000)
    task = play_node.ingress.get(body["ingress_id"])
    await wait_until(lambda: not task.active, "the play-in ended")
    assert task.status == "complete", task.describe()
    stats = task.result["stats"]
    assert stats["loops"] == 3 and stats["video_packets"] == 3 * 2 * FPS, stats
    # decoded on the bus: three times the file's frames (a decoder may lose one at a boundary)
    assert 3 * 2 * FPS - 3 <= frames.received <= 3 * 2 * FPS, frames.received
    assert samples.queued > 0 or samples.dropped_samples > 0
    named: list[Any] = []

    def ended_seen() -> bool:
        while not events.queue.empty():
            named.append(events.queue.get_nowait())
        return any(e.event == "ingress.ended" for e in named)

    await wait_until(ended_seen, "the ingress.ended event")
    replays = [e for e in named if e.event == "ingress.status" and e.data.get("event") == "replay"]
    assert [e.data["loop"] for e in replays] == [2, 3]
    assert [e.event for e in named if e.event in ("ingress.started", "ingress.ended")] == [
        "ingress.started", "ingress.ended"]
    ended = next(e for e in named if e.event == "ingress.ended")
    assert ended.data["reason"] == "eof" and ended.data["loops"] == 3
    # the last loop plays its 2 s in real time, then the end waits end_event_delay_s (0.5 s):
    # a lower bound only, which a slow machine cannot break
    assert ended.ts_ms - replays[-1].ts_ms >= 2000 + 500 - 100, (ended.ts_ms, replays[-1].ts_ms)
    joined = next(e for e in named if e.event == "participant.joined")
    assert joined.data["participant"]["kind"] == "media"
    assert any(e.event == "participant.left" for e in named)
    events.close()


async def test_pause_resume_seek_follow_the_colours(api: Any, play_node: Node, media_dir: Path) -> None:
    client, auth = api
    status, body = await start(client, auth, url=str(media_dir / "colours.mp4"))
    assert status == 201, body
    iid, pid = body["ingress_id"], body["participant_id"]
    assert body["media_info"]["has_audio"] is False and body["media_info"]["mock_audio"] is True
    watch = ColourWatch(track_of(play_node, pid, TrackKind.VIDEO))
    try:
        await wait_until(lambda: watch.current == 1, "colour 1 shown")
        response = await client.post(f"/v1/ingress/{iid}/control", json={"action": "pause"}, headers=auth)
        assert response.status == 200, await response.text()
        await asyncio.sleep(0.3)
        paused_at, received = watch.current, watch.sub.received
        await asyncio.sleep(2.2)  # more than two colours' worth of wall time
        assert watch.current == paused_at and watch.sub.received == received, (watch.seen, received)
        response = await client.post(f"/v1/ingress/{iid}/control", json={"action": "resume"}, headers=auth)
        assert response.status == 200
        await wait_until(lambda: watch.current != paused_at, "playing again after resume")
        assert watch.current == paused_at + 1, watch.seen  # continued where it paused, skipped nothing
        before_seek = len(watch.seen)
        response = await client.post(f"/v1/ingress/{iid}/control", json={"action": "seek", "position_s": 6.0},
                                     headers=auth)
        assert response.status == 200, await response.text()
        await wait_until(lambda: watch.current == 6, "colour 6 after the seek")
        after = watch.seen[before_seek:]
        assert set(after) <= {watch.seen[before_seek - 1], 6}, watch.seen  # jumped, did not play through
        await wait_until(lambda: watch.current == 7, "the last colour")
        assert watch.seen[:2] == [0, 1], watch.seen  # a late subscriber starts from the current GOP
    finally:
        watch.close()
    response = await client.post(f"/v1/ingress/{iid}/control", json={"action": "seek", "position_s": 99},
                                 headers=auth)
    assert response.status in (400, 422)


async def test_file_without_audio_publishes_silence(api: Any, play_node: Node, media_dir: Path) -> None:
    client, auth = api
    status, body = await start(client, auth, url=f"file://{media_dir / 'colours.mp4'}", start_s=5)
    assert status == 201, body
    audio = track_of(play_node, body["participant_id"], TrackKind.AUDIO)
    assert audio is not None
    sub = audio.subscribe_audio(max_ms=5000)
    await wait_until(lambda: sub.queued >= 48000 // 2, "half a second of audio")
    block = sub.pull(sub.queued)
    assert block is not None and block.shape[1] == 2 and not block.any()  # silence, not nothing
    # started at 5 s: the picture is colour 5, then 6
    watch = ColourWatch(track_of(play_node, body["participant_id"], TrackKind.VIDEO))
    try:
        await wait_until(lambda: watch.current in (5, 6), "colour 5 or 6")
        assert watch.seen[0] in (5, 6)
    finally:
        watch.close()
    response = await client.delete(f"/v1/ingress/{body['ingress_id']}", headers=auth)
    assert (await response.json())["status"] == "complete"


async def test_hls_over_http_plays(api: Any, play_node: Node, http_server: str) -> None:
    client, auth = api
    status, body = await start(client, auth, url=f"{http_server}/hls/index.m3u8")
    assert status == 201, body
    info = body["media_info"]
    assert info["has_video"] and info["has_audio"] and info["format"] == "hls", info
    video = track_of(play_node, body["participant_id"], TrackKind.VIDEO)
    watch = ColourWatch(video)
    audio = track_of(play_node, body["participant_id"], TrackKind.AUDIO).subscribe_audio(max_ms=10000)
    try:
        task = play_node.ingress.get(body["ingress_id"])
        await wait_until(lambda: not task.active, "the HLS stream ended")
        assert task.status == "complete", task.describe()
        assert watch.seen == [2], watch.seen  # blue throughout
        assert watch.sub.received >= 3 * FPS - 3, watch.sub.received
        samples = audio.pull(audio.queued)
        assert samples is not None
        spectrum = np.abs(np.fft.rfft(samples[:, 0].astype(float)))
        freqs = np.fft.rfftfreq(len(samples), 1 / 48000)
        assert abs(freqs[int(spectrum.argmax())] - 700) < 10
    finally:
        watch.close()


async def test_bad_sources_fail_with_a_reason(api: Any, play_node: Node, media_dir: Path, tmp_path: Path) -> None:
    client, auth = api
    events = play_node.events.subscribe("play", maxsize=1000)
    status, body = await start(client, auth, url=str(media_dir / "missing.mp4"))
    assert status == 404 and body["error"]["code"] == "file_not_found", body
    status, body = await start(client, auth, url="/etc/hostname")
    assert status == 403 and body["error"]["code"] == "path_not_allowed", body
    link = media_dir / "escape.mp4"  # a symlink out of the allowed directory is not a way out
    link.unlink(missing_ok=True)
    link.symlink_to("/etc/hostname")
    status, body = await start(client, auth, url=str(link))
    assert status == 403, body
    status, body = await start(client, auth, url=f"{media_dir}/../{media_dir.name}/../../etc/passwd.mp4")
    assert status == 403, body
    status, body = await start(client, auth, url="ftp://127.0.0.1/x.mp4")
    assert status == 400 and body["error"]["field"] == "url", body
    dead = f"http://127.0.0.1:{free_port()}/live.m3u8"
    status, body = await start(client, auth, url=dead)
    assert status == 422 and body["error"]["code"] == "source_unreachable", body
    assert "refused" in body["error"]["message"].lower(), body
    # a playlist disguised as an mp4 is refused by the container whitelist
    (media_dir / "playlist.mp4").write_text("#EXTM3U\n#EXTINF:1,\nfile:///etc/hostname\n")
    status, body = await start(client, auth, url=str(media_dir / "playlist.mp4"))
    assert status == 415 and body["error"]["code"] == "unreadable_media", body
    # an audio codec FFmpeg has no decoder for: a WAV with format tag 0x9999
    import struct
    fmt = struct.pack("<HHIIHH", 0x9999, 1, 8000, 16000, 2, 16)
    data = bytes(3200)
    riff = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    (media_dir / "odd.wav").write_bytes(b"RIFF" + struct.pack("<I", len(riff)) + riff)
    status, body = await start(client, auth, url=str(media_dir / "odd.wav"))
    assert status == 415 and body["error"]["code"] == "unsupported_codec", body
    assert "codec" in body["error"]["message"]
    seen: list[Any] = []

    def failure_seen() -> bool:
        while not events.queue.empty():
            seen.append(events.queue.get_nowait())
        return any(e.event == "ingress.ended" and e.data.get("status") == "failed" for e in seen)

    await wait_until(failure_seen, "a failed ingress.ended event")
    retries = [e for e in seen if e.event == "ingress.status" and e.data.get("status") == "retrying"]
    assert [e.data["attempt"] for e in retries] == [1, 2, 3], [e.data for e in retries]
    failed = [e for e in seen if e.event == "ingress.ended" and e.data.get("status") == "failed"]
    assert any(e.data["error"]["code"] == "source_unreachable" for e in failed)
    assert not play_node.rooms.rooms["play"].participants  # nothing joined
    events.close()


async def test_switch_to_another_file_without_audio(api: Any, play_node: Node, media_dir: Path) -> None:
    client, auth = api
    status, body = await start(client, auth, url=str(media_dir / "colours.mp4"), start_s=3, audio=False)
    assert status == 201, body
    iid, pid = body["ingress_id"], body["participant_id"]
    assert track_of(play_node, pid, TrackKind.AUDIO) is None  # "audio": false: not even silence
    watch = ColourWatch(track_of(play_node, pid, TrackKind.VIDEO), lambda: track_of(play_node, pid, TrackKind.VIDEO))
    try:
        await wait_until(lambda: watch.current == 3, "colour 3 at start_s=3")
        response = await client.post(f"/v1/ingress/{iid}/control",
                                     json={"action": "switch", "url": str(media_dir / "clip.mp4")}, headers=auth)
        assert response.status == 200, await response.text()
        assert (await response.json())["media_info"]["has_audio"] is True
        await wait_until(lambda: watch.current == 1, "the green clip after the switch")
        assert watch.seen[watch.seen.index(3):] == [3, 1], watch.seen
        assert track_of(play_node, pid, TrackKind.AUDIO) is None
        response = await client.post(f"/v1/ingress/{iid}/control",
                                     json={"action": "switch", "url": str(media_dir / "nothing.mp4")}, headers=auth)
        assert response.status == 404  # a bad switch leaves the current source playing
        assert play_node.ingress.get(iid).active
    finally:
        watch.close()


async def test_an_http_file_plays_to_the_end(api: Any, play_node: Node, http_server: str) -> None:
    client, auth = api
    status, body = await start(client, auth, url=f"{http_server}/clip.mp4")
    assert status == 201, body
    assert body["media_info"]["has_audio"] and not body["media_info"]["live"], body
    watch = ColourWatch(track_of(play_node, body["participant_id"], TrackKind.VIDEO))
    try:
        task = play_node.ingress.get(body["ingress_id"])
        await wait_until(lambda: not task.active, "the HTTP file ended")
        assert task.status == "complete" and task.result["stats"]["video_packets"] == 2 * FPS, task.describe()
        assert watch.seen == [1], watch.seen  # green
    finally:
        watch.close()
