"""RTMP edge benchmarks, each against a reference measured in the same run.

Run from the repo root: ``python -m bench.bench_rtmp [--seconds 15] [--what cpu,latency]``.

cpu: one 1280x720 30 fps ~2.5 Mbps H.264 + AAC stream (made once with the ffmpeg CLI, pushed
with ``ffmpeg -re -c copy``) published into the gateway over RTMP and pushed on, passthrough, to
nginx-rtmp; the cost is this process's CPU seconds (getrusage, every thread) per second. The
reference is nginx-rtmp relaying the same stream (``push`` directive) to the same target:
its CPU from /proc. Printed as gateway / nginx.

latency: a Python publisher (PyAV x264 ultrafast zerolatency, 640x360 30 fps, no B-frames)
sends a picture that flips red <-> blue every 1.5 s; a PyAV viewer reads the CDN (nginx-rtmp)
with low-delay options and notes when the flip arrives. Both ends share one clock. Measured
for publisher -> nginx -> viewer (the reference), and publisher -> gateway -> nginx -> viewer
through the passthrough push and through the mixed (composite) push; the gateway's share is the
difference of medians.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import statistics
import subprocess
import sys
import threading
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gateway.config import load_config  # noqa: E402
from gateway.egress import EgressRequest  # noqa: E402
from gateway.ingress import IngressRequest  # noqa: E402
from gateway.node import Node  # noqa: E402
from gateway.rooms.models import RoomCreate  # noqa: E402
from plugins.rtmp import flv  # noqa: E402
from plugins.rtmp.client import RtmpPublishClient  # noqa: E402
from tests.e2e.helpers import free_port  # noqa: E402
from tests.e2e.rtmp_peers import NGINX_MODULE  # noqa: E402

OUT = Path(__file__).resolve().parent / "out"
FFMPEG = shutil.which("ffmpeg") or "/usr/bin/ffmpeg"


# ------------------------------------------------------------------------------ peers
def nginx(directory: Path, port: int, push_to: str | None = None) -> subprocess.Popen[bytes]:
    directory.mkdir(parents=True, exist_ok=True)
    relay = f"push {push_to};" if push_to else ""
    (directory / "nginx.conf").write_text(f"""load_module {NGINX_MODULE};
daemon off; master_process off; worker_processes 1;
error_log {directory}/error.log warn; pid {directory}/nginx.pid;
events {{ worker_connections 256; }}
rtmp {{ server {{ listen 127.0.0.1:{port}; chunk_size 4096;
    application live {{ live on; record off; {relay} }} }} }}
