"""CPU cost of a 720p30 grid composite (decode, composite, encode) against the ffmpeg CLI.

Run from the repo root: ``python -m bench.bench_composite [--seconds 15] [--inputs 4,9] [--repeat 3]``.

Inputs: 640x360 30 fps H.264 files made once with the ffmpeg CLI (testsrc2, a different hue
each) in bench/out/. mediagate: the packets are demuxed with PyAV and pushed in real time into
tracks of a frame bus, so decoding happens inside the engine; the Compositor draws a 2x2 or
3x3 grid on 1280x720 at 30 fps, the Composition encodes it with libx264 veryfast 2000 kbps
and a consumer drains the packets. Cost = CPU seconds of this process (getrusage, every
thread) per second of output, over the measured interval after a warm-up. On a machine too
loaded for a stage to keep real time (the encoder gets fewer frames), each stage's CPU (per
thread, from /proc) is scaled to the frames it should have handled, and the run says so.

``--lockstep`` also drives the same parts (track decoders, compositor, the shared encoder's
thread) frame by frame as fast as they go, every frame decoded, composed and encoded like
ffmpeg does: on a machine loaded by others, where a real-time run drops frames, that is the
comparison of equal work.

Printed first: the CPU of decoding the inputs with one thread per decoder (the default of
``[media] decoder_threads``) against FFmpeg's automatic frame+slice threading.

Reference, same run: one ffmpeg process decoding the same files (1 thread each), scaling as
needed, stacking with xstack and encoding with the same x264 settings (1 thread), to -f null;
CPU seconds from os.wait4 per second of output. The real-time run is judged against ffmpeg
reading its inputs at their native rate (``-re``): both then wait between frames, as a live
composite must, and pay the same for caches gone cold meanwhile; ffmpeg running as fast as it
goes is printed beside it, and lockstep mode compares with that one (equal work, no waiting).
"""

from __future__ import annotations

import argparse
import heapq
import math
import os
import resource
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import av

from gateway.media.bus import FrameBus
from gateway.media.clock import VIDEO_TIME_BASE
from gateway.media.composition import Composition
from gateway.media.compositor import Compositor
from gateway.media.encoder import Encoding
from gateway.media.layout.model import Canvas
from gateway.media.layout.placed import PlacedRegion
from gateway.media.track import CodecInfo, DecoderSettings, Track, VideoSubscription

OUT = Path(__file__).resolve().parent / "out"
FFMPEG = shutil.which("ffmpeg") or "/usr/bin/ffmpeg"
INPUT_SECONDS = 20
KBPS = 2000
TARGET_RATIO = 1.1
KEEP = 0.97  # a run that encoded fewer of its frames fell behind (a loaded machine) and says so
CANVAS = Canvas(width=1280, height=720, fps=30)
ENCODING = Encoding(width=1280, height=720, fps=30, video_kbps=KBPS, gop_s=2, preset="veryfast")


# ------------------------------------------------------------------------------- inputs
def make_inputs(count: int) -> list[Path]:
    """640x360 30 fps H.264 test files, made once (bench/out is gitignored)."""
    OUT.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        path = OUT / f"input_{index}.mp4"
        if not path.exists():
            subprocess.run(
                [FFMPEG, "-hide_banner", "-v", "error", "-y", "-f", "lavfi",
                 "-i", f"testsrc2=size=640x360:rate=30:duration={INPUT_SECONDS}",
                 "-vf", f"hue=h={index * 40}", "-c:v", "libx264", "-preset", "veryfast", "-g", "60",
                 "-b:v", "800k", "-pix_fmt", "yuv420p", str(path)],
                check=True)
        paths.append(path)
    return paths


