"""Recordings stored in a real S3 server: SeaweedFS (``weed mini``), which checks SigV4
signatures. Test sources of distinct colours and tones are recorded (the composite, and one
participant alone), uploaded through the spool, downloaded back and decoded. A wrong secret is
reported with the server's own message; a 20 s outage (a proxy in front of SeaweedFS cut) delays
every file and loses none, in order; a node killed with SIGKILL mid-recording uploads the
playable partial recording after its restart and says so."""

from __future__ import annotations

import asyncio
import json
import stat
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.events import Event
from gateway.node import Node
from tests.conftest import ACCESS_KEY as API_KEY
from tests.conftest import SECRET_KEY as API_SECRET
from tests.e2e.gateway_process import Gateway
from tests.e2e.helpers import free_port
from tests.plugins.storage_s3.seaweed import ACCESS_KEY, BUCKET, SECRET_KEY, CuttableProxy, Seaweed, start_seaweed
from tests.test_spool import write_fragmented_mp4

pytestmark = pytest.mark.e2e

RED, BLUE = ("FF0000", 500.0), ("0000FF", 1100.0)
WAIT_S = 90.0


@pytest.fixture(scope="module")
def weed(tmp_path_factory: pytest.TempPathFactory) -> Seaweed:
    server = start_seaweed(tmp_path_factory.mktemp("seaweed"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def proxy(weed: Seaweed) -> CuttableProxy:
    front = CuttableProxy(int(weed.endpoint.rsplit(":", 1)[1]))
    yield front
    front.close()


def s3_settings(endpoint: str) -> list[str]:
    return [f'plugins.storage_s3.endpoint="{endpoint}"', f'plugins.storage_s3.access_key="{ACCESS_KEY}"',
            f'plugins.storage_s3.secret_key="{SECRET_KEY}"', f'plugins.storage_s3.bucket="{BUCKET}"',
            'plugins.storage_s3.addressing_style="path"', "spool.backoff_initial_s=0.5", "spool.backoff_max_s=2"]


class Events:
    def __init__(self, node: Node) -> None:
        self.sub = node.events.subscribe(None, maxsize=100000)
        self.seen: list[Event] = []

    def named(self, name: str, **data: Any) -> list[Event]:
        while not self.sub.queue.empty():
            self.seen.append(self.sub.queue.get_nowait())
        return [e for e in self.seen if e.event == name and all(e.data.get(k) == v for k, v in data.items())]

    async def wait(self, name: str, count: int = 1, timeout: float = WAIT_S, **data: Any) -> list[Event]:
        deadline = time.monotonic() + timeout
        while len(self.named(name, **data)) < count:
            assert time.monotonic() < deadline, f"never saw {count} x {name} {data}: {[e.event for e in self.seen]}"
            await asyncio.sleep(0.1)
        return self.named(name, **data)


@pytest.fixture
async def s3_node(make_node: Callable[..., Awaitable[Node]], proxy: CuttableProxy
                  ) -> AsyncIterator[tuple[Node, TestClient, dict[str, str]]]:
    node = await make_node(*s3_settings(proxy.endpoint))
    async with TestClient(TestServer(node.app)) as client:
        node.url = str(client.make_url("")).rstrip("/")
        response = await client.post("/v1/auth/token", json={"access_key": API_KEY, "secret_key": API_SECRET})
        auth = {"Authorization": f"Bearer {(await response.json())['token']}"}
        yield node, client, auth


async def room_with_sources(client: TestClient, auth: dict[str, str], room: str) -> dict[str, str]:
    response = await client.post("/v1/rooms", json={"room_id": room}, headers=auth)
    assert response.status == 201, await response.text()
    ids = {}
    for identity, (colour, tone) in {"red": RED, "blue": BLUE}.items():
        response = await client.post(f"/v1/rooms/{room}/ingress", headers=auth, json={
            "kind": "test", "identity": identity, "pattern": {"color": colour, "tone_hz": tone, "volume": 0.2}})
        assert response.status == 201, await response.text()
        ids[identity] = (await response.json())["participant_id"]
    return ids


async def start_recording(client: TestClient, auth: dict[str, str], room: str, **body: Any) -> str:
    body = {"kind": "record", "encoding": {"width": 640, "height": 360, "fps": 15, "video_kbps": 800}, **body}
    response = await client.post(f"/v1/rooms/{room}/egress", headers=auth, json=body)
    assert response.status == 201, await response.text()
    return (await response.json())["egress_id"]


async def stop(client: TestClient, auth: dict[str, str], egress_id: str) -> dict[str, Any]:
    response = await client.delete(f"/v1/egress/{egress_id}", headers=auth)
    body = await response.json()
    assert body["status"] == "complete", body
    return body


def download(weed: Seaweed, key: str, target: Path) -> tuple[Path, int]:
    obj = weed.client().get_object(Bucket=BUCKET, Key=key)
    target.write_bytes(obj["Body"].read())
    return target, obj["ContentLength"]


def decode(path: Path) -> tuple[list[np.ndarray], np.ndarray, float]:
    with av.open(str(path)) as container:
        duration = container.duration / 1e6 if container.duration else 0.0
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    with av.open(str(path)) as container:
        chunks = [f.to_ndarray() for f in container.decode(audio=0)] if container.streams.audio else []
    audio = np.concatenate([c.mean(axis=0) for c in chunks]) if chunks else np.zeros(1)
    return frames, audio, duration


def patch(frame: np.ndarray, x: int, y: int) -> np.ndarray:
    return frame[y - 4:y + 4, x - 4:x + 4].reshape(-1, 3).mean(axis=0)


def near(pixel: np.ndarray, colour: str, tolerance: int = 40) -> bool:
    rgb = np.array([int(colour[i:i + 2], 16) for i in (0, 2, 4)])
    return bool(np.abs(pixel - rgb).max() <= tolerance)


def tone_level(audio: np.ndarray, hz: float) -> float:
    """A tone's spectral peak over the level of its neighbourhood (±150 Hz, the peak left out), after
    the first second where buffers prime: large for a tone that is there, near 1 for one that is
    not, even when a loaded machine's glitches raise the noise across the spectrum."""
    audio = audio[48000:]
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    freqs = np.fft.rfftfreq(len(audio), 1 / 48000)
    peak = spectrum[(freqs > hz - 8) & (freqs < hz + 8)].max()
    around = spectrum[(np.abs(freqs - hz) < 150) & (np.abs(freqs - hz) > 20)]
    return float(peak / np.median(around))


async def test_composite_and_participant_recordings_land_in_s3(s3_node: Any, weed: Seaweed, proxy: CuttableProxy,
                                                              tmp_path: Path) -> None:
    node, client, auth = s3_node
    events = Events(node)
    ids = await room_with_sources(client, auth, "s3room")
    mixed = await start_recording(client, auth, "s3room", record={"storage": {"backend": "s3", "prefix": "mix"}})
    solo = await start_recording(client, auth, "s3room", source={"participant": ids["red"]},
                                 record={"storage": {"backend": "s3", "prefix": "solo"}})
    await asyncio.sleep(4.5)
    stopped = {eid: await stop(client, auth, eid) for eid in (mixed, solo)}
    done = {eid: (await events.wait("upload.done", egress_id=eid))[0].data for eid in (mixed, solo)}
    for eid, data in done.items():
        file = stopped[eid]["files"][0]
        assert data["url"] == f"{proxy.endpoint}/{BUCKET}/{data['key']}"  # path-style addressing
        assert file["url"] == data["url"] and file["key"] == data["key"]  # the stop answer names the object
        assert data["key"].startswith(("mix/s3room/", "solo/s3room/")) and data["recovered"] is False
    # the composite: red left, blue right, both tones, about 4.5 s
    path, length = download(weed, done[mixed]["key"], tmp_path / "mixed.mp4")
    assert length == done[mixed]["size"] == stopped[mixed]["files"][0]["size"]
    frames, audio, duration = decode(path)
    assert duration > 3.0 and abs(duration - stopped[mixed]["files"][0]["duration_s"]) < 0.5 and len(frames) > 40
    assert near(patch(frames[-1].astype(int), 160, 180), RED[0])
    assert near(patch(frames[-1].astype(int), 480, 180), BLUE[0])
    assert tone_level(audio, RED[1]) > 20 and tone_level(audio, BLUE[1]) > 20
    # the participant alone: all red, only its tone
    path, length = download(weed, done[solo]["key"], tmp_path / "solo.mp4")
    assert length == done[solo]["size"]
    frames, audio, duration = decode(path)
    assert duration > 3.0 and abs(duration - stopped[solo]["files"][0]["duration_s"]) < 0.5
    assert near(patch(frames[-1].astype(int), 160, 180), RED[0]) and near(patch(frames[-1].astype(int), 480, 180),
                                                                          RED[0])
    red, blue = tone_level(audio, RED[1]), tone_level(audio, BLUE[1])
    assert red > 20 and blue < red / 20  # blue's tone is not in it
    assert not any(node.spool.root.iterdir()), "stored recordings leave the spool"


async def test_wrong_secret_is_a_failure_event_with_the_servers_message(s3_node: Any, weed: Seaweed,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    node, client, auth = s3_node
    events = Events(node)
    await room_with_sources(client, auth, "badkey")
    storage = {"backend": "s3", "access_key": ACCESS_KEY, "secret_key": "not-the-secret-xyz", "prefix": "bad"}
    egress_id = await start_recording(client, auth, "badkey", record={"storage": storage})
    # the API never echoes the secret; the spool's manifest keeps it, readable by the node's user only
    response = await client.get(f"/v1/egress/{egress_id}", headers=auth)
    described = await response.json()
    assert described["request"]["record"]["storage"]["secret_key"] == "***"
    deadline = time.monotonic() + WAIT_S  # the recorder reserves its first file when media arrives
    while not (manifests := list(node.spool.root.glob(f"{egress_id}/**/*.manifest.json"))):
        assert time.monotonic() < deadline, "no file was reserved in the spool"
        await asyncio.sleep(0.1)
    manifest = manifests[0]
    assert stat.S_IMODE(manifest.stat().st_mode) == 0o600
    await asyncio.sleep(2)
    stopped = await stop(client, auth, egress_id)
    failed = (await events.wait("upload.failed", egress_id=egress_id))[0].data
    assert failed["error"]["code"] == "SignatureDoesNotMatch"
    assert "signature we calculated does not match" in failed["error"]["message"]  # SeaweedFS's words
    assert stopped["files"][0]["upload"] == "failed"
    assert events.named("upload.done", egress_id=egress_id) == []
    # the failed file stays in the spool for a retry at the next start
    assert json.loads(manifest.read_text())["state"] == "failed"
    everything = json.dumps([e.to_dict() for e in events.seen], default=str) + capsys.readouterr().out
    assert "not-the-secret-xyz" not in everything


def segment_colour(index: int) -> tuple[int, int, int]:
    return [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)][index]


async def test_outage_of_20_s_delays_every_file_and_loses_none(s3_node: Any, weed: Seaweed, proxy: CuttableProxy,
                                                               tmp_path: Path) -> None:
    node, client, auth = s3_node
    events = Events(node)
    await room_with_sources(client, auth, "outage")
    recording = await start_recording(client, auth, "outage", record={"storage": {"backend": "s3",
                                                                                  "prefix": "outage"}})
    await asyncio.sleep(2)
    proxy.cut()
    cut_at = time.monotonic()
    try:
        segments = []
        for index in range(4):  # segments of one egress committed during the outage, one every 3 s
            entry = node.spool.reserve(room_id="outage", egress_id="EG_segments", filename=f"seg_{index}.mp4",
                                       storage={"backend": "s3", "prefix": "outage"}, meta={"index": index})
            await asyncio.to_thread(write_fragmented_mp4, entry.path, 1.0, segment_colour(index), False)
            await node.spool.commit(entry)
            segments.append(entry)
            await asyncio.sleep(3)
        stopped = await stop(client, auth, recording)  # the recording ends while the storage is away
        recorded_s = stopped["files"][0]["duration_s"]
        assert stopped["files"][0]["upload"] == "pending"
        await asyncio.sleep(max(0.0, 20 - (time.monotonic() - cut_at)))
        assert events.named("upload.done") == [], "nothing can be stored while the server is away"
        retries = events.named("upload.retry")
        assert retries and all(e.data["error"]["code"] for e in retries)
    finally:
        proxy.restore()
    done = await events.wait("upload.done", count=5)
    order = [e.data["filename"] for e in done if e.data["egress_id"] == "EG_segments"]
    assert order == [f"seg_{i}.mp4" for i in range(4)], order
    for index in range(4):
        path, _ = download(weed, f"outage/seg_{index}.mp4", tmp_path / f"seg_{index}.mp4")
        frames, _, _ = decode(path)
        assert len(frames) == 10 and near(patch(frames[5].astype(int), 32, 24),
                                          "{:02X}{:02X}{:02X}".format(*segment_colour(index)))
    key = next(e.data["key"] for e in done if e.data["egress_id"] == recording)
    frames, audio, duration = decode(download(weed, key, tmp_path / "outage.mp4")[0])
    assert duration > 10 and abs(duration - recorded_s) < 0.5 and near(patch(frames[-1].astype(int), 160, 180),
                                                                          RED[0])
    assert tone_level(audio, RED[1]) > 20


@pytest.fixture
async def hook_receiver() -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    received: list[dict[str, Any]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append(json.loads(await request.read()))
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", hook)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield f"http://127.0.0.1:{server.port}/hook", received
    await server.close()


def node_settings(weed: Seaweed, hook_url: str) -> list[str]:
    """``--set`` overrides for a real node storing in SeaweedFS and posting events to `hook_url`."""
    return [*s3_settings(weed.endpoint), f'plugins.webhook.urls=["{hook_url}"]',
            'plugins.webhook.events=["egress.*", "upload.*"]', "plugins.webhook.retry_interval_s=1"]


async def test_sigkill_mid_recording_then_restart_uploads_the_partial_recording(
        weed: Seaweed, tmp_path: Path, hook_receiver: tuple[str, list[dict[str, Any]]]) -> None:
    hook_url, received = hook_receiver
    port, data_dir, log = free_port(), tmp_path / "data", tmp_path / "gateway.log"
    settings = node_settings(weed, hook_url)
    gw = await asyncio.to_thread(Gateway, data_dir, port, log, *settings)
    try:
        await asyncio.to_thread(gw.ok, "POST", "/v1/rooms", {"room_id": "crash"}, 201)
        await asyncio.to_thread(gw.ok, "POST", "/v1/rooms/crash/ingress", {
            "kind": "test", "identity": "red", "pattern": {"color": RED[0], "tone_hz": RED[1], "volume": 0.2}}, 201)
        started = await asyncio.to_thread(gw.ok, "POST", "/v1/rooms/crash/egress", {
            "kind": "record", "record": {"storage": {"backend": "s3", "prefix": "crash"}},
            "encoding": {"width": 320, "height": 240, "fps": 15, "video_kbps": 500, "gop_s": 1}}, 201)
        egress_id = started["egress_id"]
        spooled = data_dir / "spool" / egress_id
        started_at = time.monotonic()
        await asyncio.sleep(5)
        files = list(spooled.rglob("*.mp4"))
        assert files and files[0].stat().st_size > 10_000, files
        await asyncio.to_thread(gw.kill)  # SIGKILL: no chance to finish anything
        ran_s = time.monotonic() - started_at
    finally:
        gw.stop()
    assert json.loads(next(spooled.rglob("*.manifest.json")).read_text())["state"] == "recording"

    gw = await asyncio.to_thread(Gateway, data_dir, port, log, *settings)
    try:
        deadline = time.monotonic() + WAIT_S
        while not any(e["event"] == "upload.done" and e["data"]["egress_id"] == egress_id for e in received):
            assert time.monotonic() < deadline, f"no upload.done after the restart: {received}\n{log.read_text()}"
            await asyncio.sleep(0.2)
        while True:  # the file records follow the upload event
            listed = (await asyncio.to_thread(gw.ok, "GET", f"/v1/recordings?egress_id={egress_id}"))["recordings"]
            task = await asyncio.to_thread(gw.ok, "GET", f"/v1/egress/{egress_id}")
            if listed and task["files"] and task["files"][0]["upload"] == "done":
                break
            assert time.monotonic() < deadline, f"the recovered file is not listed: {listed} {task}"
            await asyncio.sleep(0.2)
    finally:
        gw.stop()
    recovered = [e for e in received if e["event"] == "egress.recovered"]
    assert len(recovered) == 1 and recovered[0]["data"]["egress_id"] == egress_id
    assert recovered[0]["room_id"] == "crash" and recovered[0]["data"]["files"][0]["size"] > 10_000
    done = next(e["data"] for e in received if e["event"] == "upload.done")
    assert done["recovered"] is True and done["key"].startswith("crash/crash/")
    # the API lists the recovered file, in the recordings and in the ended task's file list
    assert len(listed) == 1 and listed[0]["recovered"] is True and listed[0]["upload"] == "done", listed
    assert listed[0]["url"] == done["url"] and listed[0]["size"] == done["size"]
    assert task["status"] == "aborted" and task["error"]["code"] == "node_restart", task
    assert [(f["key"], f["upload"], f["recovered"]) for f in task["files"]] == [(done["key"], "done", True)], task
    path, _ = download(weed, done["key"], tmp_path / "recovered.mp4")
    probe = json.loads(subprocess.run(["ffprobe", "-v", "error", "-show_streams", "-show_format", "-of", "json",
                                       str(path)], capture_output=True, text=True, check=True).stdout)
    assert {s["codec_name"] for s in probe["streams"]} == {"h264", "aac"}
    assert 2.5 < float(probe["format"]["duration"]) < ran_s + 1  # from the start to (at most) the kill
    assert abs(listed[0]["duration_s"] - float(probe["format"]["duration"])) < 0.5
    frames, audio, _ = decode(path)
    assert near(patch(frames[-1].astype(int), 160, 120), RED[0]) and tone_level(audio, RED[1]) > 20
    assert not list(spooled.parent.glob(f"{egress_id}/**/*")), "the recovered recording left the spool"


async def test_large_files_go_up_in_parts(weed: Seaweed, tmp_path: Path) -> None:
    """Past the threshold boto3 uploads in 5 MB parts (SeaweedFS refuses smaller non-last parts)."""
    from plugins.storage_s3 import S3Config, S3Storage

    storage = S3Storage(S3Config(endpoint=weed.endpoint, bucket=BUCKET, access_key=ACCESS_KEY, secret_key=SECRET_KEY,
                                 addressing_style="path", multipart_threshold_mb=5, multipart_chunk_mb=5))
    payload = np.random.default_rng(7).integers(0, 256, 12 * 1024 * 1024, dtype=np.uint8).tobytes()
    path = tmp_path / "big.mp4"
    path.write_bytes(payload)
    result = await storage.put(path, "big/big.mp4", {"backend": "s3"})
    head = weed.client().head_object(Bucket=BUCKET, Key="big/big.mp4")
    assert head["ETag"].strip('"').endswith("-3"), head["ETag"]  # an S3 multipart ETag: 3 parts
    assert head["ContentLength"] == result["size"] == len(payload)
    assert head["ContentType"] == "video/mp4"
    assert download(weed, "big/big.mp4", tmp_path / "back.mp4")[0].read_bytes() == payload
