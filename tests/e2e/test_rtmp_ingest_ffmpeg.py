"""RTMP ingest against the ffmpeg CLI and against hostile or broken clients: audio and video
stay in sync over a long push, keys and join tokens are checked at publish, a re-publish
replaces the old session, and garbage, truncated handshakes, stalls and unsupported codecs end
only their own connection."""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
import struct
import subprocess
from fractions import Fraction

import pytest

from gateway.media.track import PacketSubscription, Track, TrackKind
from plugins.rtmp.client import PushError, RtmpPublishClient
from tests.e2e.rtmp_gateway import Gateway, gateway_factory, wait_until  # noqa: F401
from tests.e2e.rtmp_peers import ffmpeg_push, kill

pytestmark = pytest.mark.e2e


def rtmp_port(gw: Gateway) -> int:
    return gw.node.pm.get_plugin("rtmp").server.port


@pytest.mark.parametrize("offset_s", [0, 16777], ids=["from_zero", "across_extended_timestamps"])
async def test_long_push_keeps_audio_and_video_in_sync(gateway_factory, offset_s: int) -> None:  # noqa: F811
    """25 s of ffmpeg's AAC and H.264 (B-frames), pushed as fast as ffmpeg can: the last audio
    and the last video timestamps end within one frame of each other (pyrtmp's type-3 defect
    put audio 0.5 s behind here), and every picture is there with pts = dts + cts. Started at
    16777 s, the timestamps cross 0xFFFFFF ms (extended timestamps) during the push."""
    gw = await gateway_factory()
    await gw.room("sync")
    ingress = await gw.rtmp_ingress("sync", "fast")
    media = gw.node.media.room_media(gw.node.rooms.rooms["sync"])
    subs: dict[TrackKind, tuple[Track, PacketSubscription]] = {}

    def added(what: str, track: Track) -> None:  # runs before the track's first packet
        if what == "added":
            subs[track.kind] = (track, track.subscribe_packets(100000))
    unlisten = media.bus.listen(added)
    seconds, fps = 25, 30
    push = ffmpeg_push(ingress["publish_url"], seconds=seconds, size="160x120", fps=fps, bframes=3, realtime=False,
                       extra=["-output_ts_offset", str(offset_s)] if offset_s else None)
    assert await asyncio.to_thread(push.wait, 120) == 0, push.stderr.read() if push.stderr else ""
    unlisten()
    packets: dict[TrackKind, list] = {}
    for kind, (_, sub) in subs.items():
        packets[kind] = []
        while not sub.queue.empty():
            packet = sub.queue.get_nowait()
            if packet is not None:
                packets[kind].append(packet)
    video, audio = packets[TrackKind.VIDEO], packets[TrackKind.AUDIO]
    assert len(video) == seconds * fps
    pts = sorted(p.pts for p in video)
    assert len(set(pts)) == len(pts) and any(p.pts != p.dts for p in video)  # B-frames reordered
    steps = {b - a for a, b in itertools.pairwise(pts)}
    assert steps <= {33, 34}, steps  # every frame 1/30 s apart: composition offsets honoured
    dts = [p.dts for p in audio]
    assert dts == sorted(dts)
    video_end = Fraction(pts[-1], 1000) + Fraction(1, fps)
    audio_end = Fraction(audio[-1].pts, 1000) + Fraction(1024, 44100)
    assert abs(float(video_end - audio_end)) < 1 / fps, (float(video_end), float(audio_end))
    assert abs(float(video_end) - offset_s - seconds) < 0.1
    if offset_s:
        assert pts[0] < 0xFFFFFF < pts[-1]