class Feeder(threading.Thread):
    """Pushes the files' video packets into their tracks at their real-time pace, looping each
    file; timestamps keep growing across loops like a live edge's. One thread for all inputs
    of a room, as one event loop receives them in the gateway."""

    def __init__(self, inputs: list[tuple[Path, Track]], stop: threading.Event) -> None:
        super().__init__(name="feed", daemon=True)
        self.inputs, self.stop = inputs, stop

    @staticmethod
    def _packets(path: Path) -> Iterator[tuple[float, av.Packet]]:
        """(seconds from the start, packet), forever."""
        offset = 0.0
        while True:
            with av.open(str(path)) as container:
                stream = container.streams.video[0]
                duration = float(stream.duration * stream.time_base) if stream.duration else INPUT_SECONDS
                shift = round(offset / stream.time_base)
                for packet in container.demux(stream):
                    if packet.dts is None:
                        continue
                    due = offset + float(packet.dts * packet.time_base)
                    packet.dts += shift
                    if packet.pts is not None:
                        packet.pts += shift
                    yield due, packet
            offset += duration

    def run(self) -> None:
        start = time.monotonic()
        sources = [self._packets(path) for path, _ in self.inputs]
        heap = []  # (due, input index, packet): the index breaks ties, packets never compare
        for index, source in enumerate(sources):
            due, packet = next(source)
            heap.append((due, index, packet))
        heapq.heapify(heap)
        while not self.stop.is_set():
            due, index, packet = heap[0]
            wait = start + due - time.monotonic()
            if wait > 0 and self.stop.wait(wait):
                return
            self.inputs[index][1].push_packet(packet)
            next_due, next_packet = next(sources[index])
            heapq.heapreplace(heap, (next_due, index, next_packet))


def add_input_tracks(bus: FrameBus, paths: list[Path], prefix: str = "p") -> list[Track]:
    tracks = []
    for index, path in enumerate(paths):
        with av.open(str(path)) as container:
            codec = CodecInfo.from_stream(container.streams.video[0])
        tracks.append(bus.create_track("video", "camera", f"{prefix}{index}", codec=codec))
    return tracks