""")
    proc = subprocess.Popen(["nginx", "-p", str(directory), "-e", str(directory / "error.log"), "-c",
                             str(directory / "nginx.conf")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    return proc


def proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def thread_cpu() -> dict[str, float]:
    """CPU seconds so far per Python thread name (numbers stripped: one row per kind), Linux."""
    found: dict[str, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for thread in threading.enumerate():
        try:
            fields = Path(f"/proc/self/task/{thread.native_id}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        name = thread.name.split("-EG_")[0].split("-TR_")[0].split(" (")[0]
        found[name] = found.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return found


def self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def make_input() -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / "rtmp_720p30.flv"
    if not path.exists():
        subprocess.run([FFMPEG, "-hide_banner", "-v", "error", "-y", "-f", "lavfi", "-i",
                        "testsrc2=size=1280x720:rate=30:duration=60", "-f", "lavfi", "-i",
                        "sine=frequency=440:sample_rate=48000:duration=60", "-c:v", "libx264", "-preset", "veryfast",
                        "-b:v", "2500k", "-maxrate", "2500k", "-bufsize", "2500k", "-g", "60", "-pix_fmt", "yuv420p",
                        "-c:a", "aac", "-b:a", "128k", str(path)], check=True)
    return path


def publish_file(path: Path, url: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([FFMPEG, "-hide_banner", "-v", "error", "-re", "-stream_loop", "-1", "-i", str(path),
                             "-c", "copy", "-f", "flv", url], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def start_node(tmp: Path) -> Node:
    config = load_config(None, overrides=[f'node.data_dir="{tmp}"', "http.port=0", 'log.level="warning"',
                                          'auth.api_keys={"k" = "s"}', "auth.bootstrap_key=false",
                                          "plugins.rtmp.port=0", 'plugins.rtmp.host="127.0.0.1"'], environ={})
    node = Node(config)
    await node.start()
    return node


# ------------------------------------------------------------------------------ cpu
async def bench_cpu(seconds: float, tmp: Path) -> None:
    source = make_input()
    cdn_port, relay_port = free_port(), free_port()
    cdn = nginx(tmp / "cdn", cdn_port)
    try:
        # the gateway: ingest + passthrough push
        node = await start_node(tmp / "node")
        await node.rooms.create(RoomCreate(room_id="bench"))
        ingress = await node.ingress.create("bench", IngressRequest(kind="rtmp", identity="obs"))
        publisher = publish_file(source, ingress.result["publish_url"])
        while node.rooms.rooms["bench"].media is None or len(node.rooms.rooms["bench"].media.bus.tracks()) < 2:
            await asyncio.sleep(0.1)
        push = await node.egress.create("bench", EgressRequest(kind="rtmp", source={"participant": "obs"},
                                                               urls=[f"rtmp://127.0.0.1:{cdn_port}/live/gw"]))
        await asyncio.sleep(3)
        start_cpu, start, threads0 = self_cpu(), time.monotonic(), thread_cpu()
        await asyncio.sleep(seconds)
        gateway = (self_cpu() - start_cpu) / (time.monotonic() - start)
        threads1 = thread_cpu()
        by_thread = {k: (v - threads0.get(k, 0.0)) / seconds for k, v in threads1.items()}
        sent = push.result["outputs"][0]["packets_sent"]
        await node.egress.stop(push.task_id)
        publisher.kill()
        publisher.wait()
        await node.stop()

        # the reference: nginx relaying the same stream to the same CDN
        relay = nginx(tmp / "relay", relay_port, push_to=f"rtmp://127.0.0.1:{cdn_port}/live/relay")
        publisher = publish_file(source, f"rtmp://127.0.0.1:{relay_port}/live/relay")
        await asyncio.sleep(3)
        start_cpu, start = proc_cpu(relay.pid), time.monotonic()
        await asyncio.sleep(seconds)
        reference = (proc_cpu(relay.pid) - start_cpu) / (time.monotonic() - start)
        publisher.kill()
        publisher.wait()
        relay.kill()
        relay.wait()
    finally:
        cdn.kill()
        cdn.wait()
    print(f"RTMP ingest + passthrough push, 720p30 2.6 Mbps: gateway {gateway * 100:.2f} % of a core "
          f"({sent} packets pushed), nginx-rtmp relay {reference * 100:.2f} % -> ratio {gateway / reference:.2f}"
          f" (load average {os.getloadavg()[0]:.1f})")
    busy = sorted(((v, k) for k, v in by_thread.items() if v >= 0.0005), reverse=True)
    print("  gateway CPU by thread: " + ", ".join(f"{k} {v * 100:.2f} %" for v, k in busy))


# ------------------------------------------------------------------------------ latency
COLOURS = {"red": (255, 0, 0), "blue": (0, 0, 255)}


class FlipPublisher(threading.Thread):
    """Publishes 640x360 30 fps H.264 whose colour flips every `period` seconds; keeps the send
    time of each flip's first frame."""

    def __init__(self, url: str, period: float = 1.5) -> None:
        super().__init__(daemon=True)
        self.url, self.period = url, period
        self.flips: list[tuple[str, float]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        ctx = av.CodecContext.create("libx264", "w")
        ctx.width, ctx.height, ctx.pix_fmt = 640, 360, "yuv420p"
        ctx.time_base, ctx.framerate = Fraction(1, 1000), Fraction(30)
        ctx.gop_size, ctx.max_b_frames = 30, 0
        ctx.options = {"preset": "ultrafast", "tune": "zerolatency", "flags": "+global_header"}
        ctx.open()
        planes = {name: av.VideoFrame.from_ndarray(np.full((360, 640, 3), rgb, np.uint8), format="rgb24")
                  .reformat(format="yuv420p").to_ndarray() for name, rgb in COLOURS.items()}
        client = RtmpPublishClient(self.url, connect_timeout=10)
        client.connect()
        config = flv.avcc_from_annexb(ctx.extradata)
        client.send_metadata({"width": 640.0, "height": 360.0, "framerate": 30.0, "videocodecid": 7.0})
        client.send_video(0, flv.video_body(True, "config", 0, config))
        start = time.monotonic()
        index = 0
        colour = "red"
        while not self.stop.is_set():
            due = start + index / 30
            time.sleep(max(0.0, due - time.monotonic()))
            wanted = "red" if int((time.monotonic() - start) / self.period) % 2 == 0 else "blue"
            flipped = wanted != colour
            colour = wanted
            frame = av.VideoFrame.from_ndarray(planes[colour], format="yuv420p")
            frame.pts = round(index * 1000 / 30)
            frame.time_base = Fraction(1, 1000)
            for packet in ctx.encode(frame):
                client.send_video(int(packet.dts), flv.video_body(packet.is_keyframe, "frame", 0,
                                                                 flv.annexb_to_avcc(bytes(packet))))
            if flipped:
                self.flips.append((colour, time.monotonic()))
            index += 1
        client.close()


class FlipViewer(threading.Thread):
    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.seen: list[tuple[str, float]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        options = {"fflags": "nobuffer", "flags": "low_delay", "probesize": "4096", "analyzeduration": "0",
                   "rw_timeout": "20000000"}
        with av.open(self.url, options=options) as container:
            stream = container.streams.video[0]
            stream.thread_type = "NONE"
            colour = None
            for frame in container.decode(stream):
                rgb = frame.to_ndarray(format="rgb24")[180, 320]
                now = "red" if rgb[0] > rgb[2] else "blue"
                if now != colour:
                    colour = now
                    self.seen.append((now, time.monotonic()))
                if self.stop.is_set():
                    return


def latencies(publisher: FlipPublisher, viewer: FlipViewer) -> list[float]:
    out = []
    seen = viewer.seen[1:]  # the first is the viewer's start
    for colour, sent in publisher.flips:
        arrived = [t for c, t in seen if c == colour and t >= sent]
        if arrived:
            out.append(arrived[0] - sent)
    return out


async def run_flips(publish_url: str, view_url: str, seconds: float) -> list[float]:
    publisher = FlipPublisher(publish_url)
    publisher.start()
    await asyncio.sleep(1.0)
    viewer = FlipViewer(view_url)
    viewer.start()
    await asyncio.sleep(seconds)
    publisher.stop.set()
    viewer.stop.set()
    await asyncio.to_thread(publisher.join, 10)
    await asyncio.to_thread(viewer.join, 10)
    values = latencies(publisher, viewer)
    return values[1:] or values  # the first flip may land while the viewer still starts


async def bench_latency(seconds: float, tmp: Path) -> None:
    cdn_port = free_port()
    cdn = nginx(tmp / "cdn-latency", cdn_port)
    results: dict[str, list[float]] = {}
    try:
        results["direct"] = await run_flips(f"rtmp://127.0.0.1:{cdn_port}/live/direct",
                                            f"rtmp://127.0.0.1:{cdn_port}/live/direct", seconds)
        node = await start_node(tmp / "node-latency")
        for mode in ("passthrough", "mixed"):
            room = f"lat-{mode}"
            await node.rooms.create(RoomCreate(room_id=room, canvas={"width": 640, "height": 360, "fps": 30}))
            ingress = await node.ingress.create(room, IngressRequest(kind="rtmp", identity="cam"))
            publisher = FlipPublisher(ingress.result["publish_url"])
            publisher.start()
            while node.rooms.rooms[room].media is None or not node.rooms.rooms[room].media.bus.tracks():
                await asyncio.sleep(0.05)
            source = {"participant": "cam"} if mode == "passthrough" else "composite"
            push = await node.egress.create(room, EgressRequest(
                kind="rtmp", source=source, urls=[f"rtmp://127.0.0.1:{cdn_port}/live/{mode}"],
                encoding={"width": 640, "height": 360, "fps": 30, "video_kbps": 1000, "gop_s": 1}))
            await asyncio.sleep(1.0)
            viewer = FlipViewer(f"rtmp://127.0.0.1:{cdn_port}/live/{mode}")
            viewer.start()
            await asyncio.sleep(seconds)
            publisher.stop.set()
            viewer.stop.set()
            await asyncio.to_thread(publisher.join, 10)
            await asyncio.to_thread(viewer.join, 10)
            values = latencies(publisher, viewer)
            results[mode] = values[1:] or values
            await node.egress.stop(push.task_id)
        await node.stop()
    finally:
        cdn.kill()
        cdn.wait()
    direct = statistics.median(results["direct"]) if results["direct"] else float("nan")
    print(f"publish -> nginx -> viewer (reference): median {direct * 1000:.0f} ms over {len(results['direct'])} flips")
    for mode, target in (("passthrough", 50), ("mixed", 200)):
        values = results.get(mode) or []
        if not values:
            print(f"{mode}: no flip seen")
            continue
        median = statistics.median(values)
        print(f"publish -> gateway ({mode}) -> nginx -> viewer: median {median * 1000:.0f} ms over {len(values)} "
              f"flips; added by the gateway {(median - direct) * 1000:.0f} ms (target <= {target} ms)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--what", default="cpu,latency")
    args = parser.parse_args()
    tmp = OUT / "rtmp-run"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    if "cpu" in args.what:
        asyncio.run(bench_cpu(args.seconds, tmp))
    if "latency" in args.what:
        asyncio.run(bench_latency(args.seconds, tmp))


if __name__ == "__main__":
    main()