def handshake(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(b"\x03" + os.urandom(1536))
    received = b""
    while len(received) < 3073:
        chunk = sock.recv(8192)
        assert chunk, "server closed during the handshake"
        received += chunk
    sock.sendall(received[1:1537])
    return sock


def closed_by_server(sock: socket.socket, timeout: float = 20) -> bool:
    sock.settimeout(timeout)
    try:
        while True:
            if not sock.recv(65536):
                return True
    except (ConnectionError, TimeoutError):
        return True
    except OSError:
        return True


def send_and_expect_close(sock: socket.socket, data_chunks: int, make_chunk) -> bool:
    try:
        for _ in range(data_chunks):
            sock.sendall(make_chunk())
    except (ConnectionError, TimeoutError, OSError):
        return True
    return closed_by_server(sock)


async def test_bad_clients_only_lose_their_own_connection(gateway_factory) -> None:  # noqa: F811
    gw = await gateway_factory("plugins.rtmp.idle_timeout_s=2", "plugins.rtmp.handshake_timeout_s=2")
    await gw.room("bad")
    port = rtmp_port(gw)
    good = await gw.rtmp_ingress("bad", "good")
    publisher = ffmpeg_push(good["publish_url"], seconds=60, size="160x120")
    try:
        await gw.participant("bad", "good")
        track = gw.node.rooms.rooms["bad"].media.bus.find(
            next(p.participant_id for p in gw.node.rooms.rooms["bad"].participants.values()), TrackKind.VIDEO)
        assert track is not None

        # an unknown stream key: refused at publish, with a reason and an event
        refused = await asyncio.to_thread(subprocess.run, [
            "ffmpeg", "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i", "color=c=blue:size=64x64:rate=10",
            "-t", "2", "-c:v", "libx264", "-f", "flv", f"rtmp://127.0.0.1:{port}/live/not-a-key"],
            capture_output=True, timeout=60)
        assert refused.returncode != 0
        rejected = gw.named("rtmp.rejected")
        assert rejected and rejected[-1].data["code"] == "unknown_stream_key"

        # random bytes instead of a handshake, and a handshake cut short: closed
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.sendall(os.urandom(4096))
        assert await asyncio.to_thread(closed_by_server, sock)
        sock.close()
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.sendall(b"\x03" + os.urandom(700))
        assert await asyncio.to_thread(closed_by_server, sock)  # handshake timeout
        sock.close()

        # 50 MB of garbage after a valid handshake; a 50 MB chunk size with a 16 MB message
        sock = await asyncio.to_thread(handshake, port)
        assert await asyncio.to_thread(send_and_expect_close, sock, 800, lambda: os.urandom(65536))
        sock.close()
        sock = await asyncio.to_thread(handshake, port)
        huge = (bytes([0x02]) + b"\x00\x00\x00" + b"\x00\x00\x04" + b"\x01" + b"\x00\x00\x00\x00"
                + struct.pack(">I", 50 << 20)
                + bytes([0x06]) + b"\x00\x00\x00" + (0xFFFFFF).to_bytes(3, "big") + b"\x09" + b"\x01\x00\x00\x00")
        sent = [False]

        def blob() -> bytes:
            if not sent[0]:
                sent[0] = True
                return huge
            return b"\x00" * 65536
        assert await asyncio.to_thread(send_and_expect_close, sock, 800, blob)
        sock.close()

        # a publisher that goes silent is dropped after the idle timeout
        silent = await gw.rtmp_ingress("bad", "silent")
        client = RtmpPublishClient(silent["publish_url"], connect_timeout=10)
        await asyncio.to_thread(client.connect)
        await gw.participant("bad", "silent", tracks=0)

        async def silent_gone() -> bool:
            return bool(gw.named("participant.left", identity="silent"))
        await wait_until(silent_gone, "the silent publisher dropped", 30)
        assert gw.named("participant.left", identity="silent")[-1].data["reason"] == "rtmp_timeout"
        client.abort()

        # an unsupported codec: a clear error event, that connection closed
        flv1 = await gw.rtmp_ingress("bad", "flv1")
        result = await asyncio.to_thread(subprocess.run, [
            "ffmpeg", "-nostdin", "-loglevel", "error", "-re", "-f", "lavfi", "-i", "color=c=blue:size=64x64:rate=10",
            "-t", "3", "-c:v", "flv", "-an", "-f", "flv", flv1["publish_url"]], capture_output=True, timeout=60)
        errors = gw.named("rtmp.error", code="unsupported_codec")
        assert errors and "H.264" in errors[-1].data["message"], (errors, result.stderr[-300:])

        # the concurrent publisher never noticed
        before = track.packets_in
        await wait_until(lambda: track.packets_in > before + 10, "the good publisher's packets keep coming")
        assert any(p.identity == "good" for p in gw.node.rooms.rooms["bad"].participants.values())
        assert publisher.poll() is None
        health = await gw.client.get("/healthz")
        assert health.status == 200
    finally:
        kill(publisher)


async def test_keys_tokens_and_republish(gateway_factory) -> None:  # noqa: F811
    gw = await gateway_factory()
    await gw.room("keys")
    port = rtmp_port(gw)
    # a join token is a stream key too: the participant is the token's identity
    token = (await gw.call("POST", "/v1/rooms/keys/join-tokens", 201, identity="viewer-cam"))["token"]
    by_token = RtmpPublishClient(f"rtmp://127.0.0.1:{port}/live/{token}", connect_timeout=10)
    await asyncio.to_thread(by_token.connect)
    joined = await gw.participant("keys", "viewer-cam", tracks=0)
    assert joined["kind"] == "rtmp"
    by_token.close()
    # a token without publish rights is refused
    no_send = (await gw.call("POST", "/v1/rooms/keys/join-tokens", 201, identity="mute", permissions=2 | 8 | 32))
    refused = RtmpPublishClient(f"rtmp://127.0.0.1:{port}/live/{no_send['token']}", connect_timeout=10)
    with pytest.raises(PushError, match="BadName"):
        await asyncio.to_thread(refused.connect)
    assert gw.named("rtmp.rejected", code="no_publish_permission")

    # the same key published again replaces the first session cleanly
    ingress = await gw.rtmp_ingress("keys", "obs")
    first = RtmpPublishClient(ingress["publish_url"], connect_timeout=10)
    await asyncio.to_thread(first.connect)
    one = await gw.participant("keys", "obs", tracks=0)
    second = RtmpPublishClient(ingress["publish_url"], connect_timeout=10)
    await asyncio.to_thread(second.connect)

    async def replaced() -> bool:
        return bool(gw.named("participant.left", participant_id=one["participant_id"]))
    await wait_until(replaced, "the first session replaced")
    people = [p for p in gw.node.rooms.rooms["keys"].participants.values() if p.identity == "obs"]
    assert len(people) == 1 and people[0].participant_id != one["participant_id"]
    state = await gw.call("GET", f"/v1/ingress/{ingress['ingress_id']}", 200)
    assert state["state"] == "publishing" and state["participant_id"] == people[0].participant_id

    def first_closed() -> bool:
        try:
            first._last_poll = 0
            first.poll()
        except PushError:
            return True
        return False
    await wait_until(lambda: asyncio.to_thread(first_closed), "the first connection closed")
    # a kick ends the RTMP connection
    response = await gw.client.delete(f"/v1/rooms/keys/participants/{people[0].participant_id}", headers=gw.auth)
    assert response.status in (200, 204), await response.text()

    def second_closed() -> bool:
        try:
            second._last_poll = 0
            second.poll()
        except PushError:
            return True
        return False
    await wait_until(lambda: asyncio.to_thread(second_closed), "the kicked publisher's connection closed")
    second.abort()

    async def inactive() -> bool:
        return (await gw.call("GET", f"/v1/ingress/{ingress['ingress_id']}", 200))["state"] == "inactive"
    await wait_until(inactive, "ingress inactive once the publisher left")


async def test_push_requests_are_validated(gateway_factory) -> None:  # noqa: F811
    gw = await gateway_factory()
    await gw.room("v")
    await gw.call("POST", "/v1/rooms/v/ingress", 201, kind="test", identity="t", pattern={"color": "00FF00"})
    for urls in (["http://cdn/live/x"], ["rtmp://cdn/only-app"], ["rtmp:///live/x"], [],
                 [f"rtmp://cdn/live/{i}" for i in range(6)]):
        response = await gw.client.post("/v1/rooms/v/egress", json={"kind": "rtmp", "urls": urls}, headers=gw.auth)
        assert response.status == 400, (urls, await response.text())
    gone = await gw.client.post("/v1/rooms/v/egress", headers=gw.auth,
                                json={"kind": "rtmp", "urls": ["rtmp://127.0.0.1:1/live/x"],
                                      "source": {"participant": "nobody"}})
    assert gone.status == 404
    push = await gw.push("v", ["rtmp://127.0.0.1:1/live/x"], encoding={"width": 160, "height": 120})
    for urls in (["ftp://x/y/z"], [f"rtmp://cdn/live/{i}" for i in range(6)]):
        response = await gw.client.patch(f"/v1/egress/{push['egress_id']}", json={"urls": urls}, headers=gw.auth)
        assert response.status == 400, await response.text()
    assert (await gw.call("DELETE", f"/v1/egress/{push['egress_id']}", 200))["status"] == "complete"