def grid(count: int, canvas: Canvas, prefix: str = "p") -> list[PlacedRegion]:
    cols = math.ceil(math.sqrt(count))
    rows = math.ceil(count / cols)
    w, h = canvas.width // cols & ~1, canvas.height // rows & ~1
    return [PlacedRegion(x=(i % cols) * w, y=(i // cols) * h, w=w, h=h, participant_id=f"{prefix}{i}")
            for i in range(count)]


@dataclass
class Room:
    """One running composite: inputs fed in real time, composited, encoded, drained."""

    paths: list[Path]
    encoder_threads: int = 1
    prefix: str = "p"
    stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.bus = FrameBus()
        self.tracks = add_input_tracks(self.bus, self.paths, self.prefix)
        self.compositor = Compositor(CANVAS, self.bus)
        self.compositor.set_regions(grid(len(self.paths), CANVAS, self.prefix))
        self.composition = Composition(CANVAS, self.compositor, self.bus.clock,
                                       encoder_threads=self.encoder_threads)
        self.output = self.composition.attach(ENCODING)
        self.packets = self.output.video_track.subscribe_packets()
        self.packets_out = 0
        self.threads: list[threading.Thread] = [
            Feeder(list(zip(self.paths, self.tracks, strict=True)), self.stop),
            threading.Thread(target=self._drain, name="drain", daemon=True)]

    def _drain(self) -> None:
        while True:
            packet = self.packets.get()
            if packet is None:
                return
            self.packets_out += 1

    def start(self) -> None:
        self.compositor.render()  # subscribe first, so decoding starts with the first keyframe
        self.composition.start()
        for thread in self.threads:
            thread.start()

    def counters(self) -> dict[str, int]:
        encoder = self.composition.stats()["encoders"][0]
        return {"rendered": self.composition.frames_rendered, "skipped": self.composition.frames_skipped,
                "encoded": encoder["frames_encoded"], "enc_dropped": encoder["frames_dropped"],
                "decoded": sum(t.frames_in for t in self.tracks),
                "packets_in": sum(t.packets_in for t in self.tracks)}

    def close(self) -> None:
        self.stop.set()
        self.composition.stop()
        self.compositor.close()
        self.bus.close()
        for thread in self.threads:
            thread.join(timeout=5)


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


STAGES = ("decode", "compose", "encode", "feed", "drain")


def stage_cpu() -> dict[str, float]:
    """CPU seconds so far per pipeline stage, from each thread's /proc entry (Linux); the
    stage is the thread name's first word. Empty where /proc is not there."""
    tick = os.sysconf("SC_CLK_TCK")
    found = dict.fromkeys(STAGES, 0.0)
    for thread in threading.enumerate():
        stage = thread.name.split("-")[0]
        if stage not in found or thread.native_id is None:
            continue
        try:
            fields = Path(f"/proc/self/task/{thread.native_id}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return {}
        found[stage] += (int(fields[11]) + int(fields[12])) / tick
    return found


# ------------------------------------------------------------------------------- the runs
def run_mediagate(paths: list[Path], seconds: float, warmup: float = 3.0, encoder_threads: int = 1) -> dict:
    """CPU per second of output, raw and per stage. On a machine so loaded that a stage could
    not keep up, ``cpu_per_s`` undercounts (skipped work costs nothing), so ``normalised``
    scales each stage's CPU to the frames it should have handled: what the composite costs
    when it keeps real time."""
    room = Room(paths, encoder_threads=encoder_threads)
    room.start()
    try:
        time.sleep(warmup)
        cpu0, wall0, before, stages0 = cpu_seconds(), time.monotonic(), room.counters(), stage_cpu()
        time.sleep(seconds)
        cpu1, wall1, after, stages1 = cpu_seconds(), time.monotonic(), room.counters(), stage_cpu()
    finally:
        room.close()
    wall = wall1 - wall0
    delta = {k: after[k] - before[k] for k in after}
    expected = wall * CANVAS.fps
    cpu = (cpu1 - cpu0) / wall
    normalised = cpu
    per_stage: dict[str, float] = {}
    if stages0 and stages1:
        per_stage = {k: (stages1[k] - stages0[k]) / wall for k in STAGES}
        done = {"decode": delta["decoded"] / max(1.0, expected * len(paths)),
                "compose": delta["rendered"] / max(1.0, expected),
                "encode": delta["encoded"] / max(1.0, expected),
                "feed": delta["packets_in"] / max(1.0, expected * len(paths)), "drain": 1.0}
        rest = cpu - sum(per_stage.values())  # the main thread, library threads
        normalised = rest + sum(v / min(1.0, max(done[k], 0.05)) for k, v in per_stage.items())
        per_stage["other"] = rest
    return {"cpu_per_s": cpu, "normalised": normalised, "wall": wall, **delta, "expected": round(expected),
            "stages": per_stage}


def decoder_cost(paths: list[Path], frames: int = 300) -> dict[str, tuple[float, float]]:
    """CPU-s and wall-s per second of video to decode the inputs' packets with each decoder
    threading (what ``[media] decoder_threads`` chooses), back to back in this process."""
    packets = []
    for path in paths:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            packets.append((stream.codec_context.extradata, [p for p in container.demux(stream) if p.size][:frames]))
    found = {}
    for label, threads in (("1 thread", 1), ("auto", 0)):
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for extradata, items in packets:
            ctx = av.CodecContext.create("h264", "r")
            ctx.extradata = extradata
            ctx.thread_count = threads
            ctx.thread_type = "NONE" if threads == 1 else "AUTO"
            for packet in items:
                ctx.decode(packet)
            ctx.decode(None)
        seconds = len(packets[0][1]) / CANVAS.fps
        found[label] = ((time.process_time() - cpu0) / seconds, (time.perf_counter() - wall0) / seconds)
    return found


REORDER_FRAMES = 4


def _watch(track: Track) -> tuple[VideoSubscription, threading.Event]:
    """A subscription to the track's frames that also signals each one (lockstep mode)."""
    sub, event = track.subscribe_video(), threading.Event()
    offer = sub.offer

    def signalling_offer(frame: av.VideoFrame, seq: int) -> None:
        offer(frame, seq)
        event.set()

    sub.offer = signalling_offer  # type: ignore[method-assign]
    return sub, event


def run_lockstep(paths: list[Path], seconds: float) -> dict:
    """The same engine parts and threads (track decoders, compositor, the shared encoder's
    thread), driven frame by frame as fast as they go instead of by the clock: every input
    frame is decoded, every output frame composed and encoded, as ffmpeg does. CPU per second
    of output is then comparable with ffmpeg's on a machine loaded by others, where a
    real-time run drops frames."""
    frames = round(seconds * CANVAS.fps)
    packets = []
    for path in paths:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            packets.append([p for p in container.demux(stream) if p.size][:frames])
    frames = min(frames, *(len(p) for p in packets))
    bus = FrameBus()
    tracks = add_input_tracks(bus, paths)
    compositor = Compositor(CANVAS, bus)
    compositor.set_regions(grid(len(paths), CANVAS))
    composition = Composition(CANVAS, compositor, bus.clock, encoder_threads=1)
    output = composition.attach(ENCODING)
    encoded = output.video_track.subscribe_packets(maxsize=4096)
    pipeline = composition._video_now[0]  # the shared encoder thread, fed directly here
    arrivals = [_watch(track) for track in tracks]
    compositor.render()  # subscribe the compositor before the first packet
    cpu0 = cpu_seconds()
    try:
        for index in range(frames):
            for track, items in zip(tracks, packets, strict=True):
                track.push_packet(items[index])
            for sub, event in arrivals:  # decoders may hold a few frames back (B-frame reordering)
                while sub.received < index + 1 - REORDER_FRAMES:
                    event.wait(1.0)
                    event.clear()
            frame = compositor.render()
            frame.pts = index * 3000
            frame.time_base = VIDEO_TIME_BASE
            pipeline.offer(frame)
            encoded.get(timeout=10)
        cpu = cpu_seconds() - cpu0
    finally:
        composition.stop()
        compositor.close()
        bus.close()
    return {"cpu_per_s": cpu / (frames / CANVAS.fps), "frames": frames}


def ffmpeg_command(paths: list[Path], seconds: float, paced: bool = False) -> list[str]:
    count = len(paths)
    cols = math.ceil(math.sqrt(count))
    w, h = CANVAS.width // cols & ~1, CANVAS.height // math.ceil(count / cols) & ~1
    cmd = [FFMPEG, "-hide_banner", "-v", "error", "-nostats", "-nostdin"]
    for path in paths:
        cmd += [*(["-re"] if paced else []), "-threads", "1", "-stream_loop", "-1", "-i", str(path)]
    scaled = "".join(f"[{i}:v]scale={w}:{h}[s{i}];" for i in range(count)) if (w, h) != (640, 360) else ""
    labels = "".join(f"[s{i}]" if scaled else f"[{i}:v]" for i in range(count))
    layout = "|".join(f"{(i % cols) * w}_{(i // cols) * h}" for i in range(count))
    graph = (f"{scaled}{labels}xstack=inputs={count}:layout={layout}:fill=black,"
             f"pad={CANVAS.width}:{CANVAS.height}[v]")
    return [
        *cmd, "-filter_threads", "1", "-filter_complex_threads", "1", "-filter_complex", graph, "-map", "[v]",
        "-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency", "-b:v", f"{KBPS}k",
        "-maxrate", f"{KBPS}k", "-bufsize", f"{KBPS}k", "-g", "60", "-keyint_min", "60",
        "-sc_threshold", "0", "-bf", "0", "-threads", "1", "-t", str(seconds), "-f", "null", "-"]


def run_ffmpeg(paths: list[Path], seconds: float, paced: bool = False) -> dict:
    """``paced``: inputs read at their native rate (``-re``), so ffmpeg waits between frames like
    a real-time composite does (its caches go cold between frames on a loaded machine too);
    otherwise as fast as it goes."""
    process = subprocess.Popen(ffmpeg_command(paths, seconds, paced))
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"ffmpeg failed with {process.returncode}")
    return {"cpu_per_s": (usage.ru_utime + usage.ru_stime) / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="measured seconds per run")
    parser.add_argument("--inputs", default="4,9", help="comma-separated input counts")
    parser.add_argument("--encoder-threads", type=int, default=1, help="x264 threads (0: auto)")
    parser.add_argument("--decoder-threads", type=int, default=1, help="threads per track decoder (0: auto)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per input count; the range is printed")
    parser.add_argument("--lockstep", action="store_true", help="also run frame by frame, not paced (loaded machines)")
    args = parser.parse_args()
    DecoderSettings.threads = args.decoder_threads
    counts = [int(c) for c in args.inputs.split(",")]
    paths = make_inputs(max(counts))
    print(f"720p30 grid composite, libx264 veryfast {KBPS} kbps, {args.seconds:g} s measured, "
          f"{os.cpu_count()} CPUs, x264 threads={args.encoder_threads or 'auto'}, "
          f"decoder threads={args.decoder_threads or 'auto'}, load average {os.getloadavg()[0]:.1f}")
    decode = decoder_cost(paths[:4])
    one, auto = decode["1 thread"], decode["auto"]
    print(f"decoding 4 x 360p30 H.264: 1 thread {one[0]:.3f} CPU-s/s (wall {one[1]:.3f} s/s), "
          f"auto {auto[0]:.3f} CPU-s/s (wall {auto[1]:.3f} s/s): auto costs {auto[0] / one[0] - 1:+.0%} CPU")
    for count in counts:
        ratios = []
        for _ in range(args.repeat):
            ours = run_mediagate(paths[:count], args.seconds, encoder_threads=args.encoder_threads)
            ref = run_ffmpeg(paths[:count], max(args.seconds, 10), paced=True)
            batch = run_ffmpeg(paths[:count], max(args.seconds, 10))
            kept = ours["encoded"] / max(ours["expected"], 1)
            cost = ours["normalised"]
            ratio = cost / ref["cpu_per_s"]
            ratios.append(ratio)
            verdict = ""
            if count == 4:
                verdict = f" (target <= {TARGET_RATIO}: {'ok' if ratio <= TARGET_RATIO else 'ABOVE'})"
            behind = "" if kept >= KEEP else (f"  [fell behind: {kept:.0%} of frames encoded, machine loaded; "
                                              f"raw {ours['cpu_per_s']:.3f} CPU-s/s, normalised per stage]")
            print(f"{count} inputs, real time: mediagate {cost:.3f} CPU-s/s, ffmpeg -re (paced alike) "
                  f"{ref['cpu_per_s']:.3f} CPU-s/s, ratio {ratio:.2f}{verdict}{behind}; ffmpeg as fast as it goes "
                  f"{batch['cpu_per_s']:.3f} (ratio {cost / batch['cpu_per_s']:.2f})", flush=True)
            print(f"          frames rendered {ours['rendered']}/{ours['expected']}, skipped {ours['skipped']}, "
                  f"encoded {ours['encoded']}, encoder drops {ours['enc_dropped']}, "
                  f"decoded {ours['decoded']}/{ours['packets_in']} packets, load {os.getloadavg()[0]:.1f}",
                  flush=True)
            if ours["stages"]:
                print("          CPU-s/s by stage: " + ", ".join(f"{k} {v:.3f}" for k, v in ours["stages"].items()),
                      flush=True)
        if len(ratios) > 1:
            print(f"{count} inputs: ratio range {min(ratios):.2f}-{max(ratios):.2f} over {len(ratios)} runs")
        if args.lockstep:
            steps = []
            for _ in range(args.repeat):
                ours = run_lockstep(paths[:count], max(args.seconds, 10))
                ref = run_ffmpeg(paths[:count], max(args.seconds, 10))
                steps.append(ours["cpu_per_s"] / ref["cpu_per_s"])
                print(f"{count} inputs, lockstep (every frame, as fast as it goes): mediagate "
                      f"{ours['cpu_per_s']:.3f} CPU-s/s, ffmpeg {ref['cpu_per_s']:.3f} CPU-s/s, ratio {steps[-1]:.2f}, "
                      f"load {os.getloadavg()[0]:.1f}", flush=True)
            if len(steps) > 1:
                print(f"{count} inputs: lockstep ratio range {min(steps):.2f}-{max(steps):.2f} over {len(steps)} runs")


if __name__ == "__main__":
    main()
