"""WebRTC edge figures: the node's CPU with 20 WHEP viewers of one composite against 1, the
time to first frame for a new viewer, and the CPU of receiving and decoding a 720p30 VP8
WHIP stream against ffmpeg decoding the same stream.

Run from the repo root: ``python -m bench.bench_webrtc [--seconds 8]``. The node runs in this
process (its CPU is what is measured, with ``getrusage``); the viewers and the publisher run
in a child process (``--child``) whose receivers count packets without decoding, so they
cost the node nothing but the sending.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

LOOPBACK = ['plugins.webrtc.host_addresses=["127.0.0.1"]', 'log.level="warning"', "http.port=0",
            'auth.api_keys={"bench" = "bench-secret"}', "auth.bootstrap_key=false"]


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# ---------------------------------------------------------------------------- child side
async def child_viewers(base: str, token: str, room: str, count: int, hold: float) -> None:
    from aiortc import RTCPeerConnection, RTCSessionDescription

    from plugins.webrtc import ice, passthrough
    from plugins.webrtc.config import WebRTCConfig

    ice.apply(WebRTCConfig(host_addresses=["127.0.0.1"]))
    passthrough.install()
    pcs, firsts = [], []
    async with aiohttp.ClientSession() as http:
        for _ in range(count):
            pc = RTCPeerConnection()
            first: asyncio.Future[float] = asyncio.get_running_loop().create_future()
            transceivers = [pc.addTransceiver(kind, direction="recvonly") for kind in ("video", "audio")]
            await pc.setLocalDescription(await pc.createOffer())
            started = time.monotonic()
            async with http.post(f"{base}/whep/{room}", data=pc.localDescription.sdp,
                                 headers={"Content-Type": "application/sdp", "Authorization": f"Bearer {token}"}) as r:
                assert r.status == 201, await r.text()
                answer = await r.text()
            await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
            def sink(codec: str, packet: Any, first: asyncio.Future[float] = first,
                     loop: asyncio.AbstractEventLoop = asyncio.get_running_loop()) -> bool:
                if not first.done():
                    loop.call_soon_threadsafe(lambda: first.done() or first.set_result(time.monotonic()))
                return False
            # count packets, decode nothing: the viewers must not take CPU from the node
            passthrough.register(transceivers[0].receiver.track, sink)
            passthrough.register(transceivers[1].receiver.track, lambda codec, packet: False)
            firsts.append(await asyncio.wait_for(first, 20) - started)
            pcs.append(pc)
        print(json.dumps({"ready": count, "first_frame_s": firsts}), flush=True)
        await asyncio.sleep(hold)
    for pc in pcs:
        await pc.close()


async def child_publish(base: str, token: str, room: str, path: str, hold: float) -> None:
    from aiortc import RTCPeerConnection, RTCRtpSender, RTCSessionDescription
    from aiortc.contrib.media import MediaPlayer

    from plugins.webrtc import ice
    from plugins.webrtc.config import WebRTCConfig

    ice.apply(WebRTCConfig(host_addresses=["127.0.0.1"]))
    player = MediaPlayer(path, decode=False, loop=True)
    pc = RTCPeerConnection()
    transceiver = pc.addTransceiver(player.video, direction="sendonly")
    transceiver.setCodecPreferences([c for c in RTCRtpSender.getCapabilities("video").codecs
                                     if c.mimeType == "video/VP8"])
    await pc.setLocalDescription(await pc.createOffer())
    async with aiohttp.ClientSession() as http, http.post(
            f"{base}/whip/{room}", data=pc.localDescription.sdp,
            headers={"Content-Type": "application/sdp", "Authorization": f"Bearer {token}"}) as r:
        assert r.status == 201, await r.text()
        await pc.setRemoteDescription(RTCSessionDescription(await r.text(), "answer"))
    print(json.dumps({"ready": 1}), flush=True)
    await asyncio.sleep(hold)
    await pc.close()


# ---------------------------------------------------------------------------- node side
class Bench:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.children: list[asyncio.subprocess.Process] = []

    async def start(self) -> None:
        from gateway.config import load_config
        from gateway.node import Node

        self.tmp = tempfile.TemporaryDirectory()
        config = load_config(None, overrides=[f'node.data_dir="{self.tmp.name}"', *LOOPBACK], environ={})
        self.node = Node(config)
        self.url = await self.node.serve("127.0.0.1", 0)
        self.http = aiohttp.ClientSession()
        async with self.http.post(f"{self.url}/v1/auth/token",
                                  json={"access_key": "bench", "secret_key": "bench-secret"}) as r:
            self.token = (await r.json())["token"]
        self.auth = {"Authorization": f"Bearer {self.token}"}

    async def room(self, room_id: str, test_source: bool) -> None:
        async with self.http.post(f"{self.url}/v1/rooms", headers=self.auth, json={
                "room_id": room_id, "canvas": {"width": 1280, "height": 720, "fps": 30}}) as r:
            assert r.status == 201, await r.text()
        if test_source:
            async with self.http.post(f"{self.url}/v1/rooms/{room_id}/ingress", headers=self.auth, json={
                    "kind": "test", "identity": "bars", "pattern": {"bars": True, "width": 1280, "height": 720}}) as r:
                assert r.status == 201, await r.text()

    async def child(self, *args: str) -> dict[str, Any]:
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "bench.bench_webrtc", "--child", *args,
                                                    stdout=subprocess.PIPE, cwd=Path(__file__).parents[1])
        self.children.append(proc)
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 180)
        return json.loads(line)

    async def window(self) -> float:
        """The node's CPU (cores) over a measured window, after a short settle."""
        await asyncio.sleep(2)
        cpu0, wall0 = cpu_s(), time.monotonic()
        await asyncio.sleep(self.seconds)
        return (cpu_s() - cpu0) / (time.monotonic() - wall0)

    async def stop(self) -> None:
        for proc in self.children:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()
        await self.http.close()
        await self.node.stop()
        self.tmp.cleanup()


