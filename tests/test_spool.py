"""The upload spool: files go up in commit order, failures are retried with backoff and reported
with the server's words, manifests are private, a crash's left-overs are finalized and uploaded
at the next start, a nearly full disk refuses new recordings (507) and keeps running ones."""

from __future__ import annotations

import asyncio
import json
import stat
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
import structlog

from gateway.hookspecs import hookimpl
from gateway.node import Node
from gateway.spool import MANIFEST_SUFFIX, InsufficientStorage
from gateway.storage import UploadError
from tests.api.conftest import Api, EventLog

FAST = ["spool.backoff_initial_s=0.05", "spool.backoff_max_s=0.2"]


@pytest.fixture(autouse=True)
def _logs_to_the_current_stdout() -> None:
    """tests/test_logging.py leaves structlog writing to a capture stream pytest has closed since;
    every warning would then raise ValueError. Start from structlog's defaults."""
    structlog.reset_defaults()


class FlakyStore:
    """A backend that fails its first `failures` puts (transiently, or for good) and keeps the rest."""

    name = "flaky"

    def __init__(self) -> None:
        self.failures = 0
        self.permanent = False
        self.stored: list[tuple[str, bytes]] = []
        self.gate: asyncio.Event | None = None
        self.down_prefix = "\x00"  # keys starting with this fail every time (a server that is away)

    def validate(self, options: dict[str, Any]) -> None:
        pass

    def local_dir(self, options: dict[str, Any]) -> None:
        return None

    async def put(self, path: Path, key: str, options: dict[str, Any]) -> dict[str, Any]:
        if self.gate is not None:
            await self.gate.wait()
        if key.startswith(self.down_prefix):
            raise UploadError("connection refused", code="EndpointConnectionError")
        if self.failures > 0:
            self.failures -= 1
            raise UploadError("Service Unavailable: try later" if not self.permanent else "The key is wrong",
                              code="SlowDown" if not self.permanent else "AccessDenied", retry=not self.permanent)
        self.stored.append((key, path.read_bytes()))
        return {"key": key, "url": f"flaky://{key}", "size": path.stat().st_size}


class FlakyPlugin:
    def __init__(self, store: FlakyStore) -> None:
        self.store = store

    @hookimpl
    def mediagate_storage_backends(self, node: Node) -> list[FlakyStore]:
        return [self.store]


@pytest.fixture
def store() -> FlakyStore:
    return FlakyStore()


async def wait_for(check: Any, what: str, timeout: float = 120.0) -> None:
    await Api.wait_until(check, what, timeout)


async def spool_node(make_node: Any, store: FlakyStore, *overrides: str) -> Node:
    return await make_node(*FAST, *overrides, extra_plugins={"flaky": FlakyPlugin(store)})


async def test_uploads_go_in_commit_order_through_failures(make_node: Any, store: FlakyStore) -> None:
    node = await spool_node(make_node, store)
    log = EventLog(node, None)
    store.failures = 3
    entries = []
    for index in range(4):
        entry = node.spool.reserve(room_id="r", egress_id="EG_order", filename=f"seg_{index}.ts",
                                   storage={"backend": "flaky", "prefix": "p"})
        entry.path.write_bytes(f"segment {index}".encode())
        entries.append(entry)
    for entry in entries:  # committed in order, each while the previous may still be retrying
        await node.spool.commit(entry, {"index": entries.index(entry)})
    results = [await node.spool.uploaded(entry, timeout=120) for entry in entries]
    assert [key for key, _ in store.stored] == [f"p/seg_{i}.ts" for i in range(4)]
    assert [body for _, body in store.stored] == [f"segment {i}".encode() for i in range(4)]
    assert [r["url"] for r in results if r] == [f"flaky://p/seg_{i}.ts" for i in range(4)]
    retries = log.named("upload.retry")
    assert len(retries) == 3 and {e.data["filename"] for e in retries} == {"seg_0.ts"}
    assert retries[0].data["error"] == {"code": "SlowDown", "message": "Service Unavailable: try later"}
    assert [e.data["filename"] for e in log.named("upload.done")] == [f"seg_{i}.ts" for i in range(4)]
    done = log.named("upload.done")[0].data
    assert done["recovered"] is False and done["size"] == len(b"segment 0") and done["meta"]["index"] == 0
    assert not any(node.spool.root.iterdir()), "stored files leave the spool"
    log.close()


