"""CPU cost of recording: a second recording of a composite shares its encoder, and
individual recording of H.264 participants costs no encode.

Run from the repo root: ``python -m bench record`` (or ``python -m bench.bench_record [--seconds 10]``).

1. Shared encode. A 720p30 2x2 composite of four H.264 inputs (bench_composite's inputs and
   feeder: decoded, composited, encoded with libx264 veryfast 2000 kbps) recorded to MP4 by
   the recorder's file set (plugins/record/fileset.py). Reference: the same room with one
   recording; measured: the same room with two recordings of the same encoding. Target: the
   second adds at most 10 % CPU (ratio <= 1.10).
2. Individual recording. Four participants publishing H.264 (640x360, 800 kbps) recorded
   each to its own MP4 without re-encoding (packets straight to the file). Reference: the
   same four feeds with no recording; cost = the extra CPU seconds per second, in cores.
   Target: <= 0.10 of one core.

CPU = getrusage of this process (every thread) over the measured interval after a warm-up.
"""

from __future__ import annotations

import argparse
import shutil
import threading
import time
from fractions import Fraction
from pathlib import Path

from bench.bench_composite import ENCODING, OUT, Feeder, Room, add_input_tracks, cpu_seconds, make_inputs
from gateway.media.bus import FrameBus
from plugins.record.fileset import FileSet, FileSetSpec
from plugins.record.sources import TrackPackets

TARGET_SHARED = 1.10
TARGET_INDIVIDUAL_CORES = 0.10


def file_set(directory: Path, name: str, sources: list, keyframe=None) -> FileSet:  # type: ignore[no-untyped-def]
    directory.mkdir(parents=True, exist_ok=True)

    def open_file(fmt: str, index: int, start: Fraction) -> tuple[Path, str]:
        return directory / f"{name}_{index:03d}.{fmt}", f"{name}_{index:03d}.{fmt}"

    return FileSet(FileSetSpec(who=name, participant_id=None, formats=["mp4"], fps=30), sources,
                   open_file=open_file, open_segment=lambda key, n: (directory / f"{key}_{n}.ts", key, key),
                   on_file=lambda done: None, on_segment=lambda *a: None, to_wall=float, keyframe=keyframe)


def measure(seconds: float, warmup: float) -> float:
    time.sleep(warmup)
    cpu0, wall0 = cpu_seconds(), time.monotonic()
    time.sleep(seconds)
    return (cpu_seconds() - cpu0) / (time.monotonic() - wall0)


def run_composite(paths: list[Path], recordings: int, seconds: float,
                  warmup: float) -> tuple[float, float, float]:
    """(CPU s per second, CPU ms per encoded frame, the last recording's own thread CPU ms per
    frame): on a loaded machine the composite skips frames, so cost per frame is the fair
    comparison, and the recorder thread's own CPU time is immune to the load."""
    room = Room(paths)
    directory = OUT / "record" / f"composite{recordings}"
    shutil.rmtree(directory, ignore_errors=True)
    room.start()
    sets = []
    try:
        for index in range(recordings):
            output = room.output if index == 0 else room.composition.attach(ENCODING)
            source = TrackPackets("video", output.video_track, output.subscribe_video())
            sets.append(file_set(directory, f"rec{index}", [source], output.request_keyframe).start())
        time.sleep(warmup)
        cpu0, wall0, frames0 = cpu_seconds(), time.monotonic(), room.counters()["encoded"]
        time.sleep(seconds)
        cpu, frames = cpu_seconds() - cpu0, room.counters()["encoded"] - frames0
        wall = time.monotonic() - wall0
    finally:
        for recorder in sets:
            recorder.stop()
        total_frames = room.counters()["encoded"]
        room.close()
    own = 1000 * sets[-1].thread_cpu_s / max(1, total_frames)
    return cpu / wall, 1000 * cpu / max(1, frames), own


def run_individual(paths: list[Path], record: bool, seconds: float, warmup: float) -> float:
    bus = FrameBus()
    tracks = add_input_tracks(bus, paths, "h")
    stop = threading.Event()
    feeder = Feeder(list(zip(paths, tracks, strict=True)), stop)
    directory = OUT / "record" / "individual"
    shutil.rmtree(directory, ignore_errors=True)
    sets = []
    if record:
        for index, track in enumerate(tracks):
            source = TrackPackets("video", track, track.subscribe_packets(from_keyframe=True), rebase=bus.clock)
            sets.append(file_set(directory, f"p{index}", [source]).start())
    feeder.start()
    try:
        return measure(seconds, warmup)
    finally:
        stop.set()
        feeder.join(timeout=5)
        for recorder in sets:
            recorder.stop()
        bus.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--warmup", type=float, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    paths = make_inputs(4)

    runs: dict[int, list[tuple[float, float, float]]] = {1: [], 2: []}
    for _ in range(args.rounds):  # interleaved, so a change in the machine's load hits both alike
        for count in (1, 2):
            runs[count].append(run_composite(paths, count, args.seconds, args.warmup))
    one_s, one, _ = sorted(runs[1], key=lambda r: r[1])[len(runs[1]) // 2]
    two_s, two, _ = sorted(runs[2], key=lambda r: r[1])[len(runs[2]) // 2]
    second = sorted(r[2] for r in runs[2])[len(runs[2]) // 2]
    print(f"composite 720p30, one recording:  {one:.2f} CPU ms/frame ({one_s:.3f} CPU s/s)")
    print(f"composite 720p30, two recordings: {two:.2f} CPU ms/frame ({two_s:.3f} CPU s/s); "
          f"whole-process ratio {two / one:.3f} per frame, {two_s / one_s:.3f} per second "
          "(noisy on a loaded machine: the composite skips frames, the inputs' decoding does not)")
    ratio = (one + second) / one
    ratios = sorted((r1[1] + r2[2]) / r1[1] for r1, r2 in zip(runs[1], runs[2], strict=True))
    print(f"second recording's own thread: {second:.3f} CPU ms/frame -> ratio {ratio:.3f} "
          f"(rounds {', '.join(f'{r:.3f}' for r in ratios)})")

    costs = []
    for _ in range(args.rounds):  # interleaved again: the feeds alone, then with the recordings
        feed = run_individual(paths, False, args.seconds, args.warmup)
        recorded = run_individual(paths, True, args.seconds, args.warmup)
        costs.append((recorded - feed, feed, recorded))
        print(f"4 H.264 feeds alone: {feed:.3f} CPU s/s; with 4 individual recordings: {recorded:.3f} CPU s/s")
    cost = sorted(c[0] for c in costs)[len(costs) // 2]
    print()
    print(f"composite recording + a second recording at the same encoding vs one output: {ratio:.3f}x "
          f"(median of {args.rounds}, spread {ratios[0]:.3f}-{ratios[-1]:.3f}; target <= {TARGET_SHARED:.2f}x) "
          f"{'OK' if ratio <= TARGET_SHARED else 'OVER'}")
    print(f"individual recording of 4 H.264 participants: {cost:.3f} of one core "
          f"(median of {args.rounds}, spread {min(c[0] for c in costs):.3f}-{max(c[0] for c in costs):.3f}; "
          f"target <= {TARGET_INDIVIDUAL_CORES:.2f}) {'OK' if cost <= TARGET_INDIVIDUAL_CORES else 'OVER'}")


if __name__ == "__main__":
    main()
