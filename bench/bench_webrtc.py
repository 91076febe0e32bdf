"""WebRTC edge figures: the node's CPU with 20 WHEP viewers of one composite against 1, the
time to first frame for a new viewer, and the CPU of receiving and decoding a 720p30 VP8
WHIP stream against ffmpeg decoding the same stream.

Run from the repo root: ``python -m bench.bench_webrtc [--seconds 8] [--runs 3]`` (or
``python -m bench bench_webrtc``); the last lines are the three figures against their targets. The node runs in this
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
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp

LOOPBACK = ['plugins.webrtc.host_addresses=["127.0.0.1"]', 'log.level="warning"', "http.port=0",
            'auth.api_keys={"bench" = "bench-secret"}', "auth.bootstrap_key=false"]


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def thread_cpu_s() -> dict[str, float]:
    """CPU seconds of each live thread of this process (Linux /proc): by Python thread name,
    or for a native thread (the VP8 receive path's ``rtp-in``) by its kernel name."""
    tick = os.sysconf("SC_CLK_TCK")
    names = {thread.native_id: "event loop" if thread is threading.main_thread() else thread.name.split("-")[0]
             for thread in threading.enumerate()}
    out: dict[str, float] = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            comm, rest = task.joinpath("stat").read_text().split(" (", 1)[1].rsplit(")", 1)
            fields = rest.split()
        except (OSError, IndexError, ValueError):
            continue
        tid = int(task.name)
        if tid not in names and comm != "rtp-in":
            continue  # a native helper of some library (e.g. FFmpeg's): counted in the total only
        name = names.get(tid, comm)
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


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


class LoopedPackets:
    """A file's encoded video packets, played in real time and looped with timestamps that
    keep growing, as a browser's encoder would send them. (aiortc's ``MediaPlayer(loop=True)``
    restarts the timestamps at each loop and then sends as fast as it can.)"""

    def __init__(self, path: str) -> None:
        import av

        with av.open(path) as container:
            stream = container.streams.video[0]
            self.time_base = stream.time_base
            self.packets = [(bytes(p), p.pts, p.is_keyframe) for p in container.demux(stream) if p.size]
        step = self.packets[1][1] - self.packets[0][1]
        self.period = self.packets[-1][1] - self.packets[0][1] + step  # one loop, in time_base units
        self.sent = 0

    def track(self) -> Any:
        from aiortc.mediastreams import MediaStreamTrack

        source = self

        class Track(MediaStreamTrack):
            kind = "video"

            async def recv(self) -> Any:
                return await source.next()

        return Track()

    async def next(self) -> Any:
        import av

        loop = asyncio.get_running_loop()
        if self.sent == 0:
            self.start = loop.time()
        data, pts, keyframe = self.packets[self.sent % len(self.packets)]
        pts += (self.sent // len(self.packets)) * self.period - self.packets[0][1]
        self.sent += 1
        await asyncio.sleep(max(0.0, self.start + float(pts * self.time_base) - loop.time()))
        packet = av.Packet(data)
        packet.pts = packet.dts = pts
        packet.time_base = self.time_base
        packet.is_keyframe = keyframe
        return packet


async def child_publish(base: str, token: str, room: str, path: str, hold: float) -> None:
    from aiortc import RTCPeerConnection, RTCRtpSender, RTCSessionDescription

    from plugins.webrtc import ice
    from plugins.webrtc.config import WebRTCConfig

    ice.apply(WebRTCConfig(host_addresses=["127.0.0.1"]))
    source = LoopedPackets(path)
    pc = RTCPeerConnection()
    transceiver = pc.addTransceiver(source.track(), direction="sendonly")
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
    overrides: list[str] = []  # --set KEY=VALUE, for the node

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.children: list[asyncio.subprocess.Process] = []

    async def start(self) -> None:
        from gateway.config import load_config
        from gateway.node import Node

        self.tmp = tempfile.TemporaryDirectory()
        config = load_config(None, overrides=[f'node.data_dir="{self.tmp.name}"', *LOOPBACK,
                                                    *self.overrides], environ={})
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
        """The node's CPU (cores) over a measured window, after a short settle; the share of
        each thread is left in ``self.threads``."""
        await asyncio.sleep(2)
        cpu0, wall0, threads0 = cpu_s(), time.monotonic(), thread_cpu_s()
        await asyncio.sleep(self.seconds)
        wall = time.monotonic() - wall0
        self.threads = {name: (cpu - threads0.get(name, 0.0)) / wall for name, cpu in thread_cpu_s().items()}
        return (cpu_s() - cpu0) / wall

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


VP8_KBPS = 2300  # a browser's 720p30 VP8 runs at about 1.5-2.5 Mbps


def make_vp8(path: Path, seconds: int) -> Path:
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    f"testsrc2=s=1280x720:r=30:d={seconds}", "-c:v", "libvpx", "-deadline", "realtime",
                    "-cpu-used", "8", "-b:v", f"{VP8_KBPS}k", "-g", "60", "-auto-alt-ref", "0", str(path)],
                   check=True)
    return path