async def test_a_recording_retrying_does_not_hold_up_the_others(make_node: Any, store: FlakyStore) -> None:
    node = await spool_node(make_node, store, "spool.concurrency=1")
    store.down_prefix = "away/"
    stuck = node.spool.reserve(room_id="r", egress_id="EG_away", filename="a.mp4",
                               storage={"backend": "flaky", "prefix": "away"})
    stuck.path.write_bytes(b"a")
    await node.spool.commit(stuck)
    other = node.spool.reserve(room_id="r", egress_id="EG_fine", filename="b.mp4", storage={"backend": "flaky"})
    other.path.write_bytes(b"b")
    await node.spool.commit(other)
    assert (await node.spool.uploaded(other, timeout=120) or {}).get("key") == "b.mp4"
    assert [e.filename for e in node.spool.pending()] == ["a.mp4"]  # still trying, still queued


async def test_permanent_failure_is_reported_and_kept_for_the_next_start(make_node: Any, store: FlakyStore) -> None:
    node = await spool_node(make_node, store)
    log = EventLog(node, None)
    store.failures, store.permanent = 1, True
    entry = node.spool.reserve(room_id="r", egress_id="EG_bad", filename="a.mp4", storage={"backend": "flaky"})
    entry.path.write_bytes(b"data")
    await node.spool.commit(entry)
    await wait_for(lambda: _async(bool(log.named("upload.failed"))), "the upload given up")
    assert await node.spool.uploaded(entry, timeout=1) is None
    failed = log.named("upload.failed")
    assert len(failed) == 1 and failed[0].data["error"] == {"code": "AccessDenied", "message": "The key is wrong"}
    assert failed[0].data["attempts"] == 1 and log.named("upload.retry") == []
    manifest = json.loads(entry.manifest.read_text())
    assert manifest["state"] == "failed" and entry.path.read_bytes() == b"data"
    # the next start tries again (the operator may have fixed the credentials in the config)
    await node.spool.stop()
    await node.spool.start()
    await wait_for(lambda: _async(bool(store.stored)), "the failed file stored after a restart")
    assert store.stored == [("a.mp4", b"data")]
    log.close()


async def _async(value: Any) -> Any:
    return value


async def test_a_manifest_whose_file_was_handed_over_is_dropped_at_start(make_config: Any, store: FlakyStore) -> None:
    config = make_config(*FAST)
    spool_dir = config.node.data_dir / "spool" / "EG_gone"
    spool_dir.mkdir(parents=True)
    (spool_dir / ("moved.mp4" + MANIFEST_SUFFIX)).write_text(json.dumps({
        "egress_id": "EG_gone", "room_id": "r", "filename": "moved.mp4", "state": "ready",
        "storage": {"backend": "flaky"}, "committed_ns": 1}))
    node = Node(config, extra_plugins={"flaky": FlakyPlugin(store)})
    log = EventLog(node, None)
    await node.start()
    try:
        await wait_for(lambda: _async(not spool_dir.exists()), "the stale manifest removed")
        assert log.named("upload.failed") == [] and store.stored == []
    finally:
        log.close()
        await node.stop()


async def test_max_attempts_then_failed(make_node: Any, store: FlakyStore) -> None:
    node = await spool_node(make_node, store, "spool.max_attempts=3")
    log = EventLog(node, None)
    store.failures = 10
    entry = node.spool.reserve(room_id="r", egress_id="EG_tries", filename="a.mp4", storage={"backend": "flaky"})
    entry.path.write_bytes(b"x")
    await node.spool.commit(entry)
    await wait_for(lambda: _async(bool(log.named("upload.failed"))), "the upload given up")
    assert len(log.named("upload.retry")) == 2
    assert [e.data["retry_in_s"] for e in log.named("upload.retry")] == [0.05, 0.1]  # exponential backoff
    assert log.named("upload.failed")[0].data["attempts"] == 3
    log.close()


async def test_manifest_is_private_and_holds_what_a_restart_needs(make_node: Any, store: FlakyStore) -> None:
    node = await spool_node(make_node, store)
    entry = node.spool.reserve(room_id="r", egress_id="EG_m", filename="rec.mp4",
                               storage={"backend": "flaky", "access_key": "AK", "secret_key": "SK-secret"})
    mode = stat.S_IMODE(entry.manifest.stat().st_mode)
    assert mode == 0o600, oct(mode)
    assert stat.S_IMODE(node.spool.root.stat().st_mode) == 0o700
    data = json.loads(entry.manifest.read_text())
    assert data["storage"]["secret_key"] == "SK-secret" and data["state"] == "recording"
    assert entry.manifest.name == "rec.mp4" + MANIFEST_SUFFIX


@pytest.mark.parametrize("name", ["../x.mp4", "/abs.mp4", "a/../../b", "nul\x00.mp4", ""])
async def test_hostile_file_names_are_refused(make_node: Any, store: FlakyStore, name: str) -> None:
    node = await spool_node(make_node, store)
    from gateway.errors import ValidationFailed

    with pytest.raises(ValidationFailed):
        node.spool.reserve(room_id="r", egress_id="EG_h", filename=name, storage={"backend": "flaky"})