async def whep_viewers(seconds: float) -> dict[str, Any]:
    bench = Bench(seconds)
    await bench.start()
    try:
        await bench.room("whep", test_source=True)
        one = await bench.child("viewers", bench.url, bench.token, "whep", "1", "600")
        cpu_1 = await bench.window()
        more = await bench.child("viewers", bench.url, bench.token, "whep", "19", "600")
        cpu_20 = await bench.window()
        firsts = more["first_frame_s"] + one["first_frame_s"]
        return {"cpu_1_viewer": cpu_1, "cpu_20_viewers": cpu_20, "ratio": cpu_20 / cpu_1,
                "first_frame_median_s": statistics.median(firsts), "first_frame_max_s": max(firsts),
                "joins": len(firsts)}
    finally:
        await bench.stop()


def make_vp8(path: Path, seconds: int) -> Path:
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    f"testsrc2=s=1280x720:r=30:d={seconds}", "-c:v", "libvpx", "-deadline", "realtime",
                    "-cpu-used", "8", "-b:v", "2500k", "-g", "60", "-auto-alt-ref", "0", str(path)], check=True)
    return path


def ffmpeg_decode_cpu(path: Path) -> float:
    """CPU seconds ffmpeg spends decoding the file, per second of media."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(["ffmpeg", "-loglevel", "error", "-i", str(path), "-f", "null", "-"], check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    probe = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", str(path)],
                           capture_output=True, text=True, check=True)
    return (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) / float(probe.stdout)


async def vp8_decode(seconds: float) -> dict[str, Any]:
    from gateway.media.track import TrackKind

    with tempfile.TemporaryDirectory() as folder:
        path = make_vp8(Path(folder) / "vp8.webm", 20)
        reference = ffmpeg_decode_cpu(path)
        bench = Bench(seconds)
        await bench.start()
        try:
            await bench.room("vp8", test_source=False)
            idle = await bench.window()
            await bench.child("publish", bench.url, bench.token, "vp8", str(path), "600")
            media = bench.node.rooms.rooms["vp8"].media
            track = None
            for _ in range(200):
                track = media.bus.tracks(kind=TrackKind.VIDEO)[0] if media.bus.tracks(kind=TrackKind.VIDEO) else None
                if track:
                    break
                await asyncio.sleep(0.05)
            assert track is not None
            receiving = await bench.window()
            sub = track.subscribe_video()  # what the compositor does: frames wanted, so the track decodes
            decoding = await bench.window()
            frames = sub.received
            track.unsubscribe(sub)
            return {"ffmpeg_decode_cpu": reference, "node_idle_cpu": idle, "receive_cpu": receiving - idle,
                    "decode_cpu": decoding - receiving, "receive_and_decode_cpu": decoding - idle,
                    "decode_ratio": (decoding - receiving) / reference,
                    "receive_and_decode_ratio": (decoding - idle) / reference, "frames_decoded": frames}
        finally:
            await bench.stop()


async def main(seconds: float, only: str | None) -> None:
    print(f"load before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores", flush=True)
    if only != "vp8":
        await report_whep(seconds)
    if only != "whep":
        await report_vp8(seconds)
    print(f"load after: {os.getloadavg()[0]:.2f}")


async def report_whep(seconds: float) -> None:
    whep = await whep_viewers(seconds)
    print(f"WHEP composite 1280x720@30: node CPU with 1 viewer {whep['cpu_1_viewer']:.2f} cores, "
          f"with 20 viewers {whep['cpu_20_viewers']:.2f} cores: ratio {whep['ratio']:.2f}x (target < 2x)")
    print(f"WHEP time to first frame ({whep['joins']} joins, the later ones mid-GOP): median "
          f"{whep['first_frame_median_s'] * 1000:.0f} ms, max {whep['first_frame_max_s'] * 1000:.0f} ms "
          "(target <= 500 ms median)")


async def report_vp8(seconds: float) -> None:
    vp8 = await vp8_decode(seconds)
    print(f"VP8 720p30 2.5 Mbps: ffmpeg decodes it at {vp8['ffmpeg_decode_cpu']:.3f} cores; the node receives it "
          f"(RTP, SRTP, jitter buffer) at {vp8['receive_cpu']:.3f} and decodes it at {vp8['decode_cpu']:.3f} cores "
          f"(decode {vp8['decode_ratio']:.2f}x ffmpeg, receive + decode {vp8['receive_and_decode_ratio']:.2f}x; "
          f"target <= 1.2x); {vp8['frames_decoded']} frames decoded in the window")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--only", choices=["whep", "vp8"])
    parser.add_argument("--child", nargs="+")
    args = parser.parse_args()
    if args.child:
        mode, *rest = args.child
        if mode == "viewers":
            asyncio.run(child_viewers(rest[0], rest[1], rest[2], int(rest[3]), float(rest[4])))
        else:
            asyncio.run(child_publish(rest[0], rest[1], rest[2], rest[3], float(rest[4])))
    else:
        asyncio.run(main(args.seconds, args.only))
