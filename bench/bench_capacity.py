"""How many 720p30 4-input composites (decode 4 x 360p H.264, composite, encode x264 veryfast
2000 kbps) run in real time at once on this machine.

Run from the repo root: ``python -m bench.bench_capacity [--max 10] [--seconds 15]
[--processes]``. For n = 1, 2, 3, ... it starts n compositions together, each fed in real time
like bench_composite, runs them for ``--seconds`` (the first 3 s are warm-up) and counts, over
the measured window, each composition's frames rendered, skipped and encoded against the
frames due at 30 fps, and its packets decoded against packets received. A count passes when
every composition keeps >= 98% of its frames on all of these, and each row says how many of the
n compositions did; it stops after the first count that fails. First it prints the cost of one
composite against the ffmpeg CLI doing the same work (the ratio of bench_composite, with its
target) and the bound each cost sets (cores / CPU-s per second): those stay meaningful when
other load on the machine makes the real-time counts fail. By default all compositions share
one process (the threads release the GIL in decode, swscale and x264); ``--processes`` runs
each in its own process instead, like one node per core would.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import time
from multiprocessing.connection import Connection
from pathlib import Path

from bench.bench_composite import CANVAS, TARGET_RATIO, Room, make_inputs, run_ffmpeg, run_mediagate

KEEP = 0.98  # frames delivered / frames due, per composite, for "in real time"
TARGET = 7
WARMUP = 3.0


def _window(rooms: list[Room], seconds: float) -> tuple[list[dict[str, float]], float]:
    """Per-room counters over a measured window, and the process's CPU-s per second."""
    time.sleep(WARMUP)
    usage0 = resource.getrusage(resource.RUSAGE_SELF)
    wall0, before = time.monotonic(), [room.counters() for room in rooms]
    time.sleep(seconds - WARMUP)
    usage1 = resource.getrusage(resource.RUSAGE_SELF)
    wall1, after = time.monotonic(), [room.counters() for room in rooms]
    wall = wall1 - wall0
    cpu = (usage1.ru_utime + usage1.ru_stime - usage0.ru_utime - usage0.ru_stime) / wall
    return [_ratios(b, a, wall) for b, a in zip(before, after, strict=True)], cpu


def _ratios(before: dict[str, int], after: dict[str, int], wall: float) -> dict[str, float]:
    delta = {k: after[k] - before[k] for k in after}
    due = wall * CANVAS.fps
    ratios = {"rendered": delta["rendered"] / due, "encoded": delta["encoded"] / due,
              "skipped": delta["skipped"], "decoded": delta["decoded"] / max(delta["packets_in"], 1)}
    ratios["kept"] = min(ratios["rendered"], ratios["encoded"], ratios["decoded"])
    return ratios


def run_threads(count: int, paths: list[Path], seconds: float) -> tuple[list[dict[str, float]], float]:
    rooms = [Room(paths, prefix=f"r{n}p") for n in range(count)]
    for room in rooms:
        room.start()
    try:
        return _window(rooms, seconds)
    finally:
        for room in rooms:
            room.close()


def _child(paths: list[Path], seconds: float, start_at: float, conn: Connection) -> None:
    time.sleep(max(0.0, start_at - time.time()))  # start together
    room = Room(paths)
    room.start()
    try:
        ratios, cpu = _window([room], seconds)
        conn.send((ratios[0], cpu))
    finally:
        room.close()
        conn.close()


def run_processes(count: int, paths: list[Path], seconds: float) -> tuple[list[dict[str, float]], float]:
    ctx = mp.get_context("spawn")
    start_at = time.time() + 2.0  # after every child has imported PyAV
    pipes, children = [], []
    for _ in range(count):
        parent, child = ctx.Pipe(duplex=False)
        process = ctx.Process(target=_child, args=(paths, seconds, start_at, child), daemon=True)
        process.start()
        pipes.append(parent)
        children.append(process)
    results = [pipe.recv() for pipe in pipes]
    for process in children:
        process.join()
    return [r for r, _ in results], sum(cpu for _, cpu in results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--start", type=int, default=1, help="smallest count to try")
    parser.add_argument("--max", type=int, default=12, help="largest count to try")
    parser.add_argument("--seconds", type=float, default=15.0, help="run time per count (3 s warm-up)")
    parser.add_argument("--processes", action="store_true", help="one process per composition")
    args = parser.parse_args()
    paths = make_inputs(4)
    mode = "one process per composition" if args.processes else "all in one process"
    print(f"720p30 4-input composites with x264 veryfast 2000 kbps, {os.cpu_count()} CPUs, {mode}, "
          f"{args.seconds:g} s each; pass = every composition >= {KEEP:.0%} of its frames; "
          f"load average before {os.getloadavg()[0]:.1f}")
    # what one composite costs when it keeps up (per-stage normalised on a loaded machine),
    # against ffmpeg doing the same work: the machine's cores divided by each bound the count,
    # whatever other load there is now
    cores = os.cpu_count() or 1
    one = run_mediagate(paths, max(5.0, args.seconds - WARMUP))
    ref = run_ffmpeg(paths, max(10.0, args.seconds - WARMUP), paced=True)
    ratio = one["normalised"] / ref["cpu_per_s"]
    print(f"one composite: mediagate {one['normalised']:.3f} CPU-s/s, ffmpeg CLI -re {ref['cpu_per_s']:.3f} CPU-s/s, "
          f"composite ratio {ratio:.2f} (target <= {TARGET_RATIO}: {'ok' if ratio <= TARGET_RATIO else 'ABOVE'}); "
          f"load {os.getloadavg()[0]:.1f}", flush=True)
    print(f"bound by cost: cores / mediagate = {cores / one['normalised']:.1f} composites, cores / ffmpeg = "
          f"{cores / ref['cpu_per_s']:.1f} (what the ffmpeg CLI itself could run here; other load inflates both)",
          flush=True)
    print(f"{'n':>3} {'real time':>9} {'rendered min':>12} {'encoded min':>11} {'decoded min':>11} "
          f"{'skipped max':>11} {'CPU-s/s':>8}  result")
    best = 0
    for count in range(args.start, args.max + 1):
        run = run_processes if args.processes else run_threads
        rooms, cpu = run(count, paths, args.seconds)
        rendered = min(r["rendered"] for r in rooms)
        encoded = min(r["encoded"] for r in rooms)
        decoded = min(r["decoded"] for r in rooms)
        skipped = max(r["skipped"] for r in rooms)
        kept = sum(r["kept"] >= KEEP for r in rooms)
        ok = kept == count
        print(f"{count:>3} {f'{kept}/{count}':>9} {rendered:>12.1%} {encoded:>11.1%} {decoded:>11.1%} "
              f"{skipped:>11.0f} {cpu:>8.2f}  "
              f"{'pass' if ok else 'FAIL'}  (load {os.getloadavg()[0]:.1f})", flush=True)
        if not ok:
            break
        best = count
    print(f"capacity: {best} concurrent 720p30 4-input composites in real time, each >= {KEEP:.0%} of its "
          f"frames rendered, encoded and decoded "
          f"(target >= {TARGET}: {'ok' if best >= TARGET else 'BELOW'})")


if __name__ == "__main__":
    main()