def write_fragmented_mp4(path: Path, seconds: float, rgb: tuple[int, int, int], cut: bool) -> None:
    """A fragmented MP4 as the recorder writes it; `cut` chops the tail the way a crash would."""
    with av.open(str(path), "w", format="mp4",
                 container_options={"movflags": "frag_keyframe+empty_moov+default_base_moof"}) as out:
        stream = out.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.codec_context.gop_size = 10
        image = np.zeros((48, 64, 3), np.uint8)
        image[:] = rgb
        for index in range(int(seconds * 10)):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = index, Fraction(1, 10)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    if cut:
        data = path.read_bytes()
        path.write_bytes(data[: len(data) - 60])


async def test_crash_left_overs_are_finalized_uploaded_and_announced(make_config: Any, store: FlakyStore) -> None:
    config = make_config(*FAST)
    spool_dir = config.node.data_dir / "spool" / "EG_crash"
    spool_dir.mkdir(parents=True)
    video = spool_dir / "room_EG_crash.mp4"
    await asyncio.to_thread(write_fragmented_mp4, video, 3.0, (0, 255, 0), True)
    manifest = {"egress_id": "EG_crash", "room_id": "r1", "filename": video.name, "state": "recording",
                "storage": {"backend": "flaky"}, "meta": {"format": "mp4", "key": "r1/room_EG_crash.mp4"},
                "created_at": 1.0}
    (spool_dir / (video.name + MANIFEST_SUFFIX)).write_text(json.dumps(manifest))
    empty = spool_dir / "empty.mp4"
    empty.write_bytes(b"")
    (spool_dir / ("empty.mp4" + MANIFEST_SUFFIX)).write_text(json.dumps({**manifest, "filename": "empty.mp4"}))
    node = Node(config, extra_plugins={"flaky": FlakyPlugin(store)})
    log = EventLog(node, None)
    await node.start()
    try:
        await wait_for(lambda: _async(bool(log.named("upload.done"))), "the recovered file uploaded")
        recovered = log.named("egress.recovered")
        assert len(recovered) == 1 and recovered[0].room_id == "r1"
        assert [f["filename"] for f in recovered[0].data["files"]] == [video.name]
        done = log.named("upload.done")[0].data
        assert done["recovered"] is True and done["key"] == "r1/room_EG_crash.mp4"
        assert 1.5 < done["meta"]["duration_s"] <= 3.1
        (key, body), = store.stored
        assert key == "r1/room_EG_crash.mp4"
        out = spool_dir.parent / "check.mp4"
        out.write_bytes(body)
        with av.open(str(out)) as container:
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        assert len(frames) >= 15
        assert np.abs(frames[-1][24, 32].astype(int) - [0, 255, 0]).max() < 40
        assert not empty.exists(), "an interrupted file with no media is dropped"
    finally:
        log.close()
        await node.stop()


async def test_low_disk_refuses_new_recordings_and_keeps_running_ones(node: Node, client: Any,
                                                                     auth: dict[str, str]) -> None:
    api = Api(client, auth)
    log = EventLog(node, None)
    await api.create_room(room_id="disk")
    await api.add_test_participant("disk", "red")
    response = await client.post("/v1/rooms/disk/egress", headers=auth, json={"kind": "record"})
    assert response.status == 201, await response.text()
    running = (await response.json())["egress_id"]
    await asyncio.sleep(2.5)
    node.spool.min_free_bytes = node.spool.free_bytes() + 10**15  # the disk is "nearly full" from now on
    response = await client.post("/v1/rooms/disk/egress", headers=auth, json={"kind": "record"})
    body = await api.expect_error(response, 507, "insufficient_storage", "record")
    assert "spool.min_free_mb" in body["error"]["message"]
    low = log.named("spool.low_disk")
    assert len(low) == 1 and low[0].room_id == "disk" and low[0].data["free_bytes"] > 0
    # the running recording goes on and keeps its data
    response = await client.delete(f"/v1/egress/{running}", headers=auth)
    stopped = await response.json()
    assert stopped["status"] == "complete", stopped
    file = stopped["files"][0]
    assert file["size"] > 10_000 and Path(file["path"]).stat().st_size == file["size"]
    assert file["duration_s"] > 1.5
    log.close()


def test_insufficient_storage_is_a_507() -> None:
    error = InsufficientStorage("full")
    assert error.status == 507 and error.to_dict()["error"]["code"] == "insufficient_storage"
