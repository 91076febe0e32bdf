"""Play-in of a live RTMP stream: the ffmpeg CLI publishes a colour and a tone to nginx-rtmp
(started here on a free port), the room plays ``rtmp://…`` and its participant shows the
colour and carries the tone; a live source refuses seek."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import numpy as np
import pytest
from aiohttp.test_utils import TestClient, TestServer

from gateway.media.track import TrackKind
from gateway.node import Node
from tests.e2e.helpers import free_port
from tests.e2e.test_play_ffmpeg import ColourWatch, start, track_of, wait_until

pytestmark = pytest.mark.e2e

NGINX_CONF = """load_module /usr/lib/nginx/modules/ngx_rtmp_module.so;
daemon off;
error_log {dir}/error.log;
pid {dir}/nginx.pid;
events {{ worker_connections 64; }}
rtmp {{ server {{ listen 127.0.0.1:{port}; application live {{ live on; }} }} }}
"""


@pytest.fixture(scope="module")
def nginx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    root = tmp_path_factory.mktemp("nginx")
    port = free_port()
    (root / "nginx.conf").write_text(NGINX_CONF.format(dir=root, port=port))
    proc = subprocess.Popen(["nginx", "-p", str(root), "-e", str(root / "error.log"), "-c", str(root / "nginx.conf")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # listening?
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.05)
    yield port
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def publisher(nginx: int) -> Iterator[str]:
    """ffmpeg publishing magenta and 600 Hz, in real time, for up to 30 s."""
    url = f"rtmp://127.0.0.1:{nginx}/live/source"
    proc = subprocess.Popen(
        ["ffmpeg", "-hide_banner", "-v", "error", "-re", "-f", "lavfi", "-i", "color=c=0xFF00FF:s=320x240:r=30:d=30",
         "-f", "lavfi", "-i", "sine=frequency=600:sample_rate=48000:duration=30", "-c:v", "libx264",
         "-preset", "ultrafast", "-tune", "zerolatency", "-g", "30", "-pix_fmt", "yuv420p", "-c:a", "aac",
         "-f", "flv", url], stdin=subprocess.DEVNULL)
    yield url
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
async def api(make_node: Any) -> AsyncIterator[tuple[TestClient, dict[str, str], Node]]:
    node = await make_node("plugins.play.end_event_delay_s=0.2", "plugins.play.retry_delays_s=[0.5, 1.0, 2.0]")
    assert node.app is not None
    async with TestClient(TestServer(node.app)) as client:
        response = await client.post("/v1/auth/token", json={"access_key": "test_access",
                                                             "secret_key": "test_secret_value"})
        auth = {"Authorization": f"Bearer {(await response.json())['token']}"}
        response = await client.post("/v1/rooms", json={"room_id": "play"}, headers=auth)
        assert response.status == 201
        yield client, auth, node


async def test_a_live_rtmp_stream_plays(api: Any, publisher: str) -> None:
    client, auth, node = api
    await asyncio.sleep(1.0)  # let ffmpeg connect and publish (a play before that is retried anyway)
    status, body = await start(client, auth, url=publisher)
    assert status == 201, body
    info = body["media_info"]
    assert info["live"] and info["has_video"] and info["has_audio"] and info["format"] == "flv", info
    pid = body["participant_id"]
    watch = ColourWatch(track_of_room(node, pid, TrackKind.VIDEO))
    audio = track_of_room(node, pid, TrackKind.AUDIO).subscribe_audio(max_ms=5000)
    try:
        await wait_until(lambda: watch.sub.received >= 30, "a second of the stream decoded")
        assert set(watch.seen) == {5}, watch.seen  # magenta
        await wait_until(lambda: audio.queued >= 48000, "a second of audio")
        samples = audio.pull(audio.queued)
        assert samples is not None
        spectrum = np.abs(np.fft.rfft(samples[:, 0].astype(float)))
        freqs = np.fft.rfftfreq(len(samples), 1 / 48000)
        assert abs(freqs[int(spectrum.argmax())] - 600) < 10
    finally:
        watch.close()
    response = await client.post(f"/v1/ingress/{body['ingress_id']}/control",
                                 json={"action": "seek", "position_s": 1}, headers=auth)
    assert response.status == 422 and (await response.json())["error"]["code"] == "not_seekable"
    response = await client.delete(f"/v1/ingress/{body['ingress_id']}", headers=auth)
    result = await response.json()
    assert result["status"] == "complete" and result["stats"]["video_packets"] >= 30, result


def track_of_room(node: Node, participant_id: str, kind: TrackKind) -> Any:
    track = track_of(node, participant_id, kind)
    assert track is not None
    return track

