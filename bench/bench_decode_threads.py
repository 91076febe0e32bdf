"""Decoder threading per codec: CPU per second of media, single-threaded against FFmpeg's
automatic (frame + slice) threading, for a 720p30 VP8 and H.264 stream and 48 kHz Opus —
what ``[media] decoder_threads`` chooses for the tracks' decoders.

Run from the repo root: ``python -m bench.bench_decode_threads [--seconds 10]``. Each codec is
decoded twice per threading mode in this process: paced as a live track is (one frame per
frame interval, as the track's decoder thread sees a publisher's frames) and as fast as it
goes. CPU is the process's (``getrusage``: FFmpeg's own threads included), divided by the
media seconds decoded; the paced run also reports the slowest frame against the frame
interval (the real-time margin).
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import tempfile
import time
from pathlib import Path

import av

SOURCES = {
    "vp8": ["-f", "lavfi", "-i", "testsrc2=s=1280x720:r=30:d={d}", "-c:v", "libvpx", "-deadline", "realtime",
            "-cpu-used", "8", "-b:v", "2300k", "-g", "60", "-auto-alt-ref", "0", "-f", "webm"],
    "h264": ["-f", "lavfi", "-i", "testsrc2=s=1280x720:r=30:d={d}", "-c:v", "libx264", "-preset", "veryfast",
             "-tune", "zerolatency", "-b:v", "2500k", "-g", "60", "-bf", "0", "-f", "mp4"],
    "opus": ["-f", "lavfi", "-i", "sine=f=440:d={d}", "-ac", "2", "-c:a", "libopus", "-b:a", "64k", "-f", "webm"],
}


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def make(codec: str, folder: Path, seconds: float) -> Path:
    path = folder / f"{codec}.{'mp4' if codec == 'h264' else 'webm'}"
    args = [a.format(d=seconds) for a in SOURCES[codec]]
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", *args, str(path)], check=True)
    return path


def packets(path: Path) -> tuple[list[av.Packet], av.codec.context.CodecContext, float]:
    """The file's packets, a decoder template's parameters and the media duration."""
    with av.open(str(path)) as container:
        stream = (container.streams.video or container.streams.audio)[0]
        found = [p for p in container.demux(stream) if p.size]
        duration = float((found[-1].pts - found[0].pts) * stream.time_base) + float(
            (found[1].pts - found[0].pts) * stream.time_base)
        return found, stream.codec_context, duration


def decode(path: Path, threads: int, paced: bool) -> tuple[float, float, float]:
    """(CPU cores per media second, slowest frame in ms, frame interval in ms)."""
    found, template, duration = packets(path)
    ctx = av.CodecContext.create(template.name, "r")
    if template.extradata:
        ctx.extradata = template.extradata
    if template.type == "audio":
        ctx.sample_rate = template.sample_rate
        ctx.layout = template.layout.name
    if threads == 1:
        ctx.thread_count, ctx.thread_type = 1, "NONE"
    else:
        ctx.thread_count, ctx.thread_type = threads, "AUTO"
    interval = duration / len(found)
    slowest = 0.0
    cpu0 = cpu_s()
    start = time.monotonic()
    for i, packet in enumerate(found):
        if paced:
            delay = start + i * interval - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        t0 = time.monotonic()
        ctx.decode(packet)
        slowest = max(slowest, time.monotonic() - t0)
    ctx.decode(None)  # drain frame threads: their pictures are part of the work
    return (cpu_s() - cpu0) / duration, slowest * 1000, interval * 1000


def main(seconds: float, runs: int) -> None:
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores", flush=True)
    with tempfile.TemporaryDirectory() as folder:
        for codec in SOURCES:
            path = make(codec, Path(folder), seconds)
            for paced in (True, False):
                figures = {}
                for threads in (1, 0):
                    cpus, slow = [], []
                    for _ in range(runs):
                        cpu, slowest, interval = decode(path, threads, paced)
                        cpus.append(cpu)
                        slow.append(slowest)
                    figures[threads] = (sorted(cpus)[len(cpus) // 2], max(slow))
                one, auto = figures[1], figures[0]
                mode = "paced (live)" if paced else "as fast as it goes"
                print(f"{codec:5s} {mode:18s}: 1 thread {one[0]:.4f} cores (slowest frame {one[1]:.1f} ms of "
                      f"{interval:.1f}), auto {auto[0]:.4f} cores (slowest {auto[1]:.1f} ms): "
                      f"auto / 1 thread = {auto[0] / one[0]:.2f}x", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    main(args.seconds, args.runs)