def probe(path: Path) -> tuple[float, float]:
    """(duration s, bit rate Mbps) of the file."""
    out = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration,bit_rate", "-of", "csv=p=0",
                          str(path)], capture_output=True, text=True, check=True).stdout.strip().split(",")
    return float(out[0]), float(out[1]) / 1e6


def _ffmpeg_cpu(*args: str) -> float:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(["ffmpeg", "-loglevel", "error", *args, "-f", "null", "-"], check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


def ffmpeg_decode_cpu(path: Path, loops: int = 3) -> float:
    """CPU (cores) ffmpeg spends decoding the file as fast as it goes: its CPU seconds per
    second of media, the file played `loops` times in one run so that its start-up hardly counts."""
    return _ffmpeg_cpu("-stream_loop", str(loops - 1), "-i", str(path)) / (probe(path)[0] * loops)


def ffmpeg_live_decode_cpu(path: Path, short: float = 4, long: float = 14) -> float:
    """CPU (cores) ffmpeg spends decoding the stream at its own pace (``-re``), as the node
    decodes a live stream: the difference of a `long` and a `short` run over their length
    difference, so ffmpeg's start-up cancels out. On this kind of VM decoding at the live pace
    costs more per frame than in one burst (caches go cold between frames), for ffmpeg as for
    the node: this is the like-for-like reference."""
    return (_ffmpeg_cpu("-re", "-i", str(path), "-t", str(long))
            - _ffmpeg_cpu("-re", "-i", str(path), "-t", str(short))) / (long - short)


async def vp8_decode(seconds: float) -> dict[str, Any]:
    from gateway.media.track import TrackKind

    with tempfile.TemporaryDirectory() as folder:
        path = make_vp8(Path(folder) / "vp8.webm", 20)
        reference_before = ffmpeg_decode_cpu(path)
        live_before = ffmpeg_live_decode_cpu(path)
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
            receive_threads = bench.threads
            sub = track.subscribe_video()  # what the compositor does: frames wanted, so the track decodes
            decoding = await bench.window()
            decode_threads = bench.threads
            frames = sub.received
            track.unsubscribe(sub)
        finally:
            await bench.stop()
        # the reference before and after the node's windows: the machine's load drifts
        reference = (reference_before + ffmpeg_decode_cpu(path)) / 2
        live = (live_before + ffmpeg_live_decode_cpu(path)) / 2
        return {"ffmpeg_decode_cpu": reference, "ffmpeg_live_decode_cpu": live,
                "live_ratio": (decoding - idle) / live, "node_idle_cpu": idle, "receive_cpu": receiving - idle,
                "decode_cpu": decoding - receiving, "receive_and_decode_cpu": decoding - idle,
                "decode_ratio": (decoding - receiving) / reference,
                "receive_and_decode_ratio": (decoding - idle) / reference, "frames_decoded": frames,
                "mbps": probe(path)[1], "receive_threads": receive_threads,
                "decode_threads": decode_threads}


def verdict(met: bool) -> str:
    return "MET" if met else "NOT MET"


async def main(seconds: float, only: str | None, runs: int) -> None:
    load_before = os.getloadavg()
    print(f"load before: {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f} on {os.cpu_count()} cores",
          flush=True)
    summary = []
    if only != "vp8":
        whep = await whep_viewers(seconds)
        print(f"WHEP composite 1280x720@30: node CPU with 1 viewer {whep['cpu_1_viewer']:.3f} cores, "
              f"with 20 viewers {whep['cpu_20_viewers']:.3f} cores", flush=True)
        print(f"WHEP first frames ({whep['joins']} joins, the later ones mid-GOP): median "
              f"{whep['first_frame_median_s'] * 1000:.0f} ms, max {whep['first_frame_max_s'] * 1000:.0f} ms",
              flush=True)
        summary.append(f"[1] WHEP CPU, 20 viewers vs 1 viewer of one composite: {whep['ratio']:.2f}x "
                       f"(target < 2x) {verdict(whep['ratio'] < 2)}")
        summary.append(f"[2] WHEP time to first frame, median of {whep['joins']} joins: "
                       f"{whep['first_frame_median_s'] * 1000:.0f} ms (target <= 500 ms) "
                       f"{verdict(whep['first_frame_median_s'] <= 0.5)}")
    if only != "whep":
        ratios, burst_ratios = [], []
        for _ in range(runs):
            vp8 = await vp8_decode(seconds)
            ratios.append(vp8["live_ratio"])
            burst_ratios.append(vp8["receive_and_decode_ratio"])
            print(f"VP8 720p30 {vp8['mbps']:.2f} Mbps over WHIP: ffmpeg decodes the same stream at "
                  f"{vp8['ffmpeg_live_decode_cpu']:.3f} cores at its pace (-re), {vp8['ffmpeg_decode_cpu']:.3f} "
                  f"as fast as it goes; the node receives it (SRTP, RTP, NACK/REMB, jitter "
                  f"buffer) at {vp8['receive_cpu']:.3f} and decodes it at {vp8['decode_cpu']:.3f} cores "
                  f"(decode alone {vp8['decode_ratio']:.2f}x ffmpeg's burst); receive + decode "
                  f"{vp8['live_ratio']:.2f}x ffmpeg -re, {vp8['receive_and_decode_ratio']:.2f}x ffmpeg's burst; "
                  f"{vp8['frames_decoded']} frames decoded "
                  "in the window", flush=True)
            shares = ", ".join(f"{name} {cpu:.3f}" for name, cpu in sorted(vp8["receive_threads"].items(),
                                                                            key=lambda kv: -kv[1]) if cpu >= 0.001)
            print(f"  node threads while receiving (cores): {shares}", flush=True)
            shares = ", ".join(f"{name} {cpu:.3f}" for name, cpu in sorted(vp8["decode_threads"].items(),
                                                                            key=lambda kv: -kv[1]) if cpu >= 0.001)
            print(f"  node threads while receiving and decoding (cores): {shares}", flush=True)
        spread = f", runs {' '.join(f'{r:.2f}' for r in ratios)}" if runs > 1 else ""
        ratio = statistics.median(ratios)
        burst = statistics.median(burst_ratios)
        summary.append(f"[3] VP8 720p30 receive + decode CPU vs ffmpeg decoding the same stream at its pace (-re): "
                       f"{ratio:.2f}x (target <= 1.2x) {verdict(ratio <= 1.2)}{spread}; vs ffmpeg decoding it in "
                       f"one burst: {burst:.2f}x")
    load_after = os.getloadavg()
    print(f"load after: {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")
    print("\n".join(["== WebRTC benchmark figures ==", *summary]))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--only", choices=["whep", "vp8"])
    parser.add_argument("--runs", type=int, default=1, help="repeat the VP8 figure (median and spread)")
    parser.add_argument("--child", nargs="+")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a node config override, e.g. plugins.webrtc.native_receive=false or "
                             "plugins.sip.gil_switch_interval_ms=0")
    args = parser.parse_args()
    Bench.overrides = args.set
    if args.child:
        mode, *rest = args.child
        if mode == "viewers":
            asyncio.run(child_viewers(rest[0], rest[1], rest[2], int(rest[3]), float(rest[4])))
        else:
            asyncio.run(child_publish(rest[0], rest[1], rest[2], rest[3], float(rest[4])))
    else:
        asyncio.run(main(args.seconds, args.only, args.runs))
